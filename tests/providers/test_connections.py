"""Connections (#17): API keys encrypted at rest, a wrong FIELD_ENCRYPTION_KEY a clear start-up error,
the environment's providers bootstrapped as connections, and the migration keeping threads' models."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import AsyncClient

from providers import bootstrap, catalog
from providers.models import Connection, ModelOffer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]


def test_the_row_never_holds_the_plain_key() -> None:
    row = Connection(name="acct", kind="openai", base_url="https://api.example.com/v1")
    row.set_api_key("sk-very-secret-123")
    row.save()
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM providers_connection")
        stored = repr(cursor.fetchall())
    assert "sk-very-secret-123" not in stored
    assert Connection.objects.get().api_key == "sk-very-secret-123"


def test_a_wrong_key_is_a_clear_start_up_error(settings: Any) -> None:
    row = Connection(name="acct", kind="openai")
    row.set_api_key("sk-secret")
    row.save()
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(ImproperlyConfigured, match="cannot decrypt the API key of connection 'acct'") as err:
        bootstrap.start_up()
    assert "sk-secret" not in str(err.value)


def test_rotation_keeps_keys(settings: Any) -> None:
    old, new = settings.FIELD_ENCRYPTION_KEYS[0], Fernet.generate_key().decode()
    row = Connection(name="acct", kind="openai")
    row.set_api_key("sk-secret")
    row.save()
    settings.FIELD_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_encryption_key")
    settings.FIELD_ENCRYPTION_KEYS = [new]
    bootstrap.check_keys()
    assert Connection.objects.get().api_key == "sk-secret"


async def test_an_old_style_environment_yields_a_working_connection(settings: Any, token: str) -> None:
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "openai": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-env", "model": "env-model"},
    }
    settings.DEFAULT_PROVIDER = "openai"
    from asgiref.sync import sync_to_async

    await sync_to_async(bootstrap.start_up)()
    row = await Connection.objects.aget(name="openai")
    assert (row.kind, row.base_url, row.from_env) == ("openai", "http://127.0.0.1:9/v1", True)
    assert await sync_to_async(lambda: row.api_key)() == "sk-env"
    offer = await ModelOffer.objects.aget(connection=row)
    assert (offer.model, offer.offered, offer.everyone, offer.is_default) == ("env-model", True, True, True)
    catalog.reset()
    api = AsyncClient(AUTHORIZATION=f"Bearer {token}")
    models = (await api.get("/api/models")).json()["models"]
    assert [m["id"] for m in models if m["default"]] == ["openai/env-model"]
    created = await api.post("/api/threads", {}, content_type="application/json")
    assert created.json()["model_id"] == "openai/env-model"
    # Twice is the same: a restart updates, never duplicates.
    await sync_to_async(bootstrap.start_up)()
    assert await Connection.objects.acount() == 2 and await ModelOffer.objects.acount() == 2


def test_the_migration_keeps_every_threads_provider_and_model(django_user_model: Any, settings: Any) -> None:
    # The deployment configures OpenAI with a key (and Anthropic without one).
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "openai": {**settings.PROVIDERS["openai"], "api_key": "sk-env-openai"},
    }
    executor = MigrationExecutor(connection)
    # The schema before #17: threads and messages without model_id or system_prompt, no connections.
    before = [("threads", "0003_finish_reason_null"), ("providers", "0002_featureflag_moved_to_ops")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    owner = old.get_model("auth", "User").objects.create(username="old")
    Thread, Message = old.get_model("threads", "Thread"), old.get_model("threads", "Message")
    rows = [
        ("demo", "demo-1"),
        ("openai", "gpt-4o"),
        ("anthropic", "claude-x"),
        ("vllm", "meta-llama/Llama-3.1-8B"),
    ]
    for provider, model in rows:
        t = Thread.objects.create(owner=owner, provider=provider, model=model)
        Message.objects.create(thread=t, role="assistant", request_id="r", content="x")
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    from threads.models import Message as NewMessage
    from threads.models import Thread as NewThread

    assert sorted(NewThread.objects.values_list("provider", "model")) == sorted(rows)
    assert sorted(NewMessage.objects.values_list("model_id", flat=True)) == sorted(
        f"{p}/{m}" for p, m in rows
    )
    assert sorted(ModelOffer.objects.values_list("connection__name", "model")) == sorted(rows)
    # A provider the deployment configures stays usable, with its key stored encrypted; one it does not
    # (no key, or not a provider of the settings) is withdrawn.
    assert dict(Connection.objects.values_list("name", "enabled")) == {
        "demo": True,
        "openai": True,
        "anthropic": False,
        "vllm": False,
    }
    openai = Connection.objects.get(name="openai")
    assert openai.api_key == "sk-env-openai" and "sk-env-openai" not in openai.api_key_encrypted
    assert (openai.kind, openai.base_url) == ("openai", settings.PROVIDERS["openai"]["base_url"])


async def test_callers_meeting_a_stale_catalog_together_share_one_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, each ran its own: the first sends to many threads after a quiet spell each ran the
    catalog's three queries."""
    import asyncio

    from asgiref.sync import sync_to_async

    def offered() -> None:
        row = Connection.objects.create(name="shared", kind="openai", base_url="https://api.example.com/v1")
        ModelOffer.objects.create(connection=row, model="m2")

    await sync_to_async(offered)()
    catalog.reset()
    loads: list[int] = []
    load = catalog.load_catalog

    def counted() -> catalog.Catalog:
        loads.append(1)
        return load()

    monkeypatch.setattr(catalog, "load_catalog", counted)
    found = await asyncio.gather(*(catalog.acatalog() for _ in range(8)))
    assert len(loads) == 1
    assert all(c is found[0] for c in found) and ("shared", "m2") in {
        (o.connection, o.model) for o in found[0].offers
    }
    catalog.reset()


def test_the_catalog_never_prints_a_key() -> None:
    """The catalog holds each connection's plain key for the provider it builds: its repr (a log line,
    a traceback's locals, an assertion message) must not show it."""
    row = Connection(name="acct", kind="openai", base_url="https://api.example.com/v1")
    row.set_api_key("sk-very-secret-456")
    row.save()
    ModelOffer.objects.create(connection=row, model="m")
    loaded = catalog.load_catalog()
    assert loaded.connections["acct"].config["api_key"] == "sk-very-secret-456"
    assert "sk-very-secret-456" not in repr(loaded) and "sk-very-secret-456" not in str(loaded.connections)


def test_the_catalog_is_read_as_rows_not_an_instance_per_offer_and_group() -> None:
    """A send after a quiet spell waits on this load: built from plain rows, it took 5 ms instead of
    17-23 ms at 200 offers (benchmarks/catalog_bench.py). Fails on the prefetching load, which built a
    ModelOffer per offer and a Group per offer's group."""
    from django.contrib.auth.models import Group
    from django.db.models.signals import post_init

    staff, research = Group.objects.create(name="staff"), Group.objects.create(name="research")
    b = Connection.objects.create(name="b-conn", kind="openai", base_url="https://b.example.com/v1")
    a = Connection.objects.create(name="a-conn", kind="anthropic", base_url="https://a.example.com/v1")
    ModelOffer.objects.create(connection=b, model="b2", position=2, label="B two", is_default=True)
    ModelOffer.objects.create(connection=b, model="b1", position=1, context_tokens=8000)
    ModelOffer.objects.create(connection=b, model="hidden", position=0, offered=False)
    closed = ModelOffer.objects.create(connection=a, model="a1", position=1, everyone=False)
    closed.groups.set([staff, research])
    built: list[str] = []

    def note(sender: Any, **kwargs: Any) -> None:
        built.append(sender.__name__)

    post_init.connect(note, sender=ModelOffer)
    post_init.connect(note, sender=Group)
    try:
        loaded = catalog.load_catalog()
    finally:
        post_init.disconnect(note, sender=ModelOffer)
        post_init.disconnect(note, sender=Group)

    assert built == []
    mine = [o for o in loaded.offers if o.connection in ("a-conn", "b-conn")]
    # The pickers' order (position, then connection, then model); a withdrawn offer is not there.
    assert [(o.connection, o.model) for o in mine] == [("a-conn", "a1"), ("b-conn", "b1"), ("b-conn", "b2")]
    a1, b1, b2 = mine
    assert (a1.everyone, a1.groups) == (False, frozenset({staff.pk, research.pk}))
    assert (b1.label, b1.context_tokens, b1.groups, b1.is_default) == ("b1", 8000, frozenset(), False)
    assert (b2.label, b2.is_default) == ("B two", True)
    assert loaded.connections["b-conn"].config["model"] == "b2"  # its default offer
