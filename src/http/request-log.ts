import { LogController, type FastifyReply, type FastifyRequest } from 'fastify';

/** Per-request log lines at info: every answer, only 5xx answers, or none (debug shows all). */
export type RequestLogging = 'all' | 'errors' | 'none';

/**
 * Fastify's per-request log lines, sized for a service called on nearly every request of its
 * callers. Fastify writes two info lines per request ("incoming request" and "request
 * completed"); at ~10 k requests/s that was a quarter of the service's CPU (docs/benchmarks.md)
 * and a flood for the log pipeline. Here:
 * - "incoming request" is a debug line;
 * - "request completed" is one info line per request (`all`), per 5xx answer (`errors`, the
 *   default), or never (`none`); otherwise a debug line. It carries method, URL, status and
 *   response time, with the request's bindings (reqId, client, sessionId — never a token).
 * Errors Fastify handles itself ("request errored", 5xx from the error handler) are logged as
 * before whatever the setting.
 */
export class RequestLogController extends LogController {
  constructor(private readonly mode: RequestLogging) {
    super();
  }

  override incomingRequest(request: FastifyRequest): void {
    request.log.debug({ req: request }, 'incoming request');
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) {
      reply.log.error({ req: request, res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored');
      return;
    }
    const info = this.mode === 'all' || (this.mode === 'errors' && reply.statusCode >= 500);
    const line = { req: request, res: reply, responseTime: reply.elapsedTime };
    if (info) reply.log.info(line, 'request completed');
    else reply.log.debug(line, 'request completed');
  }
}
