import { STATUS_CODES } from 'node:http';
import { Pool, type Dispatcher } from 'undici';
import { SessiondError, type Problem } from './errors.js';
import type { components, operations } from './sessiond-api.js';

export type Session = components['schemas']['Session'];
export type SessionData = components['schemas']['SessionData'];
export type SessionMetadata = components['schemas']['SessionMetadata'];
export type IssuedSession = components['schemas']['IssuedSession'];
export type SubjectSessionPage = components['schemas']['SubjectSessionPage'];
export type CreateSessionInput = NonNullable<operations['createSession']['requestBody']>['content']['application/json'];
export type RotateInput = NonNullable<operations['rotateCurrentSession']['requestBody']>['content']['application/json'];
export type TouchBatchResult = components['schemas']['TouchBatchResult'];

export interface ClientOptions {
  /** Base URL of the service, e.g. `http://sessiond.internal:8080` (a path prefix is kept). */
  url: string;
  /** The API key; it fixes the namespace. */
  apiKey: string;
  /** Deadline of one call in milliseconds, retries included (default 2000). */
  timeout?: number;
  /** Further attempts for calls that are safe to repeat (default 2; 0 = none). */
  retries?: number;
  /** Keep-alive connections to the service (default 32). */
  connections?: number;
  /** Bring your own undici dispatcher (Pool, Agent, a mock…) instead of the built-in pool. */
  dispatcher?: Dispatcher;
  /**
   * How long `touch` calls are collected into one batch call (`POST /v1/sessions/batch/touch`):
   * 0 (the default) = the calls of one event-loop turn; a number of milliseconds = that window;
   * `false` = every touch is a call of its own. A lone touch still goes out as the single call.
   */
  batchWindow?: number | false;
}

export interface CallOptions {
  /** This call's deadline in milliseconds (default: the client's). */
  timeout?: number;
  /** Aborts the call; it then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** This call's further attempts where it is safe to repeat (default: the client's). */
  retries?: number;
}

/** One HTTP call as the client makes it; `request()` is the escape hatch for anything else. */
export interface RequestSpec {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  path: string;
  token?: string;
  /** A JSON-serialisable body, or a string that already is JSON. */
  body?: unknown;
  contentType?: string;
  headers?: Record<string, string>;
  /** Whether the call may be repeated after a lost answer (read, touch, destroy: yes; create: no). */
  idempotent: boolean;
}

export interface Reply<T> {
  status: number;
  body: T;
}

const DEFAULT_TIMEOUT_MS = 2000;
const DEFAULT_RETRIES = 2;
const DEFAULT_CONNECTIONS = 32;
const BACKOFF_MS = 25;
/** The most tokens the service takes in one batch call (its `maxBatch`). */
export const MAX_BATCH = 100;
const BATCH_PATH = '/v1/sessions/batch/touch';

// Failures where the request cannot have reached the service: any call may be repeated.
const NOT_SENT = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);
// Answers worth one more try of a call that is safe to repeat.
const RETRYABLE_STATUS = new Set([502, 503, 504]);

type Answer = { status: number; headers: Record<string, string | string[] | undefined>; text: string };

/**
 * A call's deadline (retries included) and the caller's signal: either ends the attempt in
 * flight, through the controller undici hands the handler, and any wait between attempts.
 */
class Deadline {
  ended = false;
  reason: unknown;
  /** The attempt in flight, from its dispatch to its answer: undici's controller once it started, and its promise. */
  attempt: { abort(reason: Error): void } | undefined;
  fail: ((reason: unknown) => void) | undefined;
  readonly #deadline: number;
  readonly #timer: NodeJS.Timeout;
  readonly #outer: AbortSignal | undefined;
  #onOuterAbort: (() => void) | undefined;
  #wake: (() => void) | undefined;

  constructor(timeout: number, outer: AbortSignal | undefined) {
    this.#deadline = performance.now() + timeout;
    this.#timer = setTimeout(() => this.#end(new Error(`deadline of ${timeout} ms passed`)), timeout);
    this.#outer = outer;
    if (outer !== undefined) {
      this.#onOuterAbort = () => this.#end(outer.reason);
      outer.addEventListener('abort', this.#onOuterAbort, { once: true });
    }
  }

  /** Milliseconds left. */
  get left(): number {
    return this.#deadline - performance.now();
  }

  /** Waits `ms` unless the call ends first; false when it ended. */
  sleep(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#wake = undefined;
        resolve(!this.ended);
      }, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve(false);
      };
    });
  }

  done(): void {
    clearTimeout(this.#timer);
    if (this.#onOuterAbort !== undefined) this.#outer!.removeEventListener('abort', this.#onOuterAbort);
  }

  #end(reason: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.reason = reason;
    this.attempt?.abort(reason instanceof Error ? reason : new Error('aborted'));
    // Rejected at once, even while undici still queues the request (say, waiting for a connection).
    this.fail?.(reason);
    this.#wake?.();
  }
}

/**
 * A client for one sessiond service: one keep-alive connection pool (undici), a deadline per
 * call, problem answers as `SessiondError` (with the service's `code`), and retries only for
 * calls that are safe to repeat. `read` and `touch` answer `null` for an unknown session;
 * every other failure throws.
 */
export class SessiondClient {
  readonly #dispatcher: Dispatcher;
  readonly #ownsDispatcher: boolean;
  readonly #origin: string;
  readonly #prefix: string;
  readonly #authorization: string;
  readonly #timeout: number;
  readonly #retries: number;
  readonly #batcher: TouchBatcher | undefined;

  constructor(options: ClientOptions) {
    const url = new URL(options.url);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`sessiond url must be http(s), got ${url.protocol}`);
    if (typeof options.apiKey !== 'string' || options.apiKey === '') throw new TypeError('sessiond apiKey is required');
    this.#origin = url.origin;
    this.#prefix = url.pathname.replace(/\/+$/, '');
    this.#authorization = `Bearer ${options.apiKey}`;
    this.#timeout = options.timeout ?? DEFAULT_TIMEOUT_MS;
    this.#retries = options.retries ?? DEFAULT_RETRIES;
    this.#ownsDispatcher = options.dispatcher === undefined;
    this.#dispatcher =
      options.dispatcher ??
      new Pool(this.#origin, {
        connections: options.connections ?? DEFAULT_CONNECTIONS,
        // The service tells how long it keeps idle connections (Keep-Alive: timeout=…); undici follows it.
        keepAliveTimeout: 30_000,
        keepAliveMaxTimeout: 600_000,
      });
    const window = options.batchWindow ?? 0;
    if (window !== false) {
      if (!Number.isFinite(window) || window < 0) throw new TypeError(`sessiond batchWindow must be false or a number of ms >= 0, got ${window}`);
      this.#batcher = new TouchBatcher(this, window, this.#timeout, this.#retries, (token, options) => this.#touchOne(token, options));
    }
  }

  /** Creates a session with a token the service mints. */
  async create(input: CreateSessionInput = {}, options?: CallOptions): Promise<IssuedSession> {
    return (await this.request<IssuedSession>({ method: 'POST', path: '/v1/sessions', body: input, idempotent: false }, options)).body;
  }

  /**
   * Creates a session under a token the app chose (32–256 characters of `[A-Za-z0-9_-]`; the
   * namespace needs `"clientTokens": true`). Never overwrites: an existing — or destroyed — token
   * is `session_exists`.
   */
  async createWithToken(token: string, input: CreateSessionInput = {}, options?: CallOptions): Promise<IssuedSession> {
    const spec: RequestSpec = { method: 'PUT', path: '/v1/sessions/current', token, body: input, headers: { 'if-none-match': '*' }, idempotent: false };
    return (await this.request<IssuedSession>(spec, options)).body;
  }

  /** The session of a token, or null when there is none (unknown, expired, destroyed). */
  async read(token: string, options?: CallOptions): Promise<Session | null> {
    return this.#orNull(this.request<Session>({ method: 'GET', path: '/v1/sessions/current', token, idempotent: true }, options));
  }

  /**
   * Slides the idle expiry and answers the session (one call per app request), or null. The
   * touches of one event-loop turn (`batchWindow`) go out as one batch call; each keeps its own
   * deadline, signal and errors.
   */
  touch(token: string, options?: CallOptions): Promise<Session | null> {
    return this.#batcher === undefined ? this.#touchOne(token, options) : this.#batcher.add(token, options);
  }

  #touchOne(token: string, options?: CallOptions): Promise<Session | null> {
    return this.#orNull(this.request<Session>({ method: 'POST', path: '/v1/sessions/current/touch', token, idempotent: true }, options));
  }

  /**
   * Replaces the data if the session is still at `version` (`'*'`: at any version). Throws
   * `version_mismatch` (with `currentVersion`) when it changed, `session_not_found` when it is gone.
   */
  async replaceData(token: string, data: SessionData, version: number | '*', options?: CallOptions): Promise<Session> {
    const ifMatch = version === '*' ? '*' : `"${version}"`;
    const spec: RequestSpec = { method: 'PUT', path: '/v1/sessions/current/data', token, body: data, headers: { 'if-match': ifMatch }, idempotent: false };
    return (await this.request<Session>(spec, options)).body;
  }

  /** Applies an RFC 7396 merge patch atomically; with `version`, only if the session is still at it. */
  async patchData(token: string, patch: SessionData, options: CallOptions & { version?: number } = {}): Promise<Session> {
    const spec: RequestSpec = {
      method: 'PATCH',
      path: '/v1/sessions/current/data',
      token,
      body: patch,
      contentType: 'application/merge-patch+json',
      ...(options.version === undefined ? {} : { headers: { 'if-match': `"${options.version}"` } }),
      idempotent: false,
    };
    return (await this.request<Session>(spec, options)).body;
  }

  /** Destroys the session (log out). Idempotent: an unknown token is fine. */
  async destroy(token: string, options?: CallOptions): Promise<void> {
    await this.request({ method: 'DELETE', path: '/v1/sessions/current', token, idempotent: true }, options);
  }

  /** A new token for the same session; the old one dies (after `graceSeconds`, if given). */
  async rotate(token: string, input: RotateInput = {}, options?: CallOptions): Promise<IssuedSession> {
    return (await this.request<IssuedSession>({ method: 'POST', path: '/v1/sessions/current/rotate', token, body: input, idempotent: false }, options)).body;
  }

  /** A session by its public id, or null. */
  async readById(id: string, options?: CallOptions): Promise<Session | null> {
    return this.#orNull(this.request<Session>({ method: 'GET', path: `/v1/sessions/${encodeURIComponent(id)}`, idempotent: true }, options));
  }

  /** Revokes a session by its public id (idempotent). */
  async revokeById(id: string, options?: CallOptions): Promise<void> {
    await this.request({ method: 'DELETE', path: `/v1/sessions/${encodeURIComponent(id)}`, idempotent: true }, options);
  }

  /** A user's live sessions, newest activity first ("your devices"). */
  async listSubjectSessions(subject: string, query: { limit?: number; cursor?: string } = {}, options?: CallOptions): Promise<SubjectSessionPage> {
    const params = new URLSearchParams();
    if (query.limit !== undefined) params.set('limit', String(query.limit));
    if (query.cursor !== undefined) params.set('cursor', query.cursor);
    const qs = params.size > 0 ? `?${params}` : '';
    return (await this.request<SubjectSessionPage>({ method: 'GET', path: `/v1/subjects/${encodeURIComponent(subject)}/sessions${qs}`, idempotent: true }, options)).body;
  }

  /** Logs a user out everywhere (but `keep`, a public id), atomically. */
  async revokeSubjectSessions(subject: string, query: { keep?: string } = {}, options?: CallOptions): Promise<{ revoked: number }> {
    const qs = query.keep === undefined ? '' : `?keep=${encodeURIComponent(query.keep)}`;
    const spec: RequestSpec = { method: 'DELETE', path: `/v1/subjects/${encodeURIComponent(subject)}/sessions${qs}`, idempotent: true };
    return (await this.request<{ revoked: number }>(spec, options)).body;
  }

  /** Closes the connection pool (when the client made it). */
  async close(): Promise<void> {
    if (this.#ownsDispatcher) await this.#dispatcher.close();
  }

  /**
   * One call: 2xx answers resolve with the parsed body; anything else throws `SessiondError`.
   * Within the deadline, a call is repeated when the request never left (no connection), and —
   * when `idempotent` — also after a broken connection or a 502/503/504.
   */
  async request<T = unknown>(spec: RequestSpec, options: CallOptions = {}): Promise<Reply<T>> {
    const timeout = options.timeout ?? this.#timeout;
    const retries = options.retries ?? this.#retries;
    const outer = options.signal;
    if (outer?.aborted) throw outer.reason;
    // One timer per call, no AbortController: the deadline aborts the attempt in flight through
    // undici's own controller (an AbortController and its listeners cost more than the call's parsing).
    const call = new Deadline(timeout, outer);
    const headers: Record<string, string> = spec.headers === undefined ? { authorization: this.#authorization } : { authorization: this.#authorization, ...spec.headers };
    if (spec.token !== undefined) headers['session-token'] = spec.token;
    let body: string | undefined;
    if (spec.body !== undefined) {
      body = typeof spec.body === 'string' ? spec.body : JSON.stringify(spec.body);
      headers['content-type'] = spec.contentType ?? 'application/json';
    }
    const opts: Dispatcher.DispatchOptions = { origin: this.#origin, path: this.#prefix + spec.path, method: spec.method, headers, body };
    try {
      for (let attempt = 0; ; attempt++) {
        let answer: Answer;
        try {
          answer = await this.#send(opts, call);
        } catch (err) {
          if (call.ended) throw abortError(spec, timeout, outer, err);
          const code = (err as { code?: string }).code ?? '';
          if (attempt < retries && (spec.idempotent || NOT_SENT.has(code)) && (await backoff(attempt, call))) continue;
          if (call.ended) throw abortError(spec, timeout, outer, err);
          throw new SessiondError('connection_failed', 0, `sessiond ${spec.method} ${routeOf(spec.path)}: ${code || (err as Error).message}`, undefined, { cause: err });
        }
        if (answer.status >= 200 && answer.status < 300) {
          return { status: answer.status, body: (answer.text === '' ? undefined : JSON.parse(answer.text)) as T };
        }
        if (spec.idempotent && RETRYABLE_STATUS.has(answer.status) && attempt < retries && (await backoff(attempt, call))) continue;
        throw problemError(spec, answer);
      }
    } finally {
      call.done();
    }
  }

  /** One attempt through undici's handler API: no response stream, no promise per chunk. */
  #send(opts: Dispatcher.DispatchOptions, call: Deadline): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      call.fail = reject;
      this.#dispatcher.dispatch(opts, new AnswerHandler(call, resolve, reject));
    });
  }

  async #orNull<T>(call: Promise<Reply<T>>): Promise<T | null> {
    try {
      return (await call).body;
    } catch (err) {
      if (err instanceof SessiondError && err.status === 404 && err.code === 'session_not_found') return null;
      throw err;
    }
  }
}

/** One touch waiting in a batch: its own deadline and signal (through Deadline), its attempts. */
interface PendingTouch {
  token: string;
  call: Deadline;
  timeout: number;
  options: CallOptions | undefined;
  attempt: number;
  resolve: (session: Session | null) => void;
  reject: (err: unknown) => void;
}

/**
 * Collects the touches of one event-loop turn (or `window` ms) into one batch call: one HTTP
 * request, one JSON body, one answer for up to MAX_BATCH sessions, where each touch alone costs
 * a request of its own. Each touch keeps its deadline and signal (ending it rejects that touch
 * only) and gets its own answer: the session, null (404), or the item's error as a
 * SessiondError. The batch call is retried like a touch (it is as safe to repeat); an item that
 * answered 502/503/504 goes into a later batch, within its deadline and the client's retries.
 * A lone touch goes out as the single call; a service without the batch route (404
 * `route_not_found`) gets single calls from then on.
 */
class TouchBatcher {
  #queue: PendingTouch[] = [];
  #scheduled = false;
  #unsupported = false;

  constructor(
    private readonly client: SessiondClient,
    private readonly window: number,
    private readonly timeout: number,
    private readonly retries: number,
    private readonly single: (token: string, options?: CallOptions) => Promise<Session | null>,
  ) {}

  add(token: string, options: CallOptions | undefined): Promise<Session | null> {
    if (this.#unsupported) return this.single(token, options);
    const outer = options?.signal;
    if (outer?.aborted) return Promise.reject(outer.reason);
    const timeout = options?.timeout ?? this.timeout;
    return new Promise((resolve, reject) => {
      const call = new Deadline(timeout, outer);
      const item: PendingTouch = { token, call, timeout, options, attempt: 0, resolve, reject };
      call.fail = (reason) => {
        call.done();
        reject(outer?.aborted ? outer.reason : new SessiondError('deadline_exceeded', 0, `sessiond POST ${BATCH_PATH}: no answer within ${timeout} ms`, undefined, { cause: reason }));
      };
      this.#enqueue(item);
    });
  }

  #enqueue(item: PendingTouch): void {
    this.#queue.push(item);
    if (this.#queue.length >= MAX_BATCH) {
      this.#flush();
      return;
    }
    if (this.#scheduled) return;
    this.#scheduled = true;
    if (this.window === 0) setImmediate(() => this.#flush());
    else setTimeout(() => this.#flush(), this.window);
  }

  #flush(): void {
    const items = this.#queue.filter((item) => !item.call.ended);
    this.#queue = [];
    this.#scheduled = false;
    if (items.length === 0) return;
    if (items.length === 1 || this.#unsupported) {
      for (const item of items) this.#alone(item);
      return;
    }
    // The batch call lives as long as its longest-lived touch; each touch ends on its own.
    let timeout = 0;
    for (const item of items) timeout = Math.max(timeout, item.call.left);
    const body = JSON.stringify({ tokens: items.map((item) => item.token) });
    this.client.request<{ results: TouchBatchResult[] }>({ method: 'POST', path: BATCH_PATH, body, idempotent: true }, { timeout: Math.max(1, Math.ceil(timeout)) }).then(
      ({ body: answer }) => {
        items.forEach((item, i) => this.#answer(item, answer.results[i]));
      },
      (err: unknown) => {
        if (err instanceof SessiondError && err.status === 404 && err.code === 'route_not_found') {
          // A service from before the batch route: single calls from now on.
          this.#unsupported = true;
          for (const item of items) this.#alone(item);
          return;
        }
        for (const item of items) this.#settle(item, () => item.reject(err));
      },
    );
  }

  /** The single call, with what is left of the touch's deadline and of its retries. */
  #alone(item: PendingTouch): void {
    if (item.call.ended) return;
    const options: CallOptions = { timeout: Math.max(1, Math.ceil(item.call.left)), retries: Math.max(0, (item.options?.retries ?? this.retries) - item.attempt) };
    if (item.options?.signal !== undefined) options.signal = item.options.signal;
    item.call.done();
    item.call.ended = true;
    this.single(item.token, options).then(item.resolve, item.reject);
  }

  #settle(item: PendingTouch, settle: () => void): void {
    if (item.call.ended) return; // its deadline or signal already rejected it
    item.call.done();
    item.call.ended = true;
    settle();
  }

  #answer(item: PendingTouch, result: TouchBatchResult | undefined): void {
    if (item.call.ended) return;
    if (result === undefined) {
      this.#settle(item, () => item.reject(new SessiondError('internal_error', 0, `sessiond POST ${BATCH_PATH}: the answer has no result for this session`)));
      return;
    }
    if (result.status === 200 && result.session !== undefined) {
      const session = result.session;
      this.#settle(item, () => item.resolve(session));
      return;
    }
    const code = result.code ?? `http_${result.status}`;
    if (result.status === 404 && code === 'session_not_found') {
      this.#settle(item, () => item.resolve(null));
      return;
    }
    if (RETRYABLE_STATUS.has(result.status) && item.attempt < (item.options?.retries ?? this.retries)) {
      const attempt = item.attempt++;
      void backoff(attempt, item.call).then((again) => {
        if (again) this.#enqueue(item);
        else this.#settle(item, () => item.reject(itemError(result, code)));
      });
      return;
    }
    this.#settle(item, () => item.reject(itemError(result, code)));
  }
}

function itemError(result: TouchBatchResult, code: string): SessiondError {
  const detail = result.detail ?? `HTTP ${result.status}`;
  const problem = { type: 'about:blank', title: STATUS_CODES[result.status] ?? 'Error', status: result.status, code, detail } as Problem;
  return new SessiondError(code, result.status, `sessiond POST ${BATCH_PATH}: ${result.status} ${code}: ${detail}`, problem);
}

/**
 * Collects one answer for `#send`. Dispatchers built on undici's DispatcherBase (Pool, Agent,
 * MockAgent) call the `onRequestStart`… methods; a few call the older `onConnect`… ones directly
 * (a bare MockPool or MockClient): each is served by the same code, and only one set is called.
 */
class AnswerHandler implements Dispatcher.DispatchHandler {
  #status = 0;
  #headers: Answer['headers'] = {};
  #first: Buffer | undefined;
  #chunks: Buffer[] | undefined;

  constructor(
    private readonly call: Deadline,
    private readonly resolve: (answer: Answer) => void,
    private readonly reject: (err: unknown) => void,
  ) {}

  onRequestStart(controller: { abort(reason: Error): void }): void {
    if (this.call.ended) controller.abort(this.call.reason instanceof Error ? this.call.reason : new Error('aborted'));
    else this.call.attempt = controller;
  }

  onResponseStart(_controller: unknown, statusCode: number, headers: Answer['headers']): void {
    this.#status = statusCode;
    this.#headers = headers;
  }

  onResponseData(_controller: unknown, chunk: Buffer): void {
    if (this.#first === undefined) this.#first = chunk;
    else (this.#chunks ??= [this.#first]).push(chunk);
  }

  onResponseEnd(): void {
    this.call.attempt = this.call.fail = undefined;
    const text = this.#chunks !== undefined ? Buffer.concat(this.#chunks).toString('utf8') : this.#first !== undefined ? this.#first.toString('utf8') : '';
    this.resolve({ status: this.#status, headers: this.#headers, text });
  }

  onResponseError(_controller: unknown, err: Error): void {
    this.call.attempt = this.call.fail = undefined;
    this.reject(err);
  }

  // The older handler methods, for dispatchers that call them directly.
  onConnect(abort: (err?: Error) => void): void {
    this.onRequestStart({ abort });
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[] | string[] | null): boolean {
    const headers: Answer['headers'] = {};
    for (let i = 0; rawHeaders !== null && i + 1 < rawHeaders.length; i += 2) headers[String(rawHeaders[i]).toLowerCase()] = String(rawHeaders[i + 1]);
    this.onResponseStart(undefined, statusCode, headers);
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.onResponseData(undefined, chunk);
    return true;
  }

  onComplete(): void {
    this.onResponseEnd();
  }

  onError(err: Error): void {
    this.onResponseError(undefined, err);
  }
}

/** `createClient({ url, apiKey })`: a client with its own keep-alive pool; `close()` it at shutdown. */
export function createClient(options: ClientOptions): SessiondClient {
  return new SessiondClient(options);
}

/** Paths name no token or subject in messages: ids and subjects are replaced by their route. */
function routeOf(path: string): string {
  return path.replace(/^\/v1\/sessions\/(?!current)[^/?]+/, '/v1/sessions/{id}').replace(/^\/v1\/subjects\/[^/?]+/, '/v1/subjects/{subject}').replace(/\?.*$/, '');
}

function problemError(spec: RequestSpec, answer: Answer): SessiondError {
  let problem: Problem | undefined;
  try {
    const parsed = JSON.parse(answer.text) as Problem;
    if (parsed !== null && typeof parsed === 'object' && typeof parsed.code === 'string') problem = parsed;
  } catch {
    // not a problem body (a proxy's error page)
  }
  const code = problem?.code ?? `http_${answer.status}`;
  const detail = problem?.detail ?? problem?.title ?? `HTTP ${answer.status}`;
  const error = new SessiondError(code, answer.status, `sessiond ${spec.method} ${routeOf(spec.path)}: ${answer.status} ${code}: ${detail}`, problem);
  const retryAfter = Number(answer.headers['retry-after']);
  if (Number.isFinite(retryAfter) && answer.headers['retry-after'] !== undefined) error.retryAfter = retryAfter;
  return error;
}

function abortError(spec: RequestSpec, timeout: number, outer: AbortSignal | undefined, cause: unknown): unknown {
  if (outer?.aborted) return outer.reason;
  return new SessiondError('deadline_exceeded', 0, `sessiond ${spec.method} ${routeOf(spec.path)}: no answer within ${timeout} ms`, undefined, { cause });
}

/** Waits before attempt `attempt + 1`; false when that would pass the deadline. */
async function backoff(attempt: number, call: Deadline): Promise<boolean> {
  const wait = BACKOFF_MS * 2 ** attempt * (0.5 + Math.random());
  if (wait >= call.left || call.ended) return false;
  return call.sleep(wait);
}
