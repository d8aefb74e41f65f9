"""The repository itself: pinned, patched dependencies; no secret committed; `.env.example` documents the
security settings; `make run` turns DEBUG on (it is off by default)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins() -> dict[str, str]:
    pins = {}
    for requirement in PYPROJECT["project"]["dependencies"]:
        name, _, pinned = requirement.partition("==")
        pins[name.split("[")[0].lower()] = pinned
    return pins


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def test_django_is_5_2_and_daphne_has_its_security_fixes() -> None:
    pins = _pins()
    assert _version(pins["django"])[:2] == (5, 2)
    assert _version(pins["daphne"]) >= (4, 2, 2)
    # What is installed is what is pinned (`pip install ".[dev]"` after a bump).
    assert version("django") == pins["django"] and version("daphne") == pins["daphne"]


# Shapes of real credentials (built by concatenation so this file does not match itself).
SECRET_PATTERNS = [
    re.compile("-----BEGIN " + r"(?:[A-Z]+ )*PRIVATE KEY-----"),
    re.compile(r"\bsk-" + r"(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{24,}"),  # OpenAI, Anthropic
    re.compile(r"\bAKIA" + r"[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"\bgh[pousr]_" + r"[A-Za-z0-9]{36}\b"),  # GitHub
    re.compile(r"\bxox[abprs]-" + r"[A-Za-z0-9-]{10,}"),  # Slack
    re.compile(r"\bcht_" + r"[A-Za-z0-9_-]{43}\b"),  # a chatapp API token
]


def _repository_files() -> list[Path]:
    """Tracked files and new files not ignored (what the next commit could contain)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / name for name in out.split("\0") if name and (ROOT / name).is_file()]


def test_no_secret_in_the_repository() -> None:
    files = _repository_files()
    assert len(files) > 50  # the scan really saw the project
    names = {f.relative_to(ROOT).as_posix() for f in files}
    assert ".env" not in names and not any(n.endswith((".pem", ".key")) for n in names)
    found = []
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="ignore")
        found += [
            f"{path.relative_to(ROOT)}: {m.group(0)[:16]}…" for p in SECRET_PATTERNS for m in p.finditer(text)
        ]
    assert found == []


@pytest.mark.parametrize(
    "sample",
    [
        "-----BEGIN " + "RSA PRIVATE KEY-----",
        "-----BEGIN " + "PRIVATE KEY-----",
        "OPENAI_API_KEY=sk-proj-" + "a1B2" * 8,
        "ANTHROPIC_API_KEY=sk-ant-api03-" + "x_Y-" * 10,
        "AKIA" + "ABCDEFGHIJKLMNOP",
        "ghp_" + "a" * 36,
        "cht_" + "Ab-_" * 10 + "xyz",
    ],
)
def test_secret_patterns_catch_real_shapes(sample: str) -> None:
    assert any(p.search(sample) for p in SECRET_PATTERNS)


@pytest.mark.parametrize("sample", ["OPENAI_API_KEY=sk-...", "sk-ant-...", "sk-test-not-used", "sk-bench"])
def test_secret_patterns_spare_placeholders(sample: str) -> None:
    assert not any(p.search(sample) for p in SECRET_PATTERNS)


def test_env_example_documents_the_security_settings_and_sets_nothing() -> None:
    text = (ROOT / ".env.example").read_text()
    assert all(line.startswith("#") or not line.strip() for line in text.splitlines())
    for name in (
        "DEBUG",
        "SECRET_KEY",
        "ALLOWED_HOSTS",
        "CSRF_TRUSTED_ORIGINS",
        "SECURE_SSL_REDIRECT",
        "SECURE_HSTS_SECONDS",
    ):
        assert re.search(rf"^# {name}=", text, re.M), name


def test_make_run_turns_debug_on() -> None:
    dry = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "run"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    # scripts/devrun.py serve execs daphne with the environment it was given.
    daphne = next(line for line in dry.splitlines() if "scripts/devrun.py serve" in line)
    migrate = next(line for line in dry.splitlines() if "manage.py migrate" in line)
    assert daphne.startswith("DEBUG=true ") and migrate.startswith("DEBUG=true ")


@pytest.mark.parametrize(
    "term",
    [
        "`4001`",
        "`DEBUG`",
        "`SECRET_KEY`",
        "`ALLOWED_HOSTS`",
        "`CSRF_TRUSTED_ORIGINS`",
        "`SECURE_SSL_REDIRECT`",
        "`SECURE_HSTS_SECONDS`",
        "Content-Security-Policy",
        "csrf_failed",
        "user.<id>",
    ],
)
def test_readme_documents_the_security_settings(term: str) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Security and operations") :]
    assert term in readme and (term.startswith("`4001") or term in section)


def test_the_documented_close_code_is_the_consumers() -> None:
    from threads.consumers import CLOSE_AUTH_REVOKED

    assert CLOSE_AUTH_REVOKED == 4001


def _where_things_are() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Where things are")
    return readme[start : readme.index("\n## ", start + 1)]


def test_where_things_are_maps_every_folder() -> None:
    """README's "Where things are" has a row for every top-level folder (the house a newcomer walks)."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    folders = sorted({f.split("/")[0] for f in files if "/" in f and not f.startswith(".")})
    section = _where_things_are()
    missing = [d for d in folders if f"| `{d}/` |" not in section]
    assert not missing, f"README's 'Where things are' has no row for {missing}"


def test_where_things_are_names_the_floors_make_lint_holds() -> None:
    (layers,) = [c["layers"] for c in PYPROJECT["tool"]["importlinter"]["contracts"] if c["id"] == "layers"]
    assert " -> ".join(f"`{name}`" for name in layers) in _where_things_are()
