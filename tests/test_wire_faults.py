"""Bad input from the wire: the venue sends malformed frames (nova/venue/malformed.py) on every stream of both
markets while the real ccxt.pro client records over real sockets.

For every kind on every stream the recorder must
- ledger exactly one ``error`` for the malformed frame, on that stream, saying what was wrong;
- keep reading the connection (no disconnect; every stream keeps recording);
- never write a row from it: no NaN, infinite, negative, zero or absurd price or size in any table, no row
  from an unknown event type or a binary copy (the message counts balance exactly);
- resync the book after a diff-depth message whose changes are unknown (ledgered as a gap, then a resync),
  so that the book rebuilt from the rows alone ends equal to the venue's truth.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from nova.venue import malformed as bad
from nova.venue.faults import FaultSpec, apply_fault
from recorder.endpoints import ccxt_options
from recorder.exchange import RecordingBinance
from recorder.recorder import Recorder
from recorder.session import MarketSession
from tests.helpers import (
    ETH,
    MARKETS,
    STREAMS,
    await_until,
    book_states,
    entries,
    flowing,
    ledger,
    messages_on_disk,
    rebuilt_equals_truth,
    record_until,
    recording,
    streamed_messages,
)
from tests.oracle import read_table

VENUE_STREAM = {"book": "depth", "bbo": "bookTicker", "trades": "trade", "funding": "markPrice"}
PAIRS = [(m, s) for m in MARKETS for s in STREAMS[m]]
# What the ledgered error says for each kind, whatever the stream (any of the alternatives).
SAYS = {
    "missing-ids": ("no 'U' field", "no 'u' field", "no 't' field", "no 'E' field"),
    "missing-data": ("no 'b' field", "no 'p' field", "no event type"),  # spot bookTicker has no "e" to route by
    "string-ids": ("must be positive integers", "expected a non-negative integer, got '", "time in ms, got '"),
    "number-levels": ("got float", "not a plain decimal string"),
    "non-numeric": ("abc",),
    "negative": ("'-", '"-'),
    "nan": ("NaN",),
    "huge": ("1e400",),
    "long": ("123456789012345678901234567890",),
    "unknown-event": ("unknown event type 'somethingNew'",),
    "binary": ("binary frame",),
    "oversized": ("no 'b' field", "no 'p' field", "no 'u' field", "no 'E' field", "no event type"),
    "truncated": ("JSONDecodeError",),
}
NOT_A_DEPTH_MESSAGE = {"unknown-event"}  # the one kind after which the book needs no resync
FOUND_WHEN_ROWS_ARE_BUILT = {"number-levels", "non-numeric", "negative", "nan", "huge", "long"}  # depth levels
ABSURD_SIZE = 1e9


def _errors(rec: Recorder) -> dict[tuple[str, str], int]:
    states = book_states(rec)
    return {(m, s): states[m].stats[s].errors for m, s in PAIRS}


def assert_no_malformed_rows(root: Path, market: str) -> None:
    """Every value in every table of the market is a sane number (the synthetic feed's ETH is ~3000 USDT)."""

    def sane(x: Any, positive: bool = True) -> bool:
        return isinstance(x, float) and math.isfinite(x) and (x > 0 if positive else x >= 0) and x <= ABSURD_SIZE

    def plausible_time(row: dict) -> bool:
        return row["ts_event"] is None or abs(row["ts_event"] - row["ts_recv"]) < 86_400 * 10**9

    book = read_table(root, "book", market)
    assert book
    for row in book:
        assert plausible_time(row), row
        if row["side"] is None:  # the one row of a message without level changes, or of a malformed one
            assert row["price"] is None and row["amount"] is None, row
        else:
            assert sane(row["price"]) and sane(row["amount"], positive=False), row
    bbo = read_table(root, "bbo", market)
    for row in bbo:
        assert plausible_time(row) and row["update_id"] > 0, row
        assert all(sane(row[c]) for c in ("bid_price", "bid_amount", "ask_price", "ask_amount")), row
    assert len({r["update_id"] for r in bbo}) == len(bbo), "no bookTicker recorded twice (a binary copy)"
    trades = read_table(root, "trades", market)
    for row in trades:
        assert plausible_time(row) and row["trade_id"] > 0 and row["taker_side"] in ("buy", "sell"), row
        assert sane(row["price"]) and sane(row["amount"]), row
    assert len({r["trade_id"] for r in trades}) == len(trades), "no trade recorded twice (a binary copy)"
    for row in read_table(root, "funding", market):
        assert plausible_time(row) and sane(row["mark_price"]) and sane(row["index_price"]), row
        assert math.isfinite(row["funding_rate"]) and abs(row["funding_rate"]) <= 1, row
        assert row["next_funding_time"] > row["ts_event"], row


async def finish_with_malformed(venue: Any, rec: Recorder, root: Path) -> tuple[dict, dict[str, list[dict]]]:
    """Pause the venue, let the recorder reach its truth, stop; then the book equals the truth, no row is
    malformed, and the counts balance: every message received is on disk, and what was received is what the
    venue sent plus the diffs whose levels were found malformed when rows were built (stored as one stale,
    empty row each; everything else malformed never counted as a message)."""
    await record_until(venue, rec, min_messages=1)
    summary = await rec.stop()
    sent = venue.status()["markets"]
    events = {m: ledger(root, m) for m in MARKETS}
    for market in MARKETS:
        rebuilt_equals_truth(root, market, venue.truth(market, "ETHUSDT"))
        assert_no_malformed_rows(root, market)
        kept = [e for e in entries(events[market], "error", "book")
                if e["detail"].startswith("malformed diff-depth message msg")]
        received = streamed_messages(summary, market)
        assert received == sent[market]["messages_sent"] + len(kept), market
        assert messages_on_disk(root, market) == received, (market, "every message received is on disk")
        firsts: dict[int, dict] = {}
        for row in read_table(root, "book", market):
            firsts.setdefault(row["msg"], row)
        for e in kept:
            msg = int(e["detail"].split()[4])
            assert firsts[msg]["stale"] and firsts[msg]["side"] is None, ("kept in place, stale, no levels", e)
    return summary, events


async def test_every_malformed_kind_on_every_stream_is_ledgered_never_written_and_resynced(
        make_venue: Any, tmp_path: Path) -> None:
    steps: list[tuple[str, int]] = []
    async with recording(make_venue, tmp_path) as (venue, rec):
        states = book_states(rec)
        for kind in bad.KINDS:
            # Each kind starts on a trusted book, so that each depth injection is its own gap and resync.
            await await_until(lambda: all(s.seq.live for s in states.values()),
                             lambda: {m: s.seq.live for m, s in states.items()})
            before = _errors(rec)
            steps.append((kind, time.time_ns()))
            for market, stream in PAIRS:
                assert venue.inject_malformed(market, "ETHUSDT", kind, VENUE_STREAM[stream]) == 1
            # One error per malformed frame, on its own stream; a frame can only be read (and a later kind
            # ledgered) if the connection kept reading after the previous malformed frame.
            await await_until(lambda: all(n >= before[p] + 1 for p, n in _errors(rec).items()),  # noqa: B023
                             lambda: (kind, {p: n - before[p] for p, n in _errors(rec).items()}))  # noqa: B023
        t_end = time.time_ns()
        await flowing(rec, t_end)  # every stream of both markets still records after the last one
        status = venue.status()["markets"]
        summary, events = await finish_with_malformed(venue, rec, tmp_path)

    bounds = [t for _, t in steps[1:]] + [t_end]
    for market in MARKETS:
        assert status[market]["malformed_sent"] == len(STREAMS[market]) * len(bad.KINDS), market
        assert not entries(events[market], "disconnect"), "a malformed frame never costs the connection"
        for table in ("book", "bbo", "trades"):  # the good messages kept coming while the bad ones did
            rows = [r for r in read_table(tmp_path, table, market) if steps[0][1] <= r["ts_recv"] < t_end]
            assert len({r.get("msg", r["ts_recv"]) for r in rows}) > len(bad.KINDS), (market, table)
    for market, stream in PAIRS:
        assert summary[f"{market}/ETH-USDT/{stream}"]["errors"] == len(bad.KINDS), (market, stream)
        for (kind, start), end in zip(steps, bounds, strict=True):
            window = [e for e in events[market] if start <= e["ts_recv"] < end]
            errors = entries(window, "error", stream)
            assert len(errors) == 1, (market, stream, kind, errors)
            assert any(s in errors[0]["detail"] for s in SAYS[kind]), (market, stream, kind, errors[0])
            assert len(errors[0]["detail"]) < 500, "the ledger holds a preview, never the whole frame"
            if stream != "book":
                continue
            gaps = [e for e in entries(window, "gap", "book") if "malformed" in e["detail"]]
            if kind in NOT_A_DEPTH_MESSAGE:
                assert not gaps and not entries(window, "resync"), (market, kind, window)
            else:  # the book stops being trusted at the malformed message and is resynced
                assert len(gaps) == 1, (market, kind, window)
                assert entries(window, "resync", "book", gaps[0]["ts_recv"]), (market, kind, window)
                built = kind in FOUND_WHEN_ROWS_ARE_BUILT
                assert errors[0]["detail"].startswith("malformed diff-depth message msg") == built, errors[0]


async def test_a_frame_over_the_client_size_limit_costs_a_ledgered_reconnect(make_venue: Any, tmp_path: Path) -> None:
    """ccxt refuses frames over 10 MiB by dropping the connection: ledgered as a disconnect naming the size,
    then a reconnect, and the book is resynced; still no malformed row."""
    async with recording(make_venue, tmp_path) as (venue, rec):
        t0 = time.time_ns()
        venue.inject_malformed("spot", "ETHUSDT", "oversized", "depth", size=11 << 20)
        venue.inject_malformed("perp", "ETHUSDT", "oversized", "bookTicker", size=11 << 20)
        states = book_states(rec)
        await await_until(lambda: "book" in states["spot"].down or states["spot"].stats["book"].reconnects,
                         lambda: states["spot"].down)
        await flowing(rec, time.time_ns())
        await record_until(venue, rec, min_messages=1)
        summary = await rec.stop()
    for market, stream in (("spot", "book"), ("perp", "bbo")):
        events = ledger(tmp_path, market)
        down = entries(events, "disconnect", stream, t0)
        assert len(down) == 1 and "exceeds limit" in down[0]["detail"], down
        assert entries(events, "reconnect", stream, down[0]["ts_recv"])
        rebuilt_equals_truth(tmp_path, market, venue.truth(market, "ETHUSDT"))
        assert_no_malformed_rows(tmp_path, market)
        received = streamed_messages(summary, market)
        assert messages_on_disk(tmp_path, market) == received
    assert entries(ledger(tmp_path, "spot"), "resync", "book", t0)


async def test_frames_ccxt_would_choke_on_or_drop_are_ledgered_and_reading_goes_on() -> None:
    """Frames no venue kind produces, fed to the real ccxt client's frame handler in-process: each one is an
    error on the stream whose connection it came over, none raises (which would end ccxt's receive loop),
    none becomes a row, and one that might have been a diff resyncs the book."""
    resyncs: list[str] = []
    session = MarketSession("perp", [ETH], {}, lambda market, symbol: resyncs.append(symbol.exchange_id))
    exchange = RecordingBinance({"options": ccxt_options("perp", 0)}, "perp", session)
    try:
        book = exchange.client("ws://127.0.0.1:9/fstream/public/ws/0")
        book.subscriptions["orderbook::ETH/USDT:USDT"] = {}
        mark = exchange.client("ws://127.0.0.1:9/fstream/market/ws/1")
        mark.subscriptions["markPrice:markPrice@ETH/USDT:USDT"] = {}
        state = session.states["ETHUSDT"]
        state.seq.on_snapshot(1, -1, -1, 10, '{"b":[],"a":[]}', 0)  # a trusted book
        frames = [
            (book, "hello", "not a JSON object"),
            (book, "[1,2]", "an array"),
            (book, '[{"e":"depthUpdate","s":"ETHUSDT"}]', "an array"),
            (book, '{"e":"depthUpdate","E":1,"U":11,"u":12,"pu":10,"b":[],"a":[]}', "no symbol"),
            (book, '{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":11,"u":12,"pu":10,"b":[],"a":[]}', "not recorded"),
            (book, '{"e":"depthUpdate","E":99999999999999999,"s":"ETHUSDT","U":11,"u":12,"pu":10,"b":[],"a":[]}',
             "positive integers"),
            (book, '{"e":"depthUpdate","E":1,"s":"ETHUSDT","U":99999999999999999999,"u":1,"pu":0,"b":[],"a":[]}',
             "positive integers"),  # a 65-bit id: a float to the JSON parser
            (book, '{"e":"depthUpdate","E":1,"s":"ETHUSDT","U":1', "JSONDecodeError"),
            (book, b"\x1f\x8b\x08\x00", "binary frame"),
            (mark, '{"e":"markPriceUpdate","E":1,"s":"ETHUSDT","p":"1 000","i":"1","r":"0","T":2}', "plain decimal"),
            (mark, '{"e":"markPriceUpdate","E":1,"s":"ETHUSDT","p":"1","i":"1","r":"1_0","T":2}', "plain decimal"),
            (mark, '{"stream":"x","data":5}', "not a JSON object"),
        ]
        for client, frame, _ in frames:
            client.handle_text_or_binary_message(frame)  # never raises
        errors = [e for e in state.events if e.kind == "error"]
        assert len(errors) == len(frames), errors
        for (client, _, says), error in zip(frames, errors, strict=True):
            assert error.stream == ("book" if client is book else "funding") and says in error.detail, error
        assert not state.funding and len(state.seq.out) == 1, "nothing but the snapshot was kept"
        gaps = [e for e in state.events if e.kind == "gap"]
        assert len(gaps) == 1 and resyncs, "the first frame that could have been a diff invalidated the book"
    finally:
        await exchange.close()


# ---- the venue side: what a client sees, the control API and the --fault spec ----------------------------------------

async def _frames(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[tuple[WSMsgType, Any]]:
    out = []
    while len(out) < n:
        msg = await asyncio.wait_for(ws.receive(), 5)
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            out.append((msg.type, msg.data))
    return out


async def test_venue_replaces_or_adds_malformed_frames_as_documented(make_venue: Any) -> None:
    venue = await make_venue()
    ws_url = venue.url.replace("http", "ws")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{venue.url}/_venue/fault/malformed", params={"market": "spot", "kind": "bogus"}) as r:
            assert r.status == 400 and "bogus" in (await r.json())["error"]
        async with http.post(f"{venue.url}/_venue/fault/malformed",
                             params={"market": "spot", "kind": "nan", "stream": "markPrice"}) as r:
            assert r.status == 400
        async with http.ws_connect(f"{ws_url}/stream/ws/ethusdt@depth@100ms") as depth, \
                http.ws_connect(f"{ws_url}/fstream/stream?streams=ethusdt@bookTicker") as bbo:
            seen = [orjson.loads(text) for _, text in await _frames(depth, 1)]
            await _frames(bbo, 1)
            # Corrupting: the next depth message arrives without its ids; its successor chains past it.
            async with http.post(f"{venue.url}/_venue/fault/malformed",
                                 params={"market": "spot", "kind": "missing-ids", "count": "1"}) as r:
                assert await r.json() == {"malformed": 1, "kind": "missing-ids", "stream": "depth"}
            seen += [orjson.loads(text) for _, text in await _frames(depth, 6)]  # frames queued before it first
            at = next(i for i, m in enumerate(seen) if "u" not in m)
            assert "U" not in seen[at] and seen[at]["b"] is not None and 0 < at < len(seen) - 1
            assert seen[at + 1]["U"] > seen[at - 1]["u"] + 1, "the replaced message's ids never reach a client"
            # Adding, on a combined stream: the real message, then a binary copy of it.
            async with http.post(f"{venue.url}/_venue/fault/malformed",
                                 params={"market": "perp", "kind": "binary", "stream": "bookTicker"}) as r:
                assert (await r.json())["malformed"] == 1
            frames = await _frames(bbo, 1)
            while frames[-1][0] != WSMsgType.BINARY:
                frames += await _frames(bbo, 1)
            (t1, real), (_, copy) = frames[-2:]
            assert t1 == WSMsgType.TEXT and copy.decode() == real
            assert orjson.loads(real)["stream"] == "ethusdt@bookTicker"
    status = venue.status()["markets"]
    assert (status["spot"]["malformed_sent"], status["spot"]["malformed_replaced"]) == (1, 1)
    assert (status["perp"]["malformed_sent"], status["perp"]["malformed_replaced"]) == (1, 0)


@pytest.mark.parametrize("kind", list(bad.KINDS))
def test_every_kind_damages_every_stream_shape(kind: str) -> None:
    samples = {
        "depth": '{"e":"depthUpdate","E":1,"T":1,"s":"ETHUSDT","U":5,"u":7,"pu":4,"b":[["1.50","2.0"]],"a":[]}',
        "bookTicker": '{"u":5,"s":"ETHUSDT","b":"1.50","B":"2.0","a":"1.60","A":"3.0"}',
        "trade": '{"e":"trade","E":1,"s":"ETHUSDT","t":9,"p":"1.50","q":"2.0","T":1,"m":true}',
        "markPrice": '{"e":"markPriceUpdate","E":1,"s":"ETHUSDT","p":"1.5","i":"1.4","r":"0.0001","T":9}',
    }
    for family, text in samples.items():
        payload, binary = bad.corrupt(kind, family, text, size=4096)
        assert binary == (kind == "binary")
        assert payload != text
        if kind == "oversized":
            assert len(payload) == 4096


def test_fault_spec_for_malformed_frames() -> None:
    spec = FaultSpec.parse("malformed=nan/bookTicker:perp@every10s")
    assert (spec.kind, spec.malformed, spec.stream, spec.market, spec.at_s, spec.every) == \
        ("malformed", "nan", "bookTicker", "perp", 10.0, True)
    assert FaultSpec.parse("malformed:all@5s").malformed is None  # every kind in turn
    for wrong in ("malformed=bogus:spot@1s", "malformed=nan/funding:spot@1s", "malformed=nan/x:spot@1s",
                  "stall=abc:spot@1s"):
        with pytest.raises(ValueError, match=r"malformed|markPrice|stream|number"):
            FaultSpec.parse(wrong)


async def test_fault_schedule_takes_the_kinds_in_turn(make_venue: Any) -> None:
    venue = await make_venue()
    spec = FaultSpec.parse("malformed=any/trades:spot@every1s")
    for firing in range(3):
        await apply_fault(venue, spec, firing)
    armed = [kind for (m, _, key), queue in venue._malformed.items() if m == "spot" and key == "trade"
             for kind, _ in queue]
    assert armed == list(bad.KINDS)[:3]
