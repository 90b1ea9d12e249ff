import t from 'tap';
import { sessionsHttpSuite } from './sessions-suite.js';

const app = await sessionsHttpSuite(t, {});
t.equal(app.cacheCounters, undefined, 'no Redis configured: MariaDB alone');
