"""Two concurrent requests of one user change different keys: both changes stay with sessiond,
one is lost with Django's own whole-record engines (here: the file engine)."""
import tempfile
import threading

from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpResponse
from django.test import RequestFactory, SimpleTestCase, override_settings

from sessiond_django import engine

NAME = settings.SESSION_COOKIE_NAME


def concurrent_requests(key, changes):
    """One request per (key, value), all through SessionMiddleware at once: each loads the
    session, waits until every other one has loaded it too, then sets its key and returns."""
    loaded = threading.Barrier(len(changes), timeout=10)
    errors = []

    def view_setting(name, value):
        def view(request):
            request.session.get("cart")  # load
            loaded.wait()
            request.session[name] = value
            return HttpResponse("ok")

        return view

    def run(name, value):
        try:
            request = RequestFactory().get("/")
            request.COOKIES[NAME] = key
            SessionMiddleware(view_setting(name, value))(request)
        except Exception as err:  # reported by the test
            errors.append(err)

    threads = [threading.Thread(target=run, args=change) for change in changes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return errors


class ConcurrentRequestTests(SimpleTestCase):
    changes = [("theme", "dark"), ("language", "fr"), ("coupon", "WELCOME")]

    def test_concurrent_requests_changing_different_keys_all_keep_their_change(self):
        session = engine.SessionStore()
        session["cart"] = ["sku-1"]
        session.save()
        self.addCleanup(session.delete)
        self.assertEqual(concurrent_requests(session.session_key, self.changes), [])
        stored = dict(engine.SessionStore(session.session_key).items())
        self.assertEqual(stored, {"cart": ["sku-1"], "theme": "dark", "language": "fr", "coupon": "WELCOME"})

    def test_djangos_file_engine_loses_all_but_one_of_them(self):
        with tempfile.TemporaryDirectory() as folder, override_settings(
            SESSION_ENGINE="django.contrib.sessions.backends.file", SESSION_FILE_PATH=folder
        ):
            from django.contrib.sessions.backends.file import SessionStore as FileSession

            session = FileSession()
            session["cart"] = ["sku-1"]
            session.save()
            self.assertEqual(concurrent_requests(session.session_key, self.changes), [])
            stored = dict(FileSession(session.session_key).items())
        kept = [name for name, _ in self.changes if name in stored]
        self.assertEqual(len(kept), 1, "the last save overwrote the others: %s" % stored)
