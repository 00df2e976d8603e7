"""``nova sql`` never crashes and never lies: bad files, every DuckDB type in every format, --output, timestamps.

Datasets are written here with pyarrow, file by file, in the contract's layout and schemas (nova.core.contract), so
each test knows exactly what is on disk: timestamps carry nanoseconds that are not whole microseconds, and a
bad file is one file among good ones. Every expectation comes from those rows, not from analysis/.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from nova.analysis.output import FORMATS, export
from nova.analysis.sql import Session, connect, run
from nova.core.contract import SCHEMAS
from nova.core.errors import NovaError
from tests.helpers import nova, novas, ok, one_sentence

DAY = "2024-03-01"
T0 = 1_709_251_200_000_000_000  # 2024-03-01 00:00:00 UTC, ns
STEP_NS = 1_234_567_891  # successive rows 1.234567891 s apart: never whole microseconds
pytestmark = pytest.mark.timeout(120)


# ---- datasets ------------------------------------------------------------------------------------------------

def instants(n: int, offset_ns: int = 0) -> list[int]:
    """Receive times with a sub-microsecond part (789 ns, then growing by 891 ns a row)."""
    return [T0 + offset_ns + i * STEP_NS + 789 for i in range(n)]


def contract_rows(table: str, n: int, offset_ns: int = 0) -> pa.Table:
    """``n`` rows of the table's contract schema: timestamps from ``instants``, other values by type."""
    ts = instants(n, offset_ns)
    columns: list[pa.Array] = []
    for i, field in enumerate(SCHEMAS[table]):
        t = field.type
        if pa.types.is_timestamp(t):
            columns.append(pa.array([x - 1000 * i for x in ts], t))
        elif pa.types.is_dictionary(t):
            columns.append(pa.array(["bid" if k % 2 else "ask" for k in range(n)]).dictionary_encode().cast(t))
        elif pa.types.is_integer(t):
            columns.append(pa.array(range(n), t))
        elif pa.types.is_floating(t):
            columns.append(pa.array([k * 0.5 + 0.25 for k in range(n)], t))
        elif pa.types.is_boolean(t):
            columns.append(pa.array([k % 2 == 0 for k in range(n)], t))
        else:
            columns.append(pa.array([f"text {k}" for k in range(n)], t))
    return pa.Table.from_arrays(columns, schema=SCHEMAS[table])


def partition(root: Path, table: str, market: str) -> Path:
    folder = root / table / "exchange=binance" / f"market={market}" / "symbol=ETH-USDT" / f"date={DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write(root: Path, table: str, market: str, rows: pa.Table, name: str = "20240301T000000.000Z-0a0b0c0d") -> Path:
    path = partition(root, table, market) / f"{name}.parquet"
    pq.write_table(rows, path)
    return path


SIZES = {("book", "spot"): 7, ("book", "perp"): 9, ("bbo", "spot"): 40, ("bbo", "perp"): 11, ("trades", "spot"): 5,
         ("trades", "perp"): 6, ("funding", "perp"): 4, ("events", "spot"): 3, ("events", "perp"): 3}


def make_dataset(root: Path) -> Path:
    """Every recorded table of both markets (funding: perp only), one file per partition."""
    for (table, market), n in SIZES.items():
        write(root, table, market, contract_rows(table, n, offset_ns=1000 if market == "perp" else 0))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("sql") / "data")


# ---- the command ---------------------------------------------------------------------------------------------

def json_rows(text: str) -> list[dict]:
    return [json.loads(line, parse_float=Decimal) for line in text.splitlines() if line.strip()]


# ---- 1. bad files --------------------------------------------------------------------------------------------

def _truncated(good: bytes) -> bytes:
    return good[:-30]


def _wrong_type(table: pa.Table) -> pa.Table:
    return table.set_column(table.schema.get_field_index("price"), "price", table["price"].cast(pa.string()))


BAD_FILES = {
    "corrupt bytes": lambda good: random.Random(7).randbytes(5000),
    "zero bytes": lambda good: b"",
    "truncated footer": _truncated,
    "csv renamed": lambda good: b"ts_recv,price,amount\n2024-03-01T00:00:00Z,1.5,2\n",
}


def damaged_dataset(root: Path, kind: str) -> tuple[Path, Path]:
    """A dataset whose spot book partition holds a good file and, after it, a bad one of ``kind``."""
    make_dataset(root)
    bad = partition(root, "book", "spot") / "20240301T001500.000Z-deadbeef.parquet"
    good = next(partition(root, "book", "spot").glob("*.parquet")).read_bytes()
    if kind in BAD_FILES:
        bad.write_bytes(BAD_FILES[kind](good))
    elif kind == "foreign schema":  # a bbo file dropped among book files: book's columns are missing
        pq.write_table(contract_rows("bbo", 3), bad)
    elif kind == "wrong column type":  # price as text
        pq.write_table(_wrong_type(contract_rows("book", 3)), bad)
    return root, bad


BAD_KINDS = [*BAD_FILES, "foreign schema", "wrong column type"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_file_is_one_sentence_and_other_tables_still_answer(tmp_path: Path, kind: str) -> None:
    root, bad = damaged_dataset(tmp_path / "data", kind)
    book, bbo, macro = novas(("sql", "--data", str(root), "SELECT count(*) FROM book"),
                             ("sql", "--data", str(root), "--format", "json", "SELECT count(*) AS n FROM bbo"),
                             ("sql", "--data", str(root), "--format", "csv",
                              "SELECT * FROM book WHERE market = 'perp' LIMIT 1"))
    line = one_sentence(book)
    assert str(bad) in line and "nova check" in line and "book table" in line, line
    assert json_rows(ok(bbo)) == [{"n": SIZES["bbo", "spot"] + SIZES["bbo", "perp"]}]
    assert one_sentence(macro) == line, "a filter on a partition column does not skip the bad file"


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_file_through_python(tmp_path: Path, kind: str) -> None:
    root, bad = damaged_dataset(tmp_path / "data", kind)
    with pytest.raises(NovaError) as caught:
        run(root, "SELECT max(ts_recv) FROM book WHERE date = DATE '2024-03-01'")
    assert str(bad) in str(caught.value) and "nova check" in str(caught.value)
    con = connect(root)
    assert con.execute("SELECT count(*) FROM trades").fetchall() == [(SIZES["trades", "spot"] +
                                                                      SIZES["trades", "perp"],)]
    with pytest.raises(duckdb.Error, match="nova check"):
        con.execute("SELECT count(*) FROM book WHERE market = 'spot'").fetchall()


def test_the_sentence_counts_the_other_bad_files(tmp_path: Path) -> None:
    root, bad = damaged_dataset(tmp_path / "data", "zero bytes")
    (bad.parent / "20240301T003000.000Z-deadbeef.parquet").write_bytes(b"")
    with pytest.raises(NovaError, match=r"1 more file of the table is bad too.*nova check"):
        run(root, "SELECT count(*) FROM book")


def test_hidden_files_are_never_part_of_a_view(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "data")
    folder = partition(root, "bbo", "spot")
    (folder / ".20240301T001500.000Z-0f0f0f0f.parquet.tmp").write_bytes(b"half a file")
    (folder / ".hidden.parquet").write_bytes(b"not parquet")
    (folder / "_staging.parquet").write_bytes(b"not parquet")
    (folder / "_tmp").mkdir()
    (folder / "_tmp" / "x.parquet").write_bytes(b"not parquet")
    write(root, "bbo", "spot", contract_rows("bbo", 2), ".journal")  # readable, but hidden
    result = run(root, "SELECT count(*) AS n FROM bbo")
    assert result is not None and result.to_pylist() == [{"n": SIZES["bbo", "spot"] + SIZES["bbo", "perp"]}]


def test_a_file_with_extra_columns_or_without_provenance_is_good(tmp_path: Path) -> None:
    """Contract columns added later (the ledger's provenance) may be absent from older files; extra columns
    do no harm; and files whose schemas differ are read by name."""
    root = make_dataset(tmp_path / "data")
    old = contract_rows("events", 2)
    old = old.drop_columns([c for c in ("source", "recorder_id", "versions") if c in old.column_names])
    write(root, "events", "spot", old, "20240301T001500.000Z-00000001")
    extra = contract_rows("bbo", 2).append_column("note", pa.array(["a", "b"]))
    write(root, "bbo", "spot", extra, "20240301T001500.000Z-00000002")
    result = run(root, "SELECT (SELECT count(*) FROM events) AS events, (SELECT count(*) FROM bbo) AS bbo")
    assert result is not None
    assert result.to_pylist() == [{"events": SIZES["events", "spot"] + SIZES["events", "perp"] + 2,
                                   "bbo": SIZES["bbo", "spot"] + SIZES["bbo", "perp"] + 2}]


# ---- 2. every type in every format ---------------------------------------------------------------------------

# (column, SQL, DuckDB's text, the JSON value)
TYPES: list[tuple[str, str, str | None, Any]] = [
    ("i", "INTERVAL 1 DAY + INTERVAL 90 MINUTE", "1 day 01:30:00", "1 day 01:30:00"),
    ("l", "[1, 2]", "[1, 2]", [1, 2]),
    ("s", "{'a': 1, 'b': 'x,y'}", "{'a': 1, 'b': 'x,y'}", {"a": 1, "b": "x,y"}),
    ("m", "MAP {'k': 1}", "{k=1}", {"k": 1}),
    ("nested", "[{'a': [1, NULL]}]", "[{'a': [1, NULL]}]", [{"a": [1, None]}]),
    ("d", "1.25::DECIMAL(10,3)", "1.250", Decimal("1.25")),
    ("d38", "12345678901234567890.123456789::DECIMAL(38,9)", "12345678901234567890.123456789",
     Decimal("12345678901234567890.123456789")),
    ("b", "'\\xAA\\x00ab'::BLOB", "\\xAA\\x00ab", "\\xAA\\x00ab"),
    ("h", "12345678901234567890123::HUGEINT", "12345678901234567890123", 12345678901234567890123),
    ("ub", "18446744073709551615::UBIGINT", "18446744073709551615", 18446744073709551615),
    ("u", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
     "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ("t", "TIME '12:34:56.789'", "12:34:56.789", "12:34:56.789"),
    ("ttz", "TIMETZ '12:34:56+02'", "12:34:56+02", "12:34:56+02"),
    ("dt", "DATE '2024-02-29'", "2024-02-29", "2024-02-29"),
    ("ts", "TIMESTAMP '2024-01-01 01:02:03.456789'", "2024-01-01 01:02:03.456789", "2024-01-01 01:02:03.456789"),
    ("tz", "TIMESTAMPTZ '2024-01-01 01:02:03.456789+00'", "2024-01-01 01:02:03.456789+00",
     "2024-01-01 01:02:03.456789+00"),
    ("tns", "TIMESTAMP_NS '2024-01-01 01:02:03.123456789'", "2024-01-01 01:02:03.123456789",
     "2024-01-01 01:02:03.123456789"),
    ("tms", "TIMESTAMP_MS '2024-01-01 01:02:03.123'", "2024-01-01 01:02:03.123", "2024-01-01 01:02:03.123"),
    ("tsec", "TIMESTAMP_S '2024-01-01 01:02:03'", "2024-01-01 01:02:03", "2024-01-01 01:02:03"),
    ("e", "'x'::ENUM('x', 'y')", "x", "x"),
    ("bo", "true", "true", True),
    ("n", "NULL", None, None),
    ("ni", "NULL::INTEGER", None, None),
    ("f", "1.5::FLOAT", "1.5", Decimal("1.5")),
    ("bits", "'1010'::BIT", "1010", "1010"),
    ("str", "'he said \"hi\", then [bold]left[/bold]'", "he said \"hi\", then [bold]left[/bold]",
     "he said \"hi\", then [bold]left[/bold]"),
]
TYPES_SQL = "SELECT " + ", ".join(f"{sql} AS {name}" for name, sql, _, _ in TYPES)


def test_every_type_as_a_table(dataset: Path) -> None:
    groups = [TYPES[i:i + 5] for i in range(0, len(TYPES), 5)]  # narrow enough that no cell wraps
    procs = novas(*(("sql", "--data", str(dataset), "SELECT " + ", ".join(f"{sql} AS {name}"
                                                                           for name, sql, _, _ in group))
                    for group in groups))
    for group, proc in zip(groups, procs, strict=True):
        out = ok(proc)
        assert "1 row" in out
        for name, _, text, _ in group:
            assert name in out
            assert (text if text is not None else "NULL") in out, (name, text, out)


def test_every_type_as_csv(dataset: Path) -> None:
    out = ok(nova("sql", "--data", str(dataset), "--format", "csv", TYPES_SQL))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1
    assert rows[0] == {name: text if text is not None else "" for name, _, text, _ in TYPES}
    assert '"1.250"' not in out and ",1.250," in out and ",18446744073709551615," in out, "numbers are unquoted"


def test_every_type_as_json_lines(dataset: Path) -> None:
    rows = json_rows(ok(nova("sql", "--data", str(dataset), "--format", "json", TYPES_SQL)))
    assert rows == [{name: value for name, _, _, value in TYPES}]


def test_every_type_as_parquet(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "types.parquet"
    ok(nova("sql", "--data", str(dataset), "--output", str(out), TYPES_SQL))
    assert pq.read_table(out).num_rows == 1, "pyarrow reads it"
    names = [name for name, *_ in TYPES]
    casts = ", ".join(f"CAST({name} AS VARCHAR)" for name in names)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    got = dict(zip(names, con.sql(f"SELECT {casts} FROM read_parquet('{out}')").fetchall()[0], strict=True))
    want = {name: text for name, _, text, _ in TYPES}
    # Parquet keeps the instant of a TIME WITH TIME ZONE, in UTC; DuckDB 1.x's writer keeps the local time and
    # drops the offset (its own behaviour, documented in the README's version note)
    want["ttz"] = "10:34:56+00" if int(duckdb.__version__.split(".")[0]) >= 2 else "12:34:56+00"
    assert got == want


def test_statements_that_are_not_queries(dataset: Path) -> None:
    data = str(dataset)
    explain, tables, tables_json, setting, variable, locked, empty, leading = novas(
        ("sql", "--data", data, "EXPLAIN SELECT count(*) FROM bbo"),
        ("sql", "--data", data, "PRAGMA show_tables"),
        ("sql", "--data", data, "--format", "json", "PRAGMA show_tables"),
        ("sql", "--data", data, "SET VARIABLE x = 1"),
        ("sql", "--data", data, "--format", "json", "SET VARIABLE x = 41; SELECT getvariable('x') + 1 AS y"),
        ("sql", "--data", data, "SET threads = 1"),
        ("sql", "--data", data, "SELECT * FROM bbo WHERE false"),
        ("sql", "--data", data, "--format", "csv", "SELECT 1 AS a; SELECT 2 AS b; -- the last one counts\n"),
    )
    assert "physical_plan" in ok(explain)
    assert {"bbo", "book", "events", "funding", "trades"} <= set(ok(tables).split())
    assert {r["name"] for r in json_rows(ok(tables_json))} >= {"bbo", "book"}
    assert ok(setting) == "" and setting.stderr.strip() == "done (the statement returned no rows)"
    assert json_rows(ok(variable)) == [{"y": 42}]
    assert "locked" in one_sentence(locked)
    assert "0 rows" in ok(empty) and "ts_recv" in empty.stdout
    assert ok(leading) == "b\n2\n"


def test_sql_from_a_file(dataset: Path, tmp_path: Path) -> None:
    query = tmp_path / "q.sql"
    query.write_text("-- how many quotes\nSELECT count(*) AS n FROM bbo;\n")
    missing = tmp_path / "nope.sql"
    good, absent = novas(("sql", "--data", str(dataset), "--file", str(query), "--format", "json"),
                         ("sql", "--data", str(dataset), "--file", str(missing)))
    assert json_rows(ok(good)) == [{"n": SIZES["bbo", "spot"] + SIZES["bbo", "perp"]}]
    assert str(missing) in one_sentence(absent)


def test_a_large_result_is_streamed_into_a_head_and_a_count(dataset: Path) -> None:
    query = "SELECT range AS i, range * 2 AS j FROM range(2500000)"
    out = ok(nova("sql", "--data", str(dataset), "--limit", "3", query))
    assert "2,500,000 rows, first 3 shown" in out
    body = [line for line in out.splitlines() if line.startswith("│")]
    assert [line.split()[1] for line in body] == ["0", "1", "2"]
    assert max(len(line) for line in out.splitlines()) <= 200, "piped output keeps a fixed width"


def test_the_statement_runs_once_whatever_the_format(dataset: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way a Session runs SQL is watched: the user's statement (marked) is executed exactly once."""
    executed: list[str] = []
    for method in ("run", "fetch_arrow", "rows", "batches"):
        original = getattr(Session, method)

        def spy(self: Session, sql: Any, *args: Any, _original: Any = original) -> Any:
            executed.append(str(getattr(sql, "query", sql)))
            return _original(self, sql, *args)

        monkeypatch.setattr(Session, method, spy)
    for statement in ("SELECT 'mark-7f3' AS marker, count(*) AS n FROM bbo", "EXPLAIN SELECT 'mark-7f3' FROM bbo"):
        for fmt in FORMATS:
            executed.clear()
            suffix = {"table": "txt", "json": "jsonl"}.get(fmt, fmt)
            assert export(dataset, statement, fmt, tmp_path / f"out.{suffix}", 10, Console(file=io.StringIO()))
            assert sum("mark-7f3" in sql for sql in executed) == 1, (statement, fmt, executed)


# ---- 3. --output, --format, --limit --------------------------------------------------------------------------

def test_output_format_follows_the_extension(dataset: Path, tmp_path: Path) -> None:
    query = "SELECT market, count(*) AS n FROM bbo GROUP BY market ORDER BY market"
    want = [{"market": "perp", "n": SIZES["bbo", "perp"]}, {"market": "spot", "n": SIZES["bbo", "spot"]}]
    names = ["r.csv", "r.json", "r.jsonl", "r.ndjson", "r.parquet", "r.txt", "R.CSV"]
    procs = novas(*(("sql", "--data", str(dataset), "--output", str(tmp_path / name), query) for name in names))
    for name, proc in zip(names, procs, strict=True):
        assert ok(proc) == "", name
    assert list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text()))) == \
        [{k: str(v) for k, v in row.items()} for row in want]
    for name in ("r.json", "r.jsonl", "r.ndjson"):
        assert json_rows((tmp_path / name).read_text()) == want, name
    assert pq.read_table(tmp_path / "r.parquet").to_pylist() == want
    text = (tmp_path / "r.txt").read_text()
    assert "market" in text and "2 rows" in text and "spot" in text
    assert (tmp_path / "R.CSV").read_text().startswith("market,n\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names), "no temporary file is left behind"


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a read-only one, or for root (whom permissions do not stop)
    Linux's /proc."""
    folder = tmp_path.parent / f"{tmp_path.name}-read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return folder
    (folder / "probe").unlink()
    if not Path("/proc/self").is_dir():
        pytest.skip("running as root without /proc: no folder here refuses a new file")
    return Path("/proc")


@pytest.mark.slow  # a nova subprocess per option (~4 s)
def test_bad_options_are_one_sentence_and_write_nothing(dataset: Path, tmp_path: Path) -> None:
    data = str(dataset)
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "plain-file").write_text("x")
    read_only = unwritable_folder(tmp_path)
    calls = {
        "mismatch": (("--format", "csv", "--output", str(tmp_path / "x.json")), "disagrees"),
        "table to parquet": (("--format", "table", "--output", str(tmp_path / "x.parquet")), "disagrees"),
        "missing folder": (("--output", str(tmp_path / "no" / "such" / "x.csv")), "does not exist"),
        "under a file": (("--output", str(tmp_path / "plain-file" / "x.csv")), "not a folder"),
        "a directory": (("--output", str(tmp_path / "folder.csv")), "is a directory"),
        "unwritable": (("--output", str(read_only / "nova-sql-test.csv")), "cannot write"),
        "no extension": (("--output", str(tmp_path / "result")), "extension"),
        "in the dataset": (("--output", str(dataset / "bbo" / "x.csv")), "inside the bbo table"),
        "limit 0": (("--limit", "0"), "--limit"),
        "limit -3": (("--limit", "-3"), "--limit"),
        "limit abc": (("--limit", "abc"), "--limit"),
        "unknown format": (("--format", "xml"), "--format: 'xml'"),
        "parquet to stdout": (("--format", "parquet"), "--output"),
        "failing query": (("--output", str(tmp_path / "failed.csv"), "--format", "csv"), "no_such_column"),
    }
    before = sorted(p.name for p in tmp_path.rglob("*"))
    procs = novas(*(("sql", "--data", data, *args,
                     "SELECT no_such_column FROM bbo" if name == "failing query" else "SELECT 1 AS one")
                    for name, (args, _) in calls.items()))
    for (name, (_, phrase)), proc in zip(calls.items(), procs, strict=True):
        assert phrase in one_sentence(proc), name
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "nothing was written, not even a temporary"
    assert not (dataset / "bbo" / "x.csv").exists()


def test_output_replaces_a_file_only_when_complete(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.csv"
    out.write_text("the previous result\n")
    failed = nova("sql", "--data", str(dataset), "--output", str(out), "SELECT error('midway') FROM bbo")
    assert "midway" in one_sentence(failed)
    assert out.read_text() == "the previous result\n"
    ok(nova("sql", "--data", str(dataset), "--output", str(out), "SELECT 1 AS a"))
    assert out.read_text() == "a\n1\n"


# ---- 4. timestamps -------------------------------------------------------------------------------------------

def test_views_show_every_timestamp_as_microsecond_timestamptz(dataset: Path) -> None:
    con = connect(dataset)
    checked = 0
    for table, schema in SCHEMAS.items():
        if not (dataset / table).exists():
            continue
        for field in schema:
            if pa.types.is_timestamp(field.type):
                assert con.execute(f"SELECT DISTINCT typeof({field.name}) FROM {table}").fetchall() == \
                    [("TIMESTAMP WITH TIME ZONE",)], (table, field.name)
                checked += 1
    assert checked >= 10


def test_usual_timestamp_functions_work_and_are_exact_to_the_microsecond(dataset: Path) -> None:
    query = """SELECT epoch_ms(ts_recv) AS ms, epoch_us(ts_recv) AS us,
                      epoch_us(ts_recv - lag(ts_recv) OVER (ORDER BY ts_recv)) AS gap_us,
                      ts_recv - ts_event AS lead,
                      strftime(ts_recv, '%Y-%m-%d %H:%M:%S.%f') AS text,
                      epoch_us(date_trunc('second', ts_recv)) AS second,
                      epoch_us(time_bucket(INTERVAL '10 seconds', ts_recv)) AS bucket
               FROM bbo WHERE market = 'spot' ORDER BY ts_recv"""
    rows = json_rows(ok(nova("sql", "--data", str(dataset), "--format", "json", query)))
    recv = [ns // 1000 for ns in instants(SIZES["bbo", "spot"])]
    event = [(ns - 1000) // 1000 for ns in instants(SIZES["bbo", "spot"])]  # ts_event is 1 µs earlier
    assert [r["us"] for r in rows] == recv
    # epoch_ms truncates on DuckDB 1.x and rounds to the nearest millisecond on 2.x: either way, that microsecond
    assert all(r["ms"] in (us // 1000, -(-us // 1000)) for r, us in zip(rows, recv, strict=True))
    assert [r["gap_us"] for r in rows] == [None] + [b - a for a, b in itertools.pairwise(recv)]
    assert [r["lead"] for r in rows] == [f"00:00:00.{r - e:06d}" for r, e in zip(recv, event, strict=True)]
    assert [r["second"] for r in rows] == [us // 10**6 * 10**6 for us in recv]
    assert [r["bucket"] for r in rows] == [us // 10**7 * 10**7 for us in recv]
    assert rows[0]["text"] == "2024-03-01 00:00:00.000000" and rows[1]["text"] == "2024-03-01 00:00:01.234568"


def test_python_results_carry_microsecond_timestamps(dataset: Path) -> None:
    result = run(dataset, "SELECT ts_recv, next_funding_time FROM funding ORDER BY ts_recv")
    assert result is not None
    assert result.schema.field("ts_recv").type == pa.timestamp("us", tz="UTC")
    assert result["ts_recv"].cast(pa.int64()).to_pylist() == [ns // 1000 for ns in instants(4, 1000)]
