/** Free loopback ports for the throwaway servers. */
import net from 'node:net';

export const LOOPBACK = '127.0.0.1';

/** Asks the OS for a free loopback TCP port (bind to port 0, read it back, close). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: LOOPBACK, port: 0, exclusive: true }, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close((err) => (err ? reject(err) : port > 0 ? resolve(port) : reject(new Error('no port assigned'))));
    });
  });
}

/** True when nothing listens on (and nothing holds) the given loopback port right now. */
export async function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen({ host: LOOPBACK, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}
