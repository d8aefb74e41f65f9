"""The pacer follows the connection (#17): its own limit, and one bucket for connections naming the same."""

from __future__ import annotations

import pytest

from core.gcra import Limit
from providers import catalog
from providers.models import Connection
from providers.pacer import Pacer, PacerRejected
from threads.generation import _pacing

pytestmark = pytest.mark.django_db


def test_connections_naming_one_bucket_share_it() -> None:
    Connection.objects.create(
        name="team-a", kind="openai", base_url="http://x/v1", rps=2, burst=1, bucket="acct"
    )
    Connection.objects.create(
        name="team-b", kind="openai", base_url="http://x/v1", rps=2, burst=1, bucket="acct"
    )
    Connection.objects.create(name="solo", kind="openai", base_url="http://x/v1", rps=0, burst=3)
    catalog.catalog()
    assert _pacing("team-a") == _pacing("team-b") == ("acct", Limit.per_second(2, 1))
    assert _pacing("solo") == ("solo", Limit.per_second(0, 3))
    assert _pacing("demo") == ("demo", Limit.per_second(0, 10))  # the settings' entry, as before


async def test_the_shared_bucket_paces_both() -> None:
    now = [0.0]
    pacer = Pacer({}, max_wait=0.1, clock=lambda: now[0], enabled=lambda: True)
    limit = Limit.per_second(1, 1)
    assert await pacer.acquire("acct", limit) == 0.0  # team-a's send
    with pytest.raises(PacerRejected):
        await pacer.acquire("acct", limit)  # team-b's, at the same instant: a second's wait, past max_wait
    assert await pacer.acquire("solo", limit) == 0.0  # another bucket is free
