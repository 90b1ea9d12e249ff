import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyBaseLogger } from 'fastify';

export interface Scrape {
  contentType: string;
  body: string;
}

export interface MetricsServerOptions {
  host: string;
  port: number;
}

/**
 * /metrics on a port of its own (METRICS_PORT), so that the scrape endpoint can stay inside
 * the cluster while the API port is exposed. A bare node:http server: GET or HEAD /metrics,
 * 404 for any other path, 405 for any other method. Nothing else is served there.
 */
export class MetricsServer {
  private server: http.Server | undefined;
  private starting: Promise<AddressInfo> | undefined;
  private resolveListening!: (address: AddressInfo) => void;
  private rejectListening!: (err: unknown) => void;
  /** Settles when start() has bound the port (or failed to). */
  readonly listening: Promise<AddressInfo>;

  constructor(
    private readonly options: MetricsServerOptions,
    private readonly scrape: () => Promise<Scrape>,
    private readonly log: FastifyBaseLogger,
  ) {
    this.listening = new Promise<AddressInfo>((resolve, reject) => {
      this.resolveListening = resolve;
      this.rejectListening = reject;
    });
    // Whoever awaits it sees the failure; nobody awaiting it is no unhandled rejection.
    this.listening.catch(() => undefined);
  }

  /** The bound address, once listening. */
  address(): AddressInfo | undefined {
    const address = this.server?.address();
    return typeof address === 'object' && address !== null ? address : undefined;
  }

  /** Binds the port. Idempotent; rejects when the port cannot be bound. */
  start(): Promise<AddressInfo> {
    this.starting ??= this.bind().then(
      (address) => {
        this.resolveListening(address);
        return address;
      },
      (err: unknown) => {
        this.rejectListening(err);
        throw err;
      },
    );
    return this.starting;
  }

  private bind(): Promise<AddressInfo> {
    const server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.log.error({ err }, 'metrics scrape failed');
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
        res.end('metrics scrape failed\n');
      });
    });
    // A scraper that stalls must not hold a socket for long.
    server.headersTimeout = 10_000;
    server.requestTimeout = 10_000;
    server.keepAliveTimeout = 65_000;
    this.server = server;
    return new Promise<AddressInfo>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.options.host, port: this.options.port }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.log.error({ err }, 'metrics server error'));
        resolve(this.address()!);
      });
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' });
      res.end('method not allowed\n');
      return;
    }
    const { contentType, body } = await this.scrape();
    res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  /** Stops listening and drops open (keep-alive) scrape connections. */
  async stop(): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    await this.starting?.catch(() => undefined);
    if (!server.listening) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }
}
