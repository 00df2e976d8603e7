"""Shared fixtures: the real-data location, in-process venues and ccxt.pro clients pointed at them."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import ccxt.pro as ccxtpro
import pytest

from nova.core.markets import Market, Symbol
from nova.venue import FeedSource, SyntheticSource, Venue, VenueConfig
from recorder.endpoints import ccxt_options, point_at_venue

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("NOVA_REALDATA", REPO.parent / "shared" / "realdata"))
BINANCE_CAPTURES = REALDATA / "binance"
ETH = Symbol("ETH", "USDT")


def realdata_file(name: str) -> Path:
    """A real capture, or skip the test saying where it was looked for."""
    path = BINANCE_CAPTURES / name
    if not path.is_file():
        pytest.skip(f"real Binance capture {name} not found under {BINANCE_CAPTURES}; set NOVA_REALDATA to the "
                    "folder holding binance/*.gz (CI always has it)")
    return path


@pytest.fixture
async def make_venue() -> AsyncIterator[Callable[..., Awaitable[Venue]]]:
    """Start venues inside the test's event loop; all are stopped at the end of the test."""
    started: list[Venue] = []

    async def factory(source: FeedSource | None = None, **config: Any) -> Venue:
        venue = Venue(source or SyntheticSource([ETH], seed=1), VenueConfig(**config))
        await venue.start()
        started.append(venue)
        return venue

    yield factory
    for venue in started:
        await venue.stop()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Any]]:
    """ccxt.pro binance instances configured only by URLs and options; closed at the end of the test."""
    clients: list[Any] = []

    def factory(url: str, market: Market, depth_rate_ms: int = 100, **options: Any) -> Any:
        exchange = ccxtpro.binance({"options": {**ccxt_options(market, depth_rate_ms), **options}})
        point_at_venue(exchange, url)
        clients.append(exchange)
        return exchange

    yield factory
    for exchange in clients:
        await exchange.close()


def ccxt_levels(orderbook: Any) -> tuple[list[list[float]], list[list[float]]]:
    return [list(x) for x in orderbook["bids"]], [list(x) for x in orderbook["asks"]]


def truth_levels(truth: dict) -> tuple[list[list[float]], list[list[float]]]:
    return ([[float(p), float(q)] for p, q in truth["bids"]], [[float(p), float(q)] for p, q in truth["asks"]])


async def wait_until_recorded(rec: Any, venue: Venue, source: Any, timeout_s: float = 120.0) -> None:
    """Wait until a capture playback has finished and the recorder's every book holds the venue's last id."""
    deadline = time.monotonic() + timeout_s
    while not source.finished or any(s.states["ETHUSDT"].seq.last_id != venue.truth(m, "ETHUSDT")["lastUpdateId"]
                                     for m, s in rec.sessions.items()):
        assert time.monotonic() < deadline, "the recording did not catch up with the playback"
        await asyncio.sleep(0.1)
