"""Many symbols, many recorders: the symbol list of ``--all``, stable shards of it, and N recorder processes on
one machine under one status view and one Ctrl-C.

Why a hash of the symbol's name decides its shard: machines that split a list by position disagree as soon as
a listing is added or the order changes; a hash of the name (blake2b, the same on every machine and Python)
keeps every symbol where it was, and moves none when another is listed. Shard ``I/N`` of a machine takes the
symbols whose hash is ``I-1`` modulo ``N``; worker ``j`` of ``W`` on that machine takes those whose
``hash // N`` is ``j`` modulo ``W``: the shards are disjoint and together they are the list.

The workers are separate processes (one Python process carries about 35 symbol pairs per core, DESIGN §6), each
a ``Recorder`` of its part, each claiming its own streams (nova.core.lock), so they share the data root without
talking. They report their counters to the parent over a queue every ``report_s``; the parent shows one status
and owns the signals: SIGINT or SIGTERM stops every worker cleanly (each flushes and finishes its files). A
worker that fails to start stops them all (one sentence, the first failure's); a worker that dies later is
reported and the others keep recording (the exit code says so at the end): one lost process must not stop the
rest of the market from being recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nova.core.errors import NovaError
from nova.core.limits import connections_per_process
from nova.core.markets import Market, Symbol, listed, tradable
from recorder.listings import symbol_hash

REPORT_S = 1.0
_NAMES = {"spot": "spot", "perp": "USDT-M"}


# ---- the list and its shards --------------------------------------------------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` (shard I of N, counted from 1) from the command line; ValueError with the sentence otherwise."""
    parts = text.strip().split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"'{text}' is not a shard; write it as I/N, like 1/4 for the first of four")
    index, count = int(parts[0]), int(parts[1])
    if count < 1:
        raise ValueError(f"'{text}' splits the list into {count} shards; N must be 1 or more, like 1/4")
    if not 1 <= index <= count:
        raise ValueError(f"'{text}' names shard {index} of {count}; I must be between 1 and {count}, like 1/{count}")
    return index, count


def shard(symbols: list[Symbol], index: int, count: int) -> list[Symbol]:
    """Shard ``index`` of ``count`` (from 1) of a list: the symbols whose hash is ``index - 1`` modulo ``count``."""
    return [s for s in symbols if symbol_hash(s) % count == index - 1]


def split(symbols: list[Symbol], workers: int, count: int = 1) -> list[list[Symbol]]:
    """A machine's symbols (shard of ``count``) among its ``workers`` processes, by the same hash."""
    parts: list[list[Symbol]] = [[] for _ in range(workers)]
    for symbol in symbols:
        parts[(symbol_hash(symbol) // count) % workers].append(symbol)
    return parts


async def listed_symbols(endpoint: str, markets: tuple[Market, ...], quote: str | None = None) -> list[Symbol]:
    """Every symbol whose every recorded market is listed and trading (exchangeInfo status TRADING): with both
    markets, the symbols that have a spot market and a USDT-M perpetual (what spot-perp research records);
    ``quote`` keeps those quoted in it. Sorted by name."""
    import ccxt
    import ccxt.pro as ccxtpro

    from recorder.endpoints import ccxt_options, configure

    statuses: dict[Market, dict[Symbol, str]] = {}
    for market in markets:
        exchange = ccxtpro.binance({"options": ccxt_options(market, 100), "enableRateLimit": False})
        configure(exchange, endpoint)
        try:
            await exchange.load_markets()
        except ccxt.BaseError as exc:
            api = exchange.urls["api"]["public" if market == "spot" else "fapiPublic"]
            raise NovaError(f"cannot list the symbols of Binance {_NAMES[market]} at {api} ({_first_line(exc)}); "
                            "check --venue or your network") from None
        finally:
            with contextlib.suppress(Exception):
                await exchange.close()
        statuses[market] = listed(market, [m.get("info") for m in exchange.markets.values()])
    common = tradable(statuses)
    if quote:
        common = {s for s in common if s.quote == quote.upper()}
    return sorted(common, key=lambda s: s.unified)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


# ---- the workers -----------------------------------------------------------------------------------------------------

@dataclass
class WorkerState:
    """What the parent knows of one worker."""

    index: int
    symbols: list[Symbol]
    process: Any = None
    started: bool = False
    done: bool = False
    failure: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def worker_configs(config: Any, parts: list[list[Symbol]]) -> list[Any]:
    """One RecorderConfig per worker: its symbols, its share of the IP's REST weight and of its connections."""
    workers = len(parts)
    connections = connections_per_process(workers, len(config.markets))
    return [dataclasses.replace(config, symbols=part, weight_share=1 / workers,
                                connections=min(config.connections or connections, connections),
                                live_spread=False,
                                listing=None if config.listing is None else config.listing.for_worker(i, workers))
            for i, part in enumerate(parts)]


def _worker_main(index: int, config: Any, reports: Any, stop_flag: Any, report_s: float) -> None:
    """A worker process: record ``config`` until the parent sets ``stop_flag``, reporting over ``reports``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: stop_flag.set())
    from recorder.recorder import Recorder

    async def main() -> None:
        recorder = Recorder(config)
        try:
            await recorder.start()
        except NovaError as exc:
            reports.put((index, "failed", str(exc), {}))
            return
        except Exception as exc:  # a worker must always say why it ends
            reports.put((index, "failed", f"{type(exc).__name__}: {_first_line(exc)}", {}))
            return
        reports.put((index, "started", "", recorder.summary()))
        stop = asyncio.Event()

        async def watch() -> None:  # the parent's stop, or the parent gone (killed): stop cleanly either way
            while not stop_flag.is_set() and os.getppid() == parent:
                await asyncio.sleep(0.1)
            stop.set()

        async def report() -> None:
            while True:
                await asyncio.sleep(report_s)
                reports.put((index, "status", "", recorder.summary()))

        tasks = [asyncio.ensure_future(watch()), asyncio.ensure_future(report())]
        try:
            await recorder.wait(stop)
        finally:
            for task in tasks:
                task.cancel()
            summary = await recorder.stop()
        reports.put((index, "done", recorder.fatal or "", summary))

    asyncio.run(main())


class Fleet:
    """N recorder processes on one machine, each a part of the symbols, under one status and one stop."""

    def __init__(self, config: Any, parts: list[list[Symbol]], report_s: float = REPORT_S) -> None:
        self.context = mp.get_context("spawn")  # a fresh interpreter: no inherited loop, threads or sockets
        self.reports = self.context.Queue()
        self.stop_flag = self.context.Event()
        self.report_s = report_s
        self.configs = worker_configs(config, parts)
        self.workers = [WorkerState(i, part) for i, part in enumerate(parts)]
        self.notices: list[str] = []  # what happened to workers, for the status and the end

    def start(self) -> None:
        for worker, config in zip(self.workers, self.configs, strict=True):
            worker.process = self.context.Process(target=_worker_main, name=f"nova-worker-{worker.index + 1}",
                                                  args=(worker.index, config, self.reports, self.stop_flag,
                                                        self.report_s), daemon=False)
            worker.process.start()

    def poll(self, timeout: float = 0.0) -> None:
        """Take the workers' reports, and notice a worker that died without saying goodbye."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                index, kind, text, summary = self.reports.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            worker = self.workers[index]
            if summary:
                worker.summary = summary
            if kind == "started":
                worker.started = True
            elif kind == "failed":
                worker.failure, worker.done = text, True
            elif kind == "done":
                worker.done = True
                if text:
                    worker.failure = text
                    self.notices.append(f"worker {index + 1} stopped: {text}")
            timeout = 0.0
            deadline = time.monotonic()
        for worker in self.workers:
            process = worker.process
            if not worker.done and process is not None and not process.is_alive():
                worker.done = True
                worker.failure = f"exited with code {process.exitcode}"
                names = ", ".join(s.unified for s in worker.symbols[:5]) + (" ..." if len(worker.symbols) > 5 else "")
                self.notices.append(f"worker {worker.index + 1} ({names}) died ({worker.failure}); the other "
                                    "workers keep recording")

    def summary(self) -> dict[str, Any]:
        """Every worker's counters, merged (market/SYMBOL/stream keys are disjoint between workers)."""
        out: dict[str, Any] = {}
        for worker in self.workers:
            out.update(worker.summary)
        return out

    async def wait_started(self) -> None:
        """Until every worker records; the first failure stops them all and is raised as one sentence."""
        while not all(w.started or w.done for w in self.workers):
            await asyncio.to_thread(self.poll, 0.2)
        failed = [w for w in self.workers if w.failure and not w.started]
        if failed:
            await self.stop()
            raise NovaError(failed[0].failure or "a worker failed to start")

    async def run(self, stop: asyncio.Event, duration_s: float | None, tick: Callable[[], None] | None = None,
                  tick_s: float = 1.0) -> None:
        """Record until ``stop`` (SIGINT, SIGTERM), ``duration_s``, or every worker is gone."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        last_tick = time.monotonic()
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            await asyncio.to_thread(self.poll, 0.2)
            if all(w.done for w in self.workers):
                break
            if tick is not None and time.monotonic() - last_tick >= tick_s:
                last_tick = time.monotonic()
                tick()

    async def stop(self, timeout_s: float = 60.0) -> None:
        """Stop every worker cleanly (SIGTERM after ``timeout_s``, SIGKILL after twice that)."""
        self.stop_flag.set()
        deadline = time.monotonic() + timeout_s
        while any(w.process is not None and w.process.is_alive() for w in self.workers):
            await asyncio.to_thread(self.poll, 0.2)
            now = time.monotonic()
            if now > deadline:
                for w in self.workers:
                    if w.process is not None and w.process.is_alive():
                        if now < deadline + timeout_s:
                            w.process.terminate()
                        else:
                            w.process.kill()
        self.poll()
        for w in self.workers:
            if w.process is not None:
                w.process.join(timeout=5)
        self.reports.close()

    @property
    def failed(self) -> list[WorkerState]:
        return [w for w in self.workers if w.failure]
