"""The book's storage options are the ones the recorder and ``nova compact`` really write, and every reader reads them.

A real capture (USDT-M ETHUSDT, ~430 k book rows) goes through the recorder's sequencer, row builder and
``DatasetWriter`` (journal, then Parquet at close); the file's own Parquet metadata must show the encodings of
``nova.core.contract.parquet_options`` (bench/storage.py measured them: PLAIN per-message ids and receive time,
delta-packed event times and message numbers, dictionaries for side, price and amount, zstd) and pages that
are not cut every 20,000 rows (pyarrow's default, which costs ~4% of the file). DuckDB, pyarrow and polars
then read the recorded values back unchanged, before and after ``nova compact``.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from nova.analysis.compact import compact
from nova.core.contract import BOOK, parquet_options
from nova.core.dataset import Dataset
from recorder.rows import book_batch
from recorder.sequencer import NULL, BookSequencer
from recorder.writer import DatasetWriter
from tests.helpers import ETH, realdata_file

PYARROW_DEFAULT_PAGE_ROWS = 20_000


def capture_book() -> pa.RecordBatch:
    """The USDT-M capture's book rows as the recorder builds them (snapshot, then every diff)."""
    seq = BookSequencer("perp", 1, ledger=lambda *a: None, request_resync=lambda: None)
    with gzip.open(realdata_file("usdm_ethusdt_20240808.gz"), "rb") as fh:
        for line in fh:
            stamp, body = line.split(b" ", 1)
            obj = orjson.loads(body)
            d = obj.get("data", obj)
            if "lastUpdateId" in d:
                seq.on_snapshot(int(stamp), d.get("E", NULL), d.get("T", NULL), d["lastUpdateId"],
                                orjson.dumps({"b": d["bids"], "a": d["asks"]}).decode(), 0)
            elif d.get("e") == "depthUpdate":
                seq.on_diff((int(stamp), d["E"], d.get("T", NULL), d["U"], d["u"], d.get("pu", NULL),
                             orjson.dumps(d).decode()))
    seq.on_stop()
    batch, _, _ = book_batch(seq.take())
    return batch


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """A dataset holding the capture's book, written by the recorder's writer, and the rows it was given."""
    root = tmp_path_factory.mktemp("storage") / "data"
    batch = capture_book()
    writer = DatasetWriter(str(root))
    writer.write("book", "perp", ETH, batch)
    writer.close()
    return root, pa.Table.from_batches([batch]).cast(BOOK)


def book_files(root: Path) -> list[str]:
    data = Dataset(str(root))
    return [path for partition in data.partitions("book") for path, _ in data.files(partition)]


# ---- reading page headers (Thrift compact protocol), so the page layout itself is checked ---------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _zigzag(buf: bytes, pos: int) -> tuple[int, int]:
    value, pos = _varint(buf, pos)
    return (value >> 1) ^ -(value & 1), pos


def _value(buf: bytes, pos: int, kind: int) -> tuple[object, int]:
    if kind in (1, 2):  # bool inside a struct: the type is the value
        return kind == 1, pos
    if kind == 3:
        return buf[pos], pos + 1
    if kind in (4, 5, 6):
        return _zigzag(buf, pos)
    if kind == 7:
        return struct.unpack_from("<d", buf, pos)[0], pos + 8
    if kind == 8:
        size, pos = _varint(buf, pos)
        return buf[pos:pos + size], pos + size
    if kind in (9, 10):
        header = buf[pos]
        pos += 1
        size, element = header >> 4, header & 0x0F
        if size == 15:
            size, pos = _varint(buf, pos)
        items = []
        for _ in range(size):
            item: object
            if element in (1, 2):  # bools in a list are one byte each
                item, pos = buf[pos] == 1, pos + 1
            else:
                item, pos = _value(buf, pos, element)
            items.append(item)
        return items, pos
    if kind == 11:
        size, pos = _varint(buf, pos)
        if not size:
            return {}, pos
        types = buf[pos]
        pos += 1
        out = {}
        for _ in range(size):
            key, pos = _value(buf, pos, types >> 4)
            out[key], pos = _value(buf, pos, types & 0x0F)
        return out, pos
    if kind == 12:
        return _struct(buf, pos)
    raise AssertionError(f"unknown Thrift compact type {kind}")


def _struct(buf: bytes, pos: int) -> tuple[dict[int, object], int]:
    fields: dict[int, object] = {}
    last = 0
    while True:
        header = buf[pos]
        pos += 1
        if header == 0:
            return fields, pos
        delta, kind = header >> 4, header & 0x0F
        if delta:
            field = last + delta
        else:
            field, pos = _zigzag(buf, pos)
        fields[field], pos = _value(buf, pos, kind)
        last = field


ENCODINGS = {0: "PLAIN", 2: "PLAIN_DICTIONARY", 3: "RLE", 5: "DELTA_BINARY_PACKED", 6: "DELTA_LENGTH_BYTE_ARRAY",
             7: "DELTA_BYTE_ARRAY", 8: "RLE_DICTIONARY", 9: "BYTE_STREAM_SPLIT"}


def data_pages(path: str, column: str) -> Iterator[tuple[int, str]]:
    """(values, encoding) of each data page of ``column`` in every row group of the file: the page headers say
    what a reader must decode, where the column chunk's encoding list only says what occurs somewhere."""
    metadata = pq.ParquetFile(path).metadata
    index = BOOK.get_field_index(column)
    raw = Path(path).read_bytes()
    for group in range(metadata.num_row_groups):
        chunk = metadata.row_group(group).column(index)
        pos = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
        end = pos + chunk.total_compressed_size
        while pos < end:
            header, pos = _struct(raw, pos)
            pos += header[3]  # type: ignore[operator]  # compressed_page_size
            if header[1] in (0, 3):  # DATA_PAGE (header in field 5) or DATA_PAGE_V2 (field 8)
                page = header[5] if header[1] == 0 else header[8]
                yield page[1], ENCODINGS.get(page[2], str(page[2]))  # type: ignore[index]


# ---- the tests -----------------------------------------------------------------------------------------------------

def test_recorded_book_uses_the_chosen_encodings(recorded: tuple[Path, pa.Table]) -> None:
    root, rows = recorded
    files = book_files(root)
    assert files, "the recorder wrote no book file"
    options = parquet_options("book")
    chosen = options["column_encoding"]
    assert {n for n, e in chosen.items() if e == "PLAIN"} == {"ts_recv", "first_id", "last_id", "prev_id"}
    assert {n for n, e in chosen.items() if e == "DELTA_BINARY_PACKED"} == {"ts_event", "ts_trade", "msg"}
    expected = chosen | {"side": "RLE_DICTIONARY", "price": "RLE_DICTIONARY", "amount": "RLE_DICTIONARY",
                         "snapshot": "PLAIN", "stale": "PLAIN"}  # booleans: bit-packed, a bit a row before zstd
    assert set(expected) == set(BOOK.names)
    for path in files:
        metadata = pq.ParquetFile(path).metadata
        for group in range(metadata.num_row_groups):
            for i in range(metadata.num_columns):
                chunk = metadata.row_group(group).column(i)
                assert chunk.compression == "ZSTD", chunk.path_in_schema
        for name, encoding in expected.items():  # every page, so a dictionary that fell back would show
            assert {e for _, e in data_pages(path, name)} == {encoding}, name
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in files) == rows.num_rows


def test_recorded_pages_are_not_cut_every_20000_rows(recorded: tuple[Path, pa.Table]) -> None:
    root, rows = recorded
    assert rows.num_rows > 10 * PYARROW_DEFAULT_PAGE_ROWS  # the capture is long enough for the check to mean something
    for path in book_files(root):
        for column in ("ts_recv", "msg", "price", "amount"):
            pages = [values for values, _ in data_pages(path, column)]
            assert sum(pages) == pq.ParquetFile(path).metadata.num_rows, column
            assert max(pages) > PYARROW_DEFAULT_PAGE_ROWS, (column, pages)
            assert len(pages) <= len(rows) // PYARROW_DEFAULT_PAGE_ROWS // 3, (column, len(pages))


def test_page_reader_sees_pyarrows_default_pages(tmp_path: Path, recorded: tuple[Path, pa.Table]) -> None:
    """The page reader above can fail: the same rows written with pyarrow's default pages show 20,000-row pages."""
    _, rows = recorded
    path = tmp_path / "default.parquet"
    options = parquet_options("book")
    del options["max_rows_per_page"]
    with pq.ParquetWriter(path, BOOK, **options) as out:
        out.write_table(rows)
    pages = [values for values, _ in data_pages(str(path), "price")]
    assert max(pages) == PYARROW_DEFAULT_PAGE_ROWS and sum(pages) == rows.num_rows


def assert_readers_read(root: Path, rows: pa.Table) -> None:
    """DuckDB, pyarrow and polars read the book back as recorded: same types, same values, same order."""
    glob = f"{root}/book/**/*.parquet"
    expected = rows.select(["ts_recv", "msg", "last_id", "side", "price", "amount"])
    as_arrow = pads.dataset(f"{root}/book", format="parquet", partitioning="hive").to_table(
        columns=expected.column_names)
    assert as_arrow.schema.field("price").type == pa.float64()
    assert as_arrow.schema.field("side").type == BOOK.field("side").type
    assert as_arrow.equals(expected)
    con = duckdb.connect()
    query = con.sql(f"SELECT ts_recv, msg, last_id, side, price, amount FROM read_parquet('{glob}', "
                    "hive_partitioning = true, file_row_number = true) ORDER BY msg, file_row_number")
    from_duckdb = query.to_arrow_table() if hasattr(query, "to_arrow_table") else query.arrow()  # DuckDB 2 renamed it
    assert from_duckdb.schema.field("price").type == pa.float64()
    for name in ("msg", "last_id", "price", "amount"):
        assert from_duckdb[name].to_pylist() == expected[name].to_pylist(), name  # msg order is the recorded order
    from_polars = pl.scan_parquet(glob, hive_partitioning=True).select(expected.column_names).collect()
    assert from_polars.schema["price"] == pl.Float64 and from_polars.schema["ts_recv"] == pl.Datetime("ns", "UTC")
    assert from_polars["price"].to_arrow().equals(expected["price"].combine_chunks())
    assert from_polars["amount"].to_arrow().equals(expected["amount"].combine_chunks())
    assert (from_polars["ts_recv"].to_arrow().cast(pa.int64())
            .equals(expected["ts_recv"].combine_chunks().cast(pa.int64())))
    assert from_polars["last_id"].to_list() == expected["last_id"].to_pylist()


def test_every_reader_reads_the_recorded_book(recorded: tuple[Path, pa.Table]) -> None:
    root, rows = recorded
    assert_readers_read(root, rows)


def test_compacted_book_keeps_the_encodings_and_readers(tmp_path: Path, recorded: tuple[Path, pa.Table]) -> None:
    """``nova compact`` (archival settings) merges the rotated files into one with the same encodings and pages."""
    _, rows = recorded
    root = tmp_path / "data"
    writer = DatasetWriter(str(root), rotate_s=120)  # the capture's 6 minutes in 2-minute files
    writer.write("book", "perp", ETH, rows.combine_chunks().to_batches()[0])
    writer.close()
    before = book_files(root)
    date = Dataset(str(root)).partitions("book")[0].date
    results = compact(root, date, today="2999-01-01")
    after = book_files(root)
    assert len(before) >= 3 and len(after) == 1, (before, after)
    assert [r.rows for r in results if r.table == "book"] == [rows.num_rows], results
    metadata = pq.ParquetFile(after[0]).metadata
    encodings = {metadata.row_group(0).column(i).path_in_schema: set(metadata.row_group(0).column(i).encodings)
                 for i in range(metadata.num_columns)}
    assert "RLE_DICTIONARY" not in encodings["ts_recv"] and "DELTA_BINARY_PACKED" in encodings["msg"]
    assert {e for _, e in data_pages(after[0], "ts_recv")} == {"PLAIN"}
    assert {e for _, e in data_pages(after[0], "price")} == {"RLE_DICTIONARY"}
    assert max(values for values, _ in data_pages(after[0], "price")) > PYARROW_DEFAULT_PAGE_ROWS
    assert_readers_read(root, rows)
