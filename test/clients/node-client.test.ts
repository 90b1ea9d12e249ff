import t from 'tap';
import { createClient } from '../../clients/node/dist/index.js';
import { appToken as token, clientService, rejection } from './sessiond-service.js';

/**
 * clients/node (package sessiond-client) against a real sessiond: typed calls, and problem
 * answers as SessiondError carrying the service's code (never the token).
 */

t.test('against the service', async (t) => {
  const svc = await clientService(t);
  const client = createClient({ url: svc.url, apiKey: svc.apiKey });
  t.teardown(() => client.close());

  t.test('the whole lifecycle, typed', async (t) => {
    const issued = await client.create({ data: { cart: [] }, subject: 'user-7' });
    t.match(issued.token, /^[A-Za-z0-9_-]{43}$/);
    t.same(issued.session.data, { cart: [] });
    const read = await client.read(issued.token);
    t.equal(read?.id, issued.session.id);
    const touched = await client.touch(issued.token);
    t.equal(touched?.version, 1, 'touch answers the session and keeps its version');
    const put = await client.replaceData(issued.token, { cart: ['sku-1'] }, 1);
    t.equal(put.version, 2);

    const stale = await rejection(t, client.replaceData(issued.token, { cart: [] }, 1));
    t.equal(stale.code, 'version_mismatch');
    t.equal(stale.status, 412);
    t.equal(stale.currentVersion, 2, 'the problem names the current version');
    t.notMatch(stale.message, issued.token, 'the message never holds the token');

    const patched = await client.patchData(issued.token, { coupon: 'WELCOME' });
    t.same(patched.data, { cart: ['sku-1'], coupon: 'WELCOME' });
    const page = await client.listSubjectSessions('user-7');
    t.same(page.sessions.map((s) => s.id), [issued.session.id]);

    const rotated = await client.rotate(issued.token);
    t.equal(await client.read(issued.token), null, 'the old token is dead');
    await client.destroy(rotated.token);
    t.equal(await client.touch(rotated.token), null, 'an unknown session reads as null');
    await client.destroy(rotated.token); // idempotent
  });

  t.test('sessions under tokens the app chose: created once, never overwritten', async (t) => {
    const mine = token();
    const issued = await client.createWithToken(mine, { data: { n: 1 }, idleTimeout: 600 });
    t.equal(issued.token, mine);
    t.same((await client.read(mine))?.data, { n: 1 });
    const again = await rejection(t, client.createWithToken(mine, { data: { n: 2 } }));
    t.equal(again.code, 'session_exists');
    t.equal(again.status, 412);
    t.same((await client.read(mine))?.data, { n: 1 }, 'the first session stands');
    await client.destroy(mine);
    const destroyed = await rejection(t, client.createWithToken(mine, { data: { n: 3 } }));
    t.equal(destroyed.code, 'session_exists', 'a destroyed token is never created again');
    const short = await rejection(t, client.createWithToken('too-short', {}));
    t.equal(short.code, 'invalid_request');
  });

  t.test('a wrong API key is unauthorized', async (t) => {
    const stranger = createClient({ url: svc.url, apiKey: 'not-a-key' });
    t.teardown(() => stranger.close());
    const err = await rejection(t, stranger.read(token()));
    t.equal(err.code, 'unauthorized');
    t.equal(err.status, 401);
    t.notMatch(err.message, 'not-a-key');
  });
});

