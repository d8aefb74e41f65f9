"""`make run`'s steps around daphne, in the order that keeps a running server safe (stdlib only: it runs
before Django's settings can load).

    python scripts/devrun.py prepare --host H --port P      # before migrate
    python scripts/devrun.py serve --host H --port P ...    # clears the metrics dir, then execs daphne

`prepare` refuses a port that is taken (another `make run`) before anything is touched, and writes a
git-ignored `.env` with DEBUG=true and a generated SECRET_KEY on first use, so `manage.py` commands work in
the same checkout. `serve` checks the port again, and only then empties the metrics directory (the
running server's metrics live there) and starts daphne. Serving on all interfaces (HOST=0.0.0.0) in
development admits this machine's own names and addresses (ALLOWED_HOSTS), so a phone on the same network
can open the app, unless ALLOWED_HOSTS is set.
"""

from __future__ import annotations

import argparse
import errno
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = ["127.0.0.1", "localhost", "[::1]"]
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", ""})


def port_in_use(host: str, port: int) -> bool:
    """Another process listens on (host, port): binding it here fails with EADDRINUSE."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # daphne (Twisted) sets SO_REUSEADDR too: a port in TIME_WAIT is free for both.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def env_file_text(secret: Callable[[], str] = lambda: secrets.token_urlsafe(50)) -> str:
    return (
        "# Written by `make run` on first use (git-ignored): development settings, so that manage.py\n"
        "# commands (createsuperuser, create_api_token...) work in this checkout too. Not for production.\n"
        "DEBUG=true\n"
        f"SECRET_KEY={secret()}\n"
    )


def ensure_env_file(path: Path) -> bool:
    """Write `path` if it does not exist yet (never overwrite a person's own); True when written."""
    try:
        with path.open("x") as f:
            f.write(env_file_text())
    except FileExistsError:
        return False
    path.chmod(0o600)  # it holds a secret
    return True


def lan_hosts(names: Iterable[str]) -> list[str]:
    """ALLOWED_HOSTS for a development server on all interfaces: loopback plus this machine's names and
    addresses (what another device on the network types or is shown), in order, without repeats."""
    hosts: list[str] = []
    for name in [*LOOPBACK, *names]:
        name = f"[{name}]" if ":" in name and not name.startswith("[") else name
        if name and name not in hosts:
            hosts.append(name)
    return hosts


def machine_names() -> list[str]:
    """This machine's host name(s) and its addresses (the one routes use first), with no traffic sent."""
    names: list[str] = []
    hostname = socket.gethostname()
    names += [hostname, f"{hostname.split('.')[0]}.local"]
    try:
        names += [str(info[4][0]) for info in socket.getaddrinfo(hostname, None) if info[4][0]]
    except OSError:
        pass
    try:
        # connect() on UDP sends nothing: it only asks the kernel which source address it would use.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
            names.insert(0, s.getsockname()[0])
    except OSError:
        pass
    return [n for n in names if not n.startswith(("127.", "::1", "fe80:"))]


def daphne_argv(*, host: str, port: int, backlog: int, ws_max_bytes: int) -> list[str]:
    """daphne's command line: its WebSocket message and frame cap is the Makefile's WS_MAX_BYTES."""
    interface = host.strip("[]").replace(":", r"\:") or "0.0.0.0"
    return [
        str(Path(sys.executable).parent / "daphne"),
        "-e",
        f"tcp:port={port}:interface={interface}:backlog={backlog}",
        "--websocket-max-message-size",
        str(ws_max_bytes),
        "--websocket-max-frame-size",
        str(ws_max_bytes),
        "chatapp.asgi:application",
    ]


def _allowed_hosts_set(env: dict[str, str], env_file: Path) -> bool:
    """ALLOWED_HOSTS given in the environment or in .env (which settings read): the person's own list."""
    if env.get("ALLOWED_HOSTS", "").strip():
        return True
    lines = env_file.read_text().splitlines() if env_file.exists() else []
    return any(line.strip().startswith("ALLOWED_HOSTS=") and line.split("=", 1)[1].strip() for line in lines)


def _refuse_busy(host: str, port: int) -> None:
    if port_in_use(host, port):
        sys.exit(
            f"Port {port} on {host or '0.0.0.0'} is already in use (another `make run`?). Nothing was "
            f"changed. Stop that server, or use another port: PORT={port + 1} make run"
        )


def prepare(host: str, port: int) -> None:
    _refuse_busy(host, port)
    env_file = ROOT / ".env"
    if ensure_env_file(env_file):
        print(
            f"Wrote {env_file.name} (DEBUG=true and a new SECRET_KEY) for manage.py commands in this checkout."
        )


def serve(args: argparse.Namespace) -> None:
    _refuse_busy(args.host, args.port)
    metrics = Path(args.metrics_dir)
    shutil.rmtree(metrics, ignore_errors=True)  # the last run's files: no server writes them now
    metrics.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
    debug = env.get("DEBUG", "").lower() in ("1", "true", "yes", "on")
    if args.host in WILDCARD_HOSTS and debug and not _allowed_hosts_set(env, ROOT / ".env"):
        names = machine_names()
        env["ALLOWED_HOSTS"] = ",".join(lan_hosts(names))
        for name in names[:1]:
            print(f"On another device on this network: http://{name}:{args.port}/")
    argv = daphne_argv(host=args.host, port=args.port, backlog=args.backlog, ws_max_bytes=args.ws_max_bytes)
    sys.stdout.flush()
    os.execve(argv[0], argv, env)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "serve"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument("--ws-max-bytes", type=int, default=1048576)
    parser.add_argument("--metrics-dir", default=str(ROOT / ".run" / "prometheus"))
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.host, args.port)
    else:
        serve(args)


if __name__ == "__main__":
    main()
