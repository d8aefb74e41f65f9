"""The server's start-up (chatapp/asgi.py) runs the connections' bootstrap (#17): a wrong
FIELD_ENCRYPTION_KEY stops the process before it serves, naming the connection, and an old-style
environment becomes a connection. The suite's own processes skip the bootstrap (tests/pytest_env.py):
this is the test that the server itself runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

STORE = (
    "from providers.models import Connection; c = Connection(name='acct', kind='openai', "
    "base_url='http://127.0.0.1:9/v1'); c.set_api_key('sk-stored-123'); c.save()"
)
# What daphne does first: import the application.
START = (
    "import chatapp.asgi; from providers.models import Connection; "
    "print(sorted((c.name, c.from_env, c.api_key) for c in Connection.objects.all()))"
)


def _python(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    unset = {"DATABASE_URL", "REDIS_URL", "FIELD_ENCRYPTION_KEY", "CONNECTIONS_BOOTSTRAP"}
    base = {k: v for k, v in os.environ.items() if k not in unset and not k.startswith("OPENAI_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={
            **base,
            "DEBUG": "true",
            "DJANGO_SETTINGS_MODULE": "chatapp.settings",
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "CONNECTIONS_BOOTSTRAP": "true",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_server_start_checks_the_key_and_bootstraps_the_environment(tmp_path: Path) -> None:
    stored_with = Fernet.generate_key().decode()
    assert (
        _python(tmp_path, "manage.py", "migrate", "--noinput", FIELD_ENCRYPTION_KEY=stored_with).returncode
        == 0
    )
    made = _python(tmp_path, "manage.py", "shell", "-c", STORE, FIELD_ENCRYPTION_KEY=stored_with)
    assert made.returncode == 0, made.stderr

    wrong = _python(tmp_path, "-c", START, FIELD_ENCRYPTION_KEY=Fernet.generate_key().decode())
    assert wrong.returncode != 0 and wrong.stdout == ""
    assert "ImproperlyConfigured: FIELD_ENCRYPTION_KEY cannot decrypt the API key of connection 'acct'" in (
        wrong.stderr
    )
    assert "sk-stored-123" not in wrong.stderr

    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-env-1", "OPENAI_MODEL": "env-m"}
    right = _python(tmp_path, "-c", START, FIELD_ENCRYPTION_KEY=stored_with, **env)
    assert right.returncode == 0, right.stderr
    assert right.stdout.strip().splitlines()[-1] == (
        "[('acct', False, 'sk-stored-123'), ('demo', True, ''), ('openai', True, 'sk-env-1')]"
    )
