"""deploy/docker-compose.yml as Compose reads it. There is no Docker daemon here, so nothing is built or
started; `docker-compose config` (Debian's docker-compose, Compose's own reference implementation; .ci/run
installs it) parses, interpolates and validates the file without one. Its nginx file is checked with
`nginx -t`, the app services' names standing in for loopback addresses."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from deploy.serve import NGINX, ROOT
from tests.deploy.test_configs import nginx_test_site
from tests.needs import missing, program

COMPOSE = ROOT / "deploy" / "docker-compose.yml"
SITE = ROOT / "deploy" / "nginx" / "compose.conf"


def compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    tool = program("docker-compose", "apt-get install docker-compose")
    # Only PATH from this process: a developer's SECRET_KEY or DEBUG must not decide the outcome.
    return subprocess.run(
        [tool, "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], **env},
        cwd=ROOT / "deploy",
    )


def test_the_compose_file_is_valid_and_names_its_services() -> None:
    result = compose("config", "--services", SECRET_KEY="not-a-secret")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"postgres", "redis", "migrate", "app1", "app2", "nginx"}
    full = compose("config", SECRET_KEY="not-a-secret")
    assert full.returncode == 0, full.stderr
    # Both app processes drain on SIGTERM within the grace the file gives them (SHUTDOWN_GRACE_S 30 < 45 s).
    assert full.stdout.count("stop_grace_period: 45s") >= 2
    assert "SHUTDOWN_GRACE_S: '30'" in full.stdout


def test_the_compose_file_refuses_to_start_without_a_secret_key() -> None:
    result = compose("config", "-q")
    assert result.returncode != 0
    assert "set SECRET_KEY" in result.stderr


def test_the_compose_nginx_file_is_valid_and_points_at_the_app_services(tmp_path: Path) -> None:
    if not Path(NGINX).exists():
        missing(f"no nginx at {NGINX}: apt-get install nginx")
    site = SITE.read_text()
    upstreams = re.findall(r"server (\w+):(\d+) max_fails=0;", site)
    assert upstreams == [("app1", "8000"), ("app2", "8000")]
    # Where the image's daphne listens.
    assert "tcp:port=8000:" in (ROOT / "deploy" / "Dockerfile").read_text()
    for name, port in upstreams:
        site = site.replace(f"server {name}:{port}", f"server 127.0.0.1:{18100 + int(name[-1])}")
    site = site.replace("listen 80;", "listen 127.0.0.1:18180;")
    site = site.replace(
        "/etc/nginx/snippets/chatapp-proxy.conf", str(ROOT / "deploy/nginx/chatapp-proxy.conf")
    )
    result = nginx_test_site(site, tmp_path)
    assert result.returncode == 0, result.stderr
