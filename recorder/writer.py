"""The recorder's writer: rows of every stream into their files, rotated by time, through the dataset.

Each open file is a hidden journal (nova.core.journal: an Arrow IPC stream that survives ``kill -9`` up to its
last complete batch), appended at every flush. When the file's rotation window ends (every ``rotate``
seconds, aligned to the clock, and always at UTC midnight), or the recorder stops, the dataset finishes it: the
journal becomes its Parquet file, visible only when complete, and only then is the journal deleted. A journal
left by a crash is finished by the next start (``Dataset.recover``). Where files go, what they are named and how
they become visible is the dataset's (nova.core.dataset); this module only decides when.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from nova.core import journal
from nova.core.contract import date_of
from nova.core.dataset import Dataset, Partition, journal_name, new_file_name
from nova.core.markets import Market, Symbol

DAY_NS = 86_400 * 10**9


@dataclass
class OpenFile:
    """A file being recorded: its journal stream and the rotation window it belongs to."""

    partition: Partition
    final_name: str
    window: int
    day: int
    stream: pa.NativeFile
    writer: ipc.RecordBatchStreamWriter
    rows: int = 0


class DatasetWriter:
    """Writes every table of the dataset; not thread-safe: drive it from one thread (the recorder's worker)."""

    def __init__(self, root: str | Dataset, rotate_s: float = 900.0, recorder_id: str | None = None,
                 on_finished: Callable[[str], None] | None = None, zstd_level: int | None = None) -> None:
        self.dataset = root if isinstance(root, Dataset) else Dataset(root)
        self.zstd_level = zstd_level  # of the Parquet files it finishes; None: the contract's (RECORDER_ZSTD_LEVEL)
        self.on_finished = on_finished  # told the path of each file it finishes (a spool's uploader)
        self.recorder_id = recorder_id  # in every file name, so many recorders write one root (new_file_name)
        self.rotate_ns = max(int(rotate_s * 1e9), 10**9)
        self.files: dict[tuple[str, Market, Symbol], OpenFile] = {}
        self.last_key: dict[tuple[str, Market, Symbol], tuple[int, int]] = {}
        self.rows_written: dict[tuple[str, Market, Symbol], int] = {}

    # ---- appending -------------------------------------------------------------------------------------------
    def write(self, table: str, market: Market, symbol: Symbol, batch: pa.RecordBatch) -> None:
        """Append rows (in stream order) to their files, opening and closing files as windows change.

        The partition of a row follows its ts_recv, kept non-decreasing along the stream: the few diffs a
        sequencer held back for a snapshot stay in the file of the snapshot they follow.
        """
        if batch.num_rows == 0:
            return
        stream = (table, market, symbol)
        ts = batch.column("ts_recv").cast(pa.int64()).to_numpy()
        day0, window0 = self.last_key.get(stream, (0, 0))
        days = np.maximum.accumulate(np.maximum(ts // DAY_NS, day0))
        windows = np.maximum.accumulate(np.maximum(ts // self.rotate_ns, window0))
        cuts = np.flatnonzero((np.diff(days) != 0) | (np.diff(windows) != 0)) + 1
        bounds = [0, *cuts.tolist(), batch.num_rows]
        for start, end in itertools.pairwise(bounds):
            segment = batch.slice(start, end - start)
            self._append(stream, int(days[start]), int(windows[start]), int(ts[start]), segment)
        self.last_key[stream] = (int(days[-1]), int(windows[-1]))
        self.rows_written[stream] = self.rows_written.get(stream, 0) + batch.num_rows

    def _append(self, stream: tuple[str, Market, Symbol], day: int, window: int, first_ts: int,
                segment: pa.RecordBatch) -> None:
        current = self.files.get(stream)
        if current is not None and (current.window, current.day) != (window, day):
            self._close(stream)
            current = None
        if current is None:
            current = self._open(stream, day, window, first_ts)
        current.writer.write_batch(segment)
        current.stream.flush()
        current.rows += segment.num_rows

    def _open(self, stream: tuple[str, Market, Symbol], day: int, window: int, first_ts: int) -> OpenFile:
        table, market, symbol = stream
        partition = self.dataset.partition(table, market, symbol, date_of(day * DAY_NS))
        name = new_file_name(first_ts, self.recorder_id)
        sink = self.dataset.open_journal(partition, name)
        opened = OpenFile(partition, name, window, day, sink, journal.writer(sink, table))
        self.files[stream] = opened
        return opened

    # ---- closing -------------------------------------------------------------------------------------------------
    def close_due(self, now_ns: int) -> None:
        """Close files whose rotation window (or day) has passed, even if their stream went quiet."""
        window_now, day_now = now_ns // self.rotate_ns, now_ns // DAY_NS
        for stream, opened in list(self.files.items()):
            if opened.window < window_now or opened.day < day_now:
                self._close(stream)

    def close(self) -> None:
        """Finish every open file (a clean stop)."""
        for stream in list(self.files):
            self._close(stream)

    def _finish(self, opened: OpenFile, table: str) -> int:
        """The journal becomes its Parquet file. The encode is most of what a recorded message costs (at the
        contract's zstd 7 about 16 CPU-µs per 65-level message, 10 at zstd 4), hence a level of the recorder's
        own. Dataset.finish_journal takes no level, so with one the same two steps go through the dataset's
        public API (a leftover journal, finished by the next start, gets the contract's level)."""
        path, journal_file = opened.partition.path, journal_name(opened.final_name)
        if self.zstd_level is None:
            return self.dataset.finish_journal(path, journal_file, table)
        batches = journal.read(self.dataset.fs, f"{path}/{journal_file}")
        try:
            rows = self.dataset.write_parquet(f"{path}/{opened.final_name}", table, batches,
                                              compression_level=self.zstd_level)
        finally:
            batches.close()
        self.dataset.remove(f"{path}/{journal_file}")
        return rows

    def _close(self, stream: tuple[str, Market, Symbol]) -> None:
        opened = self.files.pop(stream)
        opened.writer.close()
        opened.stream.close()
        rows = self._finish(opened, stream[0])
        if rows and self.on_finished is not None:
            self.on_finished(f"{opened.partition.path}/{opened.final_name}")
