import t from 'tap';
import { sharedRedisUrl } from '../helpers/redis.js';
import { clientTokensHttpSuite } from './client-tokens-suite.js';

const app = await clientTokensHttpSuite(t, { REDIS_URL: await sharedRedisUrl(t) });
t.test('the cache was in play', async (t) => {
  t.ok(app.cacheCounters!.hits > 0, `hits: ${app.cacheCounters!.hits}`);
  t.equal(app.cacheCounters!.fallbacks, 0, 'Redis never failed');
});
