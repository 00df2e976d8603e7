"""A price-indexed L2 book for replay: one array slot per price tick, in a window that follows the market.

Why: the sorted book (nova.core.book) searches and shifts on every row, and caps replay at ~18 M rows/s of book
work alone; with the tick of an instrument known (the ``instruments`` table, recorded from exchangeInfo), a row
is an index computation and one store. The results are exactly the sorted book's (best, VWAP, depth, levels),
which is what lets replay use either one and stay byte-identical:

- Prices stay exact. A tick size as recorded (a float, e.g. 0.01) is ``unit * 10**-d`` for small integers; a
  price on the grid is ``q * 10**-d`` with ``q`` a multiple of ``unit``, and IEEE division is correctly
  rounded, so ``q / 10**d`` *is* the float the recorder parsed from the exchange's decimal text. A price is
  taken only when that division gives it back bit for bit (``_tick_of``); the book stores sizes alone and
  recomputes each price from its slot the same way. Distinct prices therefore never share a slot.
- Anything else is refused, never approximated: a row that would add a level at a price off the grid stops the
  kernel with STOP_OFF_GRID, and the caller moves that book to the sorted book (``to_sorted``) and goes on
  there. A wrong tick in the instruments table can thus cost speed (a fallback, or a wider window), never a
  wrong result. Removing a price that is not live is a no-op here as there, on or off the grid.
- The window ``[base, base + width)`` of ticks holds every live level of both sides (VWAP and the levels need
  them all). A new level outside it stops the kernel with STOP_OUTSIDE; the caller re-centres or doubles the
  window (``reframe``), which copies only the slots that may be live, and applies the message again (every row
  sets an absolute size, so that is harmless). A book wider than MAX_SLOTS ticks falls back like a price
  off the grid. An empty book simply re-centres on its next level.

State for K books lives in arrays that compiled callers pass around, like the sorted book's: ``tq``
(``float64[K, 2, width]``: the size per side and slot, exactly 0 where no level is), ``ti`` (``int64[K, N_TI]``:
base tick, best slot and live count per side, the slot range that may be non-zero, the tick's unit, why the
last call stopped) and ``tf`` (``float64[K, N_TF]``: ``10**d``). The best slot of a side is kept on every row,
so the top of book is O(1); deleting the best scans to the next live slot, which near the touch is close.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from nova.core.book import (
    ASK,
    BID,
    CodeArray,
    FloatArray,
    IntArray,
    L2Book,
    SideName,
    book_apply,
    book_clear,
    grow_books,
    kernel,
    side_code,
    side_codes,
)

# ti[k, :]
T_BASE = 0  # the tick of slot 0
T_BEST = 1  # T_BEST + side: slot of the side's best level (meaningful while its count is positive)
T_COUNT = 3  # T_COUNT + side: live levels of the side
T_LO = 5  # slots that may hold a non-zero size lie in [lo, hi] (hi < lo: none)
T_HI = 6
T_UNIT = 7  # the tick in units of 10**-d
T_STOP = 8  # why the last call stopped (STOP_*)
T_NEED = 9  # with STOP_OUTSIDE: the tick that did not fit
N_TI = 10
# tf[k, :]
F_SCALE = 0  # 10**d
N_TF = 1

STOP_NONE = 0
STOP_OUTSIDE = 1  # a new level falls outside the window: reframe and apply the message again
STOP_OFF_GRID = 2  # a new level's price is not on the tick grid: fall back to the sorted book

OFF_GRID = -(2**62)  # _tick_of's answer for a price that is not on the grid
START_SLOTS = 1 << 12
MAX_SLOTS = 1 << 21  # 2 M ticks per book (32 MB for both sides): wider books use the sorted book
MAX_DECIMALS = 15

TickState = tuple[FloatArray, IntArray, FloatArray]


def tick_grid(tick: float) -> tuple[int, int] | None:
    """``(unit, 10**d)`` with ``tick == unit / 10**d`` exactly (smallest d), or None for a tick that is not
    a positive decimal of at most MAX_DECIMALS places (then prices cannot be indexed exactly)."""
    if not (isinstance(tick, float | int) and math.isfinite(tick) and tick > 0):
        return None
    for d in range(MAX_DECIMALS + 1):
        scale = 10**d
        unit = round(tick * scale)
        if unit >= 1 and unit / scale == tick:
            return unit, scale
    return None


def new_tick_books(k: int, ticks: list[float | None], width: int = START_SLOTS) -> TickState:
    """Empty state for ``k`` books of ``width`` slots; ``ticks[j]`` is book j's tick size (None: a book that will
    not be used, given the grid of 1)."""
    if k < 1 or width < 2 or len(ticks) != k:
        raise ValueError(f"need at least one book, a tick per book and two slots, got k={k}, {ticks}, {width}")
    tq = np.zeros((k, 2, width))
    ti = np.zeros((k, N_TI), dtype=np.int64)
    tf = np.ones((k, N_TF))
    for j, tick in enumerate(ticks):
        grid = tick_grid(tick) if tick is not None else None
        ti[j, T_UNIT], tf[j, F_SCALE] = grid if grid is not None else (1, 1.0)
        ti[j, T_LO], ti[j, T_HI] = width, -1
    return tq, ti, tf


# --- compiled kernels -------------------------------------------------------------------------------------


@kernel(inline=True)
def _tick_of(ti: IntArray, tf: FloatArray, k: int, price: float) -> int:
    """The tick of ``price`` on book k's grid, or OFF_GRID (also for NaN, infinities and huge prices)."""
    scale = tf[k, F_SCALE]
    x = price * scale
    if not abs(x) < 4.0e15:  # exact integers in a float64 (2**52), with room for the unit's multiple
        return OFF_GRID
    r = np.floor(x + 0.5)
    if r / scale != price:
        return OFF_GRID
    t = int(r)
    unit = ti[k, T_UNIT]
    if unit != 1:
        if t % unit != 0:
            return OFF_GRID
        t //= unit
    return t


@kernel(inline=True)
def _price(ti: IntArray, tf: FloatArray, k: int, slot: int) -> float:
    """The exact float of the price at ``slot``: the one the exchange's decimal text parses to."""
    return np.float64((ti[k, T_BASE] + slot) * ti[k, T_UNIT]) / tf[k, F_SCALE]


@kernel(inline=True)
def _tick_set(tq: FloatArray, ti: IntArray, tf: FloatArray, k: int, side: int, price: float, amount: float) -> bool:
    """Set ``price -> amount`` (not positive: remove); False when stopped (``ti[k, T_STOP]`` says why)."""
    if price != price:
        return True
    add = amount > 0.0
    t = _tick_of(ti, tf, k, price)
    if t == OFF_GRID:
        if add:
            ti[k, T_STOP] = STOP_OFF_GRID
            return False
        return True  # a price off the grid is never live: removing it is a no-op
    width = tq.shape[2]
    i = t - ti[k, T_BASE]
    if i < 0 or i >= width:
        if not add:
            return True  # nothing outside the window is live
        if ti[k, T_COUNT + BID] + ti[k, T_COUNT + ASK] != 0:
            ti[k, T_STOP] = STOP_OUTSIDE
            ti[k, T_NEED] = t
            return False
        half = width >> 1  # an empty book (every slot is 0) re-centres on its next level for free
        ti[k, T_BASE] = t - half
        i = half
        ti[k, T_LO], ti[k, T_HI] = width, -1
    sizes = tq[k, side]
    old = sizes[i]
    if add:
        sizes[i] = amount
        if old == 0.0:
            count = ti[k, T_COUNT + side] + 1
            ti[k, T_COUNT + side] = count
            if i < ti[k, T_LO]:
                ti[k, T_LO] = i
            if i > ti[k, T_HI]:
                ti[k, T_HI] = i
            best = ti[k, T_BEST + side]
            if count == 1 or (i > best if side == BID else i < best):
                ti[k, T_BEST + side] = i
    elif old != 0.0:
        sizes[i] = 0.0
        count = ti[k, T_COUNT + side] - 1
        ti[k, T_COUNT + side] = count
        if count > 0 and i == ti[k, T_BEST + side]:  # the next live slot exists: scan to it
            step = -1 if side == BID else 1
            j = i + step
            while sizes[j] == 0.0:
                j += step
            ti[k, T_BEST + side] = j
    return True


@kernel()
def tick_clear(tq: FloatArray, ti: IntArray, k: int) -> None:
    """Empty book ``k``: zero the slots that may be non-zero (the window's base stays until the next level)."""
    lo, hi = ti[k, T_LO], ti[k, T_HI]
    for side in range(2):
        for i in range(lo, hi + 1):
            tq[k, side, i] = 0.0
    ti[k, T_COUNT + BID] = 0
    ti[k, T_COUNT + ASK] = 0
    ti[k, T_LO], ti[k, T_HI] = tq.shape[2], -1


@kernel(inline=True)
def _tick_apply(tq: FloatArray, ti: IntArray, tf: FloatArray, k: int, sides: CodeArray, prices: FloatArray,
                amounts: FloatArray, start: int, stop: int) -> int:
    for i in range(start, stop):
        side = sides[i]
        if side < 0:
            continue
        if not _tick_set(tq, ti, tf, k, side, prices[i], amounts[i]):
            return i
    return stop


@kernel()
def tick_apply(tq: FloatArray, ti: IntArray, tf: FloatArray, k: int, sides: CodeArray, prices: FloatArray,
               amounts: FloatArray, start: int) -> int:
    """``book_apply`` for the tick book: rows ``start..m-1``; returns m, or the first row that stopped."""
    return _tick_apply(tq, ti, tf, k, sides, prices, amounts, start, sides.shape[0])


@kernel(inline=True)
def tick_apply_message(tq: FloatArray, ti: IntArray, tf: FloatArray, k: int, snapshot: bool, sides: CodeArray,
                       prices: FloatArray, amounts: FloatArray, lo: int, hi: int) -> int:
    """``nova.core.book.apply_message`` (the contract's rebuild rule) for the tick book: returns ``hi``, or the
    first row that stopped (see ``ti[k, T_STOP]``; then reframe or fall back, and apply the message again)."""
    if snapshot:
        tick_clear(tq, ti, k)
    return _tick_apply(tq, ti, tf, k, sides, prices, amounts, lo, hi)


@kernel(inline=True)
def tick_best(tq: FloatArray, ti: IntArray, tf: FloatArray, k: int, side: int) -> tuple[float, float]:
    """(price, amount) of the best level, or (NaN, NaN) when the side is empty."""
    if ti[k, T_COUNT + side] == 0:
        return math.nan, math.nan
    i = ti[k, T_BEST + side]
    return _price(ti, tf, k, i), tq[k, side, i]


@kernel(inline=True)
def tick_vwap(tq: FloatArray, ti: IntArray, tf: FloatArray, k: int, side: int, size: float) -> tuple[float, float]:
    """``nova.core.book.book_vwap`` for the tick book: the same walk over the same levels, so the same floats."""
    if not size > 0.0:
        return math.nan, 0.0
    tolerance = size * 1e-12
    notional = 0.0
    filled = 0.0
    left = ti[k, T_COUNT + side]
    if left > 0:
        i = ti[k, T_BEST + side]
        step = -1 if side == BID else 1
        sizes = tq[k, side]
        while left > 0:
            q = sizes[i]
            if q != 0.0:
                take = min(size - filled, q)
                notional += take * _price(ti, tf, k, i)
                filled += take
                if filled >= size - tolerance:
                    return notional / filled, size
                left -= 1
            i += step
    if filled == 0.0:
        return math.nan, 0.0
    return notional / filled, filled


@kernel(inline=True)
def tick_levels(tq: FloatArray, ti: IntArray, tf: FloatArray, k: int, side: int, out_px: FloatArray,
                out_qty: FloatArray) -> int:
    """``nova.core.book.book_levels`` for the tick book: live levels best first, as many as fit."""
    left = min(ti[k, T_COUNT + side], out_px.shape[0])
    written = 0
    if left > 0:
        i = ti[k, T_BEST + side]
        step = -1 if side == BID else 1
        while written < left:
            q = tq[k, side, i]
            if q != 0.0:
                out_px[written] = _price(ti, tf, k, i)
                out_qty[written] = q
                written += 1
            i += step
    return written


@kernel()
def tick_book_best(tq: FloatArray, ti: IntArray, tf: FloatArray, k: int, side: int) -> tuple[float, float]:
    return tick_best(tq, ti, tf, k, side)


@kernel()
def tick_book_vwap(tq: FloatArray, ti: IntArray, tf: FloatArray, k: int, side: int, size: float
                   ) -> tuple[float, float]:
    return tick_vwap(tq, ti, tf, k, side, size)


@kernel()
def tick_book_levels(tq: FloatArray, ti: IntArray, tf: FloatArray, k: int, side: int, out_px: FloatArray,
                     out_qty: FloatArray) -> int:
    return tick_levels(tq, ti, tf, k, side, out_px, out_qty)


@kernel()
def _tick_apply_message(tq: FloatArray, ti: IntArray, tf: FloatArray, k: int, snapshot: bool, sides: CodeArray,
                        prices: FloatArray, amounts: FloatArray, lo: int, hi: int) -> int:
    return tick_apply_message(tq, ti, tf, k, snapshot, sides, prices, amounts, lo, hi)


# --- moving the window, and falling back ----------------------------------------------------------------------


def _live_extent(tq: FloatArray, ti: IntArray, k: int) -> tuple[int, int] | None:
    """(first, last) slot holding a live level of either side, or None for an empty book; tightens T_LO/T_HI."""
    lo, hi = int(ti[k, T_LO]), int(ti[k, T_HI])
    if hi < lo:
        return None
    live = np.flatnonzero((tq[k, BID, lo:hi + 1] != 0.0) | (tq[k, ASK, lo:hi + 1] != 0.0))
    if live.size == 0:
        ti[k, T_LO], ti[k, T_HI] = tq.shape[2], -1
        return None
    ti[k, T_LO], ti[k, T_HI] = lo + int(live[0]), lo + int(live[-1])
    return int(ti[k, T_LO]), int(ti[k, T_HI])


def _move(old: FloatArray, new: FloatArray, ti: IntArray, k: int, base: int) -> None:
    """Copy book k's live slots from ``old`` into ``new`` (zeroed) so that slot 0 is tick ``base``."""
    extent = _live_extent(old, ti, k)
    shift = int(ti[k, T_BASE]) - base
    ti[k, T_BASE] = base
    if extent is None:
        ti[k, T_LO], ti[k, T_HI] = new.shape[2], -1
        return
    lo, hi = extent
    new[k, :, lo + shift:hi + shift + 1] = old[k, :, lo:hi + 1]
    ti[k, T_LO], ti[k, T_HI] = lo + shift, hi + shift
    ti[k, T_BEST + BID] += shift
    ti[k, T_BEST + ASK] += shift


def reframe(tq: FloatArray, ti: IntArray, k: int, need: int) -> FloatArray | None:
    """Make room for tick ``need`` in book k: re-centre the window on the live levels and ``need``, doubling the
    width (of every book of the state) until they span at most half of it. Returns the state's new ``tq``
    (a new array), or None when book k would need more than MAX_SLOTS slots (fall back to the sorted book)."""
    width = tq.shape[2]
    extent = _live_extent(tq, ti, k)
    base = int(ti[k, T_BASE])
    first, last = (need, need) if extent is None else (min(base + extent[0], need), max(base + extent[1], need))
    span = last - first + 1
    new_width = width
    while new_width < 2 * span:
        new_width *= 2
    if new_width > MAX_SLOTS:
        return None
    new = np.zeros((tq.shape[0], 2, new_width))
    for j in range(tq.shape[0]):
        # book k centres on what it must hold, the others keep their centre
        centre = (first + last) // 2 if j == k else int(ti[j, T_BASE]) + width // 2
        _move(tq, new, ti, j, centre - new_width // 2)
    return new


def to_sorted(tq: FloatArray, ti: IntArray, tf: FloatArray, k: int, px: FloatArray, qty: FloatArray,
              n: IntArray, sorted_k: int) -> tuple[FloatArray, FloatArray]:
    """Put tick book k's levels into book ``sorted_k`` of a sorted-book state (replacing what it held), for a
    fallback in mid-stream; returns that state's ``(px, qty)`` (new arrays when it had to grow)."""
    book_clear(n, sorted_k)
    for side in (BID, ASK):
        count = int(ti[k, T_COUNT + side])
        prices, amounts = np.empty(count), np.empty(count)
        tick_book_levels(tq, ti, tf, k, side, prices, amounts)
        sides = np.full(count, side, dtype=np.int8)
        order = slice(None, None, -1)  # worst first: each new level is the side's new top
        sides, prices, amounts = sides[order].copy(), prices[order].copy(), amounts[order].copy()
        done = book_apply(px, qty, n, sorted_k, sides, prices, amounts, 0)
        while done < count:
            px, qty = grow_books(px, qty, 2 * px.shape[2])
            done = book_apply(px, qty, n, sorted_k, sides, prices, amounts, done)
    return px, qty


def stop_reason(ti: IntArray, k: int, tick: float | None) -> str:
    """Why book k left the tick book, for the replay's note."""
    if ti[k, T_STOP] == STOP_OFF_GRID:
        return f"a price off the tick grid of {tick:g}"
    return f"a book wider than {MAX_SLOTS:,} ticks of {tick:g}"


# --- one book for Python callers --------------------------------------------------------------------------


class TickBook:
    """``nova.core.book.L2Book``'s interface on the tick book (K = 1), for tests, notebooks and benchmarks.

    It moves to an ``L2Book`` of the same levels by itself when a price is off the grid or the book too wide, as
    replay does; ``fallback`` then says why (None while price-indexed).
    """

    def __init__(self, tick: float, capacity: int = START_SLOTS) -> None:
        if tick_grid(tick) is None:
            raise ValueError(f"tick size must be a positive decimal of at most {MAX_DECIMALS} places, got {tick!r}")
        self.tick = tick
        self._tq, self._ti, self._tf = new_tick_books(1, [tick], max(2, capacity))
        self._sorted: L2Book | None = None
        self.fallback: str | None = None

    @property
    def arrays(self) -> TickState:
        """``(tq, ti, tf)`` for passing to kernels as book ``k = 0``."""
        return self._tq, self._ti, self._tf

    @property
    def capacity(self) -> int:
        return int(self._tq.shape[2])

    def _run(self, sides: CodeArray, prices: FloatArray, amounts: FloatArray, snapshot: bool) -> None:
        hi = int(sides.shape[0])
        while self._sorted is None:
            done = _tick_apply_message(self._tq, self._ti, self._tf, 0, snapshot, sides, prices, amounts, 0, hi)
            if done == hi:
                return
            if self._ti[0, T_STOP] == STOP_OUTSIDE:
                grown = reframe(self._tq, self._ti, 0, int(self._ti[0, T_NEED]))
                if grown is not None:
                    self._tq = grown
                    continue
            self._fall_back()
        self._sorted.apply_message(sides, prices, amounts, snapshot)

    def _fall_back(self) -> None:
        book = L2Book()
        book._px, book._qty = to_sorted(self._tq, self._ti, self._tf, 0, *book.arrays, 0)
        self.fallback = stop_reason(self._ti, 0, self.tick)
        self._sorted = book

    def apply(self, sides: pa.Array | pa.ChunkedArray | np.ndarray | list[str | None], prices: npt.ArrayLike,
              amounts: npt.ArrayLike) -> None:
        """Set ``price -> amount`` per row in order (0 removes)."""
        codes = side_codes(sides)
        px = np.ascontiguousarray(prices, dtype=np.float64)
        qty = np.ascontiguousarray(amounts, dtype=np.float64)
        if not codes.shape == px.shape == qty.shape:
            raise ValueError(f"sides, prices and amounts differ in length: {codes.shape}, {px.shape}, {qty.shape}")
        self._run(codes, px, qty, False)

    def apply_message(self, sides: CodeArray, prices: FloatArray, amounts: FloatArray, snapshot: bool) -> None:
        """One message by the contract's rebuild rule (stale rows already masked)."""
        if not sides.shape == prices.shape == amounts.shape:
            raise ValueError(f"sides, prices and amounts differ in length: {sides.shape}, {prices.shape}, "
                             f"{amounts.shape}")
        self._run(sides, prices, amounts, snapshot)

    def clear(self) -> None:
        if self._sorted is not None:
            self._sorted.clear()
        else:
            tick_clear(self._tq, self._ti, 0)

    def best_bid(self) -> tuple[float, float]:
        if self._sorted is not None:
            return self._sorted.best_bid()
        return tick_book_best(self._tq, self._ti, self._tf, 0, BID)

    def best_ask(self) -> tuple[float, float]:
        if self._sorted is not None:
            return self._sorted.best_ask()
        return tick_book_best(self._tq, self._ti, self._tf, 0, ASK)

    def levels(self, side: SideName, depth: int | None = None) -> tuple[FloatArray, FloatArray]:
        if self._sorted is not None:
            return self._sorted.levels(side, depth)
        s = side_code(side)
        count = int(self._ti[0, T_COUNT + s])
        size = count if depth is None else min(count, max(depth, 0))
        prices, amounts = np.empty(size), np.empty(size)
        written = tick_book_levels(self._tq, self._ti, self._tf, 0, s, prices, amounts)
        return prices[:written], amounts[:written]

    def vwap(self, side: SideName, size: float) -> tuple[float, float]:
        if self._sorted is not None:
            return self._sorted.vwap(side, size)
        return tick_book_vwap(self._tq, self._ti, self._tf, 0, side_code(side), float(size))

    def __len__(self) -> int:
        if self._sorted is not None:
            return len(self._sorted)
        return int(self._ti[0, T_COUNT + BID] + self._ti[0, T_COUNT + ASK])

    def to_dict(self) -> dict[str, list[list[float]]]:
        return {name + "s": np.column_stack(self.levels(name)).tolist() for name in ("bid", "ask")}

    def __repr__(self) -> str:
        return f"TickBook(tick={self.tick:g}, levels={len(self)}, fallback={self.fallback!r})"
