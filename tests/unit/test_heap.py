"""`bot.heap.freeze_startup_heap`: what a process keeps leaves the full collections; the
garbage it made while starting does not stay with it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bot.heap import freeze_startup_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of this test process collects as usual


def test_kept_objects_are_frozen_and_startup_garbage_is_freed_first(thawed: None) -> None:
    kept = Node()
    garbage = Node()
    gone = weakref.ref(garbage)
    del garbage

    frozen = freeze_startup_heap()

    assert frozen == gc.get_freeze_count() > 0
    assert gone() is None  # collected, not frozen for the process's lifetime
    assert not any(obj is kept for obj in gc.get_objects())  # no collection walks it now
