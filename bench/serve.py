"""How fast and how evenly `nova serve` plays a recording through Binance's protocol, and in how much memory.

    python bench/serve.py [--data /tmp/nova-serve-bench] [--rebuild] [--only pacing,source] [--speeds 1,10]
                          [--rounds N]

The recording: the real ETHUSDT captures (spot 2024-08-08 23:54 to 00:05 UTC, USDⓈ-M 23:54 to 24:00) played by
the venue at their own pace and recorded by Nova's recorder (book, bbo, trades) into ``--data``; built once (about
11 minutes, ``--rebuild`` to redo it) and reused. Then, each against a `nova serve` subprocess of that recording:
- decode: in this process, how fast DatasetSource reads and formats every message with no socket (the floor),
  and the event loop thread's CPU per message (reading and printing run on the reader thread);
- bare: ``--speed max`` to a bare aiohttp client per market (depth, bookTicker, trade) that only counts frames;
- ccxt: ``--speed max`` to one ccxt.pro binance client per market calling ``watch_order_book`` (depth only);
- pacing: ``--speed 1`` (the first minute) and ``--speed 10`` (the whole range) to the bare client, the lateness
  of each message's send against its scheduled wall time, from ``/_venue/status`` (target p99 <= 2 ms);
- memory: peak RSS of the serving process at ``--speed max`` for the first 60 s, 180 s and the whole range;
- source (only with ``--only``): the pacing figures of DatasetSource in this process, publishing to nothing (the
  pacer and the loop without sockets or a client).
Prints same-run ratios; the last line is one JSON object. The served process runs the tree this file is in
(``PYTHONPATH``), so a copy of an older tree with this file in it benches the older code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import ccxt
import ccxt.pro as ccxtpro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.feed import REALDATA
from nova.core.markets import Symbol
from nova.venue import CaptureSource, Venue
from nova.venue.recorded import DatasetSource
from recorder.endpoints import ccxt_options, point_at_venue
from recorder.recorder import Recorder, RecorderConfig

TREE = Path(__file__).resolve().parents[1]
ETH = Symbol("ETH", "USDT")
CAPTURES = REALDATA / "binance"
SPOT_FILES = ["spot_ethusdt_20240808.gz", "spot_ethusdt_20240809.gz"]
PERP_FILES = ["usdm_ethusdt_20240808.gz"]
TABLES = ("book", "bbo", "trades")
SHORT_S = 60  # paced at 1x: the first minute of the recording
PARTS = ("decode", "bare", "ccxt", "pacing", "rss")  # what a run measures by default, in this order
RSS_RANGES_S = (60, 180)  # peak memory for these first seconds of the recording, and for the whole
PATHS = {"spot": "/stream/ws", "perp": "/fstream/public/ws"}
STREAMS = {"spot": ["ethusdt@depth@100ms", "ethusdt@bookTicker", "ethusdt@trade"],
           "perp": ["ethusdt@depth@0ms", "ethusdt@bookTicker", "ethusdt@trade"]}


# ---- the recording ----------------------------------------------------------------------------------------------

async def _record(root: Path) -> None:
    """Play the captures at their own pace through the venue and record them, as a user would."""
    source = CaptureSource([CAPTURES / f for f in SPOT_FILES], [CAPTURES / f for f in PERP_FILES], speed=1.0)
    async with Venue(source) as venue:
        rec = Recorder(RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, tables=TABLES, flush_s=1.0))
        await rec.start()
        try:
            while not source.finished:
                await asyncio.sleep(0.5)
            await asyncio.sleep(3.0)  # the last frames reach the recorder
        finally:
            await rec.stop()


def recording(root: Path, rebuild: bool) -> str:
    """The recording's (first) date, building it first when needed."""
    if rebuild and root.exists():
        shutil.rmtree(root)
    if not (root / "book").exists():
        print(f"recording the real captures into {root} at their own pace (about 11 minutes) ...", flush=True)
        asyncio.run(_record(root))
    return sorted(p.name[5:] for p in (root / "book").rglob("date=*"))[0]


# ---- decode floor -------------------------------------------------------------------------------------------------

async def _decode(root: Path, date: str) -> dict[str, Any]:
    source = DatasetSource(str(root), date, speed=None, autostart=True, snapshot_hold_s=0.0)
    published = 0

    def publish(*_: Any, **__: Any) -> None:
        nonlocal published
        published += 1

    began, cpu = time.perf_counter(), time.thread_time()
    task = asyncio.create_task(source.run(publish))
    while not source.finished:
        await asyncio.sleep(0.01)
    took, cpu = time.perf_counter() - began, time.thread_time() - cpu
    task.cancel()
    # the event loop's own CPU per message: what a burst of messages due together queues behind when paced
    return {"messages": published, "depth": source.sent, "seconds": took, "loop_cpu_us": cpu / published * 1e6}


async def _source_pacing(root: Path, date: str, speed: float, end: str | None) -> dict[str, Any]:
    """The pacer's lateness with nobody listening: DatasetSource in this process, publishing to nothing."""
    source = DatasetSource(str(root), date, end=end, speed=speed, autostart=True, snapshot_hold_s=0.0)
    task = asyncio.create_task(source.run(lambda *_, **__: None))
    while not source.finished:
        await asyncio.sleep(0.05)
    task.cancel()
    return source.lateness.summary()


# ---- a nova serve process --------------------------------------------------------------------------------------

class Served:
    """`nova serve` in a subprocess, its URL, and its peak RSS once it has played."""

    def __init__(self, root: Path, date: str, speed: str, *extra: str) -> None:
        nova = Path(sys.executable).parent / "nova"
        self.proc = subprocess.Popen([str(nova), "serve", "--data", str(root), "--date", date, "--speed", speed,
                                      "--port", "0", *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env={**os.environ, "PYTHONPATH": str(TREE)})
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().split()[-1].strip()

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _status(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url + "/_venue/status") as resp:
        return await resp.json()


async def _finished(session: aiohttp.ClientSession, url: str, clients: list[asyncio.Task]) -> dict:
    """The server's status once the playback has finished; a client that failed fails the benchmark."""
    while not (status := await _status(session, url))["finished"]:
        for task in clients:
            if task.done():
                task.result()
        await asyncio.sleep(0.05)
    return status


async def bare(url: str) -> dict[str, Any]:
    """Count every frame on one connection per market; time from the first frame to the end of the playback."""
    counts = {"depth": 0, "bookTicker": 0, "trade": 0}
    first: list[float] = []
    last = [0.0]

    async with aiohttp.ClientSession() as session:
        async def reader(market: str) -> None:
            while True:  # a recorded disconnect closes the connection: come back, as a client does
                async with session.ws_connect(url.replace("http", "ws") + PATHS[market], max_msg_size=0) as ws:
                    await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": STREAMS[market], "id": 1}))
                    prefix = "/api/v3" if market == "spot" else "/fapi/v1"
                    async with session.get(url + prefix + "/depth?symbol=ETHUSDT&limit=1000") as resp:
                        await resp.read()  # releases the playback's hold at a snapshot
                    async for msg in ws:
                        data = msg.data
                        if not isinstance(data, str) or '"result"' in data[:12]:
                            continue
                        now = time.perf_counter()
                        if not first:
                            first.append(now)
                        last[0] = now
                        kind = "depth" if '"depthUpdate"' in data or '"lastUpdateId"' in data[:20] else \
                            "trade" if '"e":"trade"' in data else "bookTicker"
                        counts[kind] += 1

        tasks = [asyncio.create_task(reader(m)) for m in PATHS]
        status = await _finished(session, url, tasks)
        played = status["messages_played"]
        while counts["depth"] < played:
            await asyncio.sleep(0.05)
        for task in tasks:
            task.cancel()
    took = last[0] - first[0]
    return {"frames": sum(counts.values()), "depth": counts["depth"], "seconds": took, "status": status}


async def ccxt_client(url: str) -> dict[str, Any]:
    """One ccxt.pro binance instance per market watching the order book; counts the updates it hands over."""
    updates = 0
    clients = []
    for market in ("spot", "perp"):
        client = ccxtpro.binance({"options": ccxt_options(market, 100)})
        point_at_venue(client, url)
        clients.append(client)
    first: list[float] = []

    async def watch(client: Any, symbol: str) -> None:
        nonlocal updates
        while True:
            try:
                await client.watch_order_book(symbol)
            except ccxt.NetworkError:
                continue  # a recorded disconnect: watch again, as a bot's loop does
            updates += 1
            if not first:
                first.append(time.perf_counter())

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(watch(c, s)) for c, s in zip(clients, ("ETH/USDT", "ETH/USDT:USDT"), strict=True)]
        status = await _finished(session, url, tasks)
        took = time.perf_counter() - first[0]
        for task in tasks:
            task.cancel()
    for client in clients:
        await client.close()
    return {"depth": status["messages_played"], "updates": updates, "seconds": took, "status": status}


def run(root: Path, date: str, speed: str, client: Any, *extra: str) -> tuple[dict[str, Any], float]:
    served = Served(root, date, speed, *extra)
    try:
        result = asyncio.run(client(served.url))
        return result, served.peak_rss_mb()
    finally:
        served.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/nova-serve-bench", help="where the recording is built and kept")
    parser.add_argument("--rebuild", action="store_true", help="record the captures again")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts, of {', '.join(PARTS)}, source (default: all but source)")
    parser.add_argument("--speeds", default="1,10", help="the paced speeds of pacing and source")
    parser.add_argument("--rounds", type=int, default=1, help="how many times pacing and source run each speed")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    unknown = parts - {*PARTS, "source"}
    if unknown:
        parser.error(f"--only: no part named {', '.join(sorted(unknown))}")
    speeds = args.speeds.split(",")
    root = Path(args.data)
    date = recording(root, args.rebuild)
    probe = DatasetSource(str(root), date)
    first_ns = min(min(t) for t in probe.snapshot_times.values() if t)
    last_ns = max(e["ts_recv"] for ledger in probe.ledgers.values() for e in ledger)
    short_end = str(first_ns + SHORT_S * 10**9)

    out: dict[str, Any] = {}
    if "decode" in parts:
        decode = asyncio.run(_decode(root, date))
        out.update({"decode_msg_s": round(decode["messages"] / decode["seconds"]),
                    "decode_depth_msg_s": round(decode["depth"] / decode["seconds"]),
                    "loop_cpu_us_per_msg": round(decode["loop_cpu_us"], 2)})
        print(f"decode floor (no socket):  {decode['messages']:,} messages ({decode['depth']:,} depth) in "
              f"{decode['seconds']:.2f} s = {out['decode_msg_s']:,} msg/s; the event loop's CPU "
              f"{out['loop_cpu_us_per_msg']} µs per message", flush=True)

    rss_long = None
    if "bare" in parts:
        result, rss_long = run(root, date, "max", bare)
        out["bare_msg_s"] = round(result["frames"] / result["seconds"])
        out["bare_depth_msg_s"] = round(result["depth"] / result["seconds"])
        of_decode = f" ({out['bare_msg_s'] / out['decode_msg_s']:.2f} of decode)" if "decode_msg_s" in out else ""
        print(f"bare client, --speed max:  {result['frames']:,} frames ({result['depth']:,} depth) in "
              f"{result['seconds']:.2f} s = {out['bare_msg_s']:,} msg/s{of_decode}", flush=True)

    if "ccxt" in parts:
        result, _ = run(root, date, "max", ccxt_client)
        out["ccxt_depth_msg_s"] = round(result["depth"] / result["seconds"])
        of_bare = f" ({out['ccxt_depth_msg_s'] / out['bare_depth_msg_s']:.2f} of bare depth)" \
            if "bare_depth_msg_s" in out else ""
        print(f"ccxt.pro, --speed max:     {result['depth']:,} depth messages in {result['seconds']:.2f} s = "
              f"{out['ccxt_depth_msg_s']:,} msg/s{of_bare}; {result['updates']:,} watch_order_book returns",
              flush=True)

    for part in ("source", "pacing"):
        if part not in parts:
            continue
        for round_ in range(args.rounds):
            for speed in speeds:
                end = short_end if speed == "1" else None  # 1x: the first minute; faster: the whole range
                rss_text = ""
                if part == "source":
                    late = asyncio.run(_source_pacing(root, date, float(speed), end))
                else:
                    result, peak = run(root, date, speed, bare, *(("--end", end) if end else ()))
                    late = {**result["status"]["lateness"], "peak_rss_mb": round(peak, 1)}
                    rss_text = f", peak RSS {peak:.0f} MB"
                out.setdefault(f"{part}_x{speed}", []).append(late)
                label = "pacing" if part == "pacing" else "source, no socket,"
                print(f"{label} --speed {speed:>2} ({round_ + 1}/{args.rounds}, load {os.getloadavg()[0]:.2f}): "
                      f"{late['messages']:,} messages, lateness p50 {late['p50_ms']} ms, p99 {late['p99_ms']} ms, "
                      f"max {late['max_ms']} ms{rss_text} (target p99 <= 2 ms)", flush=True)

    if "rss" in parts:
        rss: dict[str, float] = {}
        for seconds in RSS_RANGES_S:
            result, peak = run(root, date, "max", bare, "--end", str(first_ns + seconds * 10**9))
            rss[f"{seconds}s"] = round(peak, 1)
        if rss_long is None:
            _, rss_long = run(root, date, "max", bare)
        rss["whole"] = round(rss_long, 1)
        out["rss_mb"] = rss
        print("peak RSS, --speed max:     " + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items())
              + f" (the whole range is {(last_ns - first_ns) / 1e9:.0f} s)", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
