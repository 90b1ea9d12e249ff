/**
 * Lua scripts of the cache protocol (DESIGN §4). Each touches only the keys of one session,
 * which share a hash tag, so they run unchanged on Redis Cluster. Times are epoch milliseconds
 * passed as strings and compared with tonumber (exact below 2^53).
 */

/** The end of an install: replace the entry with ARGV's fields (v, d, it, ax, ie, pe, ls). */
const STORE_ENTRY = `
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'd', ARGV[4], 'it', ARGV[5], 'ax', ARGV[6], 'ie', ARGV[7], 'pe', ARGV[8], 'ls', ARGV[9])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`;

/**
 * Installs a filled entry. KEYS: entry, lease. ARGV: leaseId, ttlMs, v, d, it, ax, ie, pe, ls.
 * Refuses (returns ≤ 0) unless our lease is still there — an invalidate or destroy since we took
 * it deletes the lease — and nothing as new, nor a tombstone, nor a write marker, is present.
 */
export const INSTALL = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
local cur = redis.call('HMGET', KEYS[1], 't', 'v', 'w')
if cur[1] then return -1 end
if cur[3] then return -3 end
if cur[2] and tonumber(cur[2]) >= tonumber(ARGV[3]) then return -2 end
${STORE_ENTRY}`;

/**
 * The test-only planted bug (SESSIOND_TEST_UNSAFE_FILL): INSTALL without its fences — no lease,
 * no write marker — as a plain cache-aside fill. Same KEYS and ARGV (the lease id is ignored).
 */
export const INSTALL_UNFENCED = `
local cur = redis.call('HMGET', KEYS[1], 't', 'v')
if cur[1] then return -1 end
if cur[2] and tonumber(cur[2]) >= tonumber(ARGV[3]) then return -2 end
${STORE_ENTRY}`;

/**
 * Touch as a max-register. KEYS: entry. ARGV: nowMs.
 * Returns 0 on a miss, -1 on a tombstone, -2 when expired, else, after sliding the idle expiry
 * (never backwards, never past ax), one string: v, it, ax, ie, pe, ls and d, newline-separated
 * (d last; JSON text holds no raw newline). One bulk string decodes far cheaper than an array.
 */
export const TOUCH = `
local h = redis.call('HMGET', KEYS[1], 't', 'v', 'd', 'it', 'ax', 'ie', 'pe', 'ls')
if h[1] then return -1 end
if not h[3] then return 0 end
local now = tonumber(ARGV[1])
local ax = tonumber(h[5])
local ie = tonumber(h[6])
if now >= ie or now >= ax then return -2 end
local candidate = math.min(now + tonumber(h[4]) * 1000, ax)
if candidate > ie then ie = candidate end
local ls = math.max(tonumber(h[8]), now)
local ieText = string.format('%d', ie)
local lsText = string.format('%d', ls)
redis.call('HSET', KEYS[1], 'ie', ieText, 'ls', lsText)
return h[2] .. '\\n' .. h[4] .. '\\n' .. h[5] .. '\\n' .. ieText .. '\\n' .. h[7] .. '\\n' .. lsText .. '\\n' .. h[3]
`;

/** Plants a tombstone. KEYS: entry, lease. ARGV: ttlMs. Fences off every fill in flight. */
export const TOMBSTONE = `
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 't', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`;

/**
 * Marks a write in progress, before its transaction commits. KEYS: entry, lease. ARGV: ttlMs.
 * The entry and any fill lease go, and the marker (`w`) refuses every install until the
 * writer's invalidation or tombstone after the commit replaces it (or it expires): no fill can
 * put the pre-commit record back in the moment between the commit and the invalidation, when
 * MariaDB already answers the new one. Reads see a miss. A tombstone stays as it is.
 */
export const MARK_WRITE = `
if redis.call('HEXISTS', KEYS[1], 't') == 1 then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'w', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`;

/** Records that MariaDB now holds idle expiry ARGV[1] (max). KEYS: entry. */
export const PERSISTED = `
local h = redis.call('HMGET', KEYS[1], 't', 'pe')
if h[1] or not h[2] then return 0 end
if tonumber(ARGV[1]) > tonumber(h[2]) then redis.call('HSET', KEYS[1], 'pe', ARGV[1]) end
return 1
`;
