"""daphne's requests skip Twisted's form parsing (Django still parses forms itself), and its loop runs
urgent callbacks first (core/urgent.py)."""

from __future__ import annotations

import subprocess
import sys

from daphne.http_protocol import WebRequest

import chatapp.asgi  # noqa: F401 - applies the tuning, as in a server process
from chatapp.daphne_tuning import skip_twisted_form_parsing


def test_requests_never_parse_forms_whatever_twisted_sets() -> None:
    assert skip_twisted_form_parsing() is True
    request = WebRequest.__new__(WebRequest)
    request._parsePOSTFormSubmission = True  # what Twisted's Request.__init__ assigns
    assert request._parsePOSTFormSubmission is False


def test_daphnes_loop_runs_urgent_callbacks_first_once_the_app_is_loaded() -> None:
    """As daphne's command line does: its server module (which makes the loop), then the application."""
    script = (
        "import daphne.server\n"
        "import chatapp.asgi\n"
        "from twisted.internet import reactor\n"
        "from core import urgent\n"
        "print(urgent.installed(reactor._asyncioEventloop))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"


def test_outside_daphne_nothing_is_installed_and_no_reactor_is_imported() -> None:
    script = (
        "import sys\n"
        "from chatapp.daphne_tuning import urgent_first\n"
        "print(urgent_first(), 'twisted.internet.reactor' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False"]
