import t from 'tap';
import { etagOf, parseIfMatch, parseIfNoneMatch } from '../../src/http/preconditions.js';

t.test('If-Match accepts *, one or several strong tags', async (t) => {
  t.same(parseIfMatch('*'), { any: true });
  t.same(parseIfMatch(' * '), { any: true });
  t.same(parseIfMatch('"3"'), { any: false, versions: [3] });
  t.same(parseIfMatch('"3", "4"'), { any: false, versions: [3, 4] });
  t.same(parseIfMatch('"3","4"'), { any: false, versions: [3, 4] });
  t.same(parseIfMatch(etagOf(17)), { any: false, versions: [17] }, 'the ETag sessiond sends is the If-Match it takes');
});

t.test('an absent If-Match is no precondition (the service decides whether one is required)', async (t) => {
  t.equal(parseIfMatch(undefined), undefined);
});

t.test('weak or non-version tags never match', async (t) => {
  t.same(parseIfMatch('W/"3"'), { any: false, versions: [] });
  t.same(parseIfMatch('W/"3", "4"'), { any: false, versions: [4] }, 'a weak tag in a list is skipped');
  t.same(parseIfMatch('"abc"'), { any: false, versions: [] });
  t.same(parseIfMatch('"0"'), { any: false, versions: [] });
  t.same(parseIfMatch('"03"'), { any: false, versions: [] }, 'a version is written without leading zeros');
  t.same(parseIfMatch('"12345678901234567"'), { any: false, versions: [] }, 'beyond 16 digits no version can match');
});

t.test('malformed If-Match is a 400', async (t) => {
  for (const bad of ['3', '"3', 'W/3', '"3",,', '', '*, "3"', '"3" "4"']) {
    t.throws(() => parseIfMatch(bad), { code: 'invalid_request', status: 400 }, JSON.stringify(bad));
  }
});

t.test('If-None-Match on create under a token: * or nothing', async (t) => {
  t.equal(parseIfNoneMatch('*'), true);
  t.equal(parseIfNoneMatch(' * '), true);
  t.equal(parseIfNoneMatch(undefined), false, 'absent: the service answers 428');
  for (const bad of ['"1"', 'W/"1"', '', '*, "1"']) {
    t.throws(() => parseIfNoneMatch(bad), { code: 'invalid_request', status: 400 }, JSON.stringify(bad));
  }
});

t.test('ETags are strong and name the version', async (t) => {
  t.equal(etagOf(1), '"1"');
  t.equal(etagOf(42), '"42"');
});
