"""Loaded by pytest before pytest-django imports the settings (pyproject.toml: `-p tests.pytest_env`):
the suite runs on the development settings, DEBUG=true, unless the environment says otherwise.

DEBUG is off by default (chatapp/settings.py) and pytest-django imports the settings before any
conftest.py runs, so a conftest is too late for this. The variable is inherited by the processes the
tests start; those that need production settings set DEBUG=false and SECRET_KEY themselves
(tests/chatapp/test_settings.py).
"""

from __future__ import annotations

import os

os.environ.setdefault("DEBUG", "true")
# The test process imports chatapp.asgi: keep its garbage collector as Python's (tests/chatapp/test_gctuning.py
# tests the tuning on its own). Servers the tests start inherit this.
os.environ.setdefault("GC_FREEZE", "false")
os.environ.setdefault("GC_GEN0_THRESHOLD", "0")
# The test process imports chatapp.asgi before any test database exists: no start-up bootstrap of
# connections there (tests/providers/test_connections.py calls it, tests/chatapp/test_startup_connections.py
# starts processes that run it). Servers the tests start
# inherit this, and serve the settings' providers as connections, as a fresh deployment does.
os.environ.setdefault("CONNECTIONS_BOOTSTRAP", "false")
