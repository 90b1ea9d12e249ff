import t from 'tap';
import { sharedRedisUrl } from '../helpers/redis.js';
import { sessionsHttpSuite } from './sessions-suite.js';

const app = await sessionsHttpSuite(t, { REDIS_URL: await sharedRedisUrl(t) });
t.test('the cache was in play', async (t) => {
  const counters = app.cacheCounters!;
  t.ok(counters.hits > 0, `hits: ${counters.hits}`);
  t.ok(counters.misses > 0, `misses: ${counters.misses}`);
  t.equal(counters.fallbacks, 0, 'Redis never failed');
});
