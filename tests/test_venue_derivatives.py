"""Liquidations (``<symbol>@forceOrder``) and open interest (``/fapi/v1/openInterest``) on the simulated venue.

Over real sockets, as a Binance client sees them: payload shapes and formats, the one-push-per-second cap,
spot's silence, REST errors, capture playback, and the faults a recorder of these feeds must survive. Then
the synthetic model itself, driven step by step (determinism, realism), and the real ccxt.pro client.

Liquidations are rare on purpose (one per 20-30 s at rate 1); the wire tests make them frequent with the
``fast_liquidations`` fixture (the base hazard of ``nova.venue.derivatives``), so that they take seconds.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from nova.core.markets import Symbol
from nova.venue import CaptureSource, SyntheticSource, derivatives
from nova.venue import malformed as bad
from nova.venue.faults import FaultSpec, apply_fault
from nova.venue.streams import parse_stream
from tests.helpers import (
    CAPTURE_T0_MS,
    CAPTURED_OI,
    ETH,
    collect,
    compact_json,
    force_order,
    get_json,
    next_frame,
    post_json,
    request,
    subscribe,
    write_perp_capture,
    ws_connect,
)

BTC = Symbol("BTC", "USDT")
OI = "/fapi/v1/openInterest"
FORCE_ORDER_KEYS = {"e", "E", "o"}
ORDER_KEYS = {"s", "S", "o", "f", "q", "p", "ap", "X", "l", "z", "T"}
ETH_PRICE = re.compile(r"^\d+\.\d{2}$")  # the ETHUSDT perp tick is 0.01
ETH_QTY = re.compile(r"^\d+\.\d{3}$")  # and its step 0.001


@pytest.fixture
def fast_liquidations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four liquidations a second per symbol, so that nearly every 1000 ms window pushes one."""
    monkeypatch.setattr(derivatives, "LIQUIDATIONS_PER_S", 4.0)


def assert_force_order(payload: dict, symbol: str = "ETHUSDT") -> dict:
    """The payload is Binance's forceOrder event, with consistent quantities and prices; returns ``o``."""
    assert set(payload) == FORCE_ORDER_KEYS, sorted(payload)
    assert payload["e"] == "forceOrder" and isinstance(payload["E"], int)
    o = payload["o"]
    assert set(o) == ORDER_KEYS, sorted(o)
    assert o["s"] == symbol and o["S"] in ("BUY", "SELL") and (o["o"], o["f"]) == ("LIMIT", "IOC")
    assert all(isinstance(o[k], str) for k in ("q", "p", "ap", "l", "z")), o
    if symbol == "ETHUSDT":
        assert all(ETH_PRICE.match(o[k]) for k in ("p", "ap")), o
        assert all(ETH_QTY.match(o[k]) for k in ("q", "l", "z")), o
    q, z, last = float(o["q"]), float(o["z"]), float(o["l"])
    assert 0 < last <= z <= q, o
    assert o["X"] == ("FILLED" if z == q else "PARTIALLY_FILLED"), o
    p, ap = float(o["p"]), float(o["ap"])
    assert (p <= ap) if o["S"] == "SELL" else (ap <= p), o  # filled at the limit price or better
    assert isinstance(o["T"], int) and o["T"] <= payload["E"]
    return o


async def raw_frames(ws: Any, n: int, timeout: float = 8.0) -> list[str]:
    """The next ``n`` text frames as they came (a malformed one may not be JSON)."""
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        msg = await asyncio.wait_for(ws.receive(), max(0.01, deadline - time.monotonic()))
        if msg.type == WSMsgType.TEXT:
            out.append(msg.data)
        elif msg.type not in (WSMsgType.PING, WSMsgType.PONG):
            raise AssertionError(f"connection ended: {msg.type!r}")
    return out


# ---- 1. the forceOrder stream --------------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "stream"), [
    ("/fstream/market/ws/ethusdt@forceOrder", None),  # where ccxt subscribes it
    ("/fstream/ws", "ethusdt@forceOrder"),
    ("/fstream/public/ws/0", "ethusdt@forceOrder"),
    ("/fstream/stream?streams=ethusdt@forceOrder", None),
], ids=["market-path", "plain-ws", "public-ws", "combined"])
async def test_force_order_payload(make_venue, session, fast_liquidations, path: str, stream: str | None) -> None:
    venue = await make_venue()
    ws = await ws_connect(session, venue, path)
    if stream:
        await subscribe(ws, stream)
    combined = "streams=" in path
    for _ in range(2):
        frame = await next_frame(ws, timeout=5.0)
        if combined:
            assert set(frame) == {"stream", "data"} and frame["stream"] == "ethusdt@forceOrder"
            frame = frame["data"]
        assert_force_order(frame)
    assert await request(ws, "LIST_SUBSCRIPTIONS", req_id=7) == {"result": ["ethusdt@forceOrder"], "id": 7}
    await ws.close()


@pytest.mark.slow
async def test_force_order_at_most_one_per_symbol_per_second(make_venue, session, fast_liquidations) -> None:
    """Binance pushes only the latest liquidation of each 1000 ms window; counted on the engine's clock."""
    venue = await make_venue(SyntheticSource([ETH, BTC], seed=3))
    first_tick = venue.source.ticks
    ws = await ws_connect(session, venue, "/fstream/market/ws/ethusdt@forceOrder")
    await subscribe(ws, "btcusdt@forceOrder")
    frames = [f for _, f in await collect(ws, 3.5)]
    windows = (venue.source.ticks - first_tick) // 100 + 1  # 1000 ms windows that closed, at most
    by_symbol: dict[str, list[dict]] = {}
    for frame in frames:
        by_symbol.setdefault(assert_force_order(frame, frame["o"]["s"])["s"], []).append(frame)
    assert set(by_symbol) == {"ETHUSDT", "BTCUSDT"}, "each symbol has its own window"
    for symbol, pushed in by_symbol.items():
        assert 1 <= len(pushed) <= windows, (symbol, len(pushed), windows)
        times = [f["E"] for f in pushed]
        assert times == sorted(set(times)), times
    counts = venue.status()["liquidations"]
    assert all(c["generated"] > c["pushed"] for c in counts.values()), counts  # the cap held some back
    await ws.close()


@pytest.mark.slow  # waits for liquidations
async def test_force_order_is_perp_only(make_venue, session, fast_liquidations) -> None:
    """Spot has no liquidation stream: the venue refuses the name (issue 14), as it does for markPrice."""
    assert parse_stream("ethusdt@forceOrder", "spot") is None
    assert parse_stream("ethusdt@forceOrder", "perp") is not None
    venue = await make_venue()
    ws = await ws_connect(session, venue, "/stream/ws/0")
    for req_id, name in enumerate(["ethusdt@forceOrder", "ethusdt@markPrice@1s"], start=1):
        refused = await request(ws, "SUBSCRIBE", [name], req_id=req_id)
        assert refused["error"]["code"] == 2 and "USDT-M" in refused["error"]["msg"]
    assert await request(ws, "LIST_SUBSCRIPTIONS", req_id=3) == {"result": [], "id": 3}
    pushed = venue.status()["liquidations"]["ETHUSDT"]["pushed"]
    assert await collect(ws, 2.5) == []
    assert venue.status()["liquidations"]["ETHUSDT"]["pushed"] > pushed, "perp pushed liquidations meanwhile"
    async with session.post(venue.url + "/_venue/fault/malformed",
                            params={"market": "spot", "stream": "forceOrder", "kind": "nan"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "forceOrder is a USDT-M stream; use market=perp"
    await ws.close()


# ---- 2. open interest over REST -------------------------------------------------------------------------------
async def test_open_interest_body(make_venue, session) -> None:
    venue = await make_venue()
    async with session.get(venue.url + OI, params={"symbol": "ETHUSDT"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        body = await resp.json()
    assert list(body) == ["openInterest", "symbol", "time"]  # Binance's field order
    assert body["symbol"] == "ETHUSDT" and ETH_QTY.match(body["openInterest"]), body
    # about 2e8 USDT of notional at the ~3000 USDT reference price
    assert 4e4 < float(body["openInterest"]) < 1.2e5, body
    assert isinstance(body["time"], int) and abs(body["time"] - time.time() * 1000) < 5000
    status, venue_status = await get_json(session, venue.url + "/_venue/status")
    assert status == 200 and venue_status["markets"]["perp"]["open_interest_served"] == 1


@pytest.mark.parametrize(("params", "code", "msg"), [
    ({}, -1102, "Mandatory parameter 'symbol' was not sent"),
    ({"symbol": ""}, -1102, "Mandatory parameter 'symbol' was not sent"),
    ({"symbol": "FOOUSDT"}, -1121, "Invalid symbol."),
])
async def test_open_interest_errors(make_venue, session, params: dict, code: int, msg: str) -> None:
    venue = await make_venue()
    status, body = await get_json(session, venue.url + OI, **params)
    assert status == 400 and set(body) == {"code", "msg"}
    assert body["code"] == code and body["msg"].startswith(msg), body


async def test_spot_has_no_open_interest(make_venue, session) -> None:
    venue = await make_venue()
    async with session.get(venue.url + "/api/v3/openInterest", params={"symbol": "ETHUSDT"}) as resp:
        assert resp.status == 404


# ---- 3. capture playback ------------------------------------------------------------------------------------

async def wait_finished(source: CaptureSource, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not source.finished:
        assert time.monotonic() < deadline, "the playback did not finish"
        await asyncio.sleep(0.02)


async def test_capture_routes_liquidations_and_open_interest(make_venue, session, tmp_path: Path) -> None:
    path = tmp_path / "usdm_ethusdt_test.txt"
    captured = write_perp_capture(path)
    source = CaptureSource([], [path], speed=1.0)
    venue = await make_venue(source)
    # Before the open interest line has played, the venue says so in Binance's error shape.
    status, body = await get_json(session, venue.url + OI, symbol="ETHUSDT")
    assert (status, body) == (404, {"code": -1000, "msg": "this capture holds no open interest for ETHUSDT yet"})

    ws = await ws_connect(session, venue, "/fstream/stream?streams=ethusdt@depth@0ms/ethusdt@forceOrder")
    status, snap = await get_json(session, venue.url + "/fapi/v1/depth", symbol="ETHUSDT", limit="5")
    assert status == 200 and snap["lastUpdateId"] == 1000  # the held, captured snapshot; playback goes on
    frames = [await next_frame(ws) for _ in range(captured["depth"] + len(captured["liquidations"]))]
    liquidations = [f for f in frames if f["stream"] == "ethusdt@forceOrder"]
    assert [f["data"] for f in liquidations] == captured["liquidations"]  # at their time, in capture order
    assert [f["data"]["u"] for f in frames if f["stream"] == "ethusdt@depth@0ms"] == [1005, 1010, 1020]
    await wait_finished(source)

    async with session.get(venue.url + OI, params={"symbol": "ETHUSDT"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.text() == CAPTURED_OI  # verbatim, time as recorded
    perp = venue.status()["markets"]["perp"]
    assert (perp["open_interest_missing"], perp["open_interest_served"]) == (1, 1)
    assert venue.status()["open_interest_played"] == 1
    await ws.close()


async def test_capture_without_open_interest_answers_404_json(make_venue, session, tmp_path: Path) -> None:
    path = tmp_path / "usdm_ethusdt_no_oi.txt"
    write_perp_capture(path, with_open_interest=False)
    source = CaptureSource([], [path], speed=None, autostart=True)
    venue = await make_venue(source)
    await wait_finished(source)
    async with session.get(venue.url + OI, params={"symbol": "ETHUSDT"}) as resp:
        assert resp.status == 404 and resp.content_type == "application/json"
        assert await resp.json() == {"code": -1000, "msg": "this capture holds no open interest for ETHUSDT yet"}
    status, body = await get_json(session, venue.url + OI, symbol="BTCUSDT")
    assert (status, body["code"]) == (400, -1121)


# ---- 4. faults: malformed liquidations -----------------------------------------------------------------------
SAMPLE_LIQUIDATION = compact_json(force_order("SELL", "2990.10", CAPTURE_T0_MS))


@pytest.mark.parametrize("kind", list(bad.KINDS))
def test_every_malformed_kind_damages_a_liquidation(kind: str) -> None:
    payload, binary = bad.corrupt(kind, "forceOrder", SAMPLE_LIQUIDATION, size=4096)
    assert binary == (kind == "binary")
    if kind == "binary":
        assert payload == SAMPLE_LIQUIDATION.encode()
        return
    assert isinstance(payload, str)
    if kind == "truncated":
        assert payload == SAMPLE_LIQUIDATION[: len(SAMPLE_LIQUIDATION) // 2]
        return
    msg = json.loads(payload)
    o = msg.get("o", {})
    expected = {
        "missing-ids": lambda: "E" not in msg and "T" not in o and o["q"] == "0.014",
        "missing-data": lambda: "o" not in msg and msg["e"] == "forceOrder",
        "string-ids": lambda: msg["E"] == str(CAPTURE_T0_MS + 1) and o["T"] == str(CAPTURE_T0_MS),
        "number-levels": lambda: (o["p"], o["q"], o["ap"], o["l"], o["z"]) == (2990.1, 0.014, 2990.1, 0.014, 0.014)
        and (o["s"], o["S"], o["o"], o["f"], o["X"]) == ("ETHUSDT", "SELL", "LIMIT", "IOC", "FILLED"),
        "non-numeric": lambda: o["q"] == "abc",
        "negative": lambda: o["q"] == "-0.014",
        "nan": lambda: o["q"] == "NaN",
        "huge": lambda: o["q"] == "1e400",
        "long": lambda: o["q"] == "123456789012345678901234567890",
        "unknown-event": lambda: msg["e"] == "somethingNew" and msg["s"] == "ETHUSDT",
        "oversized": lambda: len(payload) == 4096 and "o" not in msg,
    }
    assert expected[kind](), payload[:300]


@pytest.mark.slow  # waits for liquidations
async def test_malformed_liquidation_replaces_or_adds_a_frame(make_venue, session, fast_liquidations) -> None:
    venue = await make_venue()
    ws = await ws_connect(session, venue, "/fstream/market/ws/ethusdt@forceOrder")
    await raw_frames(ws, 1)  # the stream is running; the next push is about a second away
    armed = await post_json(session, venue.url + "/_venue/fault/malformed", market="perp", stream="forceOrder",
                            kind="nan")
    assert armed == {"malformed": 1, "kind": "nan", "stream": "forceOrder"}
    (replaced,) = await raw_frames(ws, 1)
    assert json.loads(replaced)["o"]["q"] == "NaN"  # instead of the real one: corrupting
    # An adding kind, from the command line's spec: the real liquidation, then half of its text.
    await apply_fault(venue, FaultSpec.parse("malformed=truncated/liquidations:perp@1s"))
    real, extra = await raw_frames(ws, 2)
    assert_force_order(json.loads(real))
    assert extra == real[: len(real) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(extra)
    perp = venue.status()["markets"]["perp"]
    assert (perp["malformed_sent"], perp["malformed_replaced"]) == (2, 1)
    await ws.close()


def test_malformed_liquidation_specs() -> None:
    spec = FaultSpec.parse("malformed=nan/forceOrder:perp@every10s")
    assert (spec.kind, spec.malformed, spec.stream, spec.every, spec.at_s) == ("malformed", "nan", "forceOrder",
                                                                              True, 10.0)
    assert FaultSpec.parse("malformed=any/liquidations:perp@5s").stream == "forceOrder"
    for market in ("spot", "all"):
        with pytest.raises(ValueError, match="forceOrder is a USDT-M stream; use :perp"):
            FaultSpec.parse(f"malformed=nan/forceOrder:{market}@10s")


# ---- 5. faults: open interest ---------------------------------------------------------------------------------
async def oi_response(session: aiohttp.ClientSession, venue: Any) -> tuple[int, str]:
    async with session.get(venue.url + OI, params={"symbol": "ETHUSDT"}) as resp:
        return resp.status, await resp.text()


@pytest.mark.parametrize(("status", "code", "says"), [
    (503, -1001, "Internal error; unable to process your request."),
    (500, -1001, "Internal error; unable to process your request."),
    (429, -1003, "Too much request weight used; current limit is 2400 request weight per 1 MINUTE."),
])
async def test_open_interest_fails_with_binance_bodies(make_venue, session, status: int, code: int,
                                                       says: str) -> None:
    venue = await make_venue()
    assert await post_json(session, venue.url + "/_venue/fault/openinterest", market="perp", fail="2",
                           status=str(status)) == {"openinterest_fault": "perp"}
    for _ in range(2):
        got, text = await oi_response(session, venue)
        body = json.loads(text)
        assert got == status and set(body) == {"code", "msg"}
        assert body["code"] == code and body["msg"].startswith(says), body
    got, text = await oi_response(session, venue)
    assert got == 200 and float(json.loads(text)["openInterest"]) > 0
    perp = venue.status()["markets"]["perp"]
    assert (perp["open_interest_failed"], perp["open_interest_served"], perp["open_interest_malformed"]) == (2, 1, 0)


def _decimal(value: Any) -> bool:
    return isinstance(value, str) and bool(ETH_QTY.match(value))


OI_EXPECTED = {
    "missing-data": lambda b: "openInterest" not in b and set(b) == {"symbol", "time"},
    "missing-ids": lambda b: "time" not in b and _decimal(b["openInterest"]),
    "string-ids": lambda b: isinstance(b["time"], str) and b["time"].isdigit(),
    "number-levels": lambda b: isinstance(b["openInterest"], float) and b["openInterest"] > 0,
    "non-numeric": lambda b: b["openInterest"] == "abc",
    "negative": lambda b: b["openInterest"].startswith("-") and _decimal(b["openInterest"][1:]),
    "nan": lambda b: b["openInterest"] == "NaN",
    "huge": lambda b: b["openInterest"] == "1e400" and math.isinf(float(b["openInterest"])),
    "long": lambda b: b["openInterest"] == "123456789012345678901234567890",
}


@pytest.mark.parametrize("kind", list(bad.OPEN_INTEREST_KINDS))
async def test_open_interest_malformed(make_venue, session, kind: str) -> None:
    venue = await make_venue()
    await post_json(session, venue.url + "/_venue/fault/openinterest", market="perp", malformed=kind)
    status, text = await oi_response(session, venue)
    assert status == 200
    if kind == "truncated":
        assert text.startswith('{"openInterest":"') and len(text) < 40
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
    else:
        body = json.loads(text)
        assert body["symbol"] == "ETHUSDT" and OI_EXPECTED[kind](body), text
    status, text = await oi_response(session, venue)  # count=1: the next one is well formed again
    assert status == 200 and _decimal(json.loads(text)["openInterest"])
    perp = venue.status()["markets"]["perp"]
    assert (perp["open_interest_malformed"], perp["open_interest_served"]) == (1, 1)


async def test_open_interest_delay_and_count(make_venue, session) -> None:
    venue = await make_venue()
    await post_json(session, venue.url + "/_venue/fault/openinterest", market="perp", delay="0.4",
                    malformed="nan", count="2")
    for _ in range(2):
        started = time.monotonic()
        status, text = await oi_response(session, venue)
        assert time.monotonic() - started >= 0.35  # never sooner than asked
        assert status == 200 and json.loads(text)["openInterest"] == "NaN"
    status, text = await oi_response(session, venue)
    assert status == 200 and _decimal(json.loads(text)["openInterest"])


@pytest.mark.parametrize(("params", "says"), [
    ({"market": "spot", "fail": "1"}, "openInterest is a USDT-M endpoint; use market=perp"),
    ({"market": "perp", "malformed": "bogus"}, "unknown malformed openInterest kind 'bogus'"),
    ({"market": "perp", "malformed": "binary"}, "unknown malformed openInterest kind 'binary'"),
    ({"market": "perp", "fail": "1", "status": "200"}, "status 200 is not an HTTP error status"),
    ({"market": "perp", "count": "0", "delay": "1"}, "count must be positive"),
])
async def test_open_interest_fault_refusals(make_venue, session, params: dict, says: str) -> None:
    venue = await make_venue()
    async with session.post(venue.url + "/_venue/fault/openinterest", params=params) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"].startswith(says)
    assert (await oi_response(session, venue))[0] == 200  # nothing was armed


async def test_open_interest_faults_from_the_command_line(make_venue, session) -> None:
    venue = await make_venue()
    await apply_fault(venue, FaultSpec.parse("oi-fail=2:perp@30s"))
    assert [(await oi_response(session, venue))[0] for _ in range(3)] == [503, 503, 200]
    await apply_fault(venue, FaultSpec.parse("oi-malformed=nan:perp@every20s"))
    assert json.loads((await oi_response(session, venue))[1])["openInterest"] == "NaN"
    # A bare oi-malformed takes the kinds in turn, one per firing.
    spec = FaultSpec.parse("oi-malformed:perp@every20s")
    for firing in range(2):
        await apply_fault(venue, spec, firing)
    first, second = [(await oi_response(session, venue))[1] for _ in range(2)]
    assert "openInterest" not in json.loads(first)  # missing-data
    assert "time" not in json.loads(second)  # missing-ids
    await apply_fault(venue, FaultSpec.parse("oi-delay=0.3:perp@1s"))
    started = time.monotonic()
    assert (await oi_response(session, venue))[0] == 200 and time.monotonic() - started >= 0.25
    perp = venue.status()["markets"]["perp"]
    assert (perp["open_interest_failed"], perp["open_interest_malformed"], perp["open_interest_served"]) == (2, 3, 2)


@pytest.mark.parametrize(("text", "says"), [
    ("oi-fail=2:spot@30s", "openInterest is a USDT-M endpoint; use :perp"),
    ("oi-malformed=nan:all@every20s", "openInterest is a USDT-M endpoint; use :perp"),
    ("oi-malformed=bogus:perp@20s", "unknown malformed openInterest kind 'bogus'"),
    ("oi-fail=x:perp@20s", "the argument of oi-fail must be a number"),
])
def test_open_interest_fault_specs_refused(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        FaultSpec.parse(text)


# ---- 6. the synthetic model, step by step -------------------------------------------------------------------
def run_engine(seed: int, steps: int, **kw: Any) -> tuple[SyntheticSource, list[dict], list[tuple[int, dict]]]:
    """Drive a synthetic market ``steps`` engine ticks without a server: its forceOrder payloads and, every
    100 ticks, its open interest (wall-clock fields removed: only they may differ between runs)."""
    source = SyntheticSource([ETH], seed=seed, **kw)
    pushed: list[dict] = []
    open_interest: list[tuple[int, dict]] = []

    def publish(market: str, stream_id: str, keys: Any, text: str, ids: Any = None) -> None:
        if keys == "forceOrder":
            payload = json.loads(text)
            pushed.append({"tick": source.ticks, **payload["o"], "T": None})

    for _ in range(steps):
        source.step(publish)
        if source.ticks % 100 == 0:
            body = json.loads(source.open_interest("ETHUSDT"))
            open_interest.append((source.ticks, {**body, "time": None}))
    return source, pushed, open_interest


def test_same_seed_same_liquidations_and_open_interest(fast_liquidations) -> None:
    _, liq_a, oi_a = run_engine(5, 1500)
    _, liq_b, oi_b = run_engine(5, 1500)
    assert liq_a and liq_a == liq_b
    assert oi_a == oi_b and len({json.dumps(b) for _, b in oi_a}) > 1, "open interest moves"
    _, liq_c, oi_c = run_engine(6, 1500)
    assert liq_c != liq_a and oi_c != oi_a


def test_pushes_are_capped_per_window_on_the_engine_clock(fast_liquidations) -> None:
    source, pushed, _ = run_engine(2, 1000)
    ticks = [p["tick"] for p in pushed]
    assert all(t % 100 == 0 for t in ticks) and len(ticks) == len(set(ticks)), ticks  # one per 1000 ms window
    flow = source.flows["ETHUSDT"]
    assert flow.pushed == len(pushed) <= 10 < flow.liquidations


def test_liquidations_never_change_the_market(monkeypatch: pytest.MonkeyPatch) -> None:
    """Liquidations and open interest draw from their own random streams and leave the book alone, so every
    book of a seed is what it was without them."""
    books = []
    for hazard in (0.0, 4.0):
        monkeypatch.setattr(derivatives, "LIQUIDATIONS_PER_S", hazard)
        source, pushed, _ = run_engine(9, 800)
        assert bool(pushed) == (hazard > 0)
        books.append((source.truth("spot", "ETHUSDT"), source.truth("perp", "ETHUSDT")))
    assert books[0] == books[1]


def test_liquidation_side_price_and_fill_follow_the_book() -> None:
    source = SyntheticSource([ETH], seed=4)
    book, flow = source.books[("perp", "ETHUSDT")], source.flows["ETHUSDT"]
    inst = book.inst
    statuses = set()
    for move_bps, side in ((-6.0, "SELL"), (6.0, "BUY")):
        flow.move_bps = move_bps  # the perp price just fell (rose): longs (shorts) are liquidated
        for _ in range(300):
            o = assert_force_order(derivatives.force_order_payload(inst, flow.liquidate(book, 1), 2))
            assert o["S"] == side
            touch = (book.best_bid if side == "SELL" else book.best_ask) * book.tick
            p, ap = float(o["p"]), float(o["ap"])
            if side == "SELL":  # a little through the touch, filled between the limit and the touch
                assert p < touch and p <= ap <= touch + 1e-9 and touch - p < 0.02 * touch
            else:
                assert p > touch and touch - 1e-9 <= ap <= p and p - touch < 0.02 * touch
            statuses.add(o["X"])
    assert statuses == {"FILLED", "PARTIALLY_FILLED"}


def test_liquidations_come_every_20_to_30_s_and_cluster_after_moves() -> None:
    """At rate 1, with the perp mid moving at the synthetic market's volatility (~1.7 bps per sqrt(s))."""
    source = SyntheticSource([ETH], seed=8)
    book, flow = source.books[("perp", "ETHUSDT")], source.flows["ETHUSDT"]
    rng, mid, dt = random.Random(8), flow.mid_ema, 0.01
    for _ in range(180_000):  # 30 minutes of engine time
        mid *= math.exp(1.7e-4 * math.sqrt(dt) * rng.gauss(0.0, 1.0))
        flow.advance(book, mid, dt, 1.0, 0)
    assert 1800 / 30 <= flow.liquidations <= 1800 / 20 * 1.2, flow.liquidations
    flow.move_bps = 0.0
    calm = flow.hazard_per_s(1.0)
    flow.move_bps = -12.0
    assert flow.hazard_per_s(1.0) == pytest.approx(10 * calm)  # a 12 bps drop: ten times as likely
    assert flow.hazard_per_s(10.0) == pytest.approx(100 * calm)  # and scaled by the rate


def test_open_interest_is_reduced_by_liquidations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(derivatives, "OPEN_INTEREST_VOL_PER_SQRT_S", 0.0)  # hold the walk still
    monkeypatch.setattr(derivatives, "LIQUIDATIONS_PER_S", 1e6)  # and liquidate on every tick
    source = SyntheticSource([ETH], seed=4)
    book, flow = source.books[("perp", "ETHUSDT")], source.flows["ETHUSDT"]
    for _ in range(5):
        before = flow.oi_lots
        liq = flow.advance(book, flow.mid_ema, 0.01, 1.0, 0)
        assert liq is not None and flow.oi_lots == pytest.approx(before - liq.filled)
    before = flow.oi_lots
    flow.on_trade(7)
    assert abs(flow.oi_lots - before) == pytest.approx(7, abs=0.01)  # a trade opens or closes 7 lots


# ---- 7. the real ccxt.pro client ------------------------------------------------------------------------------
async def test_ccxt_watch_liquidations_and_fetch_open_interest(make_venue, make_client) -> None:
    venue = await make_venue(SyntheticSource([ETH], seed=1, rate=10))
    client = make_client(venue.url, "perp")
    liquidations = await asyncio.wait_for(client.watch_liquidations("ETH/USDT:USDT"), 30)
    assert liquidations
    for liq in liquidations:
        assert liq["symbol"] == "ETH/USDT:USDT" and liq["side"] in ("buy", "sell")
        assert liq["contracts"] > 0 and liq["price"] > 0 and isinstance(liq["timestamp"], int)
        assert_force_order({"e": "forceOrder", "E": liq["timestamp"], "o": liq["info"]})
    assert venue.status()["markets"]["perp"]["subscriptions"] == ["ethusdt@forceOrder"]
    oi = await client.fetch_open_interest("ETH/USDT:USDT")
    assert oi["symbol"] == "ETH/USDT:USDT" and oi["openInterestAmount"] > 0
    assert oi["openInterestAmount"] == float(oi["info"]["openInterest"])
    assert abs(oi["timestamp"] - time.time() * 1000) < 5000
