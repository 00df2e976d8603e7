"""The dataset: the one object that owns a data root's layout, its names and its file I/O.

Why one object: the layout (``{root}/{table}/exchange=.../market=.../symbol=.../date=.../{name}.parquet``), the
hidden names of files being written, the lock, the spread table's partition and the way a file becomes visible
are the contract between every tool; a tool that rebuilds a path or renames a file by hand drifts from the
others, and would have to be rewritten for an object store. So the recorder's writer, replay's planner and
output, ``nova check``, ``nova compact``, ``nova ls``, ``nova sql``'s views and recovery all go through here,
and everything here goes through a pyarrow filesystem (a local path today; ``s3://`` roots plug in behind the
same object).

What it does: names (``partition``, ``spread_partition``, ``new_file_name``, ``snapshot_file_name``, hidden
names); listing
(``tables``, ``partitions``, ``files``, ``leftovers``, ``symbols``, ``dates``); reading (``stats``,
``row_groups``, ``read_table``, ``batches``, ``ledger``, ``book_spans``, ``last_row_ns``, ``last_event``,
``max_msg``); writing (``open_journal``, ``atomic``, ``finish_journal``, ``recover``, ``replace_files``,
``remove``); the claims (``claim``, ``claimed``, ``locked``: nova.core.lock); and ``check_writable`` for
commands that must write.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from nova.core import journal
from nova.core.contract import EXCHANGE, SCHEMAS
from nova.core.errors import NovaError
from nova.core.lock import Claims, Holder, StreamBusy, claimed_streams, holder
from nova.core.markets import Symbol
from nova.core.stores import check_store, open_root
from nova.core.validity import Span, book_spans

PARTITION_LEVELS = ("exchange", "market", "symbol", "date")
SPREAD_TABLE = "spread"
SPREAD_MARKET = "spot-perp"  # the replay output's market partition value: a reading joins both markets
SNAPSHOTS_TABLE = "snapshots"  # nova export snapshots: top-N books on a time grid, one partition per market
SPREAD_METADATA_KEY = b"nova.replay"  # in a spread file's schema: what the replay covered, with which parameters
STAGING = ".nova-compact"  # where nova compact builds a partition's merged file before swapping it in
COMPACT_MANIFEST = ".nova-compact.json"  # on an object store: which files a partition's merged file replaces
_PROBE = ".nova-write-probe"
_RANK = {"start": 0, "stop": 2}  # the order of ledger events of one instant: a start first, a stop last


# ---- names ---------------------------------------------------------------------------------------------------------

def new_file_name(start_ns: int, recorder_id: str | None = None) -> str:
    """A file name that sorts by start time (to the millisecond, so a quick restart still sorts after the run it
    follows) and never collides with another run's (random suffix): ``{start}-{recorder_id}-{random}.parquet``,
    so that recorders on many machines write one root without coordination. Names without a recorder id (older
    recordings, compacted files) read the same: every tool orders files by name, and the start comes first."""
    moment = dt.datetime.fromtimestamp(start_ns // 10**9, dt.UTC)
    millis = (start_ns // 10**6) % 1000
    who = f"-{file_id(recorder_id)}" if recorder_id else ""
    return f"{moment:%Y%m%dT%H%M%S}.{millis:03d}Z{who}-{secrets.token_hex(4)}.parquet"


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
MAX_ID_LENGTH = 64


def file_id(recorder_id: str) -> str:
    """A recorder id as it may appear in a file name and a claim: letters, digits, dots and dashes, each other
    character (space, slash, underscore ...) becoming a dash, at most 64 characters, starting with a letter or
    digit. Raises BadRecorderId for an id that has no letter or digit to keep."""
    text = "".join(c if c in _ID_CHARS else "-" for c in str(recorder_id).strip())
    text = text.lstrip(".-")[:MAX_ID_LENGTH].rstrip(".-")
    if not text:
        raise BadRecorderId(f"the recorder id {str(recorder_id)[:40]!r} has no letter or digit to name files "
                            "with; give --recorder-id a name like host-1")
    return text


def journal_name(final_name: str) -> str:
    """The hidden write-ahead journal (an Arrow IPC stream) of a file while it is being recorded."""
    return f".{final_name.removesuffix('.parquet')}.arrows"


def temp_name(final_name: str) -> str:
    """The hidden name a file is written under before it is moved into place."""
    return f".{final_name}.tmp"


def final_name_of_journal(journal_file: str) -> str:
    return journal_file.lstrip(".").removesuffix(".arrows") + ".parquet"


def is_hidden(name: str) -> bool:
    """Hidden files (journals, temporaries, the lock, staging) are never part of the dataset's tables."""
    return name.startswith((".", "_"))


def is_journal(name: str) -> bool:
    return name.startswith(".") and name.endswith(".arrows")


def is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


def clock_text(offset_ns: int) -> str:
    """HHMMSS of a time of day given in ns since midnight (240000 for the end of the day)."""
    seconds = offset_ns // 10**9
    return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"


def spread_file_name(lo_ns: int, hi_ns: int) -> str:
    """The name of a day's spread series, saying what it covers: ``replay.parquet`` for the whole day,
    ``replay_140000-150000.parquet`` for a window (``lo_ns``, ``hi_ns``: ns since midnight)."""
    if (lo_ns, hi_ns) == (0, 86_400 * 10**9):
        return "replay.parquet"
    return f"replay_{clock_text(lo_ns)}-{clock_text(hi_ns)}.parquet"


def interval_text(every_ns: int) -> str:
    """An interval in its shortest whole unit: ``100ms``, ``1s``, ``250ms``, ``1m``, ``1h``."""
    for unit, ns in (("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if every_ns % ns == 0:
            return f"{every_ns // ns}{unit}"
    return f"{every_ns}ns"


def snapshot_shape(levels: int, every_ns: int) -> str:
    """The name of a snapshot shape, ``snapshot_25_100ms`` (tardis's ``book_snapshot_25_100ms``): the file name
    without ``.parquet``, and the ``shape`` column of its rows."""
    return f"snapshot_{levels}_{interval_text(every_ns)}"


def snapshot_file_name(levels: int, every_ns: int) -> str:
    """A snapshot file's name in its partition: one file per shape, so shapes coexist and an export of the
    same shape again replaces it."""
    return f"{snapshot_shape(levels, every_ns)}.parquet"


def filesystem_for(root: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path within it for a data root (a local path or ``s3://bucket/prefix``)."""
    return open_root(root)


# ---- what is there -------------------------------------------------------------------------------------------------

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


@dataclass(frozen=True)
class RowGroup:
    """One row group's receive-time range and size, and whether it may hold a snapshot message."""

    first_ns: int
    last_ns: int
    rows: int
    has_snapshot: bool


class AtomicFile:
    """A file that appears under its final name only when complete (``commit``; ``abort`` drops it): a reader
    never sees it half written.

    On a local root it is written under a hidden name in its folder and renamed into place. An object store has
    no rename (pyarrow's ``move`` is a server-side copy and a delete) but an object appears only when its upload
    completes (DESIGN §6), and closing an upload stream completes it even after a failed write (pyarrow exposes
    no abort): so the file is written to a local temporary file, and ``commit`` uploads that complete file under
    its final name in one stream and checks the object's size (a short object is deleted and the commit fails).
    An aborted or killed write leaves nothing in the store, and a commit costs one upload instead of an upload
    under a hidden name, a copy and a delete.
    """

    def __init__(self, fs: pafs.FileSystem, final: str) -> None:
        self.fs = fs
        self.final = final
        directory, name = final.rsplit("/", 1)
        self.staged: str | None = None  # the local temporary file of an object-store write
        if isinstance(fs, pafs.LocalFileSystem):
            self.temp = f"{directory}/{temp_name(name)}"
            fs.create_dir(directory, recursive=True)
            self.stream = fs.open_output_stream(self.temp)
        else:
            handle, self.staged = tempfile.mkstemp(prefix=".nova-upload-", suffix=".tmp")
            os.close(handle)
            self.temp = self.staged
            self.stream = pa.OSFile(self.staged, "wb")

    def commit(self) -> str:
        if not self.stream.closed:
            self.stream.close()
        if self.staged is None:
            self.fs.move(self.temp, self.final)
            return self.final
        try:
            size = os.path.getsize(self.staged)
            failure: BaseException | None = None
            try:
                with pa.OSFile(self.staged, "rb") as source, self.fs.open_output_stream(self.final) as upload:
                    upload.upload(source)
            except (OSError, pa.ArrowException) as exc:
                failure = exc
            with contextlib.suppress(OSError, pa.ArrowException):
                stored = self.fs.get_file_info(self.final)
                if stored.type == pafs.FileType.File and stored.size != size:
                    self.fs.delete_file(self.final)  # a short object: the upload failed half-way
                    failure = failure or OSError(f"the upload of {self.final} stored {stored.size} of {size} bytes")
            if failure is not None:
                raise failure
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.staged)
        return self.final

    def abort(self) -> None:
        with contextlib.suppress(OSError, pa.ArrowException):
            if not self.stream.closed:
                self.stream.close()
        with contextlib.suppress(OSError, pa.ArrowException):
            if self.staged is not None:
                os.unlink(self.staged)
            else:
                self.fs.delete_file(self.temp)


class Dataset:
    """A data root: its layout, listing, reading and writing."""

    def __init__(self, root: str | Path) -> None:
        self.text = str(root)
        self.fs, self.root = filesystem_for(self.text)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def uri(self, path: str) -> str:
        """A path of this root as other engines (DuckDB, Spark, polars) name it: ``s3://bucket/...`` on an object
        store (pyarrow's paths there have no scheme), the path itself on a local root."""
        return path if self.local else f"s3://{path}"

    def check_reachable(self) -> None:
        """Raise NovaError (one sentence) when an object-store root's store cannot be used (nova.core.stores)."""
        check_store(self.fs, self.root, self.text)

    def __repr__(self) -> str:
        return f"Dataset({self.text!r})"

    # ---- names ---------------------------------------------------------------------------------------------
    def table_path(self, table: str) -> str:
        """A table's folder, above its partition levels (what Spark and hive readers call the base path)."""
        return f"{self.root.rstrip('/')}/{table}"

    def partition(self, table: str, market: str, symbol: Symbol | str, date: str) -> Partition:
        """The partition of a table, market, symbol (a Symbol, or dashed) and UTC date (it may not exist yet)."""
        dashed = symbol.dashed if isinstance(symbol, Symbol) else symbol
        path = f"{self.table_path(table)}/exchange={EXCHANGE}/market={market}/symbol={dashed}/date={date}"
        return Partition(table, EXCHANGE, market, dashed, date, path)

    def spread_partition(self, symbol: Symbol | str, date: str) -> Partition:
        """Where replay writes a symbol's spread series for a date."""
        return self.partition(SPREAD_TABLE, SPREAD_MARKET, symbol, date)

    def exists(self) -> bool:
        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    # ---- listing -------------------------------------------------------------------------------------------
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
        level: list[tuple[str, dict[str, str]]] = [(f"{self.root}/{table}", {})]
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
        """(path, size) of the partition's visible Parquet files, in name (= start time) order. On an object
        store, a compaction's manifest is honoured (nova.core.object_swap): the files a merged file replaces are
        left out as soon as the merged file exists."""
        def listed(infos: list[pafs.FileInfo]) -> list[tuple[str, int]]:
            return sorted((i.path, i.size) for i in infos if i.type == pafs.FileType.File
                          and i.base_name.endswith(".parquet") and not is_hidden(i.base_name))

        if self.local:
            return listed(self._children(partition.path))
        from nova.core import object_swap

        return listed(object_swap.visible(self, partition))

    def table_files(self, table: str) -> list[tuple[str, int]]:
        """Every visible file of a table, partition by partition."""
        return [f for p in self.partitions(table) for f in self.files(p)]

    def leftovers(self, partition: Partition) -> list[str]:
        """Hidden files of the partition: a recorder's open journals, or what a crash left."""
        return sorted(i.path for i in self._children(partition.path)
                      if i.type == pafs.FileType.File and is_hidden(i.base_name))

    def crash_leftovers(self, partition: Partition, writing: bool) -> list[str]:
        """What a crash left in the partition and recovery would finish: half-written temporaries always, and
        journals unless a recorder is writing them now (``writing``: a live recorder claims the partition's
        market and symbol, ``claimed``)."""
        return [p for p in self.leftovers(partition)
                if is_temporary(p.rsplit("/", 1)[-1]) or (is_journal(p.rsplit("/", 1)[-1]) and not writing)]

    def symbols(self, tables: Iterable[str] = ("book", "bbo", "trades", "funding", "events")) -> list[str]:
        """Every symbol (dashed) with a partition in any of ``tables`` (either market)."""
        found: set[str] = set()
        for table in tables:
            for market in self._children(f"{self.root}/{table}/exchange={EXCHANGE}"):
                if market.type == pafs.FileType.Directory and market.base_name.startswith("market="):
                    found.update(i.base_name.split("=", 1)[1] for i in self._children(market.path)
                                 if i.type == pafs.FileType.Directory and i.base_name.startswith("symbol="))
        return sorted(found)

    def dates(self, symbol: str, tables: Iterable[str], markets: Iterable[str]) -> list[str]:
        """Dates with at least one visible file of ``symbol`` (dashed) in any of ``tables`` and ``markets``."""
        found: set[str] = set()
        for table in tables:
            for market in markets:
                for partition in self.partitions(table, market, symbol):
                    if partition.date not in found and self.files(partition):
                        found.add(partition.date)
        return sorted(found)

    # ---- reading -------------------------------------------------------------------------------------------
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
            return FileStats(path, size, error=first_line(exc))

    def all_stats(self, files: Iterable[tuple[str, int]]) -> list[FileStats]:
        """Footers of many files, read concurrently (the reads wait on storage, not on Python)."""
        files = list(files)
        if len(files) < 8:
            return [self.stats(p, s) for p, s in files]
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(lambda item: self.stats(*item), files))

    @contextlib.contextmanager
    def reading(self, path: str) -> Iterator[pq.ParquetFile]:
        """A Parquet file, closed again at the end: a week of files must not hold a week of descriptors."""
        with self.fs.open_input_file(path) as source:
            yield pq.ParquetFile(source)

    def row_groups(self, path: str, columns: tuple[str, ...] = ()) -> list[RowGroup]:
        """Row-group statistics of a file (what a planner prunes by). Raises MissingColumns when the file lacks
        one of ``columns``, and OSError/ArrowException when it does not read."""
        with self.reading(path) as handle:
            names = handle.schema_arrow.names
            missing = [c for c in columns if c not in names]
            if missing:
                raise MissingColumns(f"it has no column {', '.join(missing)}")
            meta = handle.metadata
            ts_col = names.index("ts_recv")
            snap_col = names.index("snapshot") if "snapshot" in names else -1
            out = []
            for g in range(meta.num_row_groups):
                group = meta.row_group(g)
                stats = group.column(ts_col).statistics
                if stats is not None and stats.has_min_max:
                    first, last = int(stats.min_raw), int(stats.max_raw)
                else:  # no statistics: never prune it
                    first, last = -(2**62), 2**62
                has_snapshot = True
                if snap_col >= 0:
                    snap = group.column(snap_col).statistics
                    has_snapshot = snap is None or not snap.has_min_max or bool(snap.max_raw)
                out.append(RowGroup(first, last, group.num_rows, has_snapshot))
            return out

    def read_table(self, path: str, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
        return pq.read_table(path, columns=columns, schema=schema, filesystem=self.fs)

    def read_row_group(self, path: str, group: int, columns: list[str]) -> pa.Table:
        with self.reading(path) as handle:
            return handle.read_row_group(group, columns=columns)

    def batches(self, path: str, row_groups: list[int], columns: list[str] | None,
                batch_size: int) -> Iterator[pa.RecordBatch]:
        """The rows of some row groups of a file, a batch at a time (the file is closed at the end)."""
        with self.reading(path) as handle:
            yield from handle.iter_batches(batch_size=batch_size, row_groups=row_groups, columns=columns,
                                           use_threads=False)

    def schema(self, path: str) -> pa.Schema:
        """A file's Arrow schema from its footer alone (no data page is read)."""
        return pq.read_schema(path, filesystem=self.fs)

    def schema_metadata(self, path: str) -> dict[bytes, bytes]:
        return self.schema(path).metadata or {}

    def ledger(self, market: str, symbol: str, stream: str | None = None) -> list[dict]:
        """Every event of a market and symbol (dashed) across all dates (or of one stream), in time order; the
        columns ts_recv (ns), stream, kind, received_id and the provenance columns where the files have them."""
        rows: list[dict] = []
        for partition in self.partitions("events", market, symbol):
            for path, _ in self.files(partition):
                try:
                    table = self.read_table(path)
                except (OSError, pa.ArrowException):
                    continue  # unreadable files are reported by the tools that list files
                arrays = {}
                for name in ("ts_recv", "stream", "kind", "received_id", "detail", "source", "recorder_id",
                             "versions"):
                    if name in table.column_names:
                        column = table.column(name)
                        if pa.types.is_timestamp(column.type):
                            column = column.cast(pa.int64())
                        elif pa.types.is_dictionary(column.type):
                            column = column.cast(pa.string())
                        arrays[name] = column.to_pylist()
                for i in range(table.num_rows):
                    row = {name: values[i] for name, values in arrays.items()}
                    if stream is None or row.get("stream") == stream:
                        rows.append(row)
        rows.sort(key=lambda r: (r["ts_recv"], _RANK.get(str(r.get("kind")), 1)))
        return rows

    def book_spans(self, market: str, symbol: str, ledger: list[dict] | None = None) -> list[Span]:
        """The watched time of a market's book (nova.core.validity): from the ledger, and for a run without a
        stop from the footers of its book files."""
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

    def last_row_ns(self, table: str, market: str, symbol: str) -> int | None:
        """The latest receive time on disk of a stream (from footers of its newest date), or None."""
        for partition in reversed(self.partitions(table, market, symbol)):
            lasts = [s.last_ns for s in self.all_stats(self.files(partition)) if s.last_ns is not None]
            if lasts:
                return max(lasts)
        return None

    def last_event(self, market: str, symbol: str, stream: str) -> tuple[int, str] | None:
        """(ts_recv, kind) of the last event ledgered on disk for one stream, or None if it has none."""
        for partition in reversed(self.partitions("events", market, symbol)):
            found: tuple[int, str] | None = None
            for path, _ in self.files(partition):
                table = self.read_table(path, columns=["ts_recv", "stream", "kind"])
                ts = table.column("ts_recv").cast(pa.int64()).to_pylist()
                for t, s, k in zip(ts, table.column("stream").to_pylist(), table.column("kind").to_pylist(),
                                   strict=True):
                    if s == stream and (found is None or (t, _RANK.get(k, 1)) >= (found[0], _RANK.get(found[1], 1))):
                        found = (t, str(k))
            if found is not None:
                return found
        return None

    def max_msg(self, market: str, symbol: str) -> int:
        """The highest book message number on disk for a stream (0 if none), from Parquet statistics."""
        for partition in reversed(self.partitions("book", market, symbol)):
            best = 0
            for path, _ in self.files(partition):
                meta = pq.read_metadata(path, filesystem=self.fs)
                col = meta.schema.to_arrow_schema().get_field_index("msg")
                for g in range(meta.num_row_groups):
                    stats = meta.row_group(g).column(col).statistics
                    if stats is not None and stats.has_min_max:
                        best = max(best, int(stats.max))
            if best:
                return best
        return 0

    # ---- writing -------------------------------------------------------------------------------------------
    def check_writable(self, why: str) -> None:
        """Raise NovaError (one sentence, before any work) when the root cannot be written; ``why`` says what
        the command was about to do ("record into", "compact")."""
        probe = f"{self.root}/{_PROBE}-{os.getpid()}-{secrets.token_hex(4)}"  # own name: processes probe at once
        try:
            self.fs.create_dir(self.root, recursive=True)
            with self.fs.open_output_stream(probe) as out:
                out.write(b"probe")
            self.fs.delete_file(probe)
        except (OSError, pa.ArrowException) as exc:
            raise NotWritable(self.text, why, reason_of(exc)) from None

    def open_journal(self, partition: Partition, final_name: str) -> pa.NativeFile:
        """The output stream of a file's hidden journal (see nova.core.journal)."""
        self.fs.create_dir(partition.path, recursive=True)
        return self.fs.open_output_stream(f"{partition.path}/{journal_name(final_name)}")

    def atomic(self, path: str) -> AtomicFile:
        """A file at ``path`` that appears only when committed."""
        return AtomicFile(self.fs, path)

    def write_parquet(self, path: str, table: str, batches: Iterable[pa.RecordBatch], **options: Any) -> int:
        """Write ``batches`` as the Parquet file ``path`` of ``table`` (contract encodings, row groups of
        ROW_GROUP_ROWS), visible only when complete; returns the rows (nothing is created for none)."""
        target: AtomicFile | None = None

        def open_sink() -> pa.NativeFile:
            nonlocal target
            target = self.atomic(path)
            return target.stream

        try:
            rows = journal.write_parquet(open_sink, table, batches, **options)
        except BaseException:
            if target is not None:
                target.abort()
            raise
        if target is not None:
            target.commit()
        return rows

    def finish_journal(self, directory: str, journal_file: str, table: str) -> int:
        """Rewrite a journal as its Parquet file (atomically) and delete it; returns the rows kept. If its
        Parquet file already exists (a crash came between the move and the delete), the journal is dropped."""
        journal_path = f"{directory}/{journal_file}"
        final_path = f"{directory}/{final_name_of_journal(journal_file)}"
        if self.fs.get_file_info(final_path).type == pafs.FileType.File:
            self.fs.delete_file(journal_path)
            return 0
        batches = journal.read(self.fs, journal_path)
        try:
            rows = self.write_parquet(final_path, table, batches)
        finally:
            batches.close()
        self.fs.delete_file(journal_path)
        return rows

    def recover(self, streams: Iterable[tuple[str, str]] | None = None) -> list[str]:
        """Finish the journals a crashed run left and delete its half-written temporary files: of the whole root,
        or only of ``streams`` ((market, symbol dashed) pairs: the ones the caller has claimed, so that another
        live recorder's open journals in the same root are never taken for leftovers)."""
        done = []
        only = None if streams is None else {(f"market={m}", f"symbol={s}") for m, s in streams}
        selector = pafs.FileSelector(self.root, allow_not_found=True, recursive=True)
        temporaries, journals = [], []
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            directory, name = info.path.rsplit("/", 1)
            parts = info.path[len(self.root):].strip("/").split("/")
            table = parts[0]
            if only is not None and (len(parts) < 6 or (parts[2], parts[3]) not in only):
                continue
            if is_temporary(name) and not name.startswith(_PROBE):
                temporaries.append(info.path)
            elif is_journal(name) and table in SCHEMAS:
                journals.append((directory, name, table))
        # The temporaries first: a recorder killed while finishing a journal left both the journal and the
        # half-written temporary its rewrite uses, under the name that rewrite is about to use again.
        for path in temporaries:
            self.fs.delete_file(path)
            done.append(f"deleted the unfinished file {path}")
        for directory, name, table in journals:
            rows = self.finish_journal(directory, name, table)
            done.append(f"recovered {rows} rows into {directory}/{final_name_of_journal(name)}")
        return done

    def remove(self, path: str) -> None:
        self.fs.delete_file(path)

    def replace_files(self, partition: Partition, old: list[str], write_new: Callable[[str], int]) -> int | None:
        """Replace a partition's files ``old`` by one new file, so that a reader listing the partition sees
        either all the old files or the new one, never both and never neither. ``write_new(path)`` writes the
        new file (its name in the partition is the path's last part) and returns its rows. Returns them, or
        None (nothing changed) when the partition no longer holds exactly ``old`` once the file is written (a
        recorder finished a file there meanwhile)."""
        if not self.local:  # no rename on an object store: a manifest readers honour (nova.core.object_swap)
            from nova.core import object_swap

            return object_swap.replace_files(self, partition, old, write_new)
        from nova.core import local_swap

        return local_swap.replace_files(self, partition, old, write_new)

    def clear_staging(self) -> None:
        """Remove (or, on an object store, finish) what an interrupted ``replace_files`` left behind."""
        if self.local:
            from nova.core import local_swap

            local_swap.clear_staging(self)
        else:
            from nova.core import object_swap

            object_swap.settle_all(self)

    # ---- the lock ------------------------------------------------------------------------------------------
    def claim(self, streams: Iterable[tuple[str, str]], recorder_id: str, **options: Any) -> Claims:
        """Claim (market, symbol dashed) streams for one writer, all or none (nova.core.lock): StreamBusy when a
        live recorder holds one of them, NotWritable when the root cannot hold claims. ``options`` go to
        ``Claims`` (``on_lost``, heartbeat and staleness on an object store). Give them back with
        ``.release()``."""
        claims = Claims(self.fs, self.root, recorder_id, **options)
        try:
            claims.acquire(streams)
        except StreamBusy:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise NotWritable(self.text, "claim streams of", reason_of(exc)) from None
        return claims

    def claimed(self, market: str, symbol: str) -> Holder | None:
        """The live recorder that claims a market and symbol (dashed), or None; works on a read-only root."""
        return holder(self.fs, self.root, market, symbol)

    def locked(self) -> bool:
        """Whether any live recorder (or nova recover) claims a stream of the root; works on a read-only root."""
        return bool(claimed_streams(self.fs, self.root))


class BadRecorderId(NovaError, ValueError):
    """A recorder id that cannot name files (nothing of it survives ``file_id``)."""


class MissingColumns(Exception):
    """A file lacks columns its table needs."""


class NotWritable(NovaError):
    """The root cannot be written, said in one sentence; ``why`` is what the command was about to do."""

    def __init__(self, root: str, why: str, reason: str) -> None:
        super().__init__(f"cannot {why} {root}: it is not writable ({reason})")
        self.root, self.why, self.reason = root, why, reason


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def reason_of(exc: BaseException) -> str:
    """The reason an OS or Arrow error gives, short enough to sit inside one sentence of ours."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return first_line(exc)


def run_sources(ledger: list[dict], lo: int, hi: int) -> list[str]:
    """The sources of the runs (``start`` rows of a ledger) that overlap [lo, hi): the run in progress at ``lo``
    and every run started before ``hi``; each once, in order; runs recorded without provenance are skipped."""
    return _of_runs(ledger, lo, hi, "source")


def run_recorders(ledger: list[dict], lo: int, hi: int) -> list[str]:
    """Like ``run_sources``, for the recorder ids."""
    return _of_runs(ledger, lo, hi, "recorder_id")


def _of_runs(ledger: list[dict], lo: int, hi: int, column: str) -> list[str]:
    starts = [(r["ts_recv"], r.get(column)) for r in ledger if r.get("kind") == "start"]
    before = [value for t, value in starts if t <= lo][-1:]
    inside = [value for t, value in starts if lo < t < hi]
    return list(dict.fromkeys(v for v in [*before, *inside] if v))
