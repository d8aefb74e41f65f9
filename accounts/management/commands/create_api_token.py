from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.tokens import api_token_create_for_username


class Command(BaseCommand):
    help = "Create an API token for USERNAME (the user is created if missing). The token is the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a label shown in admin")

    def handle(self, *args: Any, **options: Any) -> None:
        raw = api_token_create_for_username(username=options["username"], name=options["name"])
        self.stderr.write(
            f"Created a token for {options['username']}; it is not stored and cannot be shown again."
        )
        self.stdout.write(raw)
