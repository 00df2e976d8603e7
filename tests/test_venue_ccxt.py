"""The real ccxt.pro binance client against the simulated venue, over real sockets, nothing mocked.

The bar: after the venue is paused and the client has read everything, ccxt's order book equals the venue's
truth at every level, for both markets at once, on several seeds, at 100 ms and 0 ms depth speeds, through
snapshots that land inside a message's id range, injected gaps and dropped connections.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from ccxt.base.errors import ChecksumError, NetworkError

from nova.venue import SyntheticSource, Venue
from tests.helpers import CCXT_SYMBOL, ETH, Watcher, ccxt_levels, truth_levels


async def assert_converges(venue: Venue, watcher: Watcher, timeout: float = 10.0) -> dict:
    """With the venue paused, wait for ccxt to reach the truth's update id, then compare every level."""
    truth = venue.truth(watcher.market, "ETHUSDT")
    deadline = time.monotonic() + timeout
    while True:
        book = watcher.client.orderbooks.get(watcher.symbol)
        if book is not None and book["nonce"] == truth["lastUpdateId"]:
            break
        assert time.monotonic() < deadline, (
            f"{watcher.market}: ccxt stuck at {book and book['nonce']}, truth {truth['lastUpdateId']}, "
            f"errors {watcher.errors}")
        await asyncio.sleep(0.02)
    bids, asks = ccxt_levels(book)
    truth_bids, truth_asks = truth_levels(truth)
    assert len(bids) == len(truth_bids) and len(asks) == len(truth_asks)
    assert bids == truth_bids
    assert asks == truth_asks
    return truth


async def start_both(make_venue: Any, make_client: Any, seed: int, perp_rate: int) -> tuple[Venue, Watcher, Watcher]:
    venue = await make_venue(SyntheticSource([ETH], seed=seed))
    spot = Watcher(make_client(venue.url, "spot", 100), "spot").start()
    perp = Watcher(make_client(venue.url, "perp", perp_rate), "perp").start()
    return venue, spot, perp


@pytest.mark.parametrize("seed", [1, 7, 42])
@pytest.mark.parametrize("perp_rate", [100, 0])
async def test_ccxt_books_equal_truth_for_both_markets(make_venue: Any, make_client: Any, seed: int,
                                                       perp_rate: int) -> None:
    venue, spot, perp = await start_both(make_venue, make_client, seed, perp_rate)
    await asyncio.gather(spot.wait_updates(20), perp.wait_updates(20))
    venue.pause()
    await asyncio.gather(assert_converges(venue, spot), assert_converges(venue, perp))
    assert spot.errors == [] and perp.errors == []
    subs = venue.status()["markets"]
    assert subs["spot"]["subscriptions"] == ["ethusdt@depth@100ms"]
    assert subs["perp"]["subscriptions"] == [f"ethusdt@depth@{perp_rate}ms"]
    await asyncio.gather(spot.stop(), perp.stop())


async def test_snapshot_inside_a_message_range_is_handled(make_venue: Any, make_client: Any) -> None:
    """Force fresh snapshots (via gaps) until some landed strictly inside the next message's [U, u]."""
    venue, spot, perp = await start_both(make_venue, make_client, seed=5, perp_rate=0)
    await asyncio.gather(spot.wait_updates(5), perp.wait_updates(5))
    for _ in range(8):
        markets = venue.status()["markets"]
        if markets["spot"]["snapshots_inside"] >= 1 and markets["perp"]["snapshots_inside"] >= 1:
            break
        for market, watcher in (("spot", spot), ("perp", perp)):
            venue.drop_next(market, "ETHUSDT")
            errors = len(watcher.errors)
            deadline = time.monotonic() + 5
            while len(watcher.errors) == errors and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        await asyncio.gather(spot.wait_updates(spot.updates + 5), perp.wait_updates(perp.updates + 5))
    markets = venue.status()["markets"]
    assert markets["spot"]["snapshots_inside"] >= 1
    assert markets["perp"]["snapshots_inside"] >= 1
    venue.pause()
    await asyncio.gather(assert_converges(venue, spot), assert_converges(venue, perp))
    await asyncio.gather(spot.stop(), perp.stop())


async def test_gap_raises_checksum_error_then_ccxt_resyncs(make_venue: Any, make_client: Any) -> None:
    venue, spot, perp = await start_both(make_venue, make_client, seed=11, perp_rate=0)
    await asyncio.gather(spot.wait_updates(10), perp.wait_updates(10))
    venue.drop_next("spot", "ETHUSDT")
    venue.drop_next("perp", "ETHUSDT")
    deadline = time.monotonic() + 10
    while not (spot.errors and perp.errors):
        assert time.monotonic() < deadline, "ccxt did not notice the gap"
        await asyncio.sleep(0.02)
    assert all(isinstance(e, ChecksumError) for e in spot.errors + perp.errors)
    await asyncio.gather(spot.wait_updates(spot.updates + 10), perp.wait_updates(perp.updates + 10))
    venue.pause()
    await asyncio.gather(assert_converges(venue, spot), assert_converges(venue, perp))
    status = venue.status()["markets"]
    assert status["spot"]["dropped"] == 1 and status["perp"]["dropped"] == 1
    assert status["spot"]["snapshots_served"] >= 2 and status["perp"]["snapshots_served"] >= 2
    await asyncio.gather(spot.stop(), perp.stop())


@pytest.mark.parametrize("abort", [False, True], ids=["close-frame", "network-drop"])
async def test_connection_close_ccxt_reconnects_and_converges(make_venue: Any, make_client: Any,
                                                              abort: bool) -> None:
    venue, spot, perp = await start_both(make_venue, make_client, seed=3, perp_rate=100)
    await asyncio.gather(spot.wait_updates(10), perp.wait_updates(10))
    closed = await venue.close_connections(None, abort=abort)
    assert closed == 2
    deadline = time.monotonic() + 10
    while not (spot.errors and perp.errors):
        assert time.monotonic() < deadline, "ccxt did not notice the closed connection"
        await asyncio.sleep(0.02)
    assert all(isinstance(e, NetworkError) for e in spot.errors + perp.errors)
    await asyncio.gather(spot.wait_updates(spot.updates + 10), perp.wait_updates(perp.updates + 10))
    venue.pause()
    await asyncio.gather(assert_converges(venue, spot), assert_converges(venue, perp))
    assert venue.status()["markets"]["spot"]["connections_total"] >= 2
    await asyncio.gather(spot.stop(), perp.stop())


async def test_bids_asks_trades_and_mark_price_are_well_formed(make_venue: Any, make_client: Any) -> None:
    venue = await make_venue(SyntheticSource([ETH], seed=9))
    spot, perp = make_client(venue.url, "spot"), make_client(venue.url, "perp")

    async def first_of(coro_factory: Any, accept: Any, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = await asyncio.wait_for(coro_factory(), timeout)
            if accept(result):
                return result
            assert time.monotonic() < deadline

    for client, market in ((spot, "spot"), (perp, "perp")):
        symbol = CCXT_SYMBOL[market]
        tickers = await first_of(lambda c=client, s=symbol: c.watch_bids_asks([s]), lambda r, s=symbol: s in r)
        t = tickers[symbol]
        assert 0 < t["bid"] < t["ask"] and t["bidVolume"] > 0 and t["askVolume"] > 0
        trades = await first_of(lambda c=client, s=symbol: c.watch_trades(s), lambda r: len(r) > 0)
        for trade in trades:
            assert trade["symbol"] == symbol and trade["price"] > 0 and trade["amount"] > 0
            assert trade["side"] in ("buy", "sell") and trade["id"]
    mark = await first_of(lambda: perp.watch_mark_price(CCXT_SYMBOL["perp"]), lambda r: r.get("markPrice"))
    assert mark["markPrice"] > 0 and mark["indexPrice"] > 0
    funding = mark["info"]
    assert {"e", "E", "s", "p", "i", "P", "r", "T"} <= set(funding)
    assert funding["T"] % (8 * 3600 * 1000) == 0
