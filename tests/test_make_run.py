"""`make run` and the README's first commands, as a newcomer runs them (#22 items 2, 3 and 7), in a copy
of the checkout with no `.env` and no DEBUG/SECRET_KEY in the environment.

The copy shares this checkout's virtualenv (its pyproject.toml is dated back, so make installs nothing).
`make test` in the Quick start block is the whole suite: it is not run here (CI runs it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scripts import devrun
from tests.needs import missing
from tests.servers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PASSWORD = "a-Long-pass-phrase-42"
# Commands of the README that a newcomer copies first: the blocks of these sections.
NEWCOMER_SECTIONS = ("## Quick start",)
NOT_RUN_HERE = {"make test"}


def newcomer_commands() -> list[str]:
    section = README[README.index(NEWCOMER_SECTIONS[0]) :]
    section = section[: section.index("\n## ", 1)]
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command:
                lines.append(command)
    return lines


@dataclass
class Checkout:
    path: Path
    env: dict[str, str]

    def start(self, command: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            command,
            shell=True,
            cwd=self.path,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # make, python, daphne: stopped together by the group's id
        )

    def run(self, command: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            shell=True,
            cwd=self.path,
            env={**self.env, **env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def _status(url: str, host: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=3) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _wait_healthy(proc: subprocess.Popen[str], port: int) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"make run exited with {proc.returncode}:\n{proc.stdout.read() if proc.stdout else ''}"
            )
        return _status(f"http://127.0.0.1:{port}/healthz") == 200

    wait_until(up, timeout=90, interval=0.2)


@pytest.fixture
def checkout(tmp_path: Path) -> Checkout:
    """The committed and new files of this checkout (no .env, no database), sharing its virtualenv."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    dest = tmp_path / "chatapp"
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    os.symlink(ROOT / ".venv", dest / ".venv")
    os.utime(dest / "pyproject.toml", (0, 0))  # older than .venv/.installed: make installs nothing
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {"DEBUG", "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "DJANGO_SETTINGS_MODULE"}
        and not k.startswith(("PYTEST", "DEMO_", "MAKE"))
    }
    return Checkout(dest, env)


def quick_start_paths() -> list[str]:
    """The site paths the Quick start names (`/admin/`), not file paths (`.venv/bin/`)."""
    section = README[README.index(NEWCOMER_SECTIONS[0]) :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"(?:^|[\s`(]|:\d+)(/[a-z][a-z0-9_-]*(?:/[a-z0-9_-]+)*/)", section, re.M)


def test_every_path_the_quick_start_names_is_served() -> None:
    """The README pointed a new staff member to /dashboard/, a 404 (the dashboard is /staff/dashboard/;
    fails on the old code)."""
    from django.urls import Resolver404, resolve

    paths = quick_start_paths()
    assert "/admin/" in paths and any("dashboard" in p for p in paths), paths
    missing = []
    for path in paths:
        try:
            resolve(path)
        except Resolver404:
            missing.append(path)
    assert not missing, f"the README's Quick start names paths nothing serves: {missing}"


def test_every_newcomer_command_of_the_readme_works_as_printed(checkout: Checkout) -> None:
    """#22 item 2: createsuperuser and create_api_token ended in a SECRET_KEY traceback in a checkout
    that `make run` had set up (fails on the old code: no .env, so manage.py refuses to start)."""
    commands = newcomer_commands()
    assert "make run" in commands and any("createsuperuser" in c for c in commands), commands
    port = free_port()
    server = None
    try:
        for command in commands:
            if command in NOT_RUN_HERE:
                continue
            if command.startswith("make run"):
                server = checkout.start(command, PORT=str(port))
                _wait_healthy(server, port)
                continue
            env: dict[str, str] = {}
            if "createsuperuser" in command:  # interactive as printed; the same prompts from the environment
                command += " --noinput"
                env = {"DJANGO_SUPERUSER_USERNAME": "root", "DJANGO_SUPERUSER_EMAIL": "root@example.com"}
                env["DJANGO_SUPERUSER_PASSWORD"] = PASSWORD
            done = checkout.run(command, stdin=f"{PASSWORD}\n", **env)
            assert done.returncode == 0 and "Traceback" not in done.stderr, (
                command,
                done.stdout,
                done.stderr,
            )
    finally:
        log = _stop(server) if server else ""
    env_file = (checkout.path / ".env").read_text()
    assert "DEBUG=true" in env_file and re.search(r"^SECRET_KEY=\S{50,}$", env_file, re.M), log
    assert (checkout.path / ".env").stat().st_mode & 0o077 == 0
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env is git-ignored"


def readme_block_after(heading_text: str) -> list[str]:
    """The commands of the first sh block after `heading_text` in the README (comments dropped)."""
    rest = README[README.index(heading_text) :]
    block = re.search(r"```sh\n(.*?)```", rest, re.S)
    assert block, heading_text
    return [c for line in block.group(1).splitlines() if (c := line.split("  #", 1)[0].strip())]


def _api(port: int, path: str, token: str, body: dict[str, object] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        answer: dict[str, Any] = json.loads(r.read())
    return answer


def test_the_fake_provider_block_of_the_readme_answers_through_openai(checkout: Checkout) -> None:
    """The README's way to try the OpenAI provider without a key, as printed (the fake's port and the
    app's changed for free ones): a send is answered by the fake server, through the openai connection."""
    commands = readme_block_after("fault-injecting fake provider server, which lets you try")
    assert len(commands) == 2 and commands[0].endswith("&") and "make run" in commands[1], commands
    fake_port, port = free_port(), free_port()
    fake = checkout.start(commands[0].rstrip("& ").replace("9100", str(fake_port)))
    server = checkout.start(commands[1].replace("9100", str(fake_port)), PORT=str(port))
    try:
        _wait_healthy(server, port)
        made = checkout.run(".venv/bin/python manage.py create_api_token alice")
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip().splitlines()[-1]
        thread = _api(port, "/api/threads", token, {"title": "Fake"})
        assert thread["model_id"].startswith("openai/"), thread
        sent = _api(
            port, f"/api/threads/{thread['id']}/messages", token, {"content": "hello", "stream": False}
        )
        reply = sent["assistant_message"]
        assert (reply["status"], reply["model_id"]) == ("complete", thread["model_id"]), sent
        assert reply["content"] and "demo model" not in reply["content"]
    finally:
        log = _stop(server)
        _stop(fake)
    assert "Traceback" not in log, log


def test_a_second_make_run_leaves_the_running_server_alone(checkout: Checkout) -> None:
    """#22 item 7: the second `make run` deleted the running server's metrics directory, then failed to
    bind (fails on the old code: the directory's files are gone)."""
    port = free_port()
    first = checkout.start("make run", PORT=str(port))
    try:
        _wait_healthy(first, port)
        metrics = checkout.path / ".run" / "prometheus"
        wait_until(lambda: any(metrics.iterdir()), timeout=30, interval=0.2)
        before = sorted(p.name for p in metrics.iterdir())
        second = checkout.run("make run", PORT=str(port))
        assert second.returncode != 0
        assert f"Port {port} on 127.0.0.1 is already in use" in second.stdout + second.stderr
        assert set(before) <= {p.name for p in metrics.iterdir()}, "the running server's metrics survive"
        assert _status(f"http://127.0.0.1:{port}/healthz") == 200
    finally:
        _stop(first)


def test_host_0_0_0_0_serves_this_machines_lan_address_in_development(checkout: Checkout) -> None:
    """#22 item 3: `HOST=0.0.0.0 make run` answered 400 DisallowedHost to the LAN address (fails on the old
    code). The page and its socket are asked for with the machine's own address as Host."""
    names = devrun.machine_names()
    if not names:
        missing("this machine has no address but loopback")
    port = free_port()
    server = checkout.start("make run", HOST="0.0.0.0", PORT=str(port))
    try:
        _wait_healthy(server, port)
        assert _status(f"http://127.0.0.1:{port}/accounts/login/", host=f"{names[0]}:{port}") == 200
        assert _status(f"http://127.0.0.1:{port}/accounts/login/", host=f"evil.example:{port}") == 400
    finally:
        log = _stop(server)
    assert f"On another device on this network: http://{names[0]}:{port}/" in log


@pytest.mark.parametrize(
    ("names", "hosts"),
    [
        ([], ["127.0.0.1", "localhost", "[::1]"]),
        (
            ["192.168.1.5", "box", "box.local", "192.168.1.5"],
            ["127.0.0.1", "localhost", "[::1]", "192.168.1.5", "box", "box.local"],
        ),
        (["fd00::5"], ["127.0.0.1", "localhost", "[::1]", "[fd00::5]"]),
    ],
)
def test_lan_hosts(names: list[str], hosts: list[str]) -> None:
    assert devrun.lan_hosts(names) == hosts


def test_the_env_file_is_never_overwritten(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    assert devrun.ensure_env_file(env_file)
    env_file.write_text("DEBUG=false\n")
    assert not devrun.ensure_env_file(env_file) and env_file.read_text() == "DEBUG=false\n"
