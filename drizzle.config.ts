import { readFileSync } from 'node:fs';
import { defineConfig } from 'drizzle-kit';

// Only DATABASE_URL (and, for TLS, the DATABASE_TLS variables) is read here, so
// `DATABASE_URL=… npx drizzle-kit migrate` runs from the same image as the service with nothing
// else configured. `generate` needs no database at all. The service validates the same variables
// (src/config/config.ts) with messages naming each; this file stays self-contained because the
// migrate image carries only it and the schema.
const url = new URL((process.env.DATABASE_URL ?? 'mysql://user:password@127.0.0.1:3306/sessiond').trim());
const set = (value: string | undefined): string | undefined => value?.trim() || undefined;
const pem = (file: string | undefined): string | undefined => (set(file) === undefined ? undefined : readFileSync(set(file)!, 'utf8'));
const files = {
  ca: pem(process.env.DATABASE_TLS_CA_FILE),
  cert: pem(process.env.DATABASE_TLS_CERT_FILE),
  key: pem(process.env.DATABASE_TLS_KEY_FILE),
};
const tlsFlag = set(process.env.DATABASE_TLS);
const tls = tlsFlag === undefined ? Object.values(files).some((f) => f !== undefined) : /^(true|1|yes|on)$/i.test(tlsFlag);

export default defineConfig({
  dialect: 'mysql',
  schema: './src/db/schema.ts',
  out: './drizzle',
  dbCredentials: {
    host: url.hostname,
    port: url.port === '' ? 3306 : Number(url.port),
    user: decodeURIComponent(url.username),
    // drizzle-kit refuses an empty password; a user without one has none in the URL.
    ...(url.password === '' ? {} : { password: decodeURIComponent(url.password) }),
    database: decodeURIComponent(url.pathname.slice(1)),
    // As in the service: the server's certificate is always verified.
    ...(tls ? { ssl: { ...files, rejectUnauthorized: true } } : {}),
  },
  migrations: { table: '__drizzle_migrations' },
  strict: true,
  verbose: false,
});
