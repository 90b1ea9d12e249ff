"""A small sessiond HTTP client: one pooled urllib3 manager per process, a hard deadline per call.

Tokens travel only in the ``Session-Token`` header. Nothing here logs or raises with a token in it:
error messages name the method, the path (which never holds a token) and the status or cause.
"""
import base64
import hashlib
import json
import logging
import os
import re
import threading
from urllib.parse import quote, urlencode

import urllib3
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger("sessiond_django")

DEFAULT_TIMEOUT_SECONDS = 2.0
MERGE_PATCH = "application/merge-patch+json"

# What an HTTP header may carry as a token: anything else names no session, so it is never sent.
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]{1,4096}$")


class SessiondUnavailable(Exception):
    """sessiond could not answer in time (unreachable, slow, 5xx, rate limited). Never names a token."""


class SessiondError(Exception):
    """sessiond refused a call for a reason other than "no such session" (a bug or a misconfiguration)."""

    def __init__(self, message, status=None, code=None):
        super().__init__(message)
        self.status = status
        self.code = code


class Reply:
    __slots__ = ("status", "body")

    def __init__(self, status, body):
        self.status = status
        self.body = body


def public_id(token):
    """The public id of a session: base64url of SHA-256(token), as sessiond shows it."""
    digest = hashlib.sha256(token.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sendable_token(token):
    """Whether a key can be sent in a header at all (a cookie may hold anything)."""
    return isinstance(token, str) and _HEADER_SAFE.match(token) is not None


def _setting(name, default=None):
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name, default)
    return value


class SessiondClient:
    """Calls sessiond's /v1 API. Thread-safe: urllib3 pools connections per host."""

    def __init__(self, url, api_key, timeout=DEFAULT_TIMEOUT_SECONDS, pool_size=10):
        if not url:
            raise ImproperlyConfigured("SESSIOND_URL is not set (setting or environment variable)")
        if not api_key:
            raise ImproperlyConfigured("SESSIOND_API_KEY is not set (setting or environment variable)")
        self.base = url.rstrip("/")
        self.timeout = float(timeout)
        self._auth = "Bearer " + api_key
        # One deadline per call (connect and the wait for the answer share `total`). Only a failed
        # connect is retried once: the request never left, so even a create cannot run twice.
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=int(pool_size),
            block=False,
            timeout=urllib3.Timeout(total=self.timeout),
            retries=urllib3.Retry(total=1, connect=1, read=False, status=0, redirect=False, raise_on_status=False),
        )

    def request(self, method, path, token=None, body=None, content_type="application/json", if_match=None):
        headers = {"Authorization": self._auth, "Accept": "application/json"}
        if token is not None:
            headers["Session-Token"] = token
        if if_match is not None:
            headers["If-Match"] = '"%d"' % if_match
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = content_type
        try:
            response = self._pool.request(method, self.base + path, body=payload, headers=headers, preload_content=True)
        except urllib3.exceptions.HTTPError as err:
            raise SessiondUnavailable("sessiond %s %s failed: %s" % (method, path, _cause(err))) from None
        parsed = None
        if response.data:
            try:
                parsed = json.loads(response.data.decode("utf-8"))
            except ValueError:
                parsed = None
        status = response.status
        if status >= 500 or status == 429:
            code = parsed.get("code") if isinstance(parsed, dict) else None
            raise SessiondUnavailable("sessiond %s %s answered %d%s" % (method, path, status, " (%s)" % code if code else ""))
        if status == 401:
            raise ImproperlyConfigured("sessiond refused the API key (401): check SESSIOND_API_KEY")
        return Reply(status, parsed)

    # -- the calls the engine makes -------------------------------------------------------------

    def create(self, data, idle_timeout=None, absolute_timeout=None, subject=None, metadata=None):
        body = {"data": data}
        if idle_timeout is not None:
            body["idleTimeout"] = int(idle_timeout)
        if absolute_timeout is not None:
            body["absoluteTimeout"] = int(absolute_timeout)
        if subject is not None:
            body["subject"] = subject
        if metadata:
            body["metadata"] = metadata
        return self.expect(self.request("POST", "/v1/sessions", body=body), "POST /v1/sessions", 201)

    def read(self, token):
        return self.request("GET", "/v1/sessions/current", token=token)

    def touch(self, token):
        return self.request("POST", "/v1/sessions/current/touch", token=token)

    def put_data(self, token, data, version):
        return self.request("PUT", "/v1/sessions/current/data", token=token, body=data, if_match=version)

    def patch_data(self, token, patch, version):
        return self.request("PATCH", "/v1/sessions/current/data", token=token, body=patch, content_type=MERGE_PATCH, if_match=version)

    def rotate(self, token):
        return self.request("POST", "/v1/sessions/current/rotate", token=token, body={})

    def destroy(self, token):
        self.expect(self.request("DELETE", "/v1/sessions/current", token=token), "DELETE /v1/sessions/current", 204)

    def subject_sessions(self, subject, limit=100):
        """One page (newest activity first) of a subject's live sessions: ids and metadata, never tokens."""
        path = "/v1/subjects/%s/sessions?%s" % (quote(subject, safe=""), urlencode({"limit": limit}))
        return self.expect(self.request("GET", path), "GET /v1/subjects/{subject}/sessions", 200)["sessions"]

    def revoke_subject(self, subject, keep=None):
        """Logs a subject out everywhere (but the session with public id `keep`); returns how many."""
        path = "/v1/subjects/%s/sessions" % quote(subject, safe="")
        if keep is not None:
            path += "?" + urlencode({"keep": keep})
        return self.expect(self.request("DELETE", path), "DELETE /v1/subjects/{subject}/sessions", 200)["revoked"]

    @staticmethod
    def expect(reply, what, status):
        if reply.status != status:
            raise refusal(reply, what)
        return reply.body


def refusal(reply, what):
    """The error for an answer that is neither what was asked for nor "no such session"."""
    body = reply.body if isinstance(reply.body, dict) else {}
    return SessiondError(
        "sessiond %s answered %d (%s): %s" % (what, reply.status, body.get("code"), body.get("detail", "")),
        status=reply.status,
        code=body.get("code"),
    )


def _cause(err):
    # urllib3 wraps the cause (MaxRetryError.reason); its text names host and path only.
    reason = getattr(err, "reason", None) or err
    return "%s: %s" % (type(reason).__name__, reason)


_clients = {}
_clients_lock = threading.Lock()


def get_client():
    """The process's client for the current settings (SESSIOND_URL, SESSIOND_API_KEY, SESSIOND_TIMEOUT)."""
    url = _setting("SESSIOND_URL")
    api_key = _setting("SESSIOND_API_KEY")
    timeout = float(_setting("SESSIOND_TIMEOUT", DEFAULT_TIMEOUT_SECONDS))
    key = (url, api_key, timeout)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = SessiondClient(url, api_key, timeout)
    return client
