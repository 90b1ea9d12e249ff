/**
 * The test entry point: the service as dist/server.js runs it (the same compiled code, so it
 * starts as fast), plus test-only switches that the production entry point never reads.
 * `npm test` builds dist/ first.
 *
 * SESSIOND_TEST_UNSAFE_FILL=1: the planted bug of test/history/planted-bug.test.ts — cache
 * fills take no lease and install without the lease and write-marker checks.
 */
import { runServer } from '../../dist/main.js';

const unsafeUnfencedFill = process.env.SESSIOND_TEST_UNSAFE_FILL === '1';
const app = await runServer({ startSweeper: true, unsafeUnfencedFill });
if (unsafeUnfencedFill) app.log.warn('SESSIOND_TEST_UNSAFE_FILL=1: cache fills are unsafe (a test-only planted bug)');
