"""RFC 7396 merge patches between two JSON documents (the session data before and after a request)."""
import json

_MISSING = object()


def same(a, b):
    """JSON equality: 1 and True differ, key order does not matter."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def diff(before, after):
    """The merge patch that turns `before` into `after` (both dicts), or None when RFC 7396 cannot
    say it: a merge patch reads null in an object as "remove", so such a null cannot be written."""
    patch = {}
    for key, value in after.items():
        old = before.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(old, dict):
            nested = diff(old, value)
            if nested is None:
                return None
            if nested:
                patch[key] = nested
        elif old is _MISSING or not same(old, value):
            if value is None or _has_null_member(value):
                return None
            patch[key] = value
    for key in before:
        if key not in after:
            patch[key] = None
    return patch


def _has_null_member(value):
    # Objects are merged member by member (nulls dropped); arrays are taken whole, nulls and all.
    return isinstance(value, dict) and any(v is None or _has_null_member(v) for v in value.values())
