/**
 * Lua scripts of the cache protocol (docs/design.md §5). Each touches only the keys of one session,
 * which share a hash tag, so they run unchanged on Redis Cluster. Times are epoch milliseconds
 * passed as strings and compared with tonumber (exact below 2^53).
 */

/**
 * How long a write marker fences off fills: it must outlast the rest of the writer's transaction
 * (the commit, a deadlock retry) and the invalidation after it; a writer that dies in between
 * leaves the session uncached for this long at most.
 */
export const WRITE_MARK_TTL_MS = 10_000;

/**
 * The touch register. A touch slides `ie`/`ls` in Redis only; MariaDB gets them later, once they
 * lead its copy (`pe`) by more than the threshold. So whatever drops an entry (an invalidation,
 * an outbox replay of one Redis already took, a write marker) keeps `ie`/`ls` in the hash while
 * they may lead MariaDB, and every fill takes the max of them and the row it read: expiry never
 * moves backwards for dropping an entry. Such a remnant has no `d`, so reads and touches miss.
 * Sets `keep` to the fields to carry (nil when MariaDB already holds them).
 */
const CARRY = `
local keep = nil
local r = redis.call('HMGET', KEYS[1], 'ie', 'pe', 'ls')
if r[1] and (not r[2] or tonumber(r[1]) > tonumber(r[2])) then keep = {'ie', r[1], 'ls', r[3]} end
`;

/**
 * Redis's own clock in ms (a Lua function): the clock its TTLs run on. Install ages and marker
 * ages are taken by it, never by a replica's.
 */
export const CLOCK = `
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`;

/**
 * Keeps a hash that holds the touch register at least until the cache TTL past the register's
 * idle expiry (a Lua function; never shortens). While `ie` leads MariaDB's copy the register is
 * the only record of those touches: were the hash to expire with the cache TTL counted from its
 * install, a session touched all along would be read back from MariaDB with the older expiry
 * (docs/design.md §5.6). The TTL past `ie` covers the clocks of Redis and the replicas differing.
 * Needs CLOCK.
 */
const OUTLIVE = `
local function outlive(key, ie, ttl)
  local left = tonumber(ie) + tonumber(ttl) - clock()
  if left > redis.call('PTTL', key) then redis.call('PEXPIRE', key, left) end
end
`;

/**
 * Whether an entry installed at `at` (Redis time, ms) is past the cache TTL (a Lua function):
 * its data is then no longer served (a miss; the fill replaces it, taking its register), however
 * long the register kept the hash (OUTLIVE). So no entry is served longer than the cache TTL
 * after its install, the bound the rest of the protocol counts on. Needs CLOCK.
 */
export const AGED = `
local function aged(at, ttl)
  if not at then return false end
  return clock() - tonumber(at) >= tonumber(ttl)
end
`;

/**
 * Whether a write marker (`w`, the Redis time it was set, in ms) still fences (a Lua function).
 * A marker carrying a touch register lives as long as the register (OUTLIVE); its fence ends
 * after WRITE_MARK_TTL_MS as if it had expired. '1' is a marker of a version before the time was
 * written: it fences until it expires. Needs CLOCK.
 */
const FENCING = `
local function fencing(w)
  local set = tonumber(w)
  if not set then return false end
  if set == 1 then return true end
  return clock() - set < ${WRITE_MARK_TTL_MS}
end
`;

/**
 * Whether a subject's revocation mark revokes an entry (a Lua function). The entry's `g` is the
 * generation of the row it was filled from and `mk` its subject's mark key (empty without a
 * subject); the mark holds a generation and the entry key of the session it keeps. Only on a
 * single node: a script cannot read a key of another slot on Redis Cluster, where the gateway
 * asks for the mark itself (redis-entry.ts coveredBy).
 */
export const COVERED = `
local function covered(entry, g, mk)
  if not mk or mk == '' then return false end
  local m = redis.call('GET', mk)
  if not m then return false end
  local sp = string.find(m, ' ', 1, true)
  return tonumber(string.sub(m, 1, sp - 1)) > tonumber(g or '0') and string.sub(m, sp + 1) ~= entry
end
`;

/**
 * A read. KEYS: entry. ARGV: '1' to check the subject's mark, the cache TTL (ms). Returns -1 on
 * a tombstone, 0 on a miss (no entry, a write marker, a touch register without `d`, an entry past
 * the cache TTL (AGED), or, with '1', an entry the subject's mark revokes: the fill then asks
 * MariaDB, which honours the mark too), else the entry as TOUCH answers it: one string of v, it,
 * ax, ie, pe, ls, g, mk and d, newline-separated (one bulk string decodes far cheaper than the
 * 20-odd of an HGETALL).
 */
export const LOOKUP = `
${COVERED}
${CLOCK}
${AGED}
local h = redis.call('HMGET', KEYS[1], 't', 'v', 'd', 'it', 'ax', 'ie', 'pe', 'ls', 'g', 'mk', 'at')
if h[1] then return -1 end
if not h[2] or not h[3] or aged(h[11], ARGV[2]) then return 0 end
if ARGV[1] == '1' and covered(KEYS[1], h[9], h[10]) then return 0 end
return h[2] .. '\\n' .. h[4] .. '\\n' .. h[5] .. '\\n' .. h[6] .. '\\n' .. h[7] .. '\\n' .. h[8] .. '\\n' .. (h[9] or '0') .. '\\n' .. (h[10] or '') .. '\\n' .. h[3]
`;

/**
 * Sets a subject's revocation mark unless a higher generation is there. KEYS: mark.
 * ARGV: generation, entry key of the kept session ('' for none), ttlMs.
 */
export const SET_MARK = `
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(string.sub(cur, 1, string.find(cur, ' ', 1, true) - 1)) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
return 1
`;

/**
 * Installs a filled entry (with a lease), or only raises the touch register (`ARGV[1]` empty: a
 * fill that has no lease, whose answer must still never fall behind what Redis has shown).
 * KEYS: entry, lease. ARGV: leaseId, ttlMs, v, d, it, ax, ie, pe, ls, g, mk, and '1' to check
 * the subject's mark.
 * Returns {code, ie, ls}: the idle expiry and last-seen the caller answers, the max of the row's
 * and the register's. Code 1 installed; 0 no lease (lost since, or none), -1 tombstone, -2
 * something as new there, -3 a write marker or a subject mark that revokes the row (read before
 * the mark committed). An invalidate or destroy deletes the lease.
 */
export const INSTALL = `
${COVERED}
${CLOCK}
${OUTLIVE}
${AGED}
${FENCING}
if ARGV[12] == '1' and covered(KEYS[1], ARGV[10], ARGV[11]) then
  if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
  return {-3, ARGV[7], ARGV[9]}
end
local leased = ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1]
if leased then redis.call('DEL', KEYS[2]) end
local cur = redis.call('HMGET', KEYS[1], 't', 'v', 'w', 'ie', 'ls', 'pe', 'at')
if cur[1] then return {-1, ARGV[7], ARGV[9]} end
local ie = string.format('%d', math.max(tonumber(ARGV[7]), tonumber(cur[4] or 0)))
local ls = string.format('%d', math.max(tonumber(ARGV[9]), tonumber(cur[5] or 0)))
local code = 1
if not leased then code = 0
elseif fencing(cur[3]) then code = -3
elseif cur[2] and tonumber(cur[2]) >= tonumber(ARGV[3]) and not aged(cur[7], ARGV[2]) then code = -2 end
if code ~= 1 then
  -- Not installed: raise the register where one is (an entry, or touches carried past an
  -- invalidation), or where another fill holds the lease: it may have read an older row.
  if cur[4] then
    redis.call('HSET', KEYS[1], 'ie', ie, 'ls', ls)
    if not cur[6] or tonumber(ie) > tonumber(cur[6]) then outlive(KEYS[1], ie, ARGV[2]) end
  elseif redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('HSET', KEYS[1], 'ie', ie, 'ls', ls)
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    outlive(KEYS[1], ie, ARGV[2])
  end
  return {code, ie, ls}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'd', ARGV[4], 'it', ARGV[5], 'ax', ARGV[6], 'ie', ie, 'pe', ARGV[8], 'ls', ls, 'g', ARGV[10], 'mk', ARGV[11], 'at', string.format('%d', clock()))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if tonumber(ie) > tonumber(ARGV[8]) then outlive(KEYS[1], ie, ARGV[2]) end
return {1, ie, ls}
`;

/**
 * The test-only planted bug (test/helpers/test-server.mjs): a plain cache-aside fill — no lease, no
 * write marker, no tombstone check, no touch register: it overwrites whatever is there. Same KEYS,
 * ARGV and reply as INSTALL (the lease id is ignored).
 */
export const INSTALL_UNFENCED = `
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[3], 'd', ARGV[4], 'it', ARGV[5], 'ax', ARGV[6], 'ie', ARGV[7], 'pe', ARGV[8], 'ls', ARGV[9], 'g', ARGV[10], 'mk', ARGV[11])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, ARGV[7], ARGV[9]}
`;

/**
 * Touch as a max-register: the Lua twin of decideTouch() (domain/session.ts), held to it by
 * test/store/touch-rule.test.ts. KEYS: entry. ARGV: nowMs, '1' to check the subject's mark, and
 * the cache TTL (ms): while the register leads MariaDB (`ie` > `pe`) the entry lives on (OUTLIVE).
 * Returns 0 on a miss (or an entry past the cache TTL, AGED, or a subject mark revoking it), -1 on a tombstone, -2 when
 * expired, else, after sliding the idle expiry (never backwards, never past ax), one string: v,
 * it, ax, ie, pe, ls, g, mk and d, newline-separated (d last; JSON text holds no raw newline).
 * One bulk string decodes far cheaper than an array.
 */
export const TOUCH = `
${COVERED}
${CLOCK}
${OUTLIVE}
${AGED}
local h = redis.call('HMGET', KEYS[1], 't', 'v', 'd', 'it', 'ax', 'ie', 'pe', 'ls', 'g', 'mk', 'at')
if h[1] then return -1 end
if not h[3] or aged(h[11], ARGV[3]) then return 0 end
if ARGV[2] == '1' and covered(KEYS[1], h[9], h[10]) then return 0 end
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
if ie > tonumber(h[7] or '0') then outlive(KEYS[1], ie, ARGV[3]) end
return h[2] .. '\\n' .. h[4] .. '\\n' .. h[5] .. '\\n' .. ieText .. '\\n' .. h[7] .. '\\n' .. lsText .. '\\n' .. (h[9] or '0') .. '\\n' .. (h[10] or '') .. '\\n' .. h[3]
`;

/** Plants a tombstone. KEYS: entry, lease. ARGV: ttlMs. Fences off every fill in flight. */
export const TOMBSTONE = `
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 't', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`;

/**
 * Marks a write in progress, before its transaction commits. KEYS: entry, lease. ARGV: the
 * marker's lifetime (ms), the cache TTL (ms; a carried register lives on, OUTLIVE, and the
 * marker's fence ends on time all the same, FENCING).
 * The entry and any fill lease go, and the marker (`w`) refuses every install until the
 * writer's invalidation or tombstone after the commit replaces it (or it expires): no fill can
 * put the pre-commit record back in the moment between the commit and the invalidation, when
 * MariaDB already answers the new one. Reads see a miss. A tombstone stays as it is; touches
 * MariaDB may lack stay too (CARRY).
 */
export const MARK_WRITE = `
${CLOCK}
${OUTLIVE}
if redis.call('HEXISTS', KEYS[1], 't') == 1 then
  redis.call('DEL', KEYS[2])
  return 0
end
${CARRY}
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'w', string.format('%d', clock()))
if keep then redis.call('HSET', KEYS[1], unpack(keep)) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if keep then outlive(KEYS[1], keep[2], ARGV[2]) end
return 1
`;

/**
 * After a committed data change, or a replay of one: drops the entry and any fill lease (which
 * fences off fills in flight). KEYS: entry, lease. ARGV: ttlMs. A tombstone stays as it is;
 * touches MariaDB may lack stay too (CARRY), for the cache TTL past their idle expiry (OUTLIVE).
 */
export const INVALIDATE = `
${CLOCK}
${OUTLIVE}
redis.call('DEL', KEYS[2])
if redis.call('HEXISTS', KEYS[1], 't') == 1 then return 0 end
${CARRY}
redis.call('DEL', KEYS[1])
if keep then
  redis.call('HSET', KEYS[1], unpack(keep))
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  outlive(KEYS[1], keep[2], ARGV[1])
end
return 1
`;

/** Records that MariaDB now holds idle expiry ARGV[1] (max). KEYS: entry. */
export const PERSISTED = `
local h = redis.call('HMGET', KEYS[1], 't', 'pe')
if h[1] or not h[2] then return 0 end
if tonumber(ARGV[1]) > tonumber(h[2]) then redis.call('HSET', KEYS[1], 'pe', ARGV[1]) end
return 1
`;
