"""`manage.py burst`: a burst of sends against a running deployment, with the provider and the load
generator's own floor measured in the same run. Prints a results table; `--json-out` writes JSON.

    python manage.py burst --url http://127.0.0.1:8000 --token TOKEN --n 200 --concurrency 50 \
        --provider-url http://127.0.0.1:9100/v1 --json-out bench-results/burst.json

The client lives in `benchmarks/` (aiohttp, a dev dependency: `make install-dev`); see benchmarks/burst.py.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


def _burst_module() -> Any:
    try:
        from benchmarks import burst
    except ImportError as exc:  # aiohttp missing, or not run from the project root
        raise CommandError(
            f"{exc}. The load generator needs the dev extra (make install-dev) and runs from the project root."
        ) from exc
    return burst


class Command(BaseCommand):
    help = "Send a burst of messages to a running deployment and measure it against the provider."

    def add_arguments(self, parser: CommandParser) -> None:
        _burst_module().add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            _burst_module().run_and_report(options)
        except (RuntimeError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
