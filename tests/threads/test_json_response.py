"""The API's JSON answers (threads/http.json_response): orjson, in the formats Django's JSON had."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.functional import lazy

from threads.http import json_response


def test_the_answer_reads_as_djangos_json_did() -> None:
    lazy_text = lazy(lambda: "later", str)()
    data = {
        "when": datetime.datetime(2026, 12, 5, 18, 0, 0, 123456, tzinfo=datetime.UTC),
        "day": datetime.date(2026, 12, 5),
        "cost": decimal.Decimal("0.000125"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "text": "naïve — ünïcode ✓",
        "lazy": lazy_text,
        1: "an int key",
        "nested": [{"none": None, "float": 0.1, "big": 2**53}],
    }
    resp = json_response(data, status=201)
    assert resp.status_code == 201 and resp["Content-Type"] == "application/json"
    assert json.loads(resp.content) == json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    assert json.loads(resp.content)["when"] == "2026-12-05T18:00:00.123Z"  # Django's, to the millisecond
    assert "✓".encode() in resp.content  # UTF-8, as JSON is, rather than \u escapes


def test_a_value_json_has_no_form_for_is_an_error_not_a_guess() -> None:
    with pytest.raises(TypeError):
        json_response({"x": object()})
