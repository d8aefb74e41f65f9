"""What a test needs from the machine: a tool (node, nginx, redis-server, Chromium, axe-core) or the real
services. Missing, the test skips and says how to get it, except in CI (CI=true, set by .ci/run), which
provides every one of them: there a missing one fails the test, so a lost tool cannot pass as a skip.

    from tests.needs import missing, program

    node = program("node", "apt-get install nodejs")
    if not AXE.exists():
        missing(f"{AXE} is missing: run `npm ci --prefix tools`")
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def missing(reason: str) -> NoReturn:
    """Skip the test, saying `reason`; in CI, fail it."""
    __tracebackhide__ = True  # pytest reports the skip at the caller's line
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide what this test needs: {reason}", pytrace=False)
    pytest.skip(reason)


def program(name: str, install: str) -> str:
    """The path of the program `name` on PATH; without one, `missing` (`install` says how to get it)."""
    __tracebackhide__ = True
    found = shutil.which(name)
    if found is None:
        missing(f"{name} is not installed: {install}")
    return found
