/**
 * The cached lookup's cost, three ways, on a private Redis: a plain HGETALL (the lookup before
 * the subject-mark check), the LOOKUP script as it answered before (HGETALL inside Lua, the hash
 * as an array of fields and values) and LOOKUP as the service runs it (dist/: one string).
 * 1 000 installed entries of a web app's size, 16 concurrent loops of N calls per variant,
 * ROUNDS rounds alternating the variants: this process's CPU per call (ioredis and the reply's
 * decoding) and Redis's own time per call (INFO commandstats), medians over the rounds.
 *
 *   npm run build && N=10000 ROUNDS=7 node --import tsx bench/lookup-cost.mjs
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { startRedis } from '../devstack/redis.ts';
import { RedisGateway } from '../dist/cache/redis-gateway.js';
import { encodeEntry, sessionKeys } from '../dist/cache/redis-entry.js';
import { AGED, CLOCK, COVERED } from '../dist/cache/redis-scripts.js';

/** LOOKUP before it answered one string (as of the touch-register change). */
const OLD = `
${COVERED}
${CLOCK}
${AGED}
local h = redis.call('HGETALL', KEYS[1])
local g, mk, at = '0', nil, nil
for i = 1, #h, 2 do
  if h[i] == 'g' then g = h[i + 1] elseif h[i] == 'mk' then mk = h[i + 1] elseif h[i] == 'at' then at = h[i + 1] end
end
if aged(at, ARGV[2]) then return {} end
if ARGV[1] == '1' and covered(KEYS[1], g, mk) then return {} end
return h
`;
const dir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-lookup-cost-'));
const redis = await startRedis({ baseDir: dir });
const gw = new RedisGateway({ url: redis.url, commandTimeoutMs: 1000, connectTimeoutMs: 1000, breakerFailureThreshold: 100, breakerCooldownMs: 100, cacheTtlMs: 3600_000, leaseMs: 2000 }, pino({ level: 'silent' }));
await gw.connected();
gw.client.defineCommand('oldLookup', { numberOfKeys: 1, lua: OLD });
const now = Date.now();
const keys = [];
for (let i = 0; i < 1000; i++) {
  const key = { namespace: 'bench', idHash: randomBytes(32) };
  const rec = { ...key, subject: `user-${i}`, data: { cart: ['sku-10442', 'sku-20931'], prefs: { theme: 'dark', lang: 'en-GB', tz: 'Europe/Berlin' }, csrf: randomBytes(16).toString('base64url'), n: i }, version: 1, idleTimeoutSeconds: 1800, createdAt: new Date(now), lastSeenAt: new Date(now), idleExpiresAt: new Date(now + 1800e3), absoluteExpiresAt: new Date(now + 43200e3), metadata: { ip: '203.0.113.7', userAgent: 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0', label: 'Firefox on Linux' }, subjectGeneration: 0 };
  await gw.takeLease(key, 'l');
  await gw.install(key, 'l', encodeEntry(rec));
  keys.push(key);
}
function hashOf(reply) { const h = {}; for (let i = 0; i + 1 < reply.length; i += 2) h[reply[i]] = reply[i + 1]; return h; }
const variants = {
  hgetall: (k) => gw.client.hgetall(sessionKeys(k).entry),
  'old LOOKUP (array)': async (k) => hashOf(await gw.client.oldLookup(sessionKeys(k).entry, '1', 3600000)),
  'LOOKUP (one string)': (k) => gw.lookup(k),
};
const admin = gw.client.duplicate();
await new Promise((r) => admin.once('ready', r));
async function stat() {
  const info = await admin.info('commandstats');
  const out = {};
  for (const m of info.matchAll(/cmdstat_(\w+):calls=(\d+),usec=(\d+)/g)) out[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) };
  return out;
}
const N = Number(process.env.N ?? 20000);
const res = Object.fromEntries(Object.keys(variants).map((k) => [k, { node: [], redis: [] }]));
for (let round = 0; round < Number(process.env.ROUNDS ?? 5); round++) {
  for (const [name, f] of Object.entries(variants)) {
    let i = 0;
    const s0 = await stat();
    const c0 = process.cpuUsage();
    await Promise.all(Array.from({ length: 16 }, async () => { while (i < N) { i++; await f(keys[i % 1000]); } }));
    const c = process.cpuUsage(c0);
    const s1 = await stat();
    let calls = 0, usec = 0;
    for (const [cmd, v] of Object.entries(s1)) { if (cmd === 'info') continue; calls += v.calls - (s0[cmd]?.calls ?? 0); usec += v.usec - (s0[cmd]?.usec ?? 0); }
    res[name].node.push((c.user + c.system) / N);
    res[name].redis.push(usec / N);
  }
}
const med = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
console.log(`load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; ${N} calls x ${process.env.ROUNDS ?? 5} rounds, 16 concurrent`);
for (const [name, r] of Object.entries(res)) console.log(`${name.padEnd(22)} node CPU ${med(r.node).toFixed(1)} µs/call (${r.node.map((x) => x.toFixed(1)).join(', ')}); redis ${med(r.redis).toFixed(2)} µs/call`);
gw.close();
admin.disconnect();
await redis.stop();
await rm(dir, { recursive: true, force: true });
process.exit(0);
