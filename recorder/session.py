"""One market (spot or USDT-M) of a recording: its ccxt.pro instance and the state of every symbol on it.

A session is the ``Sink`` of its exchange's hooks. Everything here runs on the event loop and stays cheap
per message: each message is read as its typed shape (recorder.wire: msgspec checks fields, types and ranges
in C), its row is made by column name (recorder.rows), the frame text of a diff is kept, and the heavy
conversion is left to the writer's worker thread. A message that does not fit its shape is one ``error`` in
the ledger naming the field, and never a row. Row buffers are swapped out at each flush (``take``); what they
hold is counted in the recorder's ``Intake``, which holds the connections back when the writer falls behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from nova.core.markets import Market, Symbol
from recorder import wire
from recorder.exchange import TakesFrames
from recorder.intake import ROW_BYTES, Intake
from recorder.rows import (
    BboRow,
    EventRow,
    FundingRow,
    InstrumentRow,
    LiquidationRow,
    OpenInterestRow,
    Row,
    TradeRow,
    event_row,
)
from recorder.sequencer import NULL, BookColumns, BookSequencer
from recorder.wire import Malformed, decimal, rate, read

STREAMS = ("book", "bbo", "trades", "funding", "liquidations", "open_interest")
"""The streams a user can choose (``--tables``); ``instruments`` (exchangeInfo) is always recorded."""
PERP_ONLY = frozenset({"funding", "liquidations", "open_interest"})
POLLED = frozenset({"open_interest", "instruments"})  # REST, not a WebSocket stream
# How ccxt names each stream's subscription on a connection (the key ends with the marker and the symbol).
STREAM_MARKERS = {"book": "orderbook::", "bbo": "bookTicker@", "trades": "trade::", "funding": "markPrice@",
                  "liquidations": "liquidations::"}


@dataclass
class StreamStats:
    """What the live status shows for one stream; updated on the event loop."""

    messages: int = 0
    rows: int = 0
    last_recv_ns: int = 0
    gaps: int = 0
    reconnects: int = 0
    handovers: int = 0  # planned reconnects made before the cut (recorder.handover)
    last_event_ms: int = 0  # the exchange's time of the last message (E), for the metrics' lag
    errors: int = 0


@dataclass
class SymbolState:
    symbol: Symbol
    market: Market
    seq: BookSequencer
    bbo: list[BboRow] = field(default_factory=list)
    trades: list[TradeRow] = field(default_factory=list)
    funding: list[FundingRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    liquidations: list[LiquidationRow] = field(default_factory=list)
    open_interest: list[OpenInterestRow] = field(default_factory=list)
    instruments: list[InstrumentRow] = field(default_factory=list)
    last_instrument: InstrumentRow | None = None  # the last instruments row, to record only changes
    stats: dict[str, StreamStats] = field(default_factory=lambda: {s: StreamStats()
                                                                   for s in (*STREAMS, "instruments")})
    latest_bbo: BboRow | None = None
    latest_funding: float = float("nan")
    down: dict[str, int] = field(default_factory=dict)  # stream -> when it disconnected (until it is back)
    resyncing: bool = False
    retired: bool = False  # stopped while running (MarketSession.retire): takes no message, leaves at the next take


@dataclass
class Taken:
    """One flush worth of rows of a symbol, handed to the writer's worker thread."""

    market: Market
    symbol: Symbol
    book: BookColumns
    bbo: list[BboRow]
    trades: list[TradeRow]
    funding: list[FundingRow]
    liquidations: list[LiquidationRow]
    open_interest: list[OpenInterestRow]
    instruments: list[InstrumentRow]
    events: list[EventRow]

    def small(self) -> dict[str, list[Row]]:
        """The row buffers of every table but the book, by table name."""
        return {"bbo": self.bbo, "trades": self.trades, "funding": self.funding, "liquidations": self.liquidations,
                "open_interest": self.open_interest, "instruments": self.instruments, "events": self.events}


class MarketSession(TakesFrames):
    """Receives every message of one market from the hooks and keeps per-symbol buffers and counters."""

    def __init__(self, market: Market, symbols: list[Symbol], next_msg: dict[Symbol, int],
                 request_resync: Callable[[Market, Symbol], None],
                 server_shutdown: Callable[[Market, Any, int], None] | None = None,
                 intake: Intake | None = None) -> None:
        self.market = market
        self.intake = intake if intake is not None else Intake(1 << 62)  # a session alone (tests): unbounded
        self.server_shutdown = server_shutdown
        self.exchange: Any = None  # set by the recorder once the instance exists
        self.states: dict[str, SymbolState] = {}
        # symbols stopped while the recorder runs (a delisting, recorder.listings), kept for their counts and for
        # the messages still on their way: those are counted in ``late`` and never rows
        self.stopped: dict[str, SymbolState] = {}
        self.late = 0
        self._request_resync = request_resync
        for sym in symbols:
            self.add(sym, next_msg.get(sym, 1))
        self._depth_shape = wire.PerpDepthUpdate if market == "perp" else wire.SpotDepthUpdate
        self._depth_head: Callable[[str], wire.SpotDepthHead | wire.PerpDepthHead]
        if market == "perp":
            self._depth_head = msgspec.json.Decoder(wire.PerpDepthHead).decode
        else:
            self._depth_head = msgspec.json.Decoder(wire.SpotDepthHead).decode

    def add(self, sym: Symbol, next_msg: int) -> SymbolState:
        """Start keeping a symbol's state (at start, or a listing picked up while running); a symbol stopped
        earlier in this run comes back with its counters, and its message numbers go on from where they were."""
        market, request_resync = self.market, self._request_resync
        earlier = self.stopped.pop(sym.exchange_id, None)
        state = SymbolState(sym, market, None)  # type: ignore[arg-type]
        if earlier is not None:
            state.stats, state.last_instrument = earlier.stats, earlier.last_instrument
            next_msg = max(next_msg, earlier.seq.next_msg)
        state.seq = BookSequencer(
            market, next_msg,
            ledger=lambda ts, kind, exp, rec, detail, st=state: self.ledger(st, "book", ts, kind, exp, rec, detail),
            request_resync=lambda s=sym: request_resync(market, s))
        self.states[sym.exchange_id] = state
        return state

    def retire(self, state: SymbolState) -> None:
        """Stop a symbol: no message of it is taken from now on; its buffers (with the ``stop`` the caller
        ledgered) leave at the next ``take``, after which it is kept in ``stopped`` only."""
        state.retired = True

    def state_of(self, exchange_id: str) -> SymbolState:
        """A symbol's state, recording or stopped (the writer's results may come back after a stop)."""
        return self.states.get(exchange_id) or self.stopped[exchange_id]

    # ---- the ledger ----------------------------------------------------------------------------------------
    def ledger(self, state: SymbolState, stream: str, ts: int, kind: str, expected: int | None = None,
               received: int | None = None, detail: str = "", provenance: tuple[str, str, str] | None = None
               ) -> None:
        state.events.append(event_row(ts_recv=ts, stream=stream, kind=kind, expected_id=expected,
                                      received_id=received, detail=detail, provenance=provenance))
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
        if state is None or state.retired:
            if state is not None or (type(symbol) is str and symbol in self.stopped):
                self.late += 1  # a stopped symbol's message, sent before the exchange took the unsubscribe
                return None
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
    def on_depth_frame(self, market: Market, frame: str, cut: int, ts: int) -> bool:
        """A diff-depth frame read here instead of by ccxt (recorder.exchange): only its header, the text before
        the level arrays (``cut``), is decoded, into the shape with its checks; the levels are parsed from the
        frame by the writer, as ever. That skips ccxt's JSON parse of ~65 levels, the largest cost of a message.
        False (nothing done) for anything but a clean diff of a recorded symbol: ccxt's path then handles it, and
        the ledger says what was wrong as before."""
        try:
            diff = self._depth_head(frame[:cut] + wire.HEAD_END)
        except msgspec.DecodeError:  # a type or a constraint (ValidationError) or broken JSON
            return False
        state = self.states.get(diff.s)
        if state is None or state.retired or not (diff.u >= diff.U and diff.T != 0):
            return False
        self._diff(market, state, diff, frame, ts)
        return True

    def on_depth(self, market: Market, message: dict, raw: str | None, ts: int) -> None:
        state = self._state(message, "book", ts)
        if state is None:
            return
        try:  # wire.read, inlined: this runs for every diff (ccxt's whole handling of one costs ~20 µs)
            diff = _convert(message, self._depth_shape)
            if not (diff.u >= diff.U and diff.T != 0 and type(diff.b) is list and type(diff.a) is list):
                raise Malformed(diff.problem())  # the shape's own rule (SpotDepthUpdate.problem), inlined above
        except (msgspec.ValidationError, Malformed) as exc:
            # Its level changes are unknown (Binance's ids chain over it), so the book must be resynced;
            # the levels themselves are checked when the rows are built (rows.book_batch).
            why = str(exc) if isinstance(exc, Malformed) else wire.explain(self._depth_shape, message, str(exc))
            self._bad(state, "book", ts, message, why)
            state.seq.on_malformed(ts)
            return
        self._diff(market, state, diff, raw if raw is not None else _levels_text(diff), ts)

    def _diff(self, market: Market, state: SymbolState, diff: Any, text: str, ts: int) -> None:
        """A diff that has its shape, with the text its levels are parsed from: to the sequencer."""
        stats = state.stats["book"]
        stats.messages += 1
        stats.last_recv_ns = ts
        stats.last_event_ms = diff.E
        if state.down:
            self._back(state, "book", ts)
        prev = diff.pu if market == "perp" else NULL
        self.intake.pending += len(text)
        state.seq.on_diff((ts, diff.E, diff.T, diff.U, diff.u, prev, text))

    def on_snapshot(self, market: Market, symbol: str, response: dict, ts: int) -> None:
        state = self.states.get(symbol)
        if state is None or state.retired:
            return
        try:
            snap = read(wire.DepthSnapshot, response)
        except Malformed as exc:
            self._bad(state, "book", ts, response, str(exc))
            return
        text = orjson.dumps({"b": snap.bids, "a": snap.asks}).decode()
        self.intake.pending += len(text)
        state.seq.on_snapshot(ts, snap.event_ms, snap.trade_ms, snap.lastUpdateId, text,
                              len(snap.bids) + len(snap.asks))

    def on_bbo(self, market: Market, message: dict, ts: int) -> None:
        state = self._state(message, "bbo", ts)
        if state is None:
            return
        try:
            if market == "perp":
                ticker: wire.SpotBookTicker = read(wire.PerpBookTicker, message)
                event = ticker.E * 1_000_000  # type: ignore[attr-defined]
            else:
                ticker, event = read(wire.SpotBookTicker, message), None
            row = BboRow(ts_recv=ts, ts_event=event, update_id=ticker.u, bid_price=decimal(ticker.b, "b"),
                         bid_amount=decimal(ticker.B, "B"), ask_price=decimal(ticker.a, "a"),
                         ask_amount=decimal(ticker.A, "A"))
        except Malformed as exc:
            self._bad(state, "bbo", ts, message, str(exc))
            return
        state.bbo.append(row)
        self.intake.pending += ROW_BYTES
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
            trade = read(wire.Trade, message)
            row = TradeRow(ts_recv=ts, ts_event=trade.E * 1_000_000, trade_id=trade.t,
                           price=decimal(trade.p, "p", positive=True), amount=decimal(trade.q, "q", positive=True),
                           taker_side="sell" if trade.m else "buy")
        except Malformed as exc:
            self._bad(state, "trades", ts, message, str(exc))
            return
        state.trades.append(row)
        self.intake.pending += ROW_BYTES
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
                raise Malformed("markPrice is a USDT-M stream")
            mark = read(wire.MarkPriceUpdate, message)
            row = FundingRow(ts_recv=ts, ts_event=mark.E * 1_000_000, mark_price=decimal(mark.p, "p", positive=True),
                             index_price=decimal(mark.i, "i"), funding_rate=rate(mark.r, "r"),
                             next_funding_time=mark.T * 1_000_000)
        except Malformed as exc:
            self._bad(state, "funding", ts, message, str(exc))
            return
        state.funding.append(row)
        self.intake.pending += ROW_BYTES
        state.latest_funding = row.funding_rate
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
                raise Malformed("forceOrder is a USDT-M stream")
            liquidation = read(wire.ForceOrder, message)
            o = liquidation.o
            amount, filled = decimal(o.q, "o.q", positive=True), decimal(o.z, "o.z")
            if filled > amount:
                raise Malformed("o.z: the filled amount exceeds the order's")
            row = LiquidationRow(ts_recv=ts, ts_event=liquidation.E * 1_000_000, ts_trade=o.T * 1_000_000,
                                 side="buy" if o.S == "BUY" else "sell", price=decimal(o.p, "o.p", positive=True),
                                 amount=amount, average_price=decimal(o.ap, "o.ap"), filled_amount=filled,
                                 status=o.X)
        except Malformed as exc:
            self._bad(state, "liquidations", ts, message, str(exc))
            return
        state.liquidations.append(row)
        self.intake.pending += ROW_BYTES
        self._received(state, "liquidations", ts)

    def on_open_interest(self, state: SymbolState, response: Any, ts: int) -> bool:
        """A polled openInterest response; False (and an error ledgered) when it is not Binance's shape."""
        try:
            oi = read(wire.OpenInterest, response)
            if oi.symbol != state.symbol.exchange_id:
                raise Malformed(f"it is for {oi.symbol[:20]!r}")
            row = OpenInterestRow(ts_recv=ts, ts_event=oi.time * 1_000_000,
                                  open_interest=decimal(oi.openInterest, "openInterest"))
        except Malformed as exc:
            self._bad(state, "open_interest", ts, response, str(exc))
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
            row = instrument_row(self.market, info, ts)
        except Malformed as exc:
            self._bad(state, "instruments", ts, info, str(exc))
            return
        last = state.last_instrument
        if last is None or msgspec.structs.replace(row, ts_recv=last.ts_recv) != last:
            state.last_instrument = row
            state.instruments.append(row)
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

    def on_snapshot_throttled(self, market: Market, symbol: str, error: Any) -> None:
        """A 429/418 for a snapshot: ledgered; the hook retries after the server's Retry-After."""
        state = self.states.get(symbol)
        if state is not None:
            what = "banned (418)" if error.banned else "throttled (429)"
            self.ledger(state, "book", time.time_ns(), "error", None, None,
                        f"snapshot request {what} by the exchange's request-weight limit; retrying after "
                        f"{error.retry_after_s:g} s")

    def on_server_shutdown(self, market: Market, client: Any, ts: int) -> None:
        if self.server_shutdown is not None:
            self.server_shutdown(market, client, ts)

    # ---- flushing -------------------------------------------------------------------------------------------------
    def take(self) -> list[Taken]:
        """Every symbol's buffers, swapped for empty ones; the intake counts their bytes as being written."""
        out = []
        nbytes = 0
        for state in list(self.states.values()):
            taken = Taken(self.market, state.symbol, state.seq.take(), state.bbo, state.trades, state.funding,
                          state.liquidations, state.open_interest, state.instruments, state.events)
            state.bbo, state.trades, state.funding, state.events = [], [], [], []
            state.liquidations, state.open_interest, state.instruments = [], [], []
            nbytes += sum(map(len, taken.book.texts)) + ROW_BYTES * (
                len(taken.bbo) + len(taken.trades) + len(taken.funding) + len(taken.liquidations))
            out.append(taken)
            if state.retired:
                self.stopped[state.symbol.exchange_id] = self.states.pop(state.symbol.exchange_id)
        self.intake.taken(nbytes)
        return out


_convert = msgspec.convert


def _filter(filters: list, kind: str, key: str) -> float | None:
    for f in filters:
        if isinstance(f, dict) and f.get("filterType") == kind and key in f:
            return decimal(f[key], f"filters.{kind}.{key}")
    return None


def instrument_row(market: Market, info: Any, ts: int) -> InstrumentRow:
    """The instruments row of one exchangeInfo symbol entry (tick and step size, minimum notional, status,
    contract type, the filters as JSON text), received at ``ts``."""
    if market == "spot":
        spot = read(wire.SpotSymbolInfo, info)
        filters, status, contract = spot.filters, spot.status, None
        notional = _filter(filters, "NOTIONAL", "minNotional") or _filter(filters, "MIN_NOTIONAL", "minNotional")
    else:
        perp = read(wire.PerpSymbolInfo, info)
        filters, status, contract = perp.filters, perp.status, perp.contractType
        notional = _filter(filters, "MIN_NOTIONAL", "notional")
    return InstrumentRow(ts_recv=ts, tick_size=_filter(filters, "PRICE_FILTER", "tickSize"),
                         step_size=_filter(filters, "LOT_SIZE", "stepSize"), min_notional=notional, status=status,
                         contract_type=contract, filters=orjson.dumps(filters).decode())


def _levels_text(diff: wire.SpotDepthUpdate) -> str:
    """The JSON text of a diff's level arrays, when ccxt did not keep the frame's (the writer parses them)."""
    try:
        return orjson.dumps({"b": diff.b, "a": diff.a}).decode()
    except TypeError:  # a number beyond 64 bits in a level: refused with the level's text when rows are built
        return json.dumps({"b": diff.b, "a": diff.a}, separators=(",", ":"), default=repr)


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
