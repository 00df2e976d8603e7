"""Paced replay: never early at --speed 1, about span/N at --speed N (loose bounds; figures are in bench/).

Every check measures against the wall clock independently of the pacer: an item with data time ``ts`` may
not be handed over before ``t_start + (ts - ts_first) / speed``, where ``t_start`` is taken before asking for
the first item.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from replay import Replay
from tests.helpers import AFTER, BEFORE, MIDNIGHT, write_midnight_dataset

SLACK_NS = 2_000  # perf_counter_ns of two threads' views of "now": allow a couple of microseconds


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("paced")
    write_midnight_dataset(root)
    return root


def never_early(stamps: list[tuple[int, int]], start_ns: int, speed: float) -> None:
    """``stamps`` = (data ts, wall perf_counter_ns when handed over) of every item, in order."""
    ts0 = stamps[0][0]
    for ts, wall in stamps:
        assert wall - start_ns >= (ts - ts0) / speed - SLACK_NS, (ts, wall - start_ns, (ts - ts0) / speed)


def test_speed_1_never_delivers_a_reading_before_it_is_due(data: Path) -> None:
    r = Replay(str(data), "ETH/USDT", BEFORE, start="23:59:58", end="23:59:59.5")
    stamps = []
    start = time.perf_counter_ns()
    for reading in r.readings(speed=1):
        stamps.append((reading.ts, time.perf_counter_ns()))
    assert len(stamps) > 20
    never_early(stamps, start, 1.0)
    s = r.summary()
    assert s.readings == len(stamps) and s.speed == 1
    assert math.isfinite(s.lateness_p50_ms) and math.isfinite(s.lateness_p99_ms)


def test_speed_1_raw_events_are_never_early_either(data: Path) -> None:
    r = Replay(str(data), "ETH/USDT", BEFORE, until=AFTER, start="23:59:59", end="00:00:00.2")
    stamps = []
    start = time.perf_counter_ns()
    for item in r.events(speed=1):
        stamps.append((item.ts, time.perf_counter_ns()))
    assert len(stamps) > 30
    never_early(stamps, start, 1.0)


def test_speed_20_takes_about_a_twentieth_of_the_span(data: Path) -> None:
    r = Replay(str(data), "ETH/USDT", BEFORE, until=AFTER, start="23:59:52", end="00:00:04")  # 12 s of data
    stamps = []
    start = time.perf_counter_ns()
    for batch in r.batches(speed=20):
        now = time.perf_counter_ns()
        stamps.extend((ts, now) for ts in batch.column("ts").cast("int64").to_pylist())
    elapsed = (time.perf_counter_ns() - start) / 1e9
    span = (stamps[-1][0] - stamps[0][0]) / 1e9
    assert span > 11
    assert span / 20 * 0.95 <= elapsed <= span / 20 + 2.0, (span, elapsed)
    never_early(stamps, start, 20.0)
    assert r.summary().achieved_speed == pytest.approx(20, rel=0.5)


async def test_async_readings_and_callbacks_are_paced_too(data: Path) -> None:
    r = Replay(str(data), "ETH/USDT", AFTER, start="00:00:01", end="00:00:05")  # 4 s of data
    stamps = []
    start = time.perf_counter_ns()
    async for reading in r.areadings(speed=20):
        stamps.append((reading.ts, time.perf_counter_ns()))
    never_early(stamps, start, 20.0)
    assert stamps[-1][0] - stamps[0][0] > 3.5e9

    seen: list[tuple[int, int]] = []
    r.on_reading(lambda reading: seen.append((reading.ts, time.perf_counter_ns())))
    start = time.perf_counter_ns()
    summary = await asyncio.to_thread(r.run, 40)
    never_early(seen, start, 40.0)
    assert [ts for ts, _ in seen] == [ts for ts, _ in stamps] and summary.readings == len(seen)


def test_max_speed_is_not_paced(data: Path) -> None:
    r = Replay(str(data), "ETH/USDT", BEFORE, until=AFTER)
    started = time.perf_counter()
    table = r.readings_table()
    assert time.perf_counter() - started < 20  # 40 s of data: anything paced would take far longer
    assert table.num_rows == r.summary().readings and r.summary().first_ns < MIDNIGHT
