/**
 * History checker for sessiond (docs/design.md §1, G2–G4 and G1 as seen by clients).
 *
 * A history is every call the workload made: invocation and return time (one monotonic clock,
 * ms), the token it used (by label), the answer. Calls that failed (transport error, timeout,
 * 5xx) are *indeterminate*: they may or may not have taken effect, and the checker treats them
 * so. The checks, each on real-time order only (A "before" B means A returned before B was
 * invoked):
 *
 * 1. resurrection (G2): no call on token T invoked after a destroy(T), a rotate(T) or a
 *    revoke-all that covered T was acknowledged returns the session; and "404 is final": once a
 *    call on T answered 404, no call on T invoked after that returns the session.
 * 2. data (G3), per session lineage (a session and the tokens it was rotated to):
 *    - every observation of one version shows the same data (two writes never share a version);
 *    - the data of version v is what the write that produced it says: a PUT's body, or the
 *      merge of its PATCH into version v-1's data (when v-1 was observed); with If-Match e the
 *      write produced e+1; a write answered 412/404 never shows up in a read;
 *    - no read or write invoked after an acknowledged write W returns a version below W's
 *      (no lost or reordered acknowledged update), and versions never go backwards between
 *      two calls in real-time order.
 * 3. expiry (G4), per lineage: expiresAt ≤ absoluteExpiresAt; absoluteExpiresAt never changes;
 *    expiresAt never moves backwards between calls in real-time order — except by at most the
 *    touch write-behind threshold, and only where the documented limit applies: a data write
 *    or rotate of the session, or a window in which Redis lost or could not take touches, overlaps the
 *    interval between the two calls.
 * 4. durability (G1): a call on a token invoked after the call that created it (create or
 *    rotate) was acknowledged answers 404 only if a destroy/rotate/revoke-all that may have
 *    covered it was invoked before the call returned, or the session's absolute expiry passed.
 *
 * A stale-read tolerance (off by default) lets a scenario accept the documented invalidation
 * delay of a replica that could not reach Redis (README "Limits worth knowing"): a violation
 * of checks 1–2 whose two calls are closer than the tolerance is counted as tolerated, not
 * failed.
 */

export type OpKind = 'create' | 'read' | 'touch' | 'put' | 'patch' | 'rotate' | 'destroy' | 'revoke' | 'final-read';

export interface SessionView {
  version: number;
  data: Record<string, unknown>;
  expiresAt: number; // epoch ms
  absoluteExpiresAt: number;
}

export interface Op {
  id: number;
  client: string;
  via: string;
  kind: OpKind;
  /** Label of the token used (create: the token it produced). */
  token?: string;
  lineage?: number;
  subject?: string;
  /** performance.now() at invocation / return. */
  start: number;
  end: number;
  /** Wall clock at invocation (epoch ms). */
  wallStart: number;
  status: number;
  /** Writes: the write id (data.w) and the body sent. */
  w?: string;
  body?: Record<string, unknown>;
  ifMatch?: number;
  /** The session in a 2xx answer (rotate: the new session). */
  session?: SessionView;
  /** rotate: the label of the new token. */
  newToken?: string;
  error?: string;
}

export interface FaultWindow {
  name: string;
  start: number;
  end: number;
  /** Redis lost touches not yet written behind, or could not take them (expiry may regress). */
  touchLoss?: boolean;
}

export interface CheckOptions {
  /** TOUCH_PERSIST_THRESHOLD bound for the session (ms). */
  touchThresholdMs: number;
  /** Windows in which the documented expiry regression may occur. */
  faults?: FaultWindow[];
  /** Stale reads / resurrections within this many ms of the ack are tolerated (default 0)... */
  staleToleranceMs?: number;
  /**
   * ...and only when the acknowledged call ended inside one of these windows (when given): the
   * stretches in which a replica could not deliver an invalidation to Redis.
   */
  staleWindows?: Array<{ start: number; end: number }>;
  /** Slack for expiry by the wall clock (ms). */
  expirySlackMs?: number;
}

export interface Violation {
  check: 'resurrection' | 'data' | 'expiry' | 'durability';
  message: string;
  ops: Op[];
  tolerated?: boolean;
}

export interface CheckResult {
  ok: boolean;
  violations: Violation[];
  tolerated: Violation[];
  stats: { ops: number; ok: number; indeterminate: number; lineages: number; tokens: number };
}

export const isOk = (op: Op) => op.status >= 200 && op.status < 300;
export const isIndeterminate = (op: Op) => op.status === 0 || op.status >= 500;
const returnsSession = (op: Op) => isOk(op) && op.kind !== 'destroy' && op.kind !== 'revoke';
const isDataWrite = (op: Op) => op.kind === 'put' || op.kind === 'patch';

function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
    .join(',')}}`;
}

/** RFC 7396. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export function check(history: Op[], options: CheckOptions): CheckResult {
  const tolerance = options.staleToleranceMs ?? 0;
  const slack = options.expirySlackMs ?? 2_000;
  const faults = options.faults ?? [];
  const found: Violation[] = [];
  const inStaleWindow = (at: number) => options.staleWindows === undefined || options.staleWindows.some((w) => w.start <= at && at <= w.end);
  const flag = (v: Violation, gapMs?: number, excused = false) => {
    if (gapMs !== undefined && tolerance > 0 && gapMs < tolerance && (excused || inStaleWindow(v.ops[0]!.end))) v.tolerated = true;
    found.push(v);
  };

  const byToken = new Map<string, Op[]>();
  const byLineage = new Map<number, Op[]>();
  const bySubject = new Map<string, Op[]>();
  for (const op of history) {
    if (op.token !== undefined) {
      const list = byToken.get(op.token) ?? [];
      list.push(op);
      byToken.set(op.token, list);
    }
    if (op.lineage !== undefined) {
      const list = byLineage.get(op.lineage) ?? [];
      list.push(op);
      byLineage.set(op.lineage, list);
    }
    if (op.kind === 'revoke' && op.subject !== undefined) {
      const list = bySubject.get(op.subject) ?? [];
      list.push(op);
      bySubject.set(op.subject, list);
    }
  }

  // Where each token came from: the acknowledged create or rotate that handed it out.
  const birth = new Map<string, Op>();
  const tokenSubject = new Map<string, string | undefined>();
  const tokenLineage = new Map<string, number | undefined>();
  for (const op of history) {
    if (op.kind === 'create' && isOk(op) && op.token) {
      birth.set(op.token, op);
      tokenSubject.set(op.token, op.subject);
      tokenLineage.set(op.token, op.lineage);
    }
    if (op.kind === 'rotate' && isOk(op) && op.newToken) {
      birth.set(op.newToken, op);
      tokenSubject.set(op.newToken, op.subject);
      tokenLineage.set(op.newToken, op.lineage);
    }
  }

  // ---- 1. resurrection -------------------------------------------------------------------
  for (const [token, ops] of byToken) {
    const subject = tokenSubject.get(token);
    const born = birth.get(token);
    const kills: Op[] = ops.filter((o) => (o.kind === 'destroy' && isOk(o)) || (o.kind === 'rotate' && isOk(o)));
    if (subject !== undefined && born !== undefined) {
      for (const r of bySubject.get(subject) ?? []) if (isOk(r) && born.end < r.start) kills.push(r);
    }
    const firstNotFound = ops.filter((o) => o.status === 404 && o.kind !== 'revoke').sort((a, b) => a.end - b.end)[0];
    // G2 covers acknowledged kills only: a destroy / rotate / revoke-all that failed (and may
    // have committed without delivering its tombstone) is replayed by the outbox — within the
    // tolerance, a 404 it explains may be followed by the cached session.
    const unacknowledgedKill =
      firstNotFound !== undefined &&
      (ops.some((k) => (k.kind === 'destroy' || k.kind === 'rotate') && isIndeterminate(k) && k.start < firstNotFound.end) ||
        (subject !== undefined && (bySubject.get(subject) ?? []).some((r) => isIndeterminate(r) && r.start < firstNotFound.end)));
    for (const op of ops) {
      if (!returnsSession(op) || op.token !== token) continue;
      // A rotate's answer is the new session: it shows the old token was alive when it ran.
      for (const k of kills) {
        if (k === op) continue;
        if (k.end < op.start) {
          flag(
            { check: 'resurrection', message: `${op.kind} on ${token} returned the session after ${k.kind} was acknowledged`, ops: [k, op] },
            op.start - k.end,
          );
          break;
        }
      }
      // A kill still in flight when this call began: MariaDB has it, the tombstone may not be
      // in Redis yet — the session may read until the kill is acknowledged (G2 starts there).
      const inFlightKill =
        firstNotFound !== undefined &&
        (ops.some((k) => (k.kind === 'destroy' || k.kind === 'rotate') && k.start < firstNotFound.end && k.end > op.start) ||
          (subject !== undefined && (bySubject.get(subject) ?? []).some((r) => r.start < firstNotFound.end && r.end > op.start)));
      if (firstNotFound !== undefined && firstNotFound.end < op.start && !inFlightKill) {
        flag(
          { check: 'resurrection', message: `${op.kind} on ${token} returned the session after a call on it had answered 404`, ops: [firstNotFound, op] },
          op.start - firstNotFound.end,
          unacknowledgedKill,
        );
      }
    }
  }

  // ---- 4. durability ---------------------------------------------------------------------
  for (const [token, ops] of byToken) {
    const born = birth.get(token);
    if (born === undefined) continue;
    const subject = tokenSubject.get(token);
    const absolute = born.session?.absoluteExpiresAt ?? Infinity;
    for (const op of ops) {
      if (op.status !== 404 || op.kind === 'destroy' || op.kind === 'revoke' || op.start < born.end) continue;
      const mayHaveKilled =
        ops.some((k) => (k.kind === 'destroy' || k.kind === 'rotate') && k !== op && k.start < op.end && !(k.status === 404 || k.status === 412)) ||
        (subject !== undefined && (bySubject.get(subject) ?? []).some((r) => r.start < op.end && (isOk(r) || isIndeterminate(r))));
      const expired = op.wallStart + (op.end - op.start) + slack >= absolute;
      if (!mayHaveKilled && !expired) {
        flag({ check: 'durability', message: `${op.kind} on ${token} answered 404, but nothing destroyed it and it had not expired`, ops: [born, op] });
      }
    }
  }

  // ---- 2. data, 3. expiry: per lineage ---------------------------------------------------
  for (const [lineage, ops] of byLineage) {
    const writesById = new Map<string, Op>();
    for (const op of ops) if ((isDataWrite(op) || op.kind === 'create') && op.w !== undefined) writesById.set(op.w, op);
    // Observations: every answer that shows the session.
    const obs = ops.filter((o) => returnsSession(o) && o.session !== undefined).sort((a, b) => a.end - b.end);
    const byVersion = new Map<number, Op[]>();
    for (const o of obs) {
      const list = byVersion.get(o.session!.version) ?? [];
      list.push(o);
      byVersion.set(o.session!.version, list);
    }
    // One data per version.
    for (const [version, list] of byVersion) {
      const first = list[0]!;
      const other = list.find((o) => canonical(o.session!.data) !== canonical(first.session!.data));
      if (other) {
        flag({ check: 'data', message: `lineage ${lineage}: version ${version} seen with two different data (a lost or duplicated write)`, ops: [first, other] });
      }
    }
    // What produced each version.
    for (const [version, list] of byVersion) {
      const data = list[0]!.session!.data;
      const w = typeof data.w === 'string' ? data.w : undefined;
      const producer = w === undefined ? undefined : writesById.get(w);
      if (producer === undefined) continue;
      if (producer.kind !== 'create' && !isOk(producer) && !isIndeterminate(producer)) {
        flag({ check: 'data', message: `lineage ${lineage}: a write answered ${producer.status} shows up in version ${version}`, ops: [producer, list[0]!] });
        continue;
      }
      if (producer.ifMatch !== undefined && version !== producer.ifMatch + 1) {
        flag({ check: 'data', message: `lineage ${lineage}: write with If-Match ${producer.ifMatch} produced version ${version}`, ops: [producer, list[0]!] });
      }
      if (producer.kind === 'put' && canonical(data) !== canonical(producer.body)) {
        flag({ check: 'data', message: `lineage ${lineage}: version ${version} is not the PUT body that produced it`, ops: [producer, list[0]!] });
      }
      if (producer.kind === 'patch') {
        const prev = byVersion.get(version - 1)?.[0];
        if (prev !== undefined) {
          const want = mergePatch(prev.session!.data, producer.body);
          if (canonical(want) !== canonical(data)) {
            flag({
              check: 'data',
              message: `lineage ${lineage}: version ${version} is not version ${version - 1} merged with the PATCH that produced it (lost update)`,
              ops: [prev, producer, list[0]!],
            });
          }
        }
      }
    }
    // Real-time order: an acknowledged write (or any observation) bounds every later call from below.
    const sortedByStart = [...obs].sort((a, b) => a.start - b.start);
    let best: Op | undefined; // highest version among observations that ended before the current start
    let i = 0;
    const byEnd = obs; // sorted by end
    for (const o of sortedByStart) {
      while (i < byEnd.length && byEnd[i]!.end < o.start) {
        const c = byEnd[i]!;
        if (best === undefined || c.session!.version > best.session!.version) best = c;
        i++;
      }
      if (best !== undefined && o.session!.version < best.session!.version) {
        flag(
          {
            check: 'data',
            message: `lineage ${lineage}: ${o.kind} returned version ${o.session!.version} after ${best.kind} had returned version ${best.session!.version} (stale or reordered)`,
            ops: [best, o],
          },
          o.start - best.end,
        );
      }
    }

    // Expiry.
    const absolute = new Set(obs.map((o) => o.session!.absoluteExpiresAt));
    if (absolute.size > 1) {
      const a = obs[0]!;
      const b = obs.find((o) => o.session!.absoluteExpiresAt !== a.session!.absoluteExpiresAt)!;
      flag({ check: 'expiry', message: `lineage ${lineage}: absoluteExpiresAt changed`, ops: [a, b] });
    }
    for (const o of obs) {
      if (o.session!.expiresAt > o.session!.absoluteExpiresAt) {
        flag({ check: 'expiry', message: `lineage ${lineage}: expiresAt passes absoluteExpiresAt`, ops: [o] });
      }
    }
    // A data write or a rotate drops the cached entry, and with it touches not yet written
    // behind (README "The Redis cache", limits): the same bound applies.
    const writes = ops.filter((o) => isDataWrite(o) || o.kind === 'rotate');
    let top: Op | undefined;
    i = 0;
    for (const o of sortedByStart) {
      while (i < byEnd.length && byEnd[i]!.end < o.start) {
        const c = byEnd[i]!;
        if (top === undefined || c.session!.expiresAt > top.session!.expiresAt) top = c;
        i++;
      }
      if (top === undefined || o.session!.expiresAt >= top.session!.expiresAt) continue;
      const back = top.session!.expiresAt - o.session!.expiresAt;
      // Anything that took effect before `o` answered may explain it.
      const from = top.start;
      const to = o.end;
      const documented =
        writes.some((w) => (isIndeterminate(w) ? Infinity : w.end) > from && w.start <= to) || faults.some((f) => f.touchLoss && f.end + 1_000 > from && f.start < to);
      if (documented && back <= options.touchThresholdMs) continue;
      flag({
        check: 'expiry',
        message: `lineage ${lineage}: expiresAt moved backwards by ${back} ms (${documented ? `more than the ${options.touchThresholdMs} ms write-behind bound` : 'no data write or Redis fault in between'})`,
        ops: [top, o],
      });
    }
  }

  const violations = found.filter((v) => !v.tolerated);
  const tolerated = found.filter((v) => v.tolerated);
  return {
    ok: violations.length === 0,
    violations,
    tolerated,
    stats: {
      ops: history.length,
      ok: history.filter(isOk).length,
      indeterminate: history.filter(isIndeterminate).length,
      lineages: byLineage.size,
      tokens: byToken.size,
    },
  };
}

/** One call, on one line, times relative to `t0`. */
export function formatOp(op: Op, t0: number): string {
  const s = op.session;
  const parts = [
    `#${op.id}`,
    `[${(op.start - t0).toFixed(1)} → ${(op.end - t0).toFixed(1)} ms]`,
    `${op.client}@${op.via}`,
    op.kind,
    op.token ?? (op.subject ? `subject=${op.subject}` : ''),
    op.ifMatch !== undefined ? `If-Match:${op.ifMatch}` : '',
    op.body !== undefined ? `body=${JSON.stringify(op.body)}` : '',
    `→ ${op.status === 0 ? `ERR(${op.error ?? 'transport'})` : op.status}`,
    s ? `v${s.version} data=${JSON.stringify(s.data)} expiresAt=${new Date(s.expiresAt).toISOString()}` : '',
    op.newToken ? `new=${op.newToken}` : '',
  ];
  return parts.filter((p) => p !== '').join(' ');
}

/**
 * The smallest counterexample: the violation with the fewest calls (earliest on ties), printed
 * as those calls in real-time order.
 */
export function counterexample(result: CheckResult, t0 = 0, max = 3): string {
  if (result.violations.length === 0) return 'no violation';
  const sorted = [...result.violations].sort((a, b) => a.ops.length - b.ops.length || Math.min(...a.ops.map((o) => o.start)) - Math.min(...b.ops.map((o) => o.start)));
  const lines: string[] = [`${result.violations.length} violation(s); the smallest:`];
  for (const v of sorted.slice(0, max)) {
    lines.push(`- [${v.check}] ${v.message}`);
    for (const op of [...v.ops].sort((a, b) => a.start - b.start)) lines.push(`    ${formatOp(op, t0)}`);
  }
  return lines.join('\n');
}
