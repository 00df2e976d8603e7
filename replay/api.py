"""The Python face of replay, for notebooks and user strategies; the CLI is a thin layer over it.

    from replay import Replay
    r = Replay(data="data", symbol="ETH/USDT", date="2026-11-24")
    table = r.readings_table()                      # every reading as Arrow (r.readings_frame() for pandas)
    for reading in r.readings(speed=10):            # nova.core.spread.Reading objects, 10x the recorded pace
        ...
    async for item in r.aevents(speed=1):           # raw recorded events interleaved with the readings
        ...
    r.summary()                                     # ReplaySummary of the last pass

Every pass (iterator, table, ``run``) builds a fresh ``Engine`` over the same range, so passes are
independent and always give the same readings; pacing only decides when they are handed over. A pass also
keeps a ``ReplaySummary`` (``summary()``). Bad input raises ``NovaError`` with one sentence, from the
constructor where possible (unknown symbol, no data on a date, end before start, unreadable files).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from nova.core.errors import NovaError
from nova.core.markets import Market
from nova.core.pacing import Pacer
from nova.core.spread import READING_SCHEMA, Reading, SpreadParams, readings_table
from nova.core.units import BadValue, check_speed
from replay.engine import BOOKS, Chunk, Engine, ReplayRange
from replay.kernel import K_ENTRIES, K_LAST_KEY, K_READINGS, NO_KEY, SEG_BOOK_PERP, SEGMENTS
from replay.merge import Window
from replay.output import SpreadOutput
from replay.plan import ReplaySource
from replay.summary import ReplaySummary, SummaryBuilder, format_ns
from replay.timespan import check_clock, resolve

ReadingCallback = Callable[[Reading], Any]
EventCallback = Callable[["Event"], Any]


class ReplayInterrupted(NovaError):
    """A pass was stopped (``run(stop=...)``, e.g. by Ctrl-C in the CLI) before the end of its range."""


@dataclass(frozen=True)
class Event:
    """One recorded entry as replay merged it: ``ts`` is its merge key (ns), ``table`` and ``market`` say
    where it was recorded, ``data`` is the recorded row (times as ns integers). A book message is one event
    whose ``data`` holds the message's fields and its level changes as ``bids``/``asks`` lists of
    ``(price, amount)`` (exactly as recorded, stale ones included: ``data['stale']`` says so)."""

    ts: int
    table: str
    market: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Progress:
    """Where a pass is, for progress bars: data time reached within [start_ns, end_ns), work done so far."""

    data_ns: int
    start_ns: int
    end_ns: int
    events: int
    readings: int
    wall_s: float

    @property
    def fraction(self) -> float:
        return min(1.0, max(0.0, (self.data_ns - self.start_ns) / (self.end_ns - self.start_ns)))


_SPREAD_NAMES = {"fee_spot": "fee_spot_bps", "fee_perp": "fee_perp_bps", "size": "size", "threshold": "threshold_bps",
                 "stale_ms": "stale_ms"}
"""Replay's spread knobs and the ``SpreadParams`` fields they fill."""


def spread_params(**knobs: float) -> SpreadParams:
    """``SpreadParams`` from Replay's knobs; a bad one is named as the Replay caller wrote it (``fee_spot``)."""
    try:
        return SpreadParams(**{_SPREAD_NAMES[name]: value for name, value in knobs.items()})
    except BadValue as exc:
        by_field = {field: knob for knob, field in _SPREAD_NAMES.items()}
        raise exc.renamed(by_field.get(exc.parameter, exc.parameter)) from None


class Replay:
    """A recorded range of one symbol (both markets), replayed through nova.core.spread.

    ``date`` defaults to the last recorded date of the symbol; ``until`` (inclusive) extends it to a range of
    dates; ``start``/``end`` (``HH:MM[:SS]`` on the first/last date, or full ISO times, UTC) cut a window out
    of it. ``clock='event'`` orders and paces by exchange time instead of receive time. Spread parameters are
    those of ``nova.core.spread.SpreadParams`` (fees and threshold in bps, size in base units). ``book='sorted'``
    rebuilds the books with the sorted book instead of the price-indexed one (same readings; for comparisons).
    """

    def __init__(self, data: str = "data", symbol: str = "ETH/USDT", date: str | None = None,
                 until: str | None = None, start: str | None = None, end: str | None = None, *,
                 clock: str = "recv", size: float = 0.0, fee_spot: float = 10.0, fee_perp: float = 5.0,
                 threshold: float = 0.0, stale_ms: float = 1000.0, skip_bad: bool = False, book: str = "auto"
                 ) -> None:
        self.params = spread_params(fee_spot=fee_spot, fee_perp=fee_perp, size=size, threshold=threshold,
                                     stale_ms=stale_ms)  # the knobs first: a typo needs no look at the data
        if book not in BOOKS:
            raise BadValue("book", f"must be one of {', '.join(BOOKS)}", book)
        self.book = book
        check_clock(clock)
        self.dataset = ReplaySource(str(data))
        self.span, self.dates = resolve(self.dataset, symbol, date, until, start, end, clock)
        self.skip_bad = skip_bad
        self._reading_callbacks: list[ReadingCallback] = []
        self._event_callbacks: list[EventCallback] = []
        self._summary: ReplaySummary | None = None
        planned = self._engine(raw=False)  # plan once now: unreadable files and other bad input fail here
        if not planned.planner.overlaps():
            raise NovaError(_empty_window(self.span, planned.planner.recorded))
        self.sources = self.dataset.run_sources(self.span.symbol, self.span.start_ns, self.span.end_ns)
        self.warnings: list[str] = []
        distinct = list(dict.fromkeys(src for found in self.sources.values() for src in found))
        if len(distinct) > 1:
            named = "; ".join(f"{market}: {', '.join(found)}" for market, found in self.sources.items())
            self.warnings.append(f"the replayed range mixes recordings from {len(distinct)} sources ({named}); "
                                 "they are not one market, so spreads across them mean nothing: record each "
                                 "source into its own --data directory")

    def __repr__(self) -> str:
        return (f"Replay({self.span.symbol}, {self.dates[0]}..{self.dates[-1]}, clock={self.span.clock}, "
                f"params={self.params})")

    # ---- passes ---------------------------------------------------------------------------------------------
    def _engine(self, raw: bool) -> Engine:
        return Engine(self.dataset, self.span, self.params, self.skip_bad, raw=raw, books=self.book)

    def _pass(self, speed: float | None, raw: bool = False) -> _Pass:
        return _Pass(self, self._engine(raw), Pacer(check_speed(speed)))

    def readings(self, speed: float | None = None) -> Iterator[Reading]:
        """Every reading in order, as ``nova.core.spread.Reading``; paced at ``speed`` (None: as fast as possible)."""
        with self._pass(speed) as p:
            for chunk in p.chunks():
                for i in range(len(chunk)):
                    p.pacer.wait(int(chunk.ts[i]))
                    yield Reading.from_row(int(chunk.ts[i]), chunk.values[i])

    def events(self, speed: float | None = None) -> Iterator[Event | Reading]:
        """Every recorded entry of the range (``Event``) with the readings it caused right after it."""
        with self._pass(speed, raw=True) as p:
            for chunk in p.chunks():
                for item in _interleave(chunk, self.span):
                    p.pacer.wait(item.ts)
                    yield item

    def batches(self, speed: float | None = None) -> Iterator[pa.Table]:
        """Readings as Arrow tables of READING_SCHEMA, a run at a time (at ``speed``, the readings due by now)."""
        with self._pass(speed) as p:
            for chunk in p.chunks():
                i = 0
                while i < len(chunk):
                    j = p.pacer.release(chunk.ts, i)
                    yield readings_table(chunk.ts[i:j], chunk.values[i:j])
                    i = j

    def readings_table(self) -> pa.Table:
        """Every reading of the range as one Arrow table (the whole series in memory: use ``batches`` for
        ranges too long for that)."""
        return pa.concat_tables([READING_SCHEMA.empty_table(), *self.batches()])

    def readings_frame(self) -> Any:
        """``readings_table()`` as a pandas DataFrame (needs pandas)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise NovaError("readings_frame needs pandas, which is not installed; pip install pandas, or use "
                            "readings_table() for the same data as Arrow") from None
        return self.readings_table().to_pandas()

    # ---- callbacks -------------------------------------------------------------------------------------------
    def on_reading(self, callback: ReadingCallback) -> ReadingCallback:
        """Call ``callback(reading)`` for every reading of later ``run``/``arun`` passes (usable as a decorator)."""
        self._reading_callbacks.append(callback)
        return callback

    def on_event(self, callback: EventCallback) -> EventCallback:
        """Call ``callback(event)`` for every recorded entry of later ``run``/``arun`` passes."""
        self._event_callbacks.append(callback)
        return callback

    def run(self, speed: float | None = None, *, write: bool | str = False, replace: bool = False,
            progress: Callable[[Progress], Any] | None = None, stop: Callable[[], bool] | None = None
            ) -> ReplaySummary:
        """One pass that feeds the registered callbacks and, with ``write``, stores the readings: ``True`` into
        the dataset's ``spread`` table, a path for one file. The spread table holds one series per symbol and
        date: a replay replaces an earlier one of those dates, but a window never replaces a series covering
        more of the day unless ``replace`` (NovaError before any work otherwise; the summary's notes say what
        was replaced). Nothing is written unless the whole pass succeeds. ``progress`` is called as the pass
        advances; ``stop`` is polled likewise and, once true, ends the pass with ``ReplayInterrupted``."""
        raw = bool(self._event_callbacks)
        notes = self.check_output(write, replace)
        output = self._output(write)
        try:
            with self._pass(speed, raw=raw) as p:
                for chunk in p.chunks():
                    self._deliver(p, chunk, raw, output, progress, stop)
                    if progress is not None:
                        progress(p.progress())
                if output is not None:
                    last = int(p.engine.state.counters[K_LAST_KEY])
                    p.output = output.commit(None if last == NO_KEY else last)
                    p.notes.extend(notes)
                    output = None
        finally:
            if output is not None:
                output.abort()
        return self.summary()

    def _deliver(self, p: _Pass, chunk: Chunk, raw: bool, output: SpreadOutput | None,
                 progress: Callable[[Progress], Any] | None, stop: Callable[[], bool] | None) -> None:
        if stop is not None and stop():
            raise ReplayInterrupted("replay interrupted before the end of the range; nothing was written")
        if output is not None:
            output.write(chunk.ts, chunk.values)
        if raw:
            for item in _interleave(chunk, self.span):
                p.pacer.wait(item.ts)
                callbacks = self._event_callbacks if isinstance(item, Event) else self._reading_callbacks
                for callback in callbacks:
                    callback(item)  # type: ignore[arg-type]
            return
        if not p.pacer.paced and not self._reading_callbacks:
            return
        i = 0
        while i < len(chunk):
            j = p.pacer.release(chunk.ts, i)
            for k in range(i, j) if self._reading_callbacks else ():
                reading = Reading.from_row(int(chunk.ts[k]), chunk.values[k])
                for callback in self._reading_callbacks:
                    callback(reading)
            i = j
            if p.pacer.paced:
                if progress is not None:
                    progress(p.progress(int(chunk.ts[j - 1])))
                if stop is not None and stop():
                    raise ReplayInterrupted("replay interrupted before the end of the range; nothing was written")

    def _output(self, write: bool | str) -> SpreadOutput | None:
        if write is False:
            return None
        metadata = {"symbol": self.span.symbol.unified, "start_ns": self.span.start_ns, "end_ns": self.span.end_ns,
                    "clock": self.span.clock, "params": self.params.__dict__}
        path = None if write is True else str(write)
        return SpreadOutput(self.dataset.root_text, self.span.symbol, self.params.size, metadata, path,
                            self.span.start_ns, self.span.end_ns)

    def check_output(self, write: bool | str, replace: bool = False) -> list[str]:
        """What writing would replace, checked before any work: NovaError when the target cannot be written,
        or when a window would replace a stored series that covers more of a day (unless ``replace``).
        Returns a note per stored series that writing will replace."""
        output = self._output(write)
        if output is None:
            return []
        return output.check(replace)

    # ---- async ---------------------------------------------------------------------------------------------------
    async def areadings(self, speed: float | None = None) -> AsyncIterator[Reading]:
        """``readings`` for an event loop: the replay runs on a worker thread, pacing awaits."""
        async for chunk, p in self._achunks(speed, raw=False):
            for i in range(len(chunk)):
                await p.pacer.wait_async(int(chunk.ts[i]))
                yield Reading.from_row(int(chunk.ts[i]), chunk.values[i])

    async def aevents(self, speed: float | None = None) -> AsyncIterator[Event | Reading]:
        """``events`` for an event loop."""
        async for chunk, p in self._achunks(speed, raw=True):
            for item in _interleave(chunk, self.span):
                await p.pacer.wait_async(item.ts)
                yield item

    async def arun(self, speed: float | None = None) -> ReplaySummary:
        """``run`` for an event loop (callbacks only; awaiting callbacks' coroutines when they return one)."""
        raw = bool(self._event_callbacks)
        async for chunk, p in self._achunks(speed, raw=raw):
            items: Iterator[Event | Reading] = _interleave(chunk, self.span) if raw else (
                Reading.from_row(int(chunk.ts[i]), chunk.values[i]) for i in range(len(chunk)))
            for item in items:
                await p.pacer.wait_async(item.ts)
                callbacks = self._event_callbacks if isinstance(item, Event) else self._reading_callbacks
                for callback in callbacks:
                    result = callback(item)  # type: ignore[arg-type]
                    if asyncio.iscoroutine(result):
                        await result
        return self.summary()

    async def _achunks(self, speed: float | None, raw: bool) -> AsyncIterator[tuple[Chunk, _Pass]]:
        """Chunks computed on a worker thread (copied, since the engine reuses its buffer after each one)."""
        with self._pass(speed, raw=raw) as p:
            chunks = p.chunks()
            while True:
                chunk = await asyncio.to_thread(_next_copy, chunks)
                if chunk is None:
                    return
                yield chunk, p

    # ---- results -------------------------------------------------------------------------------------------------
    def summary(self) -> ReplaySummary:
        """The summary of the last pass; runs one at full speed first if there was none."""
        if self._summary is None:
            self.run()
        assert self._summary is not None
        return self._summary


def _empty_window(span: ReplayRange, recorded: dict[tuple[str, Market], tuple[int, int]]) -> str:
    """One sentence: nothing was recorded in the window, and what was recorded around it."""
    def when(ns: int) -> str:
        return format_ns(ns)[:19]

    seen = []
    for market in ("spot", "perp"):
        spans = [v for (table, m), v in recorded.items() if m == market and table in ("book", "bbo")]
        if spans:
            seen.append(f"{market} {when(min(lo for lo, _ in spans))} to {when(max(hi for _, hi in spans))}")
    around = "; recorded around it: " + ", ".join(seen) if seen else ""
    return (f"nothing of {span.symbol} was recorded between {when(span.start_ns)} and {when(span.end_ns)} UTC"
            f"{around}; choose a window inside the recording (nova ls shows what is recorded)")


def _next_copy(chunks: Iterator[Chunk]) -> Chunk | None:
    chunk = next(chunks, None)
    if chunk is None:
        return None
    return Chunk(chunk.ts.copy(), chunk.values.copy(), chunk.entry.copy(), chunk.window, chunk.positions,
                 chunk.data_ns)


class _Pass:
    """One engine run with its pacer, summary and wall clock; a context manager that records the summary
    on the Replay when the pass ends (completely or not)."""

    def __init__(self, replay: Replay, engine: Engine, pacer: Pacer) -> None:
        self.replay = replay
        self.engine = engine
        self.pacer = pacer
        self.builder = SummaryBuilder(replay.span.symbol.unified, replay.span.clock, pacer.speed)
        self.output: str | None = None
        self.notes: list[str] = list(replay.warnings)
        self._started = time.perf_counter()

    def __enter__(self) -> _Pass:
        self.pacer.__enter__()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pacer.__exit__(*exc)
        counters = self.engine.state.counters
        known = [t for t in self.engine.warmup_ns.values() if t is not None]
        self.replay._summary = self.builder.finish(
            counters, time.perf_counter() - self._started, self.pacer.lateness if self.pacer.paced else None,
            self.replay.dataset.bad, min(known) if known else None, self.output)
        self.replay._summary.sources = dict(self.replay.sources)
        note = self.engine.book_note
        self.replay._summary.notes = list(self.notes) + ([note] if note else [])

    def chunks(self) -> Iterator[Chunk]:
        for chunk in self.engine.chunks():
            self.builder.add(chunk.ts, chunk.values)
            yield chunk

    def progress(self, data_ns: int | None = None) -> Progress:
        """Where the pass is: at ``data_ns`` when pacing holds readings back, else where the loop got to."""
        c = self.engine.state.counters
        data = int(c[K_LAST_KEY]) if c[K_LAST_KEY] != NO_KEY else self.replay.span.start_ns
        data = data if data_ns is None else data_ns
        return Progress(data, self.replay.span.start_ns, self.replay.span.end_ns, int(c[K_ENTRIES]),
                        int(c[K_READINGS]), time.perf_counter() - self._started)


def _interleave(chunk: Chunk, span: ReplayRange) -> Iterator[Event | Reading]:
    """The chunk's raw entries (within the range) in merged order, each followed by the reading it caused."""
    window = chunk.window
    order = window.order()
    lo, hi = chunk.positions
    r = 0
    for position in range(lo, hi):
        g = int(order[position])
        ts = int(window.keys[g])
        if span.start_ns <= ts < span.end_ns:
            yield _event(window, g, ts)
        while r < len(chunk) and chunk.entry[r] == position:
            yield Reading.from_row(int(chunk.ts[r]), chunk.values[r])
            r += 1


def _rows(window: Window, segment: int) -> list[dict[str, Any]]:
    """The segment's raw rows as plain dicts (timestamps as ns, labels as str), converted once per window."""
    cache = window.cache
    if segment not in cache:
        batch = window.raw[segment]
        if batch is None:
            cache[segment] = []
        else:
            arrays = []
            for field, column in zip(batch.schema, batch.columns, strict=True):
                if pa.types.is_timestamp(field.type):
                    column = column.cast(pa.int64())
                elif pa.types.is_dictionary(field.type):
                    column = column.cast(pa.string())
                arrays.append(column)
            cache[segment] = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names).to_pylist()
    return cache[segment]


def _event(window: Window, g: int, ts: int) -> Event:
    s, j = window.segment_of(g)
    table, market = SEGMENTS[s].split("/")
    rows = _rows(window, s)
    if s > SEG_BOOK_PERP:
        return Event(ts, table, market, rows[j])
    lo, hi = int(window.msg_lo[g]), int(window.msg_hi[g])  # rows of its market; book messages are entries 0..
    message = rows[lo:hi]
    data = {key: value for key, value in message[0].items() if key not in ("side", "price", "amount")}
    data["bids"] = [(r["price"], r["amount"]) for r in message if r["side"] == "bid"]
    data["asks"] = [(r["price"], r["amount"]) for r in message if r["side"] == "ask"]
    return Event(ts, table, market, data)

