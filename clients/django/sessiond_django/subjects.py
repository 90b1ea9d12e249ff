"""Users and their devices: sessions get the user as sessiond subject at login, so that
`GET /v1/subjects/{subject}/sessions` lists them and "log out everywhere" works."""
from django.conf import settings
from django.utils.module_loading import import_string

from .client import get_client


def subject_of(user):
    """The subject for a user: SESSIOND_SUBJECT (a dotted path to a function of the user), or its pk."""
    path = getattr(settings, "SESSIOND_SUBJECT", None)
    return str(import_string(path)(user) if path else user.pk)


def device_metadata(request):
    """What a "your devices" page shows about the browser (sessiond's metadata limits applied)."""
    agent = request.META.get("HTTP_USER_AGENT", "")
    metadata = {"userAgent": agent[:512], "ip": request.META.get("REMOTE_ADDR", "")[:64]}
    return {k: v for k, v in metadata.items() if v}


def bind_subject_on_login(sender, request, user, **kwargs):
    """user_logged_in receiver: the session now belongs to the user (a new key at the next save)."""
    session = getattr(request, "session", None)
    if session is not None and hasattr(session, "bind_subject"):
        session.bind_subject(subject_of(user), device_metadata(request))


def user_sessions(user):
    """The user's live sessions, newest activity first: [{id, createdAt, lastSeenAt, metadata, ...}]."""
    return get_client().subject_sessions(subject_of(user))


def log_out_other_sessions(request):
    """Revokes every session of the request's user but the current one; returns how many."""
    return get_client().revoke_subject(subject_of(request.user), keep=request.session.session_id)
