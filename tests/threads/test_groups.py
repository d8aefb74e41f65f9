"""Channel-layer names and messages (threads/groups.py): pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from threads import groups


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [
        ({"method": "session"}, True),
        ({"method": "token", "token_hash": "ab" * 32}, True),
        ({"method": "token"}, False),
        ({"method": "session", "token_hash": "ab"}, False),
        ({"method": "user"}, True),
        ({"method": "user", "token_hash": "ab"}, False),
        ({"method": "password"}, False),
    ],
)
def test_auth_revoked_message(kwargs: dict[str, str], ok: bool) -> None:
    if ok:
        assert groups.auth_revoked_message(**kwargs)["type"] == groups.AUTH_REVOKED
    else:
        with pytest.raises(ValueError):
            groups.auth_revoked_message(**kwargs)


@pytest.mark.parametrize(
    ("user_id", "ok"), [(1, True), (42, True), (0, False), (-1, False), (True, False), ("1", False)]
)
def test_user_group(user_id: Any, ok: bool) -> None:
    if ok:
        assert groups.user_group(user_id) == f"user.{user_id}"
    else:
        with pytest.raises(ValueError):
            groups.user_group(user_id)
