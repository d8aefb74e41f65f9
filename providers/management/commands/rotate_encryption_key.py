"""Re-encrypt every stored API key under the first FIELD_ENCRYPTION_KEY (the rotation's second step)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.crypto import InvalidToken
from providers.models import Connection, secret_box


class Command(BaseCommand):
    help = (
        "Re-encrypt connection API keys with the first key of FIELD_ENCRYPTION_KEY=new,old; "
        "afterwards the old key can be dropped."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        box = secret_box()
        done = 0
        with transaction.atomic():
            for row in Connection.objects.select_for_update().exclude(api_key_encrypted=""):
                try:
                    row.api_key_encrypted = box.rotate(row.api_key_encrypted)
                except InvalidToken:
                    raise CommandError(
                        f"The API key of connection {row.name!r} opens with none of the keys in "
                        "FIELD_ENCRYPTION_KEY: add the key it was stored with (after the new one)."
                    ) from None
                row.save(update_fields=["api_key_encrypted"])
                done += 1
        self.stdout.write(f"Re-encrypted {done} API key(s) with the first FIELD_ENCRYPTION_KEY.")
