import { timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ApiKeyEntry } from '../auth/api-keys.js';
import { sendProblem } from './problem.js';
import { sha256 } from '../domain/token.js';

export interface Caller {
  client: string;
  namespace: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller;
  }
}

interface KnownKey {
  digest: Buffer;
  caller: Caller;
}

/**
 * Adds fields to this request's log lines. Fastify already made the request its own child
 * logger: binding in place saves a logger per field set on the hot path.
 */
export function bindLog(request: FastifyRequest, bindings: Record<string, string>): void {
  const log = request.log as FastifyRequest['log'] & { setBindings?: (b: Record<string, string>) => void };
  if (typeof log.setBindings === 'function') log.setBindings(bindings);
}

const BEARER = /^Bearer ([\x21-\x7e]{1,512})$/;

/**
 * Resolves `Authorization: Bearer <key>` against the configured key hashes. Every entry is
 * compared, in constant time, so timing says nothing about which hash came close.
 */
export class ApiKeyAuthenticator {
  private readonly keys: KnownKey[];

  constructor(entries: ApiKeyEntry[]) {
    this.keys = entries.map((e) => ({ digest: Buffer.from(e.sha256, 'hex'), caller: { client: e.client, namespace: e.namespace } }));
  }

  identify(header: string | undefined): Caller | null {
    if (header === undefined) return null;
    const match = BEARER.exec(header);
    if (match === null) return null;
    const digest = sha256(match[1]!);
    let found: Caller | null = null;
    for (const key of this.keys) {
      if (timingSafeEqual(digest, key.digest)) found = key.caller;
    }
    return found;
  }

  /** An onRequest hook for the /v1 routes (callback-style: no promise per request). */
  hook() {
    return (request: FastifyRequest, reply: FastifyReply, done: () => void) => {
      const caller = this.identify(request.headers.authorization);
      if (caller === null) {
        const presented = request.headers.authorization !== undefined;
        reply.header(
          'www-authenticate',
          presented ? 'Bearer realm="sessiond", error="invalid_token"' : 'Bearer realm="sessiond"',
        );
        // Answered here: the request goes no further (done is not called).
        sendProblem(reply, 401, 'unauthorized', 'A valid API key is required: Authorization: Bearer <key>.');
        return;
      }
      request.caller = caller;
      bindLog(request, { client: caller.client });
      done();
    };
  }
}
