"""The pacer's hold on the garbage collector: collections in spare time, a bound when none comes, and the
process's settings back as they were when pacing ends (nova.core.pacing._PacedProcess)."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from nova.core import pacing
from nova.core.pacing import PACED, PACED_FULL_GC_AFTER, PACED_YOUNG_BOUND, Pacer

MS = 1_000_000


class _Cycle:
    """Garbage only the collector frees (reference counting never reaches zero in a cycle)."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _settings() -> Iterator[tuple]:
    """Each test starts from Python's defaults and must leave the process as it found it."""
    before = (gc.get_threshold(), gc.isenabled(), gc.get_freeze_count(), sys.getswitchinterval())
    assert PACED.users == 0
    yield before
    assert (gc.get_threshold(), gc.isenabled(), gc.get_freeze_count(), sys.getswitchinterval()) == before
    assert PACED.users == 0


def test_pacing_raises_the_young_threshold_freezes_and_restores_everything_after(_settings: tuple) -> None:
    thresholds, enabled, _, switch = _settings
    with Pacer(1.0):
        assert gc.get_threshold() == (thresholds[0] * PACED_YOUNG_BOUND, thresholds[1], PACED_FULL_GC_AFTER)
        assert gc.isenabled() == enabled
        assert sys.getswitchinterval() < switch
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0


def test_settings_are_restored_after_an_exception_too(_settings: tuple) -> None:
    with pytest.raises(RuntimeError), Pacer(10.0):
        raise RuntimeError("the consumer failed")
    assert gc.get_threshold() == _settings[0]


def test_unpaced_leaves_the_collector_alone(_settings: tuple) -> None:
    with Pacer(None) as pacer:
        pacer.wait(0)
        assert gc.get_threshold() == _settings[0] and gc.get_freeze_count() == 0


def test_overlapping_pacers_share_the_settings_until_the_last_one_ends(_settings: tuple) -> None:
    """Two paced passes at once (a replay inside nova serve's process, two replays): the one that started first
    may end first, and the second must still pace with the collector held."""
    first, second = Pacer(1.0), Pacer(10.0)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] == _settings[0][0] * PACED_YOUNG_BOUND and gc.get_freeze_count() > 0
    second.__exit__(None, None, None)
    assert gc.get_threshold() == _settings[0] and gc.get_freeze_count() == 0


def test_a_young_collection_is_taken_when_the_next_item_is_far_off() -> None:
    taken = list(PACED.spare_collections)
    with Pacer(1.0) as pacer:
        for i in range(6):
            pacer.wait(i * 20 * MS)  # 20 ms apart: each wait has ~19 ms to spare
    assert sum(PACED.spare_collections) > sum(taken)


def test_wait_async_collects_in_spare_time_as_well() -> None:
    taken = sum(PACED.spare_collections)

    async def play() -> None:
        with Pacer(1.0) as pacer:
            for i in range(6):
                await pacer.wait_async(i * 20 * MS)

    asyncio.run(play())
    assert sum(PACED.spare_collections) > taken


def test_garbage_is_collected_when_spare_time_never_comes() -> None:
    """Every item due at once (no spare time at all): the raised automatic threshold still bounds the garbage."""
    seen: list[int] = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(callback)
    try:
        with Pacer(1.0) as pacer:
            first = _Cycle()
            alive = weakref.ref(first)
            del first
            limit = gc.get_threshold()[0]
            for _ in range(2 * limit):
                pacer.wait(0)  # due at the start: never a moment to spare
                _Cycle()
            assert seen, "no collection in twice the paced threshold's allocations"
            assert alive() is None
    finally:
        gc.callbacks.remove(callback)


def test_a_full_collection_is_forced_when_none_came_for_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without spare time for a full walk, one is still taken once FULL_GC_BOUND_NS has passed without one."""
    with Pacer(1.0) as pacer:
        pacer.wait(0)
        full = PACED.spare_collections[2]
        monkeypatch.setattr(pacing, "FULL_GC_BOUND_NS", 0)  # the bound reached: the rule, not the wall time
        PACED._last_ns = 0  # nor the at-most-every-5-ms gate
        gc.collect(1)
        assert gc.get_count()[2] > 0
        pacer.wait(0)  # due at once: no spare time
        assert PACED.spare_collections[2] == full + 1
        assert gc.get_count()[2] == 0


def test_no_collection_in_spare_time_when_the_collector_is_disabled() -> None:
    gc.disable()
    try:
        taken = sum(PACED.spare_collections)
        with Pacer(1.0) as pacer:
            for i in range(4):
                pacer.wait(i * 20 * MS)
        assert sum(PACED.spare_collections) == taken
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_due_now_hands_over_a_due_item_and_leaves_a_later_one_to_wait_async() -> None:
    with Pacer(1.0) as pacer:
        assert pacer.due_now(0)  # the first item anchors the clock: due at once
        assert not pacer.due_now(10_000 * MS)  # ten seconds later
        assert pacer.lateness.n == 1
    assert not Pacer(None).due_now(0)  # unpaced: the caller's own path (drains, yields)


def test_lateness_counts_what_is_not_yet_binned() -> None:
    """Deliveries are binned a thousand at a time; every figure includes those still waiting to be binned."""
    late = pacing.Lateness()
    for _ in range(3):
        late.add_one(40 * MS)
    assert late.n == 3 and late.max_ns == 40 * MS
    assert late.summary()["p99_ms"] >= 40.0
    for _ in range(pacing.Lateness.PENDING):
        late.add_one(1000)
    assert late.n == 3 + pacing.Lateness.PENDING and late.summary()["p50_ms"] <= 0.002
