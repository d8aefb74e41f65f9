"""FeatureFlag moved from the providers app to ops: a database migrated by the old code keeps its rows."""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from ops.models import FeatureFlag

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.both]

# The last migrations the old code had, where FeatureFlag belonged to `providers`.
OLD_STATE = [("providers", "0001_initial"), ("ops", None)]
OLD_NODES = [("providers", "0001_initial")]


def _migrate(targets: list[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


def _leaves() -> list[tuple[str, str | None]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def test_rows_and_content_type_survive_the_move() -> None:
    executor = _migrate(OLD_STATE)
    old_apps = executor.loader.project_state(OLD_NODES).apps
    OldFlag = old_apps.get_model("providers", "FeatureFlag")
    OldFlag.objects.create(name="coalescing", enabled=False, description="kept by the move")
    # The real model: contenttypes itself is not rolled back (the old state predates its 0002).
    old_ct = ContentType.objects.get_or_create(app_label="providers", model="featureflag")[0]

    _migrate(_leaves())

    flag = FeatureFlag.objects.get(name="coalescing")
    assert (flag.enabled, flag.description) == (False, "kept by the move")
    ct = ContentType.objects.get(pk=old_ct.pk)
    assert (ct.app_label, ct.model) == ("ops", "featureflag")
    assert not ContentType.objects.filter(app_label="providers", model="featureflag").exists()


def test_the_move_reverses() -> None:
    FeatureFlag.objects.create(name="pacer", enabled=True)
    executor = _migrate(OLD_STATE)
    OldFlag = executor.loader.project_state(OLD_NODES).apps.get_model("providers", "FeatureFlag")
    assert OldFlag.objects.get(name="pacer").enabled is True
    _migrate(_leaves())
    assert FeatureFlag.objects.get(name="pacer").enabled is True
