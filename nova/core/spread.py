"""The spread logic of DESIGN §4: one compiled kernel, called by replay's loop and by the recorder's live view.

Why one kernel: a reading in replay must equal the reading the recorder showed live for the same state, so
there is exactly one implementation of the formulas (``write_reading``, fed from the sorted books by
``compute_reading`` and from price-indexed books by replay's loop). Replay calls it from its own compiled loop
after every message that changes a top of book; ``SpreadLogic`` wraps it for Python callers.

Inputs per market (SPOT = 0, PERP = 1):
- the depth book (``nova.core.book`` state: ``px, qty, n`` and the book's index ``k`` in it);
- ``quotes[m]`` = latest bookTicker ``[bid_price, bid_amount, ask_price, ask_amount]`` (NaN when none);
- ``stamps[m]`` = ``[depth_id, bbo_id, last_ns, valid]``: the ``u`` of the last depth message applied to the book
  and of the bookTicker held (NO_ID when none), the receive time of the market's latest update from either
  source (NO_TIME when none), and whether the caller trusts the depth book (0 before its first snapshot and
  after a gap until the next snapshot).

Freshest top: depth top of book lags bookTicker, so per market and per side the kernel uses whichever source
carries the larger update id (depth ``u`` and bookTicker ``u`` share one id space per market); a tie prefers
the depth book. Each source stamps both of its sides with one id, so in practice both sides of a market come
from the same source. Size-aware (VWAP) columns always walk the depth book, the only source with depth.

Sign conventions (all in bps, 1 bps = 1e-4):
- ``open_bps``: what entering cash-and-carry earns per unit, buying spot at its ask and selling perp at its bid.
  Higher is better. ``net_open_bps = open_bps - fee_spot_bps - fee_perp_bps``.
- ``close_bps``: what exiting costs, selling spot at its bid and buying perp back at its ask (a positive value
  means the perp is still dearer than spot and closing pays that premium). Lower is better.
  ``net_close_bps = close_bps + fee_spot_bps + fee_perp_bps`` is the full cost to exit, so a round trip earns
  about ``net_open_bps`` (at entry) ``- net_close_bps`` (at exit), plus funding collected while holding.
- ``*_size`` versions use the VWAP of ``size`` base units; they are NaN unless both legs of that trade had the
  size, because an average over a partial fill would understate the slippage. ``size_filled`` says whether
  all four sides had it; with ``size == 0`` the size-aware columns are NaN and ``size_filled`` is False.
- ``funding_annual_pct = funding_rate * 3 * 365 * 100`` (Binance reports the rate per 8 h interval).
- ``stale``: the legs' latest updates are more than ``stale_ms`` apart, or a leg has never updated.
- ``valid``: both books valid, all four effective prices present, and neither effective book crossed.
- ``opportunity``: valid, not stale, and ``net_open_bps > threshold_bps``.

Numba caveat for compiled callers: a caller compiled with ``cache=True`` in another file keeps its own copy of
this kernel, and numba does not notice when this file (or nova/core/book.py) changes; after editing either, delete
the caller's cached ``*.nbi``/``*.nbc`` files (an installed release is unaffected: new files, new caches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from nova.core.book import ASK, BID, L2Book, _best, _vwap, kernel, side_codes
from nova.core.markets import Market
from nova.core.units import check_finite, check_not_negative

SPOT = 0
PERP = 1
MARKET_INDEX: dict[Market, int] = {"spot": SPOT, "perp": PERP}

# quotes[m, :] -- the latest bookTicker of market m
Q_BID_PX, Q_BID_QTY, Q_ASK_PX, Q_ASK_QTY = 0, 1, 2, 3
# stamps[m, :] -- ids, time and validity of market m
S_DEPTH_ID, S_BBO_ID, S_LAST_NS, S_VALID = 0, 1, 2, 3
NO_ID = -1
NO_TIME = -1

# params vector (SpreadParams.vector())
P_FEE_SPOT, P_FEE_PERP, P_SIZE, P_THRESHOLD, P_STALE_MS = 0, 1, 2, 3, 4

BPS = 1e4
FUNDING_INTERVALS_PER_YEAR = 3 * 365

FLAG_COLUMNS = ("size_filled", "stale", "valid", "opportunity")
VALUE_COLUMNS: tuple[str, ...] = (
    "spot_bid", "spot_bid_amount", "spot_ask", "spot_ask_amount",
    "perp_bid", "perp_bid_amount", "perp_ask", "perp_ask_amount",
    "basis_bps", "open_bps", "close_bps", "net_open_bps", "net_close_bps",
    "spot_ask_vwap", "perp_bid_vwap", "spot_bid_vwap", "perp_ask_vwap",
    "open_bps_size", "close_bps_size", "net_open_bps_size", "net_close_bps_size", "size_filled",
    "funding_rate", "funding_annual_pct",
    "skew_ms", "stale", "valid", "opportunity",
)
"""Columns of the kernel's float64 output matrix, in order (flags as 0.0/1.0); the reading time is kept apart
because a nanosecond timestamp does not fit a float64 exactly."""
READING_COLUMNS: tuple[str, ...] = ("ts", *VALUE_COLUMNS)
N_VALUES = len(VALUE_COLUMNS)

SIZE_COLUMNS: tuple[str, ...] = ("spot_ask_vwap", "perp_bid_vwap", "spot_bid_vwap", "perp_ask_vwap", "open_bps_size",
                "close_bps_size", "net_open_bps_size", "net_close_bps_size", "size_filled")
"""The size-aware columns, which a replay without a size leaves out of its output (they would be empty)."""
READING_SCHEMA = pa.schema(
    [pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False)]
    + [pa.field(name, pa.bool_(), nullable=False) if name in FLAG_COLUMNS else pa.field(name, pa.float64())
       for name in VALUE_COLUMNS]
)
"""The spread series as Arrow (replay's output table): missing values are null, flags are never null."""

_COL = {name: i for i, name in enumerate(VALUE_COLUMNS)}
C_SPOT_BID, C_SPOT_BID_AMT, C_SPOT_ASK, C_SPOT_ASK_AMT = (_COL["spot_bid"], _COL["spot_bid_amount"],
                                                         _COL["spot_ask"], _COL["spot_ask_amount"])
C_PERP_BID, C_PERP_BID_AMT, C_PERP_ASK, C_PERP_ASK_AMT = (_COL["perp_bid"], _COL["perp_bid_amount"],
                                                         _COL["perp_ask"], _COL["perp_ask_amount"])
C_BASIS, C_OPEN, C_CLOSE, C_NET_OPEN, C_NET_CLOSE = (_COL["basis_bps"], _COL["open_bps"], _COL["close_bps"],
                                                     _COL["net_open_bps"], _COL["net_close_bps"])
C_SPOT_ASK_VWAP, C_PERP_BID_VWAP, C_SPOT_BID_VWAP, C_PERP_ASK_VWAP = (
    _COL["spot_ask_vwap"], _COL["perp_bid_vwap"], _COL["spot_bid_vwap"], _COL["perp_ask_vwap"])
C_OPEN_SIZE, C_CLOSE_SIZE, C_NET_OPEN_SIZE, C_NET_CLOSE_SIZE, C_SIZE_FILLED = (
    _COL["open_bps_size"], _COL["close_bps_size"], _COL["net_open_bps_size"], _COL["net_close_bps_size"],
    _COL["size_filled"])
C_FUNDING, C_FUNDING_ANNUAL = _COL["funding_rate"], _COL["funding_annual_pct"]
C_SKEW, C_STALE, C_VALID, C_OPPORTUNITY = _COL["skew_ms"], _COL["stale"], _COL["valid"], _COL["opportunity"]
C_TOP_FIRST, C_TOP_LAST = C_SPOT_BID, C_PERP_ASK_AMT  # the eight effective top-of-book columns

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SpreadParams:
    """The user's knobs (fees in bps, size in base units, threshold in bps, staleness in ms)."""

    fee_spot_bps: float = 10.0
    fee_perp_bps: float = 5.0
    size: float = 0.0
    threshold_bps: float = 0.0
    stale_ms: float = 1000.0

    def __post_init__(self) -> None:
        """Refuse what the spread logic cannot mean (a negative fee, an infinite size) where it is given: the CLI,
        Replay and a user's own code all build this class, so they all get the same sentence (``BadValue``, a
        NovaError that is also the ValueError this class raised before)."""
        units = {"fee_spot_bps": "basis points", "fee_perp_bps": "basis points", "size": "base units",
                 "threshold_bps": "basis points", "stale_ms": "milliseconds"}
        for f in fields(self):  # a threshold may be negative (accept a loss); the others may not
            check = check_finite if f.name == "threshold_bps" else check_not_negative
            check(f.name, getattr(self, f.name), units[f.name])

    def vector(self) -> FloatArray:
        """The float64 vector the kernel reads (indices P_*), so compiled callers need no Python object."""
        out = np.empty(5)
        out[P_FEE_SPOT], out[P_FEE_PERP], out[P_SIZE] = self.fee_spot_bps, self.fee_perp_bps, self.size
        out[P_THRESHOLD], out[P_STALE_MS] = self.threshold_bps, self.stale_ms
        return out


def new_market_state() -> tuple[FloatArray, IntArray]:
    """``(quotes float64[2, 4], stamps int64[2, 4])`` for one symbol: no bookTicker, no ids, invalid books."""
    quotes = np.full((2, 4), math.nan)
    stamps = np.full((2, 4), NO_ID, dtype=np.int64)
    stamps[:, S_LAST_NS] = NO_TIME
    stamps[:, S_VALID] = 0
    return quotes, stamps


# --- compiled kernels -------------------------------------------------------------------------------------


@kernel(inline=True)
def _effective_top(depth: tuple[float, float], quotes: FloatArray, stamps: IntArray, m: int, side: int
                   ) -> tuple[float, float]:
    if stamps[m, S_BBO_ID] > stamps[m, S_DEPTH_ID]:
        if side == BID:
            return quotes[m, Q_BID_PX], quotes[m, Q_BID_QTY]
        return quotes[m, Q_ASK_PX], quotes[m, Q_ASK_QTY]
    return depth


@kernel(inline=True)
def _bps(ratio: float) -> float:
    return (ratio - 1.0) * BPS


@kernel(inline=True)
def _flag(value: bool) -> float:
    return 1.0 if value else 0.0


Pair = tuple[float, float]


@kernel(inline=True)
def _write_tops(spot_bid: Pair, spot_ask: Pair, perp_bid: Pair, perp_ask: Pair, quotes: FloatArray,
                stamps: IntArray, out: FloatArray, row: int) -> None:
    out[row, C_SPOT_BID], out[row, C_SPOT_BID_AMT] = _effective_top(spot_bid, quotes, stamps, SPOT, BID)
    out[row, C_SPOT_ASK], out[row, C_SPOT_ASK_AMT] = _effective_top(spot_ask, quotes, stamps, SPOT, ASK)
    out[row, C_PERP_BID], out[row, C_PERP_BID_AMT] = _effective_top(perp_bid, quotes, stamps, PERP, BID)
    out[row, C_PERP_ASK], out[row, C_PERP_ASK_AMT] = _effective_top(perp_ask, quotes, stamps, PERP, ASK)


@kernel(inline=True)
def _write_top_spreads(params: FloatArray, out: FloatArray, row: int) -> None:
    spot_bid, spot_ask = out[row, C_SPOT_BID], out[row, C_SPOT_ASK]
    perp_bid, perp_ask = out[row, C_PERP_BID], out[row, C_PERP_ASK]
    fees = params[P_FEE_SPOT] + params[P_FEE_PERP]
    out[row, C_BASIS] = _bps((perp_bid + perp_ask) / (spot_bid + spot_ask))  # ratio of mids; the halves cancel
    out[row, C_OPEN] = _bps(perp_bid / spot_ask)
    out[row, C_CLOSE] = _bps(perp_ask / spot_bid)
    out[row, C_NET_OPEN] = out[row, C_OPEN] - fees
    out[row, C_NET_CLOSE] = out[row, C_CLOSE] + fees


@kernel(inline=True)
def _write_size_spreads(spot_ask_vwap: Pair, perp_bid_vwap: Pair, spot_bid_vwap: Pair, perp_ask_vwap: Pair,
                        params: FloatArray, out: FloatArray, row: int) -> None:
    size = params[P_SIZE]
    if not size > 0.0:
        for c in (C_SPOT_ASK_VWAP, C_PERP_BID_VWAP, C_SPOT_BID_VWAP, C_PERP_ASK_VWAP, C_OPEN_SIZE, C_CLOSE_SIZE,
                  C_NET_OPEN_SIZE, C_NET_CLOSE_SIZE):
            out[row, c] = math.nan
        out[row, C_SIZE_FILLED] = 0.0
        return
    fees = params[P_FEE_SPOT] + params[P_FEE_PERP]
    spot_ask, spot_ask_filled = spot_ask_vwap
    perp_bid, perp_bid_filled = perp_bid_vwap
    spot_bid, spot_bid_filled = spot_bid_vwap
    perp_ask, perp_ask_filled = perp_ask_vwap
    open_filled = spot_ask_filled >= size and perp_bid_filled >= size
    close_filled = spot_bid_filled >= size and perp_ask_filled >= size
    out[row, C_SPOT_ASK_VWAP], out[row, C_PERP_BID_VWAP] = spot_ask, perp_bid
    out[row, C_SPOT_BID_VWAP], out[row, C_PERP_ASK_VWAP] = spot_bid, perp_ask
    out[row, C_OPEN_SIZE] = _bps(perp_bid / spot_ask) if open_filled else math.nan
    out[row, C_CLOSE_SIZE] = _bps(perp_ask / spot_bid) if close_filled else math.nan
    out[row, C_NET_OPEN_SIZE] = out[row, C_OPEN_SIZE] - fees
    out[row, C_NET_CLOSE_SIZE] = out[row, C_CLOSE_SIZE] + fees
    out[row, C_SIZE_FILLED] = _flag(open_filled and close_filled)


@kernel(inline=True)
def _write_funding(funding_rate: float, out: FloatArray, row: int) -> None:
    out[row, C_FUNDING] = funding_rate
    out[row, C_FUNDING_ANNUAL] = funding_rate * FUNDING_INTERVALS_PER_YEAR * 100.0


@kernel(inline=True)
def _write_flags(stamps: IntArray, params: FloatArray, out: FloatArray, row: int) -> None:
    spot_bid, spot_ask = out[row, C_SPOT_BID], out[row, C_SPOT_ASK]
    perp_bid, perp_ask = out[row, C_PERP_BID], out[row, C_PERP_ASK]
    t_spot, t_perp = stamps[SPOT, S_LAST_NS], stamps[PERP, S_LAST_NS]
    if t_spot == NO_TIME or t_perp == NO_TIME:
        skew = math.nan
        stale = True
    else:
        skew = abs(t_spot - t_perp) / 1e6
        stale = skew > params[P_STALE_MS]
    # "bid < ask" is False for NaN, so a missing price also fails the uncrossed test
    valid = (stamps[SPOT, S_VALID] != 0 and stamps[PERP, S_VALID] != 0
             and spot_bid < spot_ask and perp_bid < perp_ask)
    out[row, C_SKEW] = skew
    out[row, C_STALE] = _flag(stale)
    out[row, C_VALID] = _flag(valid)
    out[row, C_OPPORTUNITY] = _flag(valid and not stale and out[row, C_NET_OPEN] > params[P_THRESHOLD])


@kernel(inline=True)
def write_reading(spot_bid: Pair, spot_ask: Pair, perp_bid: Pair, perp_ask: Pair, spot_ask_vwap: Pair,
                  perp_bid_vwap: Pair, spot_bid_vwap: Pair, perp_ask_vwap: Pair, quotes: FloatArray,
                  stamps: IntArray, funding_rate: float, params: FloatArray, out: FloatArray, row: int) -> None:
    """DESIGN §4 from what the depth books say: their best levels and, when ``params[P_SIZE] > 0``, the VWAPs of
    that size (otherwise ignored). The one implementation of the formulas, for any book kind: the sorted book
    (``compute_reading``) and replay's price-indexed book (nova.core.tick_book) both feed it. Only for NRT-free
    (``@kernel``) callers, into which it is inlined."""
    _write_tops(spot_bid, spot_ask, perp_bid, perp_ask, quotes, stamps, out, row)
    _write_top_spreads(params, out, row)
    _write_size_spreads(spot_ask_vwap, perp_bid_vwap, spot_bid_vwap, perp_ask_vwap, params, out, row)
    _write_funding(funding_rate, out, row)
    _write_flags(stamps, params, out, row)


@kernel()
def compute_reading(s_px: FloatArray, s_qty: FloatArray, s_n: IntArray, s_k: int, p_px: FloatArray,
                    p_qty: FloatArray, p_n: IntArray, p_k: int, quotes: FloatArray, stamps: IntArray,
                    funding_rate: float, params: FloatArray, out: FloatArray, row: int) -> None:
    """Write one reading into ``out[row, :]`` (columns VALUE_COLUMNS, flags as 0/1); the caller keeps its time.

    Spot is book ``s_k`` of ``(s_px, s_qty, s_n)`` and perp book ``p_k`` of ``(p_px, p_qty, p_n)``; the live
    view passes two separate ``L2Book`` states.
    """
    size = params[P_SIZE]
    none = (math.nan, 0.0)
    spot_ask_vwap = _vwap(s_px, s_qty, s_n, s_k, ASK, size) if size > 0.0 else none
    perp_bid_vwap = _vwap(p_px, p_qty, p_n, p_k, BID, size) if size > 0.0 else none
    spot_bid_vwap = _vwap(s_px, s_qty, s_n, s_k, BID, size) if size > 0.0 else none
    perp_ask_vwap = _vwap(p_px, p_qty, p_n, p_k, ASK, size) if size > 0.0 else none
    write_reading(_best(s_px, s_qty, s_n, s_k, BID), _best(s_px, s_qty, s_n, s_k, ASK),
                  _best(p_px, p_qty, p_n, p_k, BID), _best(p_px, p_qty, p_n, p_k, ASK),
                  spot_ask_vwap, perp_bid_vwap, spot_bid_vwap, perp_ask_vwap, quotes, stamps, funding_rate, params,
                  out, row)


@kernel()
def same_top(out: FloatArray, row: int, other: int) -> bool:
    """Whether two readings show the same effective tops (prices and amounts; NaN equals NaN).

    Lets a replay loop compute a reading into a scratch row and keep it only when a top actually changed.
    """
    for c in range(C_TOP_FIRST, C_TOP_LAST + 1):
        a, b = out[row, c], out[other, c]
        if a != b and not (a != a and b != b):
            return False
    return True


# --- Python side ------------------------------------------------------------------------------------------


@kernel()
def _transpose(values: np.ndarray, columns: np.ndarray, out: np.ndarray) -> None:
    """``out[j, i] = values[i, columns[j]]`` a block of readings at a time, so both sides stay in cache (numpy's
    strided copy of the same runs ~3x slower, and this runs once per reading written). Only the columns the
    table keeps are copied (a replay without a size drops 9 of 28)."""
    rows = values.shape[0]
    for first in range(0, rows, 256):
        last = min(first + 256, rows)
        for j in range(columns.shape[0]):
            c = columns[j]
            for i in range(first, last):
                out[j, i] = values[i, c]


def readings_table(ts: np.ndarray, values: np.ndarray, schema: pa.Schema = READING_SCHEMA) -> pa.Table:
    """Readings (``ts`` and the loop's row-major ``values``) as an Arrow table of ``schema``'s columns.

    The table owns copies: the engine's buffers it is made from are reused for the next chunk."""
    if values.ndim != 2 or values.shape[1] != N_VALUES or values.shape[0] != len(ts):
        raise ValueError(f"expected {len(ts)} rows of {N_VALUES} values, got shape {values.shape}")
    index = {name: i for i, name in enumerate(VALUE_COLUMNS)}
    names = [f.name for f in schema if f.name != "ts"]
    columns = np.empty((len(names), values.shape[0]))
    _transpose(np.ascontiguousarray(values), np.array([index[name] for name in names], dtype=np.int64), columns)
    arrays: list[pa.Array] = [pa.array(np.array(ts, dtype=np.int64), READING_SCHEMA.field("ts").type)]
    for name, column in zip(names, columns, strict=True):
        # the kernel marks a missing value with NaN; the table says NULL, as every SQL tool expects
        arrays.append(pa.array(column != 0.0) if name in FLAG_COLUMNS else pa.array(column, mask=np.isnan(column)))
    return pa.Table.from_arrays(arrays, schema=schema)


@dataclass(frozen=True)
class Reading:
    """One spread reading with named fields (see the module docstring for meanings and signs)."""

    ts: int
    spot_bid: float
    spot_bid_amount: float
    spot_ask: float
    spot_ask_amount: float
    perp_bid: float
    perp_bid_amount: float
    perp_ask: float
    perp_ask_amount: float
    basis_bps: float
    open_bps: float
    close_bps: float
    net_open_bps: float
    net_close_bps: float
    spot_ask_vwap: float
    perp_bid_vwap: float
    spot_bid_vwap: float
    perp_ask_vwap: float
    open_bps_size: float
    close_bps_size: float
    net_open_bps_size: float
    net_close_bps_size: float
    size_filled: bool
    funding_rate: float
    funding_annual_pct: float
    skew_ms: float
    stale: bool
    valid: bool
    opportunity: bool

    @classmethod
    def from_row(cls, ts: int, values: FloatArray) -> Reading:
        """Name the kernel's output row ``values`` (length N_VALUES)."""
        named = {name: (bool(v != 0.0) if name in FLAG_COLUMNS else float(v))
                 for name, v in zip(VALUE_COLUMNS, values.tolist(), strict=True)}
        return cls(ts=int(ts), **named)  # type: ignore[arg-type]  # each name gets its own kind


class SpreadLogic:
    """One symbol's spot and perp legs, fed live message by message, read through ``compute_reading``.

    The recorder's status view feeds it what it records and asks for a reading a few times per second; the
    reading is the one replay computes for the same state, because it is the same kernel on the same inputs.
    """

    def __init__(self, params: SpreadParams | None = None, capacity: int = 256) -> None:
        self.params = params or SpreadParams()
        self.books: dict[Market, L2Book] = {"spot": L2Book(capacity), "perp": L2Book(capacity)}
        self.quotes, self.stamps = new_market_state()
        self.funding_rate = math.nan
        self._params = self.params.vector()
        self._out = np.empty((1, N_VALUES))

    def on_depth(self, market: Market, sides: pa.Array | np.ndarray | list[str | None], prices: npt.ArrayLike,
                 amounts: npt.ArrayLike, *, last_id: int, ts_ns: int, snapshot: bool = False) -> None:
        """Apply one depth message (a snapshot replaces the book and makes it valid); ``last_id`` is its ``u``."""
        m = MARKET_INDEX[market]
        self.books[market].apply_message(side_codes(sides), np.ascontiguousarray(prices, dtype=np.float64),
                                         np.ascontiguousarray(amounts, dtype=np.float64), snapshot)
        if snapshot:
            self.stamps[m, S_VALID] = 1
        self.stamps[m, S_DEPTH_ID] = last_id
        self.stamps[m, S_LAST_NS] = ts_ns

    def on_bbo(self, market: Market, *, update_id: int, bid_price: float | None, bid_amount: float | None,
               ask_price: float | None, ask_amount: float | None, ts_ns: int) -> None:
        """Hold the latest bookTicker of ``market`` (a missing side, None, is held as NaN)."""
        m = MARKET_INDEX[market]
        self.quotes[m] = [math.nan if v is None else v for v in (bid_price, bid_amount, ask_price, ask_amount)]
        self.stamps[m, S_BBO_ID] = update_id
        self.stamps[m, S_LAST_NS] = ts_ns

    def on_funding(self, funding_rate: float) -> None:
        """Hold the perp's latest funding rate (per 8 h interval, as Binance reports it)."""
        self.funding_rate = float(funding_rate)

    def invalidate(self, market: Market) -> None:
        """Distrust ``market``'s depth book (a gap) until its next snapshot."""
        self.stamps[MARKET_INDEX[market], S_VALID] = 0

    def reading(self, ts_ns: int) -> Reading:
        """The reading for the current state, stamped ``ts_ns``."""
        s_px, s_qty, s_n = self.books["spot"].arrays
        p_px, p_qty, p_n = self.books["perp"].arrays
        compute_reading(s_px, s_qty, s_n, 0, p_px, p_qty, p_n, 0, self.quotes, self.stamps, self.funding_rate,
                        self._params, self._out, 0)
        return Reading.from_row(ts_ns, self._out[0])
