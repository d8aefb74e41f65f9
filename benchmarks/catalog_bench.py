"""The model catalog's load (providers.catalog.load_catalog), timed in process: what a send after a quiet
spell of MODEL_CATALOG_TTL_S waits on, and a burst's leader on its way to the provider.

    .venv/bin/python -m benchmarks.catalog_bench [--offers 200] [--database-url postgres://…/db]

Writes --connections connections offering --offers models between them (every other one to two groups
only), times --loads loads after three untimed ones, and rolls the rows back. Without --database-url,
a migrated SQLite file in a temporary directory. Prints one JSON object (the offers, and the load's
p50/p95 in ms) and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._common import pct  # noqa: E402


def fill(*, connections: int, offers: int) -> None:
    from django.contrib.auth.models import Group

    from providers.models import Connection, ModelOffer

    groups = [Group.objects.create(name=f"catalog-bench-{i}") for i in range(2)]
    for c in range(connections):
        row = Connection(name=f"bench-{c}", kind="openai", base_url="https://bench.invalid/v1")
        row.set_api_key(f"sk-bench-{c}")
        row.save()
        for m in range(c, offers, connections):
            offer = ModelOffer.objects.create(
                connection=row, model=f"model-{m}", position=m, everyone=m % 2 == 0
            )
            if m % 2:
                offer.groups.set(groups)


def measure(loads: int) -> dict[str, Any]:
    from providers.catalog import load_catalog

    for _ in range(3):
        load_catalog()
    times = []
    for _ in range(loads):
        t = time.perf_counter()
        loaded = load_catalog()
        times.append((time.perf_counter() - t) * 1000)
    return {
        "offers_loaded": len(loaded.offers),
        "p50_ms": round(pct(times, 50), 2),
        "p95_ms": round(pct(times, 95), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument(
        "--database-url", default="", help="default: a migrated SQLite file in a temporary directory"
    )
    p.add_argument("--connections", type=int, default=5)
    p.add_argument("--offers", type=int, default=200)
    p.add_argument("--loads", type=int, default=30)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "catalog.json"))
    opts = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="catalog-bench-") as tmp:
        os.environ["DATABASE_URL"] = opts.database_url or f"sqlite:///{tmp}/db.sqlite3"
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatapp.settings")
        os.environ.setdefault("DEBUG", "true")
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection, transaction

        if not opts.database_url:
            call_command("migrate", verbosity=0)
        result: dict[str, Any] = {"database": connection.vendor, "connections": opts.connections}
        with transaction.atomic():
            fill(connections=opts.connections, offers=opts.offers)
            result |= measure(opts.loads)
            transaction.set_rollback(True)  # the rows were the benchmark's own
        connection.close()
    print(json.dumps(result))
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
