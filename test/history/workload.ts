/**
 * The history workload: many concurrent clients over loopback, spread over every live service
 * process, doing create / read / touch / update (PUT with If-Match, PATCH with and without it)
 * / rotate / destroy / revoke-all on a small shared set of sessions, recording every call's
 * invocation and return time and answer for the checker (checker.ts).
 *
 * Writes identify themselves: every PUT and PATCH body carries `w` (a unique write id) and one
 * key per writer (`c<client>`: its write count), so a read can be matched to the write that
 * produced it and a PATCH's merge can be recomputed.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Reply, ServiceClient } from '../helpers/service-process.js';
import { isIndeterminate, isOk, type Op, type OpKind, type SessionView } from './checker.js';

export interface WorkloadOptions {
  /** Prefix of this run's subjects, so runs on one database never share a subject. */
  run: string;
  clients: number;
  slots: number;
  /** Sessions per subject ≈ slots / subjects (revoke-all hits all of them). */
  subjects: number;
  /** The live service clients (read at every call: a killed replica can be swapped out). */
  services: () => ServiceClient[];
  idleTimeout?: number;
  absoluteTimeout?: number;
  /** Every n-th slot gets this short absolute timeout (s), to exercise the cap. 0 = none. */
  shortAbsoluteEvery?: number;
  shortAbsoluteTimeout?: number;
}

interface Slot {
  index: number;
  subject: string;
  alive: boolean;
  creating: boolean;
  lineage: number;
  label: string;
  version: number;
}

interface DeadToken {
  label: string;
  lineage: number;
  subject: string;
}

const WEIGHTS: Array<[string, number]> = [
  ['read', 28],
  ['touch', 18],
  ['put', 10],
  ['patch', 10],
  ['patch-if', 5],
  ['rotate', 4],
  ['destroy', 4],
  ['revoke', 1],
  ['dead-read', 12],
  ['dead-touch', 4],
  ['dead-write', 4],
];
const TOTAL = WEIGHTS.reduce((n, [, w]) => n + w, 0);
function pick(): string {
  let r = Math.random() * TOTAL;
  for (const [name, w] of WEIGHTS) {
    r -= w;
    if (r < 0) return name;
  }
  return 'read';
}

let lineageCounter = 0;

export class Workload {
  readonly history: Op[] = [];
  readonly t0 = performance.now();
  /** Label → the real token (never logged). */
  readonly tokens = new Map<string, string>();
  readonly slots: Slot[];
  private readonly dead: DeadToken[] = [];
  private running = false;
  private loops: Promise<void>[] = [];
  private nextOp = 0;
  private writeCount = new Map<string, number>();

  constructor(private readonly opts: WorkloadOptions) {
    this.slots = Array.from({ length: opts.slots }, (_, index) => ({
      index,
      subject: `${opts.run}-u${index % opts.subjects}`,
      alive: false,
      creating: false,
      lineage: -1,
      label: '',
      version: 0,
    }));
  }

  start(): void {
    this.running = true;
    this.loops = Array.from({ length: this.opts.clients }, (_, i) => this.loop(`c${i}`));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private service(): ServiceClient {
    const list = this.opts.services();
    return list[Math.floor(Math.random() * list.length)]!;
  }

  private async loop(client: string): Promise<void> {
    while (this.running) {
      if (this.opts.services().length === 0) {
        await sleep(20);
        continue;
      }
      const before = this.nextOp;
      await this.step(client);
      // No call made (nothing to do yet): yield to the event loop instead of spinning.
      if (this.nextOp === before) await sleep(1);
    }
  }

  /** Records one call. */
  private async call(
    client: string,
    kind: OpKind,
    fields: Partial<Op>,
    run: (svc: ServiceClient) => Promise<Reply>,
    svc: ServiceClient = this.service(),
  ): Promise<Op & { reply: Reply }> {
    const wallStart = Date.now();
    const reply = await run(svc);
    const op: Op = {
      id: this.nextOp++,
      client,
      via: svc.name,
      kind,
      start: reply.started,
      end: reply.ended,
      wallStart,
      status: reply.status,
      ...fields,
    };
    if (reply.error) op.error = reply.error.slice(0, 80);
    const session = reply.body?.session ?? reply.body;
    if (isOk(op) && session && typeof session === 'object' && typeof session.version === 'number') {
      op.session = view(session);
    }
    this.history.push(op);
    return Object.assign(Object.create(null) as object, op, { reply }) as Op & { reply: Reply };
  }

  private async step(client: string): Promise<void> {
    const slot = this.slots[Math.floor(Math.random() * this.slots.length)]!;
    if (!slot.alive) {
      if (slot.creating) return this.deadCall(client, 'dead-read');
      return this.create(client, slot);
    }
    const what = pick();
    if (what.startsWith('dead-')) return this.deadCall(client, what);
    const label = slot.label;
    const token = this.tokens.get(label)!;
    const base = { token: label, lineage: slot.lineage, subject: slot.subject };
    switch (what) {
      case 'read':
      case 'touch': {
        const op = await this.call(client, what, base, (s) => (what === 'read' ? s.read(token) : s.touch(token)));
        this.seen(slot, op);
        return;
      }
      case 'put':
      case 'patch':
      case 'patch-if': {
        const n = (this.writeCount.get(client) ?? 0) + 1;
        this.writeCount.set(client, n);
        const w = `${client}-${n}`;
        const body = { w, [client]: n };
        const ifMatch = what === 'patch' ? undefined : slot.version;
        const op = await this.call(client, what === 'put' ? 'put' : 'patch', { ...base, w, body, ifMatch }, (s) =>
          what === 'put' ? s.put(token, body, ifMatch!) : s.patch(token, body, ifMatch),
        );
        this.seen(slot, op);
        return;
      }
      case 'rotate': {
        const svc = this.service();
        const wallStart = Date.now();
        const reply = await svc.rotate(token);
        const op: Op = { id: this.nextOp++, client, via: svc.name, kind: 'rotate', ...base, start: reply.started, end: reply.ended, wallStart, status: reply.status };
        if (reply.error) op.error = reply.error.slice(0, 80);
        if (isOk(op)) {
          const newLabel = `L${slot.lineage}.${this.tokens.size}`;
          this.tokens.set(newLabel, reply.body.token as string);
          op.newToken = newLabel;
          op.session = view(reply.body.session);
          if (slot.label === label) {
            this.dead.push({ label, lineage: slot.lineage, subject: slot.subject });
            slot.label = newLabel;
          }
        }
        this.history.push(op);
        return;
      }
      case 'destroy': {
        const op = await this.call(client, 'destroy', base, (s) => s.destroy(token));
        void op;
        if (slot.label === label && slot.alive) {
          slot.alive = false;
          this.dead.push({ label, lineage: slot.lineage, subject: slot.subject });
        }
        return;
      }
      case 'revoke': {
        await this.call(client, 'revoke', { subject: slot.subject }, (s) =>
          s.request('DELETE', `/v1/subjects/${encodeURIComponent(slot.subject)}/sessions`),
        );
        for (const other of this.slots) {
          if (other.subject === slot.subject && other.alive) {
            other.alive = false;
            this.dead.push({ label: other.label, lineage: other.lineage, subject: other.subject });
          }
        }
        return;
      }
    }
  }

  /**
   * `n` destroys of live sessions through one replica, all at once (for "a replica killed
   * mid-destroy"): resolves when they all answered or failed.
   */
  destroyBurst(svc: ServiceClient, n: number): Promise<unknown> {
    const victims = this.slots.filter((x) => x.alive).slice(0, n);
    return Promise.all(
      victims.map(async (slot) => {
        const label = slot.label;
        const token = this.tokens.get(label)!;
        slot.alive = false;
        this.dead.push({ label, lineage: slot.lineage, subject: slot.subject });
        await this.call('burst', 'destroy', { token: label, lineage: slot.lineage, subject: slot.subject }, (s) => s.destroy(token), svc);
      }),
    );
  }

  private async create(client: string, slot: Slot): Promise<void> {
    slot.creating = true;
    const lineage = ++lineageCounter;
    const label = `L${lineage}.0`;
    const w = `${client}-create-${lineage}`;
    const every = this.opts.shortAbsoluteEvery ?? 0;
    const absoluteTimeout = every > 0 && lineage % every === 0 ? this.opts.shortAbsoluteTimeout ?? 20 : this.opts.absoluteTimeout ?? 3600;
    const body = { subject: slot.subject, idleTimeout: this.opts.idleTimeout ?? 600, absoluteTimeout };
    const op = await this.call(client, 'create', { token: label, lineage, subject: slot.subject, w, body: { w } }, (s) =>
      s.create({ w }, body),
    );
    slot.creating = false;
    if (op.status === 201) {
      this.tokens.set(label, op.reply.body.token as string);
      slot.alive = true;
      slot.lineage = lineage;
      slot.label = label;
      slot.version = op.session?.version ?? 1;
    }
  }

  private async deadCall(client: string, what: string): Promise<void> {
    if (this.dead.length === 0) return;
    // Mostly recently killed tokens: that is where a late fill would show.
    const i = Math.max(0, this.dead.length - 1 - Math.floor(Math.random() * Math.min(this.dead.length, 20)));
    const d = this.dead[i]!;
    const token = this.tokens.get(d.label)!;
    const base = { token: d.label, lineage: d.lineage, subject: d.subject };
    if (what === 'dead-read') await this.call(client, 'read', base, (s) => s.read(token));
    else if (what === 'dead-touch') await this.call(client, 'touch', base, (s) => s.touch(token));
    else {
      const n = (this.writeCount.get(client) ?? 0) + 1;
      this.writeCount.set(client, n);
      const w = `${client}-${n}`;
      const body = { w, [client]: n };
      await this.call(client, 'patch', { ...base, w, body }, (s) => s.patch(token, body));
    }
  }

  private seen(slot: Slot, op: Op & { reply: Reply }): void {
    if (op.lineage !== slot.lineage) return;
    if (op.session) slot.version = Math.max(slot.version, op.session.version);
    const current = op.reply.body?.currentVersion;
    if (op.status === 412 && typeof current === 'number') slot.version = Math.max(slot.version, current);
  }

  /**
   * After the run (faults healed): every token ever handed out, read once through each live
   * replica. A token no call ever tried to kill must read (unless it expired); a token whose
   * destroy, rotate or revoke-all was acknowledged must not. Answers go into the history too.
   */
  async finalReads(): Promise<{ lost: string[]; resurrected: string[]; checked: number; undetermined: number }> {
    const born = new Map<string, Op>();
    for (const op of this.history) {
      if (op.kind === 'create' && op.status === 201 && op.token) born.set(op.token, op);
      if (op.kind === 'rotate' && isOk(op) && op.newToken) born.set(op.newToken, op);
    }
    const killedAcked = new Set<string>();
    const mayBeKilled = new Set<string>();
    const revokes = this.history.filter((o) => o.kind === 'revoke');
    for (const op of this.history) {
      if ((op.kind === 'destroy' || op.kind === 'rotate') && op.token) {
        if (isOk(op)) killedAcked.add(op.token);
        if (isOk(op) || isIndeterminate(op)) mayBeKilled.add(op.token);
      }
    }
    for (const [label, b] of born) {
      for (const r of revokes) {
        if (r.subject !== b.subject) continue;
        if (isOk(r) && b.end < r.start) killedAcked.add(label);
        if (isOk(r) || isIndeterminate(r)) mayBeKilled.add(label);
      }
    }
    const labels = [...born.keys()];
    const lost: string[] = [];
    const resurrected: string[] = [];
    let undetermined = 0;
    const services = this.opts.services();
    let next = 0;
    const worker = async () => {
      while (next < labels.length) {
        const label = labels[next++]!;
        const b = born.get(label)!;
        const token = this.tokens.get(label)!;
        for (const svc of services) {
          let op: Op | undefined;
          for (let attempt = 0; attempt < 5; attempt++) {
            op = await this.call('final', 'final-read', { token: label, lineage: b.lineage, subject: b.subject }, (s) => s.read(token), svc);
            if (!isIndeterminate(op)) break;
            await sleep(200);
          }
          if (isIndeterminate(op!)) {
            undetermined++;
            continue;
          }
          const expired = (b.session?.absoluteExpiresAt ?? Infinity) <= Date.now() + 2_000;
          if (op!.status === 404 && !mayBeKilled.has(label) && !expired) lost.push(`${label} via ${svc.name}`);
          if (op!.status === 200 && killedAcked.has(label)) resurrected.push(`${label} via ${svc.name}`);
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    return { lost, resurrected, checked: labels.length, undetermined };
  }
}

function view(s: { version: number; data: Record<string, unknown>; expiresAt: string; absoluteExpiresAt: string }): SessionView {
  return { version: s.version, data: s.data, expiresAt: Date.parse(s.expiresAt), absoluteExpiresAt: Date.parse(s.absoluteExpiresAt) };
}
