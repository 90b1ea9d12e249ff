import type { FastifyTypeProvider } from 'fastify';
import { Type, type Static, type TSchema } from 'typebox';
import type { SessionData } from '../domain/session.js';
import { TOKEN_PATTERN } from '../domain/token.js';

/**
 * Route schemas: they validate input, make serialization fast, are the source of openapi.yaml,
 * and type the handlers (SchemaTypeProvider below).
 */

export const SessionMetadataSchema = Type.Object(
  {
    ip: Type.Optional(Type.String({ maxLength: 64, description: 'Client IP address as the app server saw it.' })),
    userAgent: Type.Optional(Type.String({ maxLength: 512, description: 'Browser user agent.' })),
    label: Type.Optional(Type.String({ maxLength: 128, description: 'Free text, for example a device name.' })),
  },
  { additionalProperties: false, $id: 'SessionMetadata', description: 'Shown in device lists; never used for decisions.' },
);

/**
 * Any JSON object. TypeBox infers `object` for an object schema without properties; its members
 * are JSON values of any kind, which is the domain's SessionData (a record of unknown values).
 */
export const SessionDataSchema = Type.Unsafe<SessionData>(
  Type.Object(
    {},
    {
      additionalProperties: true,
      $id: 'SessionData',
      description: 'Arbitrary JSON object owned by the app server. Size-capped (default 64 KiB as JSON); nests at most 31 levels of objects and arrays.',
      examples: [{ userId: 42, cart: ['sku-1'] }],
    },
  ),
);

export const SessionSchema = Type.Object(
  {
    id: Type.String({ description: 'Public id: base64url SHA-256 of the token. Safe to log and show.', examples: ['n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg'] }),
    subject: Type.Union([Type.String(), Type.Null()], { description: 'The user this session belongs to, if any.' }),
    data: Type.Ref('SessionData'),
    version: Type.Integer({ minimum: 1, description: 'Data version; also sent as the strong ETag `"<version>"`.' }),
    createdAt: Type.String({ format: 'date-time' }),
    lastSeenAt: Type.String({ format: 'date-time' }),
    expiresAt: Type.String({ format: 'date-time', description: 'When the session expires unless touched (never after absoluteExpiresAt).' }),
    absoluteExpiresAt: Type.String({ format: 'date-time', description: 'Hard end of the session; touch never moves it.' }),
    metadata: Type.Union([Type.Ref('SessionMetadata'), Type.Null()]),
  },
  { additionalProperties: false, $id: 'Session' },
);

export const IssuedSessionSchema = Type.Object(
  {
    token: Type.String({
      description:
        'The bearer secret for the browser cookie: 43 base64url characters made by sessiond, or the one given on create under a ' +
        'token. Returned only here; never stored.',
      examples: ['q3B1Zm9yZXZlci1hbmQtZXZlci1hbmQtZXZlci0xMjM'],
    }),
    session: Type.Ref('Session'),
  },
  { additionalProperties: false, $id: 'IssuedSession' },
);

export const SubjectSessionSchema = Type.Object(
  {
    id: Type.String({ description: 'Public id; pass it as `keep` to log out everywhere else.' }),
    createdAt: Type.String({ format: 'date-time' }),
    lastSeenAt: Type.String({
      format: 'date-time',
      description: 'Last activity as MariaDB knows it (touches are written behind: it may lag by the touch persist threshold).',
    }),
    expiresAt: Type.String({ format: 'date-time' }),
    absoluteExpiresAt: Type.String({ format: 'date-time' }),
    metadata: Type.Union([Type.Ref('SessionMetadata'), Type.Null()]),
  },
  { additionalProperties: false, $id: 'SubjectSession', description: 'A device entry: never a token, never session data.' },
);

export const SubjectSessionPageSchema = Type.Object(
  {
    sessions: Type.Array(Type.Ref('SubjectSession')),
    nextCursor: Type.Union([Type.String(), Type.Null()], { description: 'Pass as `cursor` for the next page; null on the last.' }),
  },
  { additionalProperties: false, $id: 'SubjectSessionPage' },
);

export const ProblemSchema = Type.Object(
  {
    type: Type.String({ description: 'Always "about:blank"; `code` is the machine-readable kind.' }),
    title: Type.String(),
    status: Type.Integer(),
    code: Type.String({
      description: 'Stable machine code.',
      enum: [
        'session_not_found',
        'version_mismatch',
        'precondition_required',
        'session_exists',
        'client_tokens_disabled',
        'payload_too_large',
        'invalid_request',
        'batch_too_large',
        'unsupported_media_type',
        'unauthorized',
        'rate_limited',
        'route_not_found',
        'store_unavailable',
        'internal_error',
      ],
    }),
    detail: Type.Optional(Type.String()),
    currentVersion: Type.Optional(Type.Integer({ description: 'With version_mismatch: the current version.' })),
    limitBytes: Type.Optional(Type.Integer({ description: 'With payload_too_large: the data size limit.' })),
    maxBatch: Type.Optional(Type.Integer({ description: 'With batch_too_large: the most sessions one batch call takes.' })),
    errors: Type.Optional(
      Type.Array(
        Type.Object(
          {
            in: Type.String({ description: 'Which part of the request: body, querystring, params or headers.' }),
            pointer: Type.String({ description: 'JSON pointer (RFC 6901) of the failing field within that part, e.g. /idleTimeout.' }),
            detail: Type.String({ description: 'What is wrong with it.' }),
          },
          { additionalProperties: false },
        ),
        { description: 'With invalid_request from a schema check: each failing field.' },
      ),
    ),
  },
  {
    additionalProperties: false,
    $id: 'Problem',
    examples: [
      {
        type: 'about:blank',
        title: 'Precondition Failed',
        status: 412,
        code: 'version_mismatch',
        detail: 'The session was changed since the version given in If-Match.',
        currentVersion: 3,
      },
    ],
  },
);

export const CreateSessionBody = Type.Object(
  {
    data: Type.Optional(Type.Ref('SessionData')),
    subject: Type.Optional(Type.String({ minLength: 1, maxLength: 255, description: 'User identifier, indexed.' })),
    idleTimeout: Type.Optional(Type.Integer({ minimum: 1, description: 'Seconds; capped by the configured maximum.' })),
    absoluteTimeout: Type.Optional(Type.Integer({ minimum: 1, description: 'Seconds; capped by the configured maximum.' })),
    metadata: Type.Optional(Type.Ref('SessionMetadata')),
  },
  { additionalProperties: false, examples: [{ data: { userId: 42 }, subject: 'user-42', idleTimeout: 1800, metadata: { ip: '203.0.113.7', userAgent: 'Mozilla/5.0', label: 'Firefox on Linux' } }] },
);

export const SessionTokenHeaders = Type.Object({
  'session-token': Type.String({ description: 'The session token (never put it in the URL).' }),
});

export const WriteHeaders = Type.Object({
  'session-token': Type.String({ description: 'The session token (never put it in the URL).' }),
  'if-match': Type.Optional(Type.String({ description: 'Strong ETag of the version the change is based on, e.g. "3", or *.' })),
});

export const CreateWithTokenHeaders = Type.Object({
  'session-token': Type.String({
    pattern: TOKEN_PATTERN,
    description: 'The token to create the session under: 32 to 256 characters of A-Z, a-z, 0-9, "_" and "-". Only its SHA-256 is stored.',
  }),
  'if-none-match': Type.Optional(Type.String({ description: 'Must be `*`: create only if no session holds (or held, and could still be alive under) this token.' })),
});

/** The most sessions one batch call takes (docs/design.md §3). */
export const MAX_BATCH = 100;

export const TouchBatchBody = Type.Object(
  {
    tokens: Type.Array(Type.String({ description: 'A session token.' }), {
      minItems: 1,
      maxItems: MAX_BATCH,
      description: `The session tokens, 1 to ${MAX_BATCH} (more: 400 \`batch_too_large\`). A token may appear more than once; each is answered.`,
    }),
  },
  { additionalProperties: false },
);

export const TouchBatchResultSchema = Type.Object(
  {
    status: Type.Integer({ description: 'What the single touch would have answered for this token: 200, 404, 500 or 503.' }),
    session: Type.Optional(Type.Ref('Session')),
    rotated: Type.Optional(
      Type.Boolean({ description: 'With 200: true when the token was rotated away and is in its grace (the single call\'s Session-Rotated: true).' }),
    ),
    code: Type.Optional(Type.String({ description: 'Otherwise: the problem code the single call would have answered (session_not_found, store_unavailable, internal_error).' })),
    detail: Type.Optional(Type.String()),
  },
  { additionalProperties: false, $id: 'TouchBatchResult' },
);

export const TouchBatchAnswerSchema = Type.Object(
  { results: Type.Array(Type.Ref('TouchBatchResult'), { description: 'One per token, in the order of `tokens`.' }) },
  { additionalProperties: false, $id: 'TouchBatchAnswer' },
);

export const IdParams = Type.Object({
  id: Type.String({ description: 'Public session id.' }),
});

export const SubjectParams = Type.Object({
  subject: Type.String({ minLength: 1, maxLength: 255, description: 'The subject (user id) given at create. Prefer opaque ids: paths reach access logs.' }),
});

export const RotateBody = Type.Object(
  {
    graceSeconds: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 60,
        description: 'For this long the old token still reads and touches (answering with the new session) but can never write.',
      }),
    ),
  },
  { additionalProperties: false },
);

/** The shared schemas by $id: what `Type.Ref('<$id>')` in a route schema stands for. */
export type SharedSchemas = {
  SessionMetadata: typeof SessionMetadataSchema;
  SessionData: typeof SessionDataSchema;
  Session: typeof SessionSchema;
  IssuedSession: typeof IssuedSessionSchema;
  SubjectSession: typeof SubjectSessionSchema;
  SubjectSessionPage: typeof SubjectSessionPageSchema;
  Problem: typeof ProblemSchema;
  TouchBatchResult: typeof TouchBatchResultSchema;
  TouchBatchAnswer: typeof TouchBatchAnswerSchema;
};

/**
 * TypeBox's type provider with the shared schemas in its context: a handler's request and reply
 * types are the Static<> of its route schema, references included (`Type.Ref('SessionData')` is
 * SessionData, where @fastify/type-provider-typebox, which resolves no references, says unknown).
 */
export interface SchemaTypeProvider extends FastifyTypeProvider {
  validator: this['schema'] extends TSchema ? Static<this['schema'], SharedSchemas> : unknown;
  serializer: this['schema'] extends TSchema ? Static<this['schema'], SharedSchemas> : unknown;
}

export const sharedSchemas = [
  SessionMetadataSchema,
  SessionDataSchema,
  SessionSchema,
  IssuedSessionSchema,
  SubjectSessionSchema,
  SubjectSessionPageSchema,
  ProblemSchema,
  TouchBatchResultSchema,
  TouchBatchAnswerSchema,
];

const problem = (description: string, headers?: Record<string, { type: string; description: string }>) => ({
  description,
  ...(headers === undefined ? {} : { headers }),
  content: { 'application/problem+json': { schema: Type.Ref('Problem') } },
});

/** Sent on every /v1 answer while the namespace has a rate limit. */
export const rateLimitHeaders = {
  'x-ratelimit-limit': { type: 'integer', description: "Requests the client may make per window (its namespace's policy)." },
  'x-ratelimit-remaining': { type: 'integer', description: 'Requests left in the current window.' },
  'x-ratelimit-reset': { type: 'integer', description: 'Seconds until the window ends.' },
};

/** Problem responses, reused across routes so openapi.yaml lists each one. */
export const problems = {
  400: problem('Invalid request (`invalid_request`).'),
  401: problem('Missing or unknown API key (`unauthorized`).'),
  403: problem('The namespace does not allow this (`client_tokens_disabled`: its policy `clientTokens` is off).'),
  404: problem('No live session for this token or id in your namespace (`session_not_found`).'),
  412: problem(
    'If-Match does not name the current version (`version_mismatch`); on create under a token, the token is live or was ' +
      'destroyed, revoked or rotated away before its absolute expiry (`session_exists`).',
  ),
  413: problem('Session data larger than the limit (`payload_too_large`).'),
  415: problem('Wrong content type for the body, also for a body an operation does not take (`unsupported_media_type`).'),
  428: problem('If-Match (writes) or If-None-Match (create under a token) is required (`precondition_required`).'),
  429: problem('The API client exceeded its rate limit (`rate_limited`).', {
    'retry-after': { type: 'integer', description: 'Seconds until the window ends.' },
    ...rateLimitHeaders,
  }),
  500: problem('Unexpected error (`internal_error`).'),
  503: problem('MariaDB unavailable (`store_unavailable`).', {
    'retry-after': { type: 'integer', description: 'Seconds to wait before retrying.' },
  }),
} as const;

/** A batch call's 400: the single call's, and a batch over its limit. */
export const batchProblem400 = problem('Invalid request (`invalid_request`), or more tokens than one batch takes (`batch_too_large`, with `maxBatch`).');

/** The problem responses a route can give, by status. */
export function problemResponses<K extends keyof typeof problems>(...codes: K[]): Pick<typeof problems, K> {
  return Object.fromEntries(codes.map((c) => [c, problems[c]])) as Pick<typeof problems, K>;
}
