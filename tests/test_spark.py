"""Spark reads the dataset with real timestamps (nova.analysis.spark), and answers as DuckDB does.

A real pyspark session in local mode reads a crafted recording: two UTC dates (tests.helpers.write_midnight_dataset:
book, bbo, funding, events), plus trades, liquidations, open interest and instruments at times with a
sub-microsecond part, a ledger file written before the provenance columns existed, a bookTicker disconnect,
hidden files, and replay's spread table. Every table is compared with DuckDB reading the same files: row
counts, every row, and min/max of every timestamp column exactly in ns (the ``_ns`` columns) and in µs (the
converted TIMESTAMPs against ``nova sql``'s views). The README's three ``nova sql`` examples, written in Spark
SQL over the registered views, give the answers of ``nova sql``'s macros.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nova.analysis import spark as nova_spark
from nova.analysis.sql import connect
from nova.core.contract import SCHEMAS
from nova.core.dataset import Dataset, new_file_name
from nova.core.errors import NovaError
from nova.core.validity import BOOK_BREAKS, QUOTE_BREAKS
from recorder.rows import (
    InstrumentRow,
    LiquidationRow,
    OpenInterestRow,
    TradeRow,
    event_row,
    table_batch,
)
from recorder.writer import DatasetWriter
from replay import Replay
from tests.helpers import AFTER, BEFORE, ETH, MIDNIGHT, REPO, assert_one_sentence, write_midnight_dataset

if nova_spark.java_binary() is None:
    pytest.skip("Spark needs a Java 17 runtime (no java on PATH and no JAVA_HOME); CI has one",
                allow_module_level=True)

ODD = 123_456_789  # a sub-second part with sub-microsecond digits: truncation to µs is visible
DISCONNECT_NS = MIDNIGHT + 1_990_000_001  # the perp bookTicker stream drops after its quote at +1.985 s


def _ts(ns: int) -> str:
    """A Spark/DuckDB timestamp literal's text (UTC) of a time in ns (whole seconds only)."""
    assert ns % 10**9 == 0
    return duckdb.connect().execute("SELECT strftime(make_timestamptz(? // 1000) AT TIME ZONE 'UTC', "
                                    "'%Y-%m-%d %H:%M:%S')", [ns]).fetchall()[0][0]


def write_more_tables(root: Path) -> None:
    """Trades (both markets), liquidations, open interest, instruments, a bookTicker ledger, and an old-style
    ledger file without the provenance columns, across midnight, at times that are not whole microseconds."""
    writer = DatasetWriter(str(root), rotate_s=900, recorder_id="spark-test")
    t0 = MIDNIGHT - 10 * 10**9 + ODD
    for market in ("spot", "perp"):
        trades = [TradeRow(ts_recv=t0 + k * 333_333_333, ts_event=t0 + k * 333_333_333 - 1_500_001,
                           trade_id=7_000 + k, price=3000.0 + 0.01 * k, amount=0.25 * (1 + k % 3),
                           taker_side="buy" if k % 2 else "sell") for k in range(60)]
        writer.write("trades", market, ETH, table_batch("trades", trades))
        instruments = [InstrumentRow(ts_recv=t0 + 1, tick_size=0.01, step_size=0.0001 if market == "spot" else 0.001,
                                     min_notional=5.0, status="TRADING",
                                     contract_type="PERPETUAL" if market == "perp" else None, filters="[]")]
        writer.write("instruments", market, ETH, table_batch("instruments", instruments))
    liquidations = [LiquidationRow(ts_recv=t0 + k * 4_000_000_001, ts_event=t0 + k * 4_000_000_001 - 3,
                                   ts_trade=t0 + k * 4_000_000_001 - 7, side="sell" if k % 2 else "buy",
                                   price=2990.0 + k, amount=0.014, average_price=2990.0 + k, filled_amount=0.014,
                                   status="FILLED") for k in range(5)]
    writer.write("liquidations", "perp", ETH, table_batch("liquidations", liquidations))
    interest = [OpenInterestRow(ts_recv=t0 + k * 10**9 + 7, ts_event=t0 + k * 10**9 - 1_000_000,
                                open_interest=10659.5 + k) for k in range(20)]
    writer.write("open_interest", "perp", ETH, table_batch("open_interest", interest))
    ledger = [event_row(ts_recv=DISCONNECT_NS, stream="bbo", kind="disconnect", detail="crafted"),
              event_row(ts_recv=DISCONNECT_NS + 5_000_000, stream="bbo", kind="reconnect", detail="crafted")]
    writer.write("events", "perp", ETH, table_batch("events", ledger))
    writer.close()

    data = Dataset(root)  # a ledger file from before the provenance columns: they read as null
    old = table_batch("events", [event_row(ts_recv=t0 - 5, stream="trades", kind="subscribed", detail="old")])
    old = old.select([n for n in SCHEMAS["events"].names if n not in ("source", "recorder_id", "versions")])
    folder = Path(data.partition("events", "spot", ETH, BEFORE).path)
    pq.write_table(pa.Table.from_batches([old]), folder / new_file_name(t0 - 5, "older"))


def add_hidden_files(root: Path) -> None:
    """Parquet files under hidden names (a temporary, an underscore file) and a journal: never the table's."""
    data = Dataset(root)
    partition = data.partitions("book")[0]
    path, _ = data.files(partition)[0]
    table = pq.read_table(path, partitioning=None)
    pq.write_table(table, f"{partition.path}/.{Path(path).name}.tmp")
    pq.write_table(table, f"{partition.path}/_{Path(path).name}")
    Path(f"{partition.path}/.{Path(path).stem}.arrows").write_bytes(b"not arrow")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spark") / "data"
    write_midnight_dataset(root)
    write_more_tables(root)
    Replay(str(root), "ETH/USDT", BEFORE, AFTER).run(None, write=True)  # the spread table
    add_hidden_files(root)
    return root


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    session = nova_spark.spark_session("nova-tests", master="local[2]", shuffle_partitions=2)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def views(spark: Any, root: Path) -> list[str]:
    return nova_spark.register_views(spark, root)


@pytest.fixture(scope="module")
def duck(root: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(root)  # nova sql's views and macros over the same root
    yield con
    con.close()


def files_of(root: Path, table: str) -> list[str]:
    return [p for p, _ in Dataset(root).table_files(table)]


def duck_raw(root: Path, table: str) -> str:
    listing = ", ".join(f"'{p}'" for p in files_of(root, table))
    return f"read_parquet([{listing}], hive_partitioning = true, union_by_name = true)"


# ---- every table, every row ----------------------------------------------------------------------------------

def test_every_table_present_is_a_view(views: list[str], root: Path) -> None:
    expected = [t for t in nova_spark.TABLES if files_of(root, t)]
    assert views == expected
    assert set(views) == {"book", "bbo", "trades", "funding", "liquidations", "open_interest", "instruments",
                          "events", "spread"}


@pytest.mark.parametrize("table", nova_spark.TABLES)
def test_table_reads_as_duckdb_reads_it(spark: Any, views: list[str], root: Path, table: str,
                                        duck: duckdb.DuckDBPyConnection) -> None:
    schema = nova_spark.table_schema(table)
    times = [f.name for f in schema if pa.types.is_timestamp(f.type)]
    assert times, table
    others = [f.name for f in schema if f.name not in times] + ["exchange", "market", "symbol", "date"]
    frame = spark.table(table)
    assert frame.columns == [c for f in schema for c in ((f.name, f.name + "_ns") if f.name in times else (f.name,))] \
        + ["exchange", "market", "symbol", "date"]
    assert {f.name: f.dataType.typeName() for f in frame.schema.fields if f.name in times} == \
        dict.fromkeys(times, "timestamp")

    # counts, and min/max of every timestamp in ns (exact) and as TIMESTAMPs (µs, as nova sql's views show them)
    aggregates = ", ".join(f"min({t}_ns), max({t}_ns), unix_micros(min({t})), unix_micros(max({t}))" for t in times)
    got = spark.sql(f"SELECT count(*), {aggregates} FROM {table}").collect()[0]
    exact = ", ".join(f"epoch_ns(min({t})), epoch_ns(max({t}))" for t in times)
    want_ns = duck.execute(f"SELECT count(*), {exact} FROM {duck_raw(root, table)}").fetchall()[0]
    micros = ", ".join(f"epoch_us(min({t})), epoch_us(max({t}))" for t in times)
    want_us = duck.execute(f"SELECT count(*), {micros} FROM {table}").fetchall()[0]
    assert got[0] == want_ns[0] == want_us[0] > 0
    for i in range(len(times)):
        assert tuple(got[1 + 4 * i: 3 + 4 * i]) == tuple(want_ns[1 + 2 * i: 3 + 2 * i]), (table, times[i])
        assert tuple(got[3 + 4 * i: 5 + 4 * i]) == tuple(want_us[1 + 2 * i: 3 + 2 * i]), (table, times[i])

    # every row: the exact ns, the truncated µs, every other column and the partition columns
    spark_cols = [f"{t}_ns" for t in times] + [f"unix_micros({t})" for t in times] + others
    stored = {name for name, *_ in duck.execute(f"DESCRIBE SELECT * FROM {duck_raw(root, table)}").fetchall()}
    # columns no file has (the spread's size-aware ones, without --size) are null in Spark
    duck_cols = [f"epoch_ns({t})" for t in times] + [f"epoch_ns({t}) // 1000" for t in times] + \
        [c if c in stored else "NULL" for c in others]
    rows = [tuple(r) for r in spark.sql(f"SELECT {', '.join(spark_cols)} FROM {table}").collect()]
    expected = duck.execute(f"SELECT {', '.join(duck_cols)} FROM {duck_raw(root, table)}").fetchall()
    key = lambda row: tuple((v is None, str(v)) for v in row)  # noqa: E731
    assert sorted(rows, key=key) == sorted(expected, key=key)


def test_times_keep_their_nanoseconds_and_truncate_to_microseconds(spark: Any, views: list[str]) -> None:
    rows = spark.sql("SELECT ts_recv_ns, unix_micros(ts_recv) FROM trades WHERE market = 'spot' "
                     "ORDER BY ts_recv_ns LIMIT 2").collect()
    first = MIDNIGHT - 10 * 10**9 + ODD
    assert [tuple(r) for r in rows] == [(first, first // 1000), (first + 333_333_333, (first + 333_333_333) // 1000)]
    assert first % 1000 != 0  # the sub-microsecond part exists, and only the _ns column keeps it


def test_old_files_read_with_the_newer_columns_null(spark: Any, views: list[str]) -> None:
    rows = spark.sql("SELECT kind, source, recorder_id, versions, date FROM events WHERE detail = 'old'").collect()
    assert [(r.kind, r.source, r.recorder_id, r.versions, str(r.date)) for r in rows] == \
        [("subscribed", None, None, None, BEFORE)]


def test_hidden_files_are_never_read(spark: Any, root: Path) -> None:
    partition = Dataset(root).partitions("book")[0]
    hidden = sorted(p.name for p in Path(partition.path).iterdir() if p.name.startswith((".", "_")))
    assert len(hidden) == 3, hidden
    listed = {p.rsplit("/", 1)[-1] for p in files_of(root, "book")}
    read = {Path(f).name for f in nova_spark.read_table(spark, root, "book").inputFiles()}
    assert read == listed and not read & set(hidden)
    # and the rows of a hidden copy are not counted: the visible partition's count equals its files' rows
    visible = sum(pq.ParquetFile(p).metadata.num_rows for p, _ in Dataset(root).files(partition))
    counted = nova_spark.read_table(spark, root, "book").where(
        f"market = '{partition.market}' AND date = DATE '{partition.date}'").count()
    assert counted == visible


def test_read_table_of_a_table_without_files_is_empty_with_its_columns(spark: Any, tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_midnight_dataset(root)
    frame = nova_spark.read_table(spark, root, "liquidations")
    assert frame.count() == 0
    assert frame.columns[:2] == ["ts_recv", "ts_recv_ns"] and frame.columns[-1] == "date"


# ---- the README's examples, in Spark SQL ---------------------------------------------------------------------

# The README's queries (/tmp/readme/spark.md, section "Spark"), with this recording's times.
INVENTORY = """
SELECT 'book' AS tbl, market, count(*) AS rows, count(DISTINCT msg) AS messages,
       min(ts_recv) AS first, max(ts_recv) AS last FROM book GROUP BY ALL
UNION ALL SELECT 'bbo', market, count(*), count(*), min(ts_recv), max(ts_recv) FROM bbo GROUP BY ALL
UNION ALL SELECT 'trades', market, count(*), count(*), min(ts_recv), max(ts_recv) FROM trades GROUP BY ALL
ORDER BY tbl, market
"""

TOP_OF_BOOK = """
WITH grid AS (SELECT explode(sequence(TIMESTAMP '{t0}',
                                      TIMESTAMP '{t1}' - INTERVAL 1 SECOND, INTERVAL 1 SECOND)) AS ts),
     q AS (SELECT * FROM bbo WHERE market = 'perp' AND symbol = 'ETH-USDT' AND ts_recv < TIMESTAMP '{t1}'
             AND date BETWEEN date(TIMESTAMP '{t0}' - INTERVAL 1 DAY) AND date(TIMESTAMP '{t1}')),
     breaks AS (SELECT ts_recv_ns FROM events WHERE market = 'perp' AND symbol = 'ETH-USDT' AND stream = 'bbo'
                  AND kind IN ('disconnect', 'error', 'start', 'stop')),
     merged AS (SELECT unix_micros(ts) * 1000 AS t, 2 AS k, NULL AS u, NULL AS quote, NULL AS brk FROM grid
                UNION ALL SELECT ts_recv_ns, 1, update_id, struct(ts_recv_ns AS r, bid_price, bid_amount,
                                 ask_price, ask_amount), NULL FROM q
                UNION ALL SELECT ts_recv_ns, 0, NULL, NULL, ts_recv_ns FROM breaks),
     asof AS (SELECT t, k, last(quote, true) OVER w AS quote, last(brk, true) OVER w AS brk FROM merged
              WINDOW w AS (ORDER BY t, k, u ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)),
     judged AS (SELECT *, quote IS NOT NULL AND (brk IS NULL OR brk < quote.r) AS valid FROM asof WHERE k = 2)
SELECT timestamp_micros(t div 1000) AS ts, if(valid, quote.bid_price, NULL) AS bid_price,
       if(valid, quote.bid_amount, NULL) AS bid_amount, if(valid, quote.ask_price, NULL) AS ask_price,
       if(valid, quote.ask_amount, NULL) AS ask_amount, (t - quote.r) / 1e6 AS quote_age_ms, valid
FROM judged ORDER BY ts
"""

BOOK_AT = """
WITH at AS (SELECT unix_micros(TIMESTAMP '{t}') * 1000 AS t),
     keys AS (SELECT msg, snapshot, stale, ts_recv_ns FROM book
              WHERE market = '{market}' AND symbol = 'ETH-USDT' AND date <= DATE '{day}'),
     upto AS (SELECT max(msg) AS m, max(ts_recv_ns) AS last_ns FROM keys, at WHERE ts_recv_ns <= at.t),
     early AS (SELECT min(msg) AS f FROM keys, at, upto WHERE ts_recv_ns > at.t AND msg <= upto.m),
     span AS (SELECT coalesce(f, m + 1) AS end_msg, last_ns FROM upto, early),
     snap AS (SELECT max(msg) AS snap_msg, max_by(ts_recv_ns, msg) AS snap_ns FROM keys, span
              WHERE snapshot AND NOT stale AND msg < end_msg),
     breaks AS (SELECT count(*) AS n FROM events, snap, at
                WHERE market = '{market}' AND symbol = 'ETH-USDT' AND stream = 'book'
                  AND kind IN ('gap', 'disconnect', 'start', 'stop') AND ts_recv_ns BETWEEN snap_ns AND at.t),
     live AS (SELECT side, price, max_by(amount, msg) AS amount FROM book, span, snap
              WHERE market = '{market}' AND symbol = 'ETH-USDT' AND date <= DATE '{day}'
                AND msg >= snap_msg AND msg < end_msg AND NOT stale AND side IS NOT NULL
              GROUP BY side, price),
     verdict AS (SELECT snap_ns IS NOT NULL AND n = 0 AS valid FROM snap, breaks),
     levels AS (SELECT *, row_number() OVER (PARTITION BY side
                                             ORDER BY if(side = 'bid', -price, price)) AS level
                FROM live WHERE amount > 0)
SELECT side, level, price, amount, true AS valid, (at.t - last_ns) / 1e6 AS quote_age_ms
FROM levels, span, at, verdict WHERE verdict.valid AND level <= {n}
UNION ALL SELECT NULL, NULL, NULL, NULL, false, NULL FROM verdict WHERE NOT valid
ORDER BY side DESC NULLS FIRST, level
"""


def test_the_ledger_kinds_in_the_examples_are_the_validity_rule() -> None:
    """The examples spell the break kinds out (a user copies them); they must be nova.core.validity's."""
    assert "kind IN ('disconnect', 'error', 'start', 'stop')" in TOP_OF_BOOK
    assert {"disconnect", "error", "start", "stop"} == QUOTE_BREAKS
    assert "kind IN ('gap', 'disconnect', 'start', 'stop')" in BOOK_AT
    assert {"gap", "disconnect", "start", "stop"} == BOOK_BREAKS


def test_inventory_query_answers_as_nova_sql(spark: Any, views: list[str], duck: duckdb.DuckDBPyConnection) -> None:
    got = [tuple(r) for r in spark.sql(
        f"SELECT tbl, market, rows, messages, unix_micros(first), unix_micros(last) FROM ({INVENTORY})").collect()]
    want = duck.execute(f"SELECT tbl, market, rows, messages, epoch_us(first), epoch_us(last) FROM ({INVENTORY})"
                        ).fetchall()
    assert got == want
    assert [r[:2] for r in got] == [(t, m) for t in ("bbo", "book", "trades") for m in ("perp", "spot")]


def test_top_of_book_query_answers_as_the_macro(spark: Any, views: list[str],
                                                duck: duckdb.DuckDBPyConnection) -> None:
    t0, t1 = _ts(MIDNIGHT - 3 * 10**9), _ts(MIDNIGHT + 4 * 10**9)  # across the date, over the disconnect
    columns = "bid_price, bid_amount, ask_price, ask_amount, quote_age_ms, valid"
    got = [tuple(r) for r in spark.sql(
        f"SELECT unix_micros(ts), {columns} FROM ({TOP_OF_BOOK.format(t0=t0, t1=t1)})").collect()]
    want = duck.execute(f"SELECT epoch_us(ts), {columns} FROM top_of_book('perp', 'ETH/USDT', '{t0}', '{t1}', "
                        "INTERVAL 1 SECOND)").fetchall()
    assert got == want
    assert len(got) == 7 and [r[-1] for r in got] == [True] * 5 + [False, True]  # +2 s: after the disconnect


@pytest.mark.parametrize(("market", "offset_ms", "valid"), [("spot", 3_000, True), ("perp", 3_000, True),
                                                             ("perp", -9_880, False), ("perp", -9_850, True),
                                                             ("spot", -25_000, False)])
def test_book_at_query_answers_as_the_macro(spark: Any, views: list[str], duck: duckdb.DuckDBPyConnection,
                                            market: str, offset_ms: int, valid: bool) -> None:
    """The perp's gap is ledgered at -9.9 s and its resync snapshot arrives at -9.85 s: no valid book between;
    nor before the first snapshot (-20 s)."""
    at = MIDNIGHT + offset_ms * 10**6
    t = duck.execute("SELECT strftime(make_timestamptz(? // 1000) AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S.%f')",
                     [at]).fetchall()[0][0]
    got = [tuple(r) for r in spark.sql(BOOK_AT.format(t=t, day=t[:10], market=market, n=5)).collect()]
    want = duck.execute(f"SELECT side, level, price, amount, valid, quote_age_ms "
                        f"FROM book_at('{market}', 'ETH-USDT', '{t}', 5)").fetchall()
    assert got == want
    assert len(got) == (10 if valid else 1) and {row[4] for row in got} == {valid}


# ---- one sentence for what is wrong --------------------------------------------------------------------------

def test_unknown_table_is_one_sentence(spark: Any, root: Path) -> None:
    with pytest.raises(NovaError, match=r"^'quotes' is not a table of Nova's dataset; the tables are book, bbo"):
        nova_spark.read_table(spark, root, "quotes")


def test_missing_root_is_one_sentence(spark: Any, tmp_path: Path) -> None:
    with pytest.raises(NovaError, match="does not exist; record something first"):
        nova_spark.register_views(spark, tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NovaError, match="holds no recording"):
        nova_spark.register_views(spark, tmp_path / "empty")


SESSION = ("import sys\nfrom nova.analysis.spark import spark_session\nfrom nova.core.errors import NovaError\n"
           "try:\n    spark_session()\nexcept NovaError as exc:\n    print(exc, file=sys.stderr)\n    sys.exit(2)\n"
           "print('started')\n")


def test_no_pyspark_is_one_sentence() -> None:
    """Without pyspark the module still imports; asking for a session says what to install."""
    script = "import sys\nsys.modules['pyspark'] = None\n" + SESSION
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = assert_one_sentence(done.stderr)
    assert line.startswith("Spark needs pyspark, which is not installed; pip install 'nova-recorder[spark]'"), line


@pytest.mark.parametrize("java_home", [None, "empty"])
def test_no_java_is_one_sentence(tmp_path: Path, java_home: str | None) -> None:
    """No java on PATH (and no JAVA_HOME), or a JAVA_HOME without bin/java: one sentence saying what to install,
    before pyspark tries to launch anything."""
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(tmp_path)  # a folder without java
    if java_home:
        (tmp_path / java_home).mkdir()
        env["JAVA_HOME"] = str(tmp_path / java_home)
    done = subprocess.run([sys.executable, "-c", SESSION], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2, (done.stdout, done.stderr)
    line = assert_one_sentence(done.stderr)
    assert "Spark needs Java 17" in line and "pip install 'nova-recorder[spark]'" in line, line
    assert ("JAVA_HOME=" in line) == bool(java_home), line
