"""`manage.py prune_audit`: delete audit rows older than AUDIT_RETENTION_DAYS now (the server also does
it by itself once a day: accounts/retention.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from accounts.audit import audit_prune


class Command(BaseCommand):
    help = "Delete audit log rows older than AUDIT_RETENTION_DAYS."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"Deleted {audit_prune()} audit row(s).")
