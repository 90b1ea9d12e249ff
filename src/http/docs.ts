import type { FastifyInstance } from 'fastify';
import swaggerUi from '@fastify/swagger-ui';

/** Where the API reference page lives; the document is at `${DOCS_PREFIX}/json` and `/yaml`. */
export const DOCS_PREFIX = '/docs';

/**
 * The page may only load what this service serves: Swagger UI's bundled scripts and styles,
 * inline SVG/data images, and fetches (the document, "Try it out") to the same origin.
 * Swagger UI sets inline style attributes, hence 'unsafe-inline' for styles only.
 */
const CONTENT_SECURITY_POLICY = {
  'default-src': ["'self'"],
  'script-src': ["'self'"],
  'style-src': ["'self'", "'unsafe-inline'"],
  'img-src': ["'self'", 'data:'],
  'font-src': ["'self'", 'data:'],
  'connect-src': ["'self'"],
  'object-src': ["'none'"],
  'base-uri': ["'self'"],
  'form-action': ["'self'"],
  'frame-ancestors': ["'none'"],
};

/**
 * The API reference page: Swagger UI at /docs, rendered from the same document as openapi.yaml
 * (app.swagger()). Enabled by DOCS_ENABLED (default true); src/app.ts decides.
 *
 * - Outside /v1, so neither the API keys nor the rate limit apply; every route it adds is
 *   `hide: true`, so the page is not part of the OpenAPI document it shows.
 * - Nothing remote: Swagger UI's assets are served from the installed package (read only, so a
 *   read-only root filesystem is fine), the validator badge is off, the top bar with its
 *   "load any URL" box is not shown, and the CSP above lets the browser connect to this origin only.
 * - "Try it out" calls this same origin: the document served here lists a relative server `/`
 *   first (the page's own origin), followed by the servers of openapi.yaml. Authorize with an API
 *   key (the bearer scheme `apiKey`); it stays in the page, not in local storage.
 */
export async function registerDocs(app: FastifyInstance): Promise<void> {
  await app.register(swaggerUi, {
    routePrefix: DOCS_PREFIX,
    theme: { title: 'sessiond API reference' },
    validatorUrl: false,
    staticCSP: CONTENT_SECURITY_POLICY,
    transformSpecification: (document) => ({
      ...document,
      servers: [
        { url: '/', description: 'This server (the origin serving this page)' },
        ...((document.servers as Array<{ url: string }> | undefined) ?? []).filter((s) => s.url !== '/'),
      ],
    }),
    uiConfig: {
      layout: 'BaseLayout',
      deepLinking: true,
      docExpansion: 'list',
      displayOperationId: true,
      displayRequestDuration: true,
      defaultModelsExpandDepth: 0,
      persistAuthorization: false,
      tryItOutEnabled: false,
      filter: false,
    },
  });
}
