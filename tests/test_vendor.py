"""The thread page's Markdown renderer and sanitiser (static/vendor/, served like any static file) are the
versions tools/package.json pins, copied by `make vendor`: nothing reaches the page from a CDN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.needs import missing

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "markdown-it": ("dist/browser/markdown-it.umd.min.js", "markdown-it.min.js"),
    "dompurify": ("dist/purify.min.js", "purify.min.js"),
}


def _without_source_map(text: str) -> str:
    return "".join(line for line in text.splitlines(True) if not line.startswith("//# sourceMappingURL="))


@pytest.mark.parametrize("package", list(PACKAGES))
def test_the_vendored_copy_is_the_pinned_package(package: str) -> None:
    pinned = json.loads((ROOT / "tools" / "package.json").read_text())["dependencies"][package]
    source, copy = PACKAGES[package]
    vendored = (ROOT / "static" / "vendor" / copy).read_text()
    assert "sourceMappingURL" not in vendored  # collectstatic's manifest would look for the map
    installed = ROOT / "tools" / "node_modules" / package
    if not installed.exists():
        missing(f"{installed} is missing: run `npm ci --prefix tools`")
    assert json.loads((installed / "package.json").read_text())["version"] == pinned
    assert vendored == _without_source_map((installed / source).read_text()), "run `make vendor`"
