"""Recorder throughput against bare ccxt.pro on the same feed (DESIGN §6: target >= 0.85).

    python bench/recorder.py [--messages 130000] [--repeat 3]

The feed is the real USDT-M ETHUSDT capture tiled to --messages diff-depth messages (bench/feed.py),
played by `nova venue --speed max` in its own process. Each variant runs in a fresh process of its own:
(a) baseline: a ccxt.pro binance whose handle_order_book only counts; (b) the full recorder (book table,
perp) writing Parquet and keeping live books for the status view, as `nova record` does; (c) the same
without live books, as `nova record -q` runs. Prints messages/s of each (best and median of --repeat), the
ratios to the baseline, the time the recorder adds per message beyond the baseline (1/rate - 1/baseline rate,
in µs), the CPU time of the client process per message (and beyond the baseline's), bytes per book row on
disk, the raw gzip bytes per row of the same feed, and peak RSS. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.feed import tiled_perp_feed
from bench.venue import WARMUP, CountingBinance, start_venue, stop_venue


async def measure(variant: str, feed: Path, total: int, data: Path) -> dict[str, Any]:
    from nova.core.markets import Symbol
    from recorder.endpoints import ccxt_options, point_at_venue
    from recorder.recorder import Recorder, RecorderConfig

    proc, url = start_venue(feed)
    try:
        if variant == "baseline":
            exchange = CountingBinance({"options": ccxt_options("perp", 0)})
            point_at_venue(exchange, url)
            await exchange.load_markets()
            watch = asyncio.ensure_future(exchange.watch_order_book("ETH/USDT:USDT"))

            def count() -> int:
                return exchange.count
        else:
            rec = Recorder(RecorderConfig(symbols=[Symbol("ETH", "USDT")], data=str(data), endpoint=url,
                                          markets=("perp",), tables=("book",),
                                          live_spread=variant == "recorder"))
            await rec.start()
            stats = rec.sessions["perp"].states["ETHUSDT"].stats["book"]

            def count() -> int:
                return stats.messages
        while count() < WARMUP:
            await asyncio.sleep(0.001)
        started, cpu, first = time.perf_counter(), time.process_time(), count()
        while count() < total - 10:
            await asyncio.sleep(0.005)
        received = count() - first
        rate = received / (time.perf_counter() - started)
        # CPU of this process (ccxt's loop and the recorder's worker thread, not the venue's) per message:
        # unlike msg/s, hardly moved by other load on the machine
        out: dict[str, Any] = {"msgs_per_s": rate, "cpu_us_per_msg": (time.process_time() - cpu) / received * 1e6}
        if variant == "baseline":
            watch.cancel()
            await exchange.close()
        else:
            summary = await rec.stop()
            rows = summary["perp/ETH-USDT/book"]["rows"]
            size = sum(p.stat().st_size for p in data.rglob("*.parquet"))
            out.update(book_rows=rows, bytes_per_row=size / rows)
    finally:
        stop_venue(proc)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_variant(variant: str, feed: Path, total: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data:
        result = subprocess.run([sys.executable, __file__, "--variant", variant, "--feed", str(feed),
                                 "--total", str(total), "--data", data], capture_output=True, text=True,
                                check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=130_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--feed", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # a child process measuring one variant
        print(json.dumps(asyncio.run(measure(args.variant, Path(args.feed), args.total, Path(args.data)))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        feed = Path(tmp) / "feed.txt"
        total = tiled_perp_feed(feed, args.messages)
        gz = Path(tmp) / "feed.txt.gz"
        gz.write_bytes(gzip.compress(feed.read_bytes(), compresslevel=6))
        best: dict[str, dict[str, Any]] = {}
        rates: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            for variant in ("baseline", "recorder", "recorder-q"):
                result = run_variant(variant, feed, total)
                print(f"{variant:10s} {result['msgs_per_s']:>10,.0f} msg/s  "
                      f"{result['cpu_us_per_msg']:6.2f} CPU-µs/msg  peak RSS {result['peak_rss_mb']:.0f} MB",
                      flush=True)
                rates.setdefault(variant, []).append(result["msgs_per_s"])
                cpus.setdefault(variant, []).append(result["cpu_us_per_msg"])
                if variant not in best or result["msgs_per_s"] > best[variant]["msgs_per_s"]:
                    best[variant] = result
        median = {variant: statistics.median(values) for variant, values in rates.items()}
        top = {variant: max(values) for variant, values in rates.items()}

        def beyond(rate: dict[str, float], variant: str) -> float:  # µs per message on top of the baseline's
            return round(1e6 / rate[variant] - 1e6 / rate["baseline"], 2)

        rows = best["recorder"]["book_rows"]
        report = {
            "messages": total,
            "baseline_msgs_per_s": round(best["baseline"]["msgs_per_s"]),
            "recorder_msgs_per_s": round(best["recorder"]["msgs_per_s"]),
            "ratio": round(best["recorder"]["msgs_per_s"] / best["baseline"]["msgs_per_s"], 3),
            "recorder_quiet_msgs_per_s": round(best["recorder-q"]["msgs_per_s"]),
            "ratio_quiet": round(best["recorder-q"]["msgs_per_s"] / best["baseline"]["msgs_per_s"], 3),
            "median_msgs_per_s": {variant: round(value) for variant, value in median.items()},
            "median_ratio": round(median["recorder"] / median["baseline"], 3),
            "median_ratio_quiet": round(median["recorder-q"] / median["baseline"], 3),
            "us_per_msg_beyond_baseline": {"best": beyond(top, "recorder"), "median": beyond(median, "recorder")},
            "us_per_msg_beyond_baseline_quiet": {"best": beyond(top, "recorder-q"),
                                                 "median": beyond(median, "recorder-q")},
            "runs_msgs_per_s": {variant: [round(v) for v in values] for variant, values in rates.items()},
            "cpu_us_per_msg": {variant: {"best": round(min(values), 2), "median": round(statistics.median(values), 2)}
                               for variant, values in cpus.items()},
            "cpu_us_per_msg_beyond_baseline": {
                variant: {"best": round(min(cpus[variant]) - min(cpus["baseline"]), 2),
                          "median": round(statistics.median(cpus[variant]) - statistics.median(cpus["baseline"]), 2)}
                for variant in ("recorder", "recorder-q")},
            "book_rows": rows,
            "bytes_per_book_row": round(best["recorder"]["bytes_per_row"], 3),
            "raw_gzip_bytes_per_book_row": round(gz.stat().st_size / rows, 3),
            "baseline_peak_rss_mb": round(best["baseline"]["peak_rss_mb"]),
            "recorder_peak_rss_mb": round(best["recorder"]["peak_rss_mb"]),
        }
    print(f"ratio recorder/baseline: best {report['ratio']:.3f}, median {report['median_ratio']:.3f} (target >= 0.85); "
          f"beyond the baseline {report['us_per_msg_beyond_baseline']['best']} µs per message (best), "
          f"{report['us_per_msg_beyond_baseline']['median']} (median); CPU beyond the baseline "
          f"{report['cpu_us_per_msg_beyond_baseline']['recorder']['median']} µs per message (median); "
          f"{report['bytes_per_book_row']} B per book row on disk vs {report['raw_gzip_bytes_per_book_row']} B gzip")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
