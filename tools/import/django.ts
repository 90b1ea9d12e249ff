/**
 * The Django source: rows of the `django_session` table (Django's db and cached_db engines) in
 * MariaDB or MySQL. Each row's `session_data` is verified and decoded with the app's SECRET_KEY
 * (or one of SECRET_KEY_FALLBACKS) and stored in the shape sessiond_django's engine reads: the
 * session dict as sessiond's data with JSONSerializer, else its envelope
 * `{"djangoSession": {"serializer", "encoded"}}`, re-signed with SECRET_KEY.
 */
import mariadb from 'mariadb';
import { BadSessionData, decodeSessionData, encodeSessionData, SESSION_KEY_SALT } from './django-signing.js';
import { BAD_TOKEN_SHAPE, importSessions, lifetime, TOKEN_SHAPE, type ImportOptions, type ImportReport, type Outcome, type Plan } from './run.js';

/** One row of django_session. */
export interface DjangoRow {
  id: string;
  sessionData: string;
  /** `expire_date` as the database holds it: `YYYY-MM-DD HH:MM:SS[.ffffff]`, wall time of `timeZone`. */
  expireDate: string;
}

export interface DjangoDecoding {
  /** SECRET_KEY first, then SECRET_KEY_FALLBACKS. */
  secretKeys: readonly string[];
  /** The rows' key salt: "django.contrib.sessions." + the store class's __qualname__ (default: Django's SessionStore). */
  salt?: string;
  /**
   * The app's SESSION_SERIALIZER when it is not JSONSerializer (e.g.
   * "django.contrib.sessions.serializers.PickleSerializer"): data that is not JSON is then kept
   * in sessiond_django's envelope. Without it such rows fail.
   */
  serializer?: string;
  /** The IANA zone of `expire_date`: UTC under USE_TZ = True, else the app's TIME_ZONE. */
  timeZone?: string;
  /** Give each logged-in session its user (`_auth_user_id`) as sessiond subject, as sessiond_django does by default (default true). */
  subjects?: boolean;
}

/** The engine's envelope key (clients/django/sessiond_django/engine.py ENVELOPE). */
const ENVELOPE = 'djangoSession';

const DATETIME = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$/;

const zoneFormats = new Map<string, Intl.DateTimeFormat>();
function zoneFormat(timeZone: string): Intl.DateTimeFormat {
  let format = zoneFormats.get(timeZone);
  if (format === undefined) {
    format = new Intl.DateTimeFormat('en-US', { timeZone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' });
    zoneFormats.set(timeZone, format);
  }
  return format;
}

/** Milliseconds since the epoch of a wall-clock DATETIME in `timeZone`; NaN when it is none. */
export function wallTimeToEpoch(text: string, timeZone = 'UTC'): number {
  const m = DATETIME.exec(text);
  if (!m) return Number.NaN;
  const [y, mo, d, h, mi, s] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const wall = Date.UTC(y, mo - 1, d, h, mi, s) + Number((m[7] ?? '').padEnd(3, '0').slice(0, 3));
  if (timeZone === 'UTC') return wall;
  // The zone's offset at that instant, found by formatting a guess back into the zone (twice: DST).
  const format = zoneFormat(timeZone);
  const offsetAt = (t: number) => {
    const p = Object.fromEntries(format.formatToParts(new Date(t)).map((x) => [x.type, Number(x.value)]));
    return Date.UTC(p.year!, p.month! - 1, p.day!, p.hour!, p.minute!, p.second!) - Math.floor(t / 1000) * 1000;
  };
  const guess = wall - offsetAt(wall);
  return wall - offsetAt(guess);
}

/** A row's body for sessiond, or why it is skipped or failed. */
export function planDjangoSession(row: DjangoRow, now: number, decoding: DjangoDecoding, absoluteTimeoutSeconds?: number): Plan | Outcome {
  if (!TOKEN_SHAPE.test(row.id)) return BAD_TOKEN_SHAPE;
  const expires = wallTimeToEpoch(row.expireDate, decoding.timeZone);
  if (Number.isNaN(expires)) return { failed: 'expire_date is not a date' };
  const timeouts = lifetime(expires - now, absoluteTimeoutSeconds);
  if (timeouts === 'expired') return timeouts;
  let payload: Buffer;
  try {
    payload = decodeSessionData(row.sessionData, decoding.secretKeys, decoding.salt).payload;
  } catch (err) {
    if (err instanceof BadSessionData) return { failed: err.message };
    throw err;
  }
  let data: unknown;
  try {
    data = JSON.parse(payload.toString('latin1'));
  } catch {
    if (decoding.serializer === undefined) return { failed: 'the session is not JSON (SESSION_SERIALIZER is not JSONSerializer? pass --serializer)' };
    // Signed for sessiond_django's store (its class is SessionStore), with the app's current key.
    const encoded = encodeSessionData(payload, decoding.secretKeys[0]!, SESSION_KEY_SALT, now);
    return { body: { data: { [ENVELOPE]: { serializer: decoding.serializer, encoded } }, ...timeouts } };
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return { failed: 'the session is not a JSON object' };
  const user = (data as { _auth_user_id?: unknown })._auth_user_id;
  const subject = decoding.subjects !== false && typeof user === 'string' && user.length > 0 && user.length <= 255 ? { subject: user } : {};
  return { body: { data, ...subject, ...timeouts } };
}

export interface DjangoOptions extends ImportOptions, DjangoDecoding {
  /** mysql://user:password@host:port/database (mariadb:// too). */
  databaseUrl: string;
  /** Default django_session. */
  table?: string;
  /** Rows read per query (keyset pages in session_key order). */
  batchSize?: number;
}

/** Imports every row of a Django `django_session` table. */
export async function importDjango(o: DjangoOptions): Promise<ImportReport> {
  if (o.secretKeys.length === 0 || o.secretKeys.some((k) => k === '')) throw new Error('no SECRET_KEY given');
  const url = new URL(o.databaseUrl);
  const table = o.table ?? 'django_session';
  if (!/^[A-Za-z0-9_$]{1,64}$/.test(table)) throw new Error('the table name is not a plain MySQL identifier');
  const conn = await mariadb.createConnection({
    host: url.hostname,
    port: url.port === '' ? 3306 : Number(url.port),
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password),
    database: decodeURIComponent(url.pathname.slice(1)),
    connectTimeout: 10_000,
    // DATETIME as the text the table holds: expire_date is wall time of the app's zone.
    dateStrings: true,
    // The connector's error messages would list the statement's values (session keys).
    logParam: false,
  });
  const pageSize = o.batchSize ?? 500;
  async function* batches(): AsyncGenerator<DjangoRow[]> {
    let after = '';
    for (;;) {
      const rows = (await conn.query(
        `SELECT session_key, session_data, CAST(expire_date AS CHAR) AS expire_date FROM \`${table}\` WHERE session_key > ? ORDER BY session_key LIMIT ?`,
        [after, pageSize],
      )) as Array<{ session_key: string; session_data: string; expire_date: string }>;
      if (rows.length === 0) return;
      after = rows[rows.length - 1]!.session_key;
      yield rows.map((r) => ({ id: r.session_key, sessionData: r.session_data, expireDate: r.expire_date }));
    }
  }
  try {
    return await importSessions(batches(), (row, now) => planDjangoSession(row, now, o, o.absoluteTimeoutSeconds), o);
  } finally {
    await conn.end().catch(() => conn.destroy());
  }
}
