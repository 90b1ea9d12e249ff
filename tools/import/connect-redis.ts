/** The connect-redis source: express-session records under `<prefix><id>` keys of a Redis. */
import { Redis } from 'ioredis';
import { BAD_TOKEN_SHAPE, importSessions, lifetime, TOKEN_SHAPE, type ImportOptions, type ImportReport, type Outcome, type Plan } from './run.js';

/** One session read from the old store, before any judgement. */
export interface SourceSession {
  id: string;
  /** The session's JSON text as the old store holds it. */
  value: string | null;
  /** Remaining lifetime in ms from the old store's TTL; null when it has none. */
  ttlMs: number | null;
}

/**
 * An express-session record: its JSON (the `cookie` included, as SessiondStore keeps it) and
 * its remaining lifetime: the Redis TTL, else `cookie.expires`.
 */
export function planExpressSession(s: SourceSession, now: number, absoluteTimeoutSeconds?: number): Plan | Outcome {
  if (!TOKEN_SHAPE.test(s.id)) return BAD_TOKEN_SHAPE;
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
  const timeouts = lifetime(s.ttlMs ?? (Number.isNaN(expires) ? null : expires - now), absoluteTimeoutSeconds);
  return timeouts === 'expired' ? timeouts : { body: { data, ...timeouts } };
}

export interface ConnectRedisOptions extends ImportOptions {
  redisUrl: string;
  prefix?: string;
}

/** Imports every `<prefix>*` key (default `sess:`) of a Redis written by connect-redis. */
export async function importConnectRedis(o: ConnectRedisOptions): Promise<ImportReport> {
  const prefix = o.prefix ?? 'sess:';
  const redis = new Redis(o.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2 });
  await redis.connect();
  async function* batches(): AsyncGenerator<SourceSession[]> {
    const stream = redis.scanStream({ match: `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`, count: 500 });
    for await (const keys of stream as AsyncIterable<string[]>) {
      const pipeline = redis.pipeline();
      for (const key of keys) pipeline.get(key).pttl(key);
      const replies = (await pipeline.exec()) ?? [];
      yield keys.map((key, i) => {
        const ttl = Number(replies[2 * i + 1]?.[1]);
        return { id: key.slice(prefix.length), value: (replies[2 * i]?.[1] as string | null) ?? null, ttlMs: ttl >= 0 ? ttl : ttl === -2 ? 0 : null };
      });
    }
  }
  try {
    return await importSessions(batches(), (s, now) => planExpressSession(s, now, o.absoluteTimeoutSeconds), o);
  } finally {
    redis.disconnect();
  }
}
