"""``nova export snapshots``: the depth books at every instant of a fixed grid, as wide Parquet rows for models.

Why on replay's loop: the books it samples are the ones replay rebuilds (one book update in the project,
nova.core.book), at the same cost, and an instant means what it means everywhere: the book after every message
received by then, as the SQL macro ``book_at`` reads it (replay.kernel, "Sampling"). The engine reads both
markets' streams in one pass and fills a ``SampleBuffer``; each full buffer is copied out and becomes one row
group per market and date on a writer thread (Arrow conversion and Parquet encoding release the GIL, so they
overlap with the compiled loop, as decoding does on the reader thread), a bounded queue between them: memory
does not grow with the length of the range.

Why validity is finished here: the loop knows what the ledger invalidated (gaps, disconnects, stops, starts)
but not where a run without a ``stop`` ended (a killed recorder: nothing after its last row was watched), and
not the words. Both come from the ledger, by nova.core.validity's rule as ``book_at`` applies it: an instant is
valid when its book has a snapshot and no book break lies between that snapshot and the instant; the reason
names the first such break.

Where it goes: table ``snapshots`` (nova.core.dataset.SNAPSHOTS_TABLE), one partition per market and date, one
file per shape (``snapshot_25_100ms.parquet``); an export replaces the same shape, and all its files appear
together at the end (none when it fails).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nova.core.contract import SNAPSHOTS, TS, parquet_options, snapshot_schema
from nova.core.dataset import SNAPSHOTS_TABLE, AtomicFile, snapshot_file_name, snapshot_shape
from nova.core.errors import NovaError
from nova.core.markets import MARKETS, Market, Symbol
from nova.core.spread import NO_ID, PERP, SPOT, SpreadParams
from nova.core.units import BadValue, is_number, parse_duration
from nova.core.validity import BOOK_BREAKS, END_OF_DATA, NO_SNAPSHOT, REASONS, reason
from replay.api import Progress
from replay.engine import Engine, ReplayRange
from replay.kernel import I_KEY, I_LAST_ID, I_SNAPSHOT_KEY, I_VALID, K_LAST_KEY, K_ROWS_SEEN, NO_KEY, SampleBuffer
from replay.plan import DAY_NS, ReplaySource, date_ns, shift_date
from replay.timespan import date_range

MAX_LEVELS = 1000
SAMPLE_BYTES = 1 << 25  # the sample buffer's levels (~32 MB): a row group per market and drain
SAMPLE_ROWS = (1 << 8, 1 << 16)  # ... but at least and at most this many instants per drain
ZSTD_LEVEL = 3  # derived data, rerun at will: write speed over the last few percent the recorder's 7 would save
MARKET_INDEX = {"spot": SPOT, "perp": PERP}
METADATA_KEY = b"nova.snapshots"

ProgressCallback = Callable[[Progress], Any]


class ExportInterrupted(NovaError):
    """The export was stopped before the end of its range; nothing was written."""


def check_levels(levels: Any) -> int:
    """Levels a side: a whole number from 1 to MAX_LEVELS (tardis's shapes use 25 or 5)."""
    if not (is_number(levels) and float(levels).is_integer() and 1 <= levels <= MAX_LEVELS):
        raise BadValue("levels", f"must be a whole number of levels a side from 1 to {MAX_LEVELS}", levels)
    return int(levels)


def check_every(every: Any) -> int:
    """The grid's step in ns, from ``100ms``/``1s``/``1m`` or a number of seconds: whole milliseconds that
    divide a day, so that every date's grid starts at its midnight (UTC) and instants are aligned across dates."""
    rule = "must be a positive duration like 100ms, 1s or 1m"
    try:
        seconds = parse_duration(every) if isinstance(every, str) else every
    except ValueError:
        raise BadValue("every", rule, every) from None
    if not (is_number(seconds) and math.isfinite(seconds) and seconds > 0):
        raise BadValue("every", rule, every)
    ns = round(seconds * 1e9)
    if ns % 10**6 or DAY_NS % ns:
        raise BadValue("every", "must be whole milliseconds that divide a day (100ms, 250ms, 1s, 1m, ...)", every)
    return ns


def check_markets(markets: Any) -> tuple[Market, ...]:
    """``None``/``both`` (each market its own partition), ``spot``, ``perp``, or a sequence of them."""
    if markets is None or markets == "both":
        return MARKETS
    chosen = (markets,) if isinstance(markets, str) else tuple(markets)
    if not chosen or any(m not in MARKETS for m in chosen):
        raise BadValue("markets", "must be spot, perp or both", markets)
    return tuple(m for m in MARKETS if m in chosen)


@dataclass
class SnapshotFile:
    """One file an export wrote: its partition's market and date, and its rows."""

    market: str
    date: str
    path: str
    rows: int = 0
    valid_rows: int = 0


@dataclass
class SnapshotSummary:
    """What an export did (rows are grid instants, each market's counted separately)."""

    symbol: str
    shape: str
    levels: int
    every_ns: int
    markets: list[str]
    dates: list[str]
    rows: int = 0
    valid_rows: int = 0
    files: list[SnapshotFile] = field(default_factory=list)
    book_rows: int = 0  # book rows the loop processed (warm-up included): the work done
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- validity: the ledger's side ---------------------------------------------------------------------------------

class Breaks:
    """One market's book breaks in time order: the ledgered ones, and the end of every run without a ``stop``
    (nova.core.dataset's ``book_spans`` finds those from the files' footers). ``judge`` turns the loop's samples
    into the final flags and reasons."""

    FALLBACK = "the book was not valid (the ledger names no break)"

    def __init__(self, source: ReplaySource, market: str, symbol: Symbol) -> None:
        ledger = source.data.ledger(market, symbol.dashed, "book")
        found = {(int(r["ts_recv"]), str(r["kind"])) for r in ledger if r.get("kind") in BOOK_BREAKS}
        for span in source.data.book_spans(market, symbol.dashed, ledger):
            if span.ended_by == END_OF_DATA and span.end_ns < 2**63 - 1:
                found.add((span.end_ns, END_OF_DATA))
        rows = sorted(found)
        self.ts = np.array([ts for ts, _ in rows] + [2**63 - 1], dtype=np.int64)  # a sentinel: no break
        self.reasons = pa.array([REASONS[NO_SNAPSHOT], *(reason(k, ts) for ts, k in rows), self.FALLBACK],
                                pa.string())

    def judge(self, ts: np.ndarray, info: np.ndarray) -> tuple[np.ndarray, pa.Array]:
        """(valid, reason) of samples ``ts`` with their ``info`` (SampleBuffer.info of one market): valid as the
        loop kept it, unless a break (the end of a run) lies between the book's snapshot and the instant."""
        snap = info[:, I_SNAPSHOT_KEY]
        synced = snap != NO_KEY
        first = np.searchsorted(self.ts, snap, side="left")  # the first break at or after the snapshot
        broken = synced & (self.ts[first] <= ts)
        valid = (info[:, I_VALID] != 0) & synced & ~broken
        code = np.where(~synced, 0, np.where(broken, first + 1, len(self.reasons) - 1))
        reason = pc.take(self.reasons, pa.array(code, pa.int64(), mask=valid))
        return valid, reason


# ---- output ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Samples:
    """A drained sample buffer's rows, copied out of it (SampleBuffer's arrays, cut to its count)."""

    ts: np.ndarray
    info: np.ndarray
    levels: np.ndarray

    @classmethod
    def copy_of(cls, buffer: SampleBuffer) -> Samples:
        n = buffer.count
        return cls(buffer.ts[:n].copy(), buffer.info[:n].copy(), buffer.levels[:n].copy())


class _WriterThread:
    """Takes copies of the sample buffer and writes them on a thread, at most ``depth`` behind the loop. A
    failure there is raised in the caller at its next ``put`` or at ``close``."""

    _STOP = None

    def __init__(self, outputs: list[_Output], depth: int = 2) -> None:
        self._outputs = outputs
        self._queue: queue.Queue[Samples | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="nova-export-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            if self._error is not None:
                continue  # keep taking, so that the loop never waits on a writer that has stopped writing
            try:
                for out in self._outputs:
                    out.take(item)
            except BaseException as exc:  # handed to the caller
                self._error = exc

    def put(self, samples: Samples) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(samples)

    def close(self) -> None:
        """Wait for everything queued to be written; raise what went wrong there, if anything."""
        if self._thread.is_alive():
            self._queue.put(self._STOP)
            self._thread.join()
        if self._error is not None:
            raise self._error

class _Output:
    """One market's files, a date at a time: each written through the dataset's atomic file and committed only
    when the whole export has succeeded (``commit``), so a failed export leaves the previous files as they were."""

    def __init__(self, source: ReplaySource, symbol: Symbol, market: str, levels: int, every_ns: int,
                 breaks: Breaks) -> None:
        self.source = source
        self.symbol = symbol
        self.market = market
        self.m = MARKET_INDEX[market]
        self.levels = levels
        self.every_ns = every_ns
        self.breaks = breaks
        self.shape = snapshot_shape(levels, every_ns)
        self.schema = snapshot_schema(levels)
        self.files: list[SnapshotFile] = []
        self._pending: list[AtomicFile] = []
        self._writer: pq.ParquetWriter | None = None
        self._day = -1  # the date being written, as days since the epoch

    def _open(self, day: int) -> None:
        self._close_writer()
        date = (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()
        partition = self.source.data.partition(SNAPSHOTS_TABLE, self.market, self.symbol, date)
        path = f"{partition.path}/{snapshot_file_name(self.levels, self.every_ns)}"
        target = self.source.data.atomic(path)
        self._pending.append(target)
        meta = {"symbol": self.symbol.unified, "market": self.market, "date": date, "levels": self.levels,
                "every_ns": self.every_ns, "shape": self.shape}
        schema = self.schema.with_metadata({METADATA_KEY: json.dumps(meta).encode()})
        names = self.schema.names
        options = parquet_options(SNAPSHOTS_TABLE)
        delta = set(options["column_encoding"])
        # level columns plain: dictionaries cost ~50% more to write for ~4% smaller files (zstd sees the repeats)
        options |= {"compression_level": ZSTD_LEVEL,
                    "use_dictionary": [n for n in names[:len(SNAPSHOTS)] if n not in delta]}
        self._writer = pq.ParquetWriter(target.stream, schema, **options)
        self.files.append(SnapshotFile(self.market, date, path))
        self._day = day

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def take(self, samples: Samples) -> None:
        """Write the rows of this market (split at midnights: a date is a partition)."""
        ts = samples.ts
        n = int(ts.shape[0])
        lo = 0
        while lo < n:
            day = int(ts[lo] // DAY_NS)
            hi = int(np.searchsorted(ts, (day + 1) * DAY_NS, side="left"))
            if day != self._day:
                self._open(day)
            self._write(samples, lo, hi)
            lo = hi

    def _write(self, samples: Samples, lo: int, hi: int) -> None:
        ts = samples.ts[lo:hi]
        info = samples.info[lo:hi, self.m]
        valid, reason = self.breaks.judge(ts, info)
        count = hi - lo
        key = info[:, I_KEY]
        last_id = info[:, I_LAST_ID]
        columns: list[pa.Array] = [
            pa.array(ts, pa.int64()).view(TS),
            pa.array(key, pa.int64(), mask=key == NO_KEY).view(TS),
            pa.array(last_id, pa.int64(), mask=last_id == NO_ID),
            pa.array(valid, pa.bool_()),
            reason,
            pa.DictionaryArray.from_arrays(pa.array(np.zeros(count, dtype=np.int8)), pa.array([self.shape])),
        ]
        # levels[i, plane, level] -> one contiguous run per column; the loop's NaN (no level, or not valid) is null
        planes = np.ascontiguousarray(samples.levels[lo:hi, self.m].transpose(2, 1, 0))
        invalid = ~valid
        for level in range(self.levels):
            for plane in range(4):
                values = planes[level, plane]
                values[invalid] = np.nan  # a break the loop could not see (the end of a run)
                columns.append(pa.array(values, pa.float64(), from_pandas=True))
        batch = pa.RecordBatch.from_arrays(columns, schema=self.schema)
        assert self._writer is not None
        self._writer.write_batch(batch)
        self.files[-1].rows += count
        self.files[-1].valid_rows += int(valid.sum())

    def finish(self) -> None:
        self._close_writer()

    def commit(self) -> None:
        for target in self._pending:
            target.commit()
        self._pending = []

    def abort(self) -> None:
        with contextlib.suppress(OSError, pa.ArrowException):
            self._close_writer()
        for target in self._pending:
            target.abort()
        self._pending = []


# ---- the export --------------------------------------------------------------------------------------------------

class SnapshotExport:
    """An export of one symbol's books on a grid over whole UTC dates. Building it checks everything (symbol,
    dates, levels, interval, markets, that the root is writable) and raises one sentence (NovaError) before any
    work; ``run`` then writes the files and returns the summary."""

    def __init__(self, data: str, symbol: str, date: str | None = None, until: str | None = None, *,
                 levels: int = 25, every: str | float = "100ms", markets: str | tuple[str, ...] | None = None,
                 skip_bad: bool = False) -> None:
        self.levels = check_levels(levels)
        self.every_ns = check_every(every)
        wanted = check_markets(markets)
        self.skip_bad = skip_bad
        self.source = ReplaySource(data)
        try:
            self.symbol = Symbol.parse(symbol)
        except ValueError as exc:
            raise NovaError(str(exc)) from None
        root = self.source.root_text
        recorded = [s.replace("-", "/") for s in self.source.data.symbols(("book",))]
        if self.symbol.unified not in recorded:
            if not recorded:
                raise NovaError(f"no order book is recorded under {root}; record first (nova record "
                                f"{self.symbol}) or point --data at a recording")
            raise NovaError(f"{self.symbol} has no order book recorded under {root}; recorded symbols: "
                            f"{', '.join(recorded)}")
        book_dates = {m: self.source.dates(self.symbol, tables=("book",), markets=(m,)) for m in wanted}
        every_date = sorted({d for dates in book_dates.values() for d in dates})
        if not every_date:
            raise NovaError(f"{self.symbol} has no complete order-book file under {root} yet (files appear when "
                            "their 15-minute window ends, or when the recorder stops)")
        first, last = date_range(date, until, every_date[-1])
        assert first is not None and last is not None
        covered = {m: [d for d in dates if first <= d <= last] for m, dates in book_dates.items()}
        span = first if first == last else f"{first}..{last}"
        self.notes: list[str] = []
        if not any(covered.values()):
            which = "" if wanted == MARKETS else f" {wanted[0]}"
            raise NovaError(f"no{which} order book of {self.symbol} is recorded on {span} under {root}; recorded "
                            f"dates: {_listing(every_date) or 'none'}")
        self.markets: tuple[Market, ...] = tuple(m for m in wanted if covered[m])
        for m in wanted:
            if not covered[m]:
                self.notes.append(f"no {m} order book is recorded on {span}; only {', '.join(self.markets)} exported")
        self.dates = []
        day = first
        while day <= last:
            self.dates.append(day)
            day = shift_date(day, 1)
        self.span = ReplayRange(self.symbol, date_ns(first), date_ns(shift_date(last, 1)), "recv")
        self.shape = snapshot_shape(self.levels, self.every_ns)
        self.source.data.check_writable("export snapshots into")
        self._progress = Progress(self.span.start_ns, self.span.start_ns, self.span.end_ns, 0, 0, 0.0)

    def __repr__(self) -> str:
        return (f"SnapshotExport({self.source.root_text!r}, {self.symbol.unified!r}, "
                f"{self.dates[0]}..{self.dates[-1]}, {self.shape}, markets={self.markets})")

    def run(self, progress: ProgressCallback | None = None, stop: Callable[[], bool] | None = None
            ) -> SnapshotSummary:
        """One pass of the replay loop over the dates, writing ``snapshots`` files (all of them at the end, or
        none: a failure or ``stop`` returning true leaves the dataset as it was). ``progress`` is called as the
        pass advances."""
        started = time.perf_counter()
        outputs = [_Output(self.source, self.symbol, m, self.levels, self.every_ns,
                           Breaks(self.source, m, self.symbol)) for m in self.markets]
        depth = SAMPLE_BYTES // (2 * 4 * 8 * self.levels)
        capacity = min(max(depth, SAMPLE_ROWS[0]), SAMPLE_ROWS[1])
        samples = SampleBuffer(self.span.start_ns, self.every_ns, self.span.end_ns, self.levels, capacity,
                               tuple(MARKET_INDEX[m] for m in self.markets))

        writer = _WriterThread(outputs)
        engine = Engine(self.source, self.span, SpreadParams(), self.skip_bad, samples=samples,
                        on_samples=lambda buffer: writer.put(Samples.copy_of(buffer)), markets=self.markets)
        try:
            try:
                for _ in engine.chunks():
                    if stop is not None and stop():
                        raise ExportInterrupted("the export was interrupted before the end of its range; nothing "
                                                "was written")
                    if progress is not None:
                        progress(self._where(engine, started))
            finally:
                writer.close()
            for out in outputs:
                out.finish()
            for out in outputs:
                out.commit()
        except BaseException:
            for out in outputs:
                out.abort()
            raise
        if progress is not None:
            progress(self._where(engine, started, done=True))
        files = sorted((f for out in outputs for f in out.files), key=lambda f: (f.date, f.market))
        summary = SnapshotSummary(self.symbol.unified, self.shape, self.levels, self.every_ns, list(self.markets),
                                  list(self.dates), files=files, notes=[*self.notes, *self._bad_notes()])
        summary.rows = sum(f.rows for f in files)
        summary.valid_rows = sum(f.valid_rows for f in files)
        summary.book_rows = int(engine.state.counters[K_ROWS_SEEN])
        summary.wall_s = time.perf_counter() - started
        return summary

    def _where(self, engine: Engine, started: float, done: bool = False) -> Progress:
        counters = engine.state.counters
        data = self.span.end_ns if done else int(counters[K_LAST_KEY]) if counters[K_LAST_KEY] != NO_KEY \
            else self.span.start_ns
        rows = int(counters[K_ROWS_SEEN])
        return Progress(min(max(data, self.span.start_ns), self.span.end_ns), self.span.start_ns, self.span.end_ns,
                        rows, 0, time.perf_counter() - started)

    def _bad_notes(self) -> list[str]:
        return [f"skipped {path}: {why}" for path, why in self.source.bad.items()]


def export_snapshots(data: str, symbol: str, date: str | None = None, until: str | None = None, *, levels: int = 25,
                     every: str | float = "100ms", markets: str | tuple[str, ...] | None = None,
                     skip_bad: bool = False, progress: ProgressCallback | None = None) -> SnapshotSummary:
    """Export ``symbol``'s top-``levels`` books every ``every`` over ``date``..``until`` (UTC dates; default the
    last recorded date) into the dataset's ``snapshots`` table; see ``SnapshotExport``."""
    return SnapshotExport(data, symbol, date, until, levels=levels, every=every, markets=markets,
                          skip_bad=skip_bad).run(progress)


def _listing(items: list[str], limit: int = 12) -> str:
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit // 2]) + f", ... ({len(items) - limit} more) ..., " + ", ".join(items[-limit // 2:])


__all__ = ["ExportInterrupted", "SnapshotExport", "SnapshotFile", "SnapshotSummary", "export_snapshots"]
