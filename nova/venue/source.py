"""What the venue's server needs from a feed source (the synthetic market or a capture playback)."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Protocol

from nova.core.markets import Market
from nova.venue.instruments import Instrument


class Publish(Protocol):
    """Hand one message, as JSON text, to the server for every subscriber of ``stream_id@key`` on ``market``.

    ``keys`` may name several aliases of one stream; ``ids`` is the ``(U, u)`` range of a diff-depth message.
    """

    def __call__(self, market: Market, stream_id: str, keys: str | tuple[str, ...], text: str,
                 ids: tuple[int, int] | None = None) -> None: ...


class NoData(LookupError):
    """The source has nothing to answer a request with (yet): a capture before its first open-interest line.

    The message is what the venue tells the client, so it says what is missing and why.
    """


class FeedSource(ABC):
    """A source of Binance market data for a set of instruments, with the book as the venue knows it."""

    instruments: list[Instrument]
    # Close the connections of a market (None: all); the server sets it. A recorded playback uses it to show a
    # recorded disconnect on the wire.
    disconnect: Callable[[Market | None], Awaitable[int]] | None = None

    def __init__(self) -> None:
        self._paused: dict[Market, bool] = {"spot": False, "perp": False}
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._publish: Publish | None = None

    def on_subscribe(self, market: Market, stream_id: str, key: str) -> None:  # noqa: B027
        """A client subscribed to ``stream_id@key`` on ``market`` (a capture playback waits for this)."""

    async def drain(self, low_water: int = 2000) -> None:  # noqa: B027
        """Wait until no client has more than ``low_water`` frames queued; the server replaces this (used by
        ``--speed max``)."""

    def instrument(self, market: Market, exchange_id: str) -> Instrument | None:
        for inst in self.instruments:
            if inst.market == market and inst.symbol.exchange_id == exchange_id:
                return inst
        return None

    @abstractmethod
    async def run(self, publish: Publish) -> None:
        """Produce messages until cancelled."""

    @abstractmethod
    async def snapshot(self, market: Market, exchange_id: str, limit: int) -> dict:
        """The REST depth body (strings, best first), as Binance would answer ``/depth`` right now."""

    @abstractmethod
    def truth(self, market: Market, exchange_id: str) -> dict:
        """The venue's whole current book: ``{"lastUpdateId", "bids", "asks"}`` with string levels."""

    @property
    @abstractmethod
    def description(self) -> str:
        """What market this feed is, in a few words, for the venue's ``Server`` header and ``/_venue/status``.

        A recorder writes it down as the provenance of its data, so it names what makes the market what it is
        (a seed and rate, the capture files) and nothing that changes between two runs of the same market
        (ports, times, playback speed, which symbols a client happened to ask for).
        """

    def top(self, market: Market, exchange_id: str, levels: int) -> dict:
        """The best ``levels`` of the book right now, ``{"lastUpdateId", "T", "bids", "asks"}`` (strings, best
        first), for partial depth streams. Unlike ``snapshot`` it never waits and changes nothing; sources
        override it when they can do better than cutting the whole ``truth``."""
        book = self.truth(market, exchange_id)
        return {"lastUpdateId": book["lastUpdateId"], "T": book.get("T", 0), "bids": book["bids"][:levels],
                "asks": book["asks"][:levels]}

    def now_ms(self) -> int:
        """The feed's clock in ms since the epoch, for the ``E`` of pushes the venue makes on a timer (partial
        depth, tickers, klines). A live or synthetic market is now; a recording played back is at its playhead, so
        a bot sees the recorded time it is trading in rather than the day it is replayed."""
        return int(time.time() * 1000)

    def open_interest(self, exchange_id: str) -> str:
        """The USDT-M ``/fapi/v1/openInterest`` body for a listed perp symbol, as JSON text.

        Text rather than a dict so that a capture's recorded body can be served byte for byte. Raises
        ``NoData`` when the source has no open interest to give.
        """
        raise NoData(f"this feed holds no open interest for {exchange_id}")

    def status(self) -> dict:
        """Source-specific facts for ``/_venue/status``."""
        return {}

    # Pausing stops the feed of a market after flushing every open depth window, so that a client that has
    # read everything holds exactly the truth book.
    def pause(self, market: Market | None = None) -> None:
        for m in (market,) if market else ("spot", "perp"):
            self._paused[m] = True
        self._resumed.clear()

    def resume(self, market: Market | None = None) -> None:
        for m in (market,) if market else ("spot", "perp"):
            self._paused[m] = False
        if not any(self._paused.values()):
            self._resumed.set()

    def is_paused(self, market: Market) -> bool:
        return self._paused[market]
