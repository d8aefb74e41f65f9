"""The search index's machinery (threads/migrations/0008_search.py) outlives the later migrations, both
ways. On SQLite it is triggers on threads_message, and a migration that rebuilds the table (SQLite's way
to add or drop a column) drops them: search then misses every message written after it (0010 did, until
it made them again). On PostgreSQL it is a generated column that Django's models do not know of."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]

SQLITE = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'threads_message'"
POSTGRESQL = "SELECT column_name FROM information_schema.columns WHERE table_name = 'threads_message'"
EXPECTED = {
    "sqlite": {"threads_message_fts_ai", "threads_message_fts_ad", "threads_message_fts_au"},
    "postgresql": {"search_vector"},
}


def _migrate(targets: list[tuple[str, str | None]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def _machinery() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(SQLITE if connection.vendor == "sqlite" else POSTGRESQL)
        return EXPECTED[connection.vendor] <= {name for (name,) in cursor.fetchall()}


def test_the_search_machinery_outlives_every_later_migration_both_ways() -> None:
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    assert _machinery()  # a fresh database, migrated to the end
    _migrate([("threads", "0008_search")])  # back through every later migration
    assert _machinery()
    _migrate(leaves)
    assert _machinery()
