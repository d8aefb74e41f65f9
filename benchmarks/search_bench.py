"""Search p95 (#18): one user's 10,000 threads with 200,000 messages on PostgreSQL, searched with one and
two words through threads.search (the code GET /api/threads?q= runs), timed in process.

    .venv/bin/python -m benchmarks.search_bench --database-url postgres://…/db [--threads N --messages N]

The database must be migrated (make bench's is); the rows are written in one statement per table with
generate_series (12 words a message from a 2,000-word vocabulary, so a word is in about 1,200 messages),
then ANALYZE. Prints one JSON object: sizes, p50/p95/max in ms of whole words, and of their first
PREFIX_MIN_CHARS letters (`prefix3_…`: prefix search's broadest queries).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SYLLABLES = ["ka", "lo", "mi", "re", "su", "ta", "ne", "po", "vi", "da", "go", "ru", "te", "sa", "bi", "no"]


def vocabulary(n: int = 2000) -> list[str]:
    """`n` distinct made-up words of two or three syllables (deterministic)."""
    two = ["".join(p) for p in itertools.product(SYLLABLES, repeat=2)]
    three = ["".join(p) for p in itertools.product(SYLLABLES, repeat=3)]
    return (two + three)[:n]


FILL_THREADS = """
INSERT INTO threads_thread (owner_id, title, provider, model, system_prompt, created_at, updated_at, archived)
SELECT %(owner)s, 'thread ' || g || ' ' || (%(words)s::text[])[1 + (g * 7919) %% %(nwords)s],
       'demo', 'demo-1', '', now(), now() - (g || ' seconds')::interval, false
FROM generate_series(1, %(threads)s) g
"""
FILL_MESSAGES = """
INSERT INTO threads_message (thread_id, role, content, status, request_id, created_at, updated_at,
                             error_code, error_message, model_id)
SELECT t.first + (g %% %(threads)s),
       CASE WHEN g %% 2 = 0 THEN 'user' ELSE 'assistant' END,
       (SELECT string_agg((%(words)s::text[])[1 + floor(random() * %(nwords)s)::int], ' ')
        FROM generate_series(1, 12) w WHERE g > 0),
       'complete', 'r' || g, now(), now(), '', '', 'demo-1'
FROM generate_series(1, %(messages)s) g,
     (SELECT min(id) AS first FROM threads_thread WHERE owner_id = %(owner)s) t
"""


def fill(*, threads: int, messages: int, words: list[str]) -> Any:
    from django.contrib.auth import get_user_model
    from django.db import connection

    user = get_user_model().objects.create_user(username=f"search-bench-{os.getpid()}")
    params: dict[str, Any] = {
        "owner": user.pk,
        "words": words,
        "nwords": len(words),
        "threads": threads,
        "messages": messages,
    }
    with connection.cursor() as cursor:
        cursor.execute(FILL_THREADS, params)
        cursor.execute(FILL_MESSAGES, params)
        cursor.execute("ANALYZE threads_thread")
        cursor.execute("ANALYZE threads_message")
    return user


def measure(*, user: Any, words: list[str], queries: int, seed: int = 1, prefix: int = 0) -> dict[str, Any]:
    """Queries of one and two words (`prefix`: each word's first `prefix` letters, a prefix search)."""
    from threads import search

    rng = random.Random(seed)
    times: list[float] = []
    hits = 0
    for i in range(queries):
        q = " ".join(w[: prefix or None] for w in rng.sample(words, 1 + i % 2))
        t = time.perf_counter()
        found = search.search_threads(user=user, query=q)
        times.append((time.perf_counter() - t) * 1000)
        hits += len(found)
    times.sort()
    return {
        "queries": queries,
        "p50_ms": times[len(times) // 2],
        "p95_ms": times[max(0, int(len(times) * 0.95) - 1)],
        "max_ms": times[-1],
        "mean_results": hits / queries,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--database-url", required=True)
    p.add_argument("--threads", type=int, default=10_000)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--queries", type=int, default=200)
    opts = p.parse_args(argv)
    os.environ["DATABASE_URL"] = opts.database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatapp.settings")
    os.environ.setdefault("DEBUG", "true")
    import django

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        print(json.dumps({"skipped": "search p95 is measured on PostgreSQL"}))
        return 0
    words = vocabulary()
    t = time.monotonic()
    user = fill(threads=opts.threads, messages=opts.messages, words=words)
    filled_s = time.monotonic() - t
    measure(user=user, words=words, queries=10, seed=0)  # warm the caches
    result = measure(user=user, words=words, queries=opts.queries)
    from threads.search import PREFIX_MIN_CHARS

    # The shortest words matched as prefixes ("kal" finds "kalomi"): the broadest queries searched so.
    prefixed = measure(user=user, words=words, queries=opts.queries, prefix=PREFIX_MIN_CHARS)
    result.update({f"prefix{PREFIX_MIN_CHARS}_{k}": v for k, v in prefixed.items() if k != "queries"})
    result.update({"threads": opts.threads, "messages": opts.messages, "fill_s": round(filled_s, 1)})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
