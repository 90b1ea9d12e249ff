/**
 * `node --import tsx devstack/test-stack.ts [tap args...]` (what `npm test` ends with).
 *
 * Starts one throwaway MariaDB and one Redis under os.tmpdir()/sessiond-test-XXXX, runs tap
 * with SESSIOND_TEST_MARIADB_URL (root URL, no database) and SESSIOND_TEST_REDIS_URL set,
 * then stops both servers, removes the folder and exits with tap's exit code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { removeDirSync } from './children.js';
import { ensureServerBinaries } from './installers.js';
import type { ManagedProcess } from './managed-server.js';
import { startMariaDb } from './mariadb.js';
import { startRedis } from './redis.js';

const log = (msg: string) => process.stderr.write(`[test-stack] ${msg}\n`);
const root = process.cwd();

const servers: ManagedProcess[] = [];
let tmpDir: string | undefined;
let tap: ChildProcess | undefined;
let cleaningUp: Promise<void> | undefined;

function signalExitCode(signal: NodeJS.Signals | null): number {
  const n = signal ? os.constants.signals[signal] : undefined;
  return n ? 128 + n : 1;
}

async function cleanup(): Promise<void> {
  cleaningUp ??= (async () => {
    await Promise.allSettled(servers.map((s) => s.stop()));
    if (tmpDir) await rm(tmpDir, { recursive: true, force: true }).catch(() => removeDirSync(tmpDir!));
  })();
  return cleaningUp;
}

let interrupted = false;
let firstSignalAt = 0;
function onSignal(signal: NodeJS.Signals): void {
  // The same signal often arrives twice at once (sent to our pid and to the process group):
  // only a repeat after a moment means "stop waiting, kill everything".
  if (interrupted && Date.now() - firstSignalAt < 1_000) return;
  if (interrupted) {
    // second signal: stop being polite
    log(`${signal} again, killing everything`);
    tap?.kill('SIGKILL');
    for (const s of servers) s.kill('SIGKILL');
    if (tmpDir) removeDirSync(tmpDir);
    process.exit(signalExitCode(signal));
  }
  interrupted = true;
  firstSignalAt = Date.now();
  log(`${signal}: stopping tap and the test servers`);
  void (async () => {
    if (tap && tap.exitCode === null && tap.signalCode === null) {
      tap.kill('SIGTERM');
      const exited = new Promise((resolve) => tap!.once('exit', resolve));
      if ((await Promise.race([exited.then(() => true), sleep(20_000).then(() => false)])) === false) tap.kill('SIGKILL');
    }
    await cleanup();
    process.exit(signalExitCode(signal));
  })();
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
process.on('SIGHUP', onSignal);

async function main(): Promise<number> {
  await ensureServerBinaries(log);
  tmpDir = await mkdtemp(path.join(os.tmpdir(), 'sessiond-test-'));
  const started = Date.now();
  const [db, redis] = await Promise.all([
    startMariaDb({ baseDir: tmpDir }).then((s) => (servers.push(s), s)),
    startRedis({ baseDir: tmpDir }).then((s) => (servers.push(s), s)),
  ]);
  if (interrupted) return new Promise<number>(() => {}); // the signal handler exits
  log(`MariaDB ${db.rootUrl} and Redis ${redis.url} ready in ${Date.now() - started} ms`);

  const tapBin = path.join(root, 'node_modules', '.bin', 'tap');
  const env = { ...process.env, SESSIOND_TEST_MARIADB_URL: db.rootUrl, SESSIOND_TEST_REDIS_URL: redis.url };
  tap = spawn(tapBin, process.argv.slice(2), { cwd: root, env, stdio: 'inherit' });
  const result = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    tap!.once('error', reject);
    tap!.once('exit', (code, signal) => resolve({ code, signal }));
  });
  if (interrupted) return new Promise<number>(() => {});
  return result.code ?? signalExitCode(result.signal);
}

let exitCode = 1;
try {
  exitCode = await main();
} catch (err) {
  log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  exitCode = 1;
}
await cleanup();
process.exit(exitCode);
