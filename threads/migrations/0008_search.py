# Search (#18, threads/search.py): on PostgreSQL, GIN indexes over the 'simple' text-search vectors of
# message text and titles; on SQLite, an FTS5 index of message text that triggers keep in step.

from django.db import migrations

# The vector is stored (a generated column Django's model does not know of, written by PostgreSQL alone):
# ranking a common word's thousands of matches then reads it instead of parsing every text again
# (measured with benchmarks/search_bench.py: p95 183 ms computed on the fly against stored, see the commit).
PG_UP = [
    "ALTER TABLE threads_message ADD COLUMN IF NOT EXISTS search_vector tsvector"
    " GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED",
    "CREATE INDEX IF NOT EXISTS message_search ON threads_message USING GIN (search_vector)",
    "CREATE INDEX IF NOT EXISTS thread_title_search ON threads_thread USING GIN (to_tsvector('simple', title))",
]
PG_DOWN = [
    "DROP INDEX IF EXISTS message_search",
    "DROP INDEX IF EXISTS thread_title_search",
    "ALTER TABLE threads_message DROP COLUMN IF EXISTS search_vector",
]
SQLITE_UP = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS threads_message_fts USING fts5(content, content='threads_message',"
    " content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS threads_message_fts_ai AFTER INSERT ON threads_message BEGIN"
    " INSERT INTO threads_message_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER IF NOT EXISTS threads_message_fts_ad AFTER DELETE ON threads_message BEGIN"
    " INSERT INTO threads_message_fts(threads_message_fts, rowid, content) VALUES ('delete', old.id, old.content);"
    " END",
    "CREATE TRIGGER IF NOT EXISTS threads_message_fts_au AFTER UPDATE OF content ON threads_message BEGIN"
    " INSERT INTO threads_message_fts(threads_message_fts, rowid, content) VALUES ('delete', old.id, old.content);"
    " INSERT INTO threads_message_fts(rowid, content) VALUES (new.id, new.content); END",
    "INSERT INTO threads_message_fts(threads_message_fts) VALUES ('rebuild')",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS threads_message_fts_ai",
    "DROP TRIGGER IF EXISTS threads_message_fts_ad",
    "DROP TRIGGER IF EXISTS threads_message_fts_au",
    "DROP TABLE IF EXISTS threads_message_fts",
]


def _run(statements):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        for sql in statements.get(vendor, []):
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("threads", "0007_tree"),
    ]

    operations = [
        migrations.RunPython(
            _run({"postgresql": PG_UP, "sqlite": SQLITE_UP}),
            _run({"postgresql": PG_DOWN, "sqlite": SQLITE_DOWN}),
        ),
    ]
