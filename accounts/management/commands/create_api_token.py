from __future__ import annotations

import getpass
import sys
from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.tokens import api_token_create_for_username


def _read_password(stdin: Any) -> str:
    """Asked twice at a terminal (getpass); one line from a pipe (`echo pw | … --password`)."""
    if stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password (again): "):
            raise CommandError("The two passwords differ.")
        return first
    return str(stdin.readline()).rstrip("\r\n")


class Command(BaseCommand):
    help = (
        "Create an API token for USERNAME (the user is created if missing). The token is the last line. "
        "A user created here has no password, so cannot log in in a browser unless --password is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a label shown in admin")
        parser.add_argument(
            "--password",
            action="store_true",
            help="also set the user's password, so they can log in in a browser "
            "(asked twice at a terminal, else read from the first line of standard input)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["username"]
        password = _read_password(sys.stdin) if options["password"] else None
        if password is not None:
            try:
                password_validation.validate_password(password, get_user_model()(username=username))
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
        raw = api_token_create_for_username(username=username, name=options["name"])
        user = get_user_model().objects.get(username=username)
        if password is not None:
            user.set_password(password)
            user.save(update_fields=["password"])
        self.stderr.write(f"Created a token for {username}; it is not stored and cannot be shown again.")
        if not user.password or not user.has_usable_password():  # get_or_create leaves it empty
            self.stderr.write(
                f"{username} has no password, so cannot log in in a browser (the token works for the API). "
                f"To log in too: manage.py changepassword {username} (or run this with --password)."
            )
        self.stdout.write(raw)
