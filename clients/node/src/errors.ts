import type { components } from './sessiond-api.js';

export type Problem = components['schemas']['Problem'];

/**
 * What went wrong, as a stable machine code: the service's problem `code` (`session_not_found`,
 * `version_mismatch`, …), or one of the client's own when no answer came:
 * `deadline_exceeded` (the call's deadline passed) and `connection_failed` (no connection, or it
 * broke before the answer).
 */
export type SessiondErrorCode = Problem['code'] | 'deadline_exceeded' | 'connection_failed' | (string & {});

/** A failed call: the service answered with an RFC 9457 problem, or no answer came in time. */
export class SessiondError extends Error {
  override readonly name = 'SessiondError';

  constructor(
    readonly code: SessiondErrorCode,
    /** The HTTP status; 0 when no answer came. */
    readonly status: number,
    message: string,
    /** The whole problem body when the service answered one. */
    readonly problem?: Problem,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** With `version_mismatch`: the version the session is at now. */
  get currentVersion(): number | undefined {
    return this.problem?.currentVersion;
  }

  /** The service's `Retry-After` on 429 and 503, in seconds, when it sent one. */
  retryAfter?: number;
}
