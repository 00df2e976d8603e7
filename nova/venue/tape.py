"""What the venue remembers of the messages it published: trades, best bid/ask and mark prices per symbol.

Why: Binance's 24h tickers, klines, recent trades, average price and premium index are all views of the same
trade and price history, and the venue has to answer them for any feed (the synthetic market, a capture, a
recording) without every source computing them. So the server hands each published trade, bookTicker and
markPrice message to the tape, and the tape keeps what those views need, bounded: the last ``RECENT`` trades
and aggregate trades, one-minute buckets for the last 24 hours, and the last best bid/ask and mark price.
Times are the messages' own (``T``, ``E``), so a played-back capture answers with the history it carries.

The rolling 24h window moves by whole minutes (Binance's moves by the millisecond); klines come from the same
buckets, so they exist only for the last 24 hours.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from nova.core.markets import Market

RECENT = 1000  # trades and aggTrades kept per symbol (the largest ``limit`` Binance's spot REST accepts)
DAY_MINUTES = 1440
_ZERO = Decimal(0)


def num(d: Decimal) -> str:
    """A decimal as Binance writes prices and quantities: fixed point, eight places."""
    return f"{d:.8f}"


@dataclass
class Bucket:
    """One minute of trades: a 1m kline."""

    minute: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal = _ZERO
    quote: Decimal = _ZERO
    count: int = 0
    first_id: int = -1
    last_id: int = -1
    taker_buy: Decimal = _ZERO
    taker_buy_quote: Decimal = _ZERO

    def add(self, price: Decimal, qty: Decimal, trade_id: int, buyer_maker: bool) -> None:
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        quote = price * qty
        self.volume += qty
        self.quote += quote
        self.count += 1
        if self.first_id < 0:
            self.first_id = trade_id
        self.last_id = trade_id
        if not buyer_maker:  # the taker bought
            self.taker_buy += qty
            self.taker_buy_quote += quote


@dataclass
class Stats:
    """Aggregated trades over a span of buckets: a kline or a rolling ticker."""

    open_ms: int
    close_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote: Decimal
    count: int
    first_id: int
    last_id: int
    taker_buy: Decimal
    taker_buy_quote: Decimal

    @property
    def vwap(self) -> Decimal:
        return self.quote / self.volume if self.volume else self.close


def merge(buckets: list[Bucket], open_ms: int, close_ms: int) -> Stats:
    first, last = buckets[0], buckets[-1]
    return Stats(open_ms, close_ms, first.open, max(b.high for b in buckets), min(b.low for b in buckets), last.close,
                 sum((b.volume for b in buckets), _ZERO), sum((b.quote for b in buckets), _ZERO),
                 sum(b.count for b in buckets), first.first_id, last.last_id,
                 sum((b.taker_buy for b in buckets), _ZERO), sum((b.taker_buy_quote for b in buckets), _ZERO))


@dataclass
class SymbolTape:
    """The remembered history of one symbol on one market."""

    trades: deque[dict] = field(default_factory=lambda: deque(maxlen=RECENT))  # trade payloads as published
    aggs: deque[dict] = field(default_factory=lambda: deque(maxlen=RECENT))  # aggTrade payloads as published
    minutes: deque[Bucket] = field(default_factory=deque)
    stats_from: str = ""  # "trade", or "aggTrade" for a feed that carries no individual trades
    last_trade: dict | None = None
    bbo_text: str | None = None  # the last bookTicker message, parsed only when asked (they are many)
    mark: dict | None = None

    @property
    def book_ticker(self) -> dict | None:
        return None if self.bbo_text is None else orjson.loads(self.bbo_text)

    def add_trade(self, price: Decimal, qty: Decimal, time_ms: int, trade_id: int, buyer_maker: bool) -> None:
        minute = time_ms // 60_000
        if self.minutes and self.minutes[-1].minute >= minute:
            bucket = self.minutes[-1]  # a late trade joins the newest minute rather than reopening an old one
        else:
            bucket = Bucket(minute, price, price, price, price)
            self.minutes.append(bucket)
            while self.minutes[0].minute <= minute - DAY_MINUTES:
                self.minutes.popleft()
        bucket.add(price, qty, trade_id, buyer_maker)

    def rolling(self, minutes: int = DAY_MINUTES) -> Stats | None:
        """The last ``minutes`` minutes of trades up to the newest one, or None before any trade."""
        if not self.minutes or self.last_trade is None:
            return None
        newest = self.minutes[-1].minute
        span = [b for b in self.minutes if b.minute > newest - minutes]
        return merge(span, self.last_trade["T"] - minutes * 60_000, self.last_trade["T"])

    def klines(self, interval_s: int, start_ms: int | None, end_ms: int | None, limit: int) -> list[Stats]:
        """Klines of ``interval_s`` from the one-minute buckets, oldest first, the last ``limit`` of the range."""
        step = interval_s * 1000
        groups: dict[int, list[Bucket]] = {}
        for b in self.minutes:
            groups.setdefault(b.minute * 60_000 // step * step, []).append(b)
        out = [merge(bs, t, t + step - 1) for t, bs in groups.items()
               if (start_ms is None or t + step > start_ms) and (end_ms is None or t <= end_ms)]
        return out[:limit] if start_ms is not None else out[-limit:]


class Tape:
    """Every symbol's tape, fed by the server with what it publishes."""

    def __init__(self) -> None:
        self.symbols: dict[tuple[Market, str], SymbolTape] = {}

    def of(self, market: Market, exchange_id: str) -> SymbolTape:
        tape = self.symbols.get((market, exchange_id))
        return tape if tape is not None else self.symbols.setdefault((market, exchange_id.upper()), SymbolTape())

    def observe(self, market: Market, stream_id: str, key: str, text: str) -> None:
        """Remember a published message if it is a trade, aggTrade, bookTicker or markPrice one."""
        if key in ("trade", "aggTrade"):
            self._trade(market, key, orjson.loads(text))
        elif key == "bookTicker":
            tape = self.symbols.get((market, stream_id.upper()))
            (tape or self.of(market, stream_id)).bbo_text = text
        elif key.startswith("markPrice@"):
            p = orjson.loads(text)
            self.of(market, p["s"]).mark = p

    def _trade(self, market: Market, key: str, p: dict[str, Any]) -> None:
        tape = self.of(market, p["s"])
        (tape.trades if key == "trade" else tape.aggs).append(p)  # REST rows are made when asked for
        if not tape.stats_from:
            tape.stats_from = key
        if tape.stats_from == key:
            tape.last_trade = p
            tape.add_trade(Decimal(p["p"]), Decimal(p["q"]), p["T"], p["t"] if key == "trade" else p["a"], p["m"])


def trade_row(market: Market, p: dict) -> dict:
    """A ``GET trades`` row from a trade payload."""
    row = {"id": p["t"], "price": p["p"], "qty": p["q"], "quoteQty": num(Decimal(p["p"]) * Decimal(p["q"])),
           "time": p["T"], "isBuyerMaker": p["m"]}
    if market == "spot":
        row["isBestMatch"] = True
    return row


def agg_row(market: Market, p: dict) -> dict:
    """A ``GET aggTrades`` row from an aggTrade payload."""
    row = {"a": p["a"], "p": p["p"], "q": p["q"], "f": p["f"], "l": p["l"], "T": p["T"], "m": p["m"]}
    if market == "spot":
        row["M"] = True
    return row
