/**
 * What every import shares: creating a session in sessiond under its existing id, the
 * remaining lifetime as timeouts, and the run itself (batches from the old store, a few
 * creates at a time, progress, the report). The sources (connect-redis.ts, django.ts) only
 * read their store and plan each session.
 */
import { createHash } from 'node:crypto';

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

/** What every import takes besides its source. */
export interface ImportOptions {
  target: ImportTarget;
  /** Raises the absolute timeout of every imported session to at least this many seconds. */
  absoluteTimeoutSeconds?: number;
  /** Progress lines (stderr in the CLI), every two seconds at most. */
  progress?: (line: string) => void;
  /** Creates in flight at once (default 16). */
  concurrency?: number;
}

/** The body of `PUT /v1/sessions/current` for one session. */
export interface Plan {
  body: Record<string, unknown>;
}

export type Outcome = 'imported' | 'expired' | 'present' | { failed: string };

/** The ids sessiond accepts as client tokens. */
export const TOKEN_SHAPE = /^[A-Za-z0-9_-]{32,256}$/;
export const BAD_TOKEN_SHAPE: Outcome = { failed: 'the id is not 32-256 characters of A-Z, a-z, 0-9, "_" and "-"' };

/** How sessions are named in reports: the public id (base64url SHA-256), never the id (the cookie's secret). */
export const publicId = (id: string) => createHash('sha256').update(id).digest('base64url');

/**
 * The timeouts for a session with `remainingMs` to live in the old store: the idle timeout is
 * the remaining lifetime, so the session expires when it would have; the absolute timeout is at
 * least that (`absoluteTimeoutSeconds` raises it, for sessions that go on living while used).
 * 'expired' when nothing remains; no timeouts (sessiond's defaults) when the old store had none.
 */
export function lifetime(remainingMs: number | null, absoluteTimeoutSeconds?: number): Record<string, number> | 'expired' {
  if (remainingMs === null) return absoluteTimeoutSeconds === undefined ? {} : { absoluteTimeout: absoluteTimeoutSeconds };
  if (remainingMs <= 0) return 'expired';
  const seconds = Math.max(1, Math.ceil(remainingMs / 1000));
  return { idleTimeout: seconds, absoluteTimeout: Math.max(seconds, absoluteTimeoutSeconds ?? 0) };
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

function count(report: ImportReport, id: string, outcome: Outcome): void {
  if (outcome === 'imported') report.imported += 1;
  else if (outcome === 'expired') report.skippedExpired += 1;
  else if (outcome === 'present') report.skippedPresent += 1;
  else report.failed.push({ session: publicId(id), reason: outcome.failed });
}

export function summary(r: ImportReport): string {
  return `${r.imported} imported, ${r.skippedExpired} skipped (expired), ${r.skippedPresent} skipped (present), ${r.failed.length} failed`;
}

/**
 * Runs an import: each batch the source yields is planned session by session (`plan` returns the
 * body to create, or why not) and created `concurrency` at a time. A session that cannot be
 * planned or created is counted as failed with its reason; the run goes on.
 */
export async function importSessions<S extends { id: string }>(
  batches: AsyncIterable<S[]>,
  plan: (session: S, now: number) => Plan | Outcome,
  o: ImportOptions,
): Promise<ImportReport> {
  const report: ImportReport = { imported: 0, skippedExpired: 0, skippedPresent: 0, failed: [] };
  const limit = o.concurrency ?? 16;
  let seen = 0;
  let lastProgress = Date.now();
  for await (const sessions of batches) {
    for (let i = 0; i < sessions.length; i += limit) {
      await Promise.all(
        sessions.slice(i, i + limit).map(async (s) => {
          let outcome: Outcome;
          try {
            const planned = plan(s, Date.now());
            outcome = typeof planned === 'object' && 'body' in planned ? await create(o.target, s.id, planned.body) : planned;
          } catch (err) {
            outcome = { failed: (err as Error).message };
          }
          count(report, s.id, outcome);
        }),
      );
    }
    seen += sessions.length;
    if (Date.now() - lastProgress > 2000) {
      lastProgress = Date.now();
      o.progress?.(`${seen} sessions read: ${summary(report)}`);
    }
  }
  return report;
}
