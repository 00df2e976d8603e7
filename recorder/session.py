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

from nova.core.markets import Market, Symbol
from recorder.levels import plain_decimal
from recorder.sequencer import NULL, BookColumns, BookSequencer

STREAMS = ("book", "bbo", "trades", "funding", "liquidations", "open_interest")
"""The streams a user can choose (``--tables``); ``instruments`` (exchangeInfo) is always recorded."""
PERP_ONLY = frozenset({"funding", "liquidations", "open_interest"})
POLLED = frozenset({"open_interest", "instruments"})  # REST, not a WebSocket stream
# How ccxt names each stream's subscription on a connection (the key ends with the marker and the symbol).
STREAM_MARKERS = {"book": "orderbook::", "bbo": "bookTicker@", "trades": "trade::", "funding": "markPrice@",
                  "liquidations": "liquidations::"}
ORDER_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH"})
MAX_ID = 2**63 - 1  # ids are stored as int64
MAX_MS = (2**63 - 1) // 1_000_000  # times in ms must still fit as ns in an int64


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
    liquidations: list[tuple] = field(default_factory=list)
    open_interest: list[tuple] = field(default_factory=list)
    instruments: list[tuple] = field(default_factory=list)
    last_instrument: tuple | None = None  # the last instruments row, to record only changes
    stats: dict[str, StreamStats] = field(default_factory=lambda: {s: StreamStats()
                                                                   for s in (*STREAMS, "instruments")})
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
    liquidations: list[tuple]
    open_interest: list[tuple]
    instruments: list[tuple]
    events: list[tuple]

    def small(self) -> dict[str, list[tuple]]:
        """The row buffers of every table but the book, by table name."""
        return {"bbo": self.bbo, "trades": self.trades, "funding": self.funding, "liquidations": self.liquidations,
                "open_interest": self.open_interest, "instruments": self.instruments, "events": self.events}


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
               received: int | None = None, detail: str = "", provenance: tuple[str, str, str] | None = None
               ) -> None:
        state.events.append((ts, stream, kind, expected, received, detail, *(provenance or (None, None, None))))
        if kind == "gap":
            state.stats[stream].gaps += 1
        elif kind == "error":
            state.stats[stream].errors += 1
        elif kind == "reconnect":
            state.stats[stream].reconnects += 1

    def _back(self, state: SymbolState, stream: str, ts: int) -> None:
        """The first message of a stream after a disconnect: ledger the reconnect."""
        since = state.down.pop(stream, None)
        if since is not None:
            self.ledger(state, stream, ts, "reconnect", None, None, f"receiving again after {(ts - since) / 1e9:.1f} s")

    def _state(self, message: Any, stream: str, ts: int) -> SymbolState | None:
        """The symbol a message is for; a message without one we record is ledgered (and never a row)."""
        symbol = message.get("s") if isinstance(message, dict) else None
        state = self.states.get(symbol) if type(symbol) is str else None
        if state is None:
            self.unknown_symbols += 1
            if type(symbol) is str:
                self._bad(None, stream, ts, message, f"symbol {symbol[:20]!r} is not recorded here")
            else:
                self._bad(None, stream, ts, message, "no symbol")
                if stream == "book":  # it may have been a diff of any of our books
                    for st in self.states.values():
                        st.seq.on_malformed(ts)
        return state

    def _bad(self, state: SymbolState | None, stream: str, ts: int, message: Any, why: str) -> None:
        """A message that does not have Binance's shape: ledgered, never written as a row."""
        for st in [state] if state else self.states.values():
            self.ledger(st, stream, ts, "error", None, None, f"malformed {stream} message ({why}): {_preview(message)}")

    def streams_on(self, client: Any) -> list[tuple[SymbolState, str]]:
        """The (symbol, stream) pairs subscribed on one ccxt connection, in ``STREAMS`` order per symbol."""
        keys = [k for k in [*(getattr(client, "subscriptions", None) or {}), *(getattr(client, "futures", None) or {})]
                if isinstance(k, str)]
        out = []
        for state in self.states.values():
            symbol = state.symbol.ccxt_symbol(self.market)
            out.extend((state, stream) for stream, marker in STREAM_MARKERS.items()
                       if any(k.endswith(marker + symbol) for k in keys))
        return out

    def on_unexpected(self, market: Market, client: Any, message: Any, ts: int, why: str, decoded: bool) -> None:
        """A frame ccxt would choke on or ignore (binary, broken JSON, an unknown event type): one error per
        symbol whose streams share the connection, on its first stream there. A frame that could not even be
        decoded might have been a diff of a book on that connection, so that book is resynced."""
        pairs = self.streams_on(client)
        symbol = message.get("s") if isinstance(message, dict) else None
        if type(symbol) is str and symbol in self.states:
            pairs = [p for p in pairs if p[0] is self.states[symbol]] or [(self.states[symbol], "book")]
        if not pairs:
            pairs = [(st, "book") for st in self.states.values()]
        first: dict[str, tuple[SymbolState, str]] = {}
        for state, stream in pairs:
            first.setdefault(state.symbol.exchange_id, (state, stream))
        text = _preview(message)
        for state, stream in first.values():
            self.ledger(state, stream, ts, "error", None, None, f"unexpected frame ({why}): {text}")
            if not decoded and any(s is state and st == "book" for s, st in pairs):
                state.seq.on_malformed(ts)

    # ---- the Sink ------------------------------------------------------------------------------------------------
    def on_depth(self, market: Market, message: dict, raw: str | None, ts: int) -> None:
        state = self._state(message, "book", ts)
        if state is None:
            return
        try:
            first, last, event_ms = message["U"], message["u"], message["E"]
            prev = message["pu"] if market == "perp" else NULL
            trade_ms = message.get("T", NULL)
            if not (type(first) is int and type(last) is int and type(event_ms) is int and type(prev) is int
                    and type(trade_ms) is int and 0 < first <= last <= MAX_ID and 0 < event_ms <= MAX_MS
                    and (trade_ms == NULL or 0 < trade_ms <= MAX_MS) and (market == "spot" or 0 <= prev <= MAX_ID)):
                raise TypeError("ids and times must be positive integers with U <= u")
            if type(message["b"]) is not list or type(message["a"]) is not list:
                raise TypeError("b and a must be arrays of levels")
        except (KeyError, TypeError) as exc:
            # Its level changes are unknown (Binance's ids chain over it), so the book must be resynced;
            # the levels themselves are checked when the rows are built (rows.book_batch).
            self._bad(state, "book", ts, message, _why(exc))
            state.seq.on_malformed(ts)
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
            if not (type(last_id) is int and 0 < last_id <= MAX_ID) or not isinstance(bids, list) \
                    or not isinstance(asks, list):
                raise TypeError("lastUpdateId must be a positive integer and bids/asks lists")
        except (KeyError, TypeError) as exc:
            self._bad(state, "book", ts, response, _why(exc))
            return
        event_ms, trade_ms = response.get("E", NULL), response.get("T", NULL)
        text = orjson.dumps({"b": bids, "a": asks}).decode()
        state.seq.on_snapshot(ts, event_ms if type(event_ms) is int and 0 < event_ms <= MAX_MS else NULL,
                              trade_ms if type(trade_ms) is int and 0 < trade_ms <= MAX_MS else NULL, last_id, text,
                              len(bids) + len(asks))

    def on_bbo(self, market: Market, message: dict, ts: int) -> None:
        state = self._state(message, "bbo", ts)
        if state is None:
            return
        try:
            row = (ts, _time(message["E"]) if market == "perp" else None, _int(message["u"]),
                   _num(message["b"]), _num(message["B"]), _num(message["a"]), _num(message["A"]))
        except (KeyError, TypeError, ValueError) as exc:
            self._bad(state, "bbo", ts, message, _why(exc))
            return
        state.bbo.append(row)
        state.latest_bbo = row
        stats = state.stats["bbo"]
        stats.messages += 1
        stats.last_recv_ns = ts
        if state.down:
            self._back(state, "bbo", ts)

    def on_trade(self, market: Market, message: dict, ts: int) -> None:
        state = self._state(message, "trades", ts)
        if state is None:
            return
        try:
            row = (ts, _time(message["E"]), _int(message["t"]), _num(message["p"], positive=True),
                   _num(message["q"], positive=True), "sell" if _bool(message["m"]) else "buy")
        except (KeyError, TypeError, ValueError) as exc:
            self._bad(state, "trades", ts, message, _why(exc))
            return
        state.trades.append(row)
        stats = state.stats["trades"]
        stats.messages += 1
        stats.last_recv_ns = ts
        if state.down:
            self._back(state, "trades", ts)

    def on_funding(self, market: Market, message: dict, ts: int) -> None:
        state = self._state(message, "funding", ts)
        if state is None:
            return
        try:
            if market != "perp":
                raise ValueError("markPrice is a USDT-M stream")
            row = (ts, _time(message["E"]), _num(message["p"], positive=True), _num(message["i"]),
                   _rate(message["r"]), _time(message["T"]))
        except (KeyError, TypeError, ValueError) as exc:
            self._bad(state, "funding", ts, message, _why(exc))
            return
        state.funding.append(row)
        state.latest_funding = row[4]
        stats = state.stats["funding"]
        stats.messages += 1
        stats.last_recv_ns = ts
        if state.down:
            self._back(state, "funding", ts)

    def on_liquidation(self, market: Market, message: dict, ts: int) -> None:
        order = message.get("o") if isinstance(message, dict) else None
        state = self._state(order if isinstance(order, dict) else message, "liquidations", ts)
        if state is None:
            return
        try:
            if market != "perp":
                raise ValueError("forceOrder is a USDT-M stream")
            if not isinstance(order, dict):
                raise TypeError("o must be the liquidation order")
            status = order["X"]
            if type(status) is not str or status not in ORDER_STATUSES:
                raise ValueError(f"{str(status)[:20]!r} is not an order status")
            amount, filled = _num(order["q"], positive=True), _num(order["z"])
            if filled > amount:
                raise ValueError("the filled amount exceeds the order's")
            row = (ts, _time(message["E"]), _time(order["T"]), _side(order["S"]), _num(order["p"], positive=True),
                   amount, _num(order["ap"]), filled, status)
        except (KeyError, TypeError, ValueError) as exc:
            self._bad(state, "liquidations", ts, message, _why(exc))
            return
        state.liquidations.append(row)
        self._received(state, "liquidations", ts)

    def on_open_interest(self, state: SymbolState, response: Any, ts: int) -> bool:
        """A polled openInterest response; False (and an error ledgered) when it is not Binance's shape."""
        try:
            if not isinstance(response, dict):
                raise TypeError("the response is not a JSON object")
            if response.get("symbol") != state.symbol.exchange_id:
                raise ValueError(f"it is for {str(response.get('symbol'))[:20]!r}")
            row = (ts, _time(response["time"]), _num(response["openInterest"]))
        except (KeyError, TypeError, ValueError) as exc:
            self._bad(state, "open_interest", ts, response, _why(exc))
            return False
        state.open_interest.append(row)
        self._received(state, "open_interest", ts)
        return True

    def on_exchange_info(self, market: Market, response: Any, ts: int) -> None:
        """An exchangeInfo response: the entry of every recorded symbol becomes an instruments row if changed."""
        symbols = response.get("symbols") if isinstance(response, dict) else None
        if not isinstance(symbols, list):
            for state in self.states.values():
                self._bad(state, "instruments", ts, response, "no symbols list")
            return
        entries = {e.get("symbol"): e for e in symbols if isinstance(e, dict)}
        for exchange_id, state in self.states.items():
            if exchange_id in entries:
                self.on_instrument(state, entries[exchange_id], ts)

    def on_instrument(self, state: SymbolState, info: Any, ts: int) -> None:
        """One market's entry of an exchangeInfo response: a row when it differs from the last one recorded."""
        try:
            row = instrument_row(self.market, info)
        except (KeyError, TypeError, ValueError) as exc:
            self._bad(state, "instruments", ts, info, _why(exc))
            return
        if row != state.last_instrument:
            state.last_instrument = row
            state.instruments.append((ts, *row))
            self._received(state, "instruments", ts)

    def _received(self, state: SymbolState, stream: str, ts: int) -> None:
        stats = state.stats[stream]
        stats.messages += 1
        stats.last_recv_ns = ts
        if state.down:
            self._back(state, stream, ts)

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
                          state.liquidations, state.open_interest, state.instruments, state.events)
            state.bbo, state.trades, state.funding, state.events = [], [], [], []
            state.liquidations, state.open_interest, state.instruments = [], [], []
            out.append(taken)
        return out


def _num(value: Any, positive: bool = False) -> float:
    """A Binance decimal string as a float; rejects what a price or size cannot be."""
    number = plain_decimal(value)
    if positive and number == 0:
        raise ValueError(f"'{value}' is not a valid price or size")
    return number


def _side(value: Any) -> str:
    if value not in ("BUY", "SELL"):
        raise ValueError(f"{str(value)[:20]!r} is not BUY or SELL")
    return "buy" if value == "BUY" else "sell"


def _filter(filters: list, kind: str, key: str) -> float | None:
    for f in filters:
        if isinstance(f, dict) and f.get("filterType") == kind and key in f:
            return _num(f[key])
    return None


def instrument_row(market: Market, info: Any) -> tuple:
    """(tick_size, step_size, min_notional, status, contract_type, filters JSON) of an exchangeInfo entry."""
    if not isinstance(info, dict):
        raise TypeError("a symbol entry must be a JSON object")
    filters, status = info["filters"], info["status"]
    if type(filters) is not list or type(status) is not str:
        raise TypeError("filters must be a list and status a string")
    tick, step = _filter(filters, "PRICE_FILTER", "tickSize"), _filter(filters, "LOT_SIZE", "stepSize")
    if market == "spot":
        notional = _filter(filters, "NOTIONAL", "minNotional") or _filter(filters, "MIN_NOTIONAL", "minNotional")
        contract = None
    else:
        notional = _filter(filters, "MIN_NOTIONAL", "notional")
        contract = info.get("contractType")
        if contract is not None and type(contract) is not str:
            raise TypeError("contractType must be a string")
    return (tick, step, notional, status, contract, orjson.dumps(filters).decode())


def _rate(value: Any) -> float:
    if type(value) is not str:
        raise TypeError(f"expected a decimal string, got {type(value).__name__}")
    number = -plain_decimal(value[1:]) if value.startswith("-") else plain_decimal(value)
    if abs(number) > 1:
        raise ValueError(f"'{value}' is not a funding rate")
    return number


def _int(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise TypeError(f"expected a non-negative integer, got {str(value)[:40]!r}")
    return value


def _time(value: Any) -> int:
    """A Binance time in ms as ns."""
    if type(value) is not int or not 0 < value <= MAX_MS:
        raise TypeError(f"expected a time in ms, got {str(value)[:40]!r}")
    return value * 1_000_000


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise TypeError(f"expected a boolean, got {str(value)[:40]!r}")
    return value


def _why(exc: Exception) -> str:
    return f"no {exc.args[0]!r} field" if isinstance(exc, KeyError) else str(exc)


def _preview(message: Any) -> str:
    """The start of a message for the ledger (never the whole of an oversized one)."""
    if isinstance(message, dict | list):
        try:
            return orjson.dumps(message)[:200].decode(errors="replace")
        except (TypeError, orjson.JSONEncodeError):
            pass
    if isinstance(message, str | bytes):
        return repr(message[:200])
    return repr(message)[:200]
