/**
 * A throwaway server process (MariaDB or Redis): its own folder under a caller-chosen base
 * directory, a free loopback port, a readiness probe that checks the answer is from our own
 * child, and stop/kill/restart for fault-injection tests. Children go to the shared reaper
 * (children.ts), so none is left behind.
 */
import { type ChildProcess } from 'node:child_process';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeExit, exitPromise, KILL_WAIT_MS, spawnReaped, tailFile, withTimeout, type ExitResult } from './children.js';
import { isPortFree } from './ports.js';

export const DEFAULT_START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;
/** Name of the marker file holding the pid of the node process that owns a server folder. */
export const OWNER_FILE = 'owner.pid';

function writeOwnerFile(dir: string): void {
  writeFileSync(path.join(dir, OWNER_FILE), `${process.pid}\n`);
}

/**
 * Removes `<prefix>-*` server folders under baseDir whose owning node process (see OWNER_FILE)
 * is gone, e.g. after a run that was SIGKILLed. Folders of live owners are left alone.
 */
export async function removeStaleServerDirs(baseDir: string, prefixes: readonly string[] = ['mariadb-', 'redis-']): Promise<string[]> {
  const removed: string[] = [];
  let entries: string[];
  try {
    entries = await readdir(baseDir);
  } catch {
    return removed;
  }
  for (const entry of entries) {
    if (!prefixes.some((p) => entry.startsWith(p))) continue;
    const dir = path.join(baseDir, entry);
    let ownerAlive = false;
    try {
      const pid = Number.parseInt(await readFile(path.join(dir, OWNER_FILE), 'utf8'), 10);
      if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 0);
          ownerAlive = true;
        } catch (err) {
          ownerAlive = (err as NodeJS.ErrnoException).code === 'EPERM';
        }
      }
    } catch {
      ownerAlive = false;
    }
    if (!ownerAlive) {
      await rm(dir, { recursive: true, force: true });
      removed.push(dir);
    }
  }
  return removed;
}

export interface ManagedProcess {
  /** pid of the current server process (changes on restart()); 0 when it was never started. */
  readonly pid: number;
  readonly port: number;
  /** This server's own folder under baseDir (logs, data, pid/socket files). */
  readonly dataDir: string;
  /** Path of the server's stdout/stderr log. */
  readonly logFile: string;
  /** True while the current server process has not exited (a SIGSTOPped server is running). */
  readonly running: boolean;
  /** Sends a raw signal (SIGKILL, SIGSTOP, SIGCONT, ...) to the server. No-op when not running. */
  kill(signal?: NodeJS.Signals): void;
  /** Starts the server again on the same port and data dir (stopping it first if it still runs) and waits until ready. */
  restart(): Promise<void>;
  /** Graceful stop: SIGTERM (+SIGCONT), SIGKILL after a grace period; waits for exit. Idempotent. */
  stop(): Promise<void>;
}

export type ProbeResult = { ok: true } | { ok: false; error: string; fatal?: boolean };

export interface ServerSpec {
  name: string;
  bin: string;
  args(port: number): string[];
  /** One readiness check. Must make sure that the server answering is ours (pid), not some other listener. */
  probe(port: number, pid: number): Promise<ProbeResult>;
  logFile: string;
  cwd: string;
  beforeStart?(): void;
  /** Runs on restart(), after the old process is gone and before the new one starts, with the binary and its arguments. */
  beforeRestart?(bin: string, args: string[]): Promise<void>;
  startTimeoutMs: number;
}

export class StartupError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
  }
}

const ADDRESS_IN_USE = /address already in use|bind on tcp\/ip port|errno: 98|could not create server tcp listening socket/i;

export class ManagedServer implements ManagedProcess {
  #child: ChildProcess | undefined;
  #exited: Promise<ExitResult> = Promise.resolve({ code: null, signal: null });
  #stopping: Promise<void> | undefined;
  #port: number;

  constructor(
    private readonly spec: ServerSpec,
    readonly dataDir: string,
    port: number,
  ) {
    this.#port = port;
  }

  get pid(): number {
    return this.#child?.pid ?? 0;
  }

  get port(): number {
    return this.#port;
  }

  get logFile(): string {
    return this.spec.logFile;
  }

  get running(): boolean {
    const c = this.#child;
    return c !== undefined && c.pid !== undefined && c.exitCode === null && c.signalCode === null;
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (!this.running) return;
    try {
      process.kill(this.pid, signal);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  /** Picks another port; only used before the first successful start (port collisions). */
  setPort(port: number): void {
    this.#port = port;
  }

  async start(): Promise<void> {
    if (this.running) throw new Error(`${this.spec.name} is already running (pid ${this.pid})`);
    if (!(await isPortFree(this.#port))) {
      throw new StartupError(`${this.spec.name}: port ${this.#port} is already in use`, true);
    }
    this.spec.beforeStart?.();
    const fd = openSync(this.spec.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawnReaped(this.spec.bin, this.spec.args(this.#port), { cwd: this.spec.cwd, stdio: ['ignore', fd, fd], detached: false, env: process.env });
    } finally {
      closeSync(fd);
    }
    this.#child = child;
    this.#exited = exitPromise(child);

    const deadline = Date.now() + this.spec.startTimeoutMs;
    let lastError = 'not probed yet';
    for (;;) {
      if (!this.running) {
        const result = await this.#exited;
        const tail = await tailFile(this.spec.logFile);
        throw new StartupError(
          `${this.spec.name} on port ${this.#port} exited during startup (${describeExit(result)}). Log ${this.spec.logFile}:\n${tail}`,
          ADDRESS_IN_USE.test(tail),
        );
      }
      const probe = await this.spec.probe(this.#port, this.pid);
      if (probe.ok) return;
      lastError = probe.error;
      if (probe.fatal || Date.now() > deadline) {
        this.kill('SIGKILL');
        await withTimeout(this.#exited, KILL_WAIT_MS);
        const tail = await tailFile(this.spec.logFile);
        const why = probe.fatal ? 'is not usable' : `not ready after ${this.spec.startTimeoutMs} ms`;
        throw new StartupError(
          `${this.spec.name} on port ${this.#port} ${why} (last error: ${lastError}). Log ${this.spec.logFile}:\n${tail}`,
          ADDRESS_IN_USE.test(tail) || /answered by another/.test(lastError),
        );
      }
      await sleep(50);
    }
  }

  async restart(): Promise<void> {
    if (this.running) await this.stop();
    await this.spec.beforeRestart?.(this.spec.bin, this.spec.args(this.#port));
    await this.start();
  }

  stop(): Promise<void> {
    if (!this.#stopping) {
      this.#stopping = this.#stop().finally(() => {
        this.#stopping = undefined;
      });
    }
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    if (!this.#child) return;
    if (this.running) {
      this.kill('SIGTERM');
      this.kill('SIGCONT'); // a SIGSTOPped server must wake up to act on SIGTERM
    }
    if (await withTimeout(this.#exited, STOP_GRACE_MS)) return;
    this.kill('SIGKILL');
    if (await withTimeout(this.#exited, KILL_WAIT_MS)) return;
    throw new Error(`${this.spec.name} (pid ${this.pid}) did not exit after SIGKILL`);
  }
}

export async function startWithPortRetry(server: ManagedServer, explicitPort: boolean, pickPort: () => Promise<number>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await server.start();
      return;
    } catch (err) {
      if (!(err instanceof StartupError) || !err.addressInUse || explicitPort || attempt >= 3) throw err;
      server.setPort(await pickPort());
    }
  }
}

export async function makeServerDir(baseDir: string, prefix: string): Promise<string> {
  const base = path.resolve(baseDir);
  await mkdir(base, { recursive: true });
  const dir = await mkdtemp(path.join(base, prefix));
  writeOwnerFile(dir);
  return dir;
}
