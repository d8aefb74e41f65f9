"""The context is bounded by the model's context size (#18): the pure trimming, then what the provider
receives through a send and a regenerate on a model whose size staff set. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import AsyncClient

from billing.rules import estimate_prompt_tokens
from providers.models import Connection, ModelOffer
from tests.threads.recording import Recorder
from threads.context import context_budget, fit_context

Q = [("user", f"q{i} " + "a" * 397) for i in range(4)]  # 100 tokens each, 104 with the framing
A = ("assistant", "Answer")  # 2 tokens, 6 with the framing
BRANCH = [Q[0], A, Q[1], A, Q[2], A, Q[3]]
SYSTEM = "Be brief."  # 3 tokens, 7 with the framing


@pytest.mark.parametrize(
    ("context_tokens", "reply_tokens", "expected"),
    [(None, 1024, None), (0, 1024, None), (4096, 1024, 3072), (1000, 1024, 0)],
)
def test_context_budget(context_tokens: int | None, reply_tokens: int, expected: int | None) -> None:
    assert context_budget(context_tokens=context_tokens, reply_tokens=reply_tokens) == expected


@pytest.mark.parametrize(
    ("system", "budget", "expected"),
    [
        ("", None, BRANCH),  # the model's size unknown: CONTEXT_MESSAGES alone bounds it
        ("", 10_000, BRANCH),
        ("", 104 + 6 + 104 + 6 + 104 + 6 + 104, BRANCH),  # exactly the whole branch
        (SYSTEM, 104 + 6 + 104 + 6 + 104 + 6 + 104, BRANCH[2:]),  # the system prompt's 7 push Q0 out…
        # …and the reply left first is dropped too: a cut starts at a question
        (SYSTEM, 7 + 104 + 6 + 104 + 6 + 104 + 6, BRANCH[2:]),
        (SYSTEM, 7 + 104 + 6 + 104, BRANCH[4:]),
        (SYSTEM, 7 + 104 + 5, BRANCH[6:]),
        (SYSTEM, 0, BRANCH[6:]),  # the question answered always goes, over the budget or not
        (SYSTEM, 50, BRANCH[6:]),
    ],
)
def test_fit_context_drops_the_oldest_first(
    system: str, budget: int | None, expected: list[tuple[str, str]]
) -> None:
    got = fit_context(BRANCH, system_prompt=system, budget=budget)
    assert got == expected
    if budget is not None and len(got) > 1:
        assert (
            estimate_prompt_tokens([("system", system)] if system else []) + estimate_prompt_tokens(got)
            <= budget
        )


def test_fit_context_of_nothing() -> None:
    assert fit_context([], system_prompt=SYSTEM, budget=0) == []


# --- through a send ------------------------------------------------------------------------------------


@pytest.fixture
def small_model(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """A model 'lab/small' whose context (staff's figure) holds the system prompt and 337 tokens."""
    settings.CONTEXT_REPLY_TOKENS = 100
    settings.PROVIDERS = {**settings.PROVIDERS, "lab": {"kind": "demo", "model": "small"}}
    conn = Connection.objects.create(name="lab", kind="demo", rps=0)
    ModelOffer.objects.create(
        connection=conn, model="small", context_tokens=100 + 7 + 104 + 6 + 104 + 6 + 104 + 6
    )
    recorder = Recorder(chunks=("An", "swer"))
    monkeypatch.setattr("threads.generation.get_provider", lambda name: recorder)
    return recorder


@pytest.fixture
def api(token: str) -> AsyncClient:
    return AsyncClient(AUTHORIZATION=f"Bearer {token}")


async def _post(api: AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await api.post(path, body, content_type="application/json")
    assert resp.status_code in (200, 201), resp.content
    data: dict[str, Any] = resp.json()
    return data


@pytest.mark.django_db(transaction=True)
@pytest.mark.both
async def test_a_send_and_a_regenerate_get_what_fits_the_model(
    api: AsyncClient, small_model: Recorder
) -> None:
    thread = await _post(api, "/api/threads", {"model": "lab/small", "system_prompt": SYSTEM})
    tid = thread["id"]
    for _, content in Q:
        last = await _post(api, f"/api/threads/{tid}/messages", {"content": content})
    # The fourth send: Q0 and the reply after it no longer fit; the system prompt and Q3 always do.
    assert small_model.contexts[-1] == [("system", SYSTEM), *BRANCH[2:]]
    assert small_model.contexts[0] == [("system", SYSTEM), Q[0]]
    regenerated = await _post(
        api, f"/api/threads/{tid}/messages/{last['assistant_message']['id']}/regenerate", {}
    )
    # A regenerate is answered from the same context, system prompt included, by the thread's model.
    assert small_model.contexts[-1] == [("system", SYSTEM), *BRANCH[2:]]
    assert regenerated["assistant_message"]["model_id"] == "lab/small"
