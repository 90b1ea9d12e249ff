/**
 * Copies live sessions into sessiond under their existing ids, so that switching an app over
 * logs nobody out. A client of sessiond like any app server: it creates each session with
 * `PUT /v1/sessions/current` (`If-None-Match: *`) under an API key whose namespace has the
 * `clientTokens` policy, so a re-run skips what is there (412) and never overwrites.
 *
 *   SESSIOND_API_KEY=… npm run import -- connect-redis --redis redis://host:6379 --sessiond http://sessiond:8080 [--prefix sess:]
 *   SESSIOND_API_KEY=… DJANGO_SECRET_KEY=… npm run import -- django --database mysql://user:pass@host/db --sessiond http://sessiond:8080
 *
 * Progress goes to stderr, the final report (JSON) to stdout. Sessions are named by their
 * public id (base64url SHA-256 of the id), never by the id itself: the id is the cookie's secret.
 */
import { importConnectRedis } from './connect-redis.js';
import { importDjango } from './django.js';
import { summary, type ImportOptions, type ImportReport } from './run.js';

export { importConnectRedis, planExpressSession, type ConnectRedisOptions, type SourceSession } from './connect-redis.js';
export { importDjango, planDjangoSession, type DjangoOptions } from './django.js';
export { summary, type ImportReport, type ImportTarget } from './run.js';

const USAGE = `usage:
  SESSIOND_API_KEY=<key> npm run import -- connect-redis --redis <redis url> --sessiond <sessiond url>
      [--prefix sess:] [--absolute-timeout <seconds>]
  SESSIOND_API_KEY=<key> DJANGO_SECRET_KEY=<SECRET_KEY> [DJANGO_SECRET_KEY_FALLBACKS=<one per line>]
    npm run import -- django --database <mysql://user:password@host:port/database> --sessiond <sessiond url>
      [--table django_session] [--time-zone UTC] [--serializer <SESSION_SERIALIZER>]
      [--key-salt django.contrib.sessions.SessionStore] [--no-subjects] [--absolute-timeout <seconds>]
  (--database may come from DJANGO_DATABASE_URL instead, and --sessiond from SESSIOND_URL)
`;

class UsageError extends Error {}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return undefined;
  const value = args[i + 1];
  if (value === undefined || value.startsWith('--')) throw new UsageError(`--${name} needs a value`);
  return value;
}

function required(value: string | undefined, what: string): string {
  if (value === undefined || value === '') throw new UsageError(`${what} is missing`);
  return value;
}

function commonOptions(args: string[]): ImportOptions {
  const absolute = flag(args, 'absolute-timeout');
  if (absolute !== undefined && !/^[1-9]\d*$/.test(absolute)) throw new UsageError('--absolute-timeout takes whole seconds');
  return {
    target: { url: required(flag(args, 'sessiond') ?? process.env.SESSIOND_URL, '--sessiond'), apiKey: required(process.env.SESSIOND_API_KEY, 'SESSIOND_API_KEY') },
    ...(absolute === undefined ? {} : { absoluteTimeoutSeconds: Number(absolute) }),
    progress: (line) => process.stderr.write(`${line}\n`),
  };
}

function run(source: string | undefined, args: string[]): Promise<ImportReport> {
  if (source === 'connect-redis') {
    const prefix = flag(args, 'prefix');
    return importConnectRedis({ ...commonOptions(args), redisUrl: required(flag(args, 'redis'), '--redis'), ...(prefix === undefined ? {} : { prefix }) });
  }
  if (source === 'django') {
    const fallbacks = (process.env.DJANGO_SECRET_KEY_FALLBACKS ?? '').split('\n').filter((k) => k !== '');
    const optional = { table: flag(args, 'table'), timeZone: flag(args, 'time-zone'), serializer: flag(args, 'serializer'), salt: flag(args, 'key-salt') };
    if (optional.timeZone !== undefined) {
      try {
        new Intl.DateTimeFormat('en-US', { timeZone: optional.timeZone });
      } catch {
        throw new UsageError('--time-zone is not an IANA time zone');
      }
    }
    return importDjango({
      ...commonOptions(args),
      databaseUrl: required(flag(args, 'database') ?? process.env.DJANGO_DATABASE_URL, '--database'),
      secretKeys: [required(process.env.DJANGO_SECRET_KEY, 'DJANGO_SECRET_KEY'), ...fallbacks],
      ...Object.fromEntries(Object.entries(optional).filter(([, v]) => v !== undefined)),
      subjects: !args.includes('--no-subjects'),
    });
  }
  throw new UsageError(source === undefined ? 'which source? connect-redis or django' : `unknown source ${source}`);
}

async function main(argv: string[]): Promise<number> {
  const [source, ...args] = argv;
  let report: ImportReport;
  try {
    report = await run(source, args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message}\n${USAGE}`);
    return 2;
  }
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
