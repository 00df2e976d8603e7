"""Third-party Binance clients pointed at `nova serve` end with the recorded book (issue 14).

Why these clients: a researcher runs the bot they already have. python-binance's spot depth cache (REST snapshot
plus diff stream, resyncing on a gap) and its futures depth cache (partial-depth ``@depth10`` stream), and
cryptofeed's Binance and BinanceFutures L2 books (diff stream, snapshot on the first message, over ``wss://``
only) are each configured by URLs alone: the libraries' endpoint attributes, nothing of their logic. Each must
end, once playback is over, with the book the recording holds at its end, rebuilt here from the dataset's rows by
the core's book (``nova.core.book.L2Book``), independently of the venue.

cryptofeed runs in its own process, as a user's bot would: it trusts the venue's self-signed certificate through
``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE``, which aiohttp reads when it is imported (so not in this process).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
from binance import AsyncClient, BinanceSocketManager
from binance.ws.depthcache import DepthCacheManager, FuturesDepthCacheManager

from nova.core.book import L2Book
from nova.core.contract import TS
from nova.core.markets import Market
from nova.venue import SyntheticSource, Venue, VenueConfig
from nova.venue.recorded import DatasetSource
from recorder.recorder import Recorder, RecorderConfig
from tests.helpers import ETH

Levels = list[tuple[float, float]]
PARTIAL_LEVELS = 10  # python-binance's futures depth cache subscribes ``<symbol>@depth10``
SPEED = 2.0  # fast enough for a short test, slow enough that the clients join while the recording plays


async def _record(root: Path) -> None:
    """A short recording with a ledgered spot gap and a perp disconnect, so clients must resync."""
    async with Venue(SyntheticSource([ETH], seed=5)) as venue:
        rec = Recorder(RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, flush_s=0.2))
        await rec.start()
        try:
            await asyncio.sleep(1.5)
            venue.drop_next("spot", "ETHUSDT")
            await asyncio.sleep(1.0)
            await venue.close_connections("perp")
            await asyncio.sleep(2.0)
        finally:
            await rec.stop()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("recorded")
    asyncio.run(_record(root))
    date = sorted(p.name[5:] for p in (root / "book").rglob("date=*"))[0]
    events = pads.dataset(str(root / "events"), format="parquet", partitioning="hive").to_table()
    return {"root": root, "date": date, "events": events.to_pylist()}


def recorded_book(root: Path, market: Market, end_ns: int | None = None) -> tuple[int, Levels, Levels]:
    """(last applied u, bids best first, asks best first) of the messages received before ``end_ns`` (all when
    None), by the contract's rule: in ``msg`` order, skip stale messages, clear on a snapshot, set price ->
    amount, remove at 0."""
    data = pads.dataset(str(root / "book"), format="parquet", partitioning="hive")
    wanted = pc.field("market") == market
    if end_ns is not None:
        wanted &= pc.field("ts_recv") < pa.scalar(end_ns, TS)
    table = data.to_table(columns=["last_id", "msg", "snapshot", "stale", "side", "price", "amount"],
                          filter=wanted).sort_by("msg")
    cols = {n: table.column(n).to_pylist() for n in table.column_names}
    book, last_u = L2Book(), -1
    msg, n, i = cols["msg"], table.num_rows, 0
    while i < n:
        j = i
        while j < n and msg[j] == msg[i]:
            j += 1
        if not cols["stale"][i]:
            if cols["snapshot"][i]:
                book.clear()
            if cols["side"][i] is not None:  # else the one row of a message without level changes
                book.apply(cols["side"][i:j], cols["price"][i:j], cols["amount"][i:j])
            last_u = cols["last_id"][i]
        i = j
    bids, asks = (list(zip(*(a.tolist() for a in book.levels(side)), strict=True)) for side in ("bid", "ask"))
    return last_u, [tuple(x) for x in bids], [tuple(x) for x in asks]


def _ws(url: str) -> str:
    return url.replace("http", "ws", 1)


async def _until_finished(source: DatasetSource) -> None:
    for _ in range(600):
        if source.finished:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"playback did not finish: {source.status()}")


def _as_levels(rows: list) -> Levels:
    return [(float(p), float(q)) for p, q in rows]


def _break_ns(recording: dict, market: Market, kind: str) -> int:
    return min(r["ts_recv"].value for r in recording["events"]
               if r["market"] == market and r["stream"] == "book" and r["kind"] == kind)


def test_the_recording_has_a_gap_and_a_reconnect(recording: dict) -> None:
    kinds = {(r["market"], r["kind"]) for r in recording["events"] if r["stream"] == "book"}
    assert ("spot", "gap") in kinds and ("perp", "disconnect") in kinds


async def test_python_binance_depth_caches_end_with_the_recorded_book(recording: dict) -> None:
    """Spot: DepthCacheManager (REST depth + ``@depth`` diffs, resync on a gap). USDⓈ-M: FuturesDepthCacheManager
    (``@depth10`` partial depth: the top 10 only), over the whole recording, the perp disconnect included. No
    ``--autostart``: python-binance asks REST depth before it subscribes anything, and that starts the playback."""
    root = recording["root"]
    source = DatasetSource(str(root), recording["date"], speed=SPEED)
    end = source.end_ns
    async with Venue(source) as venue:
        client = AsyncClient()
        client.API_URL = f"{venue.url}/api"
        bm = BinanceSocketManager(client)
        bm.STREAM_URL = f"{_ws(venue.url)}/"
        bm.FSTREAM_URL = f"{_ws(venue.url)}/fstream/"
        caches: dict[Market, Any] = {}

        async def follow(market: Market, manager: Any) -> None:
            async with manager as dcm:
                while True:
                    caches[market] = await dcm.recv()

        tasks = [asyncio.create_task(follow("spot", DepthCacheManager(client, "ETHUSDT", bm=bm, limit=1000))),
                 asyncio.create_task(follow("perp", FuturesDepthCacheManager(client, "ETHUSDT", bm=bm)))]
        try:
            await _until_finished(source)
            depths: list[tuple[Market, int | None]] = [("spot", None), ("perp", PARTIAL_LEVELS)]
            for market, depth in depths:
                u, bids, asks = recorded_book(root, market, end)
                assert u == source.last_u[market]
                got: tuple[Levels, Levels] = ([], [])
                for _ in range(200):
                    cache = caches.get(market)
                    if cache is not None:
                        got = _as_levels(cache.get_bids()), _as_levels(cache.get_asks())
                        if got == (bids[:depth], asks[:depth]):
                            break
                    await asyncio.sleep(0.05)
                assert got[0] == bids[:depth] and got[1] == asks[:depth], market
                assert len(got[0]) == (depth or len(bids)) and len(bids) > PARTIAL_LEVELS
        finally:
            for task in tasks:
                task.cancel()
            # python-binance's socket stops between reads, and the spot stream is silent after the end
            await asyncio.sleep(0.2)
            await venue.close_connections("spot")
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close_connection()
        assert source.status()["breaks_played"] >= 1  # the spot gap: the depth cache resynced


# The bot, as a user writes it: cryptofeed's own classes with their endpoints pointed at the venue.
CRYPTOFEED_BOT = """
import asyncio, json, sys, threading
from cryptofeed import FeedHandler
from cryptofeed.connection import RestEndpoint, Routes, WebsocketEndpoint
from cryptofeed.defines import L2_BOOK
from cryptofeed.exchanges import Binance, BinanceFutures

url = sys.argv[1]  # https://127.0.0.1:PORT of `nova serve --tls`
wss = url.replace("https", "wss", 1)
Binance.websocket_endpoints = [WebsocketEndpoint(wss)]
Binance.rest_endpoints = [RestEndpoint(url, routes=Routes(
    "/api/v3/exchangeInfo", l2book="/api/v3/depth?symbol={}&limit={}"))]
BinanceFutures.websocket_endpoints = [WebsocketEndpoint(wss + "/fstream", options={"compression": None})]
BinanceFutures.rest_endpoints = [RestEndpoint(url, routes=Routes(
    "/fapi/v1/exchangeInfo", l2book="/fapi/v1/depth?symbol={}&limit={}",
    open_interest="/fapi/v1/openInterest?symbol={}"))]

books = {}

async def on_book(book, receipt_time):
    books[book.exchange] = book

def dump():
    out = {name: {"u": b.sequence_number, "bids": [[str(p), str(q)] for p, q in b.book.bids.to_list()],
                  "asks": [[str(p), str(q)] for p, q in b.book.asks.to_list()]} for name, b in books.items()}
    print(json.dumps(out), flush=True)

fh = FeedHandler(config={"log": {"disabled": True}})
fh.add_feed(Binance(symbols=["ETH-USDT"], channels=[L2_BOOK], callbacks={L2_BOOK: on_book}))
fh.add_feed(BinanceFutures(symbols=["ETH-USDT-PERP"], channels=[L2_BOOK], callbacks={L2_BOOK: on_book}))
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
fh.run(start_loop=False, install_signal_handlers=False)

def commands():  # one line in: print the books; end of input: stop
    for _ in sys.stdin:
        loop.call_soon_threadsafe(dump)
    loop.call_soon_threadsafe(loop.stop)

threading.Thread(target=commands, daemon=True).start()
loop.run_forever()
"""


async def test_cryptofeed_l2_books_over_wss_end_with_the_recorded_book(recording: dict, tmp_path: Path) -> None:
    """Binance and BinanceFutures L2 books over ``wss://`` (``--tls``); cryptofeed's subscriptions start the
    playback, and it resyncs (new REST snapshot) at every recorded break. cryptofeed asks for that snapshot only
    on the first diff after a break, and the recorded snapshot may come before any: the venue holds it for a
    client's request, here briefly, then plays on."""
    root = recording["root"]
    source = DatasetSource(str(root), recording["date"], speed=SPEED, snapshot_hold_s=0.5)
    async with Venue(source, VenueConfig(tls=True, tls_dir=tmp_path / "tls")) as venue:
        assert venue.url.startswith("https://") and venue.cert_path is not None
        env = {**os.environ, "SSL_CERT_FILE": str(venue.cert_path), "REQUESTS_CA_BUNDLE": str(venue.cert_path)}
        bot = await asyncio.create_subprocess_exec(sys.executable, "-c", CRYPTOFEED_BOT, venue.url, cwd=tmp_path,
                                                   env=env, stdin=asyncio.subprocess.PIPE,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert bot.stdin is not None and bot.stdout is not None and bot.stderr is not None
        try:
            await _until_finished(source)
            feeds: dict[str, Market] = {"BINANCE": "spot", "BINANCE_FUTURES": "perp"}
            want = {feed: recorded_book(root, market) for feed, market in feeds.items()}
            got: dict[str, Any] = {}
            for _ in range(100):
                bot.stdin.write(b"books\n")
                await bot.stdin.drain()
                line = await asyncio.wait_for(bot.stdout.readline(), 10)
                assert line, (await bot.stderr.read()).decode()[-2000:]
                got = json.loads(line)
                if all(got.get(feed, {}).get("u") == u for feed, (u, _, _) in want.items()):
                    break
                await asyncio.sleep(0.1)
            for feed, (u, bids, asks) in want.items():
                assert feed in got and got[feed]["u"] == u, (feed, got.get(feed, {}).get("u"), u)
                assert _as_levels(got[feed]["bids"]) == bids and _as_levels(got[feed]["asks"]) == asks, feed
        finally:
            bot.stdin.close()
            try:
                await asyncio.wait_for(bot.wait(), 10)
            except TimeoutError:
                bot.kill()
                await bot.wait()
        assert source.status()["breaks_played"] >= 2
