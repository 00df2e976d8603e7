"""Back-pressure (recorder.intake): a venue flooding the recorder at --speed max, faster than its writer can
keep up, is read more slowly; what the recorder holds stays under its bound and every update is on disk."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.feed import tiled_perp_feed
from bench.venue import start_venue, stop_venue
from recorder.intake import OVERSHOOT
from recorder.recorder import Recorder, RecorderConfig
from tests.helpers import ETH, await_until, ledger, realdata_file
from tests.oracle import read_table

BOUND = 1 << 20  # 1 MiB: the flood below is ~30 times that


def feed_ids(feed: Path) -> list[tuple[int, int]]:
    """(U, u) of every diff-depth message of a tiled capture, in order."""
    ids = []
    with open(feed, "rb") as fh:
        for line in fh:
            body = orjson.loads(line.split(b" ", 1)[1])
            data = body.get("data", body)
            if data.get("e") == "depthUpdate":
                ids.append((data["U"], data["u"]))
    return ids


async def flood(rec: Recorder, feed: Path, total: int) -> dict[str, Any]:
    """Play the tiled capture at the venue's max speed into ``rec`` until it has every message; its summary."""
    proc, url = start_venue(feed)
    rec.config.endpoint = url
    try:
        await rec.start()
        stats = rec.sessions["perp"].states["ETHUSDT"].stats["book"]
        await await_until(lambda: stats.messages >= total, lambda: (stats.messages, total), timeout=120)
    finally:
        summary = await rec.stop()
        stop_venue(proc)
    return summary


async def test_a_flood_is_read_more_slowly_and_nothing_is_lost(tmp_path: Path, monkeypatch: Any) -> None:
    realdata_file("usdm_ethusdt_20240808.gz")
    feed = tmp_path / "feed.txt"
    total = tiled_perp_feed(feed, 20_000)
    flood_bytes = feed.stat().st_size
    assert flood_bytes > 20 * BOUND
    data = tmp_path / "data"
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(data), markets=("perp",), tables=("book",),
                                  live_spread=False, queue_bytes=BOUND, endpoint="http://127.0.0.1:1"))
    # A writer slower than any feed: every flush takes at least 30 ms more, so the venue's max speed
    # saturates it for sure (on a fast machine the real writer alone might keep up).
    write = rec._write

    def slow_write(*args: Any) -> Any:
        time.sleep(0.03)
        return write(*args)

    monkeypatch.setattr(rec, "_write", slow_write)
    summary = await flood(rec, feed, total)
    intake = rec.intake
    assert intake.pauses > 0, "the flood outran the writer, so the connection was held back"
    assert intake.peak <= BOUND + OVERSHOOT, f"held {intake.peak} bytes at most, bound {BOUND} (+ one socket read)"
    assert intake.pending == 0 and intake.writing == 0
    # every update is on disk, once, in order, with no break in the id chain
    rows = read_table(data, "book", "perp")
    diffs: dict[int, tuple[int, int]] = {r["msg"]: (r["first_id"], r["last_id"]) for r in rows if not r["snapshot"]}
    assert [diffs[m] for m in sorted(diffs)] == feed_ids(feed)
    assert summary["perp/ETH-USDT/book"]["messages"] == total
    assert not [e for e in ledger(data, "perp") if e["kind"] in ("gap", "disconnect", "error")]


@pytest.mark.parametrize(("field", "value"), [("queue_bytes", 0), ("queue_bytes", 1000), ("queue_bytes", "big"),
                                               ("zstd_level", 0), ("zstd_level", 23), ("zstd_level", 3.5)])
def test_the_bound_and_the_level_are_checked(field: str, value: Any) -> None:
    from nova.core.units import BadValue

    with pytest.raises(BadValue, match=field):
        RecorderConfig(symbols=[ETH], **{field: value})


@pytest.mark.parametrize("level", [None, 1, 19])
def test_the_recorders_zstd_level_gives_the_same_rows(tmp_path: Path, level: int | None) -> None:
    """The Parquet level of the recorder's own (RecorderConfig.zstd_level) changes the bytes, never the rows, and
    leaves no journal behind."""
    import numpy as np
    import pyarrow as pa

    from recorder.rows import book_batch
    from recorder.sequencer import BookColumns
    from recorder.writer import DatasetWriter

    cols = BookColumns()
    rng = np.random.default_rng(3)
    for m in range(2000):
        levels = [[f"{2600 + rng.integers(0, 500) / 100:.2f}", f"{rng.integers(0, 9000) / 1000:.3f}"]
                  for _ in range(5)]
        for name, value in (("ts_recv", 1_723_161_255_000_000_000 + m * 10**6), ("ts_event", 1_723_161_255_000 + m),
                            ("ts_trade", 1_723_161_255_000 + m), ("first_id", 10 * m + 1), ("last_id", 10 * m + 10),
                            ("prev_id", 10 * m), ("msg", m + 1)):
            getattr(cols, name).append(value)
        cols.flags.append(0)
        cols.texts.append(orjson.dumps({"b": levels[:3], "a": levels[3:]}).decode())
    batch, malformed, _ = book_batch(cols)
    assert not malformed
    writer = DatasetWriter(str(tmp_path), zstd_level=level)
    writer.write("book", "perp", ETH, batch)
    writer.close()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(".")]
    rows = read_table(tmp_path, "book", "perp")
    assert pa.Table.from_pylist(rows).column("price").to_pylist() == batch.column("price").to_pylist()
    assert [r["msg"] for r in rows] == batch.column("msg").to_pylist()


@pytest.mark.parametrize("turns", [0, 1, 2])
async def test_stop_ends_the_flusher_even_when_it_is_woken_at_that_moment(turns: int) -> None:
    """At saturation the intake wakes the flusher all the time; a stop whose cancellation lands as it is woken
    must still end it (asyncio.wait_for on Python 3.11 swallowed such a cancellation: stop() hung forever)."""
    import asyncio

    rec = Recorder(RecorderConfig(symbols=[ETH], flush_s=1.0))
    flushes = []

    async def flush(final: bool = False) -> None:
        flushes.append(final)

    rec._flush = flush  # type: ignore[method-assign]
    task = asyncio.create_task(rec._flusher())
    await asyncio.sleep(0.01)
    rec.intake.wake.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=3)
    assert done and task.cancelled(), f"the flusher kept running after its cancellation ({len(flushes)} flushes)"


async def test_connections_held_for_a_slow_write_are_not_taken_for_stalled(tmp_path: Path, monkeypatch: Any) -> None:
    """A write that takes longer than the stall limit (a rotation's Parquet encode at a high rate) holds the
    connections back: their silence is the recorder's own, and the watchdog must not restart them (which would
    cost every stream a reconnect and a resync)."""
    realdata_file("usdm_ethusdt_20240808.gz")
    feed = tmp_path / "feed.txt"
    total = tiled_perp_feed(feed, 20_000)
    data = tmp_path / "data"
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(data), markets=("perp",), tables=("book",),
                                  live_spread=False, queue_bytes=BOUND, stall_s=1.0,
                                  endpoint="http://127.0.0.1:1"))
    write, calls = rec._write, []

    def one_slow_write(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            time.sleep(rec.config.stall_s * 3)
        return write(*args)

    monkeypatch.setattr(rec, "_write", one_slow_write)
    summary = await flood(rec, feed, total)
    assert rec.intake.pauses > 0 and len(calls) > 3
    assert summary["perp/ETH-USDT/book"]["messages"] == total
    assert not [e for e in ledger(data, "perp") if e["kind"] in ("gap", "disconnect", "error")]
