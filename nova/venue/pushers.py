"""The venue's timed streams: partial depth, 24h tickers, klines and the all-symbol mark price array.

Binance pushes these on a clock rather than on every change, so one task wakes every ``TICK_MS`` and serves
each such stream that has a subscriber and is due: partial depth every its own speed (from the source's book,
the feed's truth), tickers and klines every second (from the tape, ``nova.venue.tape``), ``!markPrice@arr``
every 1 or 3 seconds. A paused market pushes nothing, so a client that read everything stays at the truth.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import orjson

from nova.core.markets import Market
from nova.venue.streams import ALL_SYMBOLS, KLINE_INTERVALS_S
from nova.venue.views import kline_event, mark_array_item, mini_ticker_event, partial_depth, ticker_event

if TYPE_CHECKING:
    from nova.venue.server import Venue

TICK_MS = 100
TICKER_MS = 1000
_PARTIAL = re.compile(r"^depth(\d+)@(\d+)ms$")
_MARK_ARR = re.compile(r"^markPrice@arr@(\d+)s$")


def _text(obj: object) -> str:
    return orjson.dumps(obj).decode()


class Pushers:
    """Serves every timed stream of a venue; ``run`` until cancelled."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue
        self.ticks = 0
        self.prev_u: dict[tuple[Market, str, str], int] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_MS / 1000)
            self.ticks += 1
            self.push_due(self.ticks * TICK_MS)

    def push_due(self, elapsed_ms: int) -> None:
        """Serve each subscribed timed stream whose period divides ``elapsed_ms``."""
        venue = self.venue
        now_ms = venue.source.now_ms()  # a recording's pushes carry its recorded time
        for (market, stream_id, key), subs in list(venue.subscriptions().items()):
            if not subs or venue.source.is_paused(market):
                continue
            text = self._payload(market, stream_id, key, elapsed_ms, now_ms)
            if text is not None:
                venue.deliver(market, stream_id, key, text)

    def _payload(self, market: Market, stream_id: str, key: str, elapsed_ms: int, now_ms: int) -> str | None:
        venue = self.venue
        if (m := _PARTIAL.match(key)) is not None:
            if elapsed_ms % int(m.group(2)):
                return None
            symbol = stream_id.upper()
            top = venue.source.top(market, symbol, int(m.group(1)))
            if not top["bids"] and not top["asks"]:
                return None  # no book yet (a capture before its first snapshot)
            sub = (market, stream_id, key)
            payload = partial_depth(market, symbol, top, int(m.group(1)), self.prev_u.get(sub), now_ms)
            self.prev_u[sub] = top["lastUpdateId"]
            return _text(payload)
        if (m := _MARK_ARR.match(key)) is not None:
            if stream_id != ALL_SYMBOLS or elapsed_ms % (int(m.group(1)) * 1000):
                return None
            marks = [t.mark for (mk, _), t in venue.tape.symbols.items() if mk == market and t.mark is not None]
            return _text([mark_array_item(p) for p in marks]) if marks else None
        if elapsed_ms % TICKER_MS or (key not in ("ticker", "miniTicker") and not key.startswith("kline_")):
            return None
        symbol = stream_id.upper()
        tape = venue.tape.of(market, symbol)
        if key.startswith("kline_"):
            interval = key[len("kline_"):]
            klines = tape.klines(KLINE_INTERVALS_S[interval], None, None, 1)
            return _text(kline_event(symbol, interval, klines[-1], now_ms)) if klines else None
        stats = tape.rolling()
        if stats is None:
            return None
        if key == "ticker":
            return _text(ticker_event(market, symbol, tape, stats, now_ms))
        return _text(mini_ticker_event(symbol, stats, now_ms))
