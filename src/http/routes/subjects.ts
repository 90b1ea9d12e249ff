import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import { expiresAt, type SessionRecord } from '../../domain/session.js';
import { publicIdOf } from '../../domain/token.js';
import type { SessionService } from '../../service/session-service.js';
import { problemResponses, rateLimitHeaders, type SchemaTypeProvider, SubjectParams } from '../schemas.js';

export interface SubjectRoutesOptions {
  service: SessionService;
}

const tags = ['subjects'];
const security = [{ apiKey: [] }];

/** A device entry: what a "your devices" page shows. Never a token, never data. */
function subjectSessionView(s: SessionRecord) {
  return {
    id: publicIdOf(s.idHash),
    createdAt: s.createdAt.toISOString(),
    lastSeenAt: s.lastSeenAt.toISOString(),
    expiresAt: expiresAt(s).toISOString(),
    absoluteExpiresAt: s.absoluteExpiresAt.toISOString(),
    metadata: s.metadata,
  };
}

/**
 * Query strings are text; the schema says integer. Coerce just the named parameters (global
 * coercion would also let "60" pass for a number in JSON bodies, which stay strict).
 */
function integerQuery(...names: string[]) {
  return async (request: FastifyRequest) => {
    const query: unknown = request.query;
    if (typeof query !== 'object' || query === null) return;
    for (const name of names) {
      const value: unknown = Reflect.get(query, name);
      if (typeof value === 'string' && /^-?\d{1,9}$/.test(value)) Reflect.set(query, name, Number(value));
    }
  };
}

export const subjectRoutes: FastifyPluginAsync<SubjectRoutesOptions> = async (fastify, { service }) => {
  const app = fastify.withTypeProvider<SchemaTypeProvider>();

  app.get(
    '/subjects/:subject/sessions',
    {
      preValidation: integerQuery('limit'),
      schema: {
        operationId: 'listSubjectSessions',
        summary: "List a subject's live sessions (its devices)",
        description: 'Newest activity first, cursor-paginated. Public ids and metadata only: never a token or session data.',
        tags,
        security,
        params: SubjectParams,
        querystring: Type.Object(
          {
            limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Page size.' })),
            cursor: Type.Optional(Type.String({ maxLength: 200, description: '`nextCursor` of the previous page.' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: { description: 'One page of sessions.', headers: rateLimitHeaders, ...Type.Ref('SubjectSessionPage') }, ...problemResponses(400, 401, 429, 500, 503) },
      },
    },
    async (request) => {
      const { limit = 20, cursor } = request.query;
      const page = await service.listSubject(request.caller.namespace, request.params.subject, limit, cursor);
      return { sessions: page.sessions.map(subjectSessionView), nextCursor: page.nextCursor };
    },
  );

  app.delete(
    '/subjects/:subject/sessions',
    {
      schema: {
        operationId: 'revokeSubjectSessions',
        summary: "Log out everywhere: revoke all of a subject's sessions",
        description:
          "At once, whatever their number: one mark revokes them all (but `keep`, typically the caller's current session, " +
          'while it is live), and none of them is readable, writable or touchable from any replica once this answers. ' +
          'The rows are revoked behind it, in batches; the answer waits only for the mark.',
        tags,
        security,
        params: SubjectParams,
        querystring: Type.Object(
          { keep: Type.Optional(Type.String({ description: 'Public id of a session to leave alive.' })) },
          { additionalProperties: false },
        ),
        response: {
          200: {
            description: 'How many live sessions were revoked.',
            headers: rateLimitHeaders,
            ...Type.Object({ revoked: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
          },
          ...problemResponses(400, 401, 415, 429, 500, 503),
        },
      },
    },
    async (request) => ({
      revoked: await service.revokeSubject(request.caller.namespace, request.params.subject, request.query.keep),
    }),
  );
};
