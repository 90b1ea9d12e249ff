import fp from 'fastify-plugin';
import { Database, type DatabaseOptions } from '../db/database.js';
import type { FailoverEvent } from '../db/node-pools.js';

declare module 'fastify' {
  interface FastifyInstance {
    database: Database;
  }
}

interface DriverError {
  message?: string;
  code?: string;
  cause?: DriverError;
}

/** What a failed connection says: the message and code of the error and of its cause (a TLS or login error), nothing else. */
function connectionFailure(err: DriverError): DriverError {
  const { message, code, cause } = err;
  return cause === undefined ? { message, code } : { message, code, cause: { message: cause.message, code: cause.code } };
}

/** The MariaDB pool, shared by the app and closed with it. */
export const databasePlugin = fp<DatabaseOptions>(
  async (app, options) => {
    const database = new Database(options);
    app.decorate('database', database);
    // The pool reports connections it could not open (refused, a certificate or a login it does
    // not accept) here; requests only see a 503. One line every few seconds is enough, and one
    // at once when the reason changes (a timeout, then the login refused).
    let lastLog = 0;
    let lastReason = '';
    database.pool.on('error', (err: DriverError) => {
      const now = Date.now();
      const failure = connectionFailure(err);
      const reason = `${failure.code} ${failure.cause?.code}`;
      if (now - lastLog < 5000 && reason === lastReason) return;
      lastLog = now;
      lastReason = reason;
      // Not under `err`: pino's error serializer would keep only the outer message.
      app.log.warn({ failure }, 'mariadb connection failed');
    });
    // Galera (several hosts in DATABASE_URL): which node serves, and why it changed.
    database.pool.on('failover', (event: FailoverEvent) => app.log.warn(event, 'mariadb node down, failing over'));
    database.pool.on('recovered', (event: { node: string }) => app.log.info(event, 'mariadb node serves again'));
    app.addHook('onClose', async () => {
      await database.close();
    });
  },
  { name: 'database' },
);
