import type { SessionMetadata } from '../domain/session.js';
import {
  bigint,
  customType,
  datetime,
  index,
  int,
  mysqlEnum,
  mysqlTable,
  primaryKey,
  tinyint,
  uniqueIndex,
} from 'drizzle-orm/mysql-core';

/**
 * BINARY(n) as a Buffer. drizzle's own binary/varbinary decode bytes as UTF-8 text, which
 * corrupts hashes; this keeps them as bytes both ways.
 */
const binaryBuffer = customType<{ data: Buffer; driverData: Buffer; config: { length: number } }>({
  dataType(config) {
    return `binary(${config?.length ?? 32})`;
  },
  toDriver(value) {
    return value;
  },
  fromDriver(value) {
    return Buffer.isBuffer(value) ? value : Buffer.from(value as Uint8Array);
  },
});

/**
 * VARCHAR compared byte for byte. Namespaces and subjects are identifiers: "Alice" and "alice"
 * are different users, and the server's default collation would fold them together. NO PAD:
 * "alice" and "alice " are different users too (utf8mb4_bin pads, so it compared them equal).
 */
const binaryCollatedVarchar = customType<{ data: string; driverData: string; config: { length: number } }>({
  dataType(config) {
    return `varchar(${config?.length ?? 255}) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin`;
  },
});

/**
 * A JSON column that parses on read. MariaDB stores JSON as LONGTEXT, so the connector hands
 * back a string unless it recognised the column as JSON.
 */
const jsonValue = <T>() =>
  customType<{ data: T; driverData: string | null }>({
    dataType() {
      return 'json';
    },
    // null stays SQL NULL (a prepared statement hands null values to the encoder too).
    toDriver(value) {
      return value === null ? null : JSON.stringify(value);
    },
    fromDriver(value) {
      return (typeof value === 'string' ? JSON.parse(value) : value) as T;
    },
  });

export const sessions = mysqlTable(
  'sessions',
  {
    namespace: binaryCollatedVarchar('namespace', { length: 64 }).notNull(),
    idHash: binaryBuffer('id_hash', { length: 32 }).notNull(),
    subject: binaryCollatedVarchar('subject', { length: 255 }),
    data: jsonValue<Record<string, unknown>>()('data').notNull(),
    version: bigint('version', { mode: 'number', unsigned: true }).notNull().default(1),
    state: mysqlEnum('state', ['active', 'revoked']).notNull().default('active'),
    idleTimeoutSeconds: int('idle_timeout_seconds', { unsigned: true }).notNull(),
    createdAt: datetime('created_at', { mode: 'date', fsp: 3 }).notNull(),
    lastSeenAt: datetime('last_seen_at', { mode: 'date', fsp: 3 }).notNull(),
    idleExpiresAt: datetime('idle_expires_at', { mode: 'date', fsp: 3 }).notNull(),
    absoluteExpiresAt: datetime('absolute_expires_at', { mode: 'date', fsp: 3 }).notNull(),
    metadata: jsonValue<SessionMetadata>()('metadata'),
    /**
     * Set on a row revoked by a rotation with a grace period: the id it was rotated to. Until
     * idle_expires_at (the end of the grace) the old token reads and touches that session.
     */
    rotatedTo: binaryBuffer('rotated_to', { length: 32 }),
    /**
     * The subject's revocation generation when the row was written (subject_revocations): a
     * "log out everywhere" of generation G revokes every row of the subject below G at once.
     */
    subjectGeneration: bigint('subject_generation', { mode: 'number', unsigned: true }).notNull().default(0),
  },
  // The sweeper scans idle_expires_at alone: it is never later than absolute_expires_at (touch
  // caps it) and revoking a session sets it to the revocation time, so one range covers expired
  // and revoked rows.
  (t) => [
    primaryKey({ name: 'sessions_pk', columns: [t.namespace, t.idHash] }),
    // A subject's sessions by last activity, with what decides liveness (state, expiries, the
    // revocation generation): lists, counts and the revocation worker skip dead rows inside
    // the index, so a subject's 100,000 revoked sessions cost index entries, not row reads.
    // (id_hash after last_seen_at: the list's order, newest first, with no sort.)
    index('sessions_subject_live_idx').on(t.namespace, t.subject, t.lastSeenAt, t.idHash, t.state, t.subjectGeneration, t.idleExpiresAt, t.absoluteExpiresAt),
    index('sessions_idle_expires_idx').on(t.idleExpiresAt),
  ],
);

/**
 * Cache invalidations that Redis has not acknowledged yet (docs/design.md §5.5). A row is written in the
 * same transaction as the change it describes and deleted once Redis took the invalidation or
 * tombstone; a worker in every replica replays rows that are left over.
 */
export const cacheOutbox = mysqlTable('cache_outbox', {
  id: bigint('id', { mode: 'number', unsigned: true }).autoincrement().primaryKey(),
  namespace: binaryCollatedVarchar('namespace', { length: 64 }).notNull(),
  idHash: binaryBuffer('id_hash', { length: 32 }).notNull(),
  // 'mark': a subject's revocation mark (id_hash is the subject's hash, subject_revocations).
  action: mysqlEnum('action', ['invalidate', 'tombstone', 'clear', 'mark']).notNull(),
  createdAt: datetime('created_at', { mode: 'date', fsp: 3 }).notNull(),
});

/**
 * Ids of sessions that were destroyed, revoked (by id, by subject, by the per-subject cap) or
 * rotated away, remembered until the session's absolute expiry — as long as it could still have
 * been alive — so that a create under a chosen token cannot bring one back (a save racing a
 * logout). Written in the same transaction as the revocation; the sweeper removes a row once
 * `expires_at` passed. Only hashes, like the sessions table.
 */
export const destroyedTokens = mysqlTable(
  'destroyed_tokens',
  {
    namespace: binaryCollatedVarchar('namespace', { length: 64 }).notNull(),
    idHash: binaryBuffer('id_hash', { length: 32 }).notNull(),
    expiresAt: datetime('expires_at', { mode: 'date', fsp: 3 }).notNull(),
  },
  (t) => [primaryKey({ name: 'destroyed_tokens_pk', columns: [t.namespace, t.idHash] }), index('destroyed_tokens_expires_idx').on(t.expiresAt)],
);

/**
 * "Log out everywhere" as one mark per subject: generation G revokes, at the moment it commits,
 * every session of the subject whose subject_generation is below G, except `keep_id_hash`. Reads
 * honour the mark (and Redis holds a copy for cached reads); a worker then revokes the rows in
 * batches (`pending` until it is done), so the request costs the same at any number of sessions.
 * The sweeper deletes a mark once it has nothing left to do (docs/design.md §5.9); the next
 * revocation's generation lies above every row's, so it needs no memory of the old one.
 */
export const subjectRevocations = mysqlTable(
  'subject_revocations',
  {
    namespace: binaryCollatedVarchar('namespace', { length: 64 }).notNull(),
    subject: binaryCollatedVarchar('subject', { length: 255 }).notNull(),
    /** SHA-256 of the subject: how the outbox and Redis name the mark. */
    subjectHash: binaryBuffer('subject_hash', { length: 32 }).notNull(),
    generation: bigint('generation', { mode: 'number', unsigned: true }).notNull(),
    keepIdHash: binaryBuffer('keep_id_hash', { length: 32 }),
    revokedAt: datetime('revoked_at', { mode: 'date', fsp: 3 }).notNull(),
    /** 1 while rows below the generation may still be active (the worker's queue). */
    pending: tinyint('pending', { unsigned: true }).notNull(),
  },
  (t) => [
    primaryKey({ name: 'subject_revocations_pk', columns: [t.namespace, t.subject] }),
    uniqueIndex('subject_revocations_hash_idx').on(t.namespace, t.subjectHash),
    index('subject_revocations_pending_idx').on(t.pending),
  ],
);

export type SessionRow = typeof sessions.$inferSelect;
export type NewSessionRow = typeof sessions.$inferInsert;

