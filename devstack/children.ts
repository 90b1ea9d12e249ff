/**
 * Child processes that are never left behind: each one is SIGKILLed from a process 'exit' handler
 * (the reaper) and, on Linux, started through `setpriv --pdeathsig SIGKILL` so that the kernel
 * kills it even when this process dies from a signal (SIGKILL included) and no JavaScript runs.
 * The throwaway servers, the test helpers' service processes and the benchmark's share it.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions, type StdioOptions } from 'node:child_process';
import { rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findBinary } from './binaries.js';

export const KILL_WAIT_MS = 5_000;

const liveChildren = new Set<ChildProcess>();
let exitHandlerInstalled = false;

/** Hands a child to the reaper: SIGKILLed when this process exits with it still running. */
export function track(child: ChildProcess): void {
  if (!exitHandlerInstalled) {
    exitHandlerInstalled = true;
    // Last resort: if the parent exits with children still running, kill them (SIGKILL also ends
    // stopped processes). 'exit' handlers must be synchronous, which process.kill is.
    process.on('exit', () => {
      for (const c of liveChildren) {
        if (c.pid !== undefined) {
          try {
            process.kill(c.pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
      }
    });
  }
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  child.once('error', () => {
    if (child.pid === undefined) liveChildren.delete(child);
  });
}

let setprivPath: string | null | undefined;
/** `setpriv --pdeathsig SIGKILL --` prefix on Linux when util-linux supports it, else []. */
function deathSignalPrefix(): string[] {
  if (setprivPath === undefined) {
    setprivPath = null;
    if (process.platform === 'linux') {
      const candidate = findBinary('setpriv');
      if (candidate && spawnSync(candidate, ['--pdeathsig', 'SIGKILL', '--', 'true'], { stdio: 'ignore', timeout: 5_000 }).status === 0) {
        setprivPath = candidate;
      }
    }
  }
  return setprivPath ? [setprivPath, '--pdeathsig', 'SIGKILL', '--'] : [];
}

/**
 * Spawns `bin args` so that it dies with this process (the kernel's parent-death signal where
 * available, the reaper always). `child.pid` is the command's own pid: setpriv execs it.
 */
export function spawnReaped(bin: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  const [first, ...rest] = [...deathSignalPrefix(), bin, ...args] as [string, ...string[]];
  const child = spawn(first, rest, options);
  track(child);
  return child;
}

export interface ExitResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  error?: Error;
}

export function describeExit(r: ExitResult): string {
  if (r.error) return r.error.message;
  return r.signal ? `killed by ${r.signal}` : `exit code ${r.code}`;
}

/** Resolves when the child has exited (or failed to spawn). Never rejects. */
export function exitPromise(child: ChildProcess): Promise<ExitResult> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode as NodeJS.Signals | null });
      return;
    }
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => {
      if (child.pid === undefined) resolve({ code: null, signal: null, error });
    });
  });
}

/** The promise's value, or undefined when it has not settled within ms. */
export async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  const ac = new AbortController();
  try {
    return await Promise.race([promise, sleep(ms, undefined, { signal: ac.signal }).catch(() => undefined)]);
  } finally {
    ac.abort();
  }
}

/** Runs a command to completion with a hard time limit (SIGKILL on timeout). */
export async function runToCompletion(
  bin: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs: number; stdio: StdioOptions; cwd?: string },
): Promise<ExitResult> {
  const child = spawn(bin, args, { env: opts.env ?? process.env, stdio: opts.stdio, cwd: opts.cwd });
  track(child);
  const done = exitPromise(child);
  const result = await withTimeout(done, opts.timeoutMs);
  if (result) return result;
  child.kill('SIGKILL');
  await withTimeout(done, KILL_WAIT_MS);
  return { code: null, signal: 'SIGKILL', error: new Error(`${path.basename(bin)} timed out after ${opts.timeoutMs} ms`) };
}

/** Last lines of a log file (for error messages). */
export async function tailFile(file: string, lines = 30, maxBytes = 16_384): Promise<string> {
  try {
    const handle = await open(file, 'r');
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, maxBytes);
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, size - length);
      return buffer.toString('utf8').split('\n').slice(-lines - 1).join('\n').trimEnd();
    } finally {
      await handle.close();
    }
  } catch (err) {
    return `(could not read ${file}: ${(err as Error).message})`;
  }
}

/** Best-effort synchronous removal (used from signal paths). */
export function removeDirSync(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    // ignore
  }
}
