"""sessiond unreachable, slow or answering 503: a clear exception within SESSIOND_TIMEOUT, never a
hang; and no log line or error ever carries a token."""
import contextlib
import http.server
import logging
import socket
import threading
import time

from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpResponse
from django.test import RequestFactory, SimpleTestCase, override_settings

from sessiond_django import SessiondUnavailable, engine

TIMEOUT = 0.5
TOKEN_LIKE = "A" * 43  # token-shaped, so every call is really sent


class Answering503(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"status":503,"code":"store_unavailable","title":"Service Unavailable"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def answering_503():
    """Yields the URL of a server that answers every call 503 store_unavailable."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answering503)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield "http://127.0.0.1:%d" % server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def silent_service():
    """Yields the URL of a listener that accepts connections and never answers (a stalled service)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield "http://127.0.0.1:%d" % listener.getsockname()[1]
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def closed_port_url():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return "http://127.0.0.1:%d" % port


def every_operation():
    """Each call the engine makes, from a store with a token-shaped key."""
    yield "load", lambda: engine.SessionStore(TOKEN_LIKE).load()
    yield "exists", lambda: engine.SessionStore().exists(TOKEN_LIKE)
    yield "create", lambda: engine.SessionStore().save()
    yield "delete", lambda: engine.SessionStore(TOKEN_LIKE).delete()
    yield "cycle_key", lambda: engine.SessionStore(TOKEN_LIKE).cycle_key()


class FailureTests(SimpleTestCase):
    def assert_fails_fast(self, url, cause):
        with override_settings(SESSIOND_URL=url, SESSIOND_TIMEOUT=TIMEOUT):
            for name, call in every_operation():
                with self.subTest(operation=name):
                    started = time.monotonic()
                    with self.assertRaises(SessiondUnavailable) as caught:
                        call()
                    elapsed = time.monotonic() - started
                    self.assertLess(elapsed, TIMEOUT * 2 + 0.5, "%s took %.2f s" % (name, elapsed))
                    self.assertRegex(str(caught.exception), cause)
                    self.assertNotIn(TOKEN_LIKE, str(caught.exception))

    def test_unreachable(self):
        self.assert_fails_fast(closed_port_url(), r"failed: .*(Connection refused|NewConnectionError|MaxRetryError)")

    def test_slow(self):
        with silent_service() as url:
            self.assert_fails_fast(url, r"failed: .*(timed out|Timeout)")

    def test_answering_503(self):
        with answering_503() as url:
            self.assert_fails_fast(url, r"answered 503 \(store_unavailable\)")

    def test_a_request_fails_with_the_error_rather_than_hanging(self):
        def view(request):
            request.session["x"] = 1
            return HttpResponse("ok")

        with silent_service() as url, override_settings(SESSIOND_URL=url, SESSIOND_TIMEOUT=TIMEOUT):
            request = RequestFactory().get("/")
            request.COOKIES[settings.SESSION_COOKIE_NAME] = TOKEN_LIKE
            started = time.monotonic()
            with self.assertRaises(SessiondUnavailable):
                SessionMiddleware(view)(request)
            self.assertLess(time.monotonic() - started, TIMEOUT * 2 + 0.5)


class CapturingHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


class NoTokenInLogsTests(SimpleTestCase):
    def test_no_log_line_carries_a_token(self):
        handler = CapturingHandler()
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
        tokens = []
        try:
            session = engine.SessionStore()
            session["a"] = 1
            session.save()
            tokens.append(session.session_key)
            other = engine.SessionStore(session.session_key)
            other["b"] = 2
            session["c"] = 3
            other.save()
            session.save()  # a conflict and a rebase
            session.cycle_key()
            tokens.append(session.session_key)
            session.bind_subject("user-log-test")
            session.save()
            tokens.append(session.session_key)
            session.set_expiry(-1)
            session.save()
            with answering_503() as url, override_settings(SESSIOND_URL=url):
                with self.assertRaises(SessiondUnavailable):
                    engine.SessionStore(tokens[-1]).load()
        finally:
            root.removeHandler(handler)
            root.setLevel(old_level)
        self.assertTrue(any("rebasing" in line for line in handler.lines), "the engine's debug lines were captured")
        self.assertTrue(any("urllib3" in line or "HTTP/1.1" in line for line in handler.lines), "urllib3's lines were captured")
        for token in tokens:
            for line in handler.lines:
                self.assertNotIn(token, line)
