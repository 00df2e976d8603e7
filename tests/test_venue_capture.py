"""Capture playback: real Binance ETHUSDT captures served by the venue and consumed by real ccxt.pro."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path
from typing import Any

import pytest

from nova.core.errors import NovaError
from nova.venue import CaptureSource, read_capture
from tests.helpers import Watcher, ccxt_levels, realdata_file, truth_levels
from tests.oracle import final_book


def spot_files() -> list[Path]:
    return [realdata_file("spot_ethusdt_20240808.gz"), realdata_file("spot_ethusdt_20240809.gz")]


def perp_files() -> list[Path]:
    return [realdata_file("usdm_ethusdt_20240808.gz")]


@pytest.mark.slow  # the real captures through the venue (~5 s)
async def test_playback_of_real_captures_equals_the_oracle(make_venue: Any, make_client: Any) -> None:
    spot_paths, perp_paths = spot_files(), perp_files()
    source = CaptureSource(spot_paths, perp_paths, speed=None)
    venue = await make_venue(source)
    # The real book is deeper than the 1000-level snapshot; ccxt trims its book to 1000 levels on every
    # watch call, so the watchers subscribe once and then let ccxt apply every diff untrimmed.
    spot = Watcher(make_client(venue.url, "spot", 100), "spot", once=True).start()
    perp = Watcher(make_client(venue.url, "perp", 0), "perp", once=True).start()
    expected = {"spot": final_book(spot_paths, "spot"), "perp": final_book(perp_paths, "perp")}
    deadline = time.monotonic() + 120
    for watcher in (spot, perp):
        oracle = expected[watcher.market]
        while True:
            book = watcher.client.orderbooks.get(watcher.symbol)
            if source.finished and book is not None and book["nonce"] == oracle.last_id:
                break
            assert time.monotonic() < deadline, f"{watcher.market} playback did not converge: {watcher.errors}"
            await asyncio.sleep(0.05)
        bids, asks = ccxt_levels(book)
        oracle_bids, oracle_asks = oracle.sorted_levels()
        assert bids == oracle_bids
        assert asks == oracle_asks
        assert truth_levels(venue.truth(watcher.market, "ETHUSDT")) == (oracle_bids, oracle_asks)
        assert watcher.errors == []
    status = venue.status()
    assert status["id_breaks"] == {"spot": 0, "perp": 0}
    assert "ethusdt@depth@0ms" in status["captured_streams"]["perp"]
    await asyncio.gather(spot.stop(), perp.stop())


async def test_playback_paces_at_the_requested_speed(make_venue: Any, make_client: Any, tmp_path: Path) -> None:
    """Two seconds of captured spot data at speed 4 take about half a second."""
    lines = []
    with gzip.open(spot_files()[0], "rt") as fh:
        first = None
        for line in fh:
            ts = int(line.split(" ", 1)[0])
            first = first or ts
            if ts - first > 2_000_000_000:
                break
            lines.append(line)
    short = tmp_path / "short.txt"
    short.write_text("".join(lines))
    source = CaptureSource([short], [], speed=4.0, autostart=True)
    started = time.monotonic()
    await make_venue(source)
    while not source.finished:
        assert time.monotonic() - started < 10
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 1.5, elapsed


def test_read_capture_accepts_plain_bare_and_microsecond_lines(tmp_path: Path) -> None:
    bare = {"e": "depthUpdate", "E": 1, "s": "ETHUSDT", "U": 5, "u": 6, "b": [], "a": []}
    wrapped = {"stream": "ethusdt@bookTicker", "data": {"u": 7, "s": "ETHUSDT", "b": "1", "B": "1", "a": "2",
                                                        "A": "1"}}
    path = tmp_path / "mixed.txt"
    path.write_text(f"1723161254024619 {json.dumps(bare)}\n\n1723161254024619568 {json.dumps(wrapped)}\n")
    lines = list(read_capture(path))
    assert [line.recv_ns for line in lines] == [1723161254024619000, 1723161254024619568]
    assert lines[0].stream is None and lines[0].payload == bare
    assert lines[1].stream == "ethusdt@bookTicker" and lines[1].payload["u"] == 7
    gz = tmp_path / "mixed.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert list(read_capture(gz)) == lines


def test_read_capture_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text('1723161254024619568 {"e": "trade"}\nnot a capture line\n')
    with pytest.raises(NovaError, match=r"bad.txt:2 is not a '<recv_ts> <json>' capture line"):
        list(read_capture(path))
