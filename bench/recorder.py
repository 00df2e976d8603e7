"""Recorder throughput against bare ccxt.pro on the same feed (DESIGN §8: target >= 0.85, <= 10 CPU-µs per
message beyond ccxt), its memory at saturation, and pairs per core at the venue's realistic rates.

    python bench/recorder.py [--messages 130000] [--repeat 3] [--realistic-seconds 20] [--zstd-level N]

The feed is the real USDT-M ETHUSDT capture tiled to --messages diff-depth messages (bench/feed.py),
played by `nova venue --speed max` in its own process. Each variant runs in a fresh process of its own:
(a) baseline: a ccxt.pro binance whose handle_order_book only counts; (b) the full recorder (book table,
perp) writing Parquet and keeping live books for the status view, as `nova record` does; (c) the same
without live books, as `nova record -q` runs; (e) (c) with ccxt parsing every diff's JSON, as before the
recorder read diff frames itself (the same-run measure of that change). Prints messages/s of each (best and
median of --repeat), the ratios to the baseline, the time the recorder adds per message beyond the baseline
(1/rate - 1/baseline rate, in µs), the CPU time of the client process per message (and beyond the
baseline's) while streaming, the CPU of finishing the files at stop (the Parquet encode a rotation pays) per
message, bytes per book row on disk, the raw gzip bytes per row of the same feed, peak RSS, and the most the
recorder held for its writer (recorder.intake's back-pressure bound) with how often it held the connection
back. Then (d) pairs per core: `nova record --all -q` against a synthetic `nova venue` of 2 pairs at its
default realistic rates (bench/fleet.py's measurement, --realistic-seconds; 0 skips it). The last line is one
JSON object.
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


async def measure(variant: str, feed: Path, total: int, data: Path, zstd_level: int | None,
                  queue_mb: float | None) -> dict[str, Any]:
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
            if variant == "recorder-q-ccxt":  # as before the frame path: ccxt parses every diff's JSON
                from recorder.session import MarketSession

                MarketSession.on_depth_frame = lambda *args: False  # type: ignore[method-assign]
            bound: dict[str, Any] = {} if queue_mb is None else {"queue_bytes": int(queue_mb * 2**20)}
            rec = Recorder(RecorderConfig(symbols=[Symbol("ETH", "USDT")], data=str(data), endpoint=url,
                                          markets=("perp",), tables=("book",),
                                          live_spread=variant == "recorder", zstd_level=zstd_level, **bound))
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
            held = {"queued_peak_mb": rec.intake.peak / 2**20, "queue_bound_mb": rec.intake.bound / 2**20,
                    "pauses": rec.intake.pauses,  # and the peak RSS before the files are finished:
                    "streaming_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
            stopping = time.process_time()
            summary = await rec.stop()  # the last flush, then every journal becomes its Parquet file
            rows = summary["perp/ETH-USDT/book"]["rows"]
            size = sum(p.stat().st_size for p in data.rglob("*.parquet"))
            finishing = time.process_time() - stopping
            out.update(book_rows=rows, bytes_per_row=size / rows, **held,
                       finish_cpu_us_per_msg=finishing / summary["perp/ETH-USDT/book"]["messages"] * 1e6)
    finally:
        stop_venue(proc)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


VARIANTS = ("baseline", "recorder", "recorder-q", "recorder-q-ccxt")
REALISTIC_PAIRS = 2  # a venue this small keeps up with its clock (bench/fleet.py's calibration)


def realistic(seconds: float) -> dict[str, Any]:
    """Pairs per core at the venue's realistic rates: bench/fleet.py's measurement of `nova record --all -q`."""
    from bench.fleet import measure as measure_fleet
    from bench.fleet import venue_of

    with venue_of(REALISTIC_PAIRS) as url:
        result = measure_fleet(url, 1, seconds, REALISTIC_PAIRS)
    return {"realistic": result, "pairs_per_core": result["pairs_per_core"]}


def run_variant(variant: str, feed: Path, total: int, zstd_level: int | None, queue_mb: float | None
                ) -> dict[str, Any]:
    level = [] if zstd_level is None else ["--zstd-level", str(zstd_level)]
    level += [] if queue_mb is None else ["--queue-mb", str(queue_mb)]
    with tempfile.TemporaryDirectory() as data:
        result = subprocess.run([sys.executable, __file__, "--variant", variant, "--feed", str(feed),
                                 "--total", str(total), "--data", data, *level], capture_output=True, text=True,
                                check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=130_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--realistic-seconds", type=float, default=20.0,
                        help="measured time of the pairs-per-core run at realistic rates (0: skip it)")
    parser.add_argument("--zstd-level", type=int, help="the recorder's Parquet level (default: the contract's)")
    parser.add_argument("--queue-mb", type=float, help="the recorder's back-pressure bound (default: RecorderConfig's)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--feed", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # a child process measuring one variant
        print(json.dumps(asyncio.run(measure(args.variant, Path(args.feed), args.total, Path(args.data),
                                             args.zstd_level, args.queue_mb))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        feed = Path(tmp) / "feed.txt"
        total = tiled_perp_feed(feed, args.messages)
        gz = Path(tmp) / "feed.txt.gz"
        gz.write_bytes(gzip.compress(feed.read_bytes(), compresslevel=6))
        best: dict[str, dict[str, Any]] = {}
        rates: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        seen: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeat):
            for variant in VARIANTS:
                result = run_variant(variant, feed, total, args.zstd_level, args.queue_mb)
                extra = "" if variant == "baseline" else (
                    f" (streaming {result['streaming_peak_rss_mb']:.0f})  held at most "
                    f"{result['queued_peak_mb']:.1f} MB (bound {result['queue_bound_mb']:.0f}, "
                    f"{result['pauses']} pauses)  finishing {result['finish_cpu_us_per_msg']:.2f} CPU-µs/msg")
                print(f"{variant:10s} {result['msgs_per_s']:>10,.0f} msg/s  "
                      f"{result['cpu_us_per_msg']:6.2f} CPU-µs/msg  peak RSS {result['peak_rss_mb']:.0f} MB{extra}",
                      flush=True)
                rates.setdefault(variant, []).append(result["msgs_per_s"])
                cpus.setdefault(variant, []).append(result["cpu_us_per_msg"])
                for key in ("peak_rss_mb", "streaming_peak_rss_mb", "queued_peak_mb", "finish_cpu_us_per_msg"):
                    if key in result:
                        seen.setdefault((variant, key), []).append(result[key])
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
            "ratio_quiet_ccxt_parse": round(best["recorder-q-ccxt"]["msgs_per_s"] / best["baseline"]["msgs_per_s"], 3),
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
                for variant in VARIANTS[1:]},
            "book_rows": rows,
            "bytes_per_book_row": round(best["recorder"]["bytes_per_row"], 3),
            "raw_gzip_bytes_per_book_row": round(gz.stat().st_size / rows, 3),
            "peak_rss_mb": {variant: round(max(seen[(variant, "peak_rss_mb")])) for variant in rates},
            "streaming_peak_rss_mb": {variant: round(max(seen[(variant, "streaming_peak_rss_mb")]))
                                      for variant in VARIANTS[1:]},
            "queued_peak_mb": {variant: round(max(seen[(variant, "queued_peak_mb")]), 1)
                               for variant in VARIANTS[1:]},
            "queue_bound_mb": best["recorder"]["queue_bound_mb"],
            "finish_cpu_us_per_msg": {variant: round(statistics.median(seen[(variant, "finish_cpu_us_per_msg")]), 2)
                                      for variant in VARIANTS[1:]},
        }
        # everything the recorder costs per message beyond ccxt, the Parquet encode at rotation included
        report["cpu_us_per_msg_beyond_baseline_with_finish"] = {
            variant: round(report["cpu_us_per_msg_beyond_baseline"][variant]["median"]
                           + report["finish_cpu_us_per_msg"][variant], 2) for variant in ("recorder", "recorder-q")}
    if args.realistic_seconds > 0:
        report.update(realistic(args.realistic_seconds))
    added = report["cpu_us_per_msg_beyond_baseline"]
    live, quiet = added["recorder"]["median"], added["recorder-q"]["median"]
    print(f"ratio recorder/baseline: best {report['ratio']:.3f}, median {report['median_ratio']:.3f}; -q: best "
          f"{report['ratio_quiet']:.3f}, median {report['median_ratio_quiet']:.3f} (target >= 0.85; -q with ccxt "
          f"parsing the diffs, as before: {report['ratio_quiet_ccxt_parse']:.3f}); CPU beyond the "
          f"baseline (median) {live} µs per message, -q {quiet} "
          f"(target <= 10), with the Parquet encode at stop {report['cpu_us_per_msg_beyond_baseline_with_finish']}; "
          f"peak RSS {report['peak_rss_mb']} MB, held for the writer at most {report['queued_peak_mb']} MB "
          f"(bound {report['queue_bound_mb']:.0f} MB); {report['bytes_per_book_row']} B per book row on disk vs "
          f"{report['raw_gzip_bytes_per_book_row']} B gzip")
    if "pairs_per_core" in report:
        print(f"realistic rates ({REALISTIC_PAIRS} pairs, every table, `nova record --all -q`): "
              f"{report['realistic']['msgs_per_s']:,} msg/s, {report['realistic']['cpu_us_per_msg']} CPU-µs per "
              f"message: {report['pairs_per_core']} pairs per core")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
