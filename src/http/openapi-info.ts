/** The fixed parts of openapi.yaml; paths and schemas come from the route schemas. */
export const openapiInfo = {
  openapi: '3.1.0',
  info: {
    title: 'sessiond',
    version: '1.0.0',
    description:
      'Server-side sessions for app servers in any language. Tokens are bearer secrets: send them in the ' +
      '`Session-Token` header, never in a URL. Errors are RFC 9457 `application/problem+json` with a stable `code`.',
  },
  servers: [{ url: 'http://localhost:8080' }],
  tags: [
    { name: 'sessions', description: 'Create, read, touch, update, rotate and destroy sessions.' },
    { name: 'subjects', description: "A user's sessions: list their devices, log out everywhere." },
  ],
  components: {
    securitySchemes: {
      apiKey: {
        type: 'http' as const,
        scheme: 'bearer',
        description: 'Per-client API key (`Authorization: Bearer <key>`); it fixes the namespace.',
      },
    },
  },
};
