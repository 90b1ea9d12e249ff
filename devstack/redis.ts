/**
 * A throwaway Redis: redis-server on a free loopback port without persistence, in its own folder
 * under a base folder, with explicit arguments only (no config file). Also raw-socket probes that
 * never queue or retry the way a client library does.
 */
import net from 'node:net';
import path from 'node:path';
import { requireBinary } from './binaries.js';
import { DEFAULT_START_TIMEOUT_MS, makeServerDir, ManagedServer, startWithPortRetry, type ManagedProcess, type ProbeResult } from './managed-server.js';
import { freePort, isPortFree, LOOPBACK } from './ports.js';

export interface RedisProcess extends ManagedProcess {
  /** redis://127.0.0.1:PORT */
  readonly url: string;
}

/** Sends PING over a raw socket; true on +PONG within timeoutMs. A SIGSTOPped server yields false. */
export function pingRedis(port: number, timeoutMs = 1_000, host = LOOPBACK): Promise<boolean> {
  return pingRedisDetailed(port, timeoutMs, host).then((r) => r.ok);
}

type RedisReply = { ok: true; reply: string } | { ok: false; error: string };

/**
 * Sends one command over a raw socket and reads one reply (a simple string, an error or a bulk
 * string). Raw on purpose: a probe must not queue or retry the way a client library does.
 */
function rawRedisCommand(port: number, args: string[], timeoutMs: number, host = LOOPBACK): Promise<RedisReply> {
  return new Promise((resolve) => {
    const socket = net.createConnection({ host, port });
    let buffer = Buffer.alloc(0);
    let settled = false;
    const finish = (result: RedisReply) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ ok: false, error: `no ${args[0]} reply within ${timeoutMs} ms` }), timeoutMs);
    socket.on('connect', () => socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`));
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n');
      if (end < 0) return;
      const header = buffer.subarray(0, end).toString('latin1');
      if (header.startsWith('+')) return finish({ ok: true, reply: header.slice(1) });
      if (!header.startsWith('$')) return finish({ ok: false, error: `${args[0]} answered ${header}` }); // e.g. -LOADING
      const length = Number(header.slice(1));
      if (buffer.length < end + 2 + length) return;
      finish({ ok: true, reply: buffer.subarray(end + 2, end + 2 + length).toString('utf8') });
    });
    socket.on('error', (err) => finish({ ok: false, error: err.message }));
    socket.on('close', () => finish({ ok: false, error: 'connection closed' }));
  });
}

async function pingRedisDetailed(port: number, timeoutMs: number, host = LOOPBACK): Promise<ProbeResult> {
  const r = await rawRedisCommand(port, ['PING'], timeoutMs, host);
  if (!r.ok) return r;
  return r.reply === 'PONG' ? { ok: true } : { ok: false, error: `PING answered ${r.reply}` };
}

/** Readiness: `INFO server` answers and its process_id is our child's pid (not another Redis). */
async function redisProbe(port: number, expectedPid: number, timeoutMs = 1_000): Promise<ProbeResult> {
  const r = await rawRedisCommand(port, ['INFO', 'server'], timeoutMs);
  if (!r.ok) return r;
  const pid = Number(/^process_id:(\d+)/m.exec(r.reply)?.[1]);
  return pid === expectedPid
    ? { ok: true }
    : { ok: false, error: `port ${port} is answered by another Redis (pid ${pid}, ours is ${expectedPid})`, fatal: true };
}

function clusterEnabled(args: readonly string[]): boolean {
  const i = args.indexOf('--cluster-enabled');
  return i >= 0 && /^yes$/i.test(args[i + 1] ?? '');
}

/**
 * Starts redis-server on a free loopback port (or opts.port) without persistence, in its own
 * folder under baseDir. extraArgs are appended (later options win), e.g.
 * ['--cluster-enabled', 'yes'] — then the port is chosen so that the cluster bus port
 * (port + 10000) is valid and free, and nodes.conf lives in the server's folder.
 */
export async function startRedis(opts: { baseDir: string; extraArgs?: string[]; port?: number; startTimeoutMs?: number }): Promise<RedisProcess> {
  const redisServer = requireBinary('redis-server');
  const extraArgs = [...(opts.extraArgs ?? [])];
  const dir = await makeServerDir(opts.baseDir, 'redis-');
  const logFile = path.join(dir, 'redis-server.log');
  const cluster = clusterEnabled(extraArgs);

  const pickPort = async (): Promise<number> => {
    for (let i = 0; i < 50; i++) {
      const port = await freePort();
      if (!cluster) return port;
      if (port + 10_000 <= 65_535 && (await isPortFree(port + 10_000))) return port;
    }
    throw new Error('could not find a free port pair (port, port + 10000) for a Redis cluster node');
  };

  const server = new RedisServer(
    {
      name: 'redis-server',
      bin: redisServer,
      logFile,
      cwd: dir,
      startTimeoutMs: opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS,
      args: (port) => [
        '--port', String(port),
        '--bind', LOOPBACK,
        '--save', '',
        '--appendonly', 'no',
        '--dir', dir,
        '--daemonize', 'no',
        '--logfile', '',
        ...extraArgs,
      ],
      probe: (port, pid) => redisProbe(port, pid),
    },
    dir,
    opts.port ?? (await pickPort()),
  );
  await startWithPortRetry(server, opts.port !== undefined, pickPort);
  return server;
}

class RedisServer extends ManagedServer implements RedisProcess {
  get url(): string {
    return `redis://${LOOPBACK}:${this.port}`;
  }
}
