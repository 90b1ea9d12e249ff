"""SESSION_ENGINE = "sessiond_django.engine": Django sessions kept by sessiond.

The session key is the sessiond token (server-made, 43 characters). The store remembers the data
and version it last saw on the server (its base); a save sends only what this request changed,
as an RFC 7396 merge patch compare-and-set on that version, and on a conflict rebases its changes
onto the newer data. So two concurrent requests that change different keys both keep their change.
"""
import copy
import json
import logging

from django.conf import settings
from django.contrib.sessions.backends.base import VALID_KEY_CHARS, SessionBase, UpdateError
from django.contrib.sessions.serializers import JSONSerializer
from django.utils.crypto import get_random_string

from . import merge_patch
from .client import get_client, public_id, refusal, sendable_token

logger = logging.getLogger("sessiond_django")

#: The one key of the data of a session kept with a serializer other than JSONSerializer.
ENVELOPE = "djangoSession"
#: Statuses that mean "no session for this key" (a key too long for a header reads as unknown).
NO_SESSION = frozenset((400, 404, 414, 431))
#: A save rebases onto newer data at most this many times before giving up.
MAX_WRITE_ATTEMPTS = 5
EXPIRY_KEY = "_session_expiry"


class SessionStore(SessionBase):
    """A Django session store over sessiond's /v1/sessions API."""

    def __init__(self, session_key=None):
        super().__init__(session_key)
        # Only Django's own JSONSerializer stores the dict as it is; anything else goes in the envelope.
        self._plain_json = self.serializer is JSONSerializer
        self._forget_server()

    def _forget_server(self):
        self._base = None  # the data as the server held it at self._version (decoded)
        self._version = None
        self._subject = None
        self._pending_subject = None
        self._metadata = None

    @property
    def _client(self):
        return get_client()

    @classmethod
    def clear_expired(cls):
        """sessiond sweeps expired sessions itself: nothing to do (so `manage.py clearsessions` runs)."""

    # -- keys ------------------------------------------------------------------------------------

    def _get_new_session_key(self):
        # Only Django's own code asks for a key this way; this engine's sessions take the token
        # sessiond makes at create. 32 random characters (165 bits) name no live session, and sessiond
        # refuses a client token that existed before, so no exists() call is needed.
        return get_random_string(32, VALID_KEY_CHARS)

    @property
    def session_id(self):
        """The public id of this session (safe to show and log), or None without a key."""
        return public_id(self.session_key) if self.session_key else None

    @property
    def subject(self):
        """The user this session belongs to on sessiond (None for an anonymous session)."""
        self._get_session()
        return self._pending_subject or self._subject

    def bind_subject(self, subject, metadata=None):
        """Makes the session belong to `subject` (sessiond's user id), e.g. at login.

        sessiond sets a subject only when a session is created, so the next save issues a new
        session with this data and subject and destroys the old one (a new key, like cycle_key).
        """
        self._pending_subject = str(subject)
        self._metadata = metadata
        self.modified = True

    # -- server data <-> the session dict ----------------------------------------------------------

    def _normalized(self, session_dict):
        """The dict as the server will give it back: JSON round trip, or the dict itself in the envelope."""
        if self._plain_json:
            return json.loads(json.dumps(session_dict, separators=(",", ":")))
        return session_dict

    def _to_server(self, session_dict):
        if self._plain_json:
            return self._normalized(session_dict)
        serializer = "%s.%s" % (self.serializer.__module__, self.serializer.__qualname__)
        return {ENVELOPE: {"serializer": serializer, "encoded": self.encode(session_dict)}}

    def _from_server(self, data):
        envelope = data.get(ENVELOPE) if isinstance(data, dict) and len(data) == 1 else None
        if isinstance(envelope, dict) and isinstance(envelope.get("encoded"), str):
            return self.decode(envelope["encoded"])
        return data

    def _same(self, a, b):
        return merge_patch.same(a, b) if self._plain_json else a == b

    def _adopt(self, session, token=None):
        """Takes a session body from the server as the base of the next write."""
        if token is not None:
            self._session_key = token
        self._version = session["version"]
        self._subject = session.get("subject")
        self._base = self._from_server(session["data"])
        return self._base

    # -- SessionBase's storage methods -------------------------------------------------------------

    def exists(self, session_key):
        if session_key is None or not sendable_token(session_key):
            return False
        reply = self._client.read(session_key)
        if reply.status == 200:
            return True
        self._expect_no_session(reply, "GET /v1/sessions/current")
        return False

    def load(self):
        """Reads the session and slides its idle expiry (one touch). Unknown key: {} and no key."""
        key = self.session_key
        reply = self._client.touch(key) if key is not None and sendable_token(key) else None
        if reply is not None and reply.status == 200:
            return copy.deepcopy(self._adopt(reply.body))
        if reply is not None:
            self._expect_no_session(reply, "POST /v1/sessions/current/touch")
        self._session_key = None
        self._forget_server()
        return {}

    def create(self):
        self._create(self._get_session(no_load=True), self._pending_subject, self._metadata)
        self.modified = True

    def save(self, must_create=False):
        if self.session_key is None or must_create:
            return self.create()
        data = self._get_session()  # loads the base if this request has not yet
        if self._base is None:
            self._refresh_base()
        if self.session_key is None:  # the key named no session: this is a new one
            return self.create()
        if self.get_expiry_age() <= 0:
            return self._expire()
        current = self._normalized(data)
        subject_changes = self._pending_subject is not None and self._pending_subject != self._subject
        if subject_changes or not self._same(self._base.get(EXPIRY_KEY), current.get(EXPIRY_KEY)):
            return self._reissue(data)
        self._write(data, current)

    def delete(self, session_key=None):
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        if sendable_token(session_key):
            self._client.destroy(session_key)

    def flush(self):
        super().flush()
        self._forget_server()

    def cycle_key(self):
        """One rotate: a new token for the same server session (data kept, old token dead at once)."""
        key = self.session_key
        if key is not None and sendable_token(key):
            reply = self._client.rotate(key)
            if reply.status == 201:
                server_data = self._adopt(reply.body["session"], token=reply.body["token"])
                if not hasattr(self, "_session_cache"):
                    self._session_cache = copy.deepcopy(server_data)
                self.modified = True
                return
            self._expect_no_session(reply, "POST /v1/sessions/current/rotate")
        # No live session behind the key: as Django does, a new session with the data held here.
        if not hasattr(self, "_session_cache"):
            self._session_cache = {}
        self._session_key = None
        self.create()

    # -- the writes --------------------------------------------------------------------------------

    def _timeouts(self):
        """(idle, absolute) seconds for a new session; see the package README for the mapping."""
        age = self.get_expiry_age()
        absolute = getattr(settings, "SESSIOND_ABSOLUTE_TIMEOUT", None)
        expiry = getattr(self, "_session_cache", {}).get(EXPIRY_KEY)
        if expiry is not None and not isinstance(expiry, int):  # Django 3.2: a datetime; later: a string
            absolute = age  # set_expiry(datetime | timedelta): a fixed end, whatever the activity
        return age, absolute

    def _create(self, session_dict, subject=None, metadata=None):
        idle, absolute = self._timeouts()
        self._forget_server()
        if idle <= 0:  # already expired (set_expiry in the past): nothing to keep
            self._session_key = None
            return
        issued = self._client.create(self._to_server(session_dict), idle, absolute, subject, metadata)
        self._adopt(issued["session"], token=issued["token"])
        logger.debug("sessiond session %s created", public_id(issued["token"]))

    def _refresh_base(self):
        """A store holding data but no base (its cache was set from outside): read the version."""
        reply = self._client.read(self.session_key)
        if reply.status == 200:
            self._adopt(reply.body)
        else:
            self._expect_no_session(reply, "GET /v1/sessions/current")
            self._session_key = None

    def _expire(self):
        """An expiry in the past: the session is gone for the next reader, as Django's engines do."""
        self.delete()
        self._session_key = None
        self._forget_server()

    def _reissue(self, data):
        """A new session with this data under the new subject or expiry; the old one is destroyed."""
        old = self.session_key
        subject = self._pending_subject or self._subject
        self._create(data, subject, self._metadata)
        self.modified = True
        self._client.destroy(old)
        logger.debug("sessiond session %s reissued as %s", public_id(old), self.session_id)

    def _write(self, data, current):
        """Sends this request's changes, compare-and-set on the base version, rebasing on conflicts."""
        base = self._base
        for _ in range(MAX_WRITE_ATTEMPTS):
            changed = {k: v for k, v in current.items() if k not in base or not self._same(base[k], v)}
            removed = [k for k in base if k not in current]
            if not changed and not removed:
                return
            reply = self._send(base, current, data)
            if reply.status == 200:
                self._adopt_written(reply.body, current)
                return
            if reply.status == 404:
                raise UpdateError()  # destroyed meanwhile (logout elsewhere): never re-created
            if reply.status != 412:
                raise refusal(reply, "PATCH/PUT /v1/sessions/current/data")
            # Someone else wrote since our base: take theirs and put our changes on top.
            fresh = self._client.read(self.session_key)
            if fresh.status != 200:
                self._expect_no_session(fresh, "GET /v1/sessions/current")
                raise UpdateError()
            base = self._adopt(fresh.body)
            for key in [k for k in data if k not in changed and k not in base]:
                del data[key]
            for key, value in base.items():
                if key not in changed and key not in removed:
                    data[key] = copy.deepcopy(value)
            current = self._normalized(data)
            logger.debug("sessiond session %s: version moved, rebasing the save", self.session_id)
        raise UpdateError()

    def _send(self, base, current, data):
        if self._plain_json:
            patch = merge_patch.diff(base, current)
            if patch is not None:
                return self._client.patch_data(self.session_key, patch, self._version)
        return self._client.put_data(self.session_key, self._to_server(data), self._version)

    def _adopt_written(self, session, current):
        self._version = session["version"]
        self._subject = session.get("subject")
        self._base = copy.deepcopy(current)

    # -- errors ------------------------------------------------------------------------------------

    def _expect_no_session(self, reply, what):
        if reply.status not in NO_SESSION:
            raise refusal(reply, what)

