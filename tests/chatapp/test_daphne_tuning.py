"""daphne's requests skip Twisted's form parsing; Django still parses forms itself."""

from __future__ import annotations

from daphne.http_protocol import WebRequest

import chatapp.asgi  # noqa: F401 - applies the tuning, as in a server process
from chatapp.daphne_tuning import skip_twisted_form_parsing


def test_requests_never_parse_forms_whatever_twisted_sets() -> None:
    assert skip_twisted_form_parsing() is True
    request = WebRequest.__new__(WebRequest)
    request._parsePOSTFormSubmission = True  # what Twisted's Request.__init__ assigns
    assert request._parsePOSTFormSubmission is False
