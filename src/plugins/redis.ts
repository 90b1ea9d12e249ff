import fp from 'fastify-plugin';
import { RedisGateway, type RedisGatewayOptions } from '../cache/redis-gateway.js';

declare module 'fastify' {
  interface FastifyInstance {
    redis: RedisGateway | undefined;
  }
}

/** The Redis client (single node or cluster) behind its breaker; closed with the app. */
export const redisPlugin = fp<{ options: RedisGatewayOptions | undefined }>(
  async (app, { options }) => {
    if (options === undefined) {
      app.decorate('redis', undefined);
      return;
    }
    const gateway = new RedisGateway(options, app.log.child({ component: 'redis' }) as never);
    app.decorate('redis', gateway);
    app.addHook('onClose', async () => gateway.close());
  },
  { name: 'redis' },
);
