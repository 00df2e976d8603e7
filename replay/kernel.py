"""Replay's compiled loop: merge one window of entries, rebuild both books, and call the spread kernel.

Why one compiled loop per window: a day holds ~150 M book rows and ~30 M other entries (bookTickers, trades,
funding, ledger rows), so anything done per row or per entry in Python would decide the replay speed. Python
prepares a window (the entries of every stream with a merge key below some time, see ``replay.merge``) as
plain numpy arrays, and this loop does everything per entry: it picks the next entry across the streams,
applies book messages with ``nova.core.book``, holds the freshest bookTicker and funding, applies the ledger's
invalidations, and calls ``nova.core.spread.write_reading`` (the one implementation of DESIGN §4) whenever a top
of book may have changed, keeping the reading only when a top (or validity, or a size-aware VWAP) did change.

Merge order, the contract of this module: entries are taken by (time key, segment, position), where segment
is the stream's place in ``SEGMENTS`` and position its order within the stream (book rows in ``msg`` order).
Time keys are made non-decreasing within each stream by ``replay.reader`` (a running maximum), so this is a
k-way merge of sorted runs and needs no sort.

Books: each market's book is price-indexed (``nova.core.tick_book``) when its tick is known, else the sorted book
(``nova.core.book``); the loop dispatches per message and per reading on ``ticked[m]``, and stops with TICKS_STOP
when a price-indexed book needs a wider window or has to fall back, which the engine does before resuming.

Everything the loop keeps between windows lives in ``ReplayState`` arrays, so a window can stop anywhere (the
output buffer is full, a book needs more room) and resume exactly there.

Sampling (``nova export snapshots``, replay.snapshots): the same loop can also copy the top levels of both books
at every instant of a time grid into a ``SampleBuffer``. Before it processes an entry whose key passes the next
grid instant t, the books hold exactly the entries with key <= t: the messages received by t, as the SQL macro
``book_at`` counts them (keys are running maxima of receive times, so a message received by t but after one
received later is not in effect at t in either). Validity comes from the state the loop keeps for the spread
kernel. A replay passes a grid that never comes (one comparison per entry, its only cost), and an export
switches the readings off, so both run the one loop.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from nova.core.book import ASK, BID, _best, _vwap, apply_message, book_levels, grow_books, kernel, new_books
from nova.core.spread import (
    C_OPEN_SIZE,
    C_PERP_ASK_VWAP,
    C_SPOT_ASK_VWAP,
    C_VALID,
    N_VALUES,
    NO_ID,
    P_SIZE,
    PERP,
    S_BBO_ID,
    S_DEPTH_ID,
    S_LAST_NS,
    S_VALID,
    SPOT,
    SpreadParams,
    new_market_state,
    same_top,
    write_reading,
)
from nova.core.tick_book import T_STOP, new_tick_books, tick_apply_message, tick_best, tick_levels, tick_vwap

SEGMENTS = ("book/spot", "book/perp", "bbo/spot", "bbo/perp", "funding/perp", "trades/spot", "trades/perp",
            "events/spot", "events/perp")
"""The merged streams in tie-break priority: at equal times book data goes first, the ledger last."""
(SEG_BOOK_SPOT, SEG_BOOK_PERP, SEG_BBO_SPOT, SEG_BBO_PERP, SEG_FUNDING, SEG_TRADES_SPOT, SEG_TRADES_PERP,
 SEG_EVENTS_SPOT, SEG_EVENTS_PERP) = range(len(SEGMENTS))
N_SEGMENTS = len(SEGMENTS)

# ledger actions (bits of the events segment's ``action`` array)
ACT_INVALIDATE = 1  # the book of that market is not trustworthy until its next snapshot
ACT_GAP = 2
ACT_DISCONNECT = 4
ACT_CLEAR_QUOTE = 8  # the market's held bookTicker is not trustworthy: drop it (nova.core.validity, quote breaks)
ACT_CLEAR_FUNDING = 16  # the held funding rate likewise

# counters (ReplayState.counters); "in the window" means time key in [start, end)
K_ENTRIES = 0  # merged entries in the window, of every stream
K_BOOK_MESSAGES = 1
K_BOOK_ROWS = 2  # book rows of the messages in the window (stale ones included)
K_BBO = 3
K_TRADES = 4
K_FUNDING = 5
K_LEDGER = 6
K_GAPS = 7  # ledgered gaps on a book stream, either market
K_DISCONNECTS = 8
K_READINGS = 9
K_FIRST_KEY = 10  # time key of the first and last entry in the window (NO_KEY before any)
K_LAST_KEY = 11
K_SYNCED_SPOT = 12  # a snapshot of that market has been applied (rows before the first one are skipped)
K_SYNCED_PERP = 13
K_ROWS_SEEN = 14  # book rows of every processed message, warm-up included: the work done
K_NEXT_DATE = 15  # the next UTC midnight (time key) whose first entry yields a reading whatever it changed
N_COUNTERS = 16
NO_KEY = -(2**63)
DAY_NS = 86_400 * 10**9
EXHAUSTED = 2**63 - 1  # the head key of a segment with nothing left in the window

# what a window run stopped at
DONE = 0  # every entry of the window (below ``end``) is processed
OUT_FULL = 1  # the output buffer is full: drain it and call again
BOOK_FULL = 2  # a book side needs more capacity: grow and call again
PAST_END = 3  # reached an entry at or after ``end``: the replay is over
SAMPLES_FULL = 4  # the sample buffer is full: drain it and call again
TICKS_STOP = 5  # a price-indexed book stopped (nova.core.tick_book, ``ti[m, T_STOP]``): reframe or fall back

# the sampling grid (SampleBuffer.grid)
G_NEXT = 0  # the next instant to sample (EXHAUSTED: none, as in a replay)
G_STEP = 1
G_END = 2  # the grid's end (exclusive)
G_COUNT = 3  # rows in the sample buffer
G_MARKETS = 4  # bit m set: copy the levels of market m
G_READINGS = 5  # 1: compute spread readings (a replay); 0: only sample (an export)
N_GRID = 6

# what a sample row holds of each market besides its levels (SampleBuffer.info[row, m])
I_VALID = 0  # the book is valid at the instant (nova.core.validity, as the loop keeps it)
I_KEY = 1  # time key of the last applied book message (NO_KEY: none yet)
I_LAST_ID = 2  # its last update id (nova.core.spread.NO_ID: none yet)
I_SNAPSHOT_KEY = 3  # time key of the last applied snapshot message (NO_KEY: none yet)
N_INFO = 4

# ReplayState.book_keys[m]: time keys of market m's book the spread state does not keep
B_APPLIED = 0  # the last applied message
B_SNAPSHOT = 1  # the last applied snapshot message

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Int8Array = npt.NDArray[np.int8]


class ReplayState:
    """Everything the loop carries from one entry to the next: both books, quotes, stamps, counters.

    Books: one ``nova.core.book`` multi-book state, spot at k = SPOT and perp at k = PERP, and one price-indexed
    state (``nova.core.tick_book``, same indices) used instead for market m while ``ticked[m]``: from the start
    when the plan knows m's tick, until a price off its grid moves that book to the sorted state (the engine
    does, with ``tick_book.to_sorted``). Readings are computed straight into the output buffer and compared with
    the row before; ``scratch`` serves the first row of a buffer: row 0 receives that candidate, row 1 holds
    the last reading kept before the buffer was drained.
    """

    def __init__(self, params: SpreadParams, capacity: int = 1024, ticks: tuple[float | None, ...] = (None, None)
                 ) -> None:
        self.params = params
        self.vector = params.vector()
        self.px, self.qty, self.n = new_books(2, capacity)
        # market m's book is price-indexed (nova.core.tick_book, book m of tq/ti/tf) while ticked[m] is 1
        self.ticks = ticks
        self.tq, self.ti, self.tf = new_tick_books(2, list(ticks))
        self.ticked = np.array([0 if t is None else 1 for t in ticks], dtype=np.int8)
        self.quotes, self.stamps = new_market_state()
        self.funding = np.full(1, np.nan)
        self.scratch = np.full((2, N_VALUES), np.nan)
        self.counters = np.zeros(N_COUNTERS, dtype=np.int64)
        self.counters[K_FIRST_KEY] = NO_KEY
        self.counters[K_NEXT_DATE] = NO_KEY
        self.counters[K_LAST_KEY] = NO_KEY
        self.heads = np.zeros(N_SEGMENTS, dtype=np.int64)  # next entry of each segment in the current window
        self.head_keys = np.zeros(N_SEGMENTS, dtype=np.int64)  # and its key (the loop keeps them current)
        self.book_keys = np.full((2, 2), NO_KEY, dtype=np.int64)

    def grow(self) -> None:
        """Double the book capacity (called when the loop stops with BOOK_FULL)."""
        self.px, self.qty = grow_books(self.px, self.qty, 2 * self.px.shape[2])


class OutputBuffer:
    """Readings as the loop writes them, row by row (``values[i]`` is one reading, columns VALUE_COLUMNS).

    Row-major because the loop then stores each reading as one contiguous run (column-major stores cost the
    loop ~60 ns more per reading, more than the spread kernel itself); columns are cut out when leaving.
    """

    def __init__(self, capacity: int) -> None:
        self.ts = np.empty(capacity, dtype=np.int64)
        self.values = np.empty((capacity, N_VALUES))
        self.entry = np.empty(capacity, dtype=np.int64)  # merged position of the entry that made the reading
        self.count = 0

    @property
    def capacity(self) -> int:
        return int(self.ts.shape[0])


class SampleBuffer:
    """Book snapshots on a time grid as the loop writes them: ``ts[i]`` is an instant, ``info[i, m]`` what it knew
    of market m's book then (I_* columns), ``levels[i, m]`` its top levels (bid prices, bid amounts, ask
    prices, ask amounts; NaN beyond the book's depth, and everywhere while it is not valid).

    Row-major, like OutputBuffer, so that each sample is one contiguous run for the loop to write.
    """

    def __init__(self, start_ns: int, step_ns: int, end_ns: int, levels: int, capacity: int,
                 markets: tuple[int, ...] = (SPOT, PERP)) -> None:
        self.grid = np.zeros(N_GRID, dtype=np.int64)
        self.grid[G_NEXT], self.grid[G_STEP], self.grid[G_END] = start_ns, step_ns, end_ns
        self.grid[G_MARKETS] = sum(1 << m for m in markets)
        self.ts = np.empty(capacity, dtype=np.int64)
        self.info = np.empty((capacity, 2, N_INFO), dtype=np.int64)
        self.levels = np.empty((capacity, 2, 4, levels))

    @classmethod
    def off(cls) -> SampleBuffer:
        """No grid: what a replay passes (its readings on, no instant ever due)."""
        buffer = cls(EXHAUSTED, 1, EXHAUSTED, 1, 0, ())
        buffer.grid[G_READINGS] = 1
        return buffer

    @property
    def count(self) -> int:
        return int(self.grid[G_COUNT])

    @property
    def due(self) -> bool:
        """Whether grid instants remain to be sampled."""
        return bool(self.grid[G_NEXT] < self.grid[G_END])

    def clear(self) -> None:
        """Drop the buffered rows (after the caller has taken them)."""
        self.grid[G_COUNT] = 0


@kernel(inline=True)
def _top(px: FloatArray, qty: FloatArray, n: IntArray, tq: FloatArray, ti: IntArray, tf: FloatArray,
         ticked: Int8Array, m: int, side: int) -> tuple[float, float]:
    """Market m's best level, from whichever book kind holds it."""
    if ticked[m]:
        return tick_best(tq, ti, tf, m, side)
    return _best(px, qty, n, m, side)


@kernel(inline=True)
def _depth_vwap(px: FloatArray, qty: FloatArray, n: IntArray, tq: FloatArray, ti: IntArray, tf: FloatArray,
                ticked: Int8Array, m: int, side: int, size: float) -> tuple[float, float]:
    if not size > 0.0:
        return np.nan, 0.0
    if ticked[m]:
        return tick_vwap(tq, ti, tf, m, side, size)
    return _vwap(px, qty, n, m, side, size)


@kernel(inline=True)
def _levels(px: FloatArray, qty: FloatArray, n: IntArray, tq: FloatArray, ti: IntArray, tf: FloatArray,
            ticked: Int8Array, m: int, side: int, out_px: FloatArray, out_qty: FloatArray) -> int:
    if ticked[m]:
        return tick_levels(tq, ti, tf, m, side, out_px, out_qty)
    return book_levels(px, qty, n, m, side, out_px, out_qty)


@kernel(inline=True)
def _reading(px: FloatArray, qty: FloatArray, n: IntArray, tq: FloatArray, ti: IntArray, tf: FloatArray,
             ticked: Int8Array, quotes: FloatArray, stamps: IntArray, funding_rate: float, params: FloatArray,
             out: FloatArray, row: int) -> None:
    """nova.core.spread's reading of both books (``write_reading``, as ``compute_reading`` does for sorted ones)."""
    size = params[P_SIZE]
    write_reading(_top(px, qty, n, tq, ti, tf, ticked, SPOT, BID), _top(px, qty, n, tq, ti, tf, ticked, SPOT, ASK),
                  _top(px, qty, n, tq, ti, tf, ticked, PERP, BID), _top(px, qty, n, tq, ti, tf, ticked, PERP, ASK),
                  _depth_vwap(px, qty, n, tq, ti, tf, ticked, SPOT, ASK, size),
                  _depth_vwap(px, qty, n, tq, ti, tf, ticked, PERP, BID, size),
                  _depth_vwap(px, qty, n, tq, ti, tf, ticked, SPOT, BID, size),
                  _depth_vwap(px, qty, n, tq, ti, tf, ticked, PERP, ASK, size),
                  quotes, stamps, funding_rate, params, out, row)


@kernel(inline=True)
def _sample_until(px: FloatArray, qty: FloatArray, n: IntArray, tq: FloatArray, ti: IntArray, tf: FloatArray,
                  ticked: Int8Array, stamps: IntArray, book_keys: IntArray, grid: IntArray, samp_ts: IntArray,
                  samp_info: IntArray, samp_levels: FloatArray, limit: int) -> bool:
    """Sample both books at every grid instant below ``limit`` (and the grid's end); False when the buffer
    filled first (``grid`` then says where to resume)."""
    t = grid[G_NEXT]
    stop = min(limit, grid[G_END])
    count = grid[G_COUNT]
    cap = samp_ts.shape[0]
    depth = samp_levels.shape[3]
    markets = grid[G_MARKETS]
    while t < stop and count < cap:
        samp_ts[count] = t
        for m in range(2):
            if not (markets >> m) & 1:
                continue
            valid = stamps[m, S_VALID] != 0
            samp_info[count, m, I_VALID] = 1 if valid else 0
            samp_info[count, m, I_KEY] = book_keys[m, B_APPLIED]
            samp_info[count, m, I_LAST_ID] = stamps[m, S_DEPTH_ID]
            samp_info[count, m, I_SNAPSHOT_KEY] = book_keys[m, B_SNAPSHOT]
            for side in (BID, ASK):
                out_px = samp_levels[count, m, 2 * side]
                out_qty = samp_levels[count, m, 2 * side + 1]
                written = _levels(px, qty, n, tq, ti, tf, ticked, m, side, out_px, out_qty) if valid else 0
                for i in range(written, depth):
                    out_px[i] = np.nan
                    out_qty[i] = np.nan
        count += 1
        t += grid[G_STEP]
    grid[G_NEXT] = t
    grid[G_COUNT] = count
    return t >= stop


@kernel()
def sample_until(px: FloatArray, qty: FloatArray, n: IntArray, tq: FloatArray, ti: IntArray, tf: FloatArray,
                 ticked: Int8Array, stamps: IntArray, book_keys: IntArray, grid: IntArray, samp_ts: IntArray,
                 samp_info: IntArray, samp_levels: FloatArray, limit: int) -> bool:
    """``_sample_until`` for Python: the instants after the last entry (the data ended before the grid did)."""
    return _sample_until(px, qty, n, tq, ti, tf, ticked, stamps, book_keys, grid, samp_ts, samp_info, samp_levels,
                         limit)


@kernel(inline=True)
def _head_key(keys: IntArray, bounds: IntArray, heads: IntArray, s: int) -> int:
    g = bounds[s] + heads[s]
    return keys[g] if g < bounds[s + 1] else EXHAUSTED


@kernel(inline=True)
def _differs(values: FloatArray, row: int, other: int, c: int) -> bool:
    a, b = values[row, c], values[other, c]
    return a != b and not (a != a and b != b)  # NaN equals NaN


@kernel(inline=True)
def _kept_differs(values: FloatArray, row: int, other: int, size: float) -> bool:
    """Whether reading ``row`` shows something reading ``other`` (the last kept one) did not: a top of book,
    validity, or with a size, a size-aware price."""
    if not same_top(values, row, other) or values[row, C_VALID] != values[other, C_VALID]:
        return True
    if size > 0.0:
        for c in range(C_SPOT_ASK_VWAP, C_PERP_ASK_VWAP + 1):
            if _differs(values, row, other, c):
                return True
        return _differs(values, row, other, C_OPEN_SIZE)
    return False


@kernel()
def run_window(px: FloatArray, qty: FloatArray, n: IntArray, tq: FloatArray, ti: IntArray, tf: FloatArray,
               ticked: Int8Array, quotes: FloatArray, stamps: IntArray,
               funding: FloatArray, scratch: FloatArray, params: FloatArray, counters: IntArray, heads: IntArray,
               head_keys: IntArray, keys: IntArray, bounds: IntArray,
               spot_sides: npt.NDArray[np.int8], spot_prices: FloatArray, spot_amounts: FloatArray,
               perp_sides: npt.NDArray[np.int8], perp_prices: FloatArray, perp_amounts: FloatArray,
               msg_lo: IntArray, msg_hi: IntArray, msg_last_id: IntArray, msg_snapshot: npt.NDArray[np.bool_],
               msg_applied: npt.NDArray[np.bool_],
               bbo_id: IntArray, bbo_quote: FloatArray, funding_rate: FloatArray, actions: npt.NDArray[np.int8],
               book_keys: IntArray, grid: IntArray, samp_ts: IntArray, samp_info: IntArray, samp_levels: FloatArray,
               start: int, end: int, position: int,
               out_ts: IntArray, out_values: FloatArray, out_entry: IntArray, out_count: int) -> tuple[int, int, int]:
    """Process the window's entries from ``heads`` on; returns (status, merged position, readings in ``out``).

    ``keys`` holds the time keys of all segments back to back (``bounds[s]:bounds[s+1]`` is segment s); the
    per-type arrays are indexed from the start of their first segment: book messages (``msg_*``, whose rows are
    ``{spot|perp}_{sides,prices,amounts}[msg_lo:msg_hi]`` of their market, stale rows already masked with a
    negative side) from ``bounds[SEG_BOOK_SPOT]``, bookTickers from ``bounds[SEG_BBO_SPOT]``, funding from
    ``bounds[SEG_FUNDING]``, ledger actions from ``bounds[SEG_EVENTS_SPOT]``. ``position`` counts merged
    entries of the window (it is what ``out_entry`` records, so a caller can interleave readings with the raw
    entries). ``grid`` and ``samp_*`` are a ``SampleBuffer``'s (``SampleBuffer.off()`` for a replay).
    """
    size = params[P_SIZE]
    cap = out_ts.shape[0]
    readings = grid[G_READINGS] != 0
    next_sample = grid[G_NEXT]
    for t in range(N_SEGMENTS):
        head_keys[t] = _head_key(keys, bounds, heads, t)
    while True:
        s = 0  # the next entry: smallest key, then smallest segment (strict < keeps the first of equals)
        key = head_keys[0]
        for t in range(1, N_SEGMENTS):
            if head_keys[t] < key:
                s, key = t, head_keys[t]
        if key == EXHAUSTED:
            _park_last(out_values, out_count, scratch)
            return DONE, position, out_count
        g = bounds[s] + heads[s]
        if key > next_sample:  # the books are as at the grid's instants below key: sample them first
            done = _sample_until(px, qty, n, tq, ti, tf, ticked, stamps, book_keys, grid, samp_ts, samp_info,
                                 samp_levels, key)
            next_sample = grid[G_NEXT]
            if not done:
                _park_last(out_values, out_count, scratch)
                return SAMPLES_FULL, position, out_count
            if next_sample >= grid[G_END]:
                next_sample = EXHAUSTED
        if key >= end:
            _park_last(out_values, out_count, scratch)
            return PAST_END, position, out_count
        in_window = key >= start
        if in_window and out_count == cap:
            _park_last(out_values, out_count, scratch)
            return OUT_FULL, position, out_count
        moved = False  # whether a top of book or a validity may have changed
        if s <= SEG_BOOK_PERP:
            m = s - SEG_BOOK_SPOT
            j = g - bounds[SEG_BOOK_SPOT]
            lo, hi = msg_lo[j], msg_hi[j]
            synced = counters[K_SYNCED_SPOT + m] != 0
            snapshot = msg_snapshot[j]
            if msg_applied[j] and (snapshot or synced):  # the rebuild rule (nova.core.book.apply_message)
                if ticked[m]:
                    if _apply_ticked(tq, ti, tf, m, snapshot, spot_sides, spot_prices, spot_amounts, perp_sides,
                                     perp_prices, perp_amounts, lo, hi):
                        _park_last(out_values, out_count, scratch)
                        return TICKS_STOP, position, out_count
                elif _apply_market(px, qty, n, m, snapshot, spot_sides, spot_prices, spot_amounts, perp_sides,
                                   perp_prices, perp_amounts, lo, hi):
                    _park_last(out_values, out_count, scratch)
                    return BOOK_FULL, position, out_count
                if snapshot:
                    counters[K_SYNCED_SPOT + m] = 1
                    stamps[m, S_VALID] = 1
                    book_keys[m, B_SNAPSHOT] = key
                moved = True
            if moved:
                stamps[m, S_DEPTH_ID] = msg_last_id[j]
                stamps[m, S_LAST_NS] = key
                book_keys[m, B_APPLIED] = key
            counters[K_ROWS_SEEN] += hi - lo
            if in_window:
                counters[K_BOOK_MESSAGES] += 1
                counters[K_BOOK_ROWS] += hi - lo
        elif s <= SEG_BBO_PERP:
            m = s - SEG_BBO_SPOT
            j = g - bounds[SEG_BBO_SPOT]
            for c in range(4):
                quotes[m, c] = bbo_quote[j, c]
            stamps[m, S_BBO_ID] = bbo_id[j]
            stamps[m, S_LAST_NS] = key
            moved = True
            if in_window:
                counters[K_BBO] += 1
        elif s == SEG_FUNDING:
            funding[0] = funding_rate[g - bounds[SEG_FUNDING]]
            if in_window:
                counters[K_FUNDING] += 1
        elif s <= SEG_TRADES_PERP:
            if in_window:
                counters[K_TRADES] += 1
        else:
            m = s - SEG_EVENTS_SPOT
            action = actions[g - bounds[SEG_EVENTS_SPOT]]
            if action & ACT_INVALIDATE and stamps[m, S_VALID] != 0:
                stamps[m, S_VALID] = 0
                moved = True
            if action & ACT_CLEAR_QUOTE and stamps[m, S_BBO_ID] != NO_ID:
                for c in range(4):
                    quotes[m, c] = np.nan
                stamps[m, S_BBO_ID] = NO_ID
                moved = True
            if action & ACT_CLEAR_FUNDING and funding[0] == funding[0]:
                funding[0] = np.nan
                moved = True
            if in_window:
                counters[K_LEDGER] += 1
                if action & ACT_GAP:
                    counters[K_GAPS] += 1
                if action & ACT_DISCONNECT:
                    counters[K_DISCONNECTS] += 1
        heads[s] += 1
        head_keys[s] = _head_key(keys, bounds, heads, s)
        position += 1
        if not in_window:
            continue
        counters[K_ENTRIES] += 1
        if counters[K_FIRST_KEY] == NO_KEY:
            counters[K_FIRST_KEY] = key
        # the first entry of the window, and of each UTC date in it, always yields a reading: the state the
        # series (and each date's partition of it) starts from, so a date reads the same alone or in a range
        force = key >= counters[K_NEXT_DATE]
        if force:
            counters[K_NEXT_DATE] = (key // DAY_NS + 1) * DAY_NS
        counters[K_LAST_KEY] = key
        if not (moved or force) or not readings:
            continue
        # the candidate goes straight into the next output row, compared with the row before it; only the
        # first row of a buffer is computed in scratch, against the last kept reading parked in scratch[1]
        kept = counters[K_READINGS] > 0
        if out_count > 0:
            _reading(px, qty, n, tq, ti, tf, ticked, quotes, stamps, funding[0], params, out_values, out_count)
            if not force and not _kept_differs(out_values, out_count, out_count - 1, size):
                continue
        else:
            _reading(px, qty, n, tq, ti, tf, ticked, quotes, stamps, funding[0], params, scratch, 0)
            if kept and not force and not _kept_differs(scratch, 0, 1, size):
                continue
            for c in range(N_VALUES):
                out_values[0, c] = scratch[0, c]
        out_ts[out_count] = key
        out_entry[out_count] = position - 1
        out_count += 1
        counters[K_READINGS] += 1


@kernel(inline=True)
def _park_last(out_values: FloatArray, out_count: int, scratch: FloatArray) -> None:
    """Keep the last reading of a full or finished buffer in scratch[1], to compare the next one with."""
    if out_count > 0:
        for c in range(N_VALUES):
            scratch[1, c] = out_values[out_count - 1, c]


@kernel(inline=True)
def _apply_market(px: FloatArray, qty: FloatArray, n: IntArray, m: int, snapshot: bool,
                  spot_sides: npt.NDArray[np.int8], spot_prices: FloatArray, spot_amounts: FloatArray,
                  perp_sides: npt.NDArray[np.int8], perp_prices: FloatArray, perp_amounts: FloatArray, lo: int,
                  hi: int) -> bool:
    """One message to market m's book by the rebuild rule; True when a side ran out of room."""
    if m == SPOT:
        return apply_message(px, qty, n, SPOT, snapshot, spot_sides, spot_prices, spot_amounts, lo, hi) < hi
    return apply_message(px, qty, n, PERP, snapshot, perp_sides, perp_prices, perp_amounts, lo, hi) < hi


@kernel(inline=True)
def _apply_ticked(tq: FloatArray, ti: IntArray, tf: FloatArray, m: int, snapshot: bool,
                  spot_sides: npt.NDArray[np.int8], spot_prices: FloatArray, spot_amounts: FloatArray,
                  perp_sides: npt.NDArray[np.int8], perp_prices: FloatArray, perp_amounts: FloatArray, lo: int,
                  hi: int) -> bool:
    """``_apply_market`` for a price-indexed book; True when it stopped (``ti[m, T_STOP]`` says why)."""
    ti[m, T_STOP] = 0
    if m == SPOT:
        return tick_apply_message(tq, ti, tf, SPOT, snapshot, spot_sides, spot_prices, spot_amounts, lo, hi) < hi
    return tick_apply_message(tq, ti, tf, PERP, snapshot, perp_sides, perp_prices, perp_amounts, lo, hi) < hi


def kernels_cached() -> bool:
    """Whether this machine already holds the compiled replay loop for this code (numba's cache index for it
    exists and matches the source), so a caller can announce the first run's compilation instead of going
    silent for tens of seconds."""
    try:
        return bool(run_window._cache._cache_file._load_index())  # type: ignore[attr-defined]
    except Exception:
        return False
