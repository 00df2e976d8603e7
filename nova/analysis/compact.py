"""``nova compact``: merge the many rotated files of closed days into one file per partition, atomically.

Why: a day of 15-minute rotation leaves ~96 files per stream; fewer, larger files read faster (fewer
footers, larger row groups, better dictionaries) and are smaller (the stronger archival compression).

How it stays safe for readers and crashes: the merged file is written into a staging folder outside the
tables (``{data}/.nova-compact/...``), then the staging folder and the partition folder trade places in one
``renameat2(RENAME_EXCHANGE)`` call, so a reader listing the partition sees either all old files or the one
new file, never both and never neither. The old files, now in the staging path, are deleted last. A crash
at any point leaves a consistent dataset plus, at worst, a staging folder that the next run removes.
Today's partition (UTC) is never touched: a recorder may still be writing it. A partition holding hidden
journals (a recorder's open files or a crash's leftovers) is skipped with the reason.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nova.core.contract import RECORDED_TABLES, ROW_GROUP_ROWS, new_file_name, parquet_options
from nova.core.errors import NovaError

STAGING = ".nova-compact"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


@dataclass
class PartitionResult:
    table: str
    partition: str
    files_before: int
    bytes_before: int
    files_after: int
    bytes_after: int
    rows: int
    skipped: str = ""


def exchange_paths(a: Path, b: Path) -> None:
    """Swap two directories atomically (Linux renameat2); elsewhere, two renames in quick succession."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the filesystem cannot exchange
            raise OSError(err, os.strerror(err), str(a))
    parked = b.with_name(f".{b.name}.parked")  # hidden, so hive readers never list it
    os.rename(b, parked)
    os.rename(a, b)
    os.rename(parked, a)


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and not p.name.startswith("."))


def compact_partition(data: Path, table: str, folder: Path, zstd_level: int | None) -> PartitionResult:
    files = _visible(folder)
    rel = folder.relative_to(data)
    before = sum(p.stat().st_size for p in files)
    result = PartitionResult(table, str(rel.relative_to(table)), len(files), before, len(files), before, 0)
    if any(p.name.startswith(".") and p.name.endswith(".arrows") for p in folder.iterdir()):
        result.skipped = "holds journals of a recording (run nova record to finish them, or wait)"
        return result
    if len(files) < 2:
        result.skipped = "already one file"
        return result
    staging = data / STAGING / rel
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    first = pq.read_table(files[0], columns=["ts_recv"]).column("ts_recv").cast(pa.int64())
    target = staging / new_file_name(first[0].as_py() if len(first) else 0)
    options = parquet_options(table, archival=True)
    if zstd_level is not None:
        options["compression_level"] = zstd_level
    schema = pq.read_schema(files[0])
    rows = 0
    with pq.ParquetWriter(target, schema, **options) as writer:
        for path in files:  # names sort by start time, so rows stay in stream (msg) order
            content = pq.read_table(path, schema=schema)
            rows += content.num_rows
            writer.write_table(content, row_group_size=ROW_GROUP_ROWS)
    if _visible(folder) != files or any(p.name.endswith(".arrows") for p in folder.iterdir()):
        shutil.rmtree(staging)  # a recorder finished a file here meanwhile (just after midnight): next time
        result.skipped = "changed while compacting (a recorder was finishing it); run again later"
        return result
    if pq.read_metadata(target).num_rows != rows:
        raise NovaError(f"compaction of {rel} wrote {pq.read_metadata(target).num_rows} rows instead of {rows}; "
                        "nothing was changed")
    with open(target, "rb") as fh:
        os.fsync(fh.fileno())
    exchange_paths(staging, folder)
    shutil.rmtree(staging)  # now holds the old files
    result.files_after, result.bytes_after, result.rows = 1, (folder / target.name).stat().st_size, rows
    return result


def compact(data: Path, date: str | None, today: str, zstd_level: int | None = None) -> list[PartitionResult]:
    """Compact every closed partition (before ``today``), or only ``date``'s; an empty list: nothing to do."""
    if not data.is_dir():
        raise NovaError(f"the data directory {data} does not exist; point --data at a recording")
    if date is not None and date >= today:
        raise NovaError(f"{date} is not a closed day yet (today is {today} UTC); compaction only rewrites "
                        "finished days")
    leftover = data / STAGING
    try:  # compaction writes: say so before any work if it cannot
        leftover.mkdir(exist_ok=True)
    except OSError as exc:
        raise NovaError(f"cannot compact {data}: it is not writable ({exc.strerror}); compact a writable "
                        "copy") from None
    shutil.rmtree(leftover)  # an interrupted run: its staging copies are not part of the dataset
    results = []
    for table in (*RECORDED_TABLES, "spread"):
        for folder in sorted((data / table).glob("exchange=*/market=*/symbol=*/date=*")):
            day = folder.name.split("=", 1)[1]
            if day >= today or (date is not None and day != date):
                continue
            results.append(compact_partition(data, table, folder, zstd_level))
    if leftover.exists():
        shutil.rmtree(leftover)
    return results
