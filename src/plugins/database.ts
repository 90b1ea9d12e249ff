import fp from 'fastify-plugin';
import { Database, type DatabaseOptions } from '../db/database.js';

declare module 'fastify' {
  interface FastifyInstance {
    database: Database;
  }
}

/** The MariaDB pool, shared by the app and closed with it. */
export const databasePlugin = fp<DatabaseOptions>(
  async (app, options) => {
    const database = new Database(options);
    app.decorate('database', database);
    app.addHook('onClose', async () => {
      await database.close();
    });
  },
  { name: 'database' },
);
