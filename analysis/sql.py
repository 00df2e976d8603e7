"""``nova sql``: DuckDB over the dataset, with one view per table and a few macros researchers need daily.

Why views and macros rather than a query builder: researchers already speak SQL, and DuckDB reads the
hive-partitioned Parquet as is. Nova only adds the views (with ``exchange``, ``market``, ``symbol`` and
``date`` from the partition path) and the macros that encode the contract's rules, so a query like "the
book at 14:03:07" does not need the reader rule re-derived by hand.

Macros (all times are TIMESTAMPTZ or strings DuckDB can cast; ``mkt`` is 'spot' or 'perp'; ``sym`` like
'ETH-USDT'):

- ``top_of_book(mkt, sym, t0, t1, step)``: best bid/ask as of every ``step`` in [t0, t1), from bookTicker
  (the freshest top Binance publishes), as of the last update at or before each instant.
- ``book_at(mkt, sym, t, n)``: the book at instant ``t``, top ``n`` levels per side, rebuilt in SQL by the
  contract's rule: the last snapshot at or before ``t`` plus every later non-stale diff up to ``t``; the
  latest change of each price wins and size 0 removes it. A message counts from when it takes effect, the
  stream's largest receive time so far (as in replay): the diffs held back for a snapshot are written after
  it with earlier receive times, and count from the snapshot's, so nothing received after ``t`` is used.
- ``basis(sym, t0, t1, step)``: spot and perp mids and the basis in bps every ``step``, from bookTicker.

Partition dates are UTC dates: the macros prune them in UTC whatever the session's TimeZone.

The session is read-only: statements that could write (COPY, INSERT, CREATE, ATTACH, EXPORT, ...) are
refused before they run, and ``run`` locks DuckDB's configuration so that no SET or PRAGMA can point its
query log or profiler output at a file.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import duckdb

from analysis.macros import install as install_macros
from nova.contract import RECORDED_TABLES
from nova.errors import NovaError

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA,
           duckdb.StatementType.SET}
VIEWS = (*RECORDED_TABLES, "spread")

def connect(data: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB session with a view per table present under ``data`` and the macros."""
    if not data.is_dir():
        raise NovaError(f"the data directory {data} does not exist; record something first (nova record or "
                        "nova demo) or point --data at a recording")
    con = duckdb.connect()
    # The grid of top_of_book/basis comes from unnest(generate_series(...)), which DuckDB estimates at a handful
    # of rows, so it plans the ASOF join as a nested loop (below 64 rows by default): 2 s for 3,500 instants
    # over 24 k quotes instead of 15 ms, and hopeless for a day. Always use the real ASOF join (a DuckDB
    # without the setting has no loop fallback either).
    with contextlib.suppress(duckdb.Error):
        con.execute("SET asof_loop_join_threshold = 0")
    present = []
    for table in VIEWS:
        if any((data / table).rglob("*.parquet")):
            pattern = str(data / table / "**" / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = "
                        "true, union_by_name = true)")
            present.append(table)
    if not present:
        raise NovaError(f"{data} holds no recording (no {', '.join(VIEWS)} Parquet files); record something "
                        "first or point --data at a recording")
    install_macros(con, present)
    return con


def check_read_only(sql: str) -> None:
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise NovaError(f"the SQL does not parse: {_first_line(exc)}") from None
    if not statements:
        raise NovaError("no SQL statement given; write a query such as: SELECT count(*) FROM book")
    for statement in statements:
        if statement.type not in ALLOWED:
            raise NovaError(f"nova sql is read-only and refuses {statement.type.name} statements; it would "
                            "change the dataset or the session's files. Query with SELECT (export results with "
                            "--format and --output)")


def run(data: Path, sql: str) -> Any:
    """Run read-only SQL over the dataset; returns the last statement's result as an Arrow table."""
    check_read_only(sql)
    con = connect(data)
    con.execute("SET lock_configuration = true")  # SET/PRAGMA could make DuckDB write files (log_query_path)
    try:
        *leading, last = duckdb.extract_statements(sql)
        for statement in leading:
            con.execute(statement)
        relation = con.sql(last.query)
        return relation.to_arrow_table() if relation is not None else None
    except duckdb.Error as exc:
        raise NovaError(f"the query failed: {_first_line(exc)}") from None
    finally:
        con.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
