"""Django sessions kept by sessiond: set SESSION_ENGINE = "sessiond_django.engine"."""
from .client import SessiondError, SessiondUnavailable

__all__ = ["SessiondError", "SessiondUnavailable"]
