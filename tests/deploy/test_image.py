"""deploy/Dockerfile copies the whole checkout (`COPY . .`): `.dockerignore` keeps the checkout's local state
out of the image. No Docker daemon or compose plugin here, so the rules are checked as Docker reads them
(Go's filepath.Match per pattern, `**` for any number of folders, a folder's rule covering what it holds)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def _patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _excluded(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` (relative to the build context) out, for these plain patterns."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]  # a folder's rule covers its files
    for pattern in patterns:
        assert not pattern.startswith("!"), "a negated rule: extend this test's matcher"
        for prefix in prefixes:
            if pattern.startswith("**/"):
                tail = pattern[3:]
                depth = tail.count("/") + 1
                segs = prefix.split("/")
                if fnmatch.fnmatchcase("/".join(segs[-depth:]), tail):
                    return True
            elif prefix.count("/") == pattern.count("/") and fnmatch.fnmatchcase(prefix, pattern):
                return True
    return False


@pytest.mark.parametrize(
    "path",
    [
        ".env",  # make run's SECRET_KEY, and whatever keys a developer put there
        ".venv/bin/python",
        "db.sqlite3",
        "db.sqlite3-wal",
        "tools/node_modules/lighthouse/package.json",
        ".git/config",
        "threads/__pycache__/chat.cpython-311.pyc",
        ".run/prometheus/counter.db",
        "bench-results/bench.json",
        "artifacts/screenshots/thread.png",
        "staticfiles/chat/chat.js",  # the image runs collectstatic itself
    ],
)
def test_the_image_leaves_out_local_state(path: str) -> None:
    assert _excluded(path, _patterns()), f"{path} would be copied into the image: add it to .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "manage.py",
        "chatapp/settings.py",
        "threads/migrations/0001_initial.py",
        "static/chat/chat.js",
        "static/vendor/markdown-it.min.js",
        "templates/base.html",
        "deploy/Dockerfile",
        "tools/package.json",
    ],
)
def test_the_image_keeps_what_it_runs(path: str) -> None:
    assert not _excluded(path, _patterns()), f"{path} is needed in the image: .dockerignore leaves it out"
