"""Feature flags: env defaults, memory-only reads, TTL reloads, broadcasts, and the admin that sets them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st

from ops import flags
from ops.flags import flag_enabled, flags_changed, flags_ready, flags_reset
from ops.models import FeatureFlag
from tests.waiting import wait_until_async

ADD_URL = "/admin/ops/featureflag/add/"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(flags, "_clock", fake)
    return fake


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per table load (sync or async)."""
    calls: list[int] = []
    real = flags._read_rows

    def counting() -> dict[str, bool]:
        calls.append(1)
        return real()

    monkeypatch.setattr(flags, "_read_rows", counting)
    return calls


async def _until(predicate: Callable[[], bool], within: float = 1.0) -> None:
    """The state it reads has no event to wait on."""
    await wait_until_async(predicate, within=within)


def _listener_idle() -> bool:
    """This loop's listener asks for no load: it is parked on its wake-up event, and nothing set it."""
    return not flags._listener_for(asyncio.get_running_loop()).wake.is_set()


# --- reads -------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_env_default_applies_until_a_row_exists(settings: Any) -> None:
    settings.FLAG_DEFAULTS = {**settings.FLAG_DEFAULTS, "PACER_ENABLED": False}
    assert flag_enabled("PACER_ENABLED") is False
    assert flag_enabled("COALESCE_ENABLED") is True
    assert flag_enabled("NO_SUCH_FLAG") is False
    FeatureFlag.objects.create(name="PACER_ENABLED", enabled=True)
    flags_changed()
    assert flag_enabled("PACER_ENABLED") is True


@pytest.mark.django_db
def test_reads_within_the_ttl_do_not_query(clock: FakeClock, django_assert_num_queries: Any) -> None:
    FeatureFlag.objects.create(name="COALESCE_ENABLED", enabled=False)
    with django_assert_num_queries(1):  # the first read loads the table once
        assert flag_enabled("COALESCE_ENABLED") is False
    with django_assert_num_queries(0):
        for _ in range(1000):
            assert flag_enabled("COALESCE_ENABLED") is False
            assert flag_enabled("STREAM_FANOUT_ENABLED") is True


@pytest.mark.django_db
def test_stale_cache_reloads_at_most_once_per_ttl(clock: FakeClock, reads: list[int], settings: Any) -> None:
    settings.FLAG_CACHE_TTL_S = 1.0
    flag_enabled("COALESCE_ENABLED")
    FeatureFlag.objects.create(name="COALESCE_ENABLED", enabled=False)  # no flags_changed(): a lost broadcast
    clock.now += 0.9
    assert [flag_enabled("COALESCE_ENABLED") for _ in range(5)] == [True] * 5
    clock.now += 0.2
    assert [flag_enabled("COALESCE_ENABLED") for _ in range(5)] == [False] * 5
    assert len(reads) == 2


@pytest.mark.django_db
def test_a_failing_database_keeps_the_last_values(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    FeatureFlag.objects.create(name="PACER_ENABLED", enabled=False)
    assert flag_enabled("PACER_ENABLED") is False

    def down() -> dict[str, bool]:
        raise ConnectionError("database down")

    monkeypatch.setattr(flags, "_read_rows", down)
    clock.now += 5
    assert flag_enabled("PACER_ENABLED") is False


@given(st.permutations(range(6)))
def test_an_older_read_never_replaces_a_newer_one(order: list[int]) -> None:
    """Reload results may land in any order (admin thread vs loop listener): the newest read wins."""
    flags_reset()
    for read_at in order:
        flags._apply({"PACER_ENABLED": read_at % 2 == 0}, float(read_at))
    assert flags._state.read_at == 5.0 and flag_enabled("PACER_ENABLED") is False
    flags_reset()


# --- async: the hot path and the listener --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.both
async def test_async_reads_never_query_on_the_loop(reads: list[int], clock: FakeClock) -> None:
    await sync_to_async(FeatureFlag.objects.create)(name="STREAM_FANOUT_ENABLED", enabled=False)
    assert flag_enabled("STREAM_FANOUT_ENABLED") is True  # first read: defaults, load started
    await flags_ready()
    assert len(reads) == 1
    assert all(flag_enabled("STREAM_FANOUT_ENABLED") is False for _ in range(1000))
    assert _listener_idle() and len(reads) == 1  # fresh values: not one of the reads asked for a load
    clock.now += 5  # stale: the next read asks the listener, which reloads off the loop
    assert flag_enabled("STREAM_FANOUT_ENABLED") is False
    assert not _listener_idle()
    # The reload is installed (stamped with the time it started), and the listener, in the same step,
    # went back to waiting with no wake-up pending: no further load can start.
    await _until(lambda: flags._state.read_at == clock.now)
    assert _listener_idle() and len(reads) == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.both
async def test_a_saved_change_reaches_the_loop_within_a_second(settings: Any) -> None:
    settings.FLAG_CACHE_TTL_S = 60.0  # only the change propagation can explain a prompt update
    await flags_ready()
    assert flag_enabled("COALESCE_ENABLED") is True
    await sync_to_async(FeatureFlag.objects.create)(name="COALESCE_ENABLED", enabled=False)
    await sync_to_async(flags_changed)()
    await _until(lambda: flag_enabled("COALESCE_ENABLED") is False)


@pytest.mark.django_db(transaction=True)
@pytest.mark.services
async def test_the_broadcast_alone_makes_a_listener_reload(settings: Any) -> None:
    """Another process saved: here only the channel-layer message arrives (no local reload)."""
    settings.FLAG_CACHE_TTL_S = 60.0
    await flags_ready()
    await sync_to_async(FeatureFlag.objects.create)(name="PACER_ENABLED", enabled=False)
    assert flag_enabled("PACER_ENABLED") is True
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(flags.FLAGS_GROUP, {"type": flags.FLAGS_CHANGED})
    await _until(lambda: flag_enabled("PACER_ENABLED") is False)


# --- admin ----------------------------------------------------------------------------------------------


def _post(client: Client, url: str, **data: Any) -> Any:
    return client.post(url, {"description": "", "_save": "Save", **data})


@pytest.mark.django_db
def test_staff_toggle_through_the_admin_form(
    admin_client: Client, admin_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        resp = _post(admin_client, ADD_URL, name="STREAM_FANOUT_ENABLED")  # checkbox unticked: off
    assert resp.status_code == 302 and len(callbacks) == 1
    assert flag_enabled("STREAM_FANOUT_ENABLED") is False
    flag = FeatureFlag.objects.get()
    assert flag.updated_by == admin_user

    with django_capture_on_commit_callbacks(execute=True):
        resp = _post(admin_client, f"/admin/ops/featureflag/{flag.pk}/change/", name=flag.name, enabled="on")
    assert resp.status_code == 302 and flag_enabled("STREAM_FANOUT_ENABLED") is True

    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(f"/admin/ops/featureflag/{flag.pk}/delete/", {"post": "yes"})
    assert resp.status_code == 302 and not FeatureFlag.objects.exists()
    history = LogEntry.objects.filter(object_id=str(flag.pk)).order_by("action_time")
    assert [(e.action_flag, e.user_id) for e in history] == [
        (ADDITION, admin_user.pk),
        (CHANGE, admin_user.pk),
        (DELETION, admin_user.pk),
    ]


@pytest.mark.django_db
def test_list_editable_and_bulk_delete_propagate(
    admin_client: Client, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.FLAG_DEFAULTS = {**settings.FLAG_DEFAULTS, "PACER_ENABLED": False}
    flag = FeatureFlag.objects.create(name="PACER_ENABLED", enabled=False)
    with django_capture_on_commit_callbacks(execute=True):
        resp = admin_client.post(
            "/admin/ops/featureflag/",
            {
                "form-TOTAL_FORMS": "1",
                "form-INITIAL_FORMS": "1",
                "form-0-id": str(flag.pk),
                "form-0-enabled": "on",
                "_save": "Save",
            },
        )
    assert resp.status_code == 302 and flag_enabled("PACER_ENABLED") is True
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            "/admin/ops/featureflag/",
            {"action": "delete_selected", "_selected_action": [str(flag.pk)], "post": "yes"},
        )
    assert not FeatureFlag.objects.exists() and flag_enabled("PACER_ENABLED") is False


@pytest.mark.django_db
def test_changelist_offers_every_flag_still_on_its_default(admin_client: Client) -> None:
    FeatureFlag.objects.create(name="COALESCE_ENABLED", enabled=False)
    page = admin_client.get("/admin/ops/featureflag/").content.decode()
    assert f"{ADD_URL}?name=PACER_ENABLED" in page and f"{ADD_URL}?name=STREAM_FANOUT_ENABLED" in page
    assert f"{ADD_URL}?name=COALESCE_ENABLED" not in page
    assert 'href="/staff/dashboard/"' in page  # admin links to the dashboard
    form = admin_client.get(f"{ADD_URL}?name=PACER_ENABLED").content.decode()
    assert '<option value="PACER_ENABLED" selected>' in form
    assert 'name="enabled" id="id_enabled" checked' not in form  # the default (on), flipped


@pytest.mark.django_db
def test_unknown_flag_names_are_refused(admin_client: Client) -> None:
    resp = _post(admin_client, ADD_URL, name="COALESCE_ENABLD", enabled="on")
    assert resp.status_code == 200 and b"Select a valid choice" in resp.content
    assert not FeatureFlag.objects.exists()


@pytest.mark.django_db
def test_non_staff_get_no_admin(client: Client, user: Any) -> None:
    assert client.get("/admin/ops/featureflag/").status_code == 302
    client.force_login(user)
    resp = client.get("/admin/ops/featureflag/")
    assert resp.status_code == 302 and resp["Location"].startswith("/admin/login/")
    assert _post(client, ADD_URL, name="PACER_ENABLED").status_code == 302
    assert not FeatureFlag.objects.exists()


# --- behaviour: STREAM_FANOUT_ENABLED -------------------------------------------------------------------


async def _viewer(thread_id: int, token: str) -> WebsocketCommunicator:
    from chatapp.asgi import application

    comm = WebsocketCommunicator(
        application, f"/ws/threads/{thread_id}/", headers=[(b"authorization", f"Bearer {token}".encode())]
    )
    ok, _ = await comm.connect(timeout=10)
    assert ok and (await comm.receive_json_from(timeout=10))["type"] == "snapshot"
    return comm


async def _events_until_done(comm: WebsocketCommunicator) -> list[str]:
    kinds: list[str] = []
    while not kinds or kinds[-1] != "message.done":
        kinds.append((await comm.receive_json_from(timeout=10))["type"])
    return kinds


@pytest.mark.django_db(transaction=True)
@pytest.mark.both
@pytest.mark.parametrize("fanout", [True, False])
async def test_fanout_flag_decides_whether_other_viewers_get_deltas(
    user: Any, token: str, fanout: bool
) -> None:
    from threads.models import Thread

    thread = await sync_to_async(Thread.objects.create)(owner=user, provider="demo", model="demo-1")
    await sync_to_async(FeatureFlag.objects.create)(name="STREAM_FANOUT_ENABLED", enabled=fanout)
    await sync_to_async(flags_changed)()
    await flags_ready()
    sender, viewer = await _viewer(thread.pk, token), await _viewer(thread.pk, token)
    await sender.send_json_to({"type": "send", "content": "Tell me a story", "request_id": f"fan-{fanout}"})
    got_sender, got_viewer = await asyncio.gather(_events_until_done(sender), _events_until_done(viewer))
    assert "message.delta" in got_sender
    assert ("message.delta" in got_viewer) is fanout
    assert got_viewer[0] == "message.start"
    await sender.disconnect()
    await viewer.disconnect()
