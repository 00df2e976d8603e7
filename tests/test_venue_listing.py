"""The venue's planned cuts and changing listings, which a recorder that runs for months must meet.

Binance closes every WebSocket connection 24 hours after it opened (the venue's ``max_connection_age_s``, which
tests shorten to seconds), and lists, halts and delists symbols while clients are connected (the control API's
``/_venue/listing``). What a recorder does about them is tested with the recorder; here, that the venue does them
as the exchange does.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from nova.venue import SyntheticSource
from nova.venue.recorded import DatasetSource
from tests.helpers import ETH, subscribe, write_midnight_dataset, ws_connect


async def _exchange_info(http: aiohttp.ClientSession, url: str, market: str) -> dict[str, str]:
    """symbol -> status, as exchangeInfo lists them."""
    path = "/api/v3/exchangeInfo" if market == "spot" else "/fapi/v1/exchangeInfo"
    async with http.get(url + path) as resp:
        return {s["symbol"]: s["status"] for s in (await resp.json())["symbols"]}


async def _listing(http: aiohttp.ClientSession, url: str, action: str, symbol: str, **query: str
                   ) -> tuple[int, dict]:
    async with http.post(f"{url}/_venue/listing/{action}", params={"symbol": symbol, **query}) as resp:
        return resp.status, await resp.json()


async def _depth_updates(ws: Any, seconds: float) -> int:
    """How many diff-depth messages arrive within ``seconds``."""
    count, deadline = 0, time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await asyncio.wait_for(ws.receive(), left)
        except TimeoutError:
            break
        if msg.type == WSMsgType.TEXT and '"depthUpdate"' in msg.data:
            count += 1
    return count


async def test_connections_close_at_the_age_limit(make_venue: Any) -> None:
    venue = await make_venue(max_connection_age_s=1.5)
    async with aiohttp.ClientSession() as http:
        ws = await ws_connect(http, venue, "/ws")
        await subscribe(ws, "ethusdt@depth@100ms")
        opened = time.monotonic()
        while (msg := await asyncio.wait_for(ws.receive(), 10.0)).type == WSMsgType.TEXT:
            pass  # updates flow until the venue closes the connection
        lived = time.monotonic() - opened
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED), msg
        assert ws.close_code == 1000
        assert 1.0 <= lived < 5.0, lived
        async with http.get(venue.url + "/_venue/status") as resp:
            status = await resp.json()
    assert status["markets"]["spot"]["connections_aged_out"] == 1
    assert status["markets"]["perp"]["connections_aged_out"] == 0


async def test_symbols_are_listed_halted_resumed_and_delisted_at_runtime(make_venue: Any) -> None:
    venue = await make_venue(SyntheticSource([ETH], seed=5, rate=4.0))
    url = venue.url
    async with aiohttp.ClientSession() as http:
        assert await _exchange_info(http, url, "spot") == {"ETHUSDT": "TRADING"}
        ws = await ws_connect(http, venue, "/ws")
        reply = json.loads(await (await http.ws_connect(url.replace("http", "ws") + "/ws/solusdt@depth")).receive_str())
        assert reply["error"]["code"] == 2  # not listed yet: refused, as any unknown symbol

        status, body = await _listing(http, url, "list", "SOL/USDT")
        assert status == 200 and {i["market"] for i in body["listed"]} == {"spot", "perp"}
        assert await _exchange_info(http, url, "spot") == {"ETHUSDT": "TRADING", "SOLUSDT": "TRADING"}
        assert (await _exchange_info(http, url, "perp"))["SOLUSDT"] == "TRADING"
        await subscribe(ws, "solusdt@depth@100ms")
        assert await _depth_updates(ws, 2.0) > 0

        status, body = await _listing(http, url, "halt", "SOLUSDT")
        assert status == 200 and {i["status"] for i in body["listed"]} == {"BREAK"}
        assert (await _exchange_info(http, url, "perp"))["SOLUSDT"] == "BREAK"
        await _depth_updates(ws, 0.3)  # what was on its way
        assert await _depth_updates(ws, 1.0) == 0  # halted: the book stands still

        assert (await _listing(http, url, "resume", "SOL/USDT"))[0] == 200
        assert await _depth_updates(ws, 2.0) > 0

        assert (await _listing(http, url, "delist", "SOL/USDT"))[0] == 200
        assert await _exchange_info(http, url, "spot") == {"ETHUSDT": "TRADING"}
        assert "SOLUSDT" not in await _exchange_info(http, url, "perp")
        await _depth_updates(ws, 0.3)
        assert await _depth_updates(ws, 1.0) == 0

        status, body = await _listing(http, url, "list", "BTC/USDT", spot_only="1")
        assert status == 200 and [i["market"] for i in body["listed"]] == ["spot"]
        for action, symbol, why in (("list", "ETH/USDT", "listed already"), ("delist", "DOGE/USDT", "not listed"),
                                    ("rename", "ETH/USDT", "unknown listing action"),
                                    ("list", "nonsense!", "is not a symbol")):
            status, body = await _listing(http, url, action, symbol)
            assert status == 400 and why in body["error"], (action, body)


async def test_a_recording_cannot_change_its_listings(make_venue: Any, tmp_path: Any) -> None:
    write_midnight_dataset(tmp_path)
    venue = await make_venue(DatasetSource(str(tmp_path), "2026-11-24", until="2026-11-25", autostart=True))
    async with aiohttp.ClientSession() as http:
        status, body = await _listing(http, venue.url, "list", "SOL/USDT")
    assert status == 400 and "recorded data" in body["error"]
