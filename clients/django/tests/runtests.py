"""Runs the engine's tests against the sessiond at SESSIOND_URL (key: SESSIOND_API_KEY).

    python3 clients/django/tests/runtests.py [-v 2] [test labels...]

Ends with a line "N passed, N failed, N skipped" and exits non-zero on any failure or error.
"""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]  # the package, then the test modules

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    SECRET_KEY="sessiond-django-tests",
    USE_TZ=os.environ.get("USE_TZ") == "1",
    INSTALLED_APPS=[
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django.contrib.sessions",
        "sessiond_django",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    SESSION_ENGINE="sessiond_django.engine",
    SESSIOND_TIMEOUT=float(os.environ.get("SESSIOND_TIMEOUT", "2")),
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
)
urlpatterns = []


def main(argv):
    verbosity = 2 if "-v" in argv else 1
    labels = [a for a in argv if not a.startswith("-") and a != "2"]
    django.setup()
    from django.test.utils import get_runner

    runner_class = get_runner(settings)

    class CountingRunner(runner_class):
        def run_suite(self, suite, **kwargs):
            self.result = super().run_suite(suite, **kwargs)
            return self.result

    runner = CountingRunner(verbosity=verbosity, interactive=False)
    suite = unittest.defaultTestLoader.discover(HERE, pattern="test_*.py") if not labels else None
    if suite is not None:
        failures = runner.run_tests([], extra_tests=list(_flatten(suite))) if _takes_extra_tests(runner) else _run(runner, suite)
    else:
        failures = runner.run_tests(labels)
    result = runner.result
    bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    print("%d passed, %d failed, %d skipped" % (result.testsRun - bad - skipped, bad, skipped))
    return 1 if failures or bad or result.testsRun == 0 else 0


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


def _takes_extra_tests(runner):
    import inspect

    return "extra_tests" in inspect.signature(runner.run_tests).parameters


def _run(runner, suite):
    runner.setup_test_environment()
    old = runner.setup_databases()
    try:
        result = runner.run_suite(suite)
    finally:
        runner.teardown_databases(old)
        runner.teardown_test_environment()
    return len(result.failures) + len(result.errors)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
