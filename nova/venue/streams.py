"""Stream names and the coalescing of fine-grained book updates into diff-depth messages.

Binance's matching engine updates a book many times between two diff-depth messages; a message carries the
final size of every level touched in its window and the range ``[U, u]`` of update ids it covers. A REST
snapshot reads the book between two internal updates, so its ``lastUpdateId`` can fall strictly inside the
next message's range. Both feed sources of the venue publish under the normalized stream keys defined here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from nova.core.markets import Market

DEPTH_SPEEDS_MS = (0, 100, 250, 500, 1000)
DEFAULT_DEPTH_SPEED = {"spot": 1000, "perp": 250}
MARK_PRICE_SPEEDS_S = (1, 3)
FORCE_ORDER_KEY = "forceOrder"
# Streams only Binance's USDT-M servers carry; the venue refuses a subscription to them on spot.
PERP_ONLY_FAMILIES = frozenset({"markPrice", FORCE_ORDER_KEY})
# Partial book depth (``<sym>@depth5|10|20[@speed]``): the levels and the speeds Binance documents per market,
# the first speed being the one a bare name means.
PARTIAL_DEPTH_LEVELS = (5, 10, 20)
PARTIAL_DEPTH_SPEEDS_MS: dict[Market, tuple[int, ...]] = {"spot": (1000, 100), "perp": (250, 500, 100)}
KLINE_INTERVALS_S = {"1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
                     "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400}
ALL_SYMBOLS = "!"  # the stream id of the all-symbol streams (``!bookTicker``, ``!markPrice@arr``)

_STREAM_RE = re.compile(
    r"^(?P<sym>[a-z0-9]+)@(?:"
    r"(?P<depth>depth)(?P<levels>5|10|20)?(?:@(?P<dspeed>\d+)ms)?"
    r"|(?P<kind>bookTicker|trade|aggTrade)"
    r"|(?P<mark>markPrice)(?:@(?P<mspeed>\d+)s)?"
    r"|(?P<force>forceOrder)"
    r"|(?P<ticker>ticker|miniTicker)"
    r"|kline_(?P<kline>\w+)"
    r")$"
)
_ALL_RE = re.compile(r"^!(?:(?P<bbo>bookTicker)|markPrice@arr(?:@(?P<mspeed>\d+)s)?)$")


def depth_key(speed_ms: int) -> str:
    return f"depth@{speed_ms}ms"


def mark_key(speed_s: int) -> str:
    return f"markPrice@{speed_s}s"


def partial_key(levels: int, speed_ms: int) -> str:
    return f"depth{levels}@{speed_ms}ms"


def mark_array_key(speed_s: int) -> str:
    return f"markPrice@arr@{speed_s}s"


@dataclass(frozen=True)
class StreamName:
    """A parsed subscription: the lowercase symbol and the normalized key the feeds publish under."""

    stream_id: str
    key: str


def parse_stream(name: str, market: Market) -> StreamName | None:
    """Parse a Binance stream name as ``market`` understands it, or None if Binance would reject it."""
    m = _STREAM_RE.match(name)
    if m is None:
        return _parse_all_symbols(name, market)
    sym = m.group("sym")
    if m.group("levels"):
        speeds = PARTIAL_DEPTH_SPEEDS_MS[market]
        speed = m.group("dspeed")
        ms = speeds[0] if speed is None else int(speed)
        return StreamName(sym, partial_key(int(m.group("levels")), ms)) if ms in speeds else None
    if m.group("depth"):
        speed = m.group("dspeed")
        ms = DEFAULT_DEPTH_SPEED[market] if speed is None else int(speed)
        return StreamName(sym, depth_key(ms)) if ms in DEPTH_SPEEDS_MS else None
    if m.group("mark"):
        if market != "perp":
            return None
        speed = m.group("mspeed")
        s = 3 if speed is None else int(speed)
        return StreamName(sym, mark_key(s)) if s in MARK_PRICE_SPEEDS_S else None
    if m.group("force"):
        return StreamName(sym, FORCE_ORDER_KEY) if market == "perp" else None
    if m.group("ticker"):
        return StreamName(sym, m.group("ticker"))
    if m.group("kline") is not None:
        return StreamName(sym, f"kline_{m.group('kline')}") if m.group("kline") in KLINE_INTERVALS_S else None
    return StreamName(sym, m.group("kind"))


def _parse_all_symbols(name: str, market: Market) -> StreamName | None:
    m = _ALL_RE.match(name)
    if m is None:
        return None
    if m.group("bbo"):
        return StreamName(ALL_SYMBOLS, "bookTicker")
    if market != "perp":
        return None
    s = 3 if m.group("mspeed") is None else int(m.group("mspeed"))
    return StreamName(ALL_SYMBOLS, mark_array_key(s)) if s in MARK_PRICE_SPEEDS_S else None


@dataclass
class DepthWindow:
    """Accumulates level changes between two messages of one diff-depth stream.

    ``prev_u`` is the last id of the previous message on this stream (the perp ``pu``); it starts at the
    book's id when the stream starts so that the chain holds from the first message on.
    """

    speed_ms: int
    prev_u: int
    bids: dict = field(default_factory=dict)
    asks: dict = field(default_factory=dict)
    first_id: int | None = None
    last_id: int = 0
    last_time_ms: int = 0

    def add(self, update_id: int, time_ms: int, changes: list[tuple[bool, int, int]]) -> None:
        """Record one internal update; ``changes`` holds (is_bid, price, size) in integer units."""
        if self.first_id is None:
            self.first_id = update_id
        self.last_id = update_id
        self.last_time_ms = time_ms
        bids, asks = self.bids, self.asks
        for is_bid, price, size in changes:
            if is_bid:
                bids[price] = size
            else:
                asks[price] = size

    @property
    def empty(self) -> bool:
        return self.first_id is None

    def take(self) -> tuple[int, int, int, int, list[tuple[int, int]], list[tuple[int, int]]] | None:
        """Close the window: (U, u, pu, T, bids, asks) sorted by price ascending, or None if nothing changed."""
        if self.first_id is None:
            return None
        out = (self.first_id, self.last_id, self.prev_u, self.last_time_ms,
               sorted(self.bids.items()), sorted(self.asks.items()))
        self.prev_u = self.last_id
        self.first_id = None
        self.bids = {}
        self.asks = {}
        return out


def refusal(name: str, market: Market, instrument: Callable[[Market, str], object | None]) -> str | None:
    """Why the venue cannot produce the stream ``name`` on ``market`` (None if it can).

    Binance's servers acknowledge a well-formed name they will never serve; a bot then waits forever (a depth
    cache hangs with no error). The venue refuses instead, with a reason a person can act on; ``instrument``
    looks a listed symbol up (``FeedSource.instrument``).
    """
    parsed = parse_stream(name, market)
    if parsed is None:
        where = "USDT-M" if market == "spot" and parse_stream(name, "perp") is not None else ""
        return (f"stream `{name}` is a {where} stream, not served on spot" if where else
                f"unknown stream `{name}` on {market}")
    if parsed.stream_id != ALL_SYMBOLS and instrument(market, parsed.stream_id.upper()) is None:
        return f"stream `{name}`: no {market} symbol {parsed.stream_id.upper()} on this venue"
    return None
