import type { FastifyInstance } from 'fastify';

/** The API reference page. Placeholder: filled in by the docs work. */
export async function registerDocs(_app: FastifyInstance): Promise<void> {}
