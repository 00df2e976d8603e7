"""``nova export snapshots`` against replaying the same data (DESIGN §5; target: an export of a day of ETH in less
time than replaying it twice).

    python bench/export.py [--hours 24] [--dir DIR] [--repeat 2]

The dataset is bench/replay.py's (the real ETHUSDT captures tiled over ``--hours`` of 2026-11-24 by the
recorder's own code, cached in ``--dir``; the default folder is the one bench/replay.py uses, so the two share
it). Measured, each in a fresh process after a warm-up that loads the compiled loop:
- replay: ``Replay.run()`` over the day (books + spread + summary, no output), as bench/replay.py's "replay";
- export 25 levels every 100 ms (tardis's ``book_snapshot_25_100ms`` shape), both markets, files written;
- export 5 levels every 1 s: the same pass with ~50x less to copy and write, so the difference between the two
  exports is the cost of sampling and writing, and peak RSS compared across them shows memory does not grow
  with the rows written.

Rows/s are book rows processed per wall-clock second; snapshot rows/s are grid instants written per second
(both markets counted). The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.replay import DATE, build_dataset  # after the path: run as a script from anywhere


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warm_up(root: Path) -> None:
    from replay import Replay, export_snapshots

    Replay(str(root), "ETH/USDT", DATE, start="00:10", end="00:10:01").run()
    export_snapshots(str(root), "ETH/USDT", DATE, levels=1, every="1m", markets="spot")


def measure_replay(root: Path) -> dict[str, Any]:
    from replay import Replay

    _warm_up(root)
    wall, cpu = time.perf_counter(), time.process_time()
    summary = Replay(str(root), "ETH/USDT", DATE).run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows = summary.rows_processed
    return {"book_rows": rows, "wall_s": wall, "cpu_s": cpu, "rows_per_s": rows / wall, "rss_mb": _rss_mb()}


def measure_export(root: Path, levels: int, every: str) -> dict[str, Any]:
    from replay import export_snapshots

    _warm_up(root)
    wall, cpu = time.perf_counter(), time.process_time()
    summary = export_snapshots(str(root), "ETH/USDT", DATE, levels=levels, every=every)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    size = sum(Path(f.path).stat().st_size for f in summary.files)
    return {"book_rows": summary.book_rows, "snapshot_rows": summary.rows, "valid_rows": summary.valid_rows,
            "wall_s": wall, "cpu_s": cpu, "rows_per_s": summary.book_rows / wall,
            "snapshot_rows_per_s": summary.rows / wall, "bytes": size, "rss_mb": _rss_mb()}


MEASURES = {
    "replay": measure_replay,
    "export-25-100ms": lambda root: measure_export(root, 25, "100ms"),
    "export-5-1s": lambda root: measure_export(root, 5, "1s"),
}


def run_measure(name: str, root: Path) -> dict[str, Any] | None:
    proc = subprocess.run([sys.executable, __file__, "--measure", name, "--dir", str(root)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        print(f"  {name}: failed ({proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0, help="hours of data to generate (from 00:00 UTC)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "nova-bench-replay")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs of each figure, interleaved")
    parser.add_argument("--measure", choices=list(MEASURES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(MEASURES[args.measure](args.dir)))
        return

    info = build_dataset(args.dir, args.hours)
    print(f"dataset {args.dir}: {info['rows']['book']:,} book rows over {args.hours:g} h, "
          f"{info['bytes'] / 2**20:,.0f} MiB")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in MEASURES}
    for _ in range(args.repeat):  # interleaved, so that a busy moment of the machine hits every figure alike
        for name in MEASURES:
            result = run_measure(name, args.dir)
            if result is not None:
                runs[name].append(result)
    best = {name: min(results, key=lambda r: r["wall_s"]) for name, results in runs.items() if results}
    if "replay" not in best:
        raise SystemExit("the replay failed every time")
    replay = best["replay"]
    figures: dict[str, Any] = {"bench": "export", "hours": args.hours, "book_rows": info["rows"]["book"],
                               "replay_wall_s": round(replay["wall_s"], 2), "replay_cpu_s": round(replay["cpu_s"], 2),
                               "replay_rss_mb": round(replay["rss_mb"])}
    print(f"{'replay (books + spread, no output)':40s} {replay['wall_s']:7.2f} s wall {replay['cpu_s']:7.2f} s CPU "
          f"{replay['rows_per_s'] / 1e6:6.2f} M book rows/s, peak RSS {replay['rss_mb']:,.0f} MB")
    for name in ("export-25-100ms", "export-5-1s"):
        if name not in best:
            continue
        r = best[name]
        ratio, cpu_ratio = r["wall_s"] / replay["wall_s"], r["cpu_s"] / replay["cpu_s"]
        print(f"{name:40s} {r['wall_s']:7.2f} s wall {r['cpu_s']:7.2f} s CPU {r['rows_per_s'] / 1e6:6.2f} M book "
              f"rows/s, {r['snapshot_rows_per_s'] / 1e6:5.2f} M snapshot rows/s, {r['snapshot_rows']:,} rows "
              f"({r['valid_rows']:,} valid), {r['bytes'] / 2**20:,.1f} MiB, peak RSS {r['rss_mb']:,.0f} MB; "
              f"{ratio:.2f}x the replay's wall time ({cpu_ratio:.2f}x its CPU)")
        key = name.replace("-", "_")
        figures.update({f"{key}_wall_s": round(r["wall_s"], 2), f"{key}_cpu_s": round(r["cpu_s"], 2),
                        f"{key}_rows_per_s": round(r["rows_per_s"]),
                        f"{key}_snapshot_rows_per_s": round(r["snapshot_rows_per_s"]),
                        f"{key}_bytes": r["bytes"], f"{key}_rss_mb": round(r["rss_mb"]),
                        f"{key}_to_replay_wall": round(ratio, 3), f"{key}_to_replay_cpu": round(cpu_ratio, 3)})
    print(json.dumps(figures))
    _remove_snapshots(args.dir)


def _remove_snapshots(root: Path) -> None:
    """Leave the shared dataset as bench/replay.py built it: without the snapshots this bench exported."""
    import shutil

    from nova.core.dataset import SNAPSHOTS_TABLE

    shutil.rmtree(root / SNAPSHOTS_TABLE, ignore_errors=True)


if __name__ == "__main__":
    main()
