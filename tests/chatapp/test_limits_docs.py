"""Every limit is documented (README's Limits table and configuration table, .env.example), and the
daphne WebSocket cap is the same in the Makefile and tests/servers.py, above the app's own frame limit."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from daphne.cli import CommandLineInterface
from django.conf import settings

from scripts import devrun
from tests import servers

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
SETTINGS = (ROOT / "chatapp" / "settings.py").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def _limit_variables() -> list[str]:
    block = SETTINGS[SETTINGS.index("# --- Limits") : SETTINGS.index("# --- end limits")]
    return re.findall(r'env\.\w+\("([A-Z_]+)"', block)


def _section(title: str) -> str:
    start = README.index(title)
    return README[start : README.index("\n## ", start)]


def test_the_scan_finds_the_limits() -> None:
    assert {"MAX_BODY_BYTES", "SEND_RATE_PER_MIN", "MAX_SOCKETS_PER_USER"} <= set(_limit_variables())


@pytest.mark.parametrize("variable", [*_limit_variables(), "MAX_MESSAGE_CHARS"])
def test_limit_documented(variable: str) -> None:
    assert f"`{variable}`" in _section("### Limits and bad input"), "README's Limits table"
    assert f"`{variable}`" in _section("## Configuration"), "README's configuration table"
    assert f"# {variable}=" in (ROOT / ".env.example").read_text()


def _makefile_ws_max() -> int:
    match = re.search(r"^WS_MAX_BYTES \?= (\d+)$", MAKEFILE, re.M)
    assert match, "the Makefile sets WS_MAX_BYTES"
    return int(match.group(1))


def test_daphne_websocket_cap_agrees_and_exceeds_the_app_limit() -> None:
    assert _makefile_ws_max() == servers.WS_MAX_BYTES
    assert settings.MAX_WS_FRAME_BYTES < servers.WS_MAX_BYTES
    assert settings.MAX_BODY_BYTES == settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def test_the_daphne_flags_exist_and_the_makefile_passes_them() -> None:
    # make run hands WS_MAX_BYTES to scripts/devrun.py, which builds daphne's command line.
    run = next(line for line in MAKEFILE.splitlines() if "scripts/devrun.py serve" in line)
    assert "--ws-max-bytes $(WS_MAX_BYTES)" in run
    command = shlex.join(
        devrun.daphne_argv(host="127.0.0.1", port=1, backlog=1, ws_max_bytes=_makefile_ws_max())
    )
    parsed = CommandLineInterface().parser.parse_args(shlex.split(command)[1:])
    assert parsed.websocket_max_message_size == parsed.websocket_max_frame_size == servers.WS_MAX_BYTES


def _settings_with(**env: str) -> subprocess.CompletedProcess[str]:
    code = f"import json, chatapp.settings as s; print(json.dumps([getattr(s, n) for n in {list(env)!r}]))"
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "DEBUG": "true", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_limits_are_read_from_the_environment() -> None:
    env = {
        "MAX_BODY_BYTES": "2048",
        "SEND_RATE_PER_MIN": "12.5",
        "MAX_SOCKETS_PER_USER": "3",
        "MAX_TITLE_CHARS": "80",
    }
    proc = _settings_with(**env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [2048, 12.5, 3, 80]


@pytest.mark.parametrize("value", ["0", "201"])
def test_a_title_limit_the_column_cannot_hold_refuses_to_start(value: str) -> None:
    proc = _settings_with(MAX_TITLE_CHARS=value)
    assert proc.returncode != 0 and "use 1 to 200" in proc.stderr
