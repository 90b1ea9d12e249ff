import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { inspect } from 'node:util';
import { SessiondClient, type ClientOptions, type Session, type SessionMetadata } from './client.js';
import { SessiondError } from './errors.js';
import { mergePatchBetween } from './merge-patch.js';

/* eslint-disable @typescript-eslint/no-explicit-any -- the frameworks' session and request objects */

/** A session as express-session and @fastify/session hand it to a store: JSON plus a `cookie`. */
export type StoredSession = Record<string, any> & { cookie?: Record<string, any> };
type Callback = (err?: any) => void;
type GetCallback = (err: any, session?: any) => void;

export interface SessiondStoreOptions {
  /**
   * Idle timeout in seconds of a session whose cookie has no maxAge (a browser-session cookie),
   * or a function of the session. Default: the namespace's idle timeout. With a maxAge the
   * idle timeout is the maxAge.
   */
  ttl?: number | ((session: StoredSession) => number | undefined);
  /** Absolute timeout in seconds (or a function of the session). Default: the namespace's. */
  absoluteTimeout?: number | ((session: StoredSession) => number | undefined);
  /**
   * The session's subject (user id) at create, so the service can list a user's sessions and
   * log them out everywhere. Default: passport's `session.passport.user` when it is a string
   * or a number; `false` for none.
   */
  subject?: false | ((session: StoredSession) => string | undefined);
  /** Metadata shown in device lists, at create (`session.req` is the request with express-session). */
  metadata?: (session: StoredSession) => SessionMetadata | undefined;
}

export type SessiondStoreConfig = SessiondStoreOptions & (ClientOptions | { client: SessiondClient });

/** The session field that carries what the store knows of the session (never serialised). */
export const STATE_FIELD = '__sessiond';

// A save or touch at the end of a request whose read (a touch) is younger than this costs no call.
const TOUCH_COALESCE_MS = 60_000;
const SUBJECT_MAX = 255;

/**
 * What one request's copy of a session knows: the token it belongs to, the version it was
 * read or written at, and its data (without the cookie) as JSON at that version. It rides in
 * the session object under `__sessiond`, so every framework copies it along with the data
 * (express-session's Session, @fastify/session's Session), while `toJSON()` keeps it out of
 * their change hashes and out of what is stored.
 */
class SessionState {
  readonly #token: string;
  /** After a merged save the service holds more than this copy: later saves merge too. */
  mergeOnly = false;

  constructor(
    token: string,
    public version: number,
    public stored: string,
    public touchedAt: number,
  ) {
    this.#token = token;
  }

  belongsTo(token: string): boolean {
    return this.#token === token;
  }

  toJSON(): undefined {
    return undefined;
  }

  [inspect.custom](): string {
    return `SessiondState { version: ${this.version} }`;
  }
}

/** The session without its cookie, as JSON: what decides whether a save changes anything. */
function dataJson(session: StoredSession): string {
  const { cookie: _cookie, [STATE_FIELD]: _state, ...rest } = session;
  return JSON.stringify(rest);
}

function stateOf(session: StoredSession, token: string): SessionState | undefined {
  const state: unknown = session[STATE_FIELD];
  return state instanceof SessionState && state.belongsTo(token) ? state : undefined;
}

const settle = <T>(promise: Promise<T>, cb: (err: any, value?: T) => void): void => {
  promise.then(
    (value) => cb(null, value),
    (err: unknown) => cb(err),
  );
};

let expressStore: { prototype: { createSession(req: any, session: any): any } } | undefined;
function expressSessionStore() {
  // Loaded on first use only: Fastify apps need not install express-session.
  expressStore ??= createRequire(import.meta.url)('express-session').Store;
  return expressStore!;
}

/**
 * A session store on sessiond for express-session (`store: new SessiondStore({ url, apiKey })`)
 * and @fastify/session (the same line). The session id is the sessiond token, so sessions are
 * created under the framework's ids (the namespace needs `"clientTokens": true`).
 *
 * - Reading costs one call: `get` touches (sliding the idle expiry) and answers the session; the
 *   framework's `touch`, and a save of unchanged data (resave, rolling), then cost nothing.
 * - A save never re-creates a session destroyed meanwhile (say, by a logout in a concurrent
 *   request): a known session is written with `PUT …/data` and `If-Match`, which cannot
 *   create, and a 404 means it is gone — the save is dropped, as if it had come after the
 *   logout. A new session is created with `If-None-Match: *`, which never overwrites.
 * - Concurrent saves of one session merge: when another request saved first (412), this
 *   request's own changes are applied as an RFC 7396 merge patch on top of it.
 */
export class SessiondStore extends EventEmitter {
  readonly client: SessiondClient;
  readonly #ownsClient: boolean;
  readonly #options: SessiondStoreOptions;
  /** Set by express-session's middleware: puts a new session on the request. */
  generate?: (req: any) => void;

  constructor(config: SessiondStoreConfig) {
    super();
    if ('client' in config) {
      this.client = config.client;
      this.#ownsClient = false;
    } else {
      this.client = new SessiondClient(config);
      this.#ownsClient = true;
    }
    this.#options = config;
  }

  /** The session of `sid`, touched (one call), or null. */
  get(sid: string, cb: GetCallback): void {
    settle(
      this.client.touch(sid).then((session) => session && this.#inflate(sid, session)),
      cb,
    );
  }

  /** Creates (new id) or updates (known session) — never re-creates a destroyed one. */
  set(sid: string, session: StoredSession, cb: Callback = noop): void {
    settle(this.#save(sid, session), cb);
  }

  /** Slides the idle expiry; free when this request's read already did. */
  touch(sid: string, session: StoredSession, cb: Callback = noop): void {
    const state = stateOf(session, sid);
    if (state !== undefined && Date.now() - state.touchedAt < TOUCH_COALESCE_MS) {
      cb();
      return;
    }
    settle(
      this.client.touch(sid).then((s) => {
        if (s !== null && state !== undefined) state.touchedAt = Date.now();
      }),
      cb,
    );
  }

  destroy(sid: string, cb: Callback = noop): void {
    settle(this.client.destroy(sid), cb);
  }

  // express-session's Store methods (connect's Store API): regenerate, load, createSession.

  regenerate(req: any, cb: Callback): void {
    this.destroy(req.sessionID, (err) => {
      this.generate!(req);
      cb(err);
    });
  }

  load(sid: string, cb: (err: any, session?: any) => void): void {
    this.get(sid, (err, session) => {
      if (err) return cb(err);
      if (!session) return cb(null);
      cb(null, this.createSession({ sessionID: sid, sessionStore: this }, session));
    });
  }

  createSession(req: any, session: any): any {
    return expressSessionStore().prototype.createSession.call(this, req, session);
  }

  /** Closes the client's connections (when the store made the client). */
  async close(): Promise<void> {
    if (this.#ownsClient) await this.client.close();
  }

  #inflate(sid: string, session: Session): StoredSession {
    const data = session.data as StoredSession;
    const cookie = data.cookie;
    if (typeof cookie !== 'object' || cookie === null) {
      // Created elsewhere (another app, the API): the frameworks need a cookie object.
      data.cookie = {};
    } else if (typeof cookie.originalMaxAge === 'number') {
      // The service decides expiry (the idle expiry slid just now); the frameworks derive the
      // cookie's from it. @fastify/session regenerates a session whose stored expiry passed.
      cookie.expires = session.expiresAt;
    }
    data[STATE_FIELD] = new SessionState(sid, session.version, dataJson(data), Date.now());
    return data;
  }

  async #save(sid: string, session: StoredSession): Promise<void> {
    const state = stateOf(session, sid);
    const json = dataJson(session);
    if (state === undefined) return this.#create(sid, session, json);
    if (json === state.stored) {
      // Unchanged data (resave, rolling, a cookie change): the read's touch was the whole write.
      if (Date.now() - state.touchedAt >= TOUCH_COALESCE_MS && (await this.client.touch(sid)) !== null) state.touchedAt = Date.now();
      return;
    }
    let written: Session | undefined;
    try {
      written = state.mergeOnly ? await this.#merge(sid, state, session) : await this.client.replaceData(sid, session, state.version);
    } catch (err) {
      if (!(err instanceof SessiondError)) throw err;
      if (err.code === 'session_not_found') return; // destroyed meanwhile: the save loses, as after a logout
      if (err.code !== 'version_mismatch') throw err;
      written = await this.#merge(sid, state, session);
      state.mergeOnly = true;
    }
    if (written === undefined) return; // destroyed meanwhile
    state.version = written.version;
    state.stored = json;
  }

  /** Applies this copy's changes since it was read onto whatever the service holds now. */
  async #merge(sid: string, state: SessionState, session: StoredSession): Promise<Session | undefined> {
    const patch = mergePatchBetween(JSON.parse(state.stored), JSON.parse(JSON.stringify(session)));
    try {
      // A change a merge patch cannot express (a member set to null): the last save wins.
      return patch === undefined ? await this.client.replaceData(sid, session, '*') : await this.client.patchData(sid, patch);
    } catch (err) {
      if (err instanceof SessiondError && err.code === 'session_not_found') return undefined;
      throw err;
    }
  }

  async #create(sid: string, session: StoredSession, json: string): Promise<void> {
    const o = this.#options;
    const maxAge = session.cookie?.originalMaxAge;
    const idle = typeof maxAge === 'number' && maxAge > 0 ? Math.ceil(maxAge / 1000) : valueOf(o.ttl, session);
    const absolute = valueOf(o.absoluteTimeout, session);
    const subject = o.subject === false ? undefined : (o.subject ?? passportUser)(session);
    const metadata = o.metadata?.(session);
    const issued = await this.client.createWithToken(sid, {
      data: session, // serialised by JSON.stringify: the cookie's toJSON, not the state
      ...(idle === undefined ? {} : { idleTimeout: idle }),
      ...(absolute === undefined ? {} : { absoluteTimeout: absolute }),
      ...(subject === undefined ? {} : { subject }),
      ...(metadata === undefined ? {} : { metadata }),
    });
    session[STATE_FIELD] = new SessionState(sid, issued.session.version, json, Date.now());
  }
}

function noop(): void {}

function valueOf(option: number | ((session: StoredSession) => number | undefined) | undefined, session: StoredSession): number | undefined {
  const v = typeof option === 'function' ? option(session) : option;
  return v === undefined ? undefined : Math.max(1, Math.ceil(v));
}

/** passport keeps the serialised user under session.passport.user. */
function passportUser(session: StoredSession): string | undefined {
  const user: unknown = session.passport?.user;
  const subject = typeof user === 'string' ? user : typeof user === 'number' && Number.isFinite(user) ? String(user) : undefined;
  return subject !== undefined && subject.length >= 1 && subject.length <= SUBJECT_MAX ? subject : undefined;
}
