"""The replay pipeline: plan -> stream readers -> windows (on a reader thread) -> compiled loop -> chunks.

Every consumer (the CLI, the Python API, the benchmark) drives the same ``Engine.chunks``; pacing, output and
statistics sit on top of the chunks, so the readings are the same at every speed and through every door.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

import numpy as np

from nova.core.markets import MARKETS, Market, Symbol
from nova.core.spread import SpreadParams
from nova.core.tick_book import STOP_NONE, STOP_OUTSIDE, T_NEED, T_STOP, reframe, stop_reason, to_sorted
from replay.kernel import (
    BOOK_FULL,
    DONE,
    K_LAST_KEY,
    OUT_FULL,
    PAST_END,
    SAMPLES_FULL,
    SEGMENTS,
    TICKS_STOP,
    OutputBuffer,
    ReplayState,
    SampleBuffer,
    run_window,
    sample_until,
)
from replay.merge import Prefetch, Window, windows
from replay.plan import Planner, ReplaySource, StreamPlan
from replay.reader import COLUMNS, StreamReader, needed_columns

OUTPUT_ROWS = 1 << 15  # readings per chunk: big enough to amortise Python, small enough to pace smoothly
BOOKS = ("auto", "sorted")
"""Book kinds a replay can be asked for: price-indexed where the tick size is known (nova.core.tick_book), or
the sorted book everywhere (nova.core.book). Both give the same readings, bit for bit."""


@dataclass(frozen=True)
class ReplayRange:
    """What to replay: a symbol and a half-open time range [start_ns, end_ns) on one of the two clocks."""

    symbol: Symbol
    start_ns: int
    end_ns: int
    clock: str = "recv"  # "recv" (ts_recv, the order our machine saw) or "event" (exchange time)

    @property
    def event_clock(self) -> bool:
        return self.clock == "event"


@dataclass
class Chunk:
    """Readings the loop produced, in order, and how far the replay got.

    ``values[i]`` is reading i (columns VALUE_COLUMNS). The arrays are views of the engine's output buffer,
    valid until the next chunk is asked for: a consumer that keeps readings copies them (as Arrow conversion
    does anyway). ``entry`` is the merged position
    (within ``window``) of the entry after which each reading was taken; ``positions`` is the range of merged
    positions this chunk covers, so raw events can be interleaved with the readings.
    """

    ts: np.ndarray
    values: np.ndarray
    entry: np.ndarray
    window: Window
    positions: tuple[int, int]
    data_ns: int  # time key of the last entry processed (the replay's data clock)

    def __len__(self) -> int:
        return int(self.ts.shape[0])


SampleSink = Callable[[SampleBuffer], None]
"""Takes the rows of a full (or, at the end, the last) sample buffer; the engine clears it afterwards."""


def format_key(ns: int) -> str:
    """A time key as UTC text for a note (seconds are enough to find the place)."""
    if ns < 0:
        return "the start"
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Engine:
    """One pass over a range. Build it (the plan is made and every file's footer checked right away, so bad
    input fails before anything runs), then iterate ``chunks()`` once.

    With ``samples`` (and ``on_samples``, which takes each full buffer), the same pass samples the books on the
    buffer's grid (replay.snapshots); ``markets`` leaves the other market's streams unread. ``books`` is one of
    BOOKS; ``book_note`` says (one line) which market could not be price-indexed and why, None when all were.
    """

    def __init__(self, dataset: ReplaySource, span: ReplayRange, params: SpreadParams, skip_bad: bool = False,
                 raw: bool = False, prefetch: bool = True, output_rows: int = OUTPUT_ROWS,
                 samples: SampleBuffer | None = None, on_samples: SampleSink | None = None,
                 markets: tuple[Market, ...] = MARKETS, books: str = "auto") -> None:
        self.dataset = dataset
        self.span = span
        self.params = params
        self.skip_bad = skip_bad
        self.raw = raw
        self.prefetch = prefetch
        columns = {t: needed_columns(t, span.event_clock) for t in COLUMNS}
        planner = Planner(dataset, span.symbol, span.start_ns, span.end_ns, span.event_clock, columns, skip_bad)
        self.plans: dict[tuple[str, Market], StreamPlan] = planner.plan()
        for (_, market), plan in self.plans.items():
            if market not in markets:
                plan.parts.clear()
        self.planner = planner
        self.warmup_ns = planner.warmup_ns
        if books == "sorted":
            ticks: tuple[float | None, float | None] = (None, None)
            self._fallbacks: list[str] = []
        else:
            ticks, self._fallbacks = planner.ticks(markets)
        self.state = ReplayState(params, ticks=ticks)
        self._out = OutputBuffer(output_rows)
        self.samples = samples if samples is not None else SampleBuffer.off()
        self._on_samples = on_samples

    @property
    def book_note(self) -> str | None:
        if not self._fallbacks:
            return None
        return "sorted book instead of the price-indexed one for " + "; ".join(self._fallbacks)

    def _tick_stop(self) -> None:
        """A price-indexed book stopped: widen its window, or move it to the sorted book for the rest of the pass."""
        st = self.state
        for m in range(2):
            stop = st.ti[m, T_STOP]
            if not st.ticked[m] or stop == STOP_NONE:
                continue
            st.ti[m, T_STOP] = STOP_NONE
            if stop == STOP_OUTSIDE:
                grown = reframe(st.tq, st.ti, m, int(st.ti[m, T_NEED]))
                if grown is not None:
                    st.tq = grown
                    continue
            st.ti[m, T_STOP] = stop
            why = stop_reason(st.ti, m, st.ticks[m])
            st.px, st.qty = to_sorted(st.tq, st.ti, st.tf, m, st.px, st.qty, st.n, m)
            st.ticked[m] = 0
            self._fallbacks.append(f"{MARKETS[m]} from {format_key(int(st.counters[K_LAST_KEY]))} on ({why})")

    def _streams(self) -> list[StreamReader]:
        out = []
        for name in SEGMENTS:
            table, market = name.split("/")
            out.append(StreamReader(self.dataset, self.plans[(table, market)], self.span.event_clock,  # type: ignore[index]
                                    self.skip_bad, raw=self.raw))
        return out

    def chunks(self) -> Iterator[Chunk]:
        source = windows(self._streams(), self.span.end_ns, raw=self.raw)
        reader = Prefetch(source) if self.prefetch else None
        try:
            for window in reader if reader is not None else source:
                finished = yield from self._run(window)
                if finished:
                    break
            self._sample_rest()
        finally:
            if reader is not None:
                reader.close()

    def _run(self, w: Window) -> Generator[Chunk, None, bool]:
        """Replay one window, yielding a chunk whenever the output buffer fills; returns True at the end."""
        st = self.state
        st.heads[:] = 0
        position = 0
        out = self._out
        out.count = 0
        first = 0
        spot_sides, spot_prices, spot_amounts, perp_sides, perp_prices, perp_amounts = w.rows
        sb = self.samples
        while True:
            status, position, count = run_window(
                st.px, st.qty, st.n, st.tq, st.ti, st.tf, st.ticked, st.quotes, st.stamps, st.funding, st.scratch,
                st.vector, st.counters, st.heads,
                st.head_keys, w.keys, w.bounds, spot_sides, spot_prices, spot_amounts, perp_sides, perp_prices,
                perp_amounts, w.msg_lo, w.msg_hi, w.msg_last_id, w.msg_snapshot,
                w.msg_applied, w.bbo_id, w.bbo_quote, w.funding_rate, w.actions, st.book_keys, sb.grid, sb.ts,
                sb.info, sb.levels, self.span.start_ns, self.span.end_ns, position, out.ts, out.values, out.entry,
                out.count)
            out.count = count
            if status == BOOK_FULL:
                st.grow()
                continue
            if status == TICKS_STOP:
                self._tick_stop()
                continue
            if status == SAMPLES_FULL:
                self._drain_samples()
                if not count:
                    continue
            if status == OUT_FULL or count:
                yield Chunk(out.ts[:count], out.values[:count], out.entry[:count], w, (first, position),
                            int(st.counters[K_LAST_KEY]))
                out.count = 0
                first = position
            elif status in (DONE, PAST_END) and position > first:
                yield Chunk(out.ts[:0], out.values[:0], out.entry[:0], w, (first, position),
                            int(st.counters[K_LAST_KEY]))
            if status == DONE:
                return False
            if status == PAST_END:
                return True

    def _drain_samples(self) -> None:
        if self._on_samples is not None and self.samples.count:
            self._on_samples(self.samples)
        self.samples.clear()

    def _sample_rest(self) -> None:
        """The grid's instants after the last entry read (the data ended before the range did), then the last
        buffered samples."""
        st, sb = self.state, self.samples
        if sb.count == 0 and not sb.due:
            return
        while not sample_until(st.px, st.qty, st.n, st.tq, st.ti, st.tf, st.ticked, st.stamps, st.book_keys,
                               sb.grid, sb.ts, sb.info, sb.levels, self.span.end_ns):
            self._drain_samples()
        self._drain_samples()
