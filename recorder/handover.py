"""Make-before-break: a market's connection replaced by a new one before a planned cut, losing nothing.

Why: Binance closes every WebSocket connection 24 hours after it opened and announces maintenance with
``serverShutdown``. Reconnecting after the cut loses the frames in flight and forces a resync: a hole in every
stream, every day. Instead the recorder opens a second connection ahead of the cut and subscribes the same
streams; while both deliver, the old connection stays authoritative and everything the new one delivers waits
here. Once the new one has delivered, for every symbol's book, a message the old one had delivered too (the
overlap that proves nothing falls between them), the recorder switches: the waiting messages the old one did not
deliver are passed on in order (by exchange id: depth ``u``, bookTicker ``u``, trade ``t``, markPrice and
forceOrder ``E``), the new connection becomes the market's, the old one is closed, and the ledger says
``handover``: not a break, so the book stays valid and no snapshot is needed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from nova.core.markets import Market

# The message field that orders each stream, as Binance sends it (a diff's last id, bookTicker's update id, the
# trade id, and the event time for the streams without an id).
ORDER_KEY = {"book": "u", "bbo": "u", "trades": "t", "funding": "E", "liquidations": "E"}
QUIET_S = 1.0  # a symbol with no book message on the old connection this long into a handover is not waited for
SINK_STREAM = {"on_depth": "book", "on_bbo": "bbo", "on_trade": "trades", "on_funding": "funding",
               "on_liquidation": "liquidations"}


def _symbol(message: Any) -> str | None:
    if not isinstance(message, dict):
        return None
    body = message.get("o", message) if "o" in message and isinstance(message["o"], dict) else message
    symbol = body.get("s")
    return symbol if isinstance(symbol, str) else None


def _order(message: Any, stream: str) -> int | None:
    if not isinstance(message, dict):
        return None
    value = message.get(ORDER_KEY[stream])
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Gate:
    """Both connections' messages during a handover: the old one's pass through to the session (noting the
    largest id per stream), the new one's wait. ``primary`` and ``successor`` are the sinks to give the two
    exchange instances."""

    def __init__(self, session: Any, market: Market, streams: list[str]) -> None:
        self.session, self.market, self.streams = session, market, streams
        self.passed: dict[tuple[str, str], int] = {}  # (symbol, stream) -> largest id the old one delivered
        self.waiting: dict[tuple[str, str], list[tuple[str, tuple]]] = defaultdict(list)  # the new one's
        self.overlapped: set[tuple[str, str]] = set()  # (symbol, stream) the new one delivered in overlap
        self.started = time.monotonic()
        self.switched = False
        self.primary = _Side(self, primary=True)
        self.successor = _Side(self, primary=False)

    def ready(self, symbols: list[str], settled: frozenset[str] | set[str] = frozenset()) -> bool:
        """Every symbol's book (and, where the old one carried any, its bookTickers) overlapped, or quiet."""
        return not self.missing(symbols, settled)

    def missing(self, symbols: list[str], settled: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """What the switch still waits for. A symbol whose book the old connection delivered nothing of since the
        gate opened (QUIET_S at least: halted, delisted, or just still) cannot overlap and needs not: once the
        new connection has ``settled`` its subscription (acknowledged, or refused as unknown), whatever comes
        next comes on the new one."""
        quiet = time.monotonic() - self.started >= QUIET_S
        out = []
        for s in symbols:
            for st in ("book", "bbo"):
                if st not in self.streams or (s, st) in self.overlapped:
                    continue
                if (s, st) in self.passed or (st == "book" and not (quiet and s in settled)):
                    out.append(f"{s} {st}")
        return out

    def switch(self) -> int:
        """Pass on what only the new connection delivered, in its order; returns how many messages that was.
        From here on the new connection's messages go straight to the session, except those the old one had
        delivered already (the new one may lag behind it by a few messages at the switch): ``_from_successor``
        drops them until each stream has moved past the old one's last id."""
        self.switched = True
        sent = 0
        for (symbol, stream), queued in self.waiting.items():
            last = self.passed.get((symbol, stream))
            for method, args in queued:
                order = _order(args[1], stream)
                if last is not None and order is not None and order <= last:
                    continue  # the old connection delivered it
                getattr(self.session, method)(*args)
                sent += 1
                if order is not None:
                    last = order
        self.waiting.clear()
        return sent

    def _from_primary(self, method: str, args: tuple) -> None:
        stream = SINK_STREAM[method]
        message = args[1]
        order, symbol = _order(message, stream), _symbol(message)
        if order is not None and symbol is not None:
            key = (symbol, stream)
            if order > self.passed.get(key, -1):
                self.passed[key] = order
            for _, queued in self.waiting.get(key, ())[:1]:  # the new one had it first: overlap, seen from here
                first = _order(queued[1], stream)
                if first is not None and first <= order:
                    self.overlapped.add(key)
        getattr(self.session, method)(*args)

    def caught_up(self) -> bool:
        """After the switch: the new connection has moved past everything the old one delivered."""
        return self.switched and not self.passed

    def _from_successor(self, method: str, args: tuple) -> None:
        stream = SINK_STREAM[method]
        message = args[1]
        symbol = _symbol(message)
        if self.switched:
            key = (symbol or "", stream)
            last = self.passed.get(key)
            if last is not None:
                order = _order(message, stream)
                if order is not None and order <= last:
                    return  # the old connection delivered it before the switch
                del self.passed[key]
            getattr(self.session, method)(*args)
            return
        if symbol is None:
            return
        key = (symbol, stream)
        order = _order(message, stream)
        if order is not None and key in self.passed and order <= self.passed[key]:
            self.overlapped.add(key)  # a message the old one delivered too: no hole between the two
            return
        self.waiting[key].append((method, args))


class _Side:
    """The sink one of the two exchange instances delivers to during a handover."""

    def __init__(self, gate: Gate, primary: bool) -> None:
        self._gate, self._primary = gate, primary

    def __getattr__(self, name: str) -> Any:
        if name in SINK_STREAM:
            route = self._gate._from_primary if self._primary else self._gate._from_successor
            return lambda *args: route(name, args)
        if self._primary or self._gate.switched or name == "on_server_shutdown":
            return getattr(self._gate.session, name)  # a notice on the new connection: the recorder decides
        return _ignore  # the new connection's snapshots, subscriptions, errors: the old one still rules


def _ignore(*_: Any, **__: Any) -> None:
    return None


class Closed:
    """The sink of a connection that has been handed over: whatever it still delivers is not recorded."""

    def __getattr__(self, name: str) -> Any:
        return _ignore
