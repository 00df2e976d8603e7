"""Bytes per book row, encode CPU and decode speed of the book table's Parquet options (DESIGN §8: <= 4 B now).

    python bench/storage.py [--hours 6] [--dir DIR] [--files N] [--repeat 2] [--only NAME ...] [--profile]

The data: bench/replay.py's day (the real ETHUSDT captures through the recorder's own code, tiled over
``--hours``), its book files as the recorder rotated them (15 minutes each). Every option re-encodes every
file the way the recorder does at rotation (one Parquet file per journal, nova.core.journal's row groups) and
reports:
- bytes per book row on the tiled day; on the same day with its tiles made different (``perturbed``: prices
  drift by whole ticks from tile to tile, sizes get a factor per tile); and on the capture itself (one tile,
  no repetition). Tiling repeats the same 6 minutes (~430 k perp rows, ~110 k spot rows), so a row group or a
  zstd page longer than a tile finds the previous tile's values and sequences again and the plain day
  flatters every option that makes them longer (8 MiB pages look 23% smaller there, and are not). The
  perturbed day errs the other way (no size recurs across tiles); the capture column has no repetition but
  only one tile;
- encode CPU (seconds of CPU for the whole day, best of ``--repeat``; the recorder pays it at rotation);
- decode: the replay's book columns (replay.reader.COLUMNS) read with pyarrow into numpy, one thread, in
  M rows per CPU-second (the replay's decode floor);
- ``compact`` rows: one file per market (``nova compact``'s archival settings) instead of 96 rotated files.
- ``capture only`` rows: options too slow for the whole day (zstd 15-22, brotli), sized and timed on the capture;
- ``contract change`` rows: what the integer-tick contract the issue offered would store (price in ticks, amount
  in lots, int64), measured to see whether it pays; not the contract.
The baseline from the same run: the raw gzip JSON Binance sent for the book (the depth messages and REST
snapshots of the captures, gzip level 6), per book row, and the capture files as stored (every stream).
``--profile`` prints only where the capture's bytes go: per column (dictionary page and data pages), and per row
as the file gets longer (spot also over both real spot captures, 11 minutes).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.replay import CAPTURES, REALDATA, build_dataset, capture_tables
from nova.core.contract import BOOK, ROW_GROUP_ROWS, parquet_options
from nova.core.dataset import Dataset
from replay.reader import COLUMNS

INTS = ("ts_recv", "ts_event", "ts_trade", "first_id", "last_id", "prev_id", "msg")
NAMES = tuple(f.name for f in BOOK)
DELTA = "DELTA_BINARY_PACKED"
SPOT_NEXT = REALDATA / "spot_ethusdt_20240809.gz"  # continues the spot capture: 5 more minutes of diffs


def settings(encodings: dict[str, str], level: int | dict[str, int] = 7, **extra: Any) -> dict[str, Any]:
    """Writer options: ``encodings`` per column (``DICT`` or absent: dictionary), zstd at ``level``."""
    return {"compression": "zstd", "compression_level": level,
            "use_dictionary": [n for n in NAMES if encodings.get(n, "DICT") == "DICT"],
            "column_encoding": {n: e for n, e in encodings.items() if e != "DICT"}, "write_statistics": True} | extra


def levels(ints: int, rest: int) -> dict[str, int]:
    """zstd levels per column: ``ints`` on the id and time columns, ``rest`` on the others."""
    return {n: ints if n in INTS else rest for n in NAMES}


def within_message(*keys: tuple[str, str]) -> Callable[[pa.Table], pa.Table]:
    """Rows reordered inside each message (messages stay in ``msg`` order); keys may use ``zero`` (amount != 0,
    so removals come first), ``side_text`` and ``outward`` (from the top of the book outwards on both sides).
    Reordering is safe for the rebuild rule because no message repeats a (side, price): checked on the captures."""
    def order(table: pa.Table) -> pa.Table:
        side = table["side"].cast(pa.string())
        keyed = table.append_column("zero", pc.not_equal(table["amount"], 0.0)).append_column("side_text", side)
        keyed = keyed.append_column("outward", pc.if_else(pc.equal(side, "ask"), table["price"],
                                                          pc.negate(table["price"])))
        return table.take(pc.sort_indices(keyed, sort_keys=[("msg", "ascending"), *keys]))
    return order


@dataclass
class Option:
    name: str
    options: dict[str, Any]
    row_group: int = ROW_GROUP_ROWS
    order: Callable[[pa.Table], pa.Table] | None = None
    compact: bool = False  # one file per market (nova compact) instead of the rotated files
    capture_only: bool = False  # too slow for the whole day: sizes and CPU on the capture only
    integers: bool = False  # the contract change measured, not adopted: price in ticks, amount in lots (int64)
    notes: dict[str, Any] = field(default_factory=dict)


UNITS: dict[str, tuple[float, float]] = {}  # market -> (tick size, step size), from the day's instruments table
INTEGER_BOOK = pa.schema([pa.field(f.name, pa.int64()) if f.name in ("price", "amount") else f for f in BOOK])


def integer_units(table: pa.Table, market: str) -> pa.Table:
    """Price as whole ticks and amount as whole lots (int64), the shape an integer contract would store. The unit
    is the market's tick or step size unless a value is off that grid (the real spot capture has sizes with a
    fifth decimal under a 0.0001 step: resting orders from before a step change), then the largest power-of-ten
    fraction of it that holds every value exactly, as such a contract would have to: same information, no loss."""
    import numpy as np

    tick, step = UNITS[market]
    out = table
    for name, unit in (("price", tick), ("amount", step)):
        values = table[name].to_numpy(zero_copy_only=False)
        missing = np.isnan(values)
        known = np.where(missing, 0.0, values)
        while True:
            units = np.round(known / unit)
            if np.allclose(units * unit, known, rtol=0, atol=unit * 1e-6) or unit < 1e-12:
                break
            unit /= 10
        out = out.set_column(BOOK.get_field_index(name), pa.field(name, pa.int64()),
                             pa.array(units.astype("int64"), mask=missing))
    return out


BEFORE = settings({n: DELTA for n in INTS})  # the recorder's options before this bench (zstd 7, delta ints)


def integer_settings(base: dict[str, Any]) -> dict[str, Any]:
    """``base`` with price PLAIN and amount BYTE_STREAM_SPLIT: the best pair for integer ticks and lots (measured
    against every pair of dictionary, PLAIN, delta and BYTE_STREAM_SPLIT on the capture)."""
    return base | {"use_dictionary": [n for n in base["use_dictionary"] if n not in ("price", "amount")],
                   "column_encoding": base["column_encoding"] | {"price": "PLAIN", "amount": "BYTE_STREAM_SPLIT"}}


def options() -> list[Option]:
    chosen = parquet_options("book")
    archival = parquet_options("book", archival=True)
    delta = {n: DELTA for n in INTS}
    mixed = settings({"ts_recv": "PLAIN", "first_id": "PLAIN", "last_id": "PLAIN", "prev_id": "PLAIN",
                      "ts_event": DELTA, "ts_trade": DELTA, "msg": DELTA})
    removals_first = ("side_text", "ascending"), ("zero", "ascending")
    return [
        Option("pyarrow defaults + zstd", {"compression": "zstd"}),
        Option("dictionary everywhere, zstd 3", settings({}, 3)),
        Option("before: delta ints, dictionary, zstd 3", settings(delta, 3)),
        Option("before: delta ints, dictionary, zstd 7", BEFORE),
        Option("before, zstd 9", settings(delta, 9)),
        Option("before, zstd 12", settings(delta, 12)),
        Option("before, BYTE_STREAM_SPLIT price/amount", settings(
            delta | {"price": "BYTE_STREAM_SPLIT", "amount": "BYTE_STREAM_SPLIT"})),
        Option("before, PLAIN price/amount", settings(delta | {"price": "PLAIN", "amount": "PLAIN"})),
        Option("before, dictionary + BSS fallback (64 KiB dict limit)", settings(
            delta, use_byte_stream_split=["price", "amount"], dictionary_pagesize_limit=1 << 16)),
        Option("before, dictionary + PLAIN fallback (64 KiB dict limit)", settings(
            delta, dictionary_pagesize_limit=1 << 16)),
        Option("before, ints PLAIN", settings({n: "PLAIN" for n in INTS})),
        Option("before, ints BYTE_STREAM_SPLIT", settings({n: "BYTE_STREAM_SPLIT" for n in INTS})),
        Option("before, ints dictionary", settings({})),
        Option("before, side DELTA_BYTE_ARRAY", settings(delta | {"side": "DELTA_BYTE_ARRAY"})),
        Option("before, pages of up to 2^16 rows", BEFORE | {"max_rows_per_page": 1 << 16}),
        Option("before, pages of up to 2^18 rows", BEFORE | {"max_rows_per_page": 1 << 18}),
        Option("before, pages of up to 2^20 rows", BEFORE | {"max_rows_per_page": 1 << 20}),
        Option("before, row groups 2^19", BEFORE, row_group=1 << 19),
        Option("before, row groups 2^21", BEFORE, row_group=1 << 21),
        Option("ints PLAIN/delta per column, zstd 7", mixed),
        Option("ints PLAIN/delta, zstd 3 on ints, 7 on the rest", mixed | {"compression_level": levels(3, 7)}),
        Option("chosen: parquet_options('book')", chosen),
        Option("chosen, zstd 3", chosen | {"compression_level": 3}),
        Option("chosen, zstd 9", chosen | {"compression_level": 9}),
        Option("chosen, 8 MiB pages", chosen | {"data_page_size": 1 << 23}),
        Option("chosen, rows by side then price", chosen,
               order=within_message(("side_text", "ascending"), ("price", "ascending"))),
        Option("chosen, rows by side, removals first, price", chosen,
               order=within_message(*removals_first, ("price", "ascending"))),
        Option("chosen, rows by side, removals first, outward", chosen,
               order=within_message(*removals_first, ("outward", "ascending"))),
        Option("chosen, row groups 2^19", chosen, row_group=1 << 19),
        Option("chosen, row groups 2^21", chosen, row_group=1 << 21),
        Option("chosen, zstd 15 (capture only)", chosen | {"compression_level": 15}, capture_only=True),
        Option("chosen, zstd 19 (capture only)", chosen | {"compression_level": 19}, capture_only=True),
        Option("chosen, zstd 22 (capture only)", chosen | {"compression_level": 22}, capture_only=True),
        Option("chosen, brotli 11 (capture only; Spark cannot read brotli)",
               chosen | {"compression": "brotli", "compression_level": 11}, capture_only=True),
        Option("contract change: int64 ticks and lots, dictionaries", chosen, integers=True),
        Option("contract change: int64 ticks PLAIN, lots BYTE_STREAM_SPLIT", integer_settings(chosen),
               integers=True),
        Option("compact before: zstd 9", settings(delta, 9), compact=True),
        Option("compact chosen: parquet_options('book', archival=True)", archival, compact=True),
        Option("compact chosen, row groups 2^22", archival | {"max_rows_per_page": 1 << 22}, row_group=1 << 22,
               compact=True),
    ]


# ---- the data ------------------------------------------------------------------------------------------------------

def book_files(root: Path, limit: int | None) -> dict[str, list[str]]:
    """The day's book files per market, in time order, as the dataset lists them."""
    data = Dataset(str(root))
    out: dict[str, list[str]] = {}
    for partition in data.partitions("book"):
        paths = sorted(path for path, _ in data.files(partition))
        out.setdefault(partition.market, []).extend(paths[:limit] if limit else paths)
    return out


def one_tile(files: dict[str, list[str]]) -> dict[str, list[pa.Table]]:
    """The capture itself: each market's rows from the first snapshot up to the second tile's snapshot."""
    out = {}
    for market, paths in files.items():
        table = pq.read_table(paths[0], schema=BOOK)
        snapshot = table["snapshot"].to_numpy(zero_copy_only=False)
        starts = [i for i in range(1, len(snapshot)) if snapshot[i] and not snapshot[i - 1]]
        out[market] = [table.slice(0, starts[0]) if starts else table]
    return out


def perturbed_day(files: dict[str, list[str]], out: Path) -> dict[str, list[str]]:
    """The day with every tile made different from the others: its prices moved by a random walk of whole ticks
    (a day's drift) and its non-zero sizes scaled by a factor of its own (rounded to 0.0001), so that no value
    sequence repeats between tiles. Pessimistic where the tiled day is optimistic: real sizes do recur over a
    day (round lots, levels that keep their size), here none does across tiles."""
    import numpy as np

    rng = np.random.default_rng(15)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, list[str]] = {}
    for market, paths in files.items():
        tiles, last_snapshot = -1, False
        drift = np.cumsum(rng.normal(0, 40, 10_000).round())  # ticks of 0.01 per tile
        scale = rng.uniform(0.9, 1.1, 10_000)
        for i, path in enumerate(paths):
            table = pq.read_table(path, schema=BOOK)
            snapshot = table["snapshot"].to_numpy(zero_copy_only=False)
            starts = snapshot & ~np.concatenate([[last_snapshot], snapshot[:-1]])
            tile = np.maximum(tiles + np.cumsum(starts), 0)
            tiles, last_snapshot = int(tile[-1]), bool(snapshot[-1])
            price = table["price"].to_numpy(zero_copy_only=False)
            amount = table["amount"].to_numpy(zero_copy_only=False)
            new_price = np.round(price + 0.01 * drift[tile], 2)
            new_amount = np.where(amount == 0, amount, np.maximum(np.round(amount * scale[tile], 4), 0.0001))
            table = table.set_column(BOOK.get_field_index("price"), "price", pa.array(new_price, mask=np.isnan(price)))
            table = table.set_column(BOOK.get_field_index("amount"), "amount",
                                     pa.array(new_amount, mask=np.isnan(amount)))
            target = out / f"{market}-{i}.parquet"
            pq.write_table(table.cast(BOOK), target, compression="zstd", compression_level=1)
            result.setdefault(market, []).append(str(target))
    return result


def grid(root: Path) -> dict[str, tuple[float, float]]:
    """Each market's (tick size, step size) as the day's instruments table recorded them."""
    data = Dataset(str(root))
    out = {}
    for partition in data.partitions("instruments"):
        for path, _ in data.files(partition):
            row = pq.read_table(path, columns=["tick_size", "step_size"]).to_pylist()[-1]
            out[partition.market] = (row["tick_size"], row["step_size"])
    return out


def repeated_levels(tile: dict[str, list[pa.Table]]) -> int:
    """Messages of the capture that name one (side, price) twice: reordering rows inside them would change the
    book the rebuild rule gives, so a row order other than the recorded one is only safe while this is 0."""
    repeats = 0
    for parts in tile.values():
        for table in parts:
            keys = table.select(["msg", "side", "price"]).cast(
                pa.schema([("msg", pa.int64()), ("side", pa.string()), ("price", pa.float64())]))
            counts = keys.group_by(["msg", "side", "price"]).aggregate([([], "count_all")])
            twice = counts.filter(pc.greater(counts["count_all"], 1))
            repeats += len(pc.unique(twice["msg"]))
    return repeats


def raw_gzip_bytes() -> dict[str, int]:
    """The book's raw JSON as Binance sent it (depth messages and REST snapshots of each capture), gzipped."""
    out = {}
    for market, path in CAPTURES.items():
        with gzip.open(path, "rb") as fh:
            depth = b"".join(line for line in fh if b"depthUpdate" in line or b"lastUpdateId" in line)
        out[market] = len(gzip.compress(depth, compresslevel=6))
    return out


# ---- where the bytes go ---

def column_bytes(table: pa.Table, options: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """``table`` written in one file with ``options``: per column, (dictionary page bytes, data page bytes)."""
    import io

    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, **copy.deepcopy(options))
    md = pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata
    out: dict[str, tuple[int, int]] = {}
    for g in range(md.num_row_groups):
        for c in range(md.num_columns):
            col = md.row_group(g).column(c)
            dictionary = col.data_page_offset - col.dictionary_page_offset if col.has_dictionary_page else 0
            old = out.get(col.path_in_schema, (0, 0))
            out[col.path_in_schema] = (old[0] + dictionary, old[1] + col.total_compressed_size - dictionary)
    return out


def profile(tile: dict[str, list[pa.Table]]) -> None:
    """Where the capture's bytes go with the recorder's options: per column, the dictionary page and the data
    pages; then the diffs of ever longer stretches of each capture on their own, which shows what a longer file
    (a rotation holds 15 minutes) does to the cost per row: the data pages stay, the dictionaries are spread over
    more rows (the distinct sizes grow more slowly than the rows). Spot's second capture continues its first, so
    spot is also shown over both: 11 minutes of real diffs, the longest real stretch there is here."""
    chosen = parquet_options("book")
    for market, parts in tile.items():
        table = pa.concat_tables(parts)
        n = table.num_rows
        sizes = column_bytes(table, chosen)
        total = sum(a + b for a, b in sizes.values())
        print(f"{market}: {n:,} rows, {total / n:.3f} B/row; per column, B/row (dictionary page + data pages):")
        print("  " + ", ".join(f"{name} {(d + p) / n:.3f}" + (f" ({d / n:.3f} + {p / n:.3f})" if d else "")
                               for name, (d, p) in sizes.items() if (d + p) / n >= 0.001))
        by_length(table, (0.25, 0.5, 0.75, 1.0))
    both = pa.Table.from_batches([capture_tables("spot", (CAPTURES["spot"], SPOT_NEXT))["book"]])
    print(f"spot over both captures ({SPOT_NEXT.name} continues the first):")
    by_length(both, (0.125, 0.25, 0.5, 0.75, 1.0))


def by_length(table: pa.Table, shares: tuple[float, ...]) -> None:
    """The diffs after ``table``'s first snapshot, the first ``share`` of them each written on their own."""
    chosen = parquet_options("book")
    snapshot = table["snapshot"].to_numpy(zero_copy_only=False)
    first = int(snapshot.argmin())
    recv = table["ts_recv"].cast(pa.int64()).to_numpy()
    for share in shares:
        end = first + int((table.num_rows - first) * share)
        part = table.slice(first, end - first)
        sizes = column_bytes(part, chosen)
        rows = part.num_rows
        total = sum(a + b for a, b in sizes.values())
        price, amount = sizes["price"], sizes["amount"]
        print(f"  diffs of the first {(recv[end - 1] - recv[first]) / 60e9:4.1f} min ({rows:,} rows): "
              f"{total / rows:.3f} B/row; price {price[0] / rows:.3f} + {price[1] / rows:.3f}, "
              f"amount {amount[0] / rows:.3f} + {amount[1] / rows:.3f} (dictionary + data); "
              f"{len(pc.unique(part['amount'])):,} distinct sizes")


# ---- measuring -----------------------------------------------------------------------------------------------------

def encode(tables: Iterator[pa.Table], target: Path, option: Option, market: str) -> float:
    """Write ``tables`` as one Parquet file the way nova.core.journal does; returns the CPU seconds spent."""
    cpu = 0.0
    writer = None
    for table in tables:
        if option.order is not None:
            table = option.order(table)
        if option.integers:
            table = integer_units(table, market)
        started = time.process_time()
        if writer is None:
            # a copy: pyarrow folds use_byte_stream_split into the column_encoding it is given
            writer = pq.ParquetWriter(target, INTEGER_BOOK if option.integers else BOOK,
                                      **copy.deepcopy(option.options))
        writer.write_table(table, row_group_size=option.row_group)
        cpu += time.process_time() - started
    if writer is not None:
        started = time.process_time()
        writer.close()
        cpu += time.process_time() - started
    return cpu


def decode(paths: list[Path]) -> tuple[int, float]:
    """The replay's book columns into numpy, one thread: (rows, CPU seconds)."""
    from replay.reader import BATCH_ROWS

    rows, started = 0, time.process_time()
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS["book"], columns=list(COLUMNS["book"]),
                                                       use_threads=False):
            for column in batch.columns:
                if pa.types.is_dictionary(column.type):
                    column = column.indices
                column.to_numpy(zero_copy_only=False)
            rows += batch.num_rows
    return rows, time.process_time() - started


def measure(option: Option, files: dict[str, list[str]], tile: dict[str, list[pa.Table]],
            perturbed: dict[str, list[str]] | None, workdir: Path, repeat: int) -> dict[str, Any]:
    def tables(paths: list[str]) -> Iterator[pa.Table]:
        return (pq.read_table(p, schema=BOOK) for p in paths)

    def groups(paths: list[str]) -> list[list[str]]:
        return [paths] if option.compact else [[p] for p in paths]

    best_cpu, size, rows = float("inf"), 0, 0
    written: list[Path] = []
    day = {} if option.capture_only else files
    for _ in range(repeat if day else 0):
        cpu, size, written = 0.0, 0, []
        for market, paths in day.items():
            for i, group in enumerate(groups(paths)):
                target = workdir / f"{market}-{i}.parquet"
                cpu += encode(tables(group), target, option, market)
                size += target.stat().st_size
                written.append(target)
        best_cpu = min(best_cpu, cpu)
    perturbed_size = 0
    for market, paths in ({} if option.capture_only else perturbed or {}).items():
        for i, group in enumerate(groups(paths)):
            target = workdir / f"perturbed-{market}-{i}.parquet"
            encode(tables(group), target, option, market)
            perturbed_size += target.stat().st_size
            target.unlink()
    tile_size = tile_rows = 0
    tile_cpu = 0.0
    for market, parts in tile.items():
        target = workdir / f"tile-{market}.parquet"
        tile_cpu += encode(iter(parts), target, option, market)
        tile_size += target.stat().st_size
        tile_rows += sum(t.num_rows for t in parts)
        if option.capture_only:
            written.append(target)
    if option.capture_only:  # the CPU figures come from the capture
        best_cpu, rows = tile_cpu, tile_rows
    decode_cpu = float("inf")
    for _ in range(repeat):
        rows, spent = decode(written)
        decode_cpu = min(decode_cpu, spent)
    md = pq.ParquetFile(written[0]).metadata
    encodings = {md.row_group(0).column(i).path_in_schema: "/".join(sorted(md.row_group(0).column(i).encodings))
                 for i in range(md.num_columns)}
    for path in written:
        path.unlink()
    for market in tile:
        (workdir / f"tile-{market}.parquet").unlink(missing_ok=True)
    return {"option": option.name, "bytes_per_row": None if option.capture_only else size / rows,
            "capture_bytes_per_row": tile_size / tile_rows,
            "perturbed_bytes_per_row": perturbed_size / rows if perturbed and not option.capture_only else None,
            "encode_cpu_s": best_cpu, "encode_ns_per_row": best_cpu / rows * 1e9,
            "decode_rows_per_cpu_s": rows / decode_cpu, "rows": rows, "price_encodings": encodings["price"],
            "ts_recv_encodings": encodings["ts_recv"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=6.0, help="hours of bench/replay.py's day (from 00:00 UTC)")
    parser.add_argument("--dir", type=Path, default=None, help="where that day is cached (default: per --hours)")
    parser.add_argument("--files", type=int, default=None, help="only the first N book files of each market")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many encodes and decodes")
    parser.add_argument("--only", nargs="*", help="only the options whose names contain one of these")
    parser.add_argument("--no-perturbed", action="store_true", help="skip the day with its tiles made different")
    parser.add_argument("--profile", action="store_true", help="only where the capture's bytes go (per column, "
                        "dictionary and data pages, and by length of file), with the recorder's options")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.gettempdir()) / f"nova-bench-{args.hours:g}h"
    info = build_dataset(root, args.hours)
    files = book_files(root, args.files)
    tile = one_tile(files)
    UNITS.update(grid(root))
    if args.profile:
        profile(tile)
        return
    rows = sum(pq.ParquetFile(p).metadata.num_rows for paths in files.values() for p in paths)
    tile_rows = {m: sum(t.num_rows for t in parts) for m, parts in tile.items()}
    gz = raw_gzip_bytes()
    stored = sum(p.stat().st_size for p in CAPTURES.values())
    baseline = sum(gz.values()) / sum(tile_rows.values())
    print(f"dataset {root}: {info['tiles']} tiles, {rows:,} book rows in {sum(map(len, files.values()))} files; "
          f"one tile (the capture): {tile_rows}; messages of the capture naming a (side, price) twice: "
          f"{repeated_levels(tile)}")
    print(f"baseline, raw gzip JSON of the book (depth + snapshots): {baseline:.3f} B per book row; the capture files "
          f"as stored (every stream): {stored / sum(tile_rows.values()):.3f}")
    print(f"{'option':58s} {'B/row day':>9s} {'perturbed':>9s} {'capture':>8s} {'encode CPU s':>12s} {'ns/row':>7s} "
          f"{'decode M rows/CPU-s':>19s}  price encodings")
    results = []
    with tempfile.TemporaryDirectory(dir=root.parent) as work:
        perturbed = None if args.no_perturbed else perturbed_day(files, Path(work) / "perturbed")
        for option in options():
            if args.only and not any(word in option.name for word in args.only):
                continue
            try:
                r = measure(option, files, tile, perturbed, Path(work), args.repeat)
            except (OSError, ValueError, pa.ArrowException) as e:  # an option pyarrow writes but cannot read back
                print(f"{option.name:58s} fails: {str(e).splitlines()[0]}", flush=True)
                results.append({"option": option.name, "error": str(e)})
                continue
            results.append(r)
            mixed_up = "-" if r["perturbed_bytes_per_row"] is None else f"{r['perturbed_bytes_per_row']:9.3f}"
            whole = "-" if r["bytes_per_row"] is None else f"{r['bytes_per_row']:9.3f}"
            print(f"{option.name:58s} {whole:>9s} {mixed_up:>9s} {r['capture_bytes_per_row']:8.3f} "
                  f"{r['encode_cpu_s']:12.2f} {r['encode_ns_per_row']:7.0f} {r['decode_rows_per_cpu_s'] / 1e6:19.2f}"
                  f"  {r['price_encodings']}", flush=True)
    print(json.dumps({"bench": "storage", "hours": args.hours, "book_rows": rows, "raw_gzip_bytes_per_row": baseline,
                      "capture_files_bytes_per_row": stored / sum(tile_rows.values()), "results": results}))


if __name__ == "__main__":
    main()
