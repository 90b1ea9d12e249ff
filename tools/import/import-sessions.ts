/**
 * Copies live sessions into sessiond under their existing ids, so that switching an app over
 * logs nobody out. A client of sessiond like any app server: it creates each session with
 * `PUT /v1/sessions/current` (`If-None-Match: *`) under an API key whose namespace has the
 * `clientTokens` policy, so a re-run skips what is there (412) and never overwrites.
 *
 *   SESSIOND_API_KEY=… npm run import -- connect-redis --redis redis://host:6379 --sessiond http://sessiond:8080 [--prefix sess:]
 *
 * Progress goes to stderr, the final report (JSON) to stdout. Sessions are named by their
 * public id (base64url SHA-256 of the id), never by the id itself: the id is the cookie's secret.
 */
import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';

export interface ImportTarget {
  url: string;
  apiKey: string;
}

export interface ImportReport {
  imported: number;
  skippedExpired: number;
  skippedPresent: number;
  failed: Array<{ session: string; reason: string }>;
}

/** One session read from the old store, before any judgement. */
export interface SourceSession {
  id: string;
  /** The session's JSON text as the old store holds it. */
  value: string | null;
  /** Remaining lifetime in ms from the old store's TTL; null when it has none. */
  ttlMs: number | null;
}

const TOKEN_SHAPE = /^[A-Za-z0-9_-]{32,256}$/;
const publicId = (id: string) => createHash('sha256').update(id).digest('base64url');

type Outcome = 'imported' | 'expired' | 'present' | { failed: string };

/**
 * An express-session record: its JSON (the `cookie` included, as SessiondStore keeps it) and
 * its remaining lifetime: the Redis TTL, else `cookie.expires`. The idle timeout becomes the
 * remaining lifetime, so the session expires when it would have; the absolute timeout is at
 * least that (`absoluteTimeoutSeconds` raises it, for `rolling` sessions that live on).
 */
export function planExpressSession(s: SourceSession, now: number, absoluteTimeoutSeconds?: number): { body: Record<string, unknown> } | Outcome {
  if (!TOKEN_SHAPE.test(s.id)) return { failed: 'the id is not 32-256 characters of A-Z, a-z, 0-9, "_" and "-"' };
  if (s.value === null) return 'expired'; // gone between the scan and the read
  let data: unknown;
  try {
    data = JSON.parse(s.value);
  } catch {
    return { failed: 'the value is not JSON (a custom serializer?)' };
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return { failed: 'the value is not a JSON object' };
  const cookie = (data as { cookie?: { expires?: unknown } }).cookie;
  const expires = typeof cookie?.expires === 'string' ? Date.parse(cookie.expires) : Number.NaN;
  const remainingMs = s.ttlMs ?? (Number.isNaN(expires) ? null : expires - now);
  if (remainingMs === null) return { body: { data, ...(absoluteTimeoutSeconds === undefined ? {} : { absoluteTimeout: absoluteTimeoutSeconds }) } };
  if (remainingMs <= 0) return 'expired';
  const seconds = Math.max(1, Math.ceil(remainingMs / 1000));
  return { body: { data, idleTimeout: seconds, absoluteTimeout: Math.max(seconds, absoluteTimeoutSeconds ?? 0) } };
}

/** Creates one session under its id; 412 means it is there already (or was destroyed). */
async function create(target: ImportTarget, id: string, body: Record<string, unknown>): Promise<Outcome> {
  const res = await fetch(new URL('/v1/sessions/current', target.url), {
    method: 'PUT',
    headers: { authorization: `Bearer ${target.apiKey}`, 'session-token': id, 'if-none-match': '*', 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  if (res.status === 201) return 'imported';
  if (res.status === 412) return 'present';
  const problem = (await res.json().catch(() => ({}))) as { code?: string; detail?: string };
  return { failed: `sessiond answered ${res.status} ${problem.code ?? ''}: ${problem.detail ?? ''}`.trim() };
}

export interface ConnectRedisOptions {
  redisUrl: string;
  prefix?: string;
  target: ImportTarget;
  absoluteTimeoutSeconds?: number;
  /** Progress lines (stderr in the CLI). */
  progress?: (line: string) => void;
  concurrency?: number;
}

/** Imports every `<prefix>*` key (default `sess:`) of a Redis written by connect-redis. */
export async function importConnectRedis(o: ConnectRedisOptions): Promise<ImportReport> {
  const prefix = o.prefix ?? 'sess:';
  const redis = new Redis(o.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2 });
  await redis.connect();
  const report: ImportReport = { imported: 0, skippedExpired: 0, skippedPresent: 0, failed: [] };
  let seen = 0;
  let lastProgress = Date.now();
  try {
    const stream = redis.scanStream({ match: `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`, count: 500 });
    for await (const keys of stream as AsyncIterable<string[]>) {
      const pipeline = redis.pipeline();
      for (const key of keys) pipeline.get(key).pttl(key);
      const replies = (await pipeline.exec()) ?? [];
      const sessions: SourceSession[] = keys.map((key, i) => {
        const ttl = Number(replies[2 * i + 1]?.[1]);
        return { id: key.slice(prefix.length), value: (replies[2 * i]?.[1] as string | null) ?? null, ttlMs: ttl >= 0 ? ttl : ttl === -2 ? 0 : null };
      });
      const limit = o.concurrency ?? 16;
      for (let i = 0; i < sessions.length; i += limit) {
        await Promise.all(
          sessions.slice(i, i + limit).map(async (s) => {
            let outcome: Outcome;
            try {
              const plan = planExpressSession(s, Date.now(), o.absoluteTimeoutSeconds);
              outcome = typeof plan === 'object' && 'body' in plan ? await create(o.target, s.id, plan.body) : plan;
            } catch (err) {
              outcome = { failed: (err as Error).message };
            }
            count(report, s.id, outcome);
          }),
        );
      }
      seen += keys.length;
      if (Date.now() - lastProgress > 2000) {
        lastProgress = Date.now();
        o.progress?.(`${seen} sessions read: ${summary(report)}`);
      }
    }
  } finally {
    redis.disconnect();
  }
  return report;
}

function count(report: ImportReport, id: string, outcome: Outcome): void {
  if (outcome === 'imported') report.imported += 1;
  else if (outcome === 'expired') report.skippedExpired += 1;
  else if (outcome === 'present') report.skippedPresent += 1;
  else report.failed.push({ session: publicId(id), reason: outcome.failed });
}

export function summary(r: ImportReport): string {
  return `${r.imported} imported, ${r.skippedExpired} skipped (expired), ${r.skippedPresent} skipped (present), ${r.failed.length} failed`;
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

async function main(argv: string[]): Promise<number> {
  const [source, ...args] = argv;
  const apiKey = process.env.SESSIOND_API_KEY;
  const url = flag(args, 'sessiond') ?? process.env.SESSIOND_URL;
  const redisUrl = flag(args, 'redis');
  const absolute = flag(args, 'absolute-timeout');
  if (source !== 'connect-redis' || redisUrl === undefined || url === undefined || apiKey === undefined || (absolute !== undefined && !/^\d+$/.test(absolute))) {
    process.stderr.write(
      'usage: SESSIOND_API_KEY=<key> npm run import -- connect-redis --redis <redis url> --sessiond <sessiond url> [--prefix sess:] [--absolute-timeout <seconds>]\n',
    );
    return 2;
  }
  const prefix = flag(args, 'prefix');
  const report = await importConnectRedis({
    redisUrl,
    ...(prefix === undefined ? {} : { prefix }),
    target: { url, apiKey },
    ...(absolute === undefined ? {} : { absoluteTimeoutSeconds: Number(absolute) }),
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  process.stderr.write(`done: ${summary(report)}\n`);
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  return report.failed.length > 0 ? 1 : 0;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: Error) => {
      process.stderr.write(`import failed: ${err.message}\n`);
      process.exit(1);
    },
  );
}
