"""A small Django site for the Django import test, configured from the environment.

    DJANGO_DATABASE_URL=mysql://root@127.0.0.1:PORT/db SECRET_KEY=... python3 site.py before
        migrates, makes users and writes sessions with Django's db engine; prints {name: session key}
    SESSIOND_URL=... SESSIOND_API_KEY=... SECRET_KEY=... python3 site.py after < cookies.json
        reads each {name: session key} through the same site on sessiond_django's engine; prints
        what each request saw

Requests go through Django's whole stack (SessionMiddleware, AuthenticationMiddleware) with
django.test.Client; logins go through django.contrib.auth's authenticate() and login().
"""
import datetime
import json
import os
import sys
from urllib.parse import urlparse

HERE = os.path.dirname(os.path.abspath(__file__))
# sessiond_django from this checkout.
sys.path.insert(1, os.path.join(HERE, "..", "..", "..", "clients", "django"))

import django  # noqa: E402
from django.conf import settings  # noqa: E402

MODE = sys.argv[1]
db = urlparse(os.environ["DJANGO_DATABASE_URL"])
settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ["SECRET_KEY"],
    ALLOWED_HOSTS=["testserver"],
    USE_TZ=True,
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"]
    + (["sessiond_django"] if MODE == "after" else []),
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": db.path.lstrip("/"),
            "USER": db.username or "root",
            "PASSWORD": db.password or "",
            "HOST": db.hostname,
            "PORT": str(db.port or 3306),
        }
    },
    SESSION_ENGINE="django.contrib.sessions.backends.db" if MODE == "before" else "sessiond_django.engine",
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],  # fast: the test is not about hashing
)
django.setup()

from django.contrib.auth import authenticate, login  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.urls import path  # noqa: E402

PASSWORD = "correct-horse-battery"
AUTH_KEYS = ("_auth_user_id", "_auth_user_backend", "_auth_user_hash")


def login_view(request):
    user = authenticate(request, username=request.POST["username"], password=PASSWORD)
    login(request, user)
    return JsonResponse({"ok": True})


def put_view(request):
    """Sets session keys from the POSTed JSON; `_expiry` calls set_expiry."""
    for key, value in json.loads(request.body).items():
        if key == "_expiry":
            request.session.set_expiry(value)
        else:
            request.session[key] = value
    return JsonResponse({"ok": True})


def when_view(request):
    """A value JSON cannot hold (for sessions kept with PickleSerializer)."""
    request.session["when"] = datetime.datetime(2026, 1, 2, 3, 4, 5)
    return JsonResponse({"ok": True})


def me_view(request):
    data = {k: v for k, v in request.session.items() if k not in AUTH_KEYS}
    if "when" in data:
        data["when"] = data["when"].isoformat()
    return JsonResponse({"user": request.user.username or None, "data": data, "expiryAge": request.session.get_expiry_age()})


urlpatterns = [path("login/", login_view), path("put/", put_view), path("when/", when_view), path("me/", me_view)]


def key_of(client):
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def session(username=None, data=None, when=False):
    client = Client()
    if username is not None:
        assert client.post("/login/", {"username": username}).status_code == 200
    if data is not None:
        assert client.post("/put/", json.dumps(data), content_type="application/json").status_code == 200
    if when:
        assert client.post("/when/").status_code == 200
    return key_of(client)


def before():
    call_command("migrate", verbosity=0, interactive=False)
    for name in ("alice", "bob", "carol"):
        User.objects.create_user(name, "%s@example.test" % name, PASSWORD)
    keys = {
        "alice": session("alice", {"cart": ["tea", "biscuits"], "theme": "dark"}),
        # Long enough for Django to compress it; a per-session expiry of 10 minutes.
        "bob": session("bob", {"cart": ["sku-%d" % (i % 7) for i in range(200)], "_expiry": 600}),
        "frank": session(None, {"cart": ["soon gone"]}),
    }
    # Django 3.2 with DEFAULT_HASHING_ALGORITHM = 'sha1' writes the format before 3.1.
    with override_settings(DEFAULT_HASHING_ALGORITHM="sha1"):
        keys["carol"] = session("carol", {"cart": ["legacy"]})
    # Signed with the key the app had before it rotated SECRET_KEY (now one of its fallbacks).
    with override_settings(SECRET_KEY=os.environ["OLD_SECRET_KEY"]):
        keys["dave"] = session(None, {"cart": ["from before the key rotation"]})
    with override_settings(SESSION_SERIALIZER="django.contrib.sessions.serializers.PickleSerializer"):
        keys["erin"] = session(None, {"cart": ["pickled"]}, when=True)
    return keys


def after(keys):
    seen = {}
    serializers = {"erin": "django.contrib.sessions.serializers.PickleSerializer"}
    for name, key in keys.items():
        with override_settings(SESSION_SERIALIZER=serializers.get(name, "django.contrib.sessions.serializers.JSONSerializer")):
            client = Client()
            client.cookies[settings.SESSION_COOKIE_NAME] = key
            first = client.get("/me/").json()
            # A write through the engine to the imported session, then a read of it.
            client.post("/put/", json.dumps({"visited": True}), content_type="application/json")
            second = client.get("/me/").json()
            seen[name] = {"first": first, "second": second, "sameKey": key_of(client) == key if settings.SESSION_COOKIE_NAME in client.cookies else True}
    return seen


if MODE == "before":
    print(json.dumps(before()))
else:
    print(json.dumps(after(json.load(sys.stdin))))
