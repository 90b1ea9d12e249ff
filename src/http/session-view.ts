import { expiresAt, type SessionRecord } from '../domain/session.js';
import { publicIdOf } from '../domain/token.js';

/** The public JSON shape of a session (docs/design.md §2.4). Never carries the token or its hash bytes. */
export function sessionView(s: SessionRecord) {
  return {
    id: publicIdOf(s.idHash),
    subject: s.subject,
    data: s.data,
    version: s.version,
    createdAt: s.createdAt.toISOString(),
    lastSeenAt: s.lastSeenAt.toISOString(),
    expiresAt: expiresAt(s).toISOString(),
    absoluteExpiresAt: s.absoluteExpiresAt.toISOString(),
    metadata: s.metadata,
  };
}
