"""Writing the spread series: a ``spread`` table in the dataset (default) or one Parquet file (``--out``).

Why one series per partition: re-running a replay must replace its earlier output, not add to it (a reader
of the ``spread`` table would count both), and a reader must never see both or neither. Each date's readings
are written under a hidden temporary name and renamed into place only when the whole replay succeeded; the
partition's other files (the earlier series) are removed after. A replay that fails writes nothing. The file
name says what the series covers: ``replay.parquet`` for a whole day, ``replay_140000-150000.parquet`` for a
window of it, so a window replay never passes for the day's; and a window never replaces a stored series that
covers more of the day unless asked to (``check``): that would silently lose readings a notebook relies on.

Why a worker thread: encoding Parquet costs about as much per reading as the replay loop itself; pyarrow
encodes without the GIL, so the loop keeps going meanwhile. The caller's chunk is copied first (the engine
reuses its buffer).
"""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nova.core.contract import date_of, parquet_options
from nova.core.dataset import (
    SPREAD_METADATA_KEY,
    SPREAD_TABLE,
    AtomicFile,
    Dataset,
    NotWritable,
    Partition,
    clock_text,
    filesystem_for,
    spread_file_name,
)
from nova.core.errors import NovaError
from nova.core.markets import Symbol
from nova.core.spread import READING_SCHEMA, SIZE_COLUMNS, readings_table
from replay.plan import DAY_NS, date_ns

ROW_GROUP_READINGS = 1 << 18
UNTIL_KEY = b"nova.replay.until"  # in a series file's footer: the time its last reading lasts until (ns)
OUTPUT_ZSTD_LEVEL = 1  # the contract's level 3 costs ~25% more time per reading for ~7% smaller files


def output_schema(size: float) -> pa.Schema:
    """READING_SCHEMA, without the size-aware columns when no ``--size`` was given (they would all be empty)."""
    if size > 0:
        return READING_SCHEMA
    return pa.schema([f for f in READING_SCHEMA if f.name not in SIZE_COLUMNS])


@dataclass
class _Target:
    """One file being written: its final path, the file (once a row group is due) and the pending readings."""

    final: str
    partition: Partition | None = None  # of the dataset's spread table (None: a single --out file)
    end_ns: int | None = None  # where the part of the day it covers ends (None: a single --out file)
    file: AtomicFile | None = None
    writer: pq.ParquetWriter | None = None
    pending: list[pa.Table] = field(default_factory=list)
    pending_rows: int = 0


class SpreadOutput:
    """Receives chunks of readings, writes them on a worker thread, and commits or aborts as a whole.

    ``path`` set: one file. Otherwise the dataset's ``spread`` table under ``root``, one file per UTC date
    of the readings.
    """

    def __init__(self, root: str, symbol: Symbol, size: float, metadata: dict[str, Any],
                 path: str | None = None, start_ns: int = 0, end_ns: int = 2**63 - 1) -> None:
        self.symbol = symbol
        self.start_ns, self.end_ns = start_ns, end_ns
        self.schema = output_schema(size).with_metadata({SPREAD_METADATA_KEY: json.dumps(metadata).encode()})
        self.single = path is not None
        self.data = Dataset(root)
        self.fs, self.root = filesystem_for(path) if path is not None else (self.data.fs, self.data.root)
        self.targets: dict[str, _Target] = {}
        self.dates: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nova-replay-writer")
        self._pending: list[Future[None]] = []

    def describe(self) -> str:
        if self.single:
            return self.root
        if not self.targets:
            return f"{self.data.text} (no readings)"
        names = list(self.targets)
        return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]} ({len(names)} dates)"

    def _covered(self, day: int) -> tuple[int, int]:
        """The part of a UTC day (its number since the epoch) this replay covers."""
        return max(self.start_ns, day * DAY_NS), min(self.end_ns, (day + 1) * DAY_NS)

    def file_path(self, day: int) -> tuple[Partition, str]:
        """Where the series of a UTC day goes: its name says what it covers (nova.core.dataset)."""
        lo, hi = self._covered(day)
        partition = self.data.spread_partition(self.symbol, date_of(day * DAY_NS))
        return partition, f"{partition.path}/{spread_file_name(lo - day * DAY_NS, hi - day * DAY_NS)}"

    def check(self, replace: bool) -> list[str]:
        """Before any work: the target must be writable, and a stored series that covers part of a day this
        replay does not cover is replaced only with ``replace``. Returns a note per series it will replace."""
        if self.single:
            return []
        try:
            self.data.check_writable("write the spread table into")
        except NotWritable as exc:
            raise NovaError(f"{exc}; write the series elsewhere with --out FILE.parquet") from None
        notes = []
        for day in range(self.start_ns // DAY_NS, (self.end_ns - 1) // DAY_NS + 1):
            lo, hi = self._covered(day)
            date = date_of(day * DAY_NS)
            for path, (old_lo, old_hi) in self._stored(date).items():
                what = _coverage(old_lo, old_hi, day)
                if (old_lo < lo or old_hi > hi) and not replace:
                    raise NovaError(f"the spread table already holds a replay of {self.symbol} on {date} covering "
                                    f"{what}, more than this replay ({_coverage(lo, hi, day)}); add --replace to "
                                    "replace it, or write this one elsewhere with --out FILE.parquet")
                notes.append(f"replaced the earlier replay of {date} ({what}): {path}")
        return notes

    def _stored(self, date: str) -> dict[str, tuple[int, int]]:
        """The series a partition holds: path -> the time it covers (from its metadata; a whole day if none)."""
        out = {}
        day0 = date_ns(date)
        for path, _ in self.data.files(self.data.spread_partition(self.symbol, date)):
            lo, hi = day0, day0 + DAY_NS
            try:
                meta = json.loads(self.data.schema_metadata(path).get(SPREAD_METADATA_KEY, b"{}"))
                lo, hi = max(lo, int(meta.get("start_ns", lo))), min(hi, int(meta.get("end_ns", hi)))
            except (OSError, pa.ArrowException, ValueError, TypeError):
                pass  # unreadable or foreign: it is replaced like any other file of the partition
            out[path] = (lo, hi)
        return out

    def write(self, ts: np.ndarray, values: np.ndarray) -> None:
        """Queue a chunk (copied: the engine reuses its buffers)."""
        if ts.shape[0] == 0:
            return
        self._check()
        self._pending.append(self._pool.submit(self._write, ts.copy(), values.copy()))

    def _check(self) -> None:
        """Re-raise a failure of the worker, and keep at most a few chunks in flight (bounded memory)."""
        while self._pending and (self._pending[0].done() or len(self._pending) > 4):
            self._pending.pop(0).result()

    def _write(self, ts: np.ndarray, values: np.ndarray) -> None:
        table = readings_table(ts, values, self.schema)
        if self.single:
            self._append(self._target(self.root), table)
            return
        first_day, last_day = int(ts[0]) // DAY_NS, int(ts[-1]) // DAY_NS
        for day in range(first_day, last_day + 1):
            lo = int(np.searchsorted(ts, day * DAY_NS, side="left"))
            hi = int(np.searchsorted(ts, (day + 1) * DAY_NS, side="left"))
            if hi > lo:
                partition, path = self.file_path(day)
                self._append(self._target(path, partition, self._covered(day)[1]), table.slice(lo, hi - lo))
                date = date_of(day * DAY_NS)
                if date not in self.dates:
                    self.dates.append(date)

    def _target(self, final: str, partition: Partition | None = None, end_ns: int | None = None) -> _Target:
        target = self.targets.get(final)
        if target is None:
            target = _Target(final, partition, end_ns)
            self.targets[final] = target
        return target

    def _append(self, target: _Target, table: pa.Table) -> None:
        target.pending.append(table)
        target.pending_rows += table.num_rows
        if target.pending_rows >= ROW_GROUP_READINGS:
            self._flush(target)

    def _flush(self, target: _Target) -> None:
        if not target.pending:
            return
        if target.writer is None:
            target.file = AtomicFile(self.fs, target.final)
            options = parquet_options(SPREAD_TABLE) | {"compression_level": OUTPUT_ZSTD_LEVEL}
            target.writer = pq.ParquetWriter(target.file.stream, self.schema, **options)
        target.writer.write_table(pa.concat_tables(target.pending), row_group_size=ROW_GROUP_READINGS)
        target.pending, target.pending_rows = [], 0

    def _finish_files(self, until_ns: int | None = None) -> None:
        for target in self.targets.values():
            self._flush(target)
            if target.writer is not None:
                if until_ns is not None:  # the last reading lasts to the replay's last entry, or to the end of
                    # its day when the replay went on into the next
                    until = until_ns if target.end_ns is None else min(until_ns, target.end_ns)
                    target.writer.add_key_value_metadata({UNTIL_KEY: str(until).encode()})
                target.writer.close()

    def commit(self, until_ns: int | None = None) -> str:
        """Wait for the writes, then move every file into place (replacing an earlier replay's). ``until_ns``
        (the last entry the replay processed) goes into each file's footer (``UNTIL_KEY``)."""
        for future in self._pending:
            future.result()
        self._pending = []
        self._pool.submit(self._finish_files, until_ns).result()
        self._pool.shutdown()
        if self.single and not self.targets:  # no readings at all: still an (empty) file, as asked
            target = self._target(self.root)
            target.pending.append(self.schema.empty_table())
            self._finish_files()
        for target in self.targets.values():
            assert target.file is not None
            target.file.commit()
            if target.partition is not None:  # one series per symbol and date: an earlier replay's goes
                for path, _ in self.data.files(target.partition):
                    if path != target.final:
                        self.data.remove(path)
        return self.describe()

    def abort(self) -> None:
        """Drop everything written so far: nothing becomes visible."""
        for future in self._pending:
            with contextlib.suppress(Exception):
                future.result()
        self._pool.shutdown()
        for target in self.targets.values():
            with contextlib.suppress(Exception):
                if target.writer is not None:
                    target.writer.close()
            if target.file is not None:
                target.file.abort()



def _coverage(lo: int, hi: int, day: int) -> str:
    if (lo, hi) == (day * DAY_NS, (day + 1) * DAY_NS):
        return "the whole day"
    a, b = clock_text(lo - day * DAY_NS), clock_text(hi - day * DAY_NS)
    return f"{a[:2]}:{a[2:4]}:{a[4:]} to {b[:2]}:{b[2:4]}:{b[4:]} UTC"


