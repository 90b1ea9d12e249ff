import fp from 'fastify-plugin';
import type { SessionStore } from '../store/session-store.js';
import { Sweeper, type SweeperOptions } from '../sweeper/sweeper.js';

declare module 'fastify' {
  interface FastifyInstance {
    sweeper: Sweeper;
  }
}

export interface SweeperPluginOptions extends SweeperOptions {
  store: SessionStore;
  /** Start the background timer once the server is ready (tests call runOnce() instead). */
  autoStart: boolean;
}

/** Runs the sweeper in the background and stops it before the pool closes. */
export const sweeperPlugin = fp<SweeperPluginOptions>(
  async (app, { store, autoStart, ...options }) => {
    const sweeper = new Sweeper(app.database, store, options, app.log.child({ component: 'sweeper' }) as never);
    app.decorate('sweeper', sweeper);
    if (autoStart) app.addHook('onReady', async () => sweeper.start());
    // onClose hooks run in reverse order of registration: this one runs before the pool closes.
    app.addHook('onClose', async () => sweeper.stop());
  },
  { name: 'sweeper', dependencies: ['database'] },
);
