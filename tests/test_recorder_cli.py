"""`nova record` as a user runs it: a subprocess against a `nova venue` subprocess, over real sockets.

- ``kill -9`` at random moments (fixed seed): every visible file reads, a restart recovers what the killed run
  had flushed (all but about the last flush interval) and continues its numbering without duplicates;
- SIGTERM and SIGINT: exit 0 with every message the venue sent on disk;
- every bad input: one clear sentence on stderr, a non-zero exit, nothing in the data directory;
- a full disk: the recorder stops by itself, says so, and leaves every finished file readable.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import (
    ENV,
    FLUSH_S,
    MARKETS,
    assert_one_sentence,
    control,
    hidden_leftovers,
    journals,
    messages_on_disk,
    record_args,
    small_disk,
    spawn,
    stop,
    venue_process,
    wait_recording,
    wait_until,
)
from tests.oracle import read_table

# ---- processes ---------------------------------------------------------------------------------------------------

def sent_to_a_new_client(url: str) -> dict[str, int]:
    """The venue's messages_sent per market once no client is connected (the next recorder's baseline)."""
    wait_until(lambda: all(m["connections"] == 0 for m in control(url, "status")["markets"].values()),
               "the venue to have no clients")
    return {m: control(url, "status")["markets"][m]["messages_sent"] for m in MARKETS}


# ---- the data directory -------------------------------------------------------------------------------------------

def assert_every_file_reads(root: Path) -> list[Path]:
    files = [p for p in root.rglob("*.parquet") if not p.name.startswith(".")]
    for path in files:
        pq.read_table(path)  # raises on a torn or half-written file
    return files


def ts_rows(root: Path) -> list[int]:
    """ts_recv of every row of every recorded table, both markets."""
    return [r["ts_recv"] for m in MARKETS for t in ("book", "bbo", "trades", "funding")
            for r in read_table(root, t, m)]


# ---- fixtures ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def venue_url() -> Iterator[str]:
    """One synthetic venue for the module (ETH/USDT on both markets, FOO/USDT on spot only); tests that count
    messages take their baseline when no client is connected."""
    with venue_process("--spot-only", "FOO/USDT") as url:
        yield url


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cli_runs(venue_url: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, subprocess.Popen]]]:
    """Every bad input (and the --markets spot remedy), run side by side; each gets its own data directory."""
    base = tmp_path_factory.mktemp("cli")
    blocker = base / "a-file"
    blocker.write_text("not a directory")
    dead = f"http://127.0.0.1:{closed_port()}"
    cases: dict[str, tuple[str, Path, list[str], str]] = {  # label -> (venue, data, extra args, symbol)
        "unknown symbol": (venue_url, base / "unknown", [], "ETH/USDX"),
        "no perpetual": (venue_url, base / "spot-only", [], "FOO/USDT"),
        "spot alone": (venue_url, base / "spot-alone", ["--markets", "spot", "--duration", "2s"], "FOO/USDT"),
        "data below a file": (venue_url, blocker / "data", [], "ETH/USDT"),
        "venue down": (dead, base / "dead", [], "ETH/USDT"),
        "duration soon": (venue_url, base / "soon", ["--duration", "soon"], "ETH/USDT"),
        "duration 0": (venue_url, base / "zero", ["--duration", "0"], "ETH/USDT"),
        "markets": (venue_url, base / "markets", ["--markets", "spt"], "ETH/USDT"),
        "tables": (venue_url, base / "tables", ["--tables", "book,quotes"], "ETH/USDT"),
        "spot depth": (venue_url, base / "depth", ["--spot-depth", "10ms"], "ETH/USDT"),
    }
    if os.geteuid() != 0:  # root writes through permissions, so only a non-root run can try this one
        readonly = base / "readonly"
        readonly.mkdir(mode=0o500)
        cases["read-only data"] = (venue_url, readonly, [], "ETH/USDT")
    runs = {label: (data, spawn(record_args(url, data, *extra, symbol=symbol)))
            for label, (url, data, extra, symbol) in cases.items()}
    deadline = time.monotonic() + 120  # generous: ten interpreters start at once, maybe on a busy machine
    try:
        for _, proc in runs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):  # the test then reports the hang
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        yield runs
    finally:
        for _, proc in runs.values():
            stop(proc)


# ---- the tests -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("label", "says"), [
    ("unknown symbol", ["ETH/USDX", "closest", "ETH/USDT"]),
    ("no perpetual", ["FOO/USDT", "perpetual", "--markets spot"]),
    ("data below a file", ["data directory", "a-file/data"]),
    ("venue down", ["cannot reach", "after 3 attempts"]),  # bounded retries, then one sentence
    ("duration soon", ["--duration", "soon"]),
    ("duration 0", ["--duration", "0"]),
    ("markets", ["--markets", "spt"]),
    ("tables", ["--tables", "quotes"]),
    ("spot depth", ["--spot-depth", "10ms"]),
    ("read-only data", ["data directory"]),
])
def test_bad_input_gets_one_sentence_and_writes_nothing(cli_runs: dict, label: str, says: list[str]) -> None:
    if label not in cli_runs:
        pytest.skip("running as root, which writes into a read-only directory anyway")
    data, proc = cli_runs[label]
    assert proc.returncode not in (None, 0), f"{label}: exit {proc.returncode} (None: still running)"
    out, err = proc.communicate()
    sentence = assert_one_sentence(err)
    for word in says:
        assert word in sentence, (label, word, sentence)
    assert not out.strip(), out
    if data.parent.is_file():
        assert data.parent.read_text() == "not a directory"
    else:
        assert not data.exists() or not any(data.iterdir()), (label, sorted(data.rglob("*")))


def test_spot_only_symbol_records_with_markets_spot(cli_runs: dict) -> None:
    data, proc = cli_runs["spot alone"]
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert read_table(data, "book", "spot") and not (data / "book" / "exchange=binance" / "market=perp").exists()
    assert {p.name for p in (data / "book" / "exchange=binance" / "market=spot").iterdir()} == {"symbol=FOO-USDT"}


def test_kill_9_at_random_moments_loses_at_most_the_last_flush(venue_url: str, tmp_path: Path) -> None:
    rng = random.Random(20240611)
    runs: list[tuple[int, int]] = []  # (spawned, killed) in ns, one per killed run
    proc = None
    try:
        for _ in range(3):
            spawned = time.time_ns()
            proc = spawn(record_args(venue_url, tmp_path))
            wait_recording(proc, tmp_path, spawned)
            time.sleep(rng.uniform(1.5, 4.0))
            killed = time.time_ns()
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            runs.append((spawned, killed))
            assert journals(tmp_path), "the killed run left journals to recover"
            assert_every_file_reads(tmp_path)
        # A kill during a rotation would leave a half-written hidden Parquet file: plant one for the restart.
        torn = next(tmp_path.rglob(".*.arrows")).with_name(".20000101T000000Z-0badf11e.parquet.tmp")
        torn.write_bytes(b"PAR1 torn")
        spawned = time.time_ns()
        proc = spawn(record_args(venue_url, tmp_path, "--duration", "2s"))
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "recovered" in err, err
    finally:
        if proc is not None:
            stop(proc)

    assert hidden_leftovers(tmp_path) == [], "journals are finished and temporary files deleted"
    assert assert_every_file_reads(tmp_path)
    bounds = [*runs, (spawned, time.time_ns())]
    for market in MARKETS:
        book = read_table(tmp_path, "book", market)
        keys = [(r["msg"], r["side"], r["price"]) for r in book]
        assert len(keys) == len(set(keys)), (market, "a book row is stored twice")
        by_run = [[r["msg"] for r in book if lo <= r["ts_recv"] <= hi] for lo, hi in bounds]
        assert all(by_run), (market, "every run recorded book messages", [len(m) for m in by_run])
        for earlier, later in itertools.pairwise(by_run):
            assert min(later) > max(earlier), (market, "a restart continues after the highest msg on disk")
        updates = [r["update_id"] for r in read_table(tmp_path, "bbo", market)]
        assert len(updates) == len(set(updates)), (market, "a bbo row is stored twice")
    stamps = ts_rows(tmp_path)
    for spawned, killed in runs:
        last = max(ts for ts in stamps if spawned <= ts <= killed)
        assert (killed - last) / 1e9 <= FLUSH_S + 1.0, "a kill loses at most about the last flush interval"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_with_every_message_on_disk(venue_url: str, tmp_path: Path, sig: int) -> None:
    before = sent_to_a_new_client(venue_url)
    spawned = time.time_ns()
    proc = spawn(record_args(venue_url, tmp_path))
    try:
        wait_recording(proc, tmp_path, spawned)
        time.sleep(1.0)
        control(venue_url, "pause", "POST")
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
        control(venue_url, "resume", "POST")
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    after = sent_to_a_new_client(venue_url)
    for market in MARKETS:
        assert messages_on_disk(tmp_path, market) == after[market] - before[market], market
    assert hidden_leftovers(tmp_path) == [] and assert_every_file_reads(tmp_path)


def test_full_disk_stops_recording_with_one_sentence(tmp_path: Path) -> None:
    # room for a few rotations before it fills, even when a busy machine finishes the first file late
    with small_disk(tmp_path, "5m") as small:
        with venue_process("--rate", "20") as url:
            done = subprocess.run(record_args(url, small, "--rotate", "1s"), capture_output=True, text=True,
                                  env=ENV, timeout=120)
        assert done.returncode != 0, done.stderr
        assert "full" in assert_one_sentence(done.stderr), done.stderr
        assert assert_every_file_reads(small), "files finished before the disk filled are on it"
