"""One market (spot or USDT-M) of a recording: its ccxt.pro instance and the state of every symbol on it.

A session is the ``Sink`` of its exchange's hooks. Everything here runs on the event loop and stays cheap
per message: integers are checked and appended, the frame text is kept, and the heavy conversion is left to
the writer's worker thread (recorder.rows). Row buffers are swapped out at each flush (``take``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from nova.markets import Market, Symbol
from recorder.sequencer import NULL, BookColumns, BookSequencer

STREAMS = ("book", "bbo", "trades", "funding")


@dataclass
class StreamStats:
    """What the live status shows for one stream; updated on the event loop."""

    messages: int = 0
    rows: int = 0
    last_recv_ns: int = 0
    gaps: int = 0
    reconnects: int = 0
    errors: int = 0
    subscribed_ns: int = 0


@dataclass
class SymbolState:
    symbol: Symbol
    market: Market
    seq: BookSequencer
    bbo: list[tuple] = field(default_factory=list)
    trades: list[tuple] = field(default_factory=list)
    funding: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    stats: dict[str, StreamStats] = field(default_factory=lambda: {s: StreamStats() for s in STREAMS})
    latest_bbo: tuple | None = None
    latest_funding: float = float("nan")
    down: dict[str, int] = field(default_factory=dict)  # stream -> when it disconnected (until it is back)
    resyncing: bool = False


@dataclass
class Taken:
    """One flush worth of rows of a symbol, handed to the writer's worker thread."""

    market: Market
    symbol: Symbol
    book: BookColumns
    bbo: list[tuple]
    trades: list[tuple]
    funding: list[tuple]
    events: list[tuple]


class MarketSession:
    """Receives every message of one market from the hooks and keeps per-symbol buffers and counters."""

    def __init__(self, market: Market, symbols: list[Symbol], next_msg: dict[Symbol, int],
                 request_resync: Callable[[Market, Symbol], None],
                 server_shutdown: Callable[[Market, Any, int], None] | None = None) -> None:
        self.market = market
        self.server_shutdown = server_shutdown
        self.exchange: Any = None  # set by the recorder once the instance exists
        self.states: dict[str, SymbolState] = {}
        for sym in symbols:
            state = SymbolState(sym, market, None)  # type: ignore[arg-type]
            state.seq = BookSequencer(
                market, next_msg.get(sym, 1),
                ledger=lambda ts, kind, exp, rec, detail, st=state: self.ledger(st, "book", ts, kind, exp, rec,
                                                                               detail),
                request_resync=lambda s=sym: request_resync(market, s))
            self.states[sym.exchange_id] = state
        self.unknown_symbols = 0

    # ---- the ledger ----------------------------------------------------------------------------------------
    def ledger(self, state: SymbolState, stream: str, ts: int, kind: str, expected: int | None = None,
               received: int | None = None, detail: str = "") -> None:
        state.events.append((ts, stream, kind, expected, received, detail))
        if kind == "gap":
            state.stats[stream].gaps += 1
        elif kind == "error":
            state.stats[stream].errors += 1
        elif kind == "reconnect":
            state.stats[stream].reconnects += 1

    def ledger_all(self, stream: str, kind: str, detail: str = "") -> None:
        ts = time.time_ns()
        for state in self.states.values():
            self.ledger(state, stream, ts, kind, None, None, detail)

    def _back(self, state: SymbolState, stream: str, ts: int) -> None:
        """The first message of a stream after a disconnect: ledger the reconnect."""
        since = state.down.pop(stream, None)
        if since is not None:
            self.ledger(state, stream, ts, "reconnect", None, None, f"receiving again after {(ts - since) / 1e9:.1f} s")

    def _state(self, message: Any) -> SymbolState | None:
        state = self.states.get(message.get("s")) if isinstance(message, dict) else None
        if state is None:
            self.unknown_symbols += 1
        return state

    def _bad(self, state: SymbolState | None, stream: str, ts: int, message: Any, why: str) -> None:
        """A message that does not have Binance's shape: ledgered, never written as a row."""
        text = orjson.dumps(message)[:200].decode(errors="replace") if isinstance(message, dict | list) else \
            repr(message)[:200]
        for st in [state] if state else self.states.values():
            self.ledger(st, stream, ts, "error", None, None, f"malformed {stream} message ({why}): {text}")

    # ---- the Sink ------------------------------------------------------------------------------------------------
    def on_depth(self, market: Market, message: dict, raw: str | None, ts: int) -> None:
        state = self._state(message)
        if state is None:
            return
        try:
            first, last, event_ms = message["U"], message["u"], message["E"]
            prev = message.get("pu", NULL) if market == "perp" else NULL
            trade_ms = message.get("T", NULL)
            if not (type(first) is int and type(last) is int and type(event_ms) is int and type(prev) is int
                    and type(trade_ms) is int and 0 < first <= last):
                raise TypeError("ids and times must be positive integers with U <= u")
            if market == "perp" and prev == NULL:
                raise KeyError("pu")
        except (KeyError, TypeError) as exc:
            self._bad(state, "book", ts, message, str(exc))
            return
        stats = state.stats["book"]
        stats.messages += 1
        stats.last_recv_ns = ts
        if state.down:
            self._back(state, "book", ts)
        state.seq.on_diff((ts, event_ms, trade_ms, first, last, prev,
                           raw if raw is not None else orjson.dumps(message).decode()))

    def on_snapshot(self, market: Market, symbol: str, response: dict, ts: int) -> None:
        state = self.states.get(symbol)
        if state is None:
            return
        try:
            bids, asks, last_id = response["bids"], response["asks"], response["lastUpdateId"]
            if type(last_id) is not int or not isinstance(bids, list) or not isinstance(asks, list):
                raise TypeError("lastUpdateId must be an integer and bids/asks lists")
        except (KeyError, TypeError) as exc:
            self._bad(state, "book", ts, response, str(exc))
            return
        event_ms, trade_ms = response.get("E", NULL), response.get("T", NULL)
        text = orjson.dumps({"b": bids, "a": asks}).decode()
        state.seq.on_snapshot(ts, event_ms if type(event_ms) is int else NULL,
                              trade_ms if type(trade_ms) is int else NULL, last_id, text, len(bids) + len(asks))

    def on_bbo(self, market: Market, message: dict, ts: int) -> None:
        state = self._state(message)
        if state is None:
            return
        try:
            row = (ts, message["E"] * 1_000_000 if market == "perp" else None, _int(message["u"]),
                   _num(message["b"]), _num(message["B"]), _num(message["a"]), _num(message["A"]))
        except (KeyError, TypeError, ValueError) as exc:
            self._bad(state, "bbo", ts, message, str(exc))
            return
        state.bbo.append(row)
        state.latest_bbo = row
        stats = state.stats["bbo"]
        stats.messages += 1
        stats.last_recv_ns = ts
        if state.down:
            self._back(state, "bbo", ts)

    def on_trade(self, market: Market, message: dict, ts: int) -> None:
        state = self._state(message)
        if state is None:
            return
        try:
            row = (ts, _int(message["E"]) * 1_000_000, _int(message["t"]), _num(message["p"], positive=True),
                   _num(message["q"], positive=True), "sell" if _bool(message["m"]) else "buy")
        except (KeyError, TypeError, ValueError) as exc:
            self._bad(state, "trades", ts, message, str(exc))
            return
        state.trades.append(row)
        stats = state.stats["trades"]
        stats.messages += 1
        stats.last_recv_ns = ts
        if state.down:
            self._back(state, "trades", ts)

    def on_funding(self, market: Market, message: dict, ts: int) -> None:
        state = self._state(message)
        if state is None:
            return
        try:
            row = (ts, _int(message["E"]) * 1_000_000, _num(message["p"]), _num(message["i"]),
                   _rate(message["r"]), _int(message["T"]) * 1_000_000)
        except (KeyError, TypeError, ValueError) as exc:
            self._bad(state, "funding", ts, message, str(exc))
            return
        state.funding.append(row)
        state.latest_funding = row[4]
        stats = state.stats["funding"]
        stats.messages += 1
        stats.last_recv_ns = ts
        if state.down:
            self._back(state, "funding", ts)

    def on_subscribed(self, market: Market, symbols: list[str], ts: int) -> None:
        for state in self.states.values():
            if state.symbol.ccxt_symbol(market) in symbols:
                state.stats["book"].subscribed_ns = ts
                self.ledger(state, "book", ts, "subscribed", None, None, "diff-depth stream acknowledged")

    def on_snapshot_requested(self, market: Market, symbol: str) -> None:
        state = self.states.get(symbol)
        if state is not None:
            state.seq.on_snapshot_requested()

    def on_snapshot_failed(self, market: Market, symbol: str, error: BaseException) -> None:
        state = self.states.get(symbol)
        if state is not None:
            self.ledger(state, "book", time.time_ns(), "error", None, None,
                        f"snapshot request failed: {type(error).__name__}: {str(error)[:200]}")

    def on_server_shutdown(self, market: Market, client: Any, ts: int) -> None:
        if self.server_shutdown is not None:
            self.server_shutdown(market, client, ts)

    # ---- flushing -------------------------------------------------------------------------------------------------
    def take(self) -> list[Taken]:
        out = []
        for state in self.states.values():
            taken = Taken(self.market, state.symbol, state.seq.take(), state.bbo, state.trades, state.funding,
                          state.events)
            state.bbo, state.trades, state.funding, state.events = [], [], [], []
            out.append(taken)
        return out


def _num(value: Any, positive: bool = False) -> float:
    """A Binance decimal string as a float; rejects what a price or size cannot be."""
    if type(value) is not str:
        raise TypeError(f"expected a decimal string, got {type(value).__name__}")
    number = float(value)
    if not (number >= 0) or number == float("inf") or (positive and number == 0):
        raise ValueError(f"'{value}' is not a valid price or size")
    return number


def _rate(value: Any) -> float:
    if type(value) is not str:
        raise TypeError(f"expected a decimal string, got {type(value).__name__}")
    number = float(value)
    if number != number or abs(number) > 1:
        raise ValueError(f"'{value}' is not a funding rate")
    return number


def _int(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise TypeError(f"expected a non-negative integer, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise TypeError(f"expected a boolean, got {value!r}")
    return value
