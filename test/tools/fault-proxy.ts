/**
 * A small TCP fault proxy for the tests: sits between a service and Redis or MariaDB (loopback
 * only) and, on command from the test, adds latency and jitter, blackholes traffic, resets
 * connections, refuses new ones, and heals.
 *
 * - `setLatency(ms, jitterMs)`: every chunk, both directions, is delivered `ms + U(0, jitter)`
 *   later; order within a direction is preserved (a chunk never overtakes the one before it).
 * - `blackhole(true)`: nothing is delivered either way and new connections are accepted but
 *   carry nothing — like a partition where packets are dropped and TCP keeps retransmitting.
 *   Held bytes are delivered when the blackhole ends (TCP would deliver them on heal too), so
 *   the protocol on each connection stays intact.
 * - `resetAll()`: every open connection is reset (RST) on both sides.
 * - `refuse(true)`: new connections are reset as soon as they are accepted; open ones go on.
 * - `heal()`: no latency, no blackhole, no refusal.
 */
import net from 'node:net';

export interface FaultProxyOptions {
  target: { host: string; port: number };
  /** Loopback only: '127.0.0.1' (default) or '::1'. */
  listenHost?: string;
  /** Fixed listen port (default: a free one). */
  port?: number;
}

export interface FaultProxyStats {
  /** Connections accepted (refused ones included). */
  accepted: number;
  refused: number;
  reset: number;
  /** Connections open right now. */
  open: number;
  bytesUp: number;
  bytesDown: number;
}

export interface FaultProxy {
  readonly port: number;
  readonly host: string;
  /** `host:port` to give a client instead of the target. */
  readonly address: string;
  setLatency(ms: number, jitterMs?: number): void;
  blackhole(on: boolean): void;
  resetAll(): void;
  refuse(on: boolean): void;
  heal(): void;
  stats(): FaultProxyStats;
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/**
 * Resets a socket (RST) — or, when we already ended it, destroys it. Node 20's
 * `resetAndDestroy()` on a socket whose shutdown is still in flight gets EINVAL from
 * uv_tcp_close_reset and never closes the handle; at exit Node then waits for that handle
 * forever at 100 % CPU (the history run used to hang after its tests passed).
 */
export function resetOrDestroy(s: net.Socket): void {
  if (s.destroyed) return;
  if (s.writableEnded) s.destroy();
  else s.resetAndDestroy();
}

/** One direction of one connection: an ordered, delayed, holdable pipe. */
class Lane {
  private readonly queue: Array<{ at: number; chunk: Buffer }> = [];
  private timer: NodeJS.Timeout | undefined;
  private lastAt = 0;

  constructor(
    private readonly to: net.Socket,
    private readonly proxy: Shared,
    private readonly count: (n: number) => void,
  ) {}

  push(chunk: Buffer): void {
    const delay = this.proxy.latencyMs + Math.random() * this.proxy.jitterMs;
    const at = Math.max(Date.now() + delay, this.lastAt);
    this.lastAt = at;
    this.queue.push({ at, chunk });
    this.pump();
  }

  pump(): void {
    if (this.timer !== undefined) return;
    while (this.queue.length > 0 && !this.proxy.holding) {
      const head = this.queue[0]!;
      const wait = head.at - Date.now();
      if (wait > 0) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.pump();
        }, wait);
        return;
      }
      this.queue.shift();
      if (!this.to.destroyed) {
        this.count(head.chunk.length);
        this.to.write(head.chunk);
      }
    }
  }

  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }
}

interface Shared {
  latencyMs: number;
  jitterMs: number;
  holding: boolean;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  lanes: Lane[];
}

export async function createFaultProxy(options: FaultProxyOptions): Promise<FaultProxy> {
  const listenHost = options.listenHost ?? '127.0.0.1';
  if (!LOOPBACK.has(listenHost) || !LOOPBACK.has(options.target.host)) {
    throw new Error(`fault proxy: loopback only (listen ${listenHost}, target ${options.target.host})`);
  }
  const shared: Shared = { latencyMs: 0, jitterMs: 0, holding: false };
  let refusing = false;
  const pairs = new Set<Pair>();
  const st: FaultProxyStats = { accepted: 0, refused: 0, reset: 0, open: 0, bytesUp: 0, bytesDown: 0 };

  const drop = (pair: Pair, reset: boolean) => {
    if (!pairs.delete(pair)) return;
    st.open = pairs.size;
    for (const lane of pair.lanes) lane.stop();
    for (const s of [pair.client, pair.upstream]) {
      if (reset) resetOrDestroy(s);
      else s.destroy();
    }
  };

  const server = net.createServer({ noDelay: true }, (client) => {
    st.accepted += 1;
    if (refusing) {
      st.refused += 1;
      client.on('error', () => undefined);
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect({ host: options.target.host, port: options.target.port, noDelay: true });
    const pair: Pair = { client, upstream, lanes: [] };
    const up = new Lane(upstream, shared, (n) => (st.bytesUp += n));
    const down = new Lane(client, shared, (n) => (st.bytesDown += n));
    pair.lanes.push(up, down);
    pairs.add(pair);
    st.open = pairs.size;
    client.on('data', (c: Buffer) => up.push(c));
    upstream.on('data', (c: Buffer) => down.push(c));
    // An error or close on either side ends both: a reset upstream is a reset for the client.
    client.on('error', () => drop(pair, true));
    upstream.on('error', () => drop(pair, true));
    client.on('close', () => drop(pair, false));
    upstream.on('close', () => drop(pair, false));
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
  });
  server.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, listenHost, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;
  const flush = () => {
    for (const pair of pairs) for (const lane of pair.lanes) lane.pump();
  };

  return {
    port,
    host: listenHost,
    address: listenHost.includes(':') ? `[${listenHost}]:${port}` : `${listenHost}:${port}`,
    setLatency(ms: number, jitterMs = 0) {
      if (!(ms >= 0) || !(jitterMs >= 0)) throw new RangeError('latency and jitter must be ≥ 0');
      shared.latencyMs = ms;
      shared.jitterMs = jitterMs;
    },
    blackhole(on: boolean) {
      shared.holding = on;
      if (!on) flush();
    },
    resetAll() {
      for (const pair of [...pairs]) {
        st.reset += 1;
        drop(pair, true);
      }
    },
    refuse(on: boolean) {
      refusing = on;
    },
    heal() {
      shared.latencyMs = 0;
      shared.jitterMs = 0;
      refusing = false;
      shared.holding = false;
      flush();
    },
    stats: () => ({ ...st }),
    async close() {
      refusing = true;
      for (const pair of [...pairs]) drop(pair, false);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
