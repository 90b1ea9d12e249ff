import t from 'tap';
import { auth, KEY_A, twoReplicas } from '../helpers/app.js';

// Two app instances on one MariaDB and one Redis: two replicas of the service.
const { one, two } = await twoReplicas(t);

const create = async (subject: string) =>
  (
    await one!.inject({
      method: 'POST',
      url: '/v1/sessions',
      headers: { ...auth(KEY_A), 'content-type': 'application/json' },
      payload: JSON.stringify({ subject }),
    })
  ).json() as { token: string; session: { id: string } };
const readOn = (app: typeof one, token: string) =>
  app!.inject({ method: 'GET', url: '/v1/sessions/current', headers: { ...auth(KEY_A), 'session-token': token } });

t.test('revoke-all on one replica: the others are 404 at once on the second, the kept one lives', async (t) => {
  const made = [await create('erin'), await create('erin'), await create('erin')];
  for (const m of made) {
    t.equal((await readOn(two, m.token)).statusCode, 200, 'warm in the cache through the second replica');
  }
  const res = await one!.inject({ method: 'DELETE', url: `/v1/subjects/erin/sessions?keep=${made[0]!.session.id}`, headers: auth(KEY_A) });
  t.same(res.json(), { revoked: 2 });
  t.equal((await readOn(two, made[0]!.token)).statusCode, 200);
  t.equal((await readOn(two, made[1]!.token)).statusCode, 404);
  t.equal((await readOn(two, made[2]!.token)).statusCode, 404);
});

t.test('a destroy on one replica is 404 at once on the other', async (t) => {
  const s = await create('frank');
  t.equal((await readOn(two, s.token)).statusCode, 200);
  t.equal((await one!.inject({ method: 'DELETE', url: '/v1/sessions/current', headers: { ...auth(KEY_A), 'session-token': s.token } })).statusCode, 204);
  t.equal((await readOn(two, s.token)).statusCode, 404);
});
