"""``nova compact``: merge the many rotated files of closed days into one file per partition, atomically.

Why: a day of 15-minute rotation leaves ~96 files per stream; fewer, larger files read faster (fewer
footers, larger row groups, better dictionaries) and are smaller (the stronger archival compression).

How it stays safe for readers and crashes: the dataset replaces a partition's files by the merged one so that a
reader listing the partition sees either all old files or the one new file, never both and never neither
(``Dataset.replace_files``; on a local root, a staging folder and one directory exchange). A crash at any point
leaves a consistent dataset plus, at worst, a staging folder that the next run removes. Today's partition (UTC)
is never touched: a recorder may still be writing it. A partition holding hidden journals (a recorder's open
files or a crash's leftovers) is skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from nova.core.contract import RECORDED_TABLES, SCHEMAS
from nova.core.dataset import SPREAD_TABLE, Dataset, Partition, is_journal
from nova.core.errors import NovaError


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


def compact_partition(data: Dataset, partition: Partition, zstd_level: int | None) -> PartitionResult:
    files = data.files(partition)
    before = sum(size for _, size in files)
    where = partition.path[len(f"{data.root}/{partition.table}/"):]
    result = PartitionResult(partition.table, where, len(files), before, len(files), before, 0)
    if any(is_journal(p.rsplit("/", 1)[-1]) for p in data.leftovers(partition)):
        result.skipped = "holds journals of a recording (run nova record or nova recover to finish them, or wait)"
        return result
    if len(files) < 2:
        result.skipped = "already one file"
        return result
    paths = [path for path, _ in files]
    expected = sum(data.stats(p).rows for p in paths)
    schema = SCHEMAS.get(partition.table)
    if schema is None:  # the spread table: its files carry their own (replay's) schema
        with data.reading(paths[0]) as first:
            schema = first.schema_arrow

    def merge(target: str) -> int:
        # names sort by start time, so the rows stay in stream (msg) order
        batches = (batch for path in paths for batch in conform(data.read_table(path), schema).to_batches())
        rows = data.write_parquet(target, partition.table, batches, archival=True, compression_level=zstd_level)
        if rows != expected or data.stats(target).rows != rows:
            raise NovaError(f"compaction of {where} wrote {rows} rows instead of {expected}; nothing was changed")
        return rows

    rows = data.replace_files(partition, paths, merge)
    if rows is None:
        result.skipped = "changed while compacting (a recorder was finishing it); run again later"
        return result
    after = data.files(partition)
    result.files_after, result.bytes_after, result.rows = len(after), sum(size for _, size in after), rows
    return result


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A file's rows in the table's schema: a column the file predates (the ledger's provenance) is null."""
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names
               else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def compact(root: Path | str, date: str | None, today: str, zstd_level: int | None = None) -> list[PartitionResult]:
    """Compact every closed partition (before ``today``), or only ``date``'s; an empty list: nothing to do."""
    data = Dataset(root)
    data.check_reachable()
    if not data.exists():
        raise NovaError(f"the data directory {root} does not exist; point --data at a recording")
    if date is not None and date >= today:
        raise NovaError(f"{date} is not a closed day yet (today is {today} UTC); compaction only rewrites "
                        "finished days")
    data.check_writable("compact")  # compaction writes: say so before any work if it cannot
    data.clear_staging()  # an interrupted run: its staging copies are not part of the dataset
    results = []
    for table in (*RECORDED_TABLES, SPREAD_TABLE):
        for partition in data.partitions(table):
            if partition.date >= today or (date is not None and partition.date != date):
                continue
            results.append(compact_partition(data, partition, zstd_level))
    data.clear_staging()
    return results
