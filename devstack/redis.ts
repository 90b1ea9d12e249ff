/**
 * A throwaway Redis: redis-server on a free loopback port without persistence, in its own folder
 * under a base folder, with explicit arguments only (no config file). Also raw-socket probes that
 * never queue or retry the way a client library does.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import path from 'node:path';
import { requireBinary } from './binaries.js';
import { DEFAULT_START_TIMEOUT_MS, makeServerDir, ManagedServer, startWithPortRetry, type ManagedProcess, type ProbeResult, type ServerSpec } from './managed-server.js';
import { freePort, isPortFree, LOOPBACK } from './ports.js';

export interface RedisProcess extends ManagedProcess {
  /** redis://127.0.0.1:PORT (rediss://user:password@… with TLS and a user) */
  readonly url: string;
  /** How probes and admin clients reach it: TLS options and, with a user, the default user's login. */
  readonly access: RedisAccess;
}

/** Sends PING over a raw socket; true on +PONG within timeoutMs. A SIGSTOPped server yields false. */
export function pingRedis(port: number, timeoutMs = 1_000, host = LOOPBACK, access?: RedisAccess): Promise<boolean> {
  return pingRedisDetailed(port, timeoutMs, host, access).then((r) => r.ok);
}

type RedisReply = { ok: true; reply: string } | { ok: false; error: string };

/**
 * How a probe reaches a Redis that wants TLS and a login (startRedis' `tls` and `user`): the CA
 * (and client certificate) for the handshake and the ACL user to AUTH as. Plain TCP when absent.
 */
export interface RedisAccess {
  tls?: tls.ConnectionOptions;
  user?: { name: string; password: string };
}

/** One RESP reply at the start of `buffer` (simple string, error or bulk string), or undefined while incomplete. */
function parseReply(buffer: Buffer, command: string): { result: RedisReply; rest: Buffer } | undefined {
  const end = buffer.indexOf('\r\n');
  if (end < 0) return undefined;
  const header = buffer.subarray(0, end).toString('latin1');
  if (header.startsWith('+')) return { result: { ok: true, reply: header.slice(1) }, rest: buffer.subarray(end + 2) };
  if (!header.startsWith('$')) return { result: { ok: false, error: `${command} answered ${header}` }, rest: buffer.subarray(end + 2) }; // e.g. -LOADING
  const length = Number(header.slice(1));
  if (buffer.length < end + 2 + length + 2) return undefined;
  return { result: { ok: true, reply: buffer.subarray(end + 2, end + 2 + length).toString('utf8') }, rest: buffer.subarray(end + 4 + length) };
}

const encodeCommand = (args: string[]) => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

/**
 * Sends one command over a raw socket and reads one reply (a simple string, an error or a bulk
 * string). Raw on purpose: a probe must not queue or retry the way a client library does. With
 * `access.user`, AUTH goes first in the same write and its reply must be +OK.
 */
function rawRedisCommand(port: number, args: string[], timeoutMs: number, host = LOOPBACK, access: RedisAccess = {}): Promise<RedisReply> {
  return new Promise((resolve) => {
    const socket = access.tls
      ? tls.connect({ ...access.tls, host, port, servername: net.isIP(host) ? undefined : host })
      : net.createConnection({ host, port });
    let buffer: Buffer = Buffer.alloc(0);
    let settled = false;
    let authPending = access.user !== undefined;
    const finish = (result: RedisReply) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ ok: false, error: `no ${args[0]} reply within ${timeoutMs} ms` }), timeoutMs);
    socket.on(access.tls ? 'secureConnect' : 'connect', () => {
      const auth = access.user ? encodeCommand(['AUTH', access.user.name, access.user.password]) : '';
      socket.write(auth + encodeCommand(args));
    });
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const parsed = parseReply(buffer, authPending ? 'AUTH' : args[0]!);
        if (parsed === undefined) return;
        buffer = parsed.rest;
        if (!authPending) return finish(parsed.result);
        authPending = false;
        if (!parsed.result.ok) return finish(parsed.result);
      }
    });
    socket.on('error', (err) => finish({ ok: false, error: err.message }));
    socket.on('close', () => finish({ ok: false, error: 'connection closed' }));
  });
}

async function pingRedisDetailed(port: number, timeoutMs: number, host = LOOPBACK, access?: RedisAccess): Promise<ProbeResult> {
  const r = await rawRedisCommand(port, ['PING'], timeoutMs, host, access);
  if (!r.ok) return r;
  return r.reply === 'PONG' ? { ok: true } : { ok: false, error: `PING answered ${r.reply}` };
}

/** Readiness: `INFO server` answers and its process_id is our child's pid (not another Redis). */
async function redisProbe(port: number, expectedPid: number, timeoutMs = 1_000, access?: RedisAccess): Promise<ProbeResult> {
  const r = await rawRedisCommand(port, ['INFO', 'server'], timeoutMs, LOOPBACK, access);
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
 * TLS for startRedis: the server listens on TLS only (`--port 0`, its port is the TLS port) with
 * these PEM files, and the readiness probe connects with `client` (the CA, and a client
 * certificate when the server asks for one).
 */
export interface RedisServerTls {
  certFile: string;
  keyFile: string;
  caFile: string;
  /** Whether clients must present a certificate signed by caFile (mutual TLS). Default false. */
  requireClientCerts?: boolean;
  client: tls.ConnectionOptions;
}

/**
 * An ACL user for startRedis; `rules` are its ACL rules (default: every key, channel and
 * command). The `default` user then gets a random password known only to the probe and admin
 * clients (RedisProcess.access), so nothing works without logging in.
 */
export interface RedisServerUser {
  name: string;
  password: string;
  rules?: string;
}

/** The redis-server arguments for TLS and an ACL user (after the others: later options win). */
function redisAccessArgs(port: number, serverTls: RedisServerTls | undefined, user: RedisServerUser | undefined, admin: RedisAccess['user']): string[] {
  const args: string[] = [];
  if (serverTls) {
    args.push(
      '--port', '0',
      '--tls-port', String(port),
      '--tls-cert-file', serverTls.certFile,
      '--tls-key-file', serverTls.keyFile,
      '--tls-ca-cert-file', serverTls.caFile,
      '--tls-auth-clients', serverTls.requireClientCerts ? 'yes' : 'no',
    );
  }
  if (user) {
    // One argument per word: redis-server quotes each argument into one token of the config line.
    const rules = (user.rules ?? '~* &* +@all').split(/\s+/).filter(Boolean);
    args.push('--user', 'default', 'on', `>${admin!.password}`, '~*', '&*', '+@all');
    args.push('--user', user.name, 'on', `>${user.password}`, ...rules);
  }
  return args;
}

/**
 * Starts redis-server on a free loopback port (or opts.port) without persistence, in its own
 * folder under baseDir. extraArgs are appended (later options win), e.g.
 * ['--cluster-enabled', 'yes'] — then the port is chosen so that the cluster bus port
 * (port + 10000) is valid and free, and nodes.conf lives in the server's folder. With `tls` it
 * speaks TLS only, with `user` it wants that ACL login (see RedisServerTls, RedisServerUser).
 */
export async function startRedis(opts: {
  baseDir: string;
  extraArgs?: string[];
  port?: number;
  startTimeoutMs?: number;
  tls?: RedisServerTls;
  user?: RedisServerUser;
  /** The default user's password with `user` (random when not given; a cluster's nodes share one). */
  adminPassword?: string;
}): Promise<RedisProcess> {
  const redisServer = requireBinary('redis-server');
  const extraArgs = [...(opts.extraArgs ?? [])];
  const dir = await makeServerDir(opts.baseDir, 'redis-');
  const logFile = path.join(dir, 'redis-server.log');
  const cluster = clusterEnabled(extraArgs);
  const access: RedisAccess = {
    tls: opts.tls?.client,
    user: opts.user === undefined ? undefined : { name: 'default', password: opts.adminPassword ?? randomBytes(18).toString('base64url') },
  };

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
        ...redisAccessArgs(port, opts.tls, opts.user, access.user),
      ],
      probe: (port, pid) => redisProbe(port, pid, 1_000, access),
    },
    dir,
    opts.port ?? (await pickPort()),
    access,
    opts.user,
  );
  await startWithPortRetry(server, opts.port !== undefined, pickPort);
  return server;
}

class RedisServer extends ManagedServer implements RedisProcess {
  constructor(
    spec: ServerSpec,
    dataDir: string,
    port: number,
    readonly access: RedisAccess,
    private readonly user: RedisServerUser | undefined,
  ) {
    super(spec, dataDir, port);
  }

  get url(): string {
    const login = this.user ? `${encodeURIComponent(this.user.name)}:${encodeURIComponent(this.user.password)}@` : '';
    return `${this.access.tls ? 'rediss' : 'redis'}://${login}${LOOPBACK}:${this.port}`;
  }
}
