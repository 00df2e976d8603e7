"""Recorded rows printed as the messages Binance sent: field order, numbers as Binance writes them.

Why a module of its own: the printing is the same for every client and depends only on the recorded row, so
``nova serve`` does it on its reader thread, ahead of the playhead, and the event loop only sends the text when
it is due (formatting a wide diff takes 100-300 µs, which at ``--speed 10`` is most of a burst's lateness).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from nova.core.markets import Market, Symbol
from nova.venue.recording import BookMessage, Entry
from nova.venue.streams import DEPTH_SPEEDS_MS, FORCE_ORDER_KEY, MARK_PRICE_SPEEDS_S, depth_key, mark_key

DEPTH_KEYS = tuple(depth_key(ms) for ms in DEPTH_SPEEDS_MS)
MARK_KEYS = tuple(mark_key(s) for s in MARK_PRICE_SPEEDS_S)
OPEN_INTEREST = "openInterest"  # not a stream: the text REST /fapi/v1/openInterest answers until the next row


class Formats:
    """How a market prints numbers: Binance's decimals, falling back to the shortest exact text.

    Texts are cached by value: a book's prices and sizes repeat all day, and formatting was most of the cost
    of a max-speed playback."""

    CACHE_LIMIT = 200_000

    def __init__(self, price_decimals: int, qty_decimals: int) -> None:
        self.price_decimals, self.qty_decimals = price_decimals, qty_decimals
        self._prices: dict[float, str] = {}
        self._qtys: dict[float, str] = {}

    @staticmethod
    def _text(value: float, decimals: int) -> str:
        text = f"{value:.{decimals}f}"
        return text if float(text) == value else repr(value)

    def price(self, value: float) -> str:
        text = self._prices.get(value)
        if text is None:
            if len(self._prices) > self.CACHE_LIMIT:
                self._prices.clear()
            text = self._prices[value] = self._text(value, self.price_decimals)
        return text

    def qty(self, value: float) -> str:
        text = self._qtys.get(value)
        if text is None:
            if len(self._qtys) > self.CACHE_LIMIT:
                self._qtys.clear()
            text = self._qtys[value] = self._text(value, self.qty_decimals)
        return text

    def levels(self, sides: list[str], prices: list[float], amounts: list[float]
               ) -> tuple[list[list[str]], list[list[str]]]:
        """A message's rows as Binance's ``b`` and ``a`` arrays, in recorded order."""
        price, qty = self.price, self.qty
        bids = [[price(p), qty(q)] for s, p, q in zip(sides, prices, amounts, strict=True) if s == "bid"]
        asks = [[price(p), qty(q)] for s, p, q in zip(sides, prices, amounts, strict=True) if s != "bid"]
        return bids, asks



@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message as it goes out: the stream keys it is published under, its JSON text, and for a diff-depth
    message its ``(U, u)``."""

    keys: str | tuple[str, ...]
    text: str
    ids: tuple[int, int] | None = None


class Printer:
    """Prints one symbol's recorded entries (both markets) as Binance's messages."""

    def __init__(self, symbol: Symbol, formats: dict[Market, Formats]) -> None:
        self.sym = symbol.exchange_id
        self.formats = formats

    def __call__(self, entry: Entry) -> Outgoing | None:
        """The message of ``entry``; None for what is not sent as such (snapshots, ledger events)."""
        if entry.table == "book":
            return None if entry.row.snapshot else self.depth(entry.market, entry.row)
        if entry.table == "events":
            return None
        return self.quote(entry.market, entry.table, entry.row)

    def depth(self, market: Market, m: BookMessage) -> Outgoing:
        bids, asks = self.formats[market].levels(m.sides, m.prices, m.amounts)
        event_ms = (m.ts_event or m.ts_recv) // 1_000_000
        if market == "spot":
            payload: dict[str, Any] = {"e": "depthUpdate", "E": event_ms, "s": self.sym, "U": m.first_id,
                                       "u": m.last_id, "b": bids, "a": asks}
        else:
            payload = {"e": "depthUpdate", "E": event_ms, "T": (m.ts_trade or m.ts_event or m.ts_recv) // 1_000_000,
                       "s": self.sym, "U": m.first_id, "u": m.last_id,
                       "pu": m.prev_id if m.prev_id is not None else -1, "b": bids, "a": asks}
        return Outgoing(DEPTH_KEYS, orjson.dumps(payload).decode(), (m.first_id, m.last_id))

    def snapshot(self, market: Market, m: BookMessage) -> dict:
        """A recorded REST snapshot as the body ``/depth`` answered."""
        bids, asks = self.formats[market].levels(m.sides, m.prices, m.amounts)
        if market == "spot":
            return {"lastUpdateId": m.last_id, "bids": bids, "asks": asks}
        event = (m.ts_event or m.ts_recv) // 1_000_000
        return {"lastUpdateId": m.last_id, "E": event, "T": (m.ts_trade or m.ts_event or m.ts_recv) // 1_000_000,
                "bids": bids, "asks": asks}

    def quote(self, market: Market, table: str, r: dict) -> Outgoing | None:
        fmt = self.formats[market]
        sym = self.sym
        event_ms = (r.get("ts_event") or r["ts_recv"]) // 1_000_000
        if table == "bbo":
            payload: dict[str, Any] = {"u": r["update_id"], "s": sym, "b": fmt.price(r["bid_price"]),
                                       "B": fmt.qty(r["bid_amount"]), "a": fmt.price(r["ask_price"]),
                                       "A": fmt.qty(r["ask_amount"])}
            if market == "perp":
                payload = {"e": "bookTicker", **payload, "T": event_ms, "E": event_ms}
            return Outgoing("bookTicker", orjson.dumps(payload).decode())
        if table == "trades":
            payload = {"e": "trade", "E": event_ms, "s": sym, "t": r["trade_id"], "p": fmt.price(r["price"]),
                       "q": fmt.qty(r["amount"]), "T": event_ms, "m": r["taker_side"] == "sell"}
            if market == "spot":
                payload["M"] = True
            return Outgoing("trade", orjson.dumps(payload).decode())
        if table == "funding":
            mark = fmt.price(r["mark_price"]) if r["mark_price"] is not None else "0"
            payload = {"e": "markPriceUpdate", "E": event_ms, "s": sym, "p": Formats._text(r["mark_price"], 8),
                       "ap": mark, "P": Formats._text(r["mark_price"], 8), "i": Formats._text(r["index_price"], 8),
                       "r": Formats._text(r["funding_rate"], 8), "T": (r["next_funding_time"] or 0) // 1_000_000}
            return Outgoing(MARK_KEYS, orjson.dumps(payload).decode())
        if table == "liquidations":
            order = {"s": sym, "S": "BUY" if r["side"] == "buy" else "SELL", "o": "LIMIT", "f": "IOC",
                     "q": fmt.qty(r["amount"]), "p": fmt.price(r["price"]),
                     "ap": fmt.price(r["average_price"] or 0.0), "X": r["status"],
                     "l": fmt.qty(r["filled_amount"] or 0.0), "z": fmt.qty(r["filled_amount"] or 0.0),
                     "T": (r.get("ts_trade") or r["ts_recv"]) // 1_000_000}
            return Outgoing(FORCE_ORDER_KEY, orjson.dumps({"e": "forceOrder", "E": event_ms, "o": order}).decode())
        if table == "open_interest":
            return Outgoing(OPEN_INTEREST, orjson.dumps({"symbol": sym, "openInterest": fmt.qty(r["open_interest"]),
                                                         "time": event_ms}).decode())
        return None
