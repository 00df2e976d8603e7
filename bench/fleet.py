"""Many symbols on one machine: pairs per core at the venue's realistic rates, and --workers 2 against one process
on the same feed, in the same run (issue 12 §2); plus the recorder's CPU per message beyond bare ccxt
(bench/recorder.py's measurement, run here too so every figure comes from one run).

    python bench/fleet.py [--symbols 20] [--seconds 60] [--messages 60000]

A synthetic `nova venue` serves --symbols symbols on spot and USDT-M at its default realistic rates (spot ~10
depth messages/s, perp ~20/s, bookTicker ~100/s per market, trades, markPrice@1s) in its own process. Then, one
after the other against that same venue: `nova record --all -q` (one process) and `nova record --all -q
--workers 2`. Each is warmed up (its first flush and 5 s more), then measured for --seconds: the CPU seconds of
the recorder's process tree (parent and workers, from /proc), and the WebSocket messages the venue sent it (the
venue's status). pairs per core = pairs / (cpu_s / wall_s) at the rate the venue delivered. One Python process
synthesizing 40 books may fall behind its clock on a small machine and deliver less than the nominal rate, so a
first run against a venue of 2 pairs (which keeps up) measures the nominal messages per pair, and
pairs per core at the nominal rate = 1e6 / (CPU-µs per message x nominal messages per pair per second) is
reported too. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
NOVA = [str(Path(sys.executable).with_name("nova"))]
BASES = ["BTC", "ETH", "BNB", "SOL", "XRP", "DOGE", "ADA", "AVAX", "DOT", "LINK", "LTC", "TRX", "ATOM", "NEAR",
         "APT", "ARB", "OP", "SUI", "FIL", "ETC", "UNI", "AAVE", "INJ", "SEI", "TIA", "WLD", "PEPE", "SHIB"]
TICK_S = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICK_S
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0.0) for p in tree)


def venue_sent(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_venue/status", timeout=10) as r:
        status = json.loads(r.read())
    return sum(m["messages_sent"] for m in status["markets"].values())


def measure(url: str, workers: int, seconds: float, symbols: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data:
        args = [*NOVA, "record", "--all", "--venue", url, "--data", data, "-q", "--recorder-id", "bench"]
        if workers > 1:
            args += ["--workers", str(workers)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 180
            while len({p.parent for p in Path(data).glob("book/*/*/*/*/.*.arrows")}) < 2 * symbols:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the recorder did not start: {proc.communicate()[1]}")
                time.sleep(0.2)
            time.sleep(5.0)
            cpu0, sent0, t0 = tree_cpu_s(proc.pid), venue_sent(url), time.monotonic()
            time.sleep(seconds)
            cpu1, sent1, t1 = tree_cpu_s(proc.pid), venue_sent(url), time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise SystemExit(f"the recorder failed: {err}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall, cpu = t1 - t0, cpu1 - cpu0
    return {"workers": workers, "wall_s": round(wall, 1), "cpu_s": round(cpu, 2), "cores": round(cpu / wall, 3),
            "msgs_per_s": round((sent1 - sent0) / wall), "cpu_us_per_msg": round(cpu / (sent1 - sent0) * 1e6, 2),
            "pairs_per_core": round(symbols / (cpu / wall), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=20, help="symbol pairs (spot + perp) the venue lists")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time of each variant")
    parser.add_argument("--messages", type=int, default=60_000, help="bench/recorder.py's feed size (0: skip)")
    args = parser.parse_args()
    if not 1 <= args.symbols <= len(BASES):
        raise SystemExit(f"--symbols must be 1 to {len(BASES)}")
    report: dict[str, Any] = {"symbols": args.symbols, "seconds": args.seconds}
    if args.messages:
        done = subprocess.run([sys.executable, str(REPO / "bench" / "recorder.py"), "--messages", str(args.messages),
                               "--repeat", "1"], capture_output=True, text=True, check=True)
        single = json.loads(done.stdout.strip().splitlines()[-1])
        report["cpu_us_per_msg"] = single["cpu_us_per_msg"]
        report["cpu_us_per_msg_beyond_ccxt"] = single["cpu_us_per_msg_beyond_baseline"]
        print(f"CPU per message at max speed: bare ccxt {single['cpu_us_per_msg']['baseline']['median']} µs, recorder "
              f"{single['cpu_us_per_msg']['recorder-q']['median']} µs (-q): "
              f"{single['cpu_us_per_msg_beyond_baseline']['recorder-q']['median']} µs beyond ccxt", flush=True)
    # The nominal rate of one pair: a venue of CALIBRATION pairs keeps up with its clock; one synthesizing many
    # books in one Python process may fall behind it on a small machine, and then delivers less than nominal.
    with venue_of(CALIBRATION) as url:
        nominal = measure(url, 1, max(10.0, args.seconds / 3), CALIBRATION)
    per_pair = nominal["msgs_per_s"] / CALIBRATION
    report["nominal_msgs_per_pair_s"] = round(per_pair)
    print(f"nominal rate: {per_pair:,.0f} msg/s per pair (spot + perp, every table; {CALIBRATION} pairs)", flush=True)
    with venue_of(args.symbols) as url:
        for workers in (1, 2):
            result = measure(url, workers, args.seconds, args.symbols)
            result["delivered_share_of_nominal"] = round(result["msgs_per_s"] / (per_pair * args.symbols), 3)
            result["pairs_per_core_at_nominal"] = round(1e6 / (result["cpu_us_per_msg"] * per_pair), 1)
            report[f"workers_{workers}"] = result
            print(f"--workers {workers}: {result['msgs_per_s']:,} msg/s ({result['delivered_share_of_nominal']:.0%} "
                  f"of nominal), {result['cores']:.3f} cores ({result['cpu_us_per_msg']} CPU-µs/msg): "
                  f"{result['pairs_per_core']} pairs per core at the delivered rate, "
                  f"{result['pairs_per_core_at_nominal']} at the nominal rate", flush=True)
    print(json.dumps(report))


CALIBRATION = 2


@contextlib.contextmanager
def venue_of(pairs: int) -> Iterator[str]:
    """A synthetic `nova venue` of ``pairs`` USDT pairs at its default (realistic) rates; yields its URL."""
    symbols = ",".join(f"{b}/USDT" for b in BASES[:pairs])
    venue = subprocess.Popen([*NOVA, "venue", "--port", "0", "--symbols", symbols], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        url = venue.stdout.readline().strip() if venue.stdout else ""
        if not url.startswith("http://"):
            raise SystemExit("nova venue did not start")
        yield url
    finally:
        venue.send_signal(signal.SIGINT)
        try:
            venue.wait(timeout=15)
        except subprocess.TimeoutExpired:
            venue.kill()
            venue.wait()


if __name__ == "__main__":
    main()
