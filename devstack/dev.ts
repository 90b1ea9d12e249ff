/**
 * `node --import tsx devstack/dev.ts` (what `npm run dev` ends with): runs the service locally.
 *
 * - DATABASE_URL / REDIS_URL from the environment are used as given. Whatever is missing is
 *   started as a throwaway server under <repo>/.local/dev/ on a free loopback port (MariaDB
 *   gets a `sessiond` database).
 * - Migrations are applied with `drizzle-kit migrate` (DATABASE_URL).
 * - Unless API_KEYS_FILE is set, a dev key is minted into .local/dev/api-keys.json and printed once.
 * - `node dist/server.js` runs with DATABASE_URL, REDIS_URL and API_KEYS_FILE set.
 * SIGINT/SIGTERM: SIGTERM to the server, wait for it, stop the throwaway servers.
 */
import type { ChildProcess } from 'node:child_process';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { mintApiKey } from '../src/auth/api-keys.js';
import { describeExit, runToCompletion, spawnReaped } from './children.js';
import { ensureServerBinaries } from './installers.js';
import { removeStaleServerDirs, type ManagedProcess } from './managed-server.js';
import { createDatabase, startMariaDb } from './mariadb.js';
import { startRedis } from './redis.js';

const log = (msg: string) => process.stderr.write(`[dev] ${msg}\n`);
const root = process.cwd();
const devDir = path.join(root, '.local', 'dev');
const MIGRATE_TIMEOUT_MS = 120_000;
const SERVER_STOP_TIMEOUT_MS = 15_000;
const SERVER_READY_TIMEOUT_MS = 30_000;

const servers: ManagedProcess[] = [];
let app: ChildProcess | undefined;
let shuttingDown = false;

function signalExitCode(signal: NodeJS.Signals | null): number {
  const n = signal ? os.constants.signals[signal] : undefined;
  return n ? 128 + n : 1;
}

function alive(child: ChildProcess | undefined): boolean {
  return child !== undefined && child.pid !== undefined && child.exitCode === null && child.signalCode === null;
}

function waitForExit(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (!alive(child)) return resolve({ code: child.exitCode, signal: child.signalCode as NodeJS.Signals | null });
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

async function stopServers(): Promise<void> {
  const results = await Promise.allSettled(servers.map((s) => s.stop()));
  for (const r of results) if (r.status === 'rejected') log(`stopping a server failed: ${String(r.reason)}`);
  // Throwaway data: remove the folders of the servers we started (logs included).
  await Promise.all(servers.map((s) => rm(s.dataDir, { recursive: true, force: true }).catch(() => undefined)));
}

async function shutdown(signal: NodeJS.Signals): Promise<never> {
  const child = app;
  if (child && alive(child)) {
    child.kill('SIGTERM');
    const exited = await Promise.race([waitForExit(child).then(() => true), sleep(SERVER_STOP_TIMEOUT_MS).then(() => false)]);
    if (!exited) {
      log(`server did not exit within ${SERVER_STOP_TIMEOUT_MS / 1000} s, killing it`);
      child.kill('SIGKILL');
      await Promise.race([waitForExit(child), sleep(5_000)]);
    }
  }
  await stopServers();
  process.exit(signalExitCode(signal));
}

let firstSignalAt = 0;
function onSignal(signal: NodeJS.Signals): void {
  // The same signal often arrives twice at once (sent to our pid and to the process group):
  // only a repeat after a moment means "stop waiting, kill everything".
  if (shuttingDown && Date.now() - firstSignalAt < 1_000) return;
  if (shuttingDown) {
    log(`${signal} again: killing everything`);
    if (app && alive(app)) app.kill('SIGKILL');
    for (const s of servers) s.kill('SIGKILL');
    process.exit(signalExitCode(signal));
  }
  shuttingDown = true;
  firstSignalAt = Date.now();
  log(`${signal}: stopping`);
  void shutdown(signal);
}
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
process.on('SIGHUP', onSignal);

/** Runs a command with inherited output (to stderr) and a time limit. */
async function run(bin: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<void> {
  const result = await runToCompletion(bin, args, { ...options, stdio: ['ignore', 2, 2] });
  if (result.code !== 0) throw new Error(`${path.basename(bin)} ${args.join(' ')} failed (${describeExit(result)})`);
}

/** Polls a TCP connect until the server listens, the server exits, or the timeout passes. */
async function waitForListen(host: string, port: number, child: ChildProcess, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && alive(child) && !shuttingDown) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.createConnection({ host, port });
      const done = (v: boolean) => {
        socket.destroy();
        resolve(v);
      };
      socket.setTimeout(1_000, () => done(false));
      socket.once('connect', () => done(true));
      socket.once('error', () => done(false));
    });
    if (ok) return true;
    await sleep(100);
  }
  return false;
}

function shellQuote(value: string): string {
  return /^[\w@%+=:,./-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

async function main(): Promise<number> {
  const serverJs = path.join(root, 'dist', 'server.js');
  if (!existsSync(serverJs)) throw new Error(`${serverJs} not found: run "npm run build" first (or use "npm run dev")`);

  let databaseUrl = process.env.DATABASE_URL || undefined;
  let redisUrl = process.env.REDIS_URL || undefined;

  if (databaseUrl && redisUrl) {
    log('using DATABASE_URL and REDIS_URL from the environment');
  } else {
    await ensureServerBinaries(log);
    await mkdir(devDir, { recursive: true });
    const stale = await removeStaleServerDirs(devDir);
    if (stale.length > 0) log(`removed ${stale.length} stale server folder(s) from earlier runs`);
    const started = Date.now();
    const [db, redis] = await Promise.all([
      databaseUrl ? undefined : startMariaDb({ baseDir: devDir }).then((s) => (servers.push(s), s)),
      redisUrl ? undefined : startRedis({ baseDir: devDir }).then((s) => (servers.push(s), s)),
    ]);
    if (db) {
      databaseUrl = await createDatabase(db.rootUrl, 'sessiond');
      log(`MariaDB: ${databaseUrl} (data in ${path.relative(root, db.dataDir)})`);
    } else {
      log('MariaDB: using DATABASE_URL from the environment');
    }
    if (redis) {
      redisUrl = redis.url;
      log(`Redis: ${redisUrl}`);
    } else {
      log('Redis: using REDIS_URL from the environment');
    }
    log(`throwaway servers ready in ${Date.now() - started} ms`);
  }
  if (shuttingDown) return new Promise<number>(() => {});

  log('applying migrations (drizzle-kit migrate)');
  const drizzleKit = path.join(root, 'node_modules', '.bin', 'drizzle-kit');
  await run(drizzleKit, ['migrate'], { cwd: root, env: { ...process.env, DATABASE_URL: databaseUrl }, timeoutMs: MIGRATE_TIMEOUT_MS });
  process.stderr.write('\n'); // drizzle-kit's spinner leaves the line open
  if (shuttingDown) return new Promise<number>(() => {});

  let apiKeysFile = process.env.API_KEYS_FILE || undefined;
  let mintedKey: string | undefined;
  if (apiKeysFile) {
    log(`API keys: using API_KEYS_FILE=${apiKeysFile}`);
  } else {
    await mkdir(devDir, { recursive: true });
    apiKeysFile = path.join(devDir, 'api-keys.json');
    const { key, entry } = mintApiKey('dev', 'dev');
    await writeFile(apiKeysFile, `${JSON.stringify([entry], null, 2)}\n`, { mode: 0o600 });
    await chmod(apiKeysFile, 0o600);
    mintedKey = key;
  }

  const port = process.env.PORT || '8080';
  const host = process.env.HOST && !['0.0.0.0', '::', '[::]'].includes(process.env.HOST) ? process.env.HOST : '127.0.0.1';
  // The service's own default is every interface (a Kubernetes probe needs it); a dev server stays on loopback.
  const env = { ...process.env, HOST: host, DATABASE_URL: databaseUrl, REDIS_URL: redisUrl, API_KEYS_FILE: apiKeysFile };
  app = spawnReaped(process.execPath, [serverJs], { cwd: root, env, stdio: 'inherit' });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    app!.once('error', reject);
    app!.once('exit', (code, signal) => resolve({ code, signal }));
  });

  void waitForListen(host.replace(/^\[|\]$/g, ''), Number(port), app, SERVER_READY_TIMEOUT_MS).then((ready) => {
    if (shuttingDown || !alive(app)) return;
    const base = `http://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${port}`;
    const lines = [
      '',
      '==================================================================',
      ready ? ` sessiond is listening on ${base}` : ` sessiond did not listen on ${base} within ${SERVER_READY_TIMEOUT_MS / 1000} s (still starting?)`,
      mintedKey
        ? ` dev API key (client "dev", namespace "dev"), shown only now; ${path.relative(root, apiKeysFile!)} holds just its hash:`
        : ` API keys come from ${apiKeysFile}; put one of your keys into KEY:`,
      '',
      `   KEY=${mintedKey ? shellQuote(mintedKey) : '<your key>'}`,
      `   curl -s -X POST ${base}/v1/sessions -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -d '{"data":{"hello":"world"}}'`,
      '',
      ' Ctrl-C stops the service' + (servers.length > 0 ? ' and the throwaway MariaDB/Redis.' : '.'),
      '==================================================================',
      '',
    ];
    process.stderr.write(`${lines.join('\n')}\n`);
  });

  const result = await exit;
  if (shuttingDown) return new Promise<number>(() => {}); // shutdown() exits
  log(`server exited (${result.signal ?? `exit code ${result.code}`})`);
  return result.code ?? signalExitCode(result.signal);
}

let exitCode = 1;
try {
  exitCode = await main();
} catch (err) {
  if (!shuttingDown) log(`failed: ${err instanceof Error ? err.message : String(err)}`);
  exitCode = 1;
}
if (shuttingDown) await new Promise<never>(() => {}); // a signal arrived: shutdown() owns the exit
shuttingDown = true;
await stopServers();
process.exit(exitCode);
