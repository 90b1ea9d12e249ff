import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { DomainError, StoreUnavailableError, type ProblemCode } from '../domain/errors.js';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** Sends an RFC 9457 problem document with a stable code. */
export function sendProblem(
  reply: FastifyReply,
  status: number,
  code: ProblemCode,
  detail: string,
  extra: Record<string, unknown> = {},
): FastifyReply {
  return reply
    .code(status)
    .type(PROBLEM_CONTENT_TYPE)
    .send({ type: 'about:blank', title: STATUS_CODES[status] ?? 'Error', status, code, detail, ...extra });
}

/** One failing field of a request: where it is (`in`), its JSON pointer there, and what is wrong. */
export interface FieldError {
  in: string;
  pointer: string;
  detail: string;
}

/** The JSON pointer of a schema error: a missing or unexpected member is named, not its parent. */
function pointerOf(v: { instancePath?: string; params?: Record<string, unknown> }): string {
  const member = v.params?.missingProperty ?? v.params?.additionalProperty;
  const escape = (name: string) => name.replace(/~/g, '~0').replace(/\//g, '~1');
  return `${v.instancePath ?? ''}${typeof member === 'string' ? `/${escape(member)}` : ''}`;
}

/** Fastify's own client errors, mapped to our codes. Their messages are safe to show (schema rules, never values). */
function fastifyClientProblem(err: FastifyError): { status: number; code: ProblemCode; detail: string; extra?: Record<string, unknown> } | null {
  if (err.validation !== undefined) {
    const where = err.validationContext ?? 'request';
    const errors: FieldError[] = err.validation.map((v) => ({ in: where, pointer: pointerOf(v), detail: v.message ?? 'is invalid' }));
    const first = errors[0];
    const detail = first ? `${where}${first.pointer} ${first.detail}` : `${where} is invalid`;
    return { status: 400, code: 'invalid_request', detail, extra: { errors } };
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, code: 'payload_too_large', detail: 'The request body is too large.' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return err.statusCode === 415
        ? { status: 415, code: 'unsupported_media_type', detail: 'Unsupported Content-Type for this operation.' }
        : { status: 400, code: 'invalid_request', detail: err.message };
    default:
      break;
  }
  const status = err.statusCode ?? 500;
  if (status >= 400 && status < 500) {
    if (status === 415) return { status, code: 'unsupported_media_type', detail: 'Unsupported Content-Type for this operation.' };
    // Malformed JSON, empty bodies with a JSON content type, bad headers and the like.
    return { status: 400, code: 'invalid_request', detail: err instanceof SyntaxError ? 'The body is not valid JSON.' : err.message };
  }
  return null;
}

/** The one error handler: domain errors and client errors pass through; anything else is a logged 500. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    if (err instanceof DomainError) {
      if (err instanceof StoreUnavailableError) {
        // Which limit or failure it was, never a value: see StoreUnavailableReason.
        request.log.warn(
          { code: err.code, reason: err.reason, stage: err.stage, driverCode: err.driverCode, redis: err.redis, pool: err.pool },
          'store unavailable',
        );
        reply.header('retry-after', String(err.retryAfterSeconds));
      }
      return sendProblem(reply, err.status, err.code, err.message, err.extra);
    }
    const client = fastifyClientProblem(err);
    if (client !== null) return sendProblem(reply, client.status, client.code, client.detail, client.extra);
    request.log.error({ err }, 'unhandled error');
    return sendProblem(reply, 500, 'internal_error', 'An unexpected error occurred.');
  });
}

/**
 * 404 for every unknown route, answered in the not-found scope's onRequest hook: before Fastify
 * looks at the body or its Content-Type, so a malformed, oversized or missing one (QUERY without
 * a Content-Type) cannot turn the 404 into a 400, 413 or 415. The scope has no routes of its own:
 * its hook runs for unknown routes only. Register it last: the scope inherits the hooks the root
 * has by then (request id, metrics).
 */
export async function registerNotFound(app: FastifyInstance): Promise<void> {
  const notFound = (request: FastifyRequest, reply: FastifyReply) =>
    sendProblem(reply, 404, 'route_not_found', `No route ${request.method} ${request.url.split('?')[0]}.`);
  await app.register(async (scope) => {
    scope.addHook('onRequest', async (request, reply) => notFound(request, reply));
    scope.setNotFoundHandler(notFound);
  });
}
