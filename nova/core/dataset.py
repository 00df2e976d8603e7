"""The dataset: one object that knows a data root's layout and reads what is recorded there.

Why one object: the layout (``{root}/{table}/exchange=.../market=.../symbol=.../date=.../{name}.parquet``, the
hidden names of files being written, the lock) is the contract between every tool, and a tool that rebuilds
paths by hand drifts from the others. Everything here goes through a pyarrow filesystem.

What it answers: which partitions exist (``partitions``), their visible files and leftovers (``files``,
``leftovers``), each file's footer facts without reading its rows (``stats``), the ledger of a stream across
all its dates (``ledger``), and the watched time of a book (``book_spans``, by nova.core.validity's rule).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from nova.core.contract import EXCHANGE, is_hidden
from nova.core.validity import Span, book_spans

PARTITION_LEVELS = ("exchange", "market", "symbol", "date")


def filesystem_for(root: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path within it for a data root (a local path or a URI)."""
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), str(Path(root).resolve())


@dataclass(frozen=True, order=True)
class Partition:
    """One folder of one table: ``{table}/exchange=.../market=.../symbol=.../date=...``."""

    table: str
    exchange: str
    market: str
    symbol: str  # dashed, as in the path: ETH-USDT
    date: str
    path: str


@dataclass(frozen=True)
class FileStats:
    """What a Parquet footer says about a file (``error`` set, and nothing else, when it does not read)."""

    path: str
    size: int
    rows: int = 0
    first_ns: int | None = None  # min / max receive time (ts_recv, or ts for the spread table)
    last_ns: int | None = None
    error: str | None = None


class Dataset:
    """A data root, read side (the writer is the recorder's; see recorder.writer)."""

    def __init__(self, root: str | Path) -> None:
        self.text = str(root)
        self.fs, self.root = filesystem_for(self.text)

    def exists(self) -> bool:
        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    def _children(self, path: str) -> list[pafs.FileInfo]:
        try:
            return self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        except (OSError, pa.ArrowException):
            return []

    def tables(self) -> list[str]:
        return sorted(i.base_name for i in self._children(self.root)
                      if i.type == pafs.FileType.Directory and not is_hidden(i.base_name))

    def partitions(self, table: str, market: str | None = None, symbol: str | None = None,
                   date: str | None = None) -> list[Partition]:
        """The partitions of a table, optionally of one market, symbol (dashed) and date, in sorted order."""
        wanted = {"exchange": EXCHANGE, "market": market, "symbol": symbol, "date": date}
        level = [(f"{self.root}/{table}", {})]
        for key in PARTITION_LEVELS:
            nxt = []
            for path, values in level:
                for info in self._children(path):
                    name = info.base_name
                    if info.type != pafs.FileType.Directory or not name.startswith(key + "="):
                        continue
                    value = name.split("=", 1)[1]
                    if wanted[key] is None or wanted[key] == value:
                        nxt.append((info.path, {**values, key: value}))
            level = nxt
        return sorted(Partition(table, v["exchange"], v["market"], v["symbol"], v["date"], p) for p, v in level)

    def files(self, partition: Partition) -> list[tuple[str, int]]:
        """(path, size) of the partition's visible Parquet files, in name (= start time) order."""
        return sorted((i.path, i.size) for i in self._children(partition.path)
                      if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                      and not is_hidden(i.base_name))

    def leftovers(self, partition: Partition) -> list[str]:
        """Hidden files of the partition: a recorder's open journals, or what a crash left."""
        return sorted(i.path for i in self._children(partition.path)
                      if i.type == pafs.FileType.File and is_hidden(i.base_name))

    def stats(self, path: str, size: int = 0) -> FileStats:
        """Rows and receive-time range from a file's footer (row-group statistics), or why it does not read."""
        try:
            meta = pq.read_metadata(path, filesystem=self.fs)
            names = meta.schema.to_arrow_schema().names
            column = "ts_recv" if "ts_recv" in names else "ts" if "ts" in names else None
            first = last = None
            if column is not None:
                col = names.index(column)
                for g in range(meta.num_row_groups):
                    stats = meta.row_group(g).column(col).statistics
                    if stats is not None and stats.has_min_max:
                        lo, hi = int(stats.min_raw), int(stats.max_raw)
                        first = lo if first is None else min(first, lo)
                        last = hi if last is None else max(last, hi)
            return FileStats(path, size, meta.num_rows, first, last)
        except (OSError, pa.ArrowException) as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return FileStats(path, size, error=text[:160])

    def all_stats(self, files: Iterable[tuple[str, int]]) -> list[FileStats]:
        """Footers of many files, read concurrently (the reads wait on storage, not on Python)."""
        files = list(files)
        if len(files) < 8:
            return [self.stats(p, s) for p, s in files]
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda item: self.stats(*item), files))

    def ledger(self, market: str, symbol: str, stream: str | None = None) -> list[dict]:
        """Every event of a market and symbol across all dates (or of one stream), in time order; the columns
        ts_recv (ns), stream, kind, and the provenance columns where the files have them."""
        rows: list[dict] = []
        for partition in self.partitions("events", market, symbol):
            for path, _ in self.files(partition):
                try:
                    table = pq.read_table(path, filesystem=self.fs)
                except (OSError, pa.ArrowException):
                    continue  # unreadable files are reported by the tools that list files
                arrays = {}
                for name in ("ts_recv", "stream", "kind", "received_id", "source", "recorder_id", "versions"):
                    if name in table.column_names:
                        column = table.column(name)
                        if pa.types.is_timestamp(column.type):
                            column = column.cast(pa.int64())
                        elif pa.types.is_dictionary(column.type):
                            column = column.cast(pa.string())
                        arrays[name] = column.to_pylist()
                count = table.num_rows
                for i in range(count):
                    row = {name: values[i] for name, values in arrays.items()}
                    if stream is None or row.get("stream") == stream:
                        rows.append(row)
        rows.sort(key=lambda r: r["ts_recv"])
        return rows

    def book_spans(self, market: str, symbol: str, ledger: list[dict] | None = None) -> list[Span]:
        """The watched time of a market's book (nova.core.validity): from the ledger, and for a run without a stop
        from the footers of its book files."""
        rows = ledger if ledger is not None else self.ledger(market, symbol, "book")
        book_files: list[FileStats] | None = None

        def last_row(start: int, nxt: int | None) -> int | None:
            nonlocal book_files
            if book_files is None:
                book_files = self.all_stats(f for p in self.partitions("book", market, symbol) for f in self.files(p))
            inside = [s.last_ns for s in book_files if s.last_ns is not None and s.first_ns is not None
                      and s.first_ns >= start and (nxt is None or s.first_ns < nxt)]
            return max(inside) if inside else None

        return book_spans([(r["ts_recv"], r["kind"]) for r in rows if r.get("stream") == "book"], last_row)


def run_sources(ledger: list[dict], lo: int, hi: int) -> list[str]:
    """The sources of the runs (``start`` rows of a ledger) that overlap [lo, hi): the run in progress at ``lo``
    and every run started before ``hi``; each once, in order; runs recorded without provenance are skipped."""
    starts = [(r["ts_recv"], r.get("source")) for r in ledger if r.get("kind") == "start"]
    before = [src for t, src in starts if t <= lo][-1:]
    inside = [src for t, src in starts if lo < t < hi]
    return list(dict.fromkeys(src for src in [*before, *inside] if src))


def run_recorders(ledger: list[dict], lo: int, hi: int) -> list[str]:
    """Like ``run_sources``, for the recorder ids."""
    starts = [(r["ts_recv"], r.get("recorder_id")) for r in ledger if r.get("kind") == "start"]
    before = [rid for t, rid in starts if t <= lo][-1:]
    inside = [rid for t, rid in starts if lo < t < hi]
    return list(dict.fromkeys(rid for rid in [*before, *inside] if rid))
