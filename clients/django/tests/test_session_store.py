"""The engine against a real sessiond: Django's session-store contract, then what sessiond adds.

`SessionStoreContract` holds the expectations of Django 3.2's own SessionTestsMixin (same test
names, so a failure points at the matching Django test), run once as configured and once more
under USE_TZ=True; `test_load_overlong_key` is the one Django runs for its cache engines.
"""
import base64
import string
from datetime import datetime, timedelta, timezone as utc_zone
from unittest import mock

from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.test import SimpleTestCase, override_settings
from django.utils import timezone

from sessiond_django import engine
from sessiond_django.client import SessiondClient, get_client, public_id

PICKLE = "django.contrib.sessions.serializers.PickleSerializer"


class CallLog:
    """Records every sessiond call (method and path) made inside the block."""

    def __enter__(self):
        self.calls = []
        original = SessiondClient.request

        def recording(client, method, path, **kwargs):
            self.calls.append("%s %s" % (method, path))
            return original(client, method, path, **kwargs)

        self._patch = mock.patch.object(SessiondClient, "request", recording)
        self._patch.start()
        return self

    def __exit__(self, *exc):
        self._patch.stop()


class SessionStoreContract:
    backend = engine.SessionStore

    def setUp(self):
        self.session = self.backend()

    def tearDown(self):
        self.session.delete()

    def test_new_session(self):
        self.assertIs(self.session.modified, False)
        self.assertIs(self.session.accessed, False)

    def test_get_empty(self):
        self.assertIsNone(self.session.get("cat"))

    def test_store(self):
        self.session["cat"] = "dog"
        self.assertIs(self.session.modified, True)
        self.assertEqual(self.session.pop("cat"), "dog")

    def test_pop(self):
        self.session["some key"] = "exists"
        self.session.accessed = False
        self.session.modified = False
        self.assertEqual(self.session.pop("some key"), "exists")
        self.assertIs(self.session.accessed, True)
        self.assertIs(self.session.modified, True)
        self.assertIsNone(self.session.get("some key"))

    def test_pop_default(self):
        self.assertEqual(self.session.pop("some key", "does not exist"), "does not exist")
        self.assertIs(self.session.accessed, True)
        self.assertIs(self.session.modified, False)

    def test_pop_default_named_argument(self):
        self.assertEqual(self.session.pop("some key", default="does not exist"), "does not exist")
        self.assertIs(self.session.accessed, True)
        self.assertIs(self.session.modified, False)

    def test_pop_no_default_keyerror_raised(self):
        with self.assertRaises(KeyError):
            self.session.pop("some key")

    def test_setdefault(self):
        self.assertEqual(self.session.setdefault("foo", "bar"), "bar")
        self.assertEqual(self.session.setdefault("foo", "baz"), "bar")
        self.assertIs(self.session.accessed, True)
        self.assertIs(self.session.modified, True)

    def test_update(self):
        self.session.update({"update key": 1})
        self.assertIs(self.session.accessed, True)
        self.assertIs(self.session.modified, True)
        self.assertEqual(self.session.get("update key"), 1)

    def test_has_key(self):
        self.session["some key"] = 1
        self.session.modified = False
        self.session.accessed = False
        self.assertIn("some key", self.session)
        self.assertIs(self.session.accessed, True)
        self.assertIs(self.session.modified, False)

    def test_values(self):
        self.assertEqual(list(self.session.values()), [])
        self.assertIs(self.session.accessed, True)
        self.session["some key"] = 1
        self.session.modified = False
        self.session.accessed = False
        self.assertEqual(list(self.session.values()), [1])
        self.assertIs(self.session.accessed, True)
        self.assertIs(self.session.modified, False)

    def test_keys(self):
        self.session["x"] = 1
        self.session.modified = False
        self.session.accessed = False
        self.assertEqual(list(self.session.keys()), ["x"])
        self.assertIs(self.session.accessed, True)
        self.assertIs(self.session.modified, False)

    def test_items(self):
        self.session["x"] = 1
        self.session.modified = False
        self.session.accessed = False
        self.assertEqual(list(self.session.items()), [("x", 1)])
        self.assertIs(self.session.accessed, True)
        self.assertIs(self.session.modified, False)

    def test_clear(self):
        self.session["x"] = 1
        self.session.modified = False
        self.session.accessed = False
        self.assertEqual(list(self.session.items()), [("x", 1)])
        self.session.clear()
        self.assertEqual(list(self.session.items()), [])
        self.assertIs(self.session.accessed, True)
        self.assertIs(self.session.modified, True)

    def test_save(self):
        self.session.save()
        self.assertIs(self.session.exists(self.session.session_key), True)

    def test_delete(self):
        self.session.save()
        self.session.delete(self.session.session_key)
        self.assertIs(self.session.exists(self.session.session_key), False)

    def test_flush(self):
        self.session["foo"] = "bar"
        self.session.save()
        prev_key = self.session.session_key
        self.session.flush()
        self.assertIs(self.session.exists(prev_key), False)
        self.assertNotEqual(self.session.session_key, prev_key)
        self.assertIsNone(self.session.session_key)
        self.assertIs(self.session.modified, True)
        self.assertIs(self.session.accessed, True)

    def test_cycle(self):
        self.session["a"], self.session["b"] = "c", "d"
        self.session.save()
        prev_key = self.session.session_key
        prev_data = list(self.session.items())
        self.session.cycle_key()
        self.assertIs(self.session.exists(prev_key), False)
        self.assertNotEqual(self.session.session_key, prev_key)
        self.assertEqual(list(self.session.items()), prev_data)

    def test_cycle_with_no_session_cache(self):
        self.session["a"], self.session["b"] = "c", "d"
        self.session.save()
        prev_data = self.session.items()
        self.session = self.backend(self.session.session_key)
        self.assertIs(hasattr(self.session, "_session_cache"), False)
        self.session.cycle_key()
        self.assertCountEqual(self.session.items(), prev_data)

    def test_save_doesnt_clear_data(self):
        self.session["a"] = "b"
        self.session.save()
        self.assertEqual(self.session["a"], "b")

    def test_invalid_key(self):
        # A key that names nothing (guessed, or the session is gone) gets a fresh one on save.
        session = self.backend("1")
        try:
            session.save()
            self.assertNotEqual(session.session_key, "1")
            self.assertIsNone(session.get("cat"))
            session.delete()
        finally:
            session.delete("1")

    def test_session_key_empty_string_invalid(self):
        self.session._session_key = ""
        self.assertIsNone(self.session.session_key)

    def test_session_key_too_short_invalid(self):
        self.session._session_key = "1234567"
        self.assertIsNone(self.session.session_key)

    def test_session_key_valid_string_saved(self):
        self.session._session_key = "12345678"
        self.assertEqual(self.session.session_key, "12345678")

    def test_session_key_is_read_only(self):
        def set_session_key(session):
            session.session_key = session._get_new_session_key()

        with self.assertRaises(AttributeError):
            set_session_key(self.session)

    def test_default_expiry(self):
        self.assertEqual(self.session.get_expiry_age(), settings.SESSION_COOKIE_AGE)
        self.session.set_expiry(0)  # browser close: the age stays the default
        self.assertEqual(self.session.get_expiry_age(), settings.SESSION_COOKIE_AGE)

    def test_custom_expiry_seconds(self):
        modification = timezone.now()
        self.session.set_expiry(10)
        self.assertEqual(self.session.get_expiry_date(modification=modification), modification + timedelta(seconds=10))
        self.assertEqual(self.session.get_expiry_age(modification=modification), 10)

    def test_custom_expiry_timedelta(self):
        modification = timezone.now()
        with mock.patch.object(timezone, "now", lambda: modification):
            self.session.set_expiry(timedelta(seconds=10))
        self.assertEqual(self.session.get_expiry_date(modification=modification), modification + timedelta(seconds=10))
        self.assertEqual(self.session.get_expiry_age(modification=modification), 10)

    def test_custom_expiry_datetime(self):
        modification = timezone.now()
        self.session.set_expiry(modification + timedelta(seconds=10))
        self.assertEqual(self.session.get_expiry_date(modification=modification), modification + timedelta(seconds=10))
        self.assertEqual(self.session.get_expiry_age(modification=modification), 10)

    def test_custom_expiry_reset(self):
        self.session.set_expiry(None)
        self.session.set_expiry(10)
        self.session.set_expiry(None)
        self.assertEqual(self.session.get_expiry_age(), settings.SESSION_COOKIE_AGE)

    def test_get_expire_at_browser_close(self):
        for at_close in (False, True):
            with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=at_close):
                self.session.set_expiry(10)
                self.assertIs(self.session.get_expire_at_browser_close(), False)
                self.session.set_expiry(0)
                self.assertIs(self.session.get_expire_at_browser_close(), True)
                self.session.set_expiry(None)
                self.assertIs(self.session.get_expire_at_browser_close(), at_close)

    def test_decode(self):
        data = {"a test key": "a test value"}
        self.assertEqual(self.session.decode(self.session.encode(data)), data)

    @override_settings(SECRET_KEY="django_tests_secret_key")
    def test_decode_legacy(self):
        # Django's pre-3.1 format: "<sha1 hmac>:<json>" in base64 (Django 4.0 drops it).
        legacy = base64.b64encode(
            b'9e353f5d150c9a1fc82d773a04f2586f04524b64:{"a test key":"a test value"}'
        ).decode("ascii")
        if not hasattr(self.session, "_legacy_decode"):
            self.skipTest("this Django no longer reads the pre-3.1 format")
        self.assertEqual(self.session.decode(legacy), {"a test key": "a test value"})

    def test_default_hashing_algorith_legacy_decode(self):
        if not hasattr(self.session, "_legacy_encode"):
            self.skipTest("this Django no longer has the pre-3.1 format")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with self.settings(DEFAULT_HASHING_ALGORITHM="sha1"):
                data = {"a test key": "a test value"}
                self.assertEqual(self.session._legacy_decode(self.session._legacy_encode(data)), data)

    def test_decode_failure_logged_to_security(self):
        for encoded in (base64.b64encode(b"flaskdj:alkdjf").decode("ascii"), "bad:encoded:value"):
            with self.subTest(encoded=encoded):
                with self.assertLogs("django.security.SuspiciousSession", "WARNING") as cm:
                    self.assertEqual(self.session.decode(encoded), {})
                self.assertIn("Session data corrupted", cm.output[0])

    def test_actual_expiry(self):
        # PickleSerializer, because set_expiry(timedelta) stores a datetime JSON cannot hold.
        with override_settings(SESSION_SERIALIZER=PICKLE):
            self.session = self.backend()
            old_key = new_key = None
            try:
                self.session["foo"] = "bar"
                self.session.set_expiry(-timedelta(seconds=10))
                self.session.save()
                old_key = self.session.session_key
                new_session = self.backend(self.session.session_key)
                new_key = new_session.session_key
                self.assertNotIn("foo", new_session)
            finally:
                self.session.delete(old_key)
                self.session.delete(new_key)

    def test_session_load_does_not_create_record(self):
        session = self.backend("someunknownkey")
        session.load()
        self.assertIsNone(session.session_key)
        self.assertIs(session.exists(session.session_key), False)
        self.assertNotEqual(session.session_key, "someunknownkey")

    def test_session_save_does_not_resurrect_session_logged_out_in_other_context(self):
        s1 = self.backend()
        s1["test_data"] = "value1"
        s1.save(must_create=True)
        s2 = self.backend(s1.session_key)
        s2.delete()
        s1["test_data"] = "value2"
        with self.assertRaises(UpdateError):
            s1.save()
        self.assertEqual(s1.load(), {})

    def test_load_overlong_key(self):
        self.session._session_key = (string.ascii_letters + string.digits) * 20
        self.assertEqual(self.session.load(), {})


class SessionStoreTests(SessionStoreContract, SimpleTestCase):
    pass


@override_settings(USE_TZ=True)
class SessionStoreWithTimeZoneTests(SessionStoreContract, SimpleTestCase):
    pass


class RemoteStoreTests(SimpleTestCase):
    """What a store backed by a remote service must get right on purpose."""

    def setUp(self):
        self.client = get_client()
        self.keys = []

    def tearDown(self):
        for key in self.keys:
            engine.SessionStore().delete(key)

    def saved(self, data=None, **settings_):
        with override_settings(**settings_):
            session = engine.SessionStore()
            session.update(data or {})
            session.save()
        self.keys.append(session.session_key)
        return session

    def server_view(self, key):
        reply = self.client.read(key)
        self.assertEqual(reply.status, 200)
        return reply.body

    def test_a_fresh_store_calls_nothing(self):
        with CallLog() as log:
            session = engine.SessionStore()
            self.assertIs(session.modified, False)
            self.assertIs(session.accessed, False)
            self.assertIsNone(session.get("x"))
            self.assertIs(session.exists(None), False)
            session._get_new_session_key()
            session.delete()
        self.assertEqual(log.calls, [])

    def test_the_key_is_the_token_sessiond_issued(self):
        with CallLog() as log:
            session = self.saved({"cart": ["sku-1"]})
        self.assertEqual(log.calls, ["POST /v1/sessions"])
        self.assertEqual(len(session.session_key), 43)
        self.assertEqual(self.server_view(session.session_key)["id"], public_id(session.session_key))
        self.assertEqual(session.session_id, public_id(session.session_key))

    def test_json_data_is_stored_as_it_is(self):
        session = self.saved({"cart": ["sku-1"], "n": 2, "nested": {"a": [1, None]}})
        self.assertEqual(self.server_view(session.session_key)["data"], {"cart": ["sku-1"], "n": 2, "nested": {"a": [1, None]}})

    def test_other_serializers_go_in_the_envelope(self):
        when = timezone.now()
        session = self.saved({"when": when}, SESSION_SERIALIZER=PICKLE)
        data = self.server_view(session.session_key)["data"]
        self.assertEqual(list(data), [engine.ENVELOPE])
        self.assertEqual(data[engine.ENVELOPE]["serializer"], PICKLE)
        with override_settings(SESSION_SERIALIZER=PICKLE):
            self.assertEqual(engine.SessionStore(session.session_key)["when"], when)

    def test_a_save_sends_only_the_changes_as_a_merge_patch(self):
        session = self.saved({"keep": {"a": 1, "b": 2}, "drop": 1, "same": "x"})
        loaded = engine.SessionStore(session.session_key)
        loaded["keep"] = {"a": 1}
        del loaded["drop"]
        loaded["new"] = [None]
        with CallLog() as log:
            loaded.save()
        self.assertEqual(log.calls, ["PATCH /v1/sessions/current/data"])
        view = self.server_view(session.session_key)
        self.assertEqual(view["data"], {"keep": {"a": 1}, "same": "x", "new": [None]})
        self.assertEqual(view["version"], 2)

    def test_a_none_value_is_kept_with_a_put(self):
        session = self.saved({"a": 1})
        loaded = engine.SessionStore(session.session_key)
        loaded["maybe"] = None
        with CallLog() as log:
            loaded.save()
        self.assertEqual(log.calls, ["PUT /v1/sessions/current/data"])
        self.assertEqual(self.server_view(session.session_key)["data"], {"a": 1, "maybe": None})

    def test_an_unchanged_session_saves_without_a_write(self):
        session = self.saved({"a": 1})
        loaded = engine.SessionStore(session.session_key)
        with CallLog() as log:
            loaded.save()  # SESSION_SAVE_EVERY_REQUEST: the load's touch slid the expiry already
        self.assertEqual(log.calls, ["POST /v1/sessions/current/touch"])

    def test_concurrent_saves_of_different_keys_both_stay(self):
        session = self.saved({"a": 0, "b": 0, "c": 0})
        first = engine.SessionStore(session.session_key)
        second = engine.SessionStore(session.session_key)
        first["a"], second["b"] = 1, 2  # both read version 1
        del second["c"]
        first.save()
        with CallLog() as log:
            second.save()
        self.assertEqual(
            log.calls,
            ["PATCH /v1/sessions/current/data", "GET /v1/sessions/current", "PATCH /v1/sessions/current/data"],
            "the second save meets a newer version, rereads and sends its changes again",
        )
        self.assertEqual(self.server_view(session.session_key)["data"], {"a": 1, "b": 2})
        self.assertEqual(dict(second.items()), {"a": 1, "b": 2}, "the rebased store shows the other change")

    def test_cycle_key_is_one_rotate(self):
        session = self.saved({"a": 1})
        old = session.session_key
        with CallLog() as log:
            session.cycle_key()
        self.keys.append(session.session_key)
        self.assertEqual(log.calls, ["POST /v1/sessions/current/rotate"])
        self.assertIs(session.modified, True)
        self.assertIs(session.exists(old), False)

    def test_delete_never_raises_for_unknown_or_malformed_keys(self):
        store = engine.SessionStore()
        for key in ("12345678", "x" * 43, "ünïcödé-key", "a\r\nb: c" * 3, "k" * 5000):
            store.delete(key)
        session = self.saved({"a": 1})
        session.delete()
        session.delete()

    def test_bind_subject_reissues_the_session_for_the_user(self):
        session = self.saved({"cart": ["sku-1"]})
        old = session.session_key
        session.bind_subject("user-7", {"userAgent": "test"})
        session.save()
        self.keys.append(session.session_key)
        self.assertNotEqual(session.session_key, old)
        self.assertIs(session.exists(old), False)
        view = self.server_view(session.session_key)
        self.assertEqual((view["subject"], view["data"], view["metadata"]), ("user-7", {"cart": ["sku-1"]}, {"userAgent": "test"}))
        listed = [s["id"] for s in self.client.subject_sessions("user-7")]
        self.assertIn(session.session_id, listed)
        self.assertEqual(engine.SessionStore(session.session_key).subject, "user-7")

    def test_expiry_maps_onto_idle_and_absolute_timeouts(self):
        def at(view, field):
            return datetime.fromisoformat(view[field].replace("Z", "+00:00"))

        def seconds(view, field):
            return (at(view, field) - at(view, "createdAt")).total_seconds()

        def remaining(view, field):
            return (at(view, field) - datetime.now(utc_zone.utc)).total_seconds()

        # SESSION_COOKIE_AGE is the idle timeout; SESSIOND_ABSOLUTE_TIMEOUT the absolute one.
        session = self.saved({"a": 1}, SESSION_COOKIE_AGE=3600, SESSIOND_ABSOLUTE_TIMEOUT=7200)
        view = self.server_view(session.session_key)
        self.assertEqual((seconds(view, "expiresAt"), seconds(view, "absoluteExpiresAt")), (3600, 7200))

        session.set_expiry(120)
        old = session.session_key
        session.save()
        self.keys.append(session.session_key)
        self.assertNotEqual(session.session_key, old, "a new expiry is a new session (timeouts are fixed at create)")
        self.assertAlmostEqual(remaining(self.server_view(session.session_key), "expiresAt"), 120, delta=5)

        fixed = self.saved({"a": 1}, SESSION_SERIALIZER=PICKLE)
        with override_settings(SESSION_SERIALIZER=PICKLE):
            fixed = engine.SessionStore(fixed.session_key)
            fixed.set_expiry(timedelta(seconds=300))
            fixed.save()
        self.keys.append(fixed.session_key)
        self.assertAlmostEqual(remaining(self.server_view(fixed.session_key), "absoluteExpiresAt"), 300, delta=5)

    def test_an_expiry_in_the_past_destroys_the_session(self):
        session = self.saved({"a": 1})
        key = session.session_key
        session.set_expiry(-10)
        session.save()
        self.assertIsNone(session.session_key)
        self.assertIs(engine.SessionStore().exists(key), False)

    def test_clear_expired_is_a_no_op(self):
        with CallLog() as log:
            engine.SessionStore.clear_expired()
        self.assertEqual(log.calls, [])
