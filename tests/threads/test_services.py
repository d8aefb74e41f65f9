"""services.send_prepare: one pair per request and one pair per burst, enforced by the database."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.utils import timezone

from threads import services
from threads.models import Message, Thread
from threads.validation import parse_send

pytestmark = [pytest.mark.django_db, pytest.mark.both]

KEY = "coal:" + "a" * 40


@pytest.fixture
def thread(user: Any) -> Thread:
    return Thread.objects.create(owner=user, provider="demo", model="demo-1")


def _send(thread: Thread, rid: str, *, key: str | None = KEY, reuse: tuple[float, float] = (30, 2)) -> Any:
    req = parse_send({"content": "same words", "request_id": rid}, max_chars=1000)
    return services.send_prepare(thread_id=thread.pk, req=req, parent_id=None, coalesce_key=key, reuse=reuse)


def test_second_send_of_a_burst_replays_the_first_pair(thread: Thread) -> None:
    first = _send(thread, "r1")
    second = _send(thread, "r2")
    assert not first.replay and second.replay
    assert second.request_id == "r1" and second.assistant_message["id"] == first.assistant_message["id"]
    assert Message.objects.count() == 2


def test_a_failed_pair_is_reused_only_within_the_error_ttl(thread: Thread) -> None:
    first = _send(thread, "r1")
    services.message_finalize(message_id=first.assistant_message["id"], status="error", content="")
    assert _send(thread, "r2", reuse=(30, 60)).replay
    fresh = _send(thread, "r3", reuse=(30, 0))
    assert not fresh.replay and fresh.request_id == "r3"
    assert list(Message.objects.filter(coalesce_key=KEY).values_list("request_id", flat=True)) == ["r3"]


def test_a_completed_pair_older_than_the_result_ttl_releases_its_key(thread: Thread) -> None:
    first = _send(thread, "r1")
    services.message_finalize(message_id=first.assistant_message["id"], status="complete", content="x")
    Message.objects.filter(pk=first.assistant_message["id"]).update(
        updated_at=timezone.now() - datetime.timedelta(seconds=31)
    )
    assert not _send(thread, "r2").replay
    assert Message.objects.filter(role="user").count() == 2


def test_a_reused_request_id_replays_its_pair_whatever_the_key(thread: Thread) -> None:
    first = _send(thread, "r1")
    again = _send(thread, "r1", key="coal:" + "b" * 40)
    assert again.replay and again.assistant_message["id"] == first.assistant_message["id"]
    assert Message.objects.count() == 2


def test_a_deleted_thread_is_not_found_and_nothing_is_written(thread: Thread) -> None:
    copy = Thread.objects.get(pk=thread.pk)
    thread.delete()
    req = parse_send({"content": "hello", "request_id": "r1"}, max_chars=1000)
    with pytest.raises(services.NotFound):
        services.send_prepare(thread_id=copy.pk, thread=copy, req=req, parent_id=None, coalesce_key=KEY)
    assert Message.objects.count() == 0


def test_the_first_message_titles_an_untitled_thread_only(thread: Thread, user: Any) -> None:
    _send(thread, "r1")
    req = parse_send({"content": "other words", "request_id": "r2"}, max_chars=1000)
    services.send_prepare(thread_id=thread.pk, req=req, parent_id=None)
    titled = Thread.objects.create(owner=user, provider="demo", model="demo-1", title="Mine")
    _send(titled, "r3")
    assert list(Thread.objects.order_by("pk").values_list("title", flat=True)) == ["same words", "Mine"]


def test_a_new_pair_is_written_without_reading_the_thread_or_looking_for_replays(thread: Thread) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from providers.catalog import catalog

    req = parse_send({"content": "hello", "request_id": "r1"}, max_chars=1000)
    catalog()  # fresh, as a send finds it: chat checks the model (acatalog) before it writes
    with CaptureQueriesContext(connection) as ctx:
        prepared = services.send_prepare(
            thread_id=thread.pk, thread=thread, req=req, parent_id=None, coalesce_key=KEY
        )
    reads = [
        q["sql"] for q in ctx.captured_queries if q["sql"].lstrip().upper().startswith(("SELECT", "WITH"))
    ]
    # Two reads: the end of the branch the message continues (#18: the thread's current leaf), and the
    # history for the provider (the path from the root). The thread row is otherwise only updated.
    assert len(reads) == 2 and "current_leaf_id" in reads[0] and "RECURSIVE" in reads[1], reads
    assert (prepared.provider, prepared.history) == ("demo", [("user", "hello")])


def test_sends_without_a_key_never_merge(thread: Thread) -> None:
    _send(thread, "r1", key=None)
    assert not _send(thread, "r2", key=None).replay
    assert Message.objects.count() == 4


def test_abandoned_streaming_messages_are_failed(thread: Thread) -> None:
    old, fresh = _send(thread, "old", key=None), _send(thread, "new", key=None)
    Message.objects.filter(pk=old.assistant_message["id"]).update(
        updated_at=timezone.now() - datetime.timedelta(seconds=700)
    )
    assert services.messages_fail_stale(older_than_s=660) == 1
    lost = Message.objects.get(pk=old.assistant_message["id"])
    assert (lost.status, lost.error_code) == ("error", "generation_lost")
    assert Message.objects.get(pk=fresh.assistant_message["id"]).status == "streaming"


def test_cancel_finds_the_streaming_reply_of_a_request_id_used_in_two_threads(
    thread: Thread, user: Any, other_user: Any
) -> None:
    """A request_id is unique per thread only: a cancel must reach the reply still streaming, not a
    newer finished one of the same id elsewhere, and never another user's (even for staff, first)."""
    from threads import selectors

    def pair(t: Thread, status: str) -> Message:
        asked = Message.objects.create(thread=t, role="user", content="q", request_id="r-1")
        return Message.objects.create(
            thread=t, role="assistant", status=status, request_id="r-1", parent=asked
        )

    streaming = pair(thread, "streaming")
    newer = Thread.objects.create(owner=user, title="newer", provider="demo")
    pair(newer, "complete")
    theirs = pair(Thread.objects.create(owner=other_user, title="theirs", provider="demo"), "streaming")
    assert selectors.assistant_for_request(user=user, request_id="r-1") == streaming
    assert services.message_cancel(user=user, request_id="r-1")["id"] == streaming.pk
    user.is_staff = True
    assert selectors.assistant_for_request(user=user, request_id="r-1") != theirs  # their own first
    assert selectors.assistant_for_request(user=other_user, request_id="r-1") == theirs


def test_last_exchange_reads_the_head_the_newest_question_and_its_reply_s_age(thread: Thread) -> None:
    from threads.selectors import last_exchange

    assert last_exchange(thread_id=thread.pk) == {"head_id": None}
    first = _send(thread, "r1")
    streaming = last_exchange(thread_id=thread.pk)
    assert streaming == {
        "head_id": first.assistant_message["id"],
        "user_content": "same words",
        "user_parent_id": None,
        "finished_ago_s": None,  # still streaming
    }
    services.message_finalize(message_id=first.assistant_message["id"], status="complete", content="x")
    Message.objects.filter(pk=first.assistant_message["id"]).update(
        updated_at=timezone.now() - datetime.timedelta(seconds=10)
    )
    finished = last_exchange(thread_id=thread.pk)["finished_ago_s"]
    assert 10 <= finished < 15


def test_a_failed_reply_has_no_finish_reason(thread: Thread) -> None:
    """#16 item 16: a failed message stored finish_reason "" (and the API showed it) instead of null."""
    first = _send(thread, "r1")
    assert first.assistant_message["finish_reason"] is None
    failed = services.message_finalize(message_id=first.assistant_message["id"], status="error", content="")
    assert failed is not None and failed["finish_reason"] is None
    assert Message.objects.get(pk=first.assistant_message["id"]).finish_reason is None
