"""DuckDB on an object store: which way of reading ``s3://`` Parquet is fastest (the choice in nova.analysis.stores).

    python bench/object_store.py [--rows 3000000] [--files 8] [--repeat 3] [--other-python PYTHON]

A moto S3 server on 127.0.0.1 (tests/s3server.py, the tests' server) holds a book table of ``--rows`` rows in
``--files`` files (random walk prices, the contract's schema and encodings, written by nova.core.dataset), also
kept on local disk. Each way runs the same two queries over the same files, on a fresh connection, best of
``--repeat`` (plus the first run):
- ``scan``: count and sums over price and amount of every row (every row group read);
- ``window``: the rows of one message range (1/20 of the table; row groups and files pruned by statistics);
The ways:
- ``local``: DuckDB ``read_parquet`` on the local copy (the floor);
- ``fsspec``: ``read_parquet`` on ``s3://`` paths through a registered fsspec filesystem over pyarrow's S3 client
  (what ``nova sql`` does; its session opening, views and footers, is timed on its own as ``nova session``);
- ``arrow``: a pyarrow dataset over pyarrow's S3 filesystem, registered with DuckDB as a table;
- ``httpfs``: DuckDB's own httpfs extension (``duckdb-extension-httpfs`` from PyPI), only where it exists
  (DuckDB 1.4/1.5): run with ``--other-python`` pointing at an interpreter that has that DuckDB and the package,
  which then also runs ``local`` and ``fsspec`` on its DuckDB, so each DuckDB version is compared with itself.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs

NS = pa.timestamp("ns", "UTC")
QUERIES = {
    "scan": "SELECT count(*), sum(price), sum(amount), max(msg) FROM {src}",
    "window": "SELECT count(*), sum(price) FROM {src} WHERE msg BETWEEN {lo} AND {hi}",
}


def build(root: Path, rows: int, files: int) -> None:
    """A book table of ``rows`` rows in ``files`` files, with the contract's schema and encodings."""
    from nova.core.contract import SCHEMAS
    from nova.core.dataset import Dataset, new_file_name

    data = Dataset(str(root))
    partition = data.partition("book", "perp", "ETH-USDT", "2026-11-24")
    rng = np.random.default_rng(7)
    per = rows // files
    t0 = 1_795_478_400 * 10**9
    for f in range(files):
        n = per
        first = f * per
        msg = (first + np.arange(n)) // 10 + 1
        ts = t0 + msg * 5_000_000
        price = 3000 + np.round(np.cumsum(rng.normal(0, 0.01, n)), 2)
        columns = {
            "ts_recv": pa.array(ts, NS), "ts_event": pa.array(ts - 2_000_000, NS),
            "ts_trade": pa.array(ts - 3_000_000, NS),
            "first_id": pa.array(msg * 3), "last_id": pa.array(msg * 3 + 2), "prev_id": pa.array(msg * 3 - 1),
            "msg": pa.array(msg), "snapshot": pa.array(np.zeros(n, bool)), "stale": pa.array(np.zeros(n, bool)),
            "side": pa.array(np.where(rng.random(n) < 0.5, "bid", "ask")), "price": pa.array(price),
            "amount": pa.array(np.round(rng.random(n) * 10, 3)),
        }
        schema = SCHEMAS["book"]
        table = pa.Table.from_arrays([columns[f.name].cast(f.type) for f in schema], schema=schema)
        data.write_parquet(f"{partition.path}/{new_file_name(int(ts[0]))}", "book", table.to_batches())


def timed(make: Callable[[], duckdb.DuckDBPyConnection], src: str, sql: str, repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        con = make()
        start = time.perf_counter()
        con.execute(sql.format(src=src)).fetchall()
        runs.append(time.perf_counter() - start)
        con.close()
    return {"first_s": runs[0], "best_s": min(runs)}


def httpfs_connection(endpoint: str) -> duckdb.DuckDBPyConnection:
    import duckdb_extension_httpfs

    found = Path(duckdb_extension_httpfs.__file__).parent.glob(f"extensions/v{duckdb.__version__}/*.duckdb_extension")
    ext = next(found)
    con = duckdb.connect(config={"allow_unsigned_extensions": True})
    con.execute(f"LOAD '{ext}'")
    host = endpoint.split("://", 1)[1]
    con.execute(f"CREATE SECRET (TYPE s3, KEY_ID '{os.environ['AWS_ACCESS_KEY_ID']}', "
                f"SECRET '{os.environ['AWS_SECRET_ACCESS_KEY']}', REGION 'us-east-1', ENDPOINT '{host}', "
                "URL_STYLE 'path', USE_SSL false)")
    return con


def legs(local: Path, root: str, rows: int, repeat: int, httpfs: bool) -> dict[str, Any]:
    """Every way available on this interpreter's DuckDB, over the same files."""
    from nova.analysis.stores import register
    from nova.core.dataset import Dataset

    store = Dataset(root)
    files = store.table_files("book")
    paths = [p for p, _ in files]
    local_paths = [p for p, _ in Dataset(str(local)).table_files("book")]
    lo, hi = rows // 10 // 2, rows // 10 // 2 + rows // 10 // 20

    def listing(files: list[str]) -> str:
        return "read_parquet([" + ", ".join(f"'{p}'" for p in files) + "], hive_partitioning = true)"

    def fsspec() -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        register(con, store, files)
        return con

    def arrow() -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        con.register("book_ds", pads.dataset(paths, filesystem=store.fs, format="parquet"))
        return con

    ways: dict[str, tuple[Callable[[], duckdb.DuckDBPyConnection], str]] = {
        "local": (duckdb.connect, listing(local_paths)),
        "fsspec": (fsspec, listing([store.uri(p) for p in paths])),
    }
    if duckdb.__version__ >= "2":  # a registered dataset and DuckDB 1.4 disagree on nothing, but one is enough
        ways["arrow"] = (arrow, "book_ds")
    if httpfs:
        ways["httpfs"] = (lambda: httpfs_connection(os.environ["AWS_ENDPOINT_URL"]),
                          listing([store.uri(p) for p in paths]))
    out: dict[str, Any] = {"duckdb": duckdb.__version__}
    for name, (make, src) in ways.items():
        for query, sql in QUERIES.items():
            out[f"{name} {query}"] = timed(make, src, sql.replace("{lo}", str(lo)).replace("{hi}", str(hi)), repeat)
    if duckdb.__version__ >= "2":
        from nova.analysis.sql import open_session

        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            open_session(root).close()
            runs.append(time.perf_counter() - start)
        out["nova session"] = {"first_s": runs[0], "best_s": min(runs)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--other-python", help="an interpreter with DuckDB 1.4/1.5 and duckdb-extension-httpfs")
    parser.add_argument("--leg", nargs=2, metavar=("LOCAL", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.leg:  # run by the main process in --other-python
        print(json.dumps(legs(Path(args.leg[0]), args.leg[1], args.rows, args.repeat, httpfs=True)))
        return

    from tests.s3server import S3Server, set_env

    server = S3Server()
    server.start()
    try:
        set_env(server)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "data"
            build(local, args.rows, args.files)
            bucket = server.new_bucket("bench")
            pafs.copy_files(str(local), f"{bucket}/data", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=server.filesystem())
            size = sum(p.stat().st_size for p in local.rglob("*.parquet"))
            root = f"s3://{bucket}/data"
            results = {"rows": args.rows, "files": args.files, "bytes": size, "this": legs(local, root, args.rows,
                                                                                           args.repeat, False)}
            if args.other_python:
                env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
                proc = subprocess.run([args.other_python, __file__, "--rows", str(args.rows), "--repeat",
                                       str(args.repeat), "--leg", str(local), root], capture_output=True, text=True,
                                      env=env)
                if proc.returncode != 0:
                    raise SystemExit(f"--other-python failed: {proc.stderr.strip().splitlines()[-1:]}")
                results["other"] = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        server.stop()
    print(f"{args.rows:,} book rows in {args.files} files, {size / 1e6:.1f} MB, moto S3 on 127.0.0.1")
    for which in ("this", "other"):
        if which not in results:
            continue
        figures = results[which]
        print(f"DuckDB {figures['duckdb']}:")
        for name, value in figures.items():
            if isinstance(value, dict):
                print(f"  {name:<20} first {value['first_s'] * 1000:8.1f} ms   best {value['best_s'] * 1000:8.1f} ms")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
