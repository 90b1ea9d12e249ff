import { defineConfig } from 'drizzle-kit';

// Only DATABASE_URL is needed here, so `DATABASE_URL=… npx drizzle-kit migrate` runs from the
// same image as the service with nothing else configured. `generate` needs no database at all.
const url = process.env.DATABASE_URL ?? 'mysql://user:password@127.0.0.1:3306/sessiond';

export default defineConfig({
  dialect: 'mysql',
  schema: './src/db/schema.ts',
  out: './drizzle',
  dbCredentials: { url: url.replace(/^mariadb:/, 'mysql:') },
  migrations: { table: '__drizzle_migrations' },
  strict: true,
  verbose: false,
});
