"""How fast the simulated venue pushes diff-depth messages to one client, so later benchmarks know it is
not their bottleneck.

    python bench/venue.py [--messages 130000]

Plays a tiled real USDT-M capture (bench/feed.py) at --speed max from a `nova venue` subprocess to
(a) a bare aiohttp client that only counts frames (what the venue can push), and (b) a ccxt.pro binance
client whose handle_order_book only counts (what one ccxt client can read). The last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import ccxt.pro as ccxtpro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.feed import tiled_perp_feed
from recorder.endpoints import ccxt_options, point_at_venue

WARMUP = 1000


def start_venue(feed: Path) -> tuple[subprocess.Popen, str]:
    nova = Path(sys.executable).parent / "nova"
    proc = subprocess.Popen([str(nova), "venue", "--port", "0", "--capture-perp", str(feed), "--speed", "max",
                             "--preload"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def stop_venue(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)


async def raw_client(url: str, total: int) -> float:
    async with aiohttp.ClientSession() as session, session.ws_connect(
            url.replace("http", "ws") + "/fstream/public/ws/0", max_msg_size=0) as ws:
        await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@depth@0ms"], "id": 1}))
        async with session.get(url + "/fapi/v1/depth?symbol=ETHUSDT&limit=1000") as response:
            await response.read()
        n, started = 0, 0.0
        async for _ in ws:
            n += 1
            if n == WARMUP:
                started = time.perf_counter()
            if n >= total:
                break
        return (n - WARMUP) / (time.perf_counter() - started)


class CountingBinance(ccxtpro.binance):
    """The baseline of DESIGN §6: ccxt does its transport, parsing and dispatch; the handler only counts."""

    count = 0

    def handle_order_book(self, client: Any, message: dict) -> None:
        self.count += 1


async def ccxt_client(url: str, total: int) -> float:
    exchange = CountingBinance({"options": ccxt_options("perp", 0)})
    point_at_venue(exchange, url)
    await exchange.load_markets()
    watch = asyncio.ensure_future(exchange.watch_order_book("ETH/USDT:USDT"))
    while exchange.count < WARMUP:
        await asyncio.sleep(0.001)
    started, first = time.perf_counter(), exchange.count
    while exchange.count < total - 10:
        await asyncio.sleep(0.005)
    rate = (exchange.count - first) / (time.perf_counter() - started)
    watch.cancel()
    await exchange.close()
    return rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=130_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        feed = Path(tmp) / "feed.txt"
        total = tiled_perp_feed(feed, args.messages)
        results = {}
        for name, consumer in (("raw_client_msgs_per_s", raw_client), ("ccxt_client_msgs_per_s", ccxt_client)):
            proc, url = start_venue(feed)
            try:
                results[name] = round(await consumer(url, total))
            finally:
                stop_venue(proc)
            print(f"{name:28s} {results[name]:>10,} msg/s", flush=True)
    results["venue_headroom_over_ccxt"] = round(results["raw_client_msgs_per_s"] / results["ccxt_client_msgs_per_s"], 2)
    results["messages"] = total
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
