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

from nova.contract import RECORDED_TABLES
from nova.errors import NovaError

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA,
           duckdb.StatementType.SET}
VIEWS = (*RECORDED_TABLES, "spread")

MACROS = [
    # The grid's instants are step-aligned from t0, so only two kinds of quote can be the last one at or before
    # an instant: the last quote of each step-long bucket (and the last one before t0), and a quote received
    # exactly at an instant. Keeping only those (one hash aggregate over the receive times) leaves the ASOF
    # join ~2 quotes per instant to sort instead of the whole day's quotes: the same rows, about twice as fast.
    # Steps with calendar parts (days, months: their length depends on the date and time zone) keep every quote.
    """CREATE MACRO top_of_book(mkt, sym, t0, t1, step) AS TABLE
    WITH grid AS (SELECT unnest(generate_series(t0::TIMESTAMPTZ, t1::TIMESTAMPTZ - step::INTERVAL,
                                                step::INTERVAL)) AS ts),
         q AS NOT MATERIALIZED (
               SELECT ts_recv, bid_price, bid_amount, ask_price, ask_amount FROM bbo
               WHERE market = mkt AND symbol = sym
                 AND date BETWEEN timezone('UTC', t0::TIMESTAMPTZ - INTERVAL 1 DAY)::DATE
                                  AND timezone('UTC', t1::TIMESTAMPTZ)::DATE
                 AND ts_recv < t1::TIMESTAMPTZ),
         k AS (SELECT ts_recv, epoch_ns(ts_recv) - epoch_ns(t0::TIMESTAMPTZ) AS off,
                      epoch_ns(t0::TIMESTAMPTZ + step::INTERVAL) - epoch_ns(t0::TIMESTAMPTZ) AS step_ns,
                      date_part('year', step::INTERVAL) <> 0 OR date_part('month', step::INTERVAL) <> 0
                          OR date_part('day', step::INTERVAL) <> 0 AS calendar
               FROM q),
         marks AS (SELECT max(ts_recv) AS ts_recv FROM k
                   GROUP BY CASE WHEN calendar THEN off WHEN off < 0 THEN -1 ELSE off // step_ns END,
                            off >= 0 AND off % step_ns = 0),
         candidates AS (SELECT * FROM q WHERE ts_recv IN (SELECT ts_recv FROM marks))
    SELECT grid.ts, c.bid_price, c.bid_amount, c.ask_price, c.ask_amount, c.ts_recv AS quote_ts
    FROM grid ASOF LEFT JOIN candidates c ON grid.ts >= c.ts_recv ORDER BY grid.ts""",
    # Which messages are in effect at t: those before the first message received after t (``f``). Found with
    # narrow scans that Parquet statistics prune: m = the last message received by t; f is looked for only
    # among messages up to m (normally there is none, and everything up to m counts); the last snapshot by
    # t. Only the levels of the messages from that snapshot on are then read (row groups pruned on msg).
    """CREATE MACRO book_at(mkt, sym, t, n) AS TABLE
    WITH keys AS NOT MATERIALIZED (
               SELECT ts_recv, msg, snapshot FROM book WHERE market = mkt AND symbol = sym
               AND date <= timezone('UTC', t::TIMESTAMPTZ)::DATE),
         upto_t AS (SELECT max(msg) AS m FROM keys WHERE ts_recv <= t::TIMESTAMPTZ),
         snap_t AS (SELECT max(msg) AS s FROM keys WHERE snapshot AND ts_recv <= t::TIMESTAMPTZ),
         early AS (SELECT f FROM (SELECT min(msg) AS f FROM keys, upto_t
                                  WHERE keys.ts_recv > t::TIMESTAMPTZ AND keys.msg <= upto_t.m)
                   WHERE f IS NOT NULL),
         fixed AS (SELECT max(msg) AS last_msg, max(msg) FILTER (WHERE snapshot) AS snap_msg
                   FROM keys JOIN early ON keys.msg < early.f WHERE keys.ts_recv <= t::TIMESTAMPTZ),
         span AS (SELECT CASE WHEN e.any THEN fixed.last_msg ELSE upto_t.m END AS last_msg,
                         CASE WHEN e.any THEN fixed.snap_msg ELSE snap_t.s END AS snap_msg
                  FROM upto_t, snap_t, fixed, (SELECT EXISTS (SELECT 1 FROM early) AS any) e),
         live AS (SELECT r.side, r.price, r.amount, r.msg,
                         row_number() OVER (PARTITION BY r.side, r.price ORDER BY r.msg DESC) AS latest
                  FROM book r, span
                  WHERE r.market = mkt AND r.symbol = sym AND r.date <= timezone('UTC', t::TIMESTAMPTZ)::DATE
                    AND r.ts_recv <= t::TIMESTAMPTZ AND r.msg >= span.snap_msg AND r.msg <= span.last_msg
                    AND NOT r.stale AND r.side IS NOT NULL),
         levels AS (SELECT side, price, amount,
                           row_number() OVER (PARTITION BY side ORDER BY
                               CASE WHEN side = 'bid' THEN -price ELSE price END) AS level
                    FROM live WHERE latest = 1 AND amount > 0)
    SELECT side, level, price, amount FROM levels WHERE level <= n ORDER BY side DESC, level""",
    """CREATE MACRO basis(sym, t0, t1, step) AS TABLE
    SELECT s.ts, (s.bid_price + s.ask_price) / 2 AS spot_mid, (p.bid_price + p.ask_price) / 2 AS perp_mid,
           ((p.bid_price + p.ask_price) / (s.bid_price + s.ask_price) - 1) * 1e4 AS basis_bps
    FROM top_of_book('spot', sym, t0, t1, step) s JOIN top_of_book('perp', sym, t0, t1, step) p USING (ts)
    ORDER BY s.ts""",
]


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
    for macro in MACROS:
        needed = ["bbo"] if "FROM bbo" in macro or "top_of_book(" in macro else ["book"]
        if all(t in present for t in needed):
            con.execute(macro)
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
