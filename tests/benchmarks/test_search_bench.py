"""benchmarks/search_bench.py writes its rows with raw SQL, so a new NOT NULL column on threads_thread or
threads_message breaks it without any Python error until the bench runs (CI's bench step crashed on
system_prompt). Here it fills and searches a small set on the real PostgreSQL schema."""

from __future__ import annotations

import pytest

from benchmarks import search_bench
from threads.models import Message, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]


def test_the_bench_fills_the_current_schema_and_finds_its_words() -> None:
    words = search_bench.vocabulary(50)
    user = search_bench.fill(threads=20, messages=200, words=words)
    assert Thread.objects.filter(owner=user).count() == 20
    assert Message.objects.filter(thread__owner=user).count() == 200
    result = search_bench.measure(user=user, words=words, queries=5)
    assert result["queries"] == 5 and result["mean_results"] > 0
