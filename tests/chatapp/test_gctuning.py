"""chatapp.gctuning: what a server process does to its garbage collector after start-up."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from chatapp.gctuning import tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.mark.usefixtures("restore_gc")
def test_freezes_what_exists_and_sets_the_threshold() -> None:
    gc.unfreeze()
    survivor = Node()
    tune_gc(freeze=True, gen0_threshold=12_345)
    assert gc.get_threshold()[0] == 12_345
    assert gc.get_freeze_count() > 1000  # everything imported so far, survivor included
    assert gc.is_tracked(survivor)
    frozen = gc.get_freeze_count()
    garbage = Node()
    del garbage
    assert gc.collect() >= 1  # cycles made after the freeze are still collected
    assert gc.get_freeze_count() == frozen


@pytest.mark.usefixtures("restore_gc")
def test_garbage_is_collected_before_freezing() -> None:
    gc.unfreeze()
    garbage = Node()
    del garbage
    tune_gc(freeze=True, gen0_threshold=0)
    assert not any(isinstance(o, Node) for o in gc.get_objects())
    assert gc.get_threshold()[0] != 0


@pytest.mark.usefixtures("restore_gc")
def test_off_changes_nothing() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    tune_gc(freeze=False, gen0_threshold=0)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
