"""What the tests share: where things are, the ``nova`` command as a user runs it, waiting, reading a recording,
recording in-process against the venue, the venue's wire protocol, crafted captures and datasets.

Test modules import these from here, never from each other; fixtures live in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from ccxt.base.errors import ChecksumError, NetworkError

from nova.core.markets import Market, Symbol
from nova.venue import SyntheticSource, Venue
from recorder.recorder import Recorder, RecorderConfig
from recorder.rows import (
    BboRow,
    FundingRow,
    book_batch,
    event_row,
    table_batch,
)
from recorder.sequencer import NULL, BookSequencer
from recorder.writer import DatasetWriter
from tests.oracle import read_table, rebuild_from_rows

# ---- where things are ------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("NOVA_REALDATA", REPO.parent / "shared" / "realdata"))
BINANCE_CAPTURES = REALDATA / "binance"
ETH = Symbol("ETH", "USDT")


def realdata_file(name: str) -> Path:
    """A real capture, or skip the test saying where it was looked for."""
    path = BINANCE_CAPTURES / name
    if not path.is_file():
        pytest.skip(f"real Binance capture {name} not found under {BINANCE_CAPTURES}; set NOVA_REALDATA to the "
                    "folder holding binance/*.gz (CI always has it)")
    return path


def ccxt_levels(orderbook: Any) -> tuple[list[list[float]], list[list[float]]]:
    return [list(x) for x in orderbook["bids"]], [list(x) for x in orderbook["asks"]]


def truth_levels(truth: dict) -> tuple[list[list[float]], list[list[float]]]:
    return ([[float(p), float(q)] for p, q in truth["bids"]], [[float(p), float(q)] for p, q in truth["asks"]])


async def wait_until_recorded(rec: Any, venue: Venue, source: Any, timeout_s: float = 120.0) -> None:
    """Wait until a capture playback has finished and the recorder's every book holds the venue's last id."""
    deadline = time.monotonic() + timeout_s
    while not source.finished or any(s.states["ETHUSDT"].seq.last_id != venue.truth(m, "ETHUSDT")["lastUpdateId"]
                                     for m, s in rec.sessions.items()):
        assert time.monotonic() < deadline, "the recording did not catch up with the playback"
        await asyncio.sleep(0.1)


# ---- the nova command, as a user runs it -----------------------------------------------------------------------------

_ENTRY = Path(sys.executable).with_name("nova")
NOVA = [str(_ENTRY)] if _ENTRY.exists() else [sys.executable, "-m", "nova.cli"]
ENV = {k: v for k, v in os.environ.items() if k != "NOVA_DATA"}
FLUSH_S = 0.2
LOCK = ".nova-claims"  # the recorders' stream claims: a clean stop removes them, a kill leaves them (unlocked)


def spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def stop(proc: subprocess.Popen) -> None:
    """End a process this test started (SIGKILL if it does not go quietly)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def venue_process(*args: str) -> Iterator[str]:
    """`nova venue --port 0 ...`; yields the URL it prints as its first line."""
    proc = subprocess.Popen([*NOVA, "venue", "--port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        url = proc.stdout.readline().strip() if ready and proc.stdout else ""
        assert url.startswith("http://"), f"nova venue printed {url!r} (exit {proc.poll()})"
        yield url
    finally:
        stop(proc)


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str = "3m") -> Iterator[Path]:
    """A folder on a tmpfs of ``size``, to fill a disk for real (skips where mounting is not possible)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk needs a small tmpfs, and mounting one needs root")
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs here: {mounted.stderr.strip()}")
    try:
        yield small
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def record_args(url: str, data: Path, *extra: str, symbol: str = "ETH/USDT") -> list[str]:
    return [*NOVA, "record", symbol, "--venue", url, "--data", str(data), "--flush", f"{FLUSH_S}s", "-q", *extra]


def control(url: str, path: str, method: str = "GET") -> dict:
    with urllib.request.urlopen(urllib.request.Request(f"{url}/_venue/{path}", method=method), timeout=10) as r:
        return json.loads(r.read())


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def journals(root: Path, since_ns: int = 0) -> list[Path]:
    found = []
    for p in root.rglob(".*.arrows"):
        with contextlib.suppress(FileNotFoundError):  # finished by the recorder since the listing
            if p.stat().st_mtime_ns >= since_ns:
                found.append(p)
    return found


def wait_recording(proc: subprocess.Popen, root: Path, since_ns: int) -> None:
    """Until the recorder has flushed rows into a journal of its own (it is past start-up and recovery)."""

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the recorder exited {proc.returncode}: {proc.communicate()[1]}")
        return bool(journals(root, since_ns))

    wait_until(ready, "the recorder's first flush")


def hidden_leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.is_file() and p != root / LOCK]


def assert_one_sentence(stderr: str) -> str:
    """stderr is one line: no traceback, nothing 'unexpected'. Returns the line."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one sentence on stderr, got: {stderr!r}"
    assert "unexpected" not in lines[0], lines[0]
    return lines[0]


def nova(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``nova ARGS`` as a user would (the installed console script, plain output, a wide terminal)."""
    return subprocess.run([*NOVA, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**ENV, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})})


def novas(*calls: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """Several independent nova commands side by side."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda args: nova(*args), calls))


def one_sentence(proc: subprocess.CompletedProcess) -> str:
    """The command failed with exactly one line on stderr, ``error: ...``, no traceback, nothing 'unexpected'."""
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout, proc.stdout
    line = assert_one_sentence(proc.stderr)
    assert line.startswith("error: "), proc.stderr
    return line


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def file_states(root: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file under ``root``: equal before and after means nothing was touched."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def ts_sql(ns: int) -> str:
    """A TIMESTAMPTZ of an instant in ns (DuckDB's TIMESTAMPTZ holds microseconds: the rest is cut)."""
    return f"make_timestamptz({ns // 1000})"


# ---- a recording, in-process against the venue -----------------------------------------------------------------------

MARKETS = ("spot", "perp")
STREAMS = {"spot": ("book", "bbo", "trades"), "perp": ("book", "bbo", "trades", "funding")}
"""The streams these tests record (liquidations come seconds apart, and are tested in tests/test_trust.py)."""
RECORDING_SEED = 5
STREAMED = ("bbo", "trades", "funding", "liquidations")  # with the book: what arrives over WebSockets


def messages_on_disk(root: Path, market: str) -> int:
    """WebSocket messages of one market stored in a recording: distinct book messages that are not REST
    snapshots, plus every bbo, trades, funding and liquidations row (one row per message on those streams)."""
    count = len({r["msg"] for r in read_table(root, "book", market) if not r["snapshot"]})
    return count + sum(len(read_table(root, table, market)) for table in STREAMED)


def streamed_messages(summary: dict, market: str) -> int:
    """WebSocket messages a recorder's summary counts for a market (not the polled REST answers), comparable
    with the venue's ``messages_sent``."""
    return sum(v["messages"] for k, v in summary.items()
               if k.startswith(f"{market}/") and k.rsplit("/", 1)[1] in ("book", *STREAMED))


def ledger(root: Path, market: str) -> list[dict]:
    """The market's ``events`` rows in time order."""
    return sorted(read_table(root, "events", market), key=lambda e: e["ts_recv"])


def entries(events: list[dict], kind: str, stream: str | None = None, after: int = 0) -> list[dict]:
    return [e for e in events if e["kind"] == kind and stream in (None, e["stream"]) and e["ts_recv"] >= after]


async def await_until(condition: Callable[[], Any], what: Callable[[], Any], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what()}"
        await asyncio.sleep(0.05)


def book_states(rec: Recorder) -> dict[str, Any]:
    return {m: rec.sessions[m].states["ETHUSDT"] for m in MARKETS}


async def flowing(rec: Recorder, since_ns: int) -> None:
    """Wait until both books are live again and every stream of both markets received a message after
    ``since_ns`` (so any reconnect has happened and been ledgered)."""

    def ok() -> bool:
        return all(s.seq.live and all(s.stats[t].last_recv_ns > since_ns for t in STREAMS[m])
                   for m, s in book_states(rec).items())

    await await_until(ok, lambda: {m: (s.seq.live, {t: s.stats[t].last_recv_ns > since_ns for t in STREAMS[m]})
                                  for m, s in book_states(rec).items()})


@contextlib.asynccontextmanager
async def recording(make_venue: Any, root: Path, **config: Any) -> AsyncIterator[tuple[Venue, Recorder]]:
    """A synthetic venue with the recorder as its only client, recording both markets with a 0.2 s flush;
    yields once every stream is flowing. The recorder is stopped however the test ends."""
    venue = await make_venue(SyntheticSource([ETH], seed=RECORDING_SEED))
    config.setdefault("tables", STREAMS["perp"])
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, flush_s=0.2, **config))
    await rec.start()
    try:
        await flowing(rec, 0)
        yield venue, rec
    finally:
        await rec.stop()


async def record_until(venue: Venue, rec: Recorder, min_messages: int = 20, timeout: float = 30.0) -> None:
    """Let both book streams run, pause the venue, and wait until the recorder has all it sent."""
    deadline = time.monotonic() + timeout
    books = {m: rec.sessions[m].states["ETHUSDT"] for m in rec.sessions}
    while any(s.stats["book"].messages < min_messages for s in books.values()):
        assert time.monotonic() < deadline, {m: s.stats["book"].messages for m, s in books.items()}
        await asyncio.sleep(0.05)
    venue.pause()
    for market, state in books.items():
        truth_id = venue.truth(market, "ETHUSDT")["lastUpdateId"]
        while state.seq.last_id != truth_id or not state.seq.live:
            assert time.monotonic() < deadline, (market, state.seq.last_id, truth_id)
            await asyncio.sleep(0.05)


def rebuilt_equals_truth(root: Path, market: str, truth: dict) -> dict[int, tuple]:
    """Rebuild the market's book from its rows alone, compare with the truth, return top of book by last_id."""
    tops: dict[int, tuple] = {}
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    last = None
    for first_row, bids, asks in rebuild_from_rows(read_table(root, "book", market)):
        last = first_row
        if bids and asks and not first_row["stale"]:
            best_bid, best_ask = max(bids), min(asks)
            tops[first_row["last_id"]] = (best_bid, bids[best_bid], best_ask, asks[best_ask])
    assert last is not None and last["last_id"] == truth["lastUpdateId"]
    assert sorted(bids.items(), reverse=True) == [(float(p), float(q)) for p, q in truth["bids"]]
    assert sorted(asks.items()) == [(float(p), float(q)) for p, q in truth["asks"]]
    return tops


# ---- the venue's wire protocol, as any Binance client speaks it ------------------------------------------------------

async def get_json(session: aiohttp.ClientSession, url: str, **params: Any) -> tuple[int, Any]:
    async with session.get(url, params=params) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else None)


async def post_json(session: aiohttp.ClientSession, url: str, **params: Any) -> Any:
    async with session.post(url, params=params) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def ws_connect(session: aiohttp.ClientSession, venue: Any, path: str, **kw: Any) -> Any:
    return await session.ws_connect(venue.url.replace("http://", "ws://") + path, **kw)


async def receive(ws: Any, timeout: float) -> Any:
    """One message, within ``timeout`` overall. (aiohttp's own ``receive(timeout=)`` restarts its clock on every
    ping it answers, so with frequent pings it would never time out.)"""
    return await asyncio.wait_for(ws.receive(), timeout)


async def next_frame(ws: Any, timeout: float = 3.0) -> Any:
    """The next text frame as JSON (pings and pongs skipped); fails on a close or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no frame within {timeout} s")
        try:
            msg = await receive(ws, remaining)
        except TimeoutError:
            raise AssertionError(f"no frame within {timeout} s") from None
        if msg.type == WSMsgType.TEXT:
            return json.loads(msg.data)
        if msg.type in (WSMsgType.PING, WSMsgType.PONG):
            continue
        raise AssertionError(f"connection ended while waiting for a frame: {msg.type!r} {msg.data!r}")


async def next_reply(ws: Any, timeout: float = 3.0) -> dict:
    """The next request reply (a frame with ``id`` or ``error``), skipping stream payloads."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await next_frame(ws, max(0.01, deadline - time.monotonic()))
        if isinstance(frame, dict) and ("id" in frame or "error" in frame):
            return frame


async def request(ws: Any, method: str, params: list | None = None, req_id: Any = 1) -> dict:
    body: dict[str, Any] = {"method": method, "id": req_id}
    if params is not None:
        body["params"] = params
    await ws.send_str(json.dumps(body))
    return await next_reply(ws)


async def subscribe(ws: Any, *streams: str, req_id: int = 1) -> None:
    assert await request(ws, "SUBSCRIBE", list(streams), req_id) == {"result": None, "id": req_id}


async def collect(ws: Any, seconds: float) -> list[tuple[float, Any]]:
    """Every text frame that arrives within ``seconds``, with its arrival time (monotonic)."""
    out: list[tuple[float, Any]] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            msg = await receive(ws, remaining)
        except TimeoutError:
            break
        if msg.type == WSMsgType.TEXT:
            out.append((time.monotonic(), json.loads(msg.data)))
        elif msg.type not in (WSMsgType.PING, WSMsgType.PONG):
            raise AssertionError(f"connection ended: {msg.type!r} {msg.data!r}")
    return out


# ---- a crafted USDT-M capture ----------------------------------------------------------------------------------------

CAPTURE_T0_NS = 1_723_161_254_000_000_000
CAPTURE_T0_MS = CAPTURE_T0_NS // 1_000_000
CAPTURED_OI = '{"openInterest": "10659.509", "symbol": "ETHUSDT", "time": 1723161254050}'  # spaced: verbatim


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def force_order(side: str, price: str, ms: int) -> dict:
    return {"e": "forceOrder", "E": ms + 1, "o": {"s": "ETHUSDT", "S": side, "o": "LIMIT", "f": "IOC", "q": "0.014",
                                                  "p": price, "ap": price, "X": "FILLED", "l": "0.014",
                                                  "z": "0.014", "T": ms}}


def perp_depth_update(first: int, last: int, prev: int, ms: int) -> dict:
    return {"e": "depthUpdate", "E": ms, "T": ms, "s": "ETHUSDT", "U": first, "u": last, "pu": prev,
            "b": [["2999.99", "2.500"]], "a": []}


def write_perp_capture(path: Path, with_open_interest: bool = True) -> dict[str, Any]:
    """A short USDT-M capture: a snapshot, diffs, a wrapped and a bare liquidation, and (optionally) a recorded
    open interest; 20 ms apart. Returns what it holds."""
    wrapped_liq = force_order("SELL", "2990.10", CAPTURE_T0_MS + 30)
    bare_liq = force_order("BUY", "3010.20", CAPTURE_T0_MS + 90)
    snapshot = {"lastUpdateId": 1000, "E": CAPTURE_T0_MS, "T": CAPTURE_T0_MS,
                "bids": [["3000.00", "1.000"], ["2999.99", "2.000"]], "asks": [["3000.01", "1.500"]]}
    bodies = [
        compact_json(snapshot),
        compact_json({"stream": "ethusdt@depth@0ms", "data": perp_depth_update(995, 1005, 990, CAPTURE_T0_MS + 10)}),
        compact_json({"stream": "ethusdt@forceOrder", "data": wrapped_liq}),
        compact_json({"stream": "ethusdt@depth@0ms", "data": perp_depth_update(1006, 1010, 1005, CAPTURE_T0_MS + 40)}),
        *([CAPTURED_OI] if with_open_interest else []),
        compact_json({"stream": "ethusdt@depth@0ms", "data": perp_depth_update(1011, 1020, 1010, CAPTURE_T0_MS + 70)}),
        compact_json(bare_liq),
    ]
    path.write_text("".join(f"{CAPTURE_T0_NS + i * 20_000_000} {b}\n" for i, b in enumerate(bodies)))
    return {"liquidations": [wrapped_liq, bare_liq], "depth": 3}


# ---- ccxt.pro against the venue --------------------------------------------------------------------------------------

CCXT_SYMBOL = {"spot": "ETH/USDT", "perp": "ETH/USDT:USDT"}


class Watcher:
    """Keeps calling watch_order_book like a user's loop does, noting the errors ccxt raises."""

    def __init__(self, client: Any, market: Market, once: bool = False) -> None:
        self.client, self.market, self.symbol = client, market, CCXT_SYMBOL[market]
        self.once = once  # subscribe, then leave ccxt's book alone (each watch call trims it to 1000 levels)
        self.updates = 0
        self.errors: list[Exception] = []
        self.task: asyncio.Task | None = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.client.watch_order_book(self.symbol)
                self.updates += 1
                if self.once:
                    await asyncio.Event().wait()
            except (ChecksumError, NetworkError) as exc:
                self.errors.append(exc)
                await asyncio.sleep(0.05)

    def start(self) -> Watcher:
        self.task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def wait_updates(self, n: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.updates < n:
            assert time.monotonic() < deadline, f"{self.market}: only {self.updates} updates, errors {self.errors}"
            await asyncio.sleep(0.02)


# ---- a crafted dataset across midnight, for replay -------------------------------------------------------------------

MIDNIGHT = 1_795_564_800 * 10**9  # 2026-11-25 00:00:00 UTC
BEFORE, AFTER = "2026-11-24", "2026-11-25"


def _book_messages(market: str, seq: BookSequencer, t0: int, n: int, first_id: int, premium: float = 1.5) -> None:
    """A snapshot, then ``n`` diffs 100 ms apart that walk the top of book; a gap (and resync) in the middle."""
    mid = 3000.0 if market == "spot" else 3000.0 + premium
    levels = {"b": [[f"{mid - 0.01 * i:.2f}", "1.0"] for i in range(1, 6)],
              "a": [[f"{mid + 0.01 * i:.2f}", "1.0"] for i in range(1, 6)]}
    def text(value: dict) -> str:  # compact, as Binance sends it (the recorder's level scanner expects that)
        return json.dumps(value, separators=(",", ":"))

    seq.on_snapshot(t0, NULL if market == "spot" else t0 // 10**6, NULL, first_id, text(levels), 10)
    last = first_id
    for i in range(n):
        ts = t0 + (i + 1) * 100_000_000
        bid, ask = mid - 0.01 * (1 + i % 3), mid + 0.01 * (1 + (i + 1) % 3)  # moves the top, never crosses
        levels_text = text({"b": [[f"{bid:.2f}", f"{1 + i % 4}.5"]], "a": [[f"{ask:.2f}", f"{i % 2}.25"]]})
        first = last + 1 if not (market == "perp" and i == n // 4) else last + 5  # one perp gap
        if market == "perp" and i == 0:
            first = last  # a perp diff straddles the snapshot id: U <= lastUpdateId <= u
        prev = last if market == "perp" and i != n // 4 else (last + 3 if market == "perp" else NULL)
        seq.on_diff((ts, ts // 10**6 - 2, NULL, first, first + 1, prev, levels_text))
        last = first + 1
        if market == "perp" and i == n // 4:  # the recorder resyncs: a new snapshot the next diff straddles
            seq.on_snapshot(ts + 50_000_000, ts // 10**6 + 40, NULL, last + 2, text(levels), 10)


def write_midnight_dataset(root: Path, symbol: Symbol = ETH, days: int = 0, premium: float = 1.5,
                           settle_at_midnight: bool = False) -> None:
    """40 s of both markets of ``symbol`` around the midnight ``days`` after MIDNIGHT, the perp ``premium``
    above spot; with ``settle_at_midnight`` a funding settlement falls at that midnight (else 8 h later)."""
    writer = DatasetWriter(str(root), rotate_s=900)
    midnight = MIDNIGHT + days * 86_400 * 10**9
    t0 = midnight - 20 * 10**9
    for market, first_id in (("spot", 1000), ("perp", 50_000)):
        ledger: list[tuple] = [(t0 - 10**6, "book", "start", None, None, "crafted")]
        seq = BookSequencer(market, 1, ledger=lambda ts, kind, exp, rec, detail, out=ledger: out.append(
            (ts, "book", kind, exp, rec, detail)), request_resync=lambda: None)
        _book_messages(market, seq, t0, 400, first_id, premium)  # 40 s: 20 before midnight, 20 after

        batch, _, _ = book_batch(seq.take())
        writer.write("book", market, symbol, batch)
        bbo = [BboRow(ts_recv=t0 + k * 70_000_000 + (5_000_000 if market == "perp" else 0),
                      ts_event=None if market == "spot" else t0 + k * 70_000_000 - 2_000_000,
                      update_id=first_id + (k * 7) // 5 + k % 3 - 1, bid_price=2999.9 + 0.01 * (k % 7), bid_amount=1.0,
                      ask_price=3000.1 + 0.01 * (k % 5), ask_amount=2.0) for k in range(500)]
        writer.write("bbo", market, symbol, table_batch("bbo", bbo))
        if market == "perp":
            funding = [FundingRow(ts_recv=t0 + k * 10**9, ts_event=t0 + k * 10**9, mark_price=3001.0,
                                  index_price=3000.0, funding_rate=0.0001 * (1 + k % 3),
                                  next_funding_time=midnight + (0 if settle_at_midnight and k < 20 else 8 * 3600)
                                  * 10**9) for k in range(40)]
            writer.write("funding", market, symbol, table_batch("funding", funding))
        rows = [event_row(ts_recv=ts, stream=stream, kind=kind, expected_id=expected, received_id=received,
                          detail=detail) for ts, stream, kind, expected, received, detail in sorted(ledger)]
        writer.write("events", market, symbol, table_batch("events", rows))
    writer.close()
