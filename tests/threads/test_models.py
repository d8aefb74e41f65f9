from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, transaction

from threads.models import Message, Thread

pytestmark = [pytest.mark.django_db, pytest.mark.both]


@pytest.fixture
def thread(user: Any) -> Thread:
    return Thread.objects.create(owner=user, provider="demo", model="demo-1")


def test_one_user_message_per_request(thread: Thread) -> None:
    Message.objects.create(thread=thread, role="user", content="hi", request_id="r1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(thread=thread, role="user", content="hi", request_id="r1")


def test_one_assistant_message_per_request(thread: Thread) -> None:
    Message.objects.create(thread=thread, role="assistant", status="streaming", request_id="r1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(thread=thread, role="assistant", status="streaming", request_id="r1")


def test_user_and_assistant_share_a_request(thread: Thread) -> None:
    Message.objects.create(thread=thread, role="user", content="hi", request_id="r1")
    Message.objects.create(thread=thread, role="assistant", status="streaming", request_id="r1")
    assert Message.objects.filter(request_id="r1").count() == 2


def test_same_request_id_in_another_thread_is_allowed(thread: Thread, user: Any) -> None:
    other = Thread.objects.create(owner=user, provider="demo", model="demo-1")
    Message.objects.create(thread=thread, role="user", content="hi", request_id="r1")
    Message.objects.create(thread=other, role="user", content="hi", request_id="r1")


@pytest.mark.parametrize(
    "fields",
    [
        {"role": "system"},
        {"role": "user", "status": "streaming"},
        {"role": "assistant", "status": "pending"},
    ],
)
def test_check_constraints(thread: Thread, fields: dict[str, str]) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(thread=thread, content="x", request_id="r9", **fields)


def test_deleting_a_thread_deletes_its_messages(thread: Thread) -> None:
    Message.objects.create(thread=thread, role="user", content="hi", request_id="r1")
    thread.delete()
    assert Message.objects.count() == 0
