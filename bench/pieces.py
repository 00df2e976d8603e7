"""Batch replay throughput: (symbol, date) pieces per second with 1 and 2 workers, on the same data, same run.

    python bench/pieces.py [--symbols 8] [--hours 1] [--dir DIR] [--dask]

The dataset: bench/replay.py's tiled real ETHUSDT captures (``--hours`` of 2026-11-24, ~5.4 M book rows per
hour), copied under ``--symbols`` symbol names (ETH-USDT, S01-USDT, ...), so every piece is the same work and
the ratio of the runs is the parallel speed-up alone. Each measurement is ``nova replay --symbols all --workers
N`` as a user runs it, in a fresh process, writing every piece's spread series (wall time includes starting the
worker processes; CPU seconds are the command's and its workers'). ``--dask`` adds a local Dask cluster of 2
workers (``--scheduler local``).
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.replay import DATE, build_dataset

NOVA = [sys.executable, "-m", "nova.cli"]


def build(root: Path, symbols: int, hours: float) -> dict:
    """bench/replay.py's day under ``symbols`` names (hard links: the files are the same bytes)."""
    base = root.parent / f"{root.name}-base"
    info = build_dataset(base, hours)
    marker = root / ".bench-pieces.json"
    want = {"symbols": symbols, "hours": hours, "base": info}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return want
    shutil.rmtree(root, ignore_errors=True)
    names = ["ETH-USDT"] + [f"S{i:02d}-USDT" for i in range(1, symbols)]
    for path in base.rglob("*.parquet"):
        for name in names:
            target = root / str(path.relative_to(base)).replace("symbol=ETH-USDT", f"symbol={name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.hardlink_to(path)
    marker.write_text(json.dumps(want))
    return want


def run(root: Path, *args: str) -> tuple[float, float]:
    """Wall and CPU seconds (of the command and every process it started) of one batch replay."""
    shutil.rmtree(root / "spread", ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([*NOVA, "replay", "--symbols", "all", "--date", DATE, "--data", str(root), "--quiet", *args],
                   check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "nova-bench-pieces")
    parser.add_argument("--dask", action="store_true")
    args = parser.parse_args()
    info = build(args.dir, args.symbols, args.hours)
    rows = info["base"]["rows"]["book"] * args.symbols
    run(args.dir, "--workers", "1")  # warm: the compiled loop cached, the files in the page cache
    figures: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for label, extra in (("1 worker", ("--workers", "1")), ("2 workers", ("--workers", "2")),
                         *((("dask local, 2 workers", ("--scheduler", "local", "--workers", "2")),) if args.dask
                           else ())):
        wall, cpu[label] = run(args.dir, *extra)
        figures[label] = wall
        print(f"{label:>22}: {wall:7.2f} s wall, {cpu[label]:7.2f} s CPU ({cpu[label] / wall:.2f} cores), "
              f"{args.symbols / wall:6.2f} pieces/s, {rows / wall / 1e6:6.2f} M book rows/s")
    base = figures["1 worker"]
    for label, wall in figures.items():
        print(f"{label:>22}: speed-up {base / wall:.2f}x over 1 worker (same run)")
    print(json.dumps({"pieces": args.symbols, "book_rows": rows, "hours_per_piece": args.hours, "wall_s": figures,
                      "cpu_s": cpu,
                      "pieces_per_s": {k: args.symbols / v for k, v in figures.items()}}))


if __name__ == "__main__":
    main()
