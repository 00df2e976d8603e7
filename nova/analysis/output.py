"""The results of ``nova sql``: a table on the terminal, or CSV, JSON lines or Parquet, on stdout or in a file.

Why DuckDB produces every format: a result can hold any DuckDB type (INTERVAL, nested LIST/STRUCT/MAP,
DECIMAL, HUGEINT, UUID, BLOB, ENUM, TIME WITH TIME ZONE...), and only DuckDB shows each of them the way
DuckDB users read them; pyarrow's writers refuse some (INTERVAL, nested values in CSV) and show others
differently. So CSV, JSON lines and Parquet are DuckDB's own ``COPY`` of the statement, and the table shows
the DuckDB text of its first rows (``CAST(... AS VARCHAR)`` inside DuckDB).

Why the statement runs once: ``nova.analysis.sql.prepare`` gives the last statement as something to SELECT FROM,
and each format reads it exactly once: one COPY, or for the table one streamed pass that keeps the first
``limit`` rows and only counts the others (a result larger than memory still gets its row count).

Why a temporary name: the result is written next to the target under a hidden name and renamed into place
when complete, so a failed query or a full disk never leaves half a file, and an existing file is replaced
only by a complete one.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nova.analysis.sql import VIEWS, Result, Session, check_read_only, ident, open_session, prepare
from nova.core.errors import NovaError

FORMATS = ("table", "csv", "json", "parquet")
EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json", ".parquet": "parquet",
              ".txt": "table"}
COPY_OPTIONS = {"csv": "FORMAT csv, HEADER true", "json": "FORMAT json", "parquet": "FORMAT parquet"}
FILE_WIDTH = 200  # a table written to a file is as wide as a piped one
BATCH_ROWS = 65_536
HEAD_VIEW = "nova_head"
# Types whose values come back from Arrow to DuckDB unchanged, so their text can be made after the stream; any
# other (nested types, ENUM, TIME WITH TIME ZONE, BIT, UHUGEINT, ...) is cast to VARCHAR inside the stream.
_ROUND_TRIP = re.compile(r"BOOLEAN|U?(TINYINT|SMALLINT|INTEGER|BIGINT)|HUGEINT|FLOAT|DOUBLE|DECIMAL\(\d+,\s*\d+\)"
                         r"|VARCHAR|BLOB|DATE|TIME|TIMESTAMP(_S|_MS|_NS| WITH TIME ZONE)?|INTERVAL|UUID")
_NUMERIC = re.compile(r"U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|FLOAT|DOUBLE|DECIMAL\(.*\)")


# ---- the user's options --------------------------------------------------------------------------------------

def choose_format(given: str | None, output: Path | None) -> str:
    """The output format: ``--format`` if given, else what ``--output``'s extension says, else a table."""
    if given is not None and given not in FORMATS:
        raise NovaError(f"--format {given} is not one of {', '.join(FORMATS)}")
    implied = EXTENSIONS.get(output.suffix.lower()) if output is not None else None
    if given is not None and implied is not None and given != implied:
        raise NovaError(f"--format {given} disagrees with --output {output}, whose extension means {implied}; "
                        "drop --format or change the extension")
    if given is not None:
        return given
    if output is None:
        return "table"
    if implied is None:
        raise NovaError(f"the extension of --output {output} does not say which format to write; name it .csv, "
                        ".json, .jsonl, .ndjson, .parquet or .txt, or give --format")
    return implied


def check_output(output: Path, data: Path | str) -> None:
    """Refuse, before anything runs, an --output that cannot be written or would land in the dataset. Results
    are written to a local file: an object store's URL is refused (the path would otherwise be read as a local
    folder named ``s3:``)."""
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:/", str(output)):
        raise NovaError(f"--output writes a local file, not an object-store URL ({output}); write it locally and "
                        "upload it with your store's tools")
    if output.is_dir():
        raise NovaError(f"--output {output} is a directory; give a file name, such as {output / 'result.csv'}")
    folder = output.parent
    if folder.exists() and not folder.is_dir():
        raise NovaError(f"{folder} is a file, not a folder, so --output {output} cannot be written; choose "
                        "another path")
    if not folder.is_dir():
        raise NovaError(f"the folder {folder} of --output {output} does not exist; create it first or choose "
                        "another path")
    with contextlib.suppress(ValueError, OSError):
        inside = output.resolve().relative_to(Path(data).resolve()).parts
        if len(inside) > 1 and inside[0] in VIEWS:
            raise NovaError(f"--output {output} is inside the {inside[0]} table of the dataset, where the result "
                            "would be read as part of the table; write it elsewhere")


# ---- writing -------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def staged(output: Path | None) -> Iterator[Path]:
    """A fresh hidden file next to ``output`` (or in the temporary folder for stdout), renamed onto
    ``output`` when the block succeeds and removed when it fails."""
    folder = output.parent if output is not None else Path(tempfile.gettempdir())
    name = f".{output.name if output is not None else 'nova-sql'}.{secrets.token_hex(4)}.tmp"
    path = folder / name
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except OSError as exc:
        if output is None:
            raise NovaError(f"cannot write a temporary file in {folder} ({exc.strerror or exc}); set TMPDIR to a "
                            "writable folder") from None
        raise NovaError(f"cannot write --output {output} ({exc.strerror or exc}); choose another path") from None
    try:
        yield path
        if output is not None:
            os.replace(path, output)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _columns_for(fmt: str, result: Result) -> str:
    """The SELECT list a format writes: everything as is, except that DuckDB's Parquet writer stores HUGEINT
    (what sum() of BIGINT gives) as DOUBLE, which rounds past 2**53; DECIMAL(38,0) keeps every digit (and
    fails rather than round beyond it)."""
    wide = [n for n, t in zip(result.names, result.types, strict=True) if t in ("HUGEINT", "UHUGEINT")]
    if fmt != "parquet" or not wide:
        return "*"
    return "* REPLACE (" + ", ".join(f"CAST({ident(n)} AS DECIMAL(38,0)) AS {ident(n)}" for n in wide) + ")"


def copy_to(result: Result, fmt: str, output: Path | None) -> None:
    """CSV, JSON lines or Parquet by DuckDB's own writer, into ``output`` or onto stdout."""
    with staged(output) as path:
        target = str(path).replace("'", "''")
        result.session.run(f"COPY (SELECT {_columns_for(fmt, result)} FROM {result.source}) TO '{target}' "
                           f"({COPY_OPTIONS[fmt]})")
        if output is None:
            sys.stdout.flush()
            with open(path, "rb") as produced:
                shutil.copyfileobj(produced, sys.stdout.buffer)
            sys.stdout.buffer.flush()


def head_and_count(result: Result, limit: int) -> tuple[list[tuple[str | None, ...]], int]:
    """The DuckDB text of the first ``limit`` rows, and how many rows there are, in one streamed pass."""
    aliases = [f"c{i}" for i in range(len(result.names))]
    exprs = [a if _ROUND_TRIP.fullmatch(t) else f"CAST({a} AS VARCHAR) AS {a}"
             for a, t in zip(aliases, result.types, strict=True)]
    sql = f"SELECT {', '.join(exprs)} FROM {result.source} AS nova_q({', '.join(aliases)})"
    kept: list[pa.RecordBatch] = []
    total = 0
    for batch in result.session.batches(sql, BATCH_ROWS):
        if total < limit:
            kept.append(batch.slice(0, limit - total))
        total += batch.num_rows
    if not kept or total == 0:
        return [], total
    result.session.register(HEAD_VIEW, pa.Table.from_batches(kept))
    try:
        rows = result.session.rows(f"SELECT {', '.join(f'CAST({a} AS VARCHAR)' for a in aliases)} FROM {HEAD_VIEW}")
    finally:
        result.session.unregister(HEAD_VIEW)
    return rows, total


def render_table(names: list[str], types: list[str], rows: list[tuple[str | None, ...]], total: int,
                 limit: int) -> Table:
    """A rich table of the rows' text; Text cells, so a value is never read as console markup."""
    caption = f"{total:,} row{'' if total == 1 else 's'}" + (f", first {limit:,} shown" if total > limit else "")
    view = Table(caption=caption, min_width=len(caption) + 4)  # the caption on one line, however narrow
    for name, kind in zip(names, types, strict=True):
        view.add_column(Text(name), justify="right" if _NUMERIC.fullmatch(kind) else "left")
    for row in rows:
        view.add_row(*(Text("NULL", style="dim") if value is None else Text(value) for value in row))
    return view


def write_table(result: Result, output: Path | None, limit: int, console: Console) -> None:
    rows, total = head_and_count(result, limit)
    view = render_table(result.names, result.types, rows, total, limit)
    if output is None:
        console.print(view)
        return
    with staged(output) as path, open(path, "w", encoding="utf-8") as file:
        Console(file=file, width=FILE_WIDTH, no_color=True, highlight=False).print(view)


def export(data: Path | str, sql: str, fmt: str, output: Path | None, limit: int, console: Console) -> bool:
    """Run read-only ``sql`` over the dataset and write the last statement's result once, in ``fmt``. False
    when that statement returns nothing (a SET)."""
    check_read_only(sql)  # before the dataset's footers are read: a refused statement costs nothing
    session = open_session(data)
    try:
        result = prepare(session, sql)
        if result is None:
            return False
        if fmt == "table":
            write_table(result, output, limit, console)
        else:
            copy_to(result, fmt, output)
        return True
    finally:
        session.close()


def export_arrow(table: pa.Table, fmt: str, output: Path | None, limit: int, console: Console) -> None:
    """Write an Arrow table a command computed (``nova scan``'s ranking) exactly as ``nova sql`` writes a
    result: the same formats, the same table look, the same atomic file."""
    import duckdb

    session = Session(duckdb.connect(), {}, frozenset())
    try:
        session.register("nova_result", table)
        result = prepare(session, "SELECT * FROM nova_result")
        assert result is not None
        if fmt == "table":
            write_table(result, output, limit, console)
        else:
            copy_to(result, fmt, output)
    finally:
        session.close()

