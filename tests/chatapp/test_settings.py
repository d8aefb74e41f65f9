"""Production settings: refuse to start without SECRET_KEY; pass `check --deploy` without warnings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_secret_key() -> None:
    proc = _manage("check", DEBUG="false")
    assert proc.returncode != 0
    assert "SECRET_KEY is not set" in proc.stderr


def test_production_settings_pass_check_deploy() -> None:
    key = "x" * 20 + "-production-test-key-with-enough-entropy-0123456789"
    proc = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY=key,
        ALLOWED_HOSTS="chat.example.com",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout


def test_development_defaults_need_no_environment() -> None:
    proc = _manage("check")
    assert proc.returncode == 0, proc.stderr
