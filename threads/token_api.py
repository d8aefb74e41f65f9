"""API token self-service (docs/api.md "API tokens"): a user lists, creates and revokes their own
tokens. The tokens live in accounts (accounts/tokens.py); this is the JSON adapter, here beside the
rest of the API (threads/http.py: authentication, CSRF, the one error table)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils import timezone

from accounts.tokens import (
    MAX_EXPIRES_IN_DAYS,
    MAX_TOKEN_NAME_CHARS,
    api_token_create,
    api_token_data,
    api_token_list_for_user,
    api_token_revoke_own,
    token_expiry,
)
from core.dbasync import db_async
from threads.http import api_view, authed_user, body_json, json_response
from threads.limits import parse_id
from threads.validation import InvalidInput

TOKEN_CREATE_FIELDS = frozenset({"name", "expires_in_days"})


def parse_token_create(data: dict[str, Any]) -> tuple[str, int | None]:
    """The name and expiry (days; None: never) of a POST /api/tokens body (pure)."""
    unknown = set(data) - TOKEN_CREATE_FIELDS
    if unknown:
        raise InvalidInput("unknown_field", f"Unknown field(s): {', '.join(sorted(unknown))}.")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("invalid_name", "Give the token a 'name' (a non-empty string).")
    if len(name) > MAX_TOKEN_NAME_CHARS:
        raise InvalidInput("invalid_name", f"'name' is longer than {MAX_TOKEN_NAME_CHARS} characters.")
    days = data.get("expires_in_days")
    if days is not None and (
        isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_EXPIRES_IN_DAYS
    ):
        raise InvalidInput(
            "invalid_expiry",
            f"'expires_in_days' must be a whole number from 1 to {MAX_EXPIRES_IN_DAYS}, or null.",
        )
    return name.strip(), days


def _create(*, request: HttpRequest, name: str, days: int | None) -> dict[str, Any]:
    token, raw = api_token_create(
        user=authed_user(request),  # type: ignore[arg-type]
        name=name,
        expires_at=token_expiry(expires_in_days=days, now=timezone.now()),
        request=request,
    )
    return {"token": raw, **api_token_data(token)}


@api_view({"GET", "POST"})
async def tokens_collection(request: HttpRequest) -> HttpResponseBase:
    user = authed_user(request)
    if request.method == "POST":
        if getattr(request, "auth_method", None) == "token":
            # A leaked token must not mint tokens that outlive its own revocation.
            raise InvalidInput(
                "session_required",
                "Create tokens while logged in (the settings page or a session).",
                status=403,
            )
        name, days = parse_token_create(body_json(request))
        return json_response(await db_async(_create)(request=request, name=name, days=days), status=201)
    tokens = await db_async(api_token_list_for_user)(user=user)
    return json_response({"tokens": tokens, "next_cursor": None})  # one page: a person's own tokens


@api_view({"DELETE"})
async def token_item(request: HttpRequest, token_id: str) -> HttpResponseBase:
    pk = parse_id(token_id)
    revoked = pk is not None and await db_async(api_token_revoke_own)(
        user=authed_user(request), token_id=pk, request=request
    )
    if not revoked:
        raise InvalidInput("not_found", "No such token.", status=404)
    return HttpResponse(status=204)
