"""`nova serve`'s clock and the venue's request weights.

The pushes the venue makes on a timer (partial depth, 24h tickers, klines) say when they were made in ``E``, and
REST ``time`` and ``exchangeInfo`` say the server's time; a recording played back must say the recorded time of its
playhead, not the day it is replayed, or a bot that checks freshness or closes klines by ``E`` trades in the wrong
day. The synthetic feed stays on the wall clock. The REST endpoints weigh what Binance documents
(nova.core.limits), and the venue charges it in its header.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nova.core.limits import USED_WEIGHT_HEADER, request_weight
from nova.core.pacing import Lateness
from nova.venue import SyntheticSource
from nova.venue.recorded import DatasetSource
from recorder.rows import TradeRow, table_batch
from recorder.writer import DatasetWriter
from tests.helpers import ETH, MIDNIGHT, subscribe, write_midnight_dataset, ws_connect

DAY_MS = 86_400_000
RANGE_MS = (MIDNIGHT // 10**6 - 20_000, MIDNIGHT // 10**6 + 20_000)  # write_midnight_dataset: 40 s around it


def _with_trades(root: Path) -> None:
    """The midnight dataset and a trade every 100 ms on both markets, so tickers and klines have a tape."""
    write_midnight_dataset(root)
    writer = DatasetWriter(str(root), rotate_s=900)
    t0 = MIDNIGHT - 20 * 10**9
    for market in ("spot", "perp"):
        rows = [TradeRow(ts_recv=t0 + k * 100_000_000 + 1_000_000, ts_event=t0 + k * 100_000_000, trade_id=7000 + k,
                         price=3000.0 + 0.01 * (k % 9), amount=0.5, taker_side="buy" if k % 2 else "sell")
                for k in range(400)]
        writer.write("trades", market, ETH, table_batch("trades", rows))
    writer.close()


async def _timed_pushes(ws: Any, want: set[str], timeout_s: float = 8.0) -> dict[str, list[dict]]:
    """Frames of the timed streams, by stream, until each of ``want`` has sent two."""
    got: dict[str, list[dict]] = {}
    deadline = time.monotonic() + timeout_s
    while missing := sorted(s for s in want if len(got.get(s, [])) < 2):
        try:
            msg = await asyncio.wait_for(ws.receive(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(f"no pushes of {missing} within {timeout_s} s (got {sorted(got)})") from None
        frame = json.loads(msg.data)
        if "stream" in frame:
            got.setdefault(frame["stream"], []).append(frame["data"])
    return got


async def test_serve_stamps_timed_pushes_with_the_recorded_time(make_venue: Any, tmp_path: Path) -> None:
    _with_trades(tmp_path)
    source = DatasetSource(str(tmp_path), "2026-11-24", until="2026-11-25", speed=4.0, autostart=True,
                           snapshot_hold_s=0.2)  # a partial-depth client never asks for a snapshot
    assert source.now_ms() == source.start_ns // 10**6  # before the first message: the start of the range
    venue = await make_venue(source)
    async with aiohttp.ClientSession() as session:
        spot = await ws_connect(session, venue, "/stream?streams=ethusdt@depth5@100ms/ethusdt@ticker/"
                                                "ethusdt@miniTicker/ethusdt@kline_1m")
        perp = await ws_connect(session, venue, "/fstream/public/stream?streams=ethusdt@depth5@100ms")
        spot_got = await _timed_pushes(spot, {"ethusdt@depth5@100ms", "ethusdt@ticker", "ethusdt@miniTicker",
                                               "ethusdt@kline_1m"})
        perp_got = await _timed_pushes(perp, {"ethusdt@depth5@100ms"})
    stamps = [(stream, frame["E"]) for stream, frames in spot_got.items() if stream != "ethusdt@depth5@100ms"
              for frame in frames]
    stamps += [("perp depth5", frame["E"]) for frame in perp_got["ethusdt@depth5@100ms"]]
    wall = time.time() * 1000
    for stream, stamp in stamps:
        assert RANGE_MS[0] <= stamp <= RANGE_MS[1], f"{stream} E {stamp} is outside the recording {RANGE_MS}"
        assert wall - stamp > DAY_MS, f"{stream} says the wall clock"
    assert source.now_ms() >= max(s for _, s in stamps)  # the playhead only moves on
    late = source.status()["lateness"]  # paced: every message played so far was scheduled and measured
    assert late["messages"] > 0 and 0 <= late["p50_ms"] <= late["p99_ms"] <= late["max_ms"]
    kline = spot_got["ethusdt@kline_1m"][-1]["k"]
    assert kline["x"] == (kline["T"] < spot_got["ethusdt@kline_1m"][-1]["E"])  # closed by the recorded clock
    async with aiohttp.ClientSession() as session:  # a bot that syncs its clock with the server's gets the same
        for path in ("/api/v3/time", "/fapi/v1/time", "/api/v3/exchangeInfo", "/fapi/v1/exchangeInfo"):
            async with session.get(venue.url + path) as resp:
                server_ms = (await resp.json())["serverTime"]
            assert RANGE_MS[0] <= server_ms <= RANGE_MS[1], (path, server_ms)


async def test_a_client_of_quotes_on_one_market_starts_the_playback(tmp_path: Path, make_venue: Any) -> None:
    _with_trades(tmp_path)
    source = DatasetSource(str(tmp_path), "2026-11-24", until="2026-11-25", speed=None)  # no --autostart
    venue = await make_venue(source)
    async with aiohttp.ClientSession() as session:
        ws = await ws_connect(session, venue, "/ws")
        await subscribe(ws, "ethusdt@trade")
        frame = json.loads((await asyncio.wait_for(ws.receive(), 10.0)).data)
    assert frame["e"] == "trade" and RANGE_MS[0] <= frame["T"] <= RANGE_MS[1]
    assert source.started.is_set()


def test_serve_reports_lateness_by_replays_histogram() -> None:
    late = Lateness()  # nova.core.pacing: log buckets ~2.3% wide, percentiles are bucket upper bounds
    for _ in range(98):
        late.add_one(50_000)  # 0.05 ms
    late.add_one(12_300_000)
    late.add_one(0)  # on time
    summary = late.summary()
    assert summary["messages"] == 100 and summary["max_ms"] == 12.3
    assert 0.05 <= summary["p50_ms"] <= 0.05 * 1.024 and 0.05 <= summary["p99_ms"] <= 0.05 * 1.024
    late.add_one(12_300_000)
    assert 12.3 <= late.summary()["p99_ms"] <= 12.3 * 1.024


async def test_a_live_feed_stamps_the_wall_clock(make_venue: Any) -> None:
    source = SyntheticSource([ETH], seed=3)
    assert abs(source.now_ms() - time.time() * 1000) < 5_000
    venue = await make_venue(source)
    async with aiohttp.ClientSession() as session:
        ws = await ws_connect(session, venue, "/ws")
        await subscribe(ws, "ethusdt@depth5@100ms")
        before = time.time() * 1000
        frame = json.loads((await asyncio.wait_for(ws.receive(), 5.0)).data)
    assert "lastUpdateId" in frame  # spot partial depth carries no E: check USD-M's below
    async with aiohttp.ClientSession() as session:
        ws = await ws_connect(session, venue, "/fstream/public/ws")
        await subscribe(ws, "ethusdt@depth5@100ms")
        frame = json.loads((await asyncio.wait_for(ws.receive(), 5.0)).data)
    assert abs(frame["E"] - before) < 10_000


@pytest.mark.parametrize(("market", "path", "query", "weight"), [
    ("spot", "/api/v3/ticker/price", {"symbol": "ETHUSDT"}, 2),
    ("spot", "/api/v3/ticker/price", {}, 4),
    ("spot", "/api/v3/ticker/24hr", {}, 80),
    ("spot", "/api/v3/ticker/24hr", {"symbols": '["ETHUSDT","BTCUSDT"]'}, 2),
    ("spot", "/api/v3/trades", {"symbol": "ETHUSDT"}, 25),
    ("spot", "/api/v3/aggTrades", {"symbol": "ETHUSDT"}, 4),
    ("perp", "/fapi/v1/ticker/24hr", {}, 40),
    ("perp", "/fapi/v1/ticker/bookTicker", {"symbol": "ETHUSDT"}, 2),
    ("perp", "/fapi/v1/klines", {"symbol": "ETHUSDT", "interval": "1m"}, 5),  # default limit 500
    ("perp", "/fapi/v1/klines", {"symbol": "ETHUSDT", "interval": "1m", "limit": "1500"}, 10),
    ("perp", "/fapi/v1/premiumIndex", {}, 10),
    ("perp", "/fapi/v1/depth", {"symbol": "ETHUSDT", "limit": "1000"}, 20),
])
def test_request_weights_are_binances(market: str, path: str, query: dict[str, str], weight: int) -> None:
    assert request_weight(market, path, query) == weight  # type: ignore[arg-type]


async def test_the_venue_charges_the_documented_weight(make_venue: Any) -> None:
    venue = await make_venue(SyntheticSource([ETH], seed=5))
    async with aiohttp.ClientSession() as session:
        used = []
        for path in ("/fapi/v1/ticker/24hr", "/fapi/v1/premiumIndex?symbol=ETHUSDT", "/fapi/v1/ticker/24hr"):
            async with session.get(venue.url + path) as resp:
                used.append(int(resp.headers[USED_WEIGHT_HEADER]))
    assert used == [40, 41, 81]
