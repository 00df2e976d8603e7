"""`nova serve`: a recorded dataset played through the venue must record back into the same dataset.

Dataset A is the synthetic venue recorded with a spot gap, a perp disconnect and two runs; the served A is
recorded by Nova's own recorder into B. B equals A: the book rebuilt at every message (by ``u``), every
bookTicker (by ``u``), trade (by id), funding row (by event time), and the ledgered gaps at the same ids.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pytest

from nova.core.errors import NovaError
from nova.venue import CaptureSource, SyntheticSource, Venue
from nova.venue.recorded import DatasetSource
from recorder.recorder import Recorder, RecorderConfig
from tests.helpers import CCXT_SYMBOL, ETH, Watcher, nova, one_sentence, realdata_file, wait_until_recorded


async def _record_a(root: Path) -> None:
    async with Venue(SyntheticSource([ETH], seed=11)) as venue:
        rec = Recorder(RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, flush_s=0.2))
        await rec.start()
        try:
            await asyncio.sleep(1.5)
            venue.drop_next("spot", "ETHUSDT")
            await asyncio.sleep(1.0)
            await venue.close_connections("perp")
            await asyncio.sleep(1.5)
            venue.drop_next("perp", "ETHUSDT")
            await asyncio.sleep(1.0)
        finally:
            await rec.stop()
        await asyncio.sleep(0.5)  # the recorder is down: nothing watches the books
        second = Recorder(RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, flush_s=0.2))
        await second.run(duration_s=1.5)


async def _serve_into(a: Path, date: str, b: Path) -> DatasetSource:
    source = DatasetSource(str(a), date, speed=None, snapshot_hold_s=5.0)
    async with Venue(source) as venue:
        rec = Recorder(RecorderConfig(symbols=[ETH], data=str(b), endpoint=venue.url, flush_s=0.2))
        await rec.start()
        try:
            for _ in range(1200):
                if source.finished:
                    break
                await asyncio.sleep(0.05)
            assert source.finished, source.status()
            await asyncio.sleep(1.0)  # let the last frames reach the recorder
        finally:
            await rec.stop()
    return source


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    asyncio.run(_record_a(a))
    date = sorted(p.name[5:] for p in (a / "book").rglob("date=*"))[0]
    source = asyncio.run(_serve_into(a, date, b))
    return {"a": a, "b": b, "date": date, "status": source.status()}


def _rows(root: Path, table: str, market: str) -> list[dict[str, Any]]:
    path = root / table / "exchange=binance" / f"market={market}"
    if not path.exists():
        return []
    data = pads.dataset(str(path), format="parquet", partitioning="hive").to_table()
    return data.to_pylist()


def _applied(root: Path, market: str) -> Iterator[tuple[int, int, dict[float, float], dict[float, float]]]:
    """(u, ts_recv, bids, asks) after every applied message, rebuilt by the contract's rule (skip stale rows,
    clear on a snapshot, set price -> amount, remove at 0). The dicts are the live book: compare, don't keep."""
    path = root / "book" / "exchange=binance" / f"market={market}"
    table = pads.dataset(str(path), format="parquet", partitioning="hive").to_table(
        columns=["ts_recv", "last_id", "msg", "snapshot", "stale", "side", "price", "amount"]).sort_by("msg")
    cols = {n: table.column(n).to_pylist() for n in ("last_id", "msg", "snapshot", "stale", "side", "price",
                                                       "amount")}
    ts = table.column("ts_recv").cast(pa.int64()).to_pylist()
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    msg, n = cols["msg"], len(ts)
    i = 0
    while i < n:
        j = i
        while j < n and msg[j] == msg[i]:
            j += 1
        if not cols["stale"][i]:
            if cols["snapshot"][i]:
                bids.clear()
                asks.clear()
            for k in range(i, j):
                side = cols["side"][k]
                if side is None:
                    continue
                book = bids if side == "bid" else asks
                if cols["amount"][k] == 0:
                    book.pop(cols["price"][k], None)
                else:
                    book[cols["price"][k]] = cols["amount"][k]
            yield cols["last_id"][i], ts[i], bids, asks
        i = j


def _assert_same_books(a: Path, b: Path, market: str) -> int:
    """The copy applied the same messages (by u, in order) as the original, with the same book after each;
    returns how many were compared."""
    compared = 0
    for want, got in zip_longest(_applied(a, market), _applied(b, market)):
        assert want is not None and got is not None, (market, compared, want and want[0], got and got[0])
        assert got[0] == want[0], (market, compared)
        assert got[2] == want[2] and got[3] == want[3], (market, want[0])
        compared += 1
    return compared


def test_the_fixture_recording_has_the_breaks(served: dict) -> None:
    kinds = [(r["stream"], r["kind"]) for m in ("spot", "perp") for r in _rows(served["a"], "events", m)]
    assert ("book", "gap") in kinds and ("book", "disconnect") in kinds and kinds.count(("book", "start")) == 4


@pytest.mark.parametrize("market", ["spot", "perp"])
def test_recording_what_serve_plays_gives_back_the_same_books(served: dict, market: str) -> None:
    assert _assert_same_books(served["a"], served["b"], market) > 20


@pytest.mark.parametrize("market", ["spot", "perp"])
def test_same_ledgered_gaps_bbo_trades_and_funding(served: dict, market: str) -> None:
    a, b = served["a"], served["b"]

    def gaps(root: Path) -> list[tuple]:
        return sorted((r["expected_id"], r["received_id"]) for r in _rows(root, "events", market)
                      if r["stream"] == "book" and r["kind"] == "gap")

    assert gaps(b) == gaps(a) and gaps(a)
    tables = ("bbo", "trades") if market == "spot" else ("bbo", "trades", "funding")
    assert _assert_same_quotes(a, b, market, tables) > 20


QUOTE_KEYS = {"bbo": ("update_id", ("bid_price", "bid_amount", "ask_price", "ask_amount")),
              "trades": ("trade_id", ("price", "amount", "taker_side")),
              "funding": ("ts_event", ("mark_price", "index_price", "funding_rate"))}


def _assert_same_quotes(a: Path, b: Path, market: str, tables: tuple[str, ...]) -> int:
    """Every row of each quote table of A is in B with the same values, by its exchange key, and B has no other;
    returns how many were compared."""
    compared = 0
    for table in tables:
        key, cols = QUOTE_KEYS[table]
        want = {r[key]: tuple(r[c] for c in cols) for r in _rows(a, table, market)}
        got = {r[key]: tuple(r[c] for c in cols) for r in _rows(b, table, market)}
        assert want, (table, market)
        assert got.keys() == want.keys(), (table, market, len(want), len(got), sorted(want.keys() ^ got.keys())[:5])
        assert got == want, (table, market)
        compared += len(want)
    return compared


def _book_before(root: Path, market: str, end_ns: int) -> tuple[int, list[tuple], list[tuple]]:
    """(u, bids best first, asks best first) after the last applied message received before ``end_ns``."""
    last = None
    for u, ts, bids, asks in _applied(root, market):
        if ts >= end_ns:
            break
        last = (u, sorted(bids.items(), reverse=True), sorted(asks.items()))
    assert last is not None
    return last


@pytest.mark.parametrize("from_run2", [False, True])
async def test_ccxt_watch_order_book_ends_with_the_recorded_book(served: dict, make_client: Any, from_run2: bool
                                                                 ) -> None:
    """ccxt.pro, URLs changed only, through the recorded breaks (it resyncs on each) to an end inside run 2; or
    started inside run 2, from the book rebuilt at that instant."""
    a = served["a"]
    run2 = max(r["ts_recv"].value for m in ("spot", "perp") for r in _rows(a, "events", m)
               if r["kind"] == "start")
    end = run2 + 10**9  # inside run 2, after its snapshots
    start = str(run2 + 5 * 10**8) if from_run2 else None
    source = DatasetSource(str(a), served["date"], start=start, end=str(end), speed=None, snapshot_hold_s=5.0)
    async with Venue(source) as venue:
        watchers = {m: Watcher(make_client(venue.url, m), m).start() for m in ("spot", "perp")}
        for _ in range(1200):
            if source.finished:
                break
            await asyncio.sleep(0.05)
        assert source.finished, source.status()
        for market, watcher in watchers.items():
            u, bids, asks = _book_before(a, market, end)
            book = None
            for _ in range(200):
                book = watcher.client.orderbooks.get(CCXT_SYMBOL[market])
                if book is not None and book["nonce"] == u:
                    break
                await asyncio.sleep(0.05)
            assert book is not None and book["nonce"] == u, (market, book and book["nonce"], u)
            depth = 50
            assert [tuple(x) for x in book["bids"][:depth]] == bids[:depth]
            assert [tuple(x) for x in book["asks"][:depth]] == asks[:depth]
        for watcher in watchers.values():
            await watcher.stop()


async def test_real_captures_round_trip(make_venue: Any, tmp_path: Path) -> None:
    """The real ETHUSDT captures played by the venue, recorded (A), served, recorded again (B): the same book after
    every message, every bookTicker and trade, and no break in either (the captures chain throughout)."""
    spot = [realdata_file("spot_ethusdt_20240808.gz"), realdata_file("spot_ethusdt_20240809.gz")]
    perp = [realdata_file("usdm_ethusdt_20240808.gz")]
    a, b = tmp_path / "a", tmp_path / "b"
    options: dict[str, Any] = {"flush_s": 0.2, "tables": ("book", "bbo", "trades"),
                               "snapshot_limit": {"spot": 1000, "perp": 1000}}
    capture = CaptureSource(spot, perp, speed=None)
    venue = await make_venue(capture)
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(a), endpoint=venue.url, **options))
    await rec.start()
    try:
        await wait_until_recorded(rec, venue, capture)
    finally:
        await rec.stop()
    date = sorted(p.name[5:] for p in (a / "book").rglob("date=*"))[0]
    source = DatasetSource(str(a), date, speed=None)
    served = await make_venue(source)
    copy = Recorder(RecorderConfig(symbols=[ETH], data=str(b), endpoint=served.url, **options))
    await copy.start()
    try:
        for _ in range(2400):
            if source.finished and all(copy.sessions[m].states["ETHUSDT"].seq.last_id == source.last_u[m]
                                       for m in ("spot", "perp")):
                break
            await asyncio.sleep(0.05)
        assert source.finished, source.status()
        await asyncio.sleep(1.0)  # the last bookTickers and trades, sent after the last diff
    finally:
        await copy.stop()
    for market in ("spot", "perp"):
        assert _assert_same_books(a, b, market) > 6000
        assert _assert_same_quotes(a, b, market, ("bbo", "trades")) > 60_000
        kinds = {r["kind"] for r in _rows(a, "events", market) if r["stream"] == "book"}
        assert "gap" not in kinds and "disconnect" not in kinds  # the captures chain: nothing to resync
        assert [e for e in _rows(b, "events", market) if e["kind"] in ("gap", "disconnect")] == []


def test_status_and_seek_over_http(served: dict) -> None:
    async def go() -> None:
        source = DatasetSource(str(served["a"]), served["date"], speed=None, autostart=True)
        async with Venue(source) as venue, aiohttp.ClientSession() as http:
            for _ in range(400):
                if source.finished:
                    break
                await asyncio.sleep(0.05)
            async with http.get(f"{venue.url}/_venue/status") as resp:
                status = await resp.json()
            assert status["source"] == "dataset" and status["finished"] and status["playhead"]
            first = source.snapshot_times["perp"][0]
            played = source.sent
            async with http.post(f"{venue.url}/_venue/seek", params={"t": str(first + 10**9)}) as resp:
                assert resp.status == 200
            for _ in range(400):
                if source.finished and source.sent > played:
                    break
                await asyncio.sleep(0.05)
            assert source.finished and played < source.sent < 2 * played  # played again, from t on
            async with http.post(f"{venue.url}/_venue/seek", params={"t": "yesterday"}) as resp:
                assert resp.status == 400 and "not a time" in (await resp.json())["error"]
        guarded = Venue(DatasetSource(str(served["a"]), served["date"]), control_token="s3cret")
        async with guarded, aiohttp.ClientSession() as http:
            async with http.get(f"{guarded.url}/_venue/status") as resp:
                assert resp.status == 401
            async with http.get(f"{guarded.url}/_venue/status", headers={"Authorization": "Bearer s3cret"}) as resp:
                assert resp.status == 200
            async with http.get(f"{guarded.url}/api/v3/exchangeInfo") as resp:
                assert resp.status == 200  # market data stays open

    asyncio.run(go())


def test_an_object_store_root_plays_the_same(served: dict, s3_server: Any, s3_root: str) -> None:
    bucket_path = s3_root.removeprefix("s3://")
    pafs.copy_files(str(served["a"]), bucket_path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3_server.filesystem())

    async def play(root: str) -> tuple[int, dict, dict]:
        source = DatasetSource(root, served["date"], speed=None, autostart=True, snapshot_hold_s=0.0)
        async with Venue(source):
            for _ in range(600):
                if source.finished:
                    break
                await asyncio.sleep(0.05)
            assert source.finished
            return source.sent, source.truth("spot", "ETHUSDT"), source.truth("perp", "ETHUSDT")

    local, remote = asyncio.run(play(str(served["a"]))), asyncio.run(play(s3_root))
    assert local[0] > 100 and remote == local


def test_bad_input_is_one_sentence(served: dict, tmp_path: Path) -> None:
    a, date = str(served["a"]), served["date"]
    with pytest.raises(NovaError, match="no recorded book on 2001-01-01"):
        DatasetSource(a, "2001-01-01")
    with pytest.raises(NovaError, match="BTC/USDT is not recorded"):
        DatasetSource(a, date, symbols=[ETH.__class__.parse("BTC/USDT")])
    with pytest.raises(NovaError, match="first valid time is"):
        DatasetSource(a, date, end="00:00:01")
    spot_only = tmp_path / "spot-only"
    shutil.copytree(served["a"] / "book" / "exchange=binance" / "market=spot",
                    spot_only / "book" / "exchange=binance" / "market=spot")
    with pytest.raises(NovaError, match="no recorded perp book"):
        DatasetSource(str(spot_only), date)
    for args, words in ((("--date", "2001-01-01"), "no recorded book"),
                        (("--date", date, "--symbols", "BTC/USDT"), "not recorded"),
                        (("--date", date, "--end", "00:00:01"), "first valid time")):
        proc = nova("serve", "--data", a, "--port", "0", *args, timeout=60)
        assert proc.returncode != 0 and words in one_sentence(proc)
