import t from 'tap';
import { etagOf, parseIfMatch } from '../../src/service/session-service.js';

t.test('If-Match accepts *, one or several strong tags', async (t) => {
  t.same(parseIfMatch('*'), { any: true });
  t.same(parseIfMatch('"3"'), { any: false, versions: [3] });
  t.same(parseIfMatch('"3", "4"'), { any: false, versions: [3, 4] });
  t.same(parseIfMatch(etagOf(17)), { any: false, versions: [17] });
});

t.test('weak or non-version tags never match', async (t) => {
  t.same(parseIfMatch('W/"3"'), { any: false, versions: [] });
  t.same(parseIfMatch('"abc"'), { any: false, versions: [] });
  t.same(parseIfMatch('"0"'), { any: false, versions: [] });
});

t.test('malformed If-Match is a 400', async (t) => {
  for (const bad of ['3', '"3', 'W/3', '"3",,', '']) {
    t.throws(() => parseIfMatch(bad), { code: 'invalid_request', status: 400 }, JSON.stringify(bad));
  }
});
