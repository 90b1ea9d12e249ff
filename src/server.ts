/** The production entry point (`node dist/server.js`): reads no test-only switch. */
import { runServer } from './main.js';

await runServer({ startSweeper: true });
