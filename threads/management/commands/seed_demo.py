"""`manage.py seed_demo`: a demo user with a few threads, one of them a long conversation in Markdown.

Used by scripts/lighthouse.sh and the browser tests (screenshots); handy for trying the UI by hand.
Running it again replaces the demo user's threads. The last line of output is JSON:
`{"username", "thread_id", "thread_ids", "sessionid", "huge_thread_id"}` (`sessionid` only with
`--session`, `huge_thread_id` with `--huge-exchanges N`).
"""

from __future__ import annotations

import json
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from threads.models import Message, Thread

# (prompt, Markdown reply) pairs; the long thread cycles through them. They cover what the page must
# render well on a phone: headings, lists, inline code, fenced code in several languages, a table.
EXCHANGES: tuple[tuple[str, str], ...] = (
    (
        "How do I read a large CSV file in Python without running out of memory?",
        "Read it **row by row** instead of loading it whole. The standard library is enough:\n\n"
        "```python\nimport csv\n\n"
        "def total(path: str) -> float:\n"
        '    with open(path, newline="", encoding="utf-8") as f:\n'
        '        return sum(float(row["amount"]) for row in csv.DictReader(f))\n```\n\n'
        "Memory stays flat because `csv.DictReader` yields one row at a time.",
    ),
    (
        "Give me some tips for writing good commit messages",
        "## Tips\n\n"
        "1. **Keep the subject short**: about 50 characters, imperative mood.\n"
        "2. **Explain why**, not only what: the diff already shows what.\n"
        "3. **One change per commit**, so that reverting is easy.\n"
        "4. **Reference the issue** it closes, e.g. `Fixes #42`.\n\n"
        "> A good message is a note to the person who reads `git log` in a year.",
    ),
    (
        "Compare SQLite and PostgreSQL for a small web app",
        "Both are solid; it depends on how many processes write at once.\n\n"
        "| Aspect | SQLite | PostgreSQL |\n|---|---|---|\n"
        "| Setup | a file | a server |\n| Concurrent writers | one at a time | many |\n"
        "| Backups | copy the file | `pg_dump` |\n\n"
        "Start with SQLite; move when you run several app servers.",
    ),
    (
        "Show me a bash one-liner to find the biggest files in a folder",
        "Use `du` and `sort`:\n\n```bash\ndu -ah . | sort -rh | head -n 10\n```\n\n"
        "- `-a` lists files, not only folders\n- `-h` prints human sizes, and `sort -h` understands them",
    ),
    (
        "What is a WebSocket, in two sentences?",
        "A WebSocket is a long-lived, two-way connection between a browser and a server, opened with an "
        "HTTP upgrade. Either side can send messages at any time, which makes it a good fit for chat "
        "and live updates.",
    ),
    (
        "Write a SQL query for the top 5 customers by revenue",
        "Assuming an `orders` table with `customer_id` and `amount`:\n\n"
        "```sql\nSELECT customer_id, SUM(amount) AS revenue\nFROM orders\n"
        "GROUP BY customer_id\nORDER BY revenue DESC\nLIMIT 5;\n```\n\n"
        "Add an index on `(customer_id, amount)` if the table is large.",
    ),
    (
        "Thanks, that helps!",
        "You're welcome! Ask a follow-up any time.",
    ),
    (
        "How should I structure a small JavaScript module?",
        "### A simple shape\n\n"
        "- one file per feature, exporting a few functions\n- no global state: pass what you need\n"
        "- keep DOM code at the edges\n\n"
        '```javascript\nexport function formatPrice(cents, currency = "EUR") {\n'
        '  return new Intl.NumberFormat("en", { style: "currency", currency }).format(cents / 100);\n'
        "}\n```",
    ),
)
THREADS = (
    "Weekend trip ideas",
    "Learning Rust: where to start",
    "Release notes draft",
    "Kitchen renovation budget",
)
LONG_TITLE = "A long conversation about code"


class Command(BaseCommand):
    help = "Create (or reset) a demo user with threads, one of them long; print JSON on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-password-2024")
        parser.add_argument(
            "--exchanges", type=int, default=24, help="question/answer pairs in the long thread"
        )
        parser.add_argument(
            "--huge-exchanges",
            type=int,
            default=0,
            help="also a thread of this many pairs (1000: the issue's 2,000-message thread); its id is huge_thread_id",
        )
        parser.add_argument("--session", action="store_true", help="also create a logged-in session")

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            user, ids = _seed(options["username"], options["password"], options["exchanges"])
            huge = _huge(user, options["huge_exchanges"]) if options["huge_exchanges"] else None
        out: dict[str, Any] = {"username": user.get_username(), "thread_id": ids[-1], "thread_ids": ids}
        if huge is not None:
            out["huge_thread_id"] = huge
        if options["session"]:
            out["sessionid"] = _session_for(user)
        self.stdout.write(json.dumps(out))


def _seed(username: str, password: str, exchanges: int) -> tuple[Any, list[int]]:
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(username=username)
    user.set_password(password)
    user.save()
    Thread.objects.filter(owner=user).delete()
    demo = settings.PROVIDERS["demo"]["model"]
    ids: list[int] = []
    for title in THREADS:
        thread = Thread.objects.create(owner=user, title=title, provider="demo", model=demo)
        _add_exchange(thread, 0, EXCHANGES[len(ids) % len(EXCHANGES)])
        ids.append(thread.pk)
    thread = Thread.objects.create(owner=user, title=LONG_TITLE, provider="demo", model=demo)
    for i in range(exchanges):
        _add_exchange(thread, i, EXCHANGES[i % len(EXCHANGES)])
    ids.append(thread.pk)
    return user, ids


def _huge(user: Any, exchanges: int) -> int:
    """A thread of `exchanges` pairs (a page shows the newest HISTORY_PAGE_SIZE): how long threads open."""
    demo = settings.PROVIDERS["demo"]["model"]
    thread = Thread.objects.create(
        owner=user, title=f"A {2 * exchanges:,}-message thread", provider="demo", model=demo
    )
    for i in range(exchanges):
        _add_exchange(thread, i, EXCHANGES[i % len(EXCHANGES)])
    return thread.pk


def _add_exchange(thread: Thread, i: int, exchange: tuple[str, str]) -> None:
    prompt, reply = exchange
    head = Message.objects.filter(thread=thread).order_by("-id").first()
    rid = f"seed-{i}"
    question = Message.objects.create(
        thread=thread, role=Message.Role.USER, content=prompt, request_id=rid, parent=head
    )
    Message.objects.create(
        thread=thread,
        role=Message.Role.ASSISTANT,
        content=reply,
        request_id=rid,
        parent=question,
        finish_reason="stop",
        input_tokens=len(prompt.split()),
        output_tokens=len(reply.split()),
    )


def _session_for(user: Any) -> str:
    """A session key logged in as `user`, as `login()` would make it (for tools that pass a cookie)."""
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return str(store.session_key)
