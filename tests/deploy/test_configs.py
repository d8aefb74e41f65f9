"""deploy/'s nginx files are valid nginx (`nginx -t`), as `make serve` generates them and as the site file
is installed (in Debian's http block, the proxy snippet in snippets/, a certificate in place)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.serve import NGINX, PROXY_SNIPPET, ROOT, nginx_conf
from tests.needs import missing


@pytest.fixture(autouse=True)
def _nginx() -> None:
    if not Path(NGINX).exists():
        missing(f"no nginx at {NGINX}: apt-get install nginx (or set NGINX=/path/to/nginx)")


def nginx_test(conf: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )


def nginx_test_site(site: str, prefix: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` of a site file as Debian includes it, inside an http block, all state under `prefix`."""
    (prefix / "site.conf").write_text(site)
    temp = "\n".join(
        f"{k}_temp_path {prefix}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"pid {prefix}/nginx.pid;\nevents {{}}\nhttp {{\n{temp}\ninclude {prefix}/site.conf;\n}}\n"
    )
    return nginx_test(conf, prefix)


def test_the_generated_config_is_valid_and_keeps_everything_in_its_prefix(tmp_path: Path) -> None:
    text = nginx_conf(port=18080, upstreams=[18001, 18002], prefix=tmp_path)
    assert "server 127.0.0.1:18001 max_fails=0;" in text and f"include {PROXY_SNIPPET};" in text
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    result = nginx_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_site_file_is_valid_in_an_http_block(tmp_path: Path) -> None:
    snippets = tmp_path / "snippets"
    snippets.mkdir()
    shutil.copy(PROXY_SNIPPET, snippets / "chatapp-proxy.conf")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=chat.example.com",
        ]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    site = (ROOT / "deploy" / "nginx" / "chatapp.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/chat.example.com/fullchain.pem", str(cert))
    site = site.replace("/etc/letsencrypt/live/chat.example.com/privkey.pem", str(key))
    site = site.replace("listen 80;", "listen 127.0.0.1:18081;").replace("listen [::]:80;", "")
    site = site.replace("listen 443 ssl http2;", "listen 127.0.0.1:18443 ssl http2;")
    site = site.replace("listen [::]:443 ssl http2;", "")
    result = nginx_test_site(site, tmp_path)
    assert result.returncode == 0, result.stderr
