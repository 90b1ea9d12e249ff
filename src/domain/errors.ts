/** Stable machine codes of the problem+json errors (docs/design.md §3). */
export type ProblemCode =
  | 'session_not_found'
  | 'version_mismatch'
  | 'precondition_required'
  | 'session_exists'
  | 'client_tokens_disabled'
  | 'payload_too_large'
  | 'invalid_request'
  | 'batch_too_large'
  | 'unsupported_media_type'
  | 'unauthorized'
  | 'rate_limited'
  | 'route_not_found'
  | 'store_unavailable'
  | 'internal_error';

/** An error that knows its HTTP status and problem code; the one error handler turns it into a reply. */
export class DomainError extends Error {
  constructor(
    readonly status: number,
    readonly code: ProblemCode,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'DomainError';
  }
}

export class SessionNotFoundError extends DomainError {
  constructor() {
    super(404, 'session_not_found', 'No live session matches this token or id in your namespace.');
  }
}

export class VersionMismatchError extends DomainError {
  constructor(readonly currentVersion: number) {
    super(412, 'version_mismatch', 'The session was changed since the version given in If-Match.', { currentVersion });
  }
}

export class PreconditionRequiredError extends DomainError {
  constructor(message = 'Replacing session data requires an If-Match header with the current version.') {
    super(428, 'precondition_required', message);
  }
}

/**
 * Create under a token that is taken: live, or remembered as destroyed, revoked or rotated away
 * until that session's absolute expiry. One answer for both, so it says nothing about which.
 */
export class SessionExistsError extends DomainError {
  constructor() {
    super(412, 'session_exists', 'This token is in use or was in use by a session that may not come back yet.');
  }
}

export class ClientTokensDisabledError extends DomainError {
  constructor() {
    super(403, 'client_tokens_disabled', 'This namespace does not accept tokens chosen by the client (policy clientTokens).');
  }
}

export class PayloadTooLargeError extends DomainError {
  constructor(limitBytes: number) {
    super(413, 'payload_too_large', `Session data must not exceed ${limitBytes} bytes as JSON.`, { limitBytes });
  }
}

export class InvalidRequestError extends DomainError {
  constructor(message: string) {
    super(400, 'invalid_request', message);
  }
}

/**
 * Which limit or failure made MariaDB unavailable for a call (logged, never answered):
 * - `acquire_timeout`: no pooled connection within DB_ACQUIRE_TIMEOUT_MS;
 * - `connect_timeout`: a new connection not set up within DB_CONNECT_TIMEOUT_MS;
 * - `statement_timeout`: the server stopped a statement at DB_QUERY_TIMEOUT_MS (max_statement_time);
 * - `lock_wait_timeout`: InnoDB's lock wait ran out;
 * - `call_deadline`: the whole call (DB_ACQUIRE_TIMEOUT_MS + DB_QUERY_TIMEOUT_MS) ran out here;
 * - `commit_wait`: a COMMIT sent at the deadline was not answered within DB_QUERY_TIMEOUT_MS;
 * - `contention`: a deadlock or lost Galera certification outlasted the retries;
 * - `node_not_ready`: a Galera node outside the primary component;
 * - `connection`: refused, reset or closed connections, a closed pool.
 */
export type StoreUnavailableReason =
  | 'acquire_timeout'
  | 'connect_timeout'
  | 'statement_timeout'
  | 'lock_wait_timeout'
  | 'call_deadline'
  | 'commit_wait'
  | 'contention'
  | 'node_not_ready'
  | 'connection';

/** MariaDB could not be reached in time: the caller should retry later. */
export class StoreUnavailableError extends DomainError {
  /**
   * Why the call went to MariaDB without Redis, when it did: `breaker_open`, `deadline` (the
   * Redis command timeout) or `error` (a refused or dropped connection).
   */
  redis: string | undefined;
  /** Where the call stood when a deadline fired (`acquire`, `statements`, `commit`), when known. */
  stage: string | undefined;
  /** The driver's error code behind `connection` and the timeouts (e.g. ECONNREFUSED), when there was one. */
  driverCode: string | undefined;
  /** The connection pool when a deadline fired: connections in use, idle, and calls waiting for one. */
  pool: { active: number; idle: number; waiting: number } | undefined;

  constructor(
    readonly reason: StoreUnavailableReason = 'connection',
    readonly retryAfterSeconds = 1,
  ) {
    super(503, 'store_unavailable', 'The session store is temporarily unavailable.');
  }
}
