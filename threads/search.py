"""Search of a user's threads by words in titles and message text (#18).

PostgreSQL: full-text search, `to_tsvector('simple', …)` stored for messages (a generated column) and
computed for titles, both under GIN indexes (migration 0005),
ranked with ts_rank, snippets from ts_headline. SQLite (the embedded default): an FTS5 table kept in step
with the messages by triggers, ranked with bm25, snippets from snippet(). Words in any order, every word
must match as the start of a word ("past" finds "pasta": `'past':*` in to_tsquery, `"past"*` in FTS5),
case-insensitive. Words shorter than PREFIX_MIN_CHARS match whole words only.

Snippets are marked with two control characters by the database, then HTML-escaped here and the marks
turned into <mark>: message text never reaches a page as HTML.
"""

from __future__ import annotations

import html
import re
from typing import Any

from django.db import connection

from threads import events, usage
from threads.models import Thread

# What a page of results holds: the best-ranked threads.
RESULTS = 50
# Shorter words are whole words: benchmarks/search_bench.py's 200,000 messages, p95 of one-word queries
# of a word's first 1, 2, 3, 4 letters as prefixes: 179, 240, 48, 55 ms (a 2-letter prefix is in half the
# messages, all ranked); whole words 11 ms.
PREFIX_MIN_CHARS = 3
_START, _STOP = "\x01", "\x02"
_WORD = re.compile(r"\w+", re.UNICODE)

# The query is written out in each WHERE (not taken from the CTE) so the planner sees a constant and
# uses the GIN indexes; the CTE serves the ranking and headlines.
_PG_SQL = """
WITH q AS (SELECT to_tsquery('simple', %(q)s) AS q),
hits AS (
    SELECT m.thread_id, m.id, ts_rank(m.search_vector, q.q) AS rank
    FROM threads_message m JOIN threads_thread t ON t.id = m.thread_id, q
    WHERE m.search_vector @@ to_tsquery('simple', %(q)s) AND t.owner_id = %(owner)s
    UNION ALL
    SELECT t.id, NULL, 2 * ts_rank(to_tsvector('simple', t.title), q.q)
    FROM threads_thread t, q
    WHERE to_tsvector('simple', t.title) @@ to_tsquery('simple', %(q)s) AND t.owner_id = %(owner)s
),
best AS (
    SELECT DISTINCT ON (thread_id) thread_id, id, rank FROM hits ORDER BY thread_id, rank DESC, id DESC
),
top AS (SELECT * FROM best ORDER BY rank DESC, thread_id DESC LIMIT %(limit)s)
SELECT top.thread_id, top.rank,
       CASE WHEN top.id IS NULL THEN NULL ELSE ts_headline('simple', m.content, q.q,
            'StartSel=' || chr(1) || ', StopSel=' || chr(2) || ', MaxWords=24, MinWords=8, MaxFragments=1')
       END
FROM top LEFT JOIN threads_message m ON m.id = top.id, q
ORDER BY top.rank DESC, top.thread_id DESC
"""

# FTS5's ranking functions work only in a plain query of the FTS table (no grouping around them): the
# best match per thread is picked from the ranked rows here, the first `_SQLITE_ROWS` of them.
_SQLITE_ROWS = 2000
_SQLITE_SQL = """
SELECT m.thread_id, snippet(threads_message_fts, 0, char(1), char(2), '…', 16)
FROM threads_message_fts JOIN threads_message m ON m.id = threads_message_fts.rowid
JOIN threads_thread t ON t.id = m.thread_id
WHERE threads_message_fts MATCH %s AND t.owner_id = %s
ORDER BY bm25(threads_message_fts), m.id DESC LIMIT %s
"""


def words(query: str) -> list[str]:
    """The words of a query, lower-cased, at most ten."""
    return [w.lower() for w in _WORD.findall(query)][:10]


def pg_query(found: list[str]) -> str:
    """A to_tsquery text: every word as a prefix, quoted (a quoted lexeme is text to to_tsquery: no
    operator a user types, `&`, `|`, `!`, `<->`, `:*`, reaches it; quotes and backslashes are escaped)."""
    return " & ".join("'" + w.replace("\\", "\\\\").replace("'", "''") + "'" + _star(w, ":*") for w in found)


def fts5_query(found: list[str]) -> str:
    """An FTS5 MATCH text: every word as a prefix, quoted (no operator a user types can reach FTS5)."""
    return " ".join('"' + w.replace('"', '""') + '"' + _star(w, "*") for w in found)


def _star(word: str, star: str) -> str:
    return star if len(word) >= PREFIX_MIN_CHARS else ""


def _whole(word: str) -> str:
    """A regex's end for a short word: not followed by more of a word."""
    return "" if len(word) >= PREFIX_MIN_CHARS else r"(?!\w)"


def snippet_html(raw: str | None) -> str | None:
    """The database's marked snippet as safe HTML."""
    if raw is None:
        return None
    return html.escape(raw).replace(_START, "<mark>").replace(_STOP, "</mark>")


def search_threads(*, user: Any, query: str, limit: int = RESULTS) -> list[dict[str, Any]]:
    """The user's threads (archived ones too) matching every word of `query`, best first, each with its
    `snippet` (HTML, the matched words in <mark>; null when only the title matched)."""
    found = words(query)
    if not found:
        return []
    ranked = (
        _pg(user.pk, found, limit) if connection.vendor == "postgresql" else _sqlite(user.pk, found, limit)
    )
    if connection.vendor != "postgresql":
        ranked = _with_titles(user.pk, found, ranked, limit)
    threads = Thread.objects.in_bulk([tid for tid, _ in ranked])
    spent = usage.thread_usage(list(threads))
    return [
        {**events.thread_data(threads[tid]), "usage": spent[tid], "snippet": snippet_html(snip)}
        for tid, snip in ranked
        if tid in threads
    ]


def _pg(owner: int, found: list[str], limit: int) -> list[tuple[int, str | None]]:
    with connection.cursor() as cursor:
        cursor.execute(_PG_SQL, {"q": pg_query(found), "owner": owner, "limit": limit})
        return [(tid, snip) for tid, _, snip in cursor.fetchall()]


def _sqlite(owner: int, found: list[str], limit: int) -> list[tuple[int, str | None]]:
    with connection.cursor() as cursor:
        cursor.execute(_SQLITE_SQL, [fts5_query(found), owner, _SQLITE_ROWS])
        rows = cursor.fetchall()
    best: dict[int, str | None] = {}
    for tid, snip in rows:  # best first: each thread's first row is its best match
        best.setdefault(tid, snip)
    return list(best.items())[:limit]


def _with_titles(
    owner: int, found: list[str], ranked: list[tuple[int, str | None]], limit: int
) -> list[tuple[int, str | None]]:
    """SQLite: threads whose title holds every word (as the start of a word, a short one whole) come first (a user's titles
    are few: a LIKE each, then the word starts checked here)."""
    qs = Thread.objects.filter(owner_id=owner)
    for w in found:
        qs = qs.filter(title__icontains=w)
    starts = [re.compile(r"(?<!\w)" + re.escape(w) + _whole(w), re.IGNORECASE) for w in found]
    titles = qs.order_by("-updated_at").values_list("id", "title")
    titled = [tid for tid, title in titles if all(s.search(title) for s in starts)][:limit]
    seen = set(titled)
    snips = dict(ranked)
    return [(tid, snips.get(tid)) for tid in titled] + [(t, s) for t, s in ranked if t not in seen][
        : max(0, limit - len(titled))
    ]
