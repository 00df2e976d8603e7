"""DuckDB over a generated day (DESIGN §6: top of book every second for a day < 2 s), before and after compaction.

    python bench/analysis.py [--dir DIR] [--repeat 3] [--instant 12:00:00]

The dataset is bench/replay.py's day (the real ETHUSDT captures tiled over 2026-11-24 by the recorder's own
code: ~134 M book rows, ~19 M bookTickers in 96 rotated 15-minute files per table and market), built once and
cached in ``--dir``. Its ``book`` and ``bbo`` tables are hard-linked (copied where links are impossible) into
``DIR-analysis``, which is then compacted in place by ``nova.analysis.compact`` (``nova compact``'s code): the
cached dataset itself is never rewritten. ``compact`` is given a "today" after the dataset's date, as it
would be on any later day, so it runs whatever today's date is.

Measured on that copy, before and after compaction, each on a fresh DuckDB connection from
``nova.analysis.sql.connect`` (the session ``nova sql`` opens), the whole result fetched as Arrow:
- ``top_of_book`` every second for the whole day, perp and spot (86,400 rows each);
- ``basis`` every second for the whole day (both markets' tops joined);
- ``book_at`` at ``--instant``: the perp and the spot book, 20 levels a side, rebuilt from the last snapshot
  plus every later diff;
with the number of Parquet files the query's table holds for the day. The baseline, measured in the same
run on the same files: a plain DuckDB scan of the columns the query reads for the whole day (both markets),
and each query's ratio to it. Reported: the first run (a new
connection, the files in the OS page cache after the copy) and the best of ``--repeat``.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.replay import DATE, build_dataset

TABLES = ("book", "bbo")
TARGET_S = 2.0
SYM = "ETH-USDT"


def queries(instant: str) -> dict[str, tuple[str, tuple[str, ...], str]]:
    """name -> (table it reads, markets it reads, SQL) for the day DATE."""
    day0 = f"{DATE} 00:00:00+00"
    day1 = (dt.date.fromisoformat(DATE) + dt.timedelta(days=1)).isoformat() + " 00:00:00+00"
    at = f"{DATE} {instant}+00"
    return {
        "top_of_book perp, every 1 s, 24 h": (
            "bbo", ("perp",), f"SELECT * FROM top_of_book('perp', '{SYM}', '{day0}', '{day1}', INTERVAL 1 SECOND)"),
        "top_of_book spot, every 1 s, 24 h": (
            "bbo", ("spot",), f"SELECT * FROM top_of_book('spot', '{SYM}', '{day0}', '{day1}', INTERVAL 1 SECOND)"),
        "basis, every 1 s, 24 h": (
            "bbo", ("spot", "perp"), f"SELECT * FROM basis('{SYM}', '{day0}', '{day1}', INTERVAL 1 SECOND)"),
        f"book_at perp {instant}, 20 levels": (
            "book", ("perp",), f"SELECT * FROM book_at('perp', '{SYM}', '{at}', 20)"),
        f"book_at spot {instant}, 20 levels": (
            "book", ("spot",), f"SELECT * FROM book_at('spot', '{SYM}', '{at}', 20)"),
    }


def baselines() -> dict[str, str]:
    """The floor each query is compared with: a plain DuckDB scan of the columns it reads, for the day."""
    return {
        "bbo": f"SELECT max(ts_recv), sum(bid_price), sum(ask_price), sum(bid_amount), sum(ask_amount) FROM bbo "
               f"WHERE symbol = '{SYM}' AND date = '{DATE}'",
        "book": f"SELECT max(ts_recv), max(msg), sum(price), sum(amount), count(side) FROM book "
                f"WHERE symbol = '{SYM}' AND date = '{DATE}'",
    }


def link_copy(source: Path, target: Path) -> None:
    """``target`` = the book and bbo tables of ``source``, as hard links (compaction never rewrites a file in
    place: it writes a new one and swaps folders, so the cached originals stay intact)."""
    if target.exists():
        shutil.rmtree(target)
    for table in TABLES:
        for path in (source / table).rglob("*.parquet"):
            dest = target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)


def files_of(root: Path, table: str, markets: tuple[str, ...]) -> int:
    return sum(1 for market in markets for p in (root / table).glob(f"exchange=*/market={market}/symbol={SYM}/"
                                                                      f"date={DATE}/*.parquet")
               if not p.name.startswith("."))


def measure(root: Path, sql: str, repeat: int) -> dict[str, Any]:
    from nova.analysis.sql import connect

    times, rows = [], 0
    for _ in range(repeat):
        con = connect(root)
        started = time.perf_counter()
        rows = con.sql(sql).to_arrow_table().num_rows
        times.append(time.perf_counter() - started)
        con.close()
    return {"first_s": times[0], "best_s": min(times), "rows": rows}


def run_all(root: Path, instant: str, repeat: int, label: str) -> dict[str, dict[str, Any]]:
    floors = {table: measure(root, sql, repeat)["best_s"] for table, sql in baselines().items()}
    for table, best in floors.items():
        print(f"  {label:7s} {'baseline: scan of ' + table + ' (both markets)':38s} best {best:6.3f} s", flush=True)
    results = {}
    for name, (table, markets, sql) in queries(instant).items():
        result = measure(root, sql, repeat)
        result["files"] = files_of(root, table, markets)
        result["scan_s"] = floors[table]
        result["ratio"] = result["best_s"] / floors[table]
        results[name] = result
        print(f"  {label:7s} {name:38s} {result['rows']:>7,} rows  {result['files']:>3} files  "
              f"first {result['first_s']:6.3f} s  best {result['best_s']:6.3f} s  "
              f"= {result['ratio']:.2f}x the scan", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "nova-bench-replay",
                        help="the day dataset of bench/replay.py (built there if absent)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each query (first and best reported)")
    parser.add_argument("--instant", default="12:00:00", help="UTC time of day for book_at (HH:MM:SS)")
    args = parser.parse_args()

    info = build_dataset(args.dir, 24.0)
    print(f"dataset {args.dir}: {info['rows']['book']:,} book rows, {info['rows']['bbo']:,} bbo over 24 h")
    work = args.dir.with_name(args.dir.name + "-analysis")
    link_copy(args.dir, work)
    figures: dict[str, Any] = {"bench": "analysis", "book_rows": info["rows"]["book"], "bbo_rows": info["rows"]["bbo"],
                               "target_s": TARGET_S}

    print("before nova compact (the recorder's 15-minute files):")
    before = run_all(work, args.instant, args.repeat, "before")

    from nova.analysis.compact import compact

    started = time.perf_counter()
    tomorrow = (dt.date.fromisoformat(DATE) + dt.timedelta(days=1)).isoformat()
    parts = compact(work, DATE, tomorrow)
    compact_s = time.perf_counter() - started
    files_before, files_after = sum(p.files_before for p in parts), sum(p.files_after for p in parts)
    bytes_before, bytes_after = sum(p.bytes_before for p in parts), sum(p.bytes_after for p in parts)
    print(f"nova compact: {files_before} files, {bytes_before / 2**20:,.0f} MiB -> {files_after} files, "
          f"{bytes_after / 2**20:,.0f} MiB in {compact_s:.1f} s")
    figures.update({"compact_s": round(compact_s, 2), "files_before": files_before, "files_after": files_after,
                    "bytes_before": bytes_before, "bytes_after": bytes_after})

    print("after nova compact (one file per partition):")
    after = run_all(work, args.instant, args.repeat, "after")

    print()
    print(f"| query | files before | best before (x scan) | files after | best after (x scan) "
          f"| target < {TARGET_S:g} s |")
    print("|---|---|---|---|---|---|")
    for name in before:
        b, a = before[name], after[name]
        verdict = "met" if max(b["best_s"], a["best_s"]) < TARGET_S else "not met"
        print(f"| {name} | {b['files']} | {b['best_s']:.3f} s ({b['ratio']:.2f}x) | {a['files']} | "
              f"{a['best_s']:.3f} s ({a['ratio']:.2f}x) | {verdict} |")
        key = name.split(",")[0].replace(" ", "_").replace(":", "")
        figures[f"{key}_before_s"] = round(b["best_s"], 4)
        figures[f"{key}_after_s"] = round(a["best_s"], 4)
        figures[f"{key}_first_before_s"] = round(b["first_s"], 4)
        figures[f"{key}_first_after_s"] = round(a["first_s"], 4)
        figures[f"{key}_ratio_to_scan_before"] = round(b["ratio"], 3)
        figures[f"{key}_ratio_to_scan_after"] = round(a["ratio"], 3)
    shutil.rmtree(work)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
