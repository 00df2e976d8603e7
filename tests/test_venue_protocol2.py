"""The rest of the Binance protocol a bot expects from the venue (issue 14, part 2), over real sockets.

Refused streams, partial depth, the all-symbol and 24h streams, klines, the REST market-data endpoints,
Binance's root WebSocket paths, time units, TLS and the incoming-message limit: each checked against the
venue's own truth (its book, its published trades) rather than against numbers written into the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import select
import ssl
import subprocess
import time
import urllib.request
from decimal import Decimal
from itertools import pairwise
from typing import Any

import aiohttp
import pytest

from nova.core.limits import USED_WEIGHT_HEADER, request_weight
from nova.venue import CaptureSource, SyntheticSource
from nova.venue.ratelimit import RateLimits
from nova.venue.timeunit import TIME_UNIT_HEADER
from tests.helpers import (
    ENV,
    ETH,
    NOVA,
    get_json,
    next_frame,
    realdata_file,
    request,
    stop,
    subscribe,
    ws_connect,
)

SPOT_WS = "/stream/ws/0"
PERP_WS = "/fstream/public/ws/0"


async def frames(ws: Any, n: int, timeout: float = 6.0, want: Any = None) -> list[Any]:
    """The next ``n`` stream payloads (request replies skipped), optionally only those ``want`` accepts."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        frame = await next_frame(ws, max(0.01, deadline - time.monotonic()))
        if isinstance(frame, dict) and ("id" in frame or "error" in frame):
            continue
        if want is None or want(frame):
            out.append(frame)
    return out


def busy() -> SyntheticSource:
    """A synthetic market fast enough that trades and ticks arrive within a second or two."""
    return SyntheticSource([ETH], seed=3, rate=4.0)


# ---- 1. refusals ------------------------------------------------------------------------------------------------

async def test_streams_the_venue_cannot_produce_are_refused(make_venue, session) -> None:
    venue = await make_venue(incoming_per_s={"spot": 0, "perp": 0})  # many requests in a row
    spot = await ws_connect(session, venue, SPOT_WS)
    for req_id, name in enumerate(["ethusdt@nosuchstream", "btcusdt@depth", "ethusdt@depth20@250ms",
                                   "ethusdt@markPrice", "!markPrice@arr", "ethusdt@kline_7m"], start=1):
        reply = await request(spot, "SUBSCRIBE", [name], req_id=req_id)
        assert reply["id"] == req_id and reply["error"]["code"] == 2 and name in reply["error"]["msg"], reply
    assert await request(spot, "LIST_SUBSCRIPTIONS", req_id=50) == {"result": [], "id": 50}
    perp = await ws_connect(session, venue, PERP_WS)
    # USD-M has its own partial depth speeds: 1000 ms is a spot speed
    reply = await request(perp, "SUBSCRIBE", ["ethusdt@depth5@1000ms"], req_id=7)
    assert reply["error"]["code"] == 2
    await subscribe(perp, "ethusdt@depth5@500ms", "!markPrice@arr@1s", req_id=8)


async def test_unknown_rest_paths_answer_binance_json(make_venue, session) -> None:
    venue = await make_venue()
    for path in ("/api/v3/nosuch", "/fapi/v1/ticker/nosuch", "/sapi/v1/whatever", "/"):
        status, body = await get_json(session, venue.url + path)
        assert status == 404 and set(body) == {"code", "msg"} and body["code"] < 0, (path, body)
    async with session.post(venue.url + "/api/v3/depth") as resp:  # a known path with a wrong method
        assert resp.status == 404 and set(await resp.json()) == {"code", "msg"}


# ---- 2. partial depth --------------------------------------------------------------------------------------------

def _is_prefix_of_truth(levels: list[list[str]], truth: list[list[str]]) -> bool:
    return levels == truth[:len(levels)]


async def test_partial_depth_spot_is_the_book_top(make_venue, session) -> None:
    venue = await make_venue()
    ws = await ws_connect(session, venue, SPOT_WS)
    await subscribe(ws, "ethusdt@depth5@100ms", "ethusdt@depth20")
    fives = await frames(ws, 3, want=lambda f: len(f["bids"]) == 5)
    for msg in fives:
        assert set(msg) == {"lastUpdateId", "bids", "asks"}
        assert len(msg["asks"]) == 5
        assert Decimal(msg["bids"][0][0]) < Decimal(msg["asks"][0][0])
        assert [Decimal(p) for p, _ in msg["bids"]] == sorted((Decimal(p) for p, _ in msg["bids"]), reverse=True)
    twenty = (await frames(ws, 1, want=lambda f: len(f["bids"]) == 20))[0]
    assert len(twenty["asks"]) == 20
    # paused, the stream stops; the book is the truth's top
    venue.pause("spot")
    await asyncio.sleep(0.3)
    truth = venue.truth("spot", "ETHUSDT")
    venue.resume("spot")
    msg = (await frames(ws, 1, want=lambda f: len(f["bids"]) == 5))[0]
    assert msg["lastUpdateId"] >= truth["lastUpdateId"]
    if msg["lastUpdateId"] == truth["lastUpdateId"]:
        assert _is_prefix_of_truth(msg["bids"], truth["bids"]) and _is_prefix_of_truth(msg["asks"], truth["asks"])


async def test_partial_depth_perp_is_a_chained_event(make_venue, session) -> None:
    venue = await make_venue()
    ws = await ws_connect(session, venue, "/fstream/stream?streams=ethusdt@depth10@100ms")
    got = [f["data"] for f in await frames(ws, 6)]
    for msg in got:
        assert set(msg) == {"e", "E", "T", "s", "U", "u", "pu", "b", "a"} and msg["e"] == "depthUpdate"
        assert msg["s"] == "ETHUSDT" and len(msg["b"]) == 10 and len(msg["a"]) == 10
        assert msg["U"] <= msg["u"]
    for before, after in pairwise(got):
        assert after["pu"] == before["u"]
    venue.pause("perp")
    await asyncio.sleep(0.3)
    truth = venue.truth("perp", "ETHUSDT")
    top = venue.source.top("perp", "ETHUSDT", 10)
    assert top["bids"] == truth["bids"][:10] and top["asks"] == truth["asks"][:10]


# ---- 3. all-symbol and 24h streams ---------------------------------------------------------------------------------

async def test_all_book_tickers_and_mark_price_array(make_venue, session) -> None:
    venue = await make_venue()
    spot = await ws_connect(session, venue, "/ws/!bookTicker")  # Binance's root path
    tickers = await frames(spot, 5)
    assert all(set(t) == {"u", "s", "b", "B", "a", "A"} and t["s"] == "ETHUSDT" for t in tickers)
    assert [t["u"] for t in tickers] == sorted(t["u"] for t in tickers)
    perp = await ws_connect(session, venue, PERP_WS)
    await subscribe(perp, "!markPrice@arr@1s")
    (arr,) = await frames(perp, 1, timeout=4.0)
    assert isinstance(arr, list) and arr[0]["e"] == "markPriceUpdate" and arr[0]["s"] == "ETHUSDT"


async def test_ticker_mini_ticker_and_kline_follow_the_trades(make_venue, session) -> None:
    venue = await make_venue(busy())
    ws = await ws_connect(session, venue, "/stream?streams=ethusdt@trade/ethusdt@ticker/ethusdt@miniTicker/"
                                          "ethusdt@kline_1m")
    seen: dict[str, list[dict]] = {}
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not all(len(seen.get(k, [])) >= 2 for k in
                                                  ("24hrTicker", "24hrMiniTicker", "kline")):
        frame = (await frames(ws, 1))[0]["data"]
        seen.setdefault(frame["e"], []).append(frame)
    trades = seen["trade"]
    ticker, mini, kline = seen["24hrTicker"][-1], seen["24hrMiniTicker"][-1], seen["kline"][-1]["k"]
    traded = [t for t in trades if t["t"] <= ticker["L"]]
    assert traded, "the ticker covers trades the client saw"
    assert ticker["n"] == ticker["L"] - ticker["F"] + 1  # synthetic trade ids are consecutive
    assert Decimal(ticker["h"]) >= max(Decimal(t["p"]) for t in traded)
    assert Decimal(ticker["l"]) <= min(Decimal(t["p"]) for t in traded)
    last = [t for t in trades if t["t"] == ticker["L"]]
    assert not last or Decimal(ticker["c"]) == Decimal(last[0]["p"])  # the close is the last trade's price
    assert set(mini) == {"e", "E", "s", "c", "o", "h", "l", "v", "q"}
    assert kline["i"] == "1m" and kline["T"] - kline["t"] == 59_999 and kline["n"] >= 1


# ---- 4. REST market data --------------------------------------------------------------------------------------------

async def test_rest_tickers_trades_and_klines(make_venue, session) -> None:
    venue = await make_venue(busy())
    await asyncio.sleep(2.5)
    venue.pause()  # a still tape: the answers below describe the same trades
    url = venue.url
    for market, prefix in (("spot", "/api/v3"), ("perp", "/fapi/v1")):
        tape = venue.tape.of(market, "ETHUSDT")  # type: ignore[arg-type]
        status, price = await get_json(session, url + prefix + "/ticker/price", symbol="ETHUSDT")
        assert status == 200 and Decimal(price["price"]) > 0
        status, every = await get_json(session, url + prefix + "/ticker/price")
        assert status == 200 and [p["symbol"] for p in every] == ["ETHUSDT"]
        status, bbo = await get_json(session, url + prefix + "/ticker/bookTicker", symbol="ETHUSDT")
        assert status == 200 and Decimal(bbo["bidPrice"]) < Decimal(bbo["askPrice"])
        status, day = await get_json(session, url + prefix + "/ticker/24hr", symbol="ETHUSDT")
        assert status == 200 and day["count"] >= 1
        assert Decimal(day["lowPrice"]) <= Decimal(day["lastPrice"]) <= Decimal(day["highPrice"])
        status, trades = await get_json(session, url + prefix + "/trades", symbol="ETHUSDT", limit=5)
        assert status == 200 and len(trades) == min(5, len(tape.trades))
        assert [t["id"] for t in trades] == sorted(t["id"] for t in trades)
        status, aggs = await get_json(session, url + prefix + "/aggTrades", symbol="ETHUSDT", limit=3)
        assert status == 200 and len(aggs) == 3 and {"a", "p", "q", "f", "l", "T", "m"} <= set(aggs[0])
        status, klines = await get_json(session, url + prefix + "/klines", symbol="ETHUSDT", interval="1m")
        assert status == 200 and klines and len(klines[-1]) == 12
        assert sum(k[8] for k in klines) == day["count"]  # every trade of the day is in one kline
        status, err = await get_json(session, url + prefix + "/klines", symbol="ETHUSDT", interval="7m")
        assert status == 400 and err["code"] == -1120
        status, err = await get_json(session, url + prefix + "/trades", symbol="FOOUSDT")
        assert status == 400 and err["code"] == -1121
    status, avg = await get_json(session, url + "/api/v3/avgPrice", symbol="ETHUSDT")
    assert status == 200 and avg["mins"] == 5 and Decimal(avg["price"]) > 0
    status, premium = await get_json(session, url + "/fapi/v1/premiumIndex", symbol="ETHUSDT")
    assert status == 200 and premium["markPrice"] == venue.tape.of("perp", "ETHUSDT").mark["p"]
    status, _ = await get_json(session, url + "/fapi/v1/avgPrice", symbol="ETHUSDT")  # spot only at Binance
    assert status == 404


async def test_new_endpoints_are_weighed_and_throttled(make_venue, session) -> None:
    weight = request_weight("spot", "/api/v3/ticker/price", {})
    venue = await make_venue(busy(), limits=RateLimits(weight={"spot": 3 * weight, "perp": 0}, window_s=60.0))
    used = []
    for _ in range(3):
        async with session.get(venue.url + "/api/v3/ticker/price") as resp:
            assert resp.status == 200
            used.append(int(resp.headers[USED_WEIGHT_HEADER]))
    assert used == [weight, 2 * weight, 3 * weight]
    async with session.get(venue.url + "/api/v3/klines", params={"symbol": "ETHUSDT", "interval": "1m"}) as resp:
        assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["code"] == -1003
    async with session.get(venue.url + "/api/v3/nosuch") as resp:  # even an error says the weight
        assert USED_WEIGHT_HEADER in resp.headers


# ---- 6. time unit ------------------------------------------------------------------------------------------------

async def test_time_unit_microsecond(make_venue, session) -> None:
    venue = await make_venue(busy())
    plain = await ws_connect(session, venue, "/ws/ethusdt@trade")
    micro = await ws_connect(session, venue, "/ws/ethusdt@trade?timeUnit=MICROSECOND")
    a = {t["t"]: t for t in await frames(plain, 4)}
    b = {t["t"]: t for t in await frames(micro, 8)}
    common = set(a) & set(b)
    assert common, "both clients saw some of the same trades"
    for trade_id in common:
        assert b[trade_id]["T"] == a[trade_id]["T"] * 1000 and b[trade_id]["E"] == a[trade_id]["E"] * 1000
        assert b[trade_id]["p"] == a[trade_id]["p"]
    headers = {TIME_UNIT_HEADER: "MICROSECOND"}
    async with session.get(venue.url + "/api/v3/time", headers=headers) as resp:
        server_us = (await resp.json())["serverTime"]
    assert abs(server_us - time.time() * 1e6) < 5e6
    await asyncio.sleep(1.0)
    params = {"symbol": "ETHUSDT", "interval": "1m"}
    async with session.get(venue.url + "/fapi/v1/klines", params=params) as resp:
        ms_rows = await resp.json()
    async with session.get(venue.url + "/fapi/v1/klines", params=params, headers=headers) as resp:
        us_rows = await resp.json()
    assert us_rows[0][0] == ms_rows[0][0] * 1000 and us_rows[0][6] == ms_rows[0][6] * 1000
    assert us_rows[0][1:6] == ms_rows[0][1:6]


# ---- 7. Binance's root paths --------------------------------------------------------------------------------------

async def test_root_paths_serve_spot(make_venue, session) -> None:
    venue = await make_venue()
    ws = await ws_connect(session, venue, "/ws")
    await subscribe(ws, "ethusdt@depth@100ms")
    (msg,) = await frames(ws, 1)
    assert msg["e"] == "depthUpdate" and "pu" not in msg  # a spot payload
    unlisted = await ws_connect(session, venue, "/ws/btcusdt@depth")  # a symbol the venue does not list
    said = await next_frame(unlisted)
    assert said["id"] is None and said["error"]["code"] == 2 and "BTCUSDT" in said["error"]["msg"]
    assert await request(unlisted, "LIST_SUBSCRIPTIONS", req_id=3) == {"result": [], "id": 3}
    combined = await ws_connect(session, venue, "/stream?streams=ethusdt@bookTicker/ethusdt@depth5@100ms")
    names = {f["stream"] for f in await frames(combined, 12)}
    assert names == {"ethusdt@bookTicker", "ethusdt@depth5@100ms"}


# ---- 8. TLS ---------------------------------------------------------------------------------------------------------

async def test_tls_venue_is_trusted_through_its_certificate(make_venue, session, tmp_path) -> None:
    venue = await make_venue(tls=True, tls_dir=tmp_path)
    assert venue.url.startswith("https://") and venue.cert_path is not None and venue.cert_path.parent == tmp_path
    trusted = ssl.create_default_context(cafile=str(venue.cert_path))
    async with session.get(venue.url + "/api/v3/depth", params={"symbol": "ETHUSDT", "limit": 5},
                           ssl=trusted) as resp:
        assert resp.status == 200 and len((await resp.json())["bids"]) == 5
    ws = await session.ws_connect(venue.url.replace("https://", "wss://") + "/ws/ethusdt@depth@100ms", ssl=trusted)
    (msg,) = await frames(ws, 1)
    assert msg["e"] == "depthUpdate"
    with pytest.raises(aiohttp.ClientConnectorCertificateError):  # not trusted by default: the check is real
        async with session.get(venue.url + "/api/v3/ping", ssl=ssl.create_default_context()):
            pass


def test_cli_tls_prints_url_and_certificate() -> None:
    proc = subprocess.Popen([*NOVA, "venue", "--port", "0", "--tls"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready and proc.stdout is not None
        url = proc.stdout.readline().strip()
        cert = proc.stdout.readline().strip().removeprefix("certificate ")
        assert url.startswith("https://127.0.0.1:"), url
        ctx = ssl.create_default_context(cafile=cert)
        with urllib.request.urlopen(url + "/api/v3/ping", context=ctx, timeout=10) as resp:
            assert json.loads(resp.read()) == {}
    finally:
        stop(proc)


# ---- 9. incoming-message limit and pongs -------------------------------------------------------------------------

async def test_too_many_incoming_messages_close_the_connection(make_venue, session) -> None:
    venue = await make_venue()
    perp = await ws_connect(session, venue, PERP_WS)
    for i in range(8):  # within USDT-M's 10/s
        assert (await request(perp, "LIST_SUBSCRIPTIONS", req_id=i))["id"] == i
    spot = await ws_connect(session, venue, SPOT_WS)
    for i in range(8):  # over spot's 5/s
        await spot.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
    closed = await spot.receive(timeout=5)
    while closed.type == aiohttp.WSMsgType.TEXT:
        closed = await spot.receive(timeout=5)
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1008
    assert not perp.closed


async def test_unsolicited_pongs_do_not_keep_a_spot_client_alive(make_venue, session) -> None:
    venue = await make_venue(ping_interval_s={"spot": 0.3, "perp": 0.3}, pong_timeout_s={"spot": 0.9, "perp": 0.9})
    # the client answers no ping (autoping off) but sends its own pongs
    spot = await ws_connect(session, venue, SPOT_WS, autoping=False)
    perp = await ws_connect(session, venue, PERP_WS, autoping=False)
    deadline = time.monotonic() + 2.5
    msg = None
    while time.monotonic() < deadline and not spot.closed:
        for ws in (spot, perp):
            if not ws.closed:
                await ws.pong(b"")
        with contextlib.suppress(TimeoutError):
            msg = await spot.receive(timeout=0.4)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
    closed = spot.closed or (msg is not None and msg.type == aiohttp.WSMsgType.CLOSE)
    assert closed, "spot closes a client that never answered a ping"
    # USDT-M accepts unsolicited pongs as keep-alive (Binance's documented difference)
    assert (await request(perp, "LIST_SUBSCRIPTIONS", req_id=1)) == {"result": [], "id": 1}


# ---- a real capture: the views agree with the captured trades ------------------------------------------------------

async def test_real_capture_klines_and_ticker_match_its_trades(make_venue, session) -> None:
    path = realdata_file("usdm_ethusdt_20240808.gz")
    trades = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if "@trade" in line:
                trades.append(json.loads(line.split(" ", 1)[1])["data"])
    minutes: dict[int, list[dict]] = {}
    for t in trades:
        minutes.setdefault(t["T"] // 60_000 * 60_000, []).append(t)
    source = CaptureSource([], [path], speed=None, autostart=True)
    venue = await make_venue(source)
    deadline = time.monotonic() + 60
    while not source.finished:
        assert time.monotonic() < deadline, "the capture did not finish playing"
        await asyncio.sleep(0.05)
    status, klines = await get_json(session, venue.url + "/fapi/v1/klines", symbol="ETHUSDT", interval="1m")
    assert status == 200 and [k[0] for k in klines] == sorted(minutes)
    for k in klines:
        ts = minutes[k[0]]
        prices = [Decimal(t["p"]) for t in ts]
        assert (k[1], k[4]) == (f"{prices[0]:.8f}", f"{prices[-1]:.8f}")
        assert (Decimal(k[2]), Decimal(k[3])) == (max(prices), min(prices))
        assert Decimal(k[5]) == sum(Decimal(t["q"]) for t in ts) and k[8] == len(ts)
    status, day = await get_json(session, venue.url + "/fapi/v1/ticker/24hr", symbol="ETHUSDT")
    assert status == 200 and day["count"] == len(trades)
    assert (day["firstId"], day["lastId"]) == (trades[0]["t"], trades[-1]["t"])
    assert Decimal(day["lastPrice"]) == Decimal(trades[-1]["p"])
    status, recent = await get_json(session, venue.url + "/fapi/v1/trades", symbol="ETHUSDT", limit=10)
    assert [t["id"] for t in recent] == [t["t"] for t in trades[-10:]]
    top = venue.source.top("perp", "ETHUSDT", 5)
    truth = venue.truth("perp", "ETHUSDT")
    assert top["bids"] == truth["bids"][:5] and top["asks"] == truth["asks"][:5]


# ---- ccxt.pro, unchanged but for its URLs ---------------------------------------------------------------------------

async def test_ccxt_tickers_ohlcv_trades_and_funding(make_venue, make_client) -> None:
    venue = await make_venue(busy())
    await asyncio.sleep(1.5)

    async def check(market: str, symbol: str) -> None:
        client = make_client(venue.url, market)
        await client.load_markets()
        ticker = await client.fetch_ticker(symbol)
        assert ticker["low"] <= ticker["last"] <= ticker["high"]
        candles = await client.fetch_ohlcv(symbol, "1m")
        assert candles and candles[-1][0] % 60_000 == 0 and candles[-1][3] <= candles[-1][4] <= candles[-1][2]
        trades = await client.fetch_trades(symbol, limit=3)
        assert len(trades) == 3 and all(t["price"] > 0 for t in trades)
        watched, ohlcv = await asyncio.wait_for(asyncio.gather(client.watch_ticker(symbol),
                                                               client.watch_ohlcv(symbol, "1m")), 5)
        assert watched["symbol"] == symbol and watched["last"] > 0
        assert ohlcv[-1][0] in (candles[-1][0], candles[-1][0] + 60_000)
        if market == "perp":
            funding = await client.fetch_funding_rate(symbol)
            assert funding["markPrice"] > 0 and funding["fundingRate"] is not None

    await asyncio.gather(check("spot", "ETH/USDT"), check("perp", "ETH/USDT:USDT"))
