"""A test that needs a tool or service skips without it, except in CI (CI=true), where it fails:
tests/needs.py is the one place that decides, and no test skips on its own."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.needs import missing, program

ROOT = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"pytest\.skip\(|pytest\.importorskip\(|\bskipif\b|pytest\.mark\.skip\b")
# The skips that are not about a missing tool, each with its reason.
ALLOWED = {
    "tests/needs.py": 1,  # the helper itself
    "tests/test_make_run.py": 1,  # a machine with no address but loopback has no LAN address to serve on
    "tests/threads/test_fuzz.py": 2,  # the fuzz report's test, when its fuzz test failed or was deselected
}


def test_no_test_skips_on_its_own() -> None:
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name == "tests/test_needs.py":
            continue
        hits = [line.strip() for line in path.read_text().splitlines() if SKIP.search(line)]
        if hits:
            found[name] = hits
    unexpected = {name: hits for name, hits in found.items() if len(hits) != ALLOWED.get(name)}
    assert not unexpected, (
        "skip through tests.needs.missing/program (a missing tool must fail in CI), "
        f"or add the file to ALLOWED with its reason: {unexpected}"
    )


@pytest.mark.parametrize(("ci", "outcome"), [(None, pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_missing_skips_except_in_ci(monkeypatch: pytest.MonkeyPatch, ci: str | None, outcome: type) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no-such-tool-here is not installed: apt-get install it"):
        program("no-such-tool-here", "apt-get install it")
    with pytest.raises(outcome, match="the reason"):
        missing("the reason")


def test_program_finds_what_is_on_path() -> None:
    assert program("sh", "apt-get install dash") == shutil.which("sh")


def _run_without_tools(tmp_path: Path, *, ci: bool) -> dict[str, int]:
    """tests/threads/test_markdown_close.py's node check and tests/deploy/test_configs.py, in a pytest of
    their own, with no node on PATH and no nginx at NGINX: its outcomes ({"failed": 1, "errors": 2})."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    for name in ("CI", "DATABASE_URL", "REDIS_URL"):
        env.pop(name, None)
    env.update(PATH=str(tmp_path), NGINX=str(tmp_path / "nginx"), **({"CI": "true"} if ci else {}))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests/threads/test_markdown_close.py::test_the_page_closes_markdown_the_same_way",
            "tests/deploy/test_configs.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = done.stdout.strip().splitlines()[-1]
    return {kind: int(n) for n, kind in re.findall(r"(\d+) (\w+)", summary.split(" in ")[0])}


def test_node_and_nginx_missing_skip_on_a_laptop(tmp_path: Path) -> None:
    assert _run_without_tools(tmp_path, ci=False) == {"skipped": 3}


def test_node_and_nginx_missing_fail_in_ci(tmp_path: Path) -> None:
    # Before tests/needs.py both skipped in CI too: a CI image without node or nginx passed.
    # The node test fails; test_configs' two tests error in their fixture (a failure all the same).
    assert _run_without_tools(tmp_path, ci=True) == {"failed": 1, "errors": 2}
