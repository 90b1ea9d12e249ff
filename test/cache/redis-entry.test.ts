import t from 'tap';
import { randomBytes } from 'node:crypto';
import { decodeEntry, encodeEntry, sessionKeys } from '../../src/cache/redis-entry.js';
import { entryFields } from '../../src/cache/redis-gateway.js';
import { newRecord } from '../store/session-store-contract.js';

t.test('a session survives encode/decode exactly', async (t) => {
  const s = newRecord(new Date('2026-01-02T03:04:05.678Z'), { data: { a: [1, { b: null }], u: 'é' } });
  t.same(decodeEntry(s, encodeEntry(s)), s);
});

t.test('all keys of a session share one hash tag; sessions do not', async (t) => {
  const key = { namespace: 'shop', idHash: randomBytes(32) };
  const { entry, lease } = sessionKeys(key);
  const tag = (k: string) => /\{[^}]+\}/.exec(k)![0];
  t.equal(tag(entry), tag(lease));
  t.not(entry, lease);
  t.not(tag(sessionKeys({ namespace: 'shop', idHash: randomBytes(32) }).entry), tag(entry));
  t.not(tag(sessionKeys({ namespace: 'other', idHash: key.idHash }).entry), tag(entry), 'namespaces are part of the tag');
});

t.test("lookup's and touch's one-string reply splits back into the entry's fields, data with newlines escaped", async (t) => {
  const s = newRecord(new Date('2026-01-02T03:04:05.678Z'), { data: { text: 'line 1\nline 2', n: 1 } });
  const f = encodeEntry(s);
  const reply = [f.v, f.it, f.ax, f.ie, f.pe, f.ls, f.g, f.mk, f.d].join('\n');
  t.same(entryFields(reply), f);
  t.same(decodeEntry(s, entryFields(reply)), s);
  t.throws(() => entryFields('1\n2\n3'), /malformed/, 'a short reply is refused, not misread');
});

