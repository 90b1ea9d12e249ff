"""Django's SessionMiddleware over the engine (the expectations of Django 3.2's SessionMiddlewareTests
that do not name the db engine), against a real sessiond."""
from http import cookies

from django.conf import settings
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import HttpResponse
from django.test import RequestFactory, SimpleTestCase, override_settings

from sessiond_django import engine

NAME = settings.SESSION_COOKIE_NAME


def touching_session(request):
    request.session["hello"] = "world"
    return HttpResponse("Session test")


def ending_session(request):
    request.session.flush()
    return HttpResponse("Session test")


class SessionMiddlewareTests(SimpleTestCase):
    request_factory = RequestFactory()

    def respond(self, view, cookie=None):
        request = self.request_factory.get("/")
        if cookie is not None:
            request.COOKIES[NAME] = cookie
        response = SessionMiddleware(view)(request)
        if request.session.session_key:
            self.addCleanup(engine.SessionStore().delete, request.session.session_key)
        return request, response

    def test_a_new_session_sets_the_cookie_to_the_sessiond_token(self):
        request, response = self.respond(touching_session)
        token = response.cookies[NAME].value
        self.assertEqual(token, request.session.session_key)
        self.assertEqual(len(token), 43)
        self.assertEqual(engine.SessionStore(token)["hello"], "world")
        self.assertEqual(response.headers["Vary"], "Cookie")

    @override_settings(SESSION_COOKIE_SECURE=True)
    def test_secure_session_cookie(self):
        _, response = self.respond(touching_session)
        self.assertIs(response.cookies[NAME]["secure"], True)

    @override_settings(SESSION_COOKIE_HTTPONLY=True)
    def test_httponly_session_cookie(self):
        _, response = self.respond(touching_session)
        self.assertIs(response.cookies[NAME]["httponly"], True)
        self.assertIn(cookies.Morsel._reserved["httponly"], str(response.cookies[NAME]))

    @override_settings(SESSION_COOKIE_SAMESITE="Strict")
    def test_samesite_session_cookie(self):
        _, response = self.respond(touching_session)
        self.assertEqual(response.cookies[NAME]["samesite"], "Strict")

    @override_settings(SESSION_COOKIE_HTTPONLY=False)
    def test_no_httponly_session_cookie(self):
        _, response = self.respond(touching_session)
        self.assertEqual(response.cookies[NAME]["httponly"], "")
        self.assertNotIn(cookies.Morsel._reserved["httponly"], str(response.cookies[NAME]))

    def test_session_save_on_500(self):
        def response_500(request):
            request.session["hello"] = "world"
            return HttpResponse("Horrible error", status=500)

        request, response = self.respond(response_500)
        self.assertNotIn(NAME, response.cookies)
        self.assertNotIn("hello", request.session.load())

    def test_session_delete_on_end(self):
        _, response = self.respond(ending_session, cookie="abc")
        self.assertEqual(
            'Set-Cookie: {}=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite={}'.format(
                NAME, settings.SESSION_COOKIE_SAMESITE
            ),
            str(response.cookies[NAME]),
        )
        self.assertEqual(response.headers["Vary"], "Cookie")

    @override_settings(SESSION_COOKIE_DOMAIN=".example.local", SESSION_COOKIE_PATH="/example/")
    def test_session_delete_on_end_with_custom_domain_and_path(self):
        _, response = self.respond(ending_session, cookie="abc")
        self.assertEqual(
            'Set-Cookie: {}=""; Domain=.example.local; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; '
            "Path=/example/; SameSite={}".format(NAME, settings.SESSION_COOKIE_SAMESITE),
            str(response.cookies[NAME]),
        )

    def test_flush_empty_without_session_cookie_doesnt_set_cookie(self):
        _, response = self.respond(ending_session)
        self.assertEqual(response.cookies, {})
        self.assertEqual(response.headers["Vary"], "Cookie")

    def test_empty_session_saved(self):
        """A session emptied of data but still holding a key is still saved, and its cookie sent."""

        def response_set_session(request):
            request.session["foo"] = "bar"
            return HttpResponse("Session test")

        request = self.request_factory.get("/")
        middleware = SessionMiddleware(response_set_session)
        response = middleware(request)
        self.addCleanup(engine.SessionStore().delete, request.session.session_key)
        self.assertEqual(tuple(request.session.items()), (("foo", "bar"),))
        self.assertIn("Set-Cookie: sessionid=%s" % request.session.session_key, str(response.cookies))
        self.assertEqual(response.headers["Vary"], "Cookie")

        del request.session["foo"]
        response = middleware.process_response(request, HttpResponse("Session test"))
        self.assertEqual(dict(request.session.values()), {})
        self.assertEqual(engine.SessionStore().exists(request.session.session_key), True)
        self.assertEqual(dict(engine.SessionStore(request.session.session_key).items()), {})
        self.assertIn("Set-Cookie: sessionid=%s" % request.session.session_key, str(response.cookies))
        self.assertEqual(response.headers["Vary"], "Cookie")

    def test_an_invalid_cookie_reads_as_no_session_and_a_save_issues_a_new_one(self):
        for cookie in ("not-a-token-at-all", "x" * 43, "ünïcödé"):
            with self.subTest(cookie=cookie):
                request, response = self.respond(touching_session, cookie=cookie)
                self.assertNotEqual(response.cookies[NAME].value, cookie)
                self.assertIs(engine.SessionStore().exists(response.cookies[NAME].value), True)

    def test_logging_out_flushes_the_server_session(self):
        request, response = self.respond(touching_session)
        token = response.cookies[NAME].value
        _, response = self.respond(ending_session, cookie=token)
        self.assertEqual(response.cookies[NAME].value, "")
        self.assertIs(engine.SessionStore().exists(token), False)

    def test_a_session_destroyed_during_the_request_interrupts_it(self):
        _, response = self.respond(touching_session)
        token = response.cookies[NAME].value

        def logged_out_elsewhere(request):
            request.session["seen"] = True  # loads the session
            engine.SessionStore(token).delete()
            return HttpResponse("too late")

        with self.assertRaises(SessionInterrupted):
            self.respond(logged_out_elsewhere, cookie=token)
        self.assertIs(engine.SessionStore().exists(token), False, "the save did not bring it back")
