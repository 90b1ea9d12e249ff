#!/usr/bin/env python3
"""The example shop: Django auth, a cart in the session, "your devices" — sessions kept by sessiond.

    SESSIOND_URL=http://127.0.0.1:8080 SESSIOND_API_KEY=... python3 manage.py migrate
    SESSIOND_URL=... SESSIOND_API_KEY=... python3 manage.py runserver
"""
import os
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    # The engine from this checkout, so the example runs without `pip install`.
    sys.path.insert(1, os.path.dirname(here))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
