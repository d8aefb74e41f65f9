"""docs/api.md names every URL route the project serves, the WebSocket route, every event type the server
sends (threads/events.py), every frame type it accepts (threads/validation.py) and every error code a
client can be answered with."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from threads import validation

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ("chatapp", "threads", "billing", "providers", "ops", "accounts", "core")
DOC = ROOT / "docs" / "api.md"
EVENTS = ROOT / "threads" / "events.py"
# Included URLconfs that are a library's, not ours: their prefix is documented, not each of their routes.
FOREIGN_APPS = frozenset({"admin"})
# Django path converters (<int:thread_id>) and regex groups; the docs write a parameter as {name}.
_PARAM = re.compile(r"<[^>]+>|\(\?P<[^>]+>[^)]*\)")


def _walk(patterns: Iterable[URLPattern | URLResolver], prefix: str = "") -> Iterator[str]:
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if entry.app_name in FOREIGN_APPS:
                yield route
            else:
                yield from _walk(entry.url_patterns, route)
        else:
            yield route


def _documented(route: str, doc: str) -> bool:
    """Is `/route` in the docs, with any `{name}` standing for each parameter?"""
    # Regex routes inside an included URLconf (allauth's) carry their own ^ and $ mid-route.
    parts = _PARAM.split(route.replace("^", "").replace("$", ""))
    pattern = r"\{[a-z0-9_]+\}".join(re.escape(p) for p in parts)
    return re.search(r"`(?:[A-Z/]+ )?/" + pattern + r"(?:[`? ])", doc) is not None


def _type_literals(tree: ast.AST) -> set[str]:
    """The string values given to a `type` key or field: dict literals, calls (`Event(type=...)`) and
    `Literal[...]` annotations of a `type` field in a TypedDict."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "type":
                    found |= _strings(value)
        elif isinstance(node, ast.Call):
            found |= {s for kw in node.keywords if kw.arg == "type" for s in _strings(kw.value)}
        elif (
            isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "type"
        ):
            found |= _strings(node.annotation)
    return found


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def server_event_types() -> set[str]:
    return _type_literals(ast.parse(EVENTS.read_text()))


_CODE = re.compile(r"^[a-z]+(?:_[a-z]+)*$")


def _code(node: ast.AST) -> str | None:
    ok = isinstance(node, ast.Constant) and isinstance(node.value, str) and _CODE.match(node.value)
    return node.value if ok else None  # type: ignore[attr-defined]


def _sentence(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return " " in node.value
    return isinstance(node, ast.JoinedStr) and any(
        isinstance(v, ast.Constant) and " " in str(v.value) for v in node.values
    )


def _choices(tree: ast.AST) -> set[ast.AST]:
    """The nodes inside Django choices classes (`DAY = "day", "per day (UTC)"` is a value, not a code)."""
    return {
        inner
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(
            isinstance(b, ast.Attribute | ast.Name) and ast.unparse(b).endswith("Choices") for b in node.bases
        )
        for inner in ast.walk(node)
    }


def _codes_in(tree: ast.AST) -> set[str]:
    """Error codes as the code writes them: a snake_case string followed by a sentence (`("code",
    "message")` in a call or a short tuple), a `code=` / `error_code=` keyword, or a class's `code`."""
    found: set[str] = set()
    choices = _choices(tree)
    for node in ast.walk(tree):
        if node in choices:
            continue
        seq: list[ast.expr] = []
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Attribute) and node.func.attr == "get"
        ):
            seq = node.args
            found |= {c for k in node.keywords if k.arg in ("code", "error_code") and (c := _code(k.value))}
        elif isinstance(node, ast.Tuple) and len(node.elts) <= 3:
            seq = node.elts
        elif isinstance(node, ast.ClassDef):
            for st in node.body:
                if isinstance(st, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "code" for t in st.targets
                ):
                    found |= {c} if (c := _code(st.value)) else set()
        found |= {c for a, b in zip(seq, seq[1:], strict=False) if (c := _code(a)) and _sentence(b)}
    return found


def error_codes() -> set[str]:
    codes: set[str] = set()
    for package in RUNTIME:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts and "fake" not in path.parts:  # the fake's codes are upstream's
                codes |= _codes_in(ast.parse(path.read_text()))
    return codes


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text()


def test_the_walks_find_what_they_look_for() -> None:
    """The checks below are only as good as what they collect: a broken walk must not pass by finding nothing."""
    routes = set(_walk(get_resolver().url_patterns))
    assert {"api/threads", "api/threads/<int:thread_id>/messages", "accounts/login/", "admin/"} <= routes
    assert {"snapshot", "message.delta", "message.error", "error"} <= server_event_types()
    assert set(validation.FRAME_TYPES) >= {"send", "cancel"}
    assert {
        "invalid_json",
        "not_found",
        "rate_limited",
        "provider_timeout",
        "database_unavailable",
        "budget_exceeded",
    } <= error_codes()


def test_every_url_route_is_documented(doc: str) -> None:
    missing = sorted(r for r in _walk(get_resolver().url_patterns) if not _documented(r, doc))
    assert not missing, f"docs/api.md does not name these routes (write them as `/path/{{param}}`): {missing}"


def test_the_websocket_route_is_documented(doc: str) -> None:
    from chatapp.asgi import websocket_urlpatterns

    routes = [str(p.pattern) for p in websocket_urlpatterns]
    assert routes and all(_documented(r, doc) for r in routes), f"docs/api.md does not name {routes}"


def test_every_server_event_type_is_documented(doc: str) -> None:
    missing = sorted(t for t in server_event_types() if f"`{t}`" not in doc)
    assert not missing, f"docs/api.md does not describe these WebSocket/SSE event types: {missing}"


def test_every_client_frame_type_is_documented(doc: str) -> None:
    missing = sorted(t for t in validation.FRAME_TYPES if f'"type": "{t}"' not in doc)
    assert not missing, f'docs/api.md does not show these client frames (as {{"type": "..."}}): {missing}'


def test_every_error_code_is_documented(doc: str) -> None:
    missing = sorted(c for c in error_codes() if f"`{c}`" not in doc)
    assert not missing, f"docs/api.md's Errors table does not name these error codes: {missing}"


@pytest.mark.parametrize(
    ("source", "codes"),
    [
        ('raise InvalidInput("invalid_json", f"The body is not {x}.")', {"invalid_json"}),
        ('E = ("database_unavailable", "The database is down.")', {"database_unavailable"}),
        ('A = {"x": (413, "body_too_large", "Too large.")}', {"body_too_large"}),
        ('ev(code="not_found", message="gone")', {"not_found"}),
        ('class E(Exception):\n    code = "provider_timeout"', {"provider_timeout"}),
        ('d.get("message", "the identical request failed")', set()),
        ('WORDS = ("the", "would", "a word", "and more")', set()),
        ('check(("database", db_ok))', set()),
        ('class Period(models.TextChoices):\n    DAY = "day", "per day (UTC)"', set()),
    ],
)
def test_what_counts_as_an_error_code(source: str, codes: set[str]) -> None:
    assert _codes_in(ast.parse(source)) == codes


@pytest.mark.parametrize(
    ("route", "text", "expected"),
    [
        ("api/threads/<int:thread_id>", "`GET /api/threads/{id}` |", True),
        ("api/threads/<int:thread_id>", "`GET /api/threads/{id}/messages`", False),
        ("api/threads", "`POST /api/threads/cancel/{request_id}`", False),
        ("healthz", "`GET /healthz`", True),
        ("threads/<int:thread_id>/", "`GET /threads/{id}/`; `?html=`", True),
        ("threads/<int:thread_id>/", "`GET /threads/{id}`", False),
    ],
)
def test_documented_matches_whole_routes_only(route: str, text: str, expected: bool) -> None:
    assert _documented(route, text) is expected


# The JSON routes, as the tables write them (`GET /api/threads/{id}`): each gets a request and its answer
# in the Examples (#22 item 12: "request and response examples for every route").
_TABLE_ROUTE = re.compile(r"`(GET|POST|PATCH|DELETE) (/(?:api/|healthz|metrics)[^`?\s]*)")
_SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
_CURL_URL = re.compile(r"""(?:\$API|https?://[^/\s"']+)(/[^\s"'?]*)""")


def table_routes(doc: str) -> set[tuple[str, str]]:
    return set(_TABLE_ROUTE.findall(doc))


def curl_examples(doc: str) -> set[tuple[str, str]]:
    """(method, path) of every curl command in the doc's sh blocks (`$API` stands for `…/api`)."""
    found: set[tuple[str, str]] = set()
    for block in _SH_BLOCK.findall(doc):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split(" # ", 1)[0]
            if not command.lstrip().startswith("curl "):
                continue
            method = re.search(r"-X (\w+)", command)
            url = _CURL_URL.search(command)
            assert url, command
            path = ("/api" if url.group(0).startswith("$API") else "") + url.group(1)
            found.add((method.group(1) if method else "GET", path))
    return found


def _example_for(route: tuple[str, str], examples: set[tuple[str, str]]) -> bool:
    method, path = route
    pattern = re.compile("[^/]+".join(re.escape(part) for part in re.split(r"\{[a-z_]+\}", path)))
    return any(m == method and pattern.fullmatch(p) for m, p in examples)


def test_the_example_walks_find_what_they_look_for(doc: str) -> None:
    assert {("GET", "/api/threads/{id}"), ("POST", "/api/threads/cancel/{request_id}")} <= table_routes(doc)
    assert ("POST", "/api/threads/cancel/rivers-1") in curl_examples(doc)
    assert _example_for(("GET", "/api/threads/{id}"), {("GET", "/api/threads/7")})
    assert not _example_for(("GET", "/api/threads/{id}"), {("GET", "/api/threads/7/export")})
    assert not _example_for(("DELETE", "/api/threads/{id}"), {("GET", "/api/threads/7")})


def test_every_json_route_has_an_example(doc: str) -> None:
    """#22 item 12 (fails on the old code: the routes added by the second wave had no example)."""
    examples = curl_examples(doc)
    missing = sorted(f"{m} {p}" for m, p in table_routes(doc) if not _example_for((m, p), examples))
    assert not missing, f"docs/api.md's Examples have no curl request (and answer) for: {missing}"


# A citation of the bare name: the agreed spec is not in this repository; docs/api.md is what it serves.
_BARE_API_MD = re.compile(r"(?<![\w/])API\.md")


def test_no_code_cites_an_api_md_outside_the_repository() -> None:
    cites = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in (*RUNTIME, "tests")
        for path in (ROOT / package).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if _BARE_API_MD.search(line) and path != Path(__file__)
    ]
    assert not cites, f"these cite an API.md that is not in the repository (name docs/api.md): {cites}"
