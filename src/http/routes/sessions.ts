import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { SessionRecord } from '../../domain/session.js';
import { publicIdOf } from '../../domain/token.js';
import type { IssuedSession, SessionService, TokenRead } from '../../service/session-service.js';
import { etagOf, parseIfMatch, parseIfNoneMatch } from '../preconditions.js';
import {
  batchProblem400,
  CreateSessionBody,
  CreateWithTokenHeaders,
  IdParams,
  problemResponses,
  rateLimitHeaders,
  RotateBody,
  type SchemaTypeProvider,
  MAX_BATCH,
  SessionTokenHeaders,
  TouchBatchBody,
  WriteHeaders,
} from '../schemas.js';
import { DomainError } from '../../domain/errors.js';
import type { RateLimitCharge } from '../rate-limit.js';
import { sendProblem } from '../problem.js';
import type { GuessingMonitor } from '../guessing-monitor.js';
import { bindLog } from '../authenticate.js';
import { sessionView } from '../session-view.js';

export interface SessionRoutesOptions {
  service: SessionService;
  guessing: GuessingMonitor;
  /** Counts a batch as its sessions (the rate-limit plugin counted the request as one). */
  chargeRateLimit: RateLimitCharge;
}

const MERGE_PATCH = 'application/merge-patch+json';

const etagHeader = { ETag: { type: 'string', description: 'Strong ETag of the session version, e.g. "3".' }, ...rateLimitHeaders };
const ok = (ref: string, description: string) => ({ description, headers: etagHeader, ...Type.Ref(ref) });
const rotatedHeader = {
  'Session-Rotated': {
    type: 'string',
    enum: ['true'],
    description:
      'Present when the token was rotated away and is in its grace: the answer is the NEW session, reached through the old ' +
      'token. Grace is for requests already in flight at a rotation; never treat such a request as the rotated (logged-in) user.',
  },
};
const okByToken = (description: string) => ({ description, headers: { ...etagHeader, ...rotatedHeader }, ...Type.Ref('Session') });

const tag = ['sessions'];
const security = [{ apiKey: [] }];

/** Names the session in this request's logs by its public id, never by its token. */
function nameSession(request: FastifyRequest, session: SessionRecord): void {
  bindLog(request, { sessionId: publicIdOf(session.idHash) });
}

function sendSession(request: FastifyRequest, reply: FastifyReply, session: SessionRecord, status = 200) {
  nameSession(request, session);
  return reply.code(status).header('etag', etagOf(session.version)).send(sessionView(session));
}

/** A read or touch by token: says so when the token reached the session through a rotation grace. */
function sendByToken(request: FastifyRequest, reply: FastifyReply, read: TokenRead) {
  if (read.rotated) reply.header('session-rotated', 'true');
  return sendSession(request, reply, read.session);
}

/** 201 with the new token, shown this once, and the session. */
function sendIssued(request: FastifyRequest, reply: FastifyReply, issued: IssuedSession) {
  nameSession(request, issued.session);
  return reply
    .code(201)
    .header('etag', etagOf(issued.session.version))
    .send({ token: issued.token, session: sessionView(issued.session) });
}

export const sessionRoutes: FastifyPluginAsync<SessionRoutesOptions> = async (fastify, { service, guessing, chargeRateLimit }) => {
  const app = fastify.withTypeProvider<SchemaTypeProvider>();

  // A token that matched nothing: count it per client (the guessing signal).
  app.addHook('onResponse', (request, reply, done) => {
    if (reply.statusCode === 404 && request.headers['session-token'] !== undefined && request.caller !== undefined) {
      guessing.record(request.caller.client);
    }
    done();
  });

  // RFC 7396 documents arrive as application/merge-patch+json; parse them like JSON.
  app.addContentTypeParser(MERGE_PATCH, { parseAs: 'string' }, app.getDefaultJsonParser('error', 'error'));

  // Create and rotate accept an empty body.
  const emptyBodyIsObject = async (request: FastifyRequest) => {
    if (request.body === undefined || request.body === null) request.body = {};
  };

  app.post(
    '/sessions',
    {
      preValidation: emptyBodyIsObject,
      schema: {
        operationId: 'createSession',
        summary: 'Create a session',
        description: 'Issues a new token. Only SHA-256(token) is stored; the token is returned this once.',
        tags: tag,
        security,
        body: CreateSessionBody,
        response: { 201: ok('IssuedSession', 'Session created and committed.'), ...problemResponses(400, 401, 413, 415, 429, 500, 503) },
      },
    },
    async (request, reply) => sendIssued(request, reply, await service.create(request.caller.namespace, request.body)),
  );

  app.put(
    '/sessions/current',
    {
      preValidation: emptyBodyIsObject,
      schema: {
        operationId: 'createSessionWithToken',
        summary: 'Create a session under a token the app chose',
        description:
          'For session middlewares that make their own ids (express-session, @fastify/session) and for imports. Only where the ' +
          'namespace policy `clientTokens` is on (403 `client_tokens_disabled` otherwise). Requires `If-None-Match: *` (428 ' +
          'without it). 412 `session_exists` when a session holds the token, or held it and was destroyed, revoked or rotated ' +
          'away and could still be alive (before its absolute expiry): a destroyed id never comes back. Only SHA-256(token) is ' +
          'stored; the session id is its base64url, as for every token.',
        tags: tag,
        security,
        headers: CreateWithTokenHeaders,
        body: CreateSessionBody,
        response: {
          201: ok('IssuedSession', 'Session created and committed under the given token.'),
          ...problemResponses(400, 401, 403, 412, 413, 415, 428, 429, 500, 503),
        },
      },
    },
    async (request, reply) => {
      const { 'session-token': token, 'if-none-match': ifNoneMatch } = request.headers;
      const onlyIfAbsent = parseIfNoneMatch(ifNoneMatch);
      return sendIssued(request, reply, await service.createWithToken(request.caller.namespace, token, request.body, onlyIfAbsent));
    },
  );

  app.get(
    '/sessions/current',
    {
      schema: {
        operationId: 'getCurrentSession',
        summary: 'Read the session of a token',
        description:
          'Reads without sliding the idle expiry (touch does that). 404 once the token is unknown, expired, destroyed or ' +
          'rotated away; during a rotation grace the old token answers with the new session.',
        tags: tag,
        security,
        headers: SessionTokenHeaders,
        response: { 200: okByToken('The live session.'), ...problemResponses(400, 401, 404, 429, 500, 503) },
      },
    },
    async (request, reply) => sendByToken(request, reply, await service.get(request.caller.namespace, request.headers['session-token'])),
  );

  app.post(
    '/sessions/current/touch',
    {
      schema: {
        operationId: 'touchCurrentSession',
        summary: 'Slide the idle expiry and return the session',
        description:
          'The per-request call. The idle expiry becomes min(now + idle timeout, absolute expiry) and never moves backwards. ' +
          'It is persisted lazily: the stored expiry may lag by at most the touch persist threshold.',
        tags: tag,
        security,
        headers: SessionTokenHeaders,
        response: { 200: okByToken('The live session after the touch.'), ...problemResponses(400, 401, 404, 415, 429, 500, 503) },
      },
    },
    async (request, reply) => sendByToken(request, reply, await service.touch(request.caller.namespace, request.headers['session-token'])),
  );

  app.post(
    '/sessions/batch/touch',
    {
      preValidation: refuseOversizedBatch,
      schema: {
        operationId: 'touchSessionsBatch',
        summary: 'Touch many sessions in one call',
        description:
          `The per-request call of many app requests at once (a client collects the touches of one event-loop turn): each ` +
          `token is touched as by POST /v1/sessions/current/touch and answered on its own, in order: \`status\` 200 with the ` +
          `session (and \`rotated\` in a rotation grace), or the single call's problem \`code\` (404 \`session_not_found\`, ` +
          `503 \`store_unavailable\`). Tokens travel in the body only. At most ${MAX_BATCH} tokens (400 \`batch_too_large\`). ` +
          'The rate limit counts each token as a request (429 for the whole batch when they pass the limit), and each ' +
          'token that matched nothing counts as a failed lookup, as single calls would.',
        tags: tag,
        security,
        body: TouchBatchBody,
        response: {
          200: { description: 'One result per token, in the order of `tokens`.', headers: rateLimitHeaders, ...Type.Ref('TouchBatchAnswer') },
          400: batchProblem400,
          ...problemResponses(401, 413, 415, 429, 500, 503),
        },
      },
    },
    async (request, reply) => {
      const { tokens } = request.body;
      const overLimit = await chargeRateLimit(request, reply, tokens.length - 1);
      if (overLimit !== null) throw overLimit;
      const answers = await service.touchMany(request.caller.namespace, tokens);
      let unavailable = false;
      const results = answers.map((answer) => {
        if (answer.status === 'fulfilled') return { status: 200, session: sessionView(answer.value.session), rotated: answer.value.rotated };
        const err: unknown = answer.reason;
        if (err instanceof DomainError) {
          if (err.code === 'session_not_found') guessing.record(request.caller.client);
          if (err.code === 'store_unavailable') unavailable = true;
          return { status: err.status, code: err.code, detail: err.message };
        }
        request.log.error({ err }, 'unhandled error in a batch item');
        return { status: 500, code: 'internal_error', detail: 'An unexpected error occurred.' };
      });
      if (unavailable) request.log.warn({ code: 'store_unavailable' }, 'store unavailable');
      return reply.code(200).send({ results });
    },
  );

  app.put(
    '/sessions/current/data',
    {
      preValidation: requireContentType('application/json'),
      schema: {
        operationId: 'replaceCurrentSessionData',
        summary: 'Replace the session data (compare-and-set)',
        description: 'Requires If-Match with the current version; answers 412 with the current version on mismatch.',
        tags: tag,
        security,
        headers: WriteHeaders,
        body: Type.Ref('SessionData'),
        response: { 200: ok('Session', 'Data replaced; version bumped.'), ...problemResponses(400, 401, 404, 412, 413, 415, 428, 429, 500, 503) },
      },
    },
    async (request, reply) => {
      const { 'session-token': token, 'if-match': ifMatch } = request.headers;
      return sendSession(request, reply, await service.replaceData(request.caller.namespace, token, request.body, parseIfMatch(ifMatch)));
    },
  );

  app.patch(
    '/sessions/current/data',
    {
      preValidation: requireContentType(MERGE_PATCH),
      schema: {
        operationId: 'patchCurrentSessionData',
        summary: 'Merge-patch the session data (RFC 7396)',
        description:
          'Applied atomically inside MariaDB: concurrent patches to different keys all survive. A null value removes a key. ' +
          'If-Match is honoured when given.',
        tags: tag,
        security,
        headers: WriteHeaders,
        body: Type.Ref('SessionData'),
        consumes: [MERGE_PATCH],
        response: { 200: ok('Session', 'Patch applied; version bumped.'), ...problemResponses(400, 401, 404, 412, 413, 415, 429, 500, 503) },
      },
    },
    async (request, reply) => {
      const { 'session-token': token, 'if-match': ifMatch } = request.headers;
      return sendSession(request, reply, await service.patchData(request.caller.namespace, token, request.body, parseIfMatch(ifMatch)));
    },
  );

  app.delete(
    '/sessions/current',
    {
      schema: {
        operationId: 'destroyCurrentSession',
        summary: 'Destroy the session (log out)',
        description: 'Idempotent: 204 whether or not the session was live. The token is dead afterwards.',
        tags: tag,
        security,
        headers: SessionTokenHeaders,
        response: { 204: { type: 'null', description: 'Destroyed (or already gone).', headers: rateLimitHeaders }, ...problemResponses(400, 401, 415, 429, 500, 503) },
      },
    },
    async (request, reply) => {
      await service.destroy(request.caller.namespace, request.headers['session-token']);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/sessions/current/rotate',
    {
      preValidation: emptyBodyIsObject,
      schema: {
        operationId: 'rotateCurrentSession',
        summary: 'Issue a new token for the session; the old one dies',
        description:
          'Defends against session fixation on login or privilege change. Data, subject, version and absolute expiry carry over; ' +
          'the new id starts a fresh idle period. One transaction. With `graceSeconds` (at most 60) the old token still reads and ' +
          'touches — answering with the new session — until the grace ends, for requests already in flight; it never writes, and ' +
          'DELETE with it ends its grace without touching the new session.',
        tags: tag,
        security,
        headers: SessionTokenHeaders,
        body: RotateBody,
        response: { 201: ok('IssuedSession', 'Rotated: use the new token from now on.'), ...problemResponses(400, 401, 404, 415, 429, 500, 503) },
      },
    },
    async (request, reply) => {
      const { graceSeconds } = request.body;
      return sendIssued(request, reply, await service.rotate(request.caller.namespace, request.headers['session-token'], graceSeconds));
    },
  );

  app.get(
    '/sessions/:id',
    {
      schema: {
        operationId: 'getSessionById',
        summary: 'Read a session by its public id',
        description: 'For admin and device pages: the same view as by token, without needing the token. Does not slide the idle expiry.',
        tags: tag,
        security,
        params: IdParams,
        response: { 200: ok('Session', 'The live session.'), ...problemResponses(400, 401, 404, 429, 500, 503) },
      },
    },
    async (request, reply) => sendSession(request, reply, await service.getById(request.caller.namespace, request.params.id)),
  );

  app.delete(
    '/sessions/:id',
    {
      schema: {
        operationId: 'revokeSessionById',
        summary: 'Revoke a session by its public id',
        description: 'Idempotent: 204 whether or not the session was live.',
        tags: tag,
        security,
        params: IdParams,
        response: { 204: { type: 'null', description: 'Revoked (or already gone).', headers: rateLimitHeaders }, ...problemResponses(400, 401, 415, 429, 500, 503) },
      },
    },
    async (request, reply) => {
      await service.destroyById(request.caller.namespace, request.params.id);
      return reply.code(204).send(null);
    },
  );
};

/** Before the schema check: a batch over its limit gets its own code, with the limit. */
async function refuseOversizedBatch(request: FastifyRequest, reply: FastifyReply) {
  const body: unknown = request.body;
  const tokens = typeof body === 'object' && body !== null && 'tokens' in body ? body.tokens : undefined;
  if (Array.isArray(tokens) && tokens.length > MAX_BATCH) {
    return sendProblem(reply, 400, 'batch_too_large', `One batch takes at most ${MAX_BATCH} tokens.`, { maxBatch: MAX_BATCH });
  }
}

function contentTypeOf(request: FastifyRequest): string {
  const [mediaType = ''] = (request.headers['content-type'] ?? '').split(';', 1);
  return mediaType.trim().toLowerCase();
}

/** Answers 415 before validation when the body is not of the one type the operation takes. */
function requireContentType(expected: string) {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    if (contentTypeOf(request) !== expected) {
      return sendProblem(reply, 415, 'unsupported_media_type', `This operation takes Content-Type: ${expected}.`);
    }
  };
}
