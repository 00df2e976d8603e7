"""``--all`` while it runs: listings that change under a recorder (issue 16).

The venue lists, halts, resumes and delists symbols at runtime through its control API, as Binance does with
connected clients. A recorder given the rule of ``--all`` (recorder.listings.Universe) reads exchangeInfo every
``listing_every_s`` and must: start a new listing on both markets (ledgered ``start``, its book valid from its
snapshot), stop a halted one and start it again when it trades again (message numbers going on, a new snapshot),
stop a delisted one (ledgered ``stop`` with the reason), record each status change as an instruments row, leave a
spot-only listing alone (no perpetual), and never disturb the symbols that did not change.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nova.analysis.check import check
from nova.core.markets import Symbol, listed, tradable
from nova.venue import SyntheticSource
from recorder.fleet import split
from recorder.listings import Universe, changes, symbol_hash
from recorder.recorder import Recorder, RecorderConfig
from tests.helpers import ETH, MARKETS, STREAMS, await_until, entries, flowing, ledger

SOL = Symbol("SOL", "USDT")
BTC = Symbol("BTC", "USDT")


def _rows(root: Path, table: str, market: str, symbol: Symbol) -> list[dict]:
    base = root / table / "exchange=binance" / f"market={market}" / f"symbol={symbol.dashed}"
    rows: list[dict] = []
    for path in sorted(p for p in base.rglob("*.parquet") if not p.name.startswith(".")):
        table = pq.read_table(path)
        for i, column in enumerate(table.schema):
            if pa.types.is_timestamp(column.type):  # int ns, for plain comparisons
                table = table.set_column(i, column.name, table[column.name].cast(pa.int64()))
        rows.extend(table.to_pylist())
    return rows


def _events(root: Path, market: str, symbol: Symbol) -> list[dict]:
    return sorted(_rows(root, "events", market, symbol), key=lambda e: e["ts_recv"])


async def _listing(http: aiohttp.ClientSession, url: str, action: str, symbol: Symbol, **query: str) -> None:
    async with http.post(f"{url}/_venue/listing/{action}", params={"symbol": symbol.unified, **query}) as resp:
        assert resp.status == 200, await resp.text()


def _state(rec: Recorder, market: str, symbol: Symbol) -> Any:
    state = rec.sessions[market].states.get(symbol.exchange_id)
    return None if state is None or state.retired else state


def _live(rec: Recorder, symbol: Symbol, messages: int = 10) -> bool:
    states = [_state(rec, m, symbol) for m in MARKETS]
    return all(s is not None and s.seq.live and s.stats["book"].messages >= messages for s in states)


def _stopped(rec: Recorder, symbol: Symbol) -> bool:
    return all(symbol.exchange_id in rec.sessions[m].stopped for m in MARKETS)


async def test_listings_are_started_halted_resumed_and_delisted_while_recording(make_venue: Any,
                                                                               tmp_path: Path) -> None:
    venue = await make_venue(SyntheticSource([ETH], seed=31, rate=4.0))
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(tmp_path), endpoint=venue.url, flush_s=0.2,
                                  tables=STREAMS["perp"], listing=Universe("USDT"), listing_every_s=0.3))
    await rec.start()
    try:
        await flowing(rec, 0)
        async with aiohttp.ClientSession() as http:
            await _listing(http, venue.url, "list", SOL)
            await await_until(lambda: _live(rec, SOL), lambda: rec.recording, timeout=20)
            first_count = {m: _state(rec, m, SOL).stats["book"].messages for m in MARKETS}

            await _listing(http, venue.url, "halt", SOL)
            await await_until(lambda: _stopped(rec, SOL), lambda: rec.recording, timeout=20)
            await _listing(http, venue.url, "resume", SOL)
            await await_until(lambda: _live(rec, SOL, messages=max(first_count.values()) + 10),
                              lambda: rec.recording, timeout=20)

            await _listing(http, venue.url, "list", BTC, spot_only="1")  # no perpetual: not a pair to record
            await _listing(http, venue.url, "delist", SOL)
            await await_until(lambda: _stopped(rec, SOL), lambda: rec.recording, timeout=20)
            await asyncio.sleep(1.0)  # a few more looks at exchangeInfo
            assert rec.recording == [ETH]
            assert all(BTC.exchange_id not in s.states and BTC.exchange_id not in s.stopped
                       for s in rec.sessions.values())
        summary = rec.summary()
        assert summary["spot/SOL-USDT/book"]["stopped"] and not summary["spot/ETH-USDT/book"]["stopped"]
    finally:
        await rec.stop()

    for market in MARKETS:
        log = _events(tmp_path, market, SOL)
        for stream in [*STREAMS[market], "instruments"]:
            kinds = [e["kind"] for e in log if e["stream"] == stream and e["kind"] in ("start", "stop")]
            assert kinds == ["start", "stop", "start", "stop"], (market, stream, kinds)
        starts, stops = entries(log, "start", "book"), entries(log, "stop", "book")
        assert "a new listing" in starts[0]["detail"] and "trading again" in starts[1]["detail"]
        assert "status BREAK" in stops[0]["detail"], stops[0]
        assert "delisted" in stops[1]["detail"], stops[1]
        assert starts[0]["source"] and starts[0]["recorder_id"], "a start says who recorded and from where"
        assert entries(log, "gap") == [] and entries(log, "error") == [], [e for e in log if e["kind"] == "error"]

        book = _rows(tmp_path, "book", market, SOL)
        msgs = list(dict.fromkeys(r["msg"] for r in book))
        assert msgs == sorted(msgs) and len(msgs) == len(set(msgs)), "message numbers go on after the restart"
        snapshots = {r["msg"] for r in book if r["snapshot"]}
        assert len(snapshots) >= 2, "each start of the symbol began from a snapshot"
        between = [r for r in book if stops[0]["ts_recv"] < r["ts_recv"] < starts[1]["ts_recv"]]
        assert between == [], "nothing was recorded while it was stopped"
        statuses = [r["status"] for r in sorted(_rows(tmp_path, "instruments", market, SOL),
                                                key=lambda r: r["ts_recv"])]
        assert statuses[:2] == ["TRADING", "BREAK"], statuses  # the halt, recorded as it happened
        assert "TRADING" in statuses[2:], statuses

        eth = ledger(tmp_path, market)
        assert all(e["kind"] in ("start", "stop", "subscribed", "snapshot") for e in eth
                   if e["ts_recv"] > 0), sorted({e["kind"] for e in eth})
        assert not [e for e in eth if "not recorded here" in (e["detail"] or "")]
    for report in check(tmp_path):
        assert report.ok, report.as_dict()


async def test_a_halted_symbol_falls_silent_and_is_stopped_without_cutting_the_others(make_venue: Any,
                                                                                     tmp_path: Path) -> None:
    """The watchdog finds the halted symbol's streams silent long before the next look at exchangeInfo (an
    hour away here): it asks exchangeInfo first instead of restarting the connection, which carries ETH's streams
    too and would cost them a reconnect and a resync."""
    venue = await make_venue(SyntheticSource([ETH, SOL], seed=37, rate=4.0))
    rec = Recorder(RecorderConfig(symbols=[ETH, SOL], data=str(tmp_path), endpoint=venue.url, flush_s=0.2,
                                  tables=STREAMS["perp"], listing=Universe("USDT"), listing_every_s=3600,
                                  stall_s=2.5))
    await rec.start()
    try:
        await flowing(rec, 0)
        await await_until(lambda: _live(rec, SOL), lambda: rec.recording)
        async with aiohttp.ClientSession() as http:
            await _listing(http, venue.url, "halt", SOL)
        await await_until(lambda: _stopped(rec, SOL), lambda: rec.recording, timeout=15)
        await asyncio.sleep(1.5)  # ETH goes on, untouched
    finally:
        await rec.stop()
    for market in MARKETS:
        assert "status BREAK" in entries(_events(tmp_path, market, SOL), "stop", "book")[0]["detail"]
        eth = _events(tmp_path, market, ETH)
        assert [e for e in eth if e["kind"] in ("error", "disconnect", "reconnect", "gap")] == []


def test_a_universe_is_the_same_split_as_the_fleets() -> None:
    symbols = [Symbol(f"C{i}", q) for i in range(60) for q in ("USDT", "USDC")]
    for shards, workers in ((1, 3), (2, 2), (3, 4)):
        for index in range(1, shards + 1):
            mine = [s for s in symbols if symbol_hash(s) % shards == index - 1]
            parts = split(mine, workers, shards)
            for j, part in enumerate(parts):
                universe = Universe(None, (index, shards) if shards > 1 else None, (j, workers))
                assert universe.select(symbols) == sorted(part, key=lambda s: s.unified)
    owners = [sum(s in Universe("USDT", (i, 3), (j, 2)) for i in (1, 2, 3) for j in (0, 1)) for s in symbols]
    assert owners == [1 if s.quote == "USDT" else 0 for s in symbols], "every listing falls to exactly one"


def test_changes_name_why_a_symbol_stops() -> None:
    def entry(symbol: Symbol, status: str, perp: bool = False) -> dict:
        out = {"symbol": symbol.exchange_id, "status": status, "baseAsset": symbol.base, "quoteAsset": symbol.quote}
        return {**out, "contractType": "PERPETUAL", "marginAsset": symbol.quote} if perp else out

    statuses = {"spot": listed("spot", [entry(ETH, "TRADING"), entry(SOL, "BREAK"), entry(BTC, "TRADING")]),
                "perp": listed("perp", [entry(ETH, "TRADING", True), entry(SOL, "TRADING", True),
                                        {**entry(BTC, "TRADING", True), "contractType": "CURRENT_QUARTER"}])}
    assert tradable(statuses) == {ETH}, "a halted spot and a dated future are not pairs to record"
    found = changes(statuses, [SOL], Universe("USDT"))
    assert found.start == [ETH] and list(found.stop) == [SOL]
    assert "exchangeInfo status BREAK" in found.stop[SOL] and "USDT-M" not in found.stop[SOL]
    gone = changes({"spot": statuses["spot"], "perp": {}}, [ETH], Universe("USDT"))
    assert gone.stop == {ETH: "delisted from Binance USDT-M (gone from exchangeInfo)"}
    assert not changes(statuses, [ETH], Universe("USDC")), "a symbol not ours by the rule is never stopped"


@pytest.mark.parametrize("args, said", [(["ETH/USDT", "--listing-every", "1m"], "add --all"),
                                        (["--all", "--listing-every", "0s"], "--listing-every")])
def test_listing_every_is_refused_where_it_means_nothing(args: list[str], said: str) -> None:
    from tests.helpers import nova, one_sentence

    proc = nova("record", *args, "--venue", "http://127.0.0.1:9")
    assert proc.returncode != 0 and said in one_sentence(proc), proc.stderr
