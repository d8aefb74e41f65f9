"""The SSE decoder: a table of bodies, and chunking must never change the events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers._sse import SSEDecoder, SSEEvent


def decode_sse(chunks: list[bytes]) -> list[SSEEvent]:
    """Every event of a whole body given as chunks."""
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)] + decoder.flush()


@pytest.mark.parametrize(
    ("body", "events"),
    [
        (b"data: hello\n\n", [SSEEvent("message", "hello")]),
        (b"data:hello\n\n", [SSEEvent("message", "hello")]),
        (b"data:  two spaces\n\n", [SSEEvent("message", " two spaces")]),
        (b"event: ping\ndata: {}\n\n", [SSEEvent("ping", "{}")]),
        (b"data: a\ndata: b\n\n", [SSEEvent("message", "a\nb")]),
        (b"data: a\r\n\r\ndata: b\r\r", [SSEEvent("message", "a"), SSEEvent("message", "b")]),
        (b": comment\ndata: x\n\n", [SSEEvent("message", "x")]),
        (b"id: 7\nretry: 10\ndata: x\n\n", [SSEEvent("message", "x")]),
        (b"event: lonely\n\ndata: x\n\n", [SSEEvent("message", "x")]),  # no data: not dispatched
        (b"data: cut off", []),  # an unterminated event is dropped (spec)
        (b"data: [DONE]\n\n", [SSEEvent("message", "[DONE]")]),
        ("data: caf\u00e9 \u2603\n\n".encode(), [SSEEvent("message", "caf\u00e9 \u2603")]),
        (b"data: a\xe2\x80\xa8b\n\n", [SSEEvent("message", "a\u2028b")]),  # only CR/LF end lines
    ],
)
def test_decode_table(body: bytes, events: list[SSEEvent]) -> None:
    assert decode_sse([body]) == events


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [SSEEvent("message", "a\nb")]


def test_invalid_utf8_raises() -> None:
    with pytest.raises(UnicodeDecodeError):
        decode_sse([b"data: \xff\n\n"])


_BODIES = st.lists(
    st.tuples(
        st.sampled_from(["", "event: e\n"]),
        st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n")),
    ),
    max_size=5,
).map(lambda items: "".join(f"{head}data: {text}\r\n\n" for head, text in items).encode())


@given(body=_BODIES, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_chunking_does_not_change_events(body: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert decode_sse(chunks) == decode_sse([body])
