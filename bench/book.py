"""Micro-benchmark of the shared core: book rebuild alone, and book rebuild plus a spread reading per message,
with the sorted book (nova.core.book) and with the price-indexed book replay uses when ticks are known
(nova.core.tick_book), on the same rows.

Why: replay must sustain >= 10 M book rows/s on one core with the spread logic (DESIGN §6). This isolates the
compute part (nova.core.book + nova.core.spread kernels) from reading Parquet. Two streams:
- synthetic (always): ~40 level changes per message, 90% within a few ticks of the top of a ~1000-level book,
  10% anywhere in it, ~10% deletions (plus the levels a moving mid crosses), perp twice as busy as spot;
- capture (``--capture FILES``): the depth messages of raw Binance captures, tiled to ``--rows``. Binance's diff
  stream touches the whole book (half the changes are >150 levels deep on ETHUSDT perp), so this is the
  harder and more honest figure for replay on real recordings.

The driver loops below are also the reference for how replay calls the kernels from compiled code: one
multi-book state with spot at k=0 and perp at k=1, bookTicker/ids in ``quotes``/``stamps``, ``book_apply``
once per message, a reading into a buffer row after each message, kept only when a top of book changed.
They are deliberately not ``cache=True``: numba would keep a stale copy of the nova kernels inside them after
nova/core/book.py or nova/core/spread.py changes. Rates are rows per wall-clock second (and per CPU second in the JSON,
which is steadier on a shared machine); numba compilation happens in the warm-up, outside every timing.

Usage: python bench/book.py [--rows 20000000] [--seed 1] [--size 0] [--capture ../shared/realdata/binance/*.gz]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import orjson
from numba import njit

from nova.core.book import ASK, BID, book_apply, book_clear, grow_books, new_books
from nova.core.spread import (
    N_VALUES,
    P_SIZE,
    PERP,
    S_DEPTH_ID,
    S_LAST_NS,
    S_VALID,
    SPOT,
    SpreadParams,
    compute_reading,
    new_market_state,
    same_top,
    write_reading,
)
from nova.core.tick_book import (
    STOP_OUTSIDE,
    T_NEED,
    T_STOP,
    new_tick_books,
    reframe,
    tick_apply,
    tick_best,
    tick_clear,
    tick_vwap,
)

TICK = 0.01
ROWS_PER_MESSAGE = 40
SNAPSHOT_LEVELS = 1000
NEAR_TOP_SHARE = 0.9
DELETE_SHARE = 0.1
BUFFER_ROWS = 1 << 14  # readings buffered before a (here simulated) flush to Parquet


GRID = 1 << 16  # price grid of the generator (in ticks); the book itself knows nothing of ticks
START_TICK = 300_000 - GRID // 2  # grid index g is price (START_TICK + g) * TICK, so the mid starts at 3000.00


@njit
def _simulate(levels: np.ndarray, mid: np.ndarray, market: np.ndarray, counts: np.ndarray, sides: np.ndarray,
              prices: np.ndarray, amounts: np.ndarray, bounds: np.ndarray, seed: int) -> int:
    """Emit messages' rows into (sides, prices, amounts) and their row ranges into bounds until the row arrays
    are full; returns the number of complete messages.

    A reference book on a tick grid (``levels[k, side, g]``, independent of nova.core.book) keeps the stream
    honest: when the mid moves, the levels it crosses are deleted (as the market would), so the book stays
    uncrossed at ~1000 levels a side and most changes hit its top, as on Binance.
    """
    np.random.seed(seed)
    out = 0
    for msg in range(market.shape[0]):
        k = market[msg]
        old = mid[k]
        new = min(max(old + np.random.randint(-2, 3), 2 * SNAPSHOT_LEVELS), GRID - 2 * SNAPSHOT_LEVELS)
        mid[k] = new
        for g in range(min(old, new), max(old, new) + 1):  # the mid swept over these ticks: clear them
            for side in (BID, ASK):
                crossed = g >= new if side == BID else g <= new
                if crossed and levels[k, side, g] > 0.0:
                    if out == sides.shape[0]:
                        return msg
                    levels[k, side, g] = 0.0
                    sides[out], prices[out], amounts[out] = side, (START_TICK + g) * TICK, 0.0
                    out += 1
        for _ in range(counts[msg]):
            if out == sides.shape[0]:
                return msg
            side = np.random.randint(0, 2)
            if np.random.random() < NEAR_TOP_SHARE:
                distance = np.random.geometric(0.25) - 1
            else:
                distance = np.random.randint(0, SNAPSHOT_LEVELS)
            g = new - 1 - distance if side == BID else new + 1 + distance
            amount = 0.0 if np.random.random() < DELETE_SHARE else round(np.random.lognormal(0.0, 1.5), 3) + 0.001
            levels[k, side, g] = amount
            sides[out], prices[out], amounts[out] = side, (START_TICK + g) * TICK, amount
            out += 1
        bounds[msg + 1] = out
    return market.shape[0]


def generate(rows: int, seed: int) -> dict[str, np.ndarray]:
    """A depth stream as replay would hold it in memory: per-row side/price/amount, per-message market/bounds.

    Each book starts from the snapshot of ``snapshot_books``; perp sends about two messages for each of spot's.
    """
    rng = np.random.default_rng(seed)
    n_msgs = max(1, rows // ROWS_PER_MESSAGE)
    market = (rng.random(n_msgs) < 2 / 3).astype(np.int64)  # PERP = 1, SPOT = 0
    counts = np.clip(rng.poisson(ROWS_PER_MESSAGE - 1, n_msgs), 1, None)
    levels = np.zeros((2, 2, GRID))
    mid = np.full(2, GRID // 2, dtype=np.int64)
    levels[:, BID, GRID // 2 - SNAPSHOT_LEVELS:GRID // 2] = 1.0
    levels[:, ASK, GRID // 2 + 1:GRID // 2 + 1 + SNAPSHOT_LEVELS] = 1.0
    sides = np.empty(rows, dtype=np.int8)
    prices = np.empty(rows)
    amounts = np.empty(rows)
    bounds = np.zeros(n_msgs + 1, dtype=np.int64)
    done = _simulate(levels, mid, market, counts, sides, prices, amounts, bounds, seed)
    end = int(bounds[done])
    prices = np.round(prices, 2)  # the floats a decimal text parses to, as recorded (on the 0.01 grid exactly)
    return {"sides": sides[:end], "prices": prices[:end], "amounts": amounts[:end], "market": market[:done],
            "clear": np.zeros(done, dtype=np.bool_), "bounds": bounds[: done + 1]}


def load_capture(paths: list[Path], rows: int) -> dict[str, np.ndarray]:
    """Depth rows of raw Binance captures (``<recv_ns> <json>`` lines; spot_* is k=0, usdm_* k=1), merged by
    receive time and tiled to ``rows``: the real mix of depths, inserts and deletes, which is far less
    top-heavy than the synthetic stream (Binance's diff stream touches the whole book).

    A REST snapshot line becomes a message that clears its book first (``clear``); ids are not checked, the
    bench only needs the real shape of the work.
    """
    events: list[tuple[int, int, bool, list[int], list[float], list[float]]] = []
    for path in paths:
        k = SPOT if path.name.startswith("spot") else PERP
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            for line in fh:
                ts, body = line.split(b" ", 1)
                obj = orjson.loads(body)
                data = obj.get("data", obj)
                snapshot = "lastUpdateId" in data and "bids" in data
                if not snapshot and data.get("e") != "depthUpdate":
                    continue
                bids, asks = (data["bids"], data["asks"]) if snapshot else (data["b"], data["a"])
                sides = [BID] * len(bids) + [ASK] * len(asks)
                levels = bids + asks
                events.append((int(ts), k, snapshot, sides, [float(p) for p, _ in levels],
                               [float(q) for _, q in levels]))
    if not events:
        raise SystemExit(f"no depth messages in {', '.join(map(str, paths))}")
    events.sort(key=lambda e: e[0])
    counts = np.array([len(e[3]) for e in events], dtype=np.int64)
    tiles = max(1, -(-rows // int(counts.sum())))
    market = np.tile(np.array([e[1] for e in events], dtype=np.int64), tiles)
    clear = np.tile(np.array([e[2] for e in events]), tiles)
    bounds = np.zeros(len(market) + 1, dtype=np.int64)
    np.cumsum(np.tile(counts, tiles), out=bounds[1:])
    return {"sides": np.tile(np.concatenate([np.array(e[3], dtype=np.int8) for e in events]), tiles),
            "prices": np.tile(np.concatenate([np.array(e[4]) for e in events]), tiles),
            "amounts": np.tile(np.concatenate([np.array(e[5]) for e in events]), tiles),
            "market": market, "clear": clear, "bounds": bounds}


def snapshot_books(cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both books loaded with SNAPSHOT_LEVELS per side around the starting mid."""
    px, qty, n = new_books(2, max(cap, SNAPSHOT_LEVELS))
    levels = np.arange(SNAPSHOT_LEVELS)
    for k in (SPOT, PERP):
        sides = np.repeat(np.array([BID, ASK], dtype=np.int8), SNAPSHOT_LEVELS)
        prices = np.round(np.concatenate([(300_000 - 1 - levels) * TICK, (300_000 + 1 + levels) * TICK]), 2)
        amounts = np.ones(2 * SNAPSHOT_LEVELS)
        book_clear(n, k)
        assert book_apply(px, qty, n, k, sides, prices, amounts, 0) == len(sides)
    return px, qty, n


@njit(nogil=True)
def apply_messages(px: np.ndarray, qty: np.ndarray, n: np.ndarray, sides: np.ndarray, prices: np.ndarray,
                   amounts: np.ndarray, market: np.ndarray, clear: np.ndarray, bounds: np.ndarray, first: int) -> int:
    """Books only. Returns the message to resume at (len(market) when done): Python grows the books there."""
    for msg in range(first, market.shape[0]):
        lo, hi = bounds[msg], bounds[msg + 1]
        k = market[msg]
        if clear[msg]:
            book_clear(n, k)
        if book_apply(px, qty, n, k, sides[lo:hi], prices[lo:hi], amounts[lo:hi], 0) < hi - lo:
            return msg  # the rows before the failing one are applied; applying them again is harmless
    return market.shape[0]


@njit(nogil=True)
def apply_and_read(px: np.ndarray, qty: np.ndarray, n: np.ndarray, sides: np.ndarray, prices: np.ndarray,
                   amounts: np.ndarray, market: np.ndarray, clear: np.ndarray, bounds: np.ndarray,
                   quotes: np.ndarray, stamps: np.ndarray, params: np.ndarray, out: np.ndarray, ts_out: np.ndarray,
                   first: int, kept: int) -> tuple[int, int]:
    """Books plus one spread reading per message, kept only when a top of book changed (replay's pattern).

    Returns (message to resume at, readings kept so far); ``out`` is used as a ring buffer that a real caller
    would flush to Parquet when full.
    """
    funding_rate = 0.0001
    for msg in range(first, market.shape[0]):
        lo, hi = bounds[msg], bounds[msg + 1]
        k = market[msg]
        if clear[msg]:
            book_clear(n, k)
            stamps[k, S_VALID] = 1
        if book_apply(px, qty, n, k, sides[lo:hi], prices[lo:hi], amounts[lo:hi], 0) < hi - lo:
            return msg, kept
        ts = 1_700_000_000_000_000_000 + msg * 1_000_000  # one message per ms
        stamps[k, S_DEPTH_ID] = msg
        stamps[k, S_LAST_NS] = ts
        row = kept % out.shape[0]
        compute_reading(px, qty, n, SPOT, px, qty, n, PERP, quotes, stamps, funding_rate, params, out, row)
        if kept == 0 or not same_top(out, row, (kept - 1) % out.shape[0]):
            ts_out[row] = ts
            kept += 1
    return market.shape[0], kept


@njit(nogil=True)
def apply_messages_ticks(tq: np.ndarray, ti: np.ndarray, tf: np.ndarray, sides: np.ndarray, prices: np.ndarray,
                         amounts: np.ndarray, market: np.ndarray, clear: np.ndarray, bounds: np.ndarray,
                         first: int) -> int:
    """``apply_messages`` on price-indexed books; returns the message to resume at after a stop."""
    for msg in range(first, market.shape[0]):
        lo, hi = bounds[msg], bounds[msg + 1]
        k = market[msg]
        if clear[msg]:
            tick_clear(tq, ti, k)
        if tick_apply(tq, ti, tf, k, sides[lo:hi], prices[lo:hi], amounts[lo:hi], 0) < hi - lo:
            return msg
    return market.shape[0]


@njit(nogil=True, _nrt=False)  # type: ignore[call-overload]  # as nova's kernels: inlined helpers without NRT
def tick_reading(tq: np.ndarray, ti: np.ndarray, tf: np.ndarray, quotes: np.ndarray, stamps: np.ndarray,
                 funding_rate: float, params: np.ndarray, out: np.ndarray, row: int) -> None:
    """``compute_reading`` for price-indexed books, as replay's loop makes it (``write_reading``)."""
    size = params[P_SIZE]
    sized = size > 0.0
    none = (np.nan, 0.0)
    write_reading(tick_best(tq, ti, tf, SPOT, BID), tick_best(tq, ti, tf, SPOT, ASK),
                  tick_best(tq, ti, tf, PERP, BID), tick_best(tq, ti, tf, PERP, ASK),
                  tick_vwap(tq, ti, tf, SPOT, ASK, size) if sized else none,
                  tick_vwap(tq, ti, tf, PERP, BID, size) if sized else none,
                  tick_vwap(tq, ti, tf, SPOT, BID, size) if sized else none,
                  tick_vwap(tq, ti, tf, PERP, ASK, size) if sized else none,
                  quotes, stamps, funding_rate, params, out, row)


@njit(nogil=True)
def apply_and_read_ticks(tq: np.ndarray, ti: np.ndarray, tf: np.ndarray, sides: np.ndarray, prices: np.ndarray,
                         amounts: np.ndarray, market: np.ndarray, clear: np.ndarray, bounds: np.ndarray,
                         quotes: np.ndarray, stamps: np.ndarray, params: np.ndarray, out: np.ndarray,
                         ts_out: np.ndarray, first: int, kept: int) -> tuple[int, int]:
    """``apply_and_read`` on price-indexed books (the reading through ``write_reading``, as replay's loop)."""
    funding_rate = 0.0001
    for msg in range(first, market.shape[0]):
        lo, hi = bounds[msg], bounds[msg + 1]
        k = market[msg]
        if clear[msg]:
            tick_clear(tq, ti, k)
            stamps[k, S_VALID] = 1
        if tick_apply(tq, ti, tf, k, sides[lo:hi], prices[lo:hi], amounts[lo:hi], 0) < hi - lo:
            return msg, kept
        ts = 1_700_000_000_000_000_000 + msg * 1_000_000
        stamps[k, S_DEPTH_ID] = msg
        stamps[k, S_LAST_NS] = ts
        row = kept % out.shape[0]
        tick_reading(tq, ti, tf, quotes, stamps, funding_rate, params, out, row)
        if kept == 0 or not same_top(out, row, (kept - 1) % out.shape[0]):
            ts_out[row] = ts
            kept += 1
    return market.shape[0], kept


def tick_state() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both price-indexed books loaded with the same snapshot as ``snapshot_books``."""
    tq, ti, tf = new_tick_books(2, [TICK, TICK])
    levels = np.arange(SNAPSHOT_LEVELS)
    for k in (SPOT, PERP):
        sides = np.repeat(np.array([BID, ASK], dtype=np.int8), SNAPSHOT_LEVELS)
        prices = np.round(np.concatenate([(300_000 - 1 - levels) * TICK, (300_000 + 1 + levels) * TICK]), 2)
        done = tick_apply(tq, ti, tf, k, sides, prices, np.ones(2 * SNAPSHOT_LEVELS), 0)
        while done < len(sides):
            tq = _resume(tq, ti, k)
            done = tick_apply(tq, ti, tf, k, sides, prices, np.ones(2 * SNAPSHOT_LEVELS), done)
    return tq, ti, tf


def _resume(tq: np.ndarray, ti: np.ndarray, k: int) -> np.ndarray:
    """The window grown or moved after a stop; a price off the grid ends the benchmark (it would fall back)."""
    if ti[k, T_STOP] != STOP_OUTSIDE:
        raise SystemExit("a price off the 0.01 grid: this stream cannot be price-indexed")
    grown = reframe(tq, ti, k, int(ti[k, T_NEED]))
    if grown is None:
        raise SystemExit("a book wider than the price-indexed window may grow")
    ti[k, T_STOP] = 0
    return grown


def _stopped(ti: np.ndarray) -> int:
    return 0 if ti[0, T_STOP] else 1


def run_tick_books(stream: dict[str, np.ndarray]) -> tuple[float, float]:
    tq, ti, tf = tick_state()
    args = stream_args(stream)
    wall, cpu = time.perf_counter(), time.process_time()
    msg = apply_messages_ticks(tq, ti, tf, *args, 0)
    while msg < len(stream["market"]):
        tq = _resume(tq, ti, _stopped(ti))
        msg = apply_messages_ticks(tq, ti, tf, *args, msg)
    return time.perf_counter() - wall, time.process_time() - cpu


def run_tick_books_and_spread(stream: dict[str, np.ndarray], params: SpreadParams) -> tuple[float, float, int]:
    tq, ti, tf = tick_state()
    quotes, stamps = new_market_state()
    stamps[:, S_VALID] = 1
    out = np.empty((BUFFER_ROWS, N_VALUES))
    ts_out = np.empty(BUFFER_ROWS, dtype=np.int64)
    vector = params.vector()
    args = stream_args(stream)
    wall, cpu = time.perf_counter(), time.process_time()
    msg, kept = apply_and_read_ticks(tq, ti, tf, *args, quotes, stamps, vector, out, ts_out, 0, 0)
    while msg < len(stream["market"]):
        tq = _resume(tq, ti, _stopped(ti))
        msg, kept = apply_and_read_ticks(tq, ti, tf, *args, quotes, stamps, vector, out, ts_out, msg, kept)
    return time.perf_counter() - wall, time.process_time() - cpu, kept


def stream_args(stream: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return stream["sides"], stream["prices"], stream["amounts"], stream["market"], stream["clear"], stream["bounds"]


def run_books(stream: dict[str, np.ndarray], cap: int) -> tuple[float, float]:
    """(wall s, CPU s) to apply the whole stream, growing the books whenever a side fills up."""
    px, qty, n = snapshot_books(cap)
    args = stream_args(stream)
    wall, cpu = time.perf_counter(), time.process_time()
    msg = apply_messages(px, qty, n, *args, 0)
    while msg < len(stream["market"]):
        px, qty = grow_books(px, qty, 2 * px.shape[2])
        msg = apply_messages(px, qty, n, *args, msg)
    return time.perf_counter() - wall, time.process_time() - cpu


def run_books_and_spread(stream: dict[str, np.ndarray], cap: int, params: SpreadParams) -> tuple[float, float, int]:
    """(wall s, CPU s, readings kept) for the books plus a reading after every message."""
    px, qty, n = snapshot_books(cap)
    quotes, stamps = new_market_state()
    stamps[:, S_VALID] = 1
    out = np.empty((BUFFER_ROWS, N_VALUES))
    ts_out = np.empty(BUFFER_ROWS, dtype=np.int64)
    vector = params.vector()
    args = stream_args(stream)
    wall, cpu = time.perf_counter(), time.process_time()
    msg, kept = apply_and_read(px, qty, n, *args, quotes, stamps, vector, out, ts_out, 0, 0)
    while msg < len(stream["market"]):
        px, qty = grow_books(px, qty, 2 * px.shape[2])
        msg, kept = apply_and_read(px, qty, n, *args, quotes, stamps, vector, out, ts_out, msg, kept)
    return time.perf_counter() - wall, time.process_time() - cpu, kept


def warm_up(params: SpreadParams) -> None:
    """Compile (or load from cache) every kernel with the benchmark's types, outside the timings."""
    small = generate(20_000, seed=0)
    run_books(small, 4)
    run_books_and_spread(small, 4, params)
    run_tick_books(small)
    run_tick_books_and_spread(small, params)


def measure(name: str, stream: dict[str, np.ndarray], params: SpreadParams, repeat: int) -> dict[str, float]:
    rows, messages = len(stream["sides"]), len(stream["market"])
    books = [run_books(stream, 4096) for _ in range(repeat)]
    spread = [run_books_and_spread(stream, 4096, params) for _ in range(repeat)]
    books_s, books_cpu = min(b[0] for b in books), min(b[1] for b in books)
    spread_s, spread_cpu, kept = min(s[0] for s in spread), min(s[1] for s in spread), spread[0][2]
    ticks = [run_tick_books(stream) for _ in range(repeat)]
    tick_spread = [run_tick_books_and_spread(stream, params) for _ in range(repeat)]
    ticks_s, ticks_cpu = min(b[0] for b in ticks), min(b[1] for b in ticks)
    tick_spread_s, tick_spread_cpu = min(s[0] for s in tick_spread), min(s[1] for s in tick_spread)
    if tick_spread[0][2] != kept:
        raise SystemExit(f"the price-indexed books kept {tick_spread[0][2]:,} readings, the sorted ones {kept:,}")
    print(f"[{name}] {rows:,} rows in {messages:,} messages")
    print(f"  sorted book_apply only:          {rows / books_s / 1e6:7.1f} M rows/s  ({books_s:.3f} s)")
    print(f"  sorted books + compute_reading:  {rows / spread_s / 1e6:7.1f} M rows/s  ({spread_s:.3f} s; "
          f"{messages / spread_s / 1e6:.2f} M readings/s, {kept:,} kept with a changed top)")
    print(f"  price-indexed tick_apply only:   {rows / ticks_s / 1e6:7.1f} M rows/s  ({ticks_s:.3f} s; "
          f"{books_s / ticks_s:.1f}x the sorted book)")
    print(f"  price-indexed books + reading:   {rows / tick_spread_s / 1e6:7.1f} M rows/s  ({tick_spread_s:.3f} s; "
          f"{spread_s / tick_spread_s:.1f}x the sorted book)")
    return {f"{name}_rows": rows, f"{name}_messages": messages,
            f"{name}_tick_book_rows_per_s": round(rows / ticks_s),
            f"{name}_tick_book_spread_rows_per_s": round(rows / tick_spread_s),
            f"{name}_tick_book_rows_per_cpu_s": round(rows / ticks_cpu),
            f"{name}_tick_book_spread_rows_per_cpu_s": round(rows / tick_spread_cpu),
            f"{name}_book_rows_per_s": round(rows / books_s),
            f"{name}_book_spread_rows_per_s": round(rows / spread_s),
            f"{name}_book_rows_per_cpu_s": round(rows / books_cpu),
            f"{name}_book_spread_rows_per_cpu_s": round(rows / spread_cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", type=float, default=0.0, help="size-aware spread columns for this size")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--capture", type=Path, nargs="*", default=[],
                        help="also time raw Binance captures (spot_*/usdm_* files), tiled to --rows")
    args = parser.parse_args()
    params = SpreadParams(size=args.size)

    t0 = time.perf_counter()
    warm_up(params)
    print(f"warm-up (compile or cache load): {time.perf_counter() - t0:.2f} s")
    figures: dict[str, float | str] = {"bench": "book", "size": args.size, "target_rows_per_s": 10_000_000}
    figures |= measure("synthetic", generate(args.rows, args.seed), params, args.repeat)
    if args.capture:
        figures |= measure("capture", load_capture(args.capture, args.rows), params, args.repeat)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
