"""The L2 order book shared by the live recorder and replay: sorted float arrays driven by numba kernels.

Why this shape:
- Replay must rebuild books at more than 10 M rows/s on one core, so the per-row path is compiled and touches
  only numpy arrays; no Python object is created per row. The recorder's live view calls the very same
  kernels, so there is exactly one book update in the project.
- Prices are kept exactly as the exchange sent them (float64, compared for equality), with no tick-size
  assumption, so this book takes any price. Replay uses the faster price-indexed book (nova.core.tick_book)
  where the recorded instruments give a tick, and falls back to this one when a price is off that grid.
- State for K books lives in three arrays (``px``, ``qty``: ``float64[K, 2, cap]``, C-contiguous; ``n``:
  ``int64[K, 2]``) so that compiled code elsewhere (the replay loop, the spread kernel) can hold several books
  without objects.
- Each side is sorted from worst to best, so the best level sits at index ``n - 1``: bids are stored
  ascending, asks descending. A shift then only moves the levels better than the change, and the search
  gallops from a hint (the top, or inside a message the previous level of that side: Binance sends a
  message's levels in price order), costing log(distance) rather than log(depth).
- Deleting a level below the top leaves a hole (its price stays, its size becomes 0) instead of shifting
  every better level down, and a new level shifts levels only up to the nearest hole. Real Binance diff
  streams touch the whole book (in the ETHUSDT captures half of all changes are more than ~150 levels deep),
  so without holes each row moved ~180 levels; with them ~20. Invariants: ``qty[k, s, n-1] > 0`` (the top
  slot is never a hole, so the best level is O(1)), prices in ``[0, n)`` are strictly sorted and unique
  (holes included), holes have size exactly 0. A full side is compacted before it is reported full.
  So ``n`` counts slots (live levels and holes); readers must skip holes: use ``book_levels`` /
  ``book_depth`` or ``L2Book`` rather than reading ``px[k, s, :n]`` directly.

The kernels trust their callers (numba does not bounds-check): ``k`` and ``side`` must be valid indices.
Rebuilding a book from the contract's ``book`` table: ``usable`` (skip stale rows), then ``apply_message`` once
per message in ``msg`` order (it clears the book when a snapshot message begins).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

BID = 0
ASK = 1
NO_SIDE = -1  # code of a row without a side (the contract's empty-message row, or a row the caller masks out)
SIDE_NAMES: tuple[Literal["bid"], Literal["ask"]] = ("bid", "ask")
SideName = Literal["bid", "ask"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
CodeArray = npt.NDArray[np.int8]


# --- compiled kernels -------------------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def kernel(inline: bool = False) -> Callable[[F], F]:
    """The one way this package compiles per-row code: cached, GIL-free, and without reference counting.

    Kernels never allocate; they only index arrays their caller owns. Numba's reference counting (NRT) would
    still incref/decref every array argument of every call and inlined helper, atomically, and on this path
    that bookkeeping cost more than the work (4-5x on a spread reading, ~1.5x per book row), hence
    ``_nrt=False``. ``inline=True`` inlines a helper into its (also NRT-free) callers at numba-IR level, which
    beats LLVM's own inlining here by ~30%. Replay may use the same decorator for its hot helpers.
    """
    return njit(cache=True, nogil=True, _nrt=False,  # type: ignore[call-overload]  # _nrt is numba-internal
                inline="always" if inline else "never")


@intrinsic
def _move(typingctx: Any, array: types.Type, dst: types.Type, src: types.Type, count: types.Type) -> Any:
    """memmove of ``count`` items of a 1-D C-contiguous array from index ``src`` to ``dst`` (ranges may overlap).

    Numba has no memmove, and its element loops run 2-4x slower than libc's on the shifts a sorted book makes;
    LLVM's memmove intrinsic gives us libc's.
    """
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.layout == "C"):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary, to, frm, items = args
        data = context.make_array(signature.args[0])(context, builder, ary).data
        to, frm, items = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:],
                                                                                     strict=True))
        itemsize = context.get_abi_sizeof(context.get_data_type(signature.args[0].dtype))
        cgutils.raw_memmove(builder, builder.gep(data, [to]), builder.gep(data, [frm]), items, itemsize)
        return context.get_dummy_value()

    return types.void(array, dst, src, count), codegen


SCAN_BLOCKS = 4  # slots scanned linearly from a hint before galloping: 4 blocks of 8


@kernel(inline=True)
def _locate(prices: FloatArray, count: int, price: float, sign: float, hint: int) -> int:
    """Index of the first level not worse than ``price`` in ``prices[:count]`` (``count`` if all are worse).

    Gallops from ``hint`` before bisecting, because the next level to change is usually close to a known
    one: the top of the book (hint = count) or, inside a message, the previous level of the same side
    (Binance sends a message's levels in price order). Cost is log(distance from the hint), not log(depth).
    Multiplying by ``sign`` turns the descending ask array into an ascending key exactly (negation is exact).
    """
    key = sign * price
    hint = min(max(hint, 0), count)
    # Short hops first, eight slots at a time and without branching on each slot: the next level of a message
    # is usually a few dozen slots away, where a galloping search pays a mispredicted branch per step.
    if hint < count and sign * prices[hint] < key:  # the answer is above the hint
        j = hint + 1
        for _ in range(SCAN_BLOCKS):
            if j + 8 > count:
                break
            below = 0
            for d in range(8):
                below += sign * prices[j + d] < key
            if below < 8:
                return j + below
            j += 8
        lo, hi, step = j, count, 1
        probe = lo
        while probe < count and sign * prices[probe] < key:
            lo = probe + 1
            step <<= 1
            probe = lo + step - 1
        hi = min(probe, count)
    else:  # the answer is at or below the hint
        j = hint  # the answer is <= j; slots [j - 8, j) are checked together
        for _ in range(SCAN_BLOCKS):
            if j < 8:
                break
            at_or_above = 0
            for d in range(1, 9):
                at_or_above += sign * prices[j - d] >= key
            if at_or_above < 8:
                return j - at_or_above
            j -= 8
        hi, step = j, 1
        probe = hi - 1
        while probe >= 0 and sign * prices[probe] >= key:
            hi = probe
            step <<= 1
            probe = hi - step
        lo = max(probe + 1, 0)
    while lo < hi:
        mid = (lo + hi) >> 1
        if sign * prices[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


@kernel(inline=True)
def _nearest_hole_above(sizes: FloatArray, count: int, i: int) -> int:
    """Index of the first hole at or above ``i``, or ``count`` if none (then the slot past the top is used).

    Scans eight slots per step so LLVM can compare them as vectors; holes are usually a few dozen slots away.
    """
    j = i
    while j + 8 <= count:
        hole = False
        for d in range(8):
            hole |= sizes[j + d] == 0.0
        if hole:
            break
        j += 8
    while j < count and sizes[j] != 0.0:
        j += 1
    return j


@kernel(inline=True)
def _compact(prices: FloatArray, sizes: FloatArray, count: int) -> int:
    """Squeeze the holes out of one side; returns the new count. Only when the side is full, so rare."""
    kept = 0
    for j in range(count):
        if sizes[j] > 0.0:
            prices[kept] = prices[j]
            sizes[kept] = sizes[j]
            kept += 1
    return kept


@kernel(inline=True)
def _insert(prices: FloatArray, sizes: FloatArray, count: int, i: int, price: float, amount: float) -> int:
    """Put a new level at ``i`` (its sorted place) by shifting levels up into the nearest hole or past the top.

    Returns the new count, or -1 when there is neither a hole above ``i`` nor room past the top.
    """
    hole = _nearest_hole_above(sizes, count, i)
    if hole == count:
        if count == prices.shape[0]:
            return -1
        count += 1
    _move(prices, i + 1, i, hole - i)  # type: ignore[call-arg,arg-type]  # a numba intrinsic
    _move(sizes, i + 1, i, hole - i)
    prices[i] = price
    sizes[i] = amount
    return count


@kernel(inline=True)
def _remove(sizes: FloatArray, count: int, i: int) -> int:
    """Delete the live level at ``i``; returns the new count. Below the top: a hole. At the top: drop it and
    the holes under it, so the top slot stays live."""
    if i < count - 1:
        sizes[i] = 0.0
        return count
    count -= 1
    while count > 0 and sizes[count - 1] == 0.0:
        count -= 1
    return count


@kernel(inline=True)
def _set_level(px: FloatArray, qty: FloatArray, n: IntArray, k: int, side: int, price: float, amount: float,
               hint: int) -> int:
    """``book_set`` with a search hint; returns the level's index (a hint for the next row), or -1 if full."""
    prices = px[k, side]
    sizes = qty[k, side]
    count = n[k, side]
    sign = 1.0 if side == BID else -1.0
    i = _locate(prices, count, price, sign, hint)
    found = i < count and prices[i] == price
    if amount > 0.0:
        if found:  # an update, or a hole coming back to life
            sizes[i] = amount
            return i
        new_count = _insert(prices, sizes, count, i, price, amount)
        if new_count < 0:
            count = _compact(prices, sizes, count)
            i = _locate(prices, count, price, sign, count)
            new_count = _insert(prices, sizes, count, i, price, amount)
            if new_count < 0:
                n[k, side] = count
                return -1
        n[k, side] = new_count
    elif found and sizes[i] > 0.0:
        n[k, side] = _remove(sizes, count, i)
    return i


@kernel()
def book_clear(n: IntArray, k: int) -> None:
    """Empty book ``k``; the price arrays are left as they are because ``n`` alone says what is live."""
    n[k, BID] = 0
    n[k, ASK] = 0


@kernel()
def book_set(px: FloatArray, qty: FloatArray, n: IntArray, k: int, side: int, price: float, amount: float) -> bool:
    """Set the absolute size at ``price``; a size that is not positive (0, and also negative or NaN) removes it.

    Returns False, changing no level, only when a new level would not fit even after squeezing out the holes:
    the caller grows the arrays and retries. Removing an absent level is a no-op, as Binance's rules require
    (deltas may name levels we never saw). A NaN price is ignored rather than allowed to corrupt the ordering.
    """
    if price != price:
        return True
    return _set_level(px, qty, n, k, side, price, amount, n[k, side]) >= 0


@kernel()
def book_apply(px: FloatArray, qty: FloatArray, n: IntArray, k: int, sides: CodeArray, prices: FloatArray,
               amounts: FloatArray, start: int) -> int:
    """Apply rows ``start..m-1`` to book ``k``; returns m, or the index of the first row that did not fit.

    Returning the index (instead of raising) lets Python grow the arrays and resume exactly there. Rows whose
    side code is negative are skipped, so a caller can mask out stale or empty-message rows without copying.
    Meant to be called once per message: each side's search starts from the previous row of that side.
    """
    hints = (n[k, BID], n[k, ASK])
    m = sides.shape[0]
    for i in range(start, m):
        side = sides[i]
        price = prices[i]
        if side < 0 or price != price:
            continue
        at = _set_level(px, qty, n, k, side, price, amounts[i], hints[side])
        if at < 0:
            return i
        hints = (at, hints[1]) if side == BID else (hints[0], at)
    return m


# --- the contract's rebuild rule (DESIGN §2), stated once -------------------------------------------------------------
#
# Rebuild a book from the ``book`` table: rows in ``msg`` order; skip stale rows (``usable``; the recorder marks a
# message stale as a whole, and a stale message is skipped entirely, snapshot or not); clear the book when a
# snapshot message begins, then set ``price -> amount`` per row, removing the level at 0 (``apply_message``). The
# recorder's live view, replay's loop and ``nova check`` all rebuild through these two; the tests' oracle
# (tests/oracle.py) restates the rule on purpose, independently.

def usable(sides: CodeArray, stale: npt.NDArray[np.bool_]) -> CodeArray:
    """The rule's first step: a stale row is skipped. Its side becomes NO_SIDE, which ``book_apply`` passes over,
    so the rows keep their positions (no copy when nothing is stale)."""
    if not stale.any():
        return sides
    out = sides.copy()
    out[stale] = NO_SIDE
    return out


@kernel(inline=True)
def apply_message(px: FloatArray, qty: FloatArray, n: IntArray, k: int, snapshot: bool, sides: CodeArray,
                  prices: FloatArray, amounts: FloatArray, lo: int, hi: int) -> int:
    """Apply one message, rows ``[lo, hi)`` (stale ones masked by ``usable``), to book ``k``: a snapshot message
    replaces the book, so it is cleared first. Returns ``hi``, or the first row that did not fit (grow the
    arrays and call again: every row sets an absolute size, so applying the message again is harmless)."""
    if snapshot:
        book_clear(n, k)
    return book_apply(px, qty, n, k, sides[:hi], prices[:hi], amounts[:hi], lo)


@kernel(inline=True)  # also inlined by nova.core.spread's kernel; only for NRT-free (@kernel) callers
def _best(px: FloatArray, qty: FloatArray, n: IntArray, k: int, side: int) -> tuple[float, float]:
    count = n[k, side]
    if count == 0:
        return math.nan, math.nan
    return px[k, side, count - 1], qty[k, side, count - 1]


@kernel()
def book_best(px: FloatArray, qty: FloatArray, n: IntArray, k: int, side: int) -> tuple[float, float]:
    """(price, amount) of the best level, or (NaN, NaN) when the side is empty."""
    return _best(px, qty, n, k, side)


@kernel(inline=True)  # also inlined by nova.core.spread's kernel; only for NRT-free (@kernel) callers
def _vwap(px: FloatArray, qty: FloatArray, n: IntArray, k: int, side: int, size: float) -> tuple[float, float]:
    if not size > 0.0:
        return math.nan, 0.0
    tolerance = size * 1e-12
    notional = 0.0
    filled = 0.0
    for i in range(n[k, side] - 1, -1, -1):
        take = min(size - filled, qty[k, side, i])
        notional += take * px[k, side, i]
        filled += take
        if filled >= size - tolerance:
            return notional / filled, size
    if filled == 0.0:
        return math.nan, 0.0
    return notional / filled, filled


@kernel()
def book_vwap(px: FloatArray, qty: FloatArray, n: IntArray, k: int, side: int, size: float) -> tuple[float, float]:
    """(average price, filled) of taking ``size`` from ``side``, walking from its best level.

    ``filled < size`` means the book was too thin; the average is then over what was there, so a caller can
    still see the slippage of the available depth. (NaN, 0) when nothing could be taken. A shortfall below
    1e-12 of ``size`` counts as filled: it is float rounding of the running sum, not missing depth.
    """
    return _vwap(px, qty, n, k, side, size)


@kernel()
def book_depth(qty: FloatArray, n: IntArray, k: int, side: int) -> int:
    """Number of live levels on one side (``n`` also counts holes)."""
    live = 0
    for i in range(n[k, side]):
        live += qty[k, side, i] > 0.0
    return live


@kernel()
def book_levels(px: FloatArray, qty: FloatArray, n: IntArray, k: int, side: int, out_px: FloatArray,
                out_qty: FloatArray) -> int:
    """Copy the live levels of one side, best first, into ``out_px``/``out_qty`` (as many as fit); returns how
    many were written. The way compiled callers read a book without knowing about holes."""
    written = 0
    for i in range(n[k, side] - 1, -1, -1):
        if written == out_px.shape[0]:
            break
        if qty[k, side, i] > 0.0:
            out_px[written] = px[k, side, i]
            out_qty[written] = qty[k, side, i]
            written += 1
    return written


# --- state helpers ----------------------------------------------------------------------------------------


def new_books(k: int, cap: int) -> tuple[FloatArray, FloatArray, IntArray]:
    """Empty state for ``k`` books of ``cap`` levels per side: ``(px, qty, n)``."""
    if k < 1 or cap < 1:
        raise ValueError(f"need at least one book and one level per side, got k={k}, cap={cap}")
    return np.zeros((k, 2, cap)), np.zeros((k, 2, cap)), np.zeros((k, 2), dtype=np.int64)


def grow_books(px: FloatArray, qty: FloatArray, cap: int) -> tuple[FloatArray, FloatArray]:
    """Copies of ``px`` and ``qty`` with room for ``cap`` levels per side; ``n`` stays valid as it is.

    Slots occupy the low indices of each side, so growing is a plain copy into larger arrays.
    """
    old = px.shape[2]
    if cap < old:
        raise ValueError(f"cannot shrink books from {old} to {cap} levels per side")
    new_px = np.zeros((px.shape[0], 2, cap))
    new_qty = np.zeros((px.shape[0], 2, cap))
    new_px[:, :, :old] = px
    new_qty[:, :, :old] = qty
    return new_px, new_qty


def side_code(name: str) -> int:
    """BID or ASK for the contract's side string."""
    try:
        return SIDE_NAMES.index(name)
    except ValueError:
        raise ValueError(f"side must be 'bid' or 'ask', got {name!r}") from None


def side_codes(values: pa.Array | pa.ChunkedArray | np.ndarray | list[str | None]) -> CodeArray:
    """int8 side codes (BID, ASK; NO_SIDE for nulls) for a column of the contract's 'bid'/'ask' strings.

    Accepts what readers actually hold: an Arrow dictionary or string column (chunked or not), a numpy array
    of strings or of codes, or a list. Dictionary columns are converted through their (tiny) dictionary, so
    the cost per row is one table lookup. Anything other than 'bid', 'ask' or null raises ValueError.
    """
    if isinstance(values, pa.ChunkedArray):
        if values.num_chunks == 0:
            return np.empty(0, dtype=np.int8)
        return np.concatenate([side_codes(chunk) for chunk in values.chunks])
    if isinstance(values, pa.DictionaryArray):
        return _dictionary_codes(values)
    if isinstance(values, pa.Array):
        return _dictionary_codes(pc.dictionary_encode(values))
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        return _checked_codes(array)
    return _string_codes(array)


def _dictionary_codes(values: pa.DictionaryArray) -> CodeArray:
    if len(values.dictionary) == 0:
        return np.full(len(values), NO_SIDE, dtype=np.int8)
    lookup = np.array([NO_SIDE if s is None else side_code(s) for s in values.dictionary.to_pylist()],
                      dtype=np.int8)
    if values.null_count == 0:
        return lookup[values.indices.to_numpy()]
    codes = lookup[pc.fill_null(values.indices, 0).to_numpy()]
    codes[values.is_null().to_numpy(zero_copy_only=False)] = NO_SIDE
    return codes


def _string_codes(array: np.ndarray) -> CodeArray:
    codes = np.full(array.shape[0], NO_SIDE, dtype=np.int8)
    is_bid = array == "bid"
    is_ask = array == "ask"
    codes[is_bid] = BID
    codes[is_ask] = ASK
    unknown = ~(is_bid | is_ask)
    if unknown.any():
        others = {v for v in array[unknown].tolist() if v is not None}
        if others:
            raise ValueError(f"side must be 'bid' or 'ask', got {sorted(map(repr, others))[:5]}")
    return codes


def _checked_codes(array: np.ndarray) -> CodeArray:
    if array.size and (array.min() < NO_SIDE or array.max() > ASK):
        raise ValueError("integer side codes must be BID (0), ASK (1) or NO_SIDE (-1)")
    return array.astype(np.int8, copy=False)


# --- one book for Python callers --------------------------------------------------------------------------


@kernel()
def _apply_message(px: FloatArray, qty: FloatArray, n: IntArray, k: int, snapshot: bool, sides: CodeArray,
                   prices: FloatArray, amounts: FloatArray, lo: int, hi: int) -> int:
    return apply_message(px, qty, n, k, snapshot, sides, prices, amounts, lo, hi)


class L2Book:
    """One book (K = 1) for the recorder's live view, notebooks and tests, driven by the same kernels as replay.

    Capacity doubles on demand, so a caller never has to know how deep a book gets.
    """

    def __init__(self, capacity: int = 64) -> None:
        self._px, self._qty, self._n = new_books(1, capacity)

    @property
    def arrays(self) -> tuple[FloatArray, FloatArray, IntArray]:
        """``(px, qty, n)`` for passing to kernels as book ``k = 0``; new arrays after the book has grown."""
        return self._px, self._qty, self._n

    @property
    def capacity(self) -> int:
        return int(self._px.shape[2])

    def apply(self, sides: pa.Array | pa.ChunkedArray | np.ndarray | list[str | None],
              prices: npt.ArrayLike, amounts: npt.ArrayLike) -> None:
        """Set ``price -> amount`` per row in order (0 removes), growing the arrays whenever a side is full."""
        codes = side_codes(sides)
        px = np.ascontiguousarray(prices, dtype=np.float64)
        qty = np.ascontiguousarray(amounts, dtype=np.float64)
        if not codes.shape == px.shape == qty.shape:
            raise ValueError(f"sides, prices and amounts differ in length: {codes.shape}, {px.shape}, {qty.shape}")
        done = book_apply(self._px, self._qty, self._n, 0, codes, px, qty, 0)
        while done < len(codes):
            self._px, self._qty = grow_books(self._px, self._qty, 2 * self.capacity)
            done = book_apply(self._px, self._qty, self._n, 0, codes, px, qty, done)

    def clear(self) -> None:
        book_clear(self._n, 0)

    def apply_message(self, sides: CodeArray, prices: FloatArray, amounts: FloatArray, snapshot: bool) -> None:
        """One message by the contract's rebuild rule (``apply_message``; stale rows already masked), growing the
        arrays whenever a side is full."""
        hi = int(sides.shape[0])
        if not sides.shape == prices.shape == amounts.shape:
            raise ValueError(f"sides, prices and amounts differ in length: {sides.shape}, {prices.shape}, "
                             f"{amounts.shape}")
        done = _apply_message(self._px, self._qty, self._n, 0, snapshot, sides, prices, amounts, 0, hi)
        while done < hi:
            self._px, self._qty = grow_books(self._px, self._qty, 2 * self.capacity)
            done = _apply_message(self._px, self._qty, self._n, 0, snapshot, sides, prices, amounts, 0, hi)

    def best_bid(self) -> tuple[float, float]:
        """(price, amount); NaNs when there are no bids."""
        return book_best(self._px, self._qty, self._n, 0, BID)

    def best_ask(self) -> tuple[float, float]:
        """(price, amount); NaNs when there are no asks."""
        return book_best(self._px, self._qty, self._n, 0, ASK)

    def levels(self, side: SideName, depth: int | None = None) -> tuple[FloatArray, FloatArray]:
        """(prices, amounts) of ``side``, best first, at most ``depth`` levels; copies, safe to keep."""
        s = side_code(side)
        count = int(self._n[0, s])
        size = count if depth is None else min(count, max(depth, 0))
        prices, amounts = np.empty(size), np.empty(size)
        written = book_levels(self._px, self._qty, self._n, 0, s, prices, amounts)
        return prices[:written], amounts[:written]

    def vwap(self, side: SideName, size: float) -> tuple[float, float]:
        """(average price, filled) of taking ``size`` from ``side``; see ``book_vwap``."""
        return book_vwap(self._px, self._qty, self._n, 0, side_code(side), float(size))

    def __len__(self) -> int:
        """Live levels on both sides."""
        return book_depth(self._qty, self._n, 0, BID) + book_depth(self._qty, self._n, 0, ASK)

    def to_dict(self) -> dict[str, list[list[float]]]:
        """``{'bids': [[price, amount], ...], 'asks': [...]}`` best first, the shape ccxt and Binance use."""
        return {name + "s": np.column_stack(self.levels(name)).tolist() for name in SIDE_NAMES}

    def __repr__(self) -> str:
        return (f"L2Book(bids={book_depth(self._qty, self._n, 0, BID)}, asks={book_depth(self._qty, self._n, 0, ASK)}"
                f", best={self.best_bid()[0]}/{self.best_ask()[0]})")
