"""Reading an upstream's model list (the admin action "fetch models"): OpenAI-compatible
`GET {base}/models`, Anthropic `GET {base}/v1/models`, Gemini `GET {base}/v1beta/models` (models.list).
Sync (it runs in an admin request); the parsing is pure."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

# Pages read at most (Anthropic and Gemini page their lists; a few hundred models is plenty).
MAX_PAGES = 10


class ListingError(Exception):
    """The list could not be read; the message is safe to show staff (no key, no upstream body)."""


def _openai(data: Any) -> tuple[list[str], str | None]:
    return [str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and m.get("id")], None


def _anthropic(data: Any) -> tuple[list[str], str | None]:
    ids = [str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and m.get("id")]
    return ids, (str(data["last_id"]) if data.get("has_more") and data.get("last_id") else None)


def _gemini(data: Any) -> tuple[list[str], str | None]:
    ids = []
    for m in data.get("models", []):
        if not isinstance(m, dict) or not m.get("name"):
            continue
        methods = m.get("supportedGenerationMethods")
        if methods is None or "generateContent" in methods:  # chat models only
            ids.append(str(m["name"]).removeprefix("models/"))
    return ids, (str(data["nextPageToken"]) if data.get("nextPageToken") else None)


def _request(kind: str, api_key: str, cursor: str | None) -> tuple[str, dict[str, str], dict[str, str]]:
    if kind == "anthropic":
        params = {"limit": "1000", **({"after_id": cursor} if cursor else {})}
        return "/v1/models", {"x-api-key": api_key, "anthropic-version": "2023-06-01"}, params
    if kind == "gemini":
        params = {"pageSize": "1000", **({"pageToken": cursor} if cursor else {})}
        return "/v1beta/models", {"x-goog-api-key": api_key}, params
    return "/models", ({"authorization": f"Bearer {api_key}"} if api_key else {}), {}


_PARSERS: Mapping[str, Callable[[Any], tuple[list[str], str | None]]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "gemini": _gemini,
}


def fetch_model_ids(
    *, kind: str, base_url: str, api_key: str, transport: httpx.BaseTransport | None = None
) -> list[str]:
    """The model ids the upstream lists, in its order. Raises ListingError."""
    parse = _PARSERS.get(kind)
    if parse is None:
        raise ListingError(f"A {kind} connection has no model list to fetch.")
    ids: list[str] = []
    cursor: str | None = None
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=15.0, transport=transport) as client:
        for _ in range(MAX_PAGES):
            path, headers, params = _request(kind, api_key, cursor)
            try:
                resp = client.get(path, headers=headers, params=params)
            except httpx.HTTPError as exc:
                raise ListingError(f"The server could not be reached ({type(exc).__name__}).") from exc
            if resp.status_code in (401, 403):
                raise ListingError(f"The server refused the API key (HTTP {resp.status_code}).")
            if not resp.is_success:
                raise ListingError(f"The server answered HTTP {resp.status_code} to the model list request.")
            try:
                data = resp.json()
                page, cursor = parse(data if isinstance(data, dict) else {})
            except (ValueError, KeyError, TypeError) as exc:
                raise ListingError("The server's model list could not be read.") from exc
            ids += [i for i in page if i not in ids]
            if cursor is None:
                break
    return ids
