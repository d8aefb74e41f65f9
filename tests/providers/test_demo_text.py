"""The demo model's text: pure functions, tables and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers import ChatMessage
from providers._demo_text import compose_reply, conversation_seed, extract_topic, split_tokens


@pytest.mark.parametrize(
    ("prompt", "topic"),
    [
        ("How do I learn Rust?", "Rust"),
        ("What is the capital of France?", "capital of France"),
        ("Give me some tips for sleeping better", "sleeping better"),
        ("Can you explain quantum computing to a 10 year old", "quantum computing"),
        ("please", "that"),
        ("", "that"),
    ],
)
def test_extract_topic(prompt: str, topic: str) -> None:
    assert extract_topic(prompt) == topic


@pytest.mark.parametrize(
    ("prompt", "must_contain"),
    [
        ("hi", "!"),
        ("thanks!", "elp"),
        ("Write a Python function that reverses a string", "```python"),
        ("Show me an example in Go", "```go"),
        ("write a SQL query for recent users", "```sql"),
        ("Give me some tips for sleeping better", "\n1. **"),
        ("What is the capital of France?", "**Capital of France**"),
        ("", "empty"),
    ],
)
def test_reply_shape(prompt: str, must_contain: str) -> None:
    assert must_contain in compose_reply([ChatMessage("user", prompt)])


def test_reply_answers_the_last_user_message() -> None:
    history = [
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "Hello!"),
        ChatMessage("user", "Write code in Rust"),
    ]
    assert "```rust" in compose_reply(history)


def test_seed_depends_on_roles_and_content() -> None:
    a = conversation_seed([ChatMessage("user", "x")])
    assert a == conversation_seed([ChatMessage("user", "x")])
    assert a != conversation_seed([ChatMessage("assistant", "x")])
    assert a != conversation_seed([ChatMessage("user", "x "), ChatMessage("user", "")])


@given(st.text())
def test_tokens_rebuild_the_text(text: str) -> None:
    assert "".join(split_tokens(text)) == text.rstrip()


@given(st.text(max_size=200))
def test_compose_reply_is_total_and_deterministic(prompt: str) -> None:
    messages = [ChatMessage("user", prompt)]
    assert compose_reply(messages) == compose_reply(messages) != ""
