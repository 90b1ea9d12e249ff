import t from 'tap';
import { createHash } from 'node:crypto';
import { generateToken, hashToken, isTokenShaped, parsePublicId, publicIdOf } from '../../src/domain/token.js';

t.test('tokens are 32 random bytes in base64url', async (t) => {
  const tokens = new Set(Array.from({ length: 1000 }, generateToken));
  t.equal(tokens.size, 1000, 'no repeats');
  for (const token of tokens) {
    t.match(token, /^[A-Za-z0-9_-]{43}$/);
    t.equal(Buffer.from(token, 'base64url').length, 32);
  }
});

t.test('only token-shaped strings pass the shape check: 32 to 256 base64url characters', async (t) => {
  t.ok(isTokenShaped(generateToken()));
  for (const good of ['a'.repeat(32), 'A-_9'.repeat(64), 'x'.repeat(44)]) t.ok(isTokenShaped(good), `${good.length} characters`);
  for (const bad of ['', 'short', 'a'.repeat(31), 'a'.repeat(257), `${'a'.repeat(42)}=`, `${'a'.repeat(42)}+`, `${'a'.repeat(42)}/`, `${'a'.repeat(42)}.`]) {
    t.notOk(isTokenShaped(bad), JSON.stringify(bad));
  }
});

t.test('the stored hash is SHA-256 of the token and the public id its base64url', async (t) => {
  const token = generateToken();
  const hash = hashToken(token);
  t.ok(hash.equals(createHash('sha256').update(token).digest()));
  const id = publicIdOf(hash);
  t.not(id, token);
  t.ok(parsePublicId(id)?.equals(hash), 'public ids round-trip');
});

t.test('public ids in non-canonical or wrong forms are rejected', async (t) => {
  const id = publicIdOf(hashToken(generateToken()));
  const last = id.at(-1)!;
  // The last base64url character carries 4 spare bits; flipping one must not alias the same id.
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const alias = id.slice(0, -1) + alphabet[alphabet.indexOf(last) ^ 1];
  t.equal(parsePublicId(alias), null);
  t.equal(parsePublicId('x'), null);
  t.equal(parsePublicId(`${id}A`), null);
});
