/**
 * Reproduction (run by hand; not part of `npm test`):
 *   npm run build && npx tap test/history/expiry-after-outage.repro.ts
 *
 * A session kept alive by touches while Redis is paused: the touches go to MariaDB (which slides
 * and persists the idle expiry), but the Redis entry keeps the idle expiry it had before the
 * pause. When Redis answers again the TOUCH script finds that old expiry passed and answers
 * "expired" — an active session is logged out, and reads show its expiry move backwards by the
 * length of the outage (not bounded by TOUCH_PERSIST_THRESHOLD_SECONDS). G4 says a touch lost
 * with Redis may only make a session expire earlier by at most the write-behind interval.
 */
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { stack, waitFor } from '../helpers/service-process.js';

const s = await stack(t);

t.test('touches during a Redis pause keep the session alive after Redis is back', async (t) => {
  const a = await s.service(t);
  const created = await a.client.create({ x: 1 }, { idleTimeout: 3 });
  t.equal(created.status, 201);
  const token = created.body.token as string;
  t.equal((await a.client.read(token)).status, 200, 'read: fills the Redis entry');
  t.equal((await a.client.touch(token)).status, 200, 'touch: a Redis hit');

  s.redis.kill('SIGSTOP');
  const seen: string[] = [];
  for (let i = 0; i < 10; i++) {
    await sleep(500);
    const r = await a.client.touch(token);
    seen.push(`${r.status}:${r.body?.expiresAt ?? r.body?.code}`);
    t.equal(r.status, 200, `touch ${i} during the pause (served by MariaDB)`);
  }
  s.redis.kill('SIGCONT');
  // Wait until the replica uses Redis again (breaker closed after its probe).
  await waitFor('breaker closed', async () => a.logLines(/redis breaker closed/).length > 0, 10_000);
  await sleep(300);
  const after = await a.client.touch(token);
  t.comment(`touches during the pause: ${seen.join(' ')}`);
  t.comment(`touch after Redis is back: ${after.status} ${JSON.stringify(after.body)}`);
  t.equal(after.status, 200, 'the session was touched every 0.5 s (idle timeout 3 s): it must still be alive');
});
