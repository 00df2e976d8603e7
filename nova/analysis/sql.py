"""``nova sql``: DuckDB over the dataset, with one view per table and a few macros researchers need daily.

Why views and macros rather than a query builder: researchers already speak SQL, and DuckDB reads the
hive-partitioned Parquet as is. Nova only adds the views (with ``exchange``, ``market``, ``symbol`` and
``date`` from the partition path) and the macros that encode the contract's rules (nova/analysis/macros.py), so a
query like "the book at 14:03:07" does not need the reader rule re-derived by hand.

Timestamps. The files keep the contract's ``timestamp[ns, UTC]``. DuckDB 1.x reads such a column as
``TIMESTAMPTZ`` (microseconds); DuckDB 2.x reads it as ``TIMESTAMPTZ_NS``, on which ``epoch_ms``, timestamp
subtraction, ``age`` and other everyday functions do not exist. So every view exposes every timezone-aware
timestamp column (the contract's and any other a file holds) as ``TIMESTAMPTZ``, truncated to the
microsecond as DuckDB 1.x, pyarrow and polars truncate: the same values on every DuckDB the project allows.
The exact nanoseconds remain in the files (pyarrow, polars, or ``read_parquet`` on the files, read them).

Bad files. A file that is empty, truncated, not Parquet, or whose columns are not its table's would make
DuckDB fail with a message that names neither the file nor the remedy, or, when its columns happen to cast,
answer from it silently. ``connect`` reads every file's footer first; a table with a bad file gets a
view that raises one sentence naming the file (DuckDB's ``error()``, evaluated only when a query reads the
table), so queries on the other tables still answer. Hidden files (a leading dot or underscore: journals,
temporary files) are never part of a view.

The session ``nova sql`` opens is read-only: statements that could write (COPY, INSERT, CREATE, ATTACH,
EXPORT, ...) are refused before they run, and DuckDB's configuration is locked so that no SET or PRAGMA can
point its query log or profiler output at a file. Its time zone is UTC, the time zone of the partition dates.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from nova.analysis.macros import RAW
from nova.analysis.macros import install as install_macros
from nova.analysis.stores import register as register_store
from nova.core.contract import PARTITION_KEYS, PROVENANCE_COLUMNS, RECORDED_TABLES, SCHEMAS, SNAPSHOTS
from nova.core.dataset import SNAPSHOTS_TABLE, Dataset
from nova.core.errors import NovaError

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA,
           duckdb.StatementType.SET}
VIEWS = (*RECORDED_TABLES, "spread", SNAPSHOTS_TABLE)
PARTITION_TYPES = {"date": "DATE"}  # how DuckDB types the partition values; the others are VARCHAR
REMEDY = "move it away or run nova check"
RESULT_VIEW = "nova_result"  # the registered rows of a statement that cannot be a subquery (PRAGMA, EXPLAIN)
FOOTER_THREADS = 2
FOOTER_RUN = 256  # files a thread reads per task


# ---- the contract of each table ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Contract:
    """The columns every file of a table has, and those a file may have (the spread's size-aware columns)."""

    table: str
    required: pa.Schema
    optional: pa.Schema = field(default_factory=lambda: pa.schema([]))

    @property
    def fields(self) -> list[pa.Field]:
        return [*self.required, *self.optional]


def contract_of(table: str) -> Contract:
    """The table's contract: nova.core.contract's schema (whose provenance columns files written before they were
    added lack), or for ``spread`` what replay writes (nova.core.spread's READING_SCHEMA, whose size-aware
    columns are there only when the replay had a ``--size``)."""
    if table == SNAPSHOTS_TABLE:  # the fixed columns; the level columns depend on the shape (union by name)
        return Contract(table, SNAPSHOTS)
    if table != "spread":
        later = set(PROVENANCE_COLUMNS)
        schema = SCHEMAS[table]
        return Contract(table, pa.schema([f for f in schema if f.name not in later]),
                        pa.schema([f for f in schema if f.name in later]))
    from nova.core.spread import READING_SCHEMA, SIZE_COLUMNS  # here: numba kernels, needed once a replay exists

    return Contract(table, pa.schema([f for f in READING_SCHEMA if f.name not in SIZE_COLUMNS]),
                    pa.schema([f for f in READING_SCHEMA if f.name in SIZE_COLUMNS]))


def _kind(t: pa.DataType) -> str:
    """What a column type means to a reader: widths and encodings (dictionary, large string) do not matter."""
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    checks = [(pa.types.is_timestamp, "timestamp with time zone" if getattr(t, "tz", None) else "timestamp"),
              (pa.types.is_integer, "integer"), (pa.types.is_floating, "floating point"),
              (pa.types.is_boolean, "boolean"), (pa.types.is_string, "string"), (pa.types.is_large_string, "string"),
              (pa.types.is_string_view, "string")]
    return next((kind for check, kind in checks if check(t)), str(t))


def _duck_type(t: pa.DataType) -> str:
    """The DuckDB type a view shows for a contract column (timestamps as the views expose them)."""
    kinds = {"timestamp with time zone": "TIMESTAMPTZ", "timestamp": "TIMESTAMP", "integer": "BIGINT",
             "floating point": "DOUBLE", "boolean": "BOOLEAN", "string": "VARCHAR"}
    return kinds.get(_kind(t), "VARCHAR")


def _is_instant(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) and t.tz is not None


# ---- footers -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Footer:
    """What one file's footer says: its schema, or why it cannot be read."""

    path: str
    schema: pa.Schema | None
    problem: str | None = None


def read_footer(data: Dataset, path: str, size: int) -> Footer:
    """The file's Arrow schema from its footer alone (no data page is read)."""
    try:
        if size == 0:
            return Footer(path, None, "it is empty: 0 bytes")
        # per-file metadata (replay parameters) aside
        return Footer(path, data.schema(path).remove_metadata())
    except (OSError, pa.ArrowException) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "magic bytes" in text or "smaller than the minimum" in text:
            return Footer(path, None, f"it does not end with a Parquet footer ({size} bytes): truncated, or not "
                                      "Parquet at all")
        return Footer(path, None, f"its footer is damaged: {text.rstrip('.')}")


def read_footers(data: Dataset, files: list[tuple[str, int]]) -> list[Footer]:
    """Every file's footer, in a few threads: on a warm page cache one thread is as fast (pyarrow holds the GIL
    while it decodes), but a cold disk or a network file system waits on I/O that threads overlap. Each thread
    takes a run of files, not one file per task, which would cost more in hand-offs than the read itself."""
    runs = [files[i:i + FOOTER_RUN] for i in range(0, len(files), FOOTER_RUN)]
    if len(runs) < 2:
        return [read_footer(data, *f) for f in files]
    with ThreadPoolExecutor(FOOTER_THREADS) as pool:
        return [footer for run in pool.map(lambda run: [read_footer(data, *f) for f in run], runs)
                for footer in run]


def mismatch(schema: pa.Schema | None, contract: Contract) -> str | None:
    """Why a readable file does not belong to the table (None: it does)."""
    if schema is None:
        return "its footer does not read"
    columns = {f.name: f.type for f in schema}
    missing = [f.name for f in contract.required if f.name not in columns]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        return f"it lacks the column{plural} {', '.join(missing)}"
    for f in contract.fields:
        if f.name in columns and _kind(columns[f.name]) != _kind(f.type):
            return f"its column {f.name} is {columns[f.name]}, not {f.type}"
    return None


def _bad_sentence(table: str, bad: list[Footer], reasons: list[str]) -> str:
    """One sentence for a table's bad files: the first one, why, how many more, and what to do."""
    first, reason = bad[0], reasons[0]
    what = f"is not a readable Parquet file of the {table} table" if first.problem else \
        f"does not hold the {table} table's columns"
    others = len(bad) - 1
    more = f"; {others} more file{'s' if others > 1 else ''} of the table {'are' if others > 1 else 'is'} bad too" \
        if others else ""
    return f"{first.path} {what} ({reason}{more}); {REMEDY}"


# ---- views ---------------------------------------------------------------------------------------------------

def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


RAW_ROW_NUMBER = "NULL::BIGINT AS file_row_number"  # the raw views' row place, for a view without files


def _reader(files: list[str], union: bool, row_numbers: bool = False) -> str:
    listing = ", ".join(_literal(p) for p in files)
    return (f"read_parquet([{listing}], hive_partitioning = true{', union_by_name = true' if union else ''}"
            f"{', file_row_number = true' if row_numbers else ''})")


def _as_microseconds(con: duckdb.DuckDBPyConnection, files: list[str], union: bool, instants: list[str]) -> str:
    """The SELECT list that shows every instant column as TIMESTAMPTZ (microseconds), truncating like DuckDB
    1.x: ``make_timestamptz(epoch_ns(x) // 1000)``. A column DuckDB already reads as TIMESTAMPTZ is left as is,
    so filters on it still prune row groups by their statistics."""
    probe = files if union else files[:1]
    read_as = {name: kind for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {_reader(probe, union)}"
                                                             ).fetchall()}
    convert = [c for c in instants if read_as.get(c) != "TIMESTAMP WITH TIME ZONE"]
    if not convert:
        return "*"
    return "* REPLACE (" + ", ".join(f"make_timestamptz(epoch_ns({ident(c)}) // 1000) AS {ident(c)}"
                                     for c in convert) + ")"


def _typed_columns(contract: Contract, value: str) -> str:
    """The table's columns (contract and partition columns, in DuckDB's order), each ``value`` cast to its type."""
    columns = [f"{value}::{_duck_type(f.type)} AS {ident(f.name)}" for f in contract.fields]
    columns += [f"{value}::{PARTITION_TYPES.get(k, 'VARCHAR')} AS {k}" for k in sorted(PARTITION_KEYS)]
    return ", ".join(columns)


def _create_empty_view(con: duckdb.DuckDBPyConnection, contract: Contract) -> None:
    """A recorded table with no file yet (liquidations on a quiet day, a table left out of --tables): no rows,
    rather than a catalog error, with the columns a recording would have."""
    con.execute(f"CREATE VIEW {contract.table} AS SELECT {_typed_columns(contract, 'NULL')} WHERE false")
    con.execute(f"CREATE VIEW {raw_name(contract.table)} AS SELECT *, {RAW_ROW_NUMBER} FROM {contract.table}")


def _create_view(con: duckdb.DuckDBPyConnection, contract: Contract, footers: list[Footer]) -> str | None:
    """The table's view over its good files, or one that raises the sentence naming a bad file (returned)."""
    verdicts: dict[pa.Schema, str | None] = {}  # most files share one schema: judge it once
    for f in footers:
        if f.schema is not None and f.schema not in verdicts:
            verdicts[f.schema] = mismatch(f.schema, contract)
    judged = [(f, f.problem or verdicts[f.schema]) for f in footers]
    bad = [(f, reason) for f, reason in judged if reason]
    if bad:
        sentence = _bad_sentence(contract.table, [f for f, _ in bad], [reason for _, reason in bad if reason])
        raise_it = f"error({_literal(sentence)})"
        # Every column and the filter raise, so no projection, filter or aggregate answers without the error.
        con.execute(f"CREATE VIEW {contract.table} AS SELECT {_typed_columns(contract, raise_it)} "
                    f"WHERE {raise_it} IS NULL")
        con.execute(f"CREATE VIEW {raw_name(contract.table)} AS SELECT *, {RAW_ROW_NUMBER} FROM {contract.table}")
        return sentence
    schemas = list(verdicts)  # the distinct schemas
    union = len(schemas) > 1
    instants = [f.name for f in contract.fields if _is_instant(f.type)]
    instants += sorted({f.name for s in schemas for f in s if _is_instant(f.type)} - set(instants))
    files = [f.path for f in footers]
    select = _as_microseconds(con, files, union, instants)
    con.execute(f"CREATE VIEW {contract.table} AS SELECT {select} FROM {_reader(files, union)}")
    # the same files with their timestamps as stored, for the macros: a filter on a stored column prunes row
    # groups by their statistics, one on the converted column cannot (3x slower for book_at on a day); with each
    # row's place in its file, which orders the rows of one message (a message is never split across files)
    con.execute(f"CREATE VIEW {raw_name(contract.table)} AS SELECT * FROM {_reader(files, union, row_numbers=True)}")
    return None


def raw_name(table: str) -> str:
    """The view of a table's files with their timestamps as stored (nanoseconds on DuckDB 2.x)."""
    return f"{RAW}{table}"


# ---- the session ---------------------------------------------------------------------------------------------

@dataclass
class Session:
    """A DuckDB connection over the dataset, which turns DuckDB's failures into one sentence each."""

    con: duckdb.DuckDBPyConnection
    problems: dict[str, str]  # table -> the sentence its view raises
    files: frozenset[str]  # every file behind a view, to name the one a failed read was about

    def failure(self, exc: BaseException) -> NovaError:
        """The sentence for a failed statement: a bad file's own sentence, or DuckDB's first line."""
        text = _first_line(exc)
        for sentence in self.problems.values():
            if sentence in text:
                return NovaError(sentence)
        named = next((p for p in re.findall(r'"([^"]+)"', text) if p in self.files), None)
        if named is not None:
            return NovaError(f"{named} could not be read ({text}); {REMEDY}")
        return NovaError(f"the query failed: {text}")

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """DuckDB errors, and those it raises through an Arrow stream (pyarrow re-raises them as OSError)."""
        try:
            yield
        except (duckdb.Error, OSError, pa.ArrowException) as exc:
            raise self.failure(exc) from None

    def run(self, statement: Any) -> None:
        """Run a statement to its end, discarding its rows (a batch at a time: it may be a large SELECT)."""
        with self.errors():
            self.con.execute(statement)
            while self.con.description is not None and self.con.fetchmany(10_000):
                pass

    def fetch_arrow(self, statement: Any) -> pa.Table | None:
        """Run a statement once and take its (small) result as Arrow; None when it returns nothing."""
        with self.errors(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DuckDB 2 warns that a DB-API result is copied: it is small
            self.con.execute(statement)
            if self.con.description is None:
                return None
            fetch = getattr(self.con, "to_arrow_table", None) or self.con.fetch_arrow_table
            return fetch()

    def rows(self, sql: str) -> list[tuple]:
        with self.errors():
            return self.con.sql(sql).fetchall()

    def columns(self, sql: str) -> tuple[list[str], list[str]]:
        """The names and DuckDB types of a query's result, from binding it (nothing runs)."""
        with self.errors():
            relation = self.con.sql(sql)
            return list(relation.columns), [str(t) for t in relation.types]

    def batches(self, sql: str, size: int) -> Iterator[pa.RecordBatch]:
        """A query's rows as Arrow record batches, streamed: the whole result is never in memory."""
        with self.errors():
            relation = self.con.sql(sql)
            reader = (getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader)(size)  # 1.1
            yield from reader

    def register(self, name: str, table: pa.Table) -> None:
        self.con.register(name, table)

    def unregister(self, name: str) -> None:
        self.con.unregister(name)

    def close(self) -> None:
        self.con.close()


def open_session(root: Path | str) -> Session:
    """An in-memory DuckDB session with a view per table present under ``root`` and the macros. On an
    object-store root the views read ``s3://`` paths through the dataset's own filesystem (nova.analysis.stores)."""
    data = Dataset(root)
    data.check_reachable()
    if not data.exists():
        raise NovaError(f"the data directory {root} does not exist; record something first (nova record or "
                        "nova demo) or point --data at a recording")
    listed = {t: files for t in VIEWS if (files := data.table_files(t))}
    if not listed:
        raise NovaError(f"{root} holds no recording (no {', '.join(VIEWS)} Parquet files); record something "
                        "first or point --data at a recording")
    footers = iter(Footer(data.uri(f.path), f.schema, f.problem)
                   for f in read_footers(data, [f for files in listed.values() for f in files]))
    con = duckdb.connect()
    try:
        register_store(con, data, [f for files in listed.values() for f in files])
        problems = _build(con, root, {t: [data.uri(p) for p, _ in files] for t, files in listed.items()}, footers)
    except BaseException:
        con.close()
        raise
    return Session(con, problems, frozenset(data.uri(p) for files in listed.values() for p, _ in files))


def _build(con: duckdb.DuckDBPyConnection, data: Path | str, listed: dict[str, list[str]],
           footers: Iterator[Footer]) -> dict[str, str]:
    """Settings, views and macros of a fresh session; the sentences of the tables with bad files."""
    with contextlib.suppress(duckdb.Error):
        con.execute("SET TimeZone = 'UTC'")  # partition dates are UTC dates; show times the same way
    # The grid of top_of_book/basis comes from unnest(generate_series(...)), which DuckDB estimates at a handful
    # of rows, so it plans the ASOF join as a nested loop (below 64 rows by default): 2 s for 3,500 instants
    # over 24 k quotes instead of 15 ms, and hopeless for a day. Always use the real ASOF join (a DuckDB
    # without the setting has no loop fallback either).
    with contextlib.suppress(duckdb.Error):
        con.execute("SET asof_loop_join_threshold = 0")
    problems: dict[str, str] = {}
    for table, files in listed.items():
        try:
            sentence = _create_view(con, contract_of(table), [next(footers) for _ in files])
        except duckdb.Error as exc:  # what the footers did not show (a partition folder DuckDB cannot parse)
            raise NovaError(f"the {table} table of {data} cannot be opened ({_first_line(exc)}); run nova check"
                            ) from None
        if sentence is not None:
            problems[table] = sentence
    for table in RECORDED_TABLES:
        if table not in listed:
            _create_empty_view(con, contract_of(table))
    try:
        install_macros(con, list(listed))
    except duckdb.Error as exc:
        raise NovaError(f"nova's SQL macros do not install on DuckDB {duckdb.__version__} ({_first_line(exc)}); "
                        "use the DuckDB the project pins, or report it") from None
    return problems


def connect(data: Path | str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per table present under ``data`` and the macros (for Python
    users and the notebook; the connection is not locked)."""
    return open_session(data).con


# ---- statements ----------------------------------------------------------------------------------------------

def check_read_only(sql: str) -> list[Any]:
    """The statements of ``sql``, once it is known that none of them could write."""
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
    return statements


@dataclass
class Result:
    """The last statement's rows, not yet produced: ``source`` is what to SELECT FROM to get them (the
    statement as a subquery, or the registered rows of one that cannot be a subquery), so that whichever
    output is written, the statement runs once."""

    session: Session
    source: str
    names: list[str]
    types: list[str]


def _without_trailing_semicolons(text: str) -> str:
    """The statement without the semicolons (and comments between them) that may end it."""
    tokens = duckdb.tokenize(text)
    cut = len(text)
    for i in range(len(tokens) - 1, -1, -1):
        start, kind = tokens[i]
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(text)
        piece = text[start:end].strip()
        if "comment" in str(kind) or piece.startswith(";"):
            cut = start
            continue
        break
    return text[:cut]


def as_subquery(statement: Any) -> str | None:
    """The statement as a parenthesised subquery, when it can be one (SELECT, FROM, VALUES, DESCRIBE, SHOW...;
    not PRAGMA, EXPLAIN or SET). The newline ends a trailing ``--`` comment."""
    core = _without_trailing_semicolons(statement.query)
    wrapped = f"({core}\n)"
    try:
        if len(duckdb.extract_statements(f"SELECT * FROM {wrapped}")) == 1:
            return wrapped
    except duckdb.Error:
        pass
    return None


def prepare(session: Session, sql: str) -> Result | None:
    """Lock the session, run every statement but the last, and make the last one's rows ready to be read
    once. None when the last statement returns nothing (a SET)."""
    statements = check_read_only(sql)
    session.run("SET lock_configuration = true")  # SET/PRAGMA could make DuckDB write files (log_query_path)
    *leading, last = statements
    for statement in leading:
        session.run(statement)
    source = as_subquery(last)
    if source is None:
        table = session.fetch_arrow(last)
        if table is None or (table.column_names == ["Success"] and table.num_rows == 0):
            return None
        session.register(RESULT_VIEW, table)
        source = RESULT_VIEW
    names, types = session.columns(f"SELECT * FROM {source}")
    return Result(session, source, names, types)


def run(data: Path, sql: str) -> pa.Table | None:
    """Run read-only SQL over the dataset; returns the last statement's result as an Arrow table (None when it
    returns nothing)."""
    check_read_only(sql)
    session = open_session(data)
    try:
        result = prepare(session, sql)
        return None if result is None else session.fetch_arrow(f"SELECT * FROM {result.source}")
    finally:
        session.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
