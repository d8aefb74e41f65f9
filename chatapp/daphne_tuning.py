"""Work daphne's HTTP layer does that this app never uses, switched off.

Twisted's `Request.requestReceived` parses the Content-Type of every POST with the `email` package and,
for form and multipart bodies, the whole body into `request.args`. daphne never reads `args`: it hands
the raw body to the ASGI application, which parses it itself. In a 200-way burst of sends that parsing
was 16 % of the server's CPU (py-spy profile of benchmarks/coalesce_bench.py's burst).
"""

from __future__ import annotations

import sys


def skip_twisted_form_parsing() -> bool:
    """Make daphne's requests skip Twisted's form parsing; False when daphne is not installed."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:  # served by another ASGI server: nothing to switch off
        return False
    # Twisted's Request.__init__ assigns the instance attribute; a data descriptor on the class wins
    # over it, so every request reads False whatever Twisted sets.
    WebRequest._parsePOSTFormSubmission = property(lambda self: False, lambda self, value: None)
    return True


def urgent_first() -> bool:
    """Run urgent callbacks first (core/urgent.py) on daphne's event loop, which daphne makes when its
    server module is imported and runs once the application is loaded. False when this process is not
    daphne's (Twisted's reactor is not imported: importing it here would install the wrong one)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    loop = getattr(reactor, "_asyncioEventloop", None)  # daphne installs Twisted's asyncio reactor
    if loop is None:
        return False
    from core import urgent

    return urgent.install(loop)
