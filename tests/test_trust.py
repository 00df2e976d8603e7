"""Research you can trust: validity across downtime, provenance, read-only archives, `nova ls`, `nova recover`,
what replay says it did, the new perp tables, and the small things a newcomer hits.

The shared recording is made once per module by the real recorder against an in-process venue: two runs with a
hole of a few seconds between them (nobody watching), liquidations sped up so that a few seconds hold some, and
open interest polled every half second.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from nova.analysis.sql import connect
from nova.venue import SyntheticSource, Venue, derivatives
from recorder.recorder import Recorder, RecorderConfig
from recorder.recovery import CRASH_DETAIL
from replay import Replay
from tests.helpers import (
    ENV,
    ETH,
    LOCK,
    NOVA,
    assert_one_sentence,
    file_states,
    hidden_leftovers,
    journals,
    nova,
    record_args,
    record_until,
    spawn,
    stop,
    ts_sql,
    venue_process,
    wait_recording,
)
from tests.oracle import read_table

pytestmark = pytest.mark.timeout(180)
SYM = "ETH-USDT"


async def _run(venue: Venue, root: Path, recorder_id: str, seconds: float, **config: Any) -> tuple[int, int]:
    """One recording run; returns the (start, stop) times of its ledger."""
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, flush_s=0.2, oi_every_s=0.5,
                                  recorder_id=recorder_id, live_spread=False, **config))
    await rec.start()
    try:
        await asyncio.sleep(seconds)
        await record_until(venue, rec, min_messages=5)
    finally:
        await rec.stop()
    venue.resume()
    return rec.started_ns, time.time_ns()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("two-runs") / "data"
    saved = derivatives.LIQUIDATIONS_PER_S
    derivatives.LIQUIDATIONS_PER_S = 4.0  # nearly every 1000 ms window pushes one

    async def record() -> dict[str, Any]:
        source = SyntheticSource([ETH], seed=21)
        async with Venue(source) as venue:
            first = await _run(venue, root, "test-rig", 3.0)
            await asyncio.sleep(2.5)  # the hole: nobody records
            second = await _run(venue, root, "test-rig", 3.0)
            return {"root": root, "first": first, "second": second, "description": source.description,
                    "url": venue.url}

    try:
        return asyncio.run(record())
    finally:
        derivatives.LIQUIDATIONS_PER_S = saved


def hole(two_runs: dict) -> tuple[int, int]:
    """The stretch between the first run's stop and the second run's start."""
    events = read_table(two_runs["root"], "events", "perp")
    stops = sorted(e["ts_recv"] for e in events if e["kind"] == "stop" and e["stream"] == "book")
    starts = sorted(e["ts_recv"] for e in events if e["kind"] == "start" and e["stream"] == "book")
    return stops[0], starts[1]


# ---- validity across downtime -------------------------------------------------------------------------------------

def test_the_macros_give_no_quote_inside_the_hole(two_runs: dict) -> None:
    lo, hi = hole(two_runs)
    assert hi - lo > 2 * 10**9
    con = connect(two_runs["root"])
    inside = [lo + (hi - lo) * k // 5 for k in (1, 2, 3, 4)]
    for market in ("spot", "perp"):
        for t in inside:
            rows = con.execute(f"SELECT bid_price, ask_price, valid, reason, quote_age_ms FROM top_of_book("
                               f"'{market}', '{SYM}', {ts_sql(t)}, {ts_sql(t + 1000)}, INTERVAL 1 MICROSECOND)"
                               ).fetchall()
            assert len(rows) == 1
            bid, ask, valid, reason, age = rows[0]
            assert (bid, ask, valid) == (None, None, False), rows
            assert "stopped" in reason and "stop at" in reason, reason
            assert age > 0, "the age of the last quote is still said"
            book = con.execute(f"SELECT side, price, valid, reason FROM book_at('{market}', '{SYM}', {ts_sql(t)}, 5)"
                               ).fetchall()
            assert book == [(None, None, False, book[0][3])] and "stopped" in book[0][3], book
        # inside each run the same macros answer, with the quote's age
        for start, end in (two_runs["first"], two_runs["second"]):
            t = start + (end - start) // 2
            bid, valid, age = con.execute(f"SELECT bid_price, valid, quote_age_ms FROM top_of_book('{market}', "
                                          f"'{SYM}', {ts_sql(t)}, {ts_sql(t + 1000)}, INTERVAL 1 MICROSECOND)"
                                          ).fetchall()[0]
            assert valid and bid > 0 and 0 <= age < 5000
            book = con.execute(f"SELECT count(*), bool_and(valid) FROM book_at('{market}', '{SYM}', {ts_sql(t)}, 5)"
                               ).fetchall()[0]
            assert book == (10, True)
    basis = con.execute(f"SELECT valid, basis_bps, spot_quote_age_ms, perp_quote_age_ms, reason FROM basis('{SYM}', "
                        f"{ts_sql(inside[1])}, {ts_sql(inside[1] + 1000)}, INTERVAL 1 MICROSECOND)").fetchall()
    assert basis[0][0] is False and basis[0][1] is None and basis[0][2] > 0 and basis[0][4].startswith("spot: ")


def test_replay_counts_the_hole_as_invalid_and_never_quotes_across_it(two_runs: dict) -> None:
    lo, hi = hole(two_runs)
    r = Replay(str(two_runs["root"]), "ETH/USDT")
    table = r.readings_table()
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    valid = table.column("valid").to_pylist()
    assert not any(v for t, v in zip(ts, valid, strict=True) if lo <= t < hi)
    s = r.summary()
    assert s.invalid_s >= (hi - lo) / 1e9
    assert s.valid_s + s.invalid_s == pytest.approx(s.span_s)
    source = f"nova-venue/{_version()} ({two_runs['description']})"
    assert r.sources == {"spot": [source], "perp": [source]}
    assert r.warnings == []


def test_the_spread_table_says_null_not_nan(two_runs: dict, tmp_path: Path) -> None:
    out = tmp_path / "spread.parquet"
    Replay(str(two_runs["root"]), "ETH/USDT").run(write=str(out))
    table = pq.read_table(out)
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_floating(column.type):
            assert not any(isinstance(v, float) and math.isnan(v) for v in column.to_pylist()), name
    assert table.column("spot_bid").null_count > 0, "the first readings, before a snapshot, have no price"


def test_size_does_not_change_the_top_of_book_statistics(two_runs: dict) -> None:
    plain = Replay(str(two_runs["root"]), "ETH/USDT").summary()
    sized = Replay(str(two_runs["root"]), "ETH/USDT", size=2.0).summary()
    assert sized.readings > plain.readings, "with a size, VWAP changes add readings"
    for name in ("valid_readings", "basis_mean_bps", "basis_time_mean_bps", "basis_p5_bps", "basis_p50_bps",
                 "basis_p95_bps", "best_open_bps", "best_open_ns", "valid_s", "invalid_s", "opportunities",
                 "opportunity_s"):
        assert getattr(sized, name) == pytest.approx(getattr(plain, name), nan_ok=True), name


# ---- provenance and sources ---------------------------------------------------------------------------------------

def test_every_start_names_its_source_recorder_and_versions(two_runs: dict) -> None:
    for market in ("spot", "perp"):
        starts = [e for e in read_table(two_runs["root"], "events", market) if e["kind"] == "start"]
        streams = {e["stream"] for e in starts}
        assert {"book", "bbo", "trades", "instruments"} <= streams
        assert len(starts) == 2 * len(streams), "two runs, one start per stream each"
        for e in starts:
            assert e["source"] == f"nova-venue/{_version()} ({two_runs['description']})"
            assert e["recorder_id"] == "test-rig"
            assert e["versions"].startswith("nova ") and "ccxt 4.5.90" in e["versions"]
            assert two_runs["url"] in e["detail"]
        assert all(e["source"] is None for e in read_table(two_runs["root"], "events", market) if e["kind"] != "start")


def _version() -> str:
    from importlib.metadata import version

    return version("nova-recorder")


def test_a_day_that_mixes_sources_is_flagged_everywhere(tmp_path: Path) -> None:
    root = tmp_path / "mixed"

    async def record() -> None:
        for seed in (3, 4):
            async with Venue(SyntheticSource([ETH], seed=seed)) as venue:
                await _run(venue, root, f"rig-{seed}", 1.0)

    asyncio.run(record())
    listed = [json.loads(line) for line in nova("ls", "--data", str(root), "--json").stdout.splitlines()]
    assert len(listed) == 2 and all(d["mixed_sources"] and len(d["sources"]) == 2 for d in listed)
    assert all(d["recorders"] == ["rig-3", "rig-4"] for d in listed)
    checked = nova("check", "--data", str(root))
    assert checked.returncode == 1 and "mixes recordings from 2 sources" in checked.stderr
    r = Replay(str(root), "ETH/USDT")
    assert len(r.warnings) == 1 and "seed 3" in r.warnings[0] and "seed 4" in r.warnings[0]
    replayed = nova("replay", "--data", str(root), "--out", str(tmp_path / "s.parquet"))
    assert replayed.returncode == 0 and "warning:" in replayed.stderr and "2 sources" in replayed.stderr


# ---- nova ls ------------------------------------------------------------------------------------------------------

def test_ls_says_what_is_recorded_and_how_much_was_watched(two_runs: dict) -> None:
    done = nova("ls", "--data", str(two_runs["root"]), "--json")
    assert done.returncode == 0, done.stderr
    days = {d["market"]: d for d in map(json.loads, done.stdout.splitlines())}
    assert set(days) == {"spot", "perp"}
    lo, hi = hole(two_runs)
    for market, d in days.items():
        span = (d["last_ns"] - d["first_ns"]) / 1e9
        assert 0 < d["watched_s"] < span - (hi - lo) / 1e9 + 0.5, (market, d["watched_s"], span)
        assert d["sources"] == [f"nova-venue/{_version()} ({two_runs['description']})"]
        assert d["recorders"] == ["test-rig"] and d["gaps"] == 0 and not d["mixed_sources"]
        assert d["tables"]["book"]["rows"] == len(read_table(two_runs["root"], "book", market))
        assert d["tables"]["book"]["bytes"] > 0 and d["tables"]["events"]["files"] >= 2
    assert {"liquidations", "open_interest", "funding"} <= set(days["perp"]["tables"])
    table = nova("ls", "--data", str(two_runs["root"]), "--symbol", "ETHUSDT")
    assert table.returncode == 0 and "ETH-USDT" in table.stdout and "watched" in table.stdout


@pytest.mark.parametrize(("args", "says"), [
    (("ls", "--date", "2026-02-30"), ["--date", "not a date"]),
    (("ls", "--symbol", "ETH USDT"), ["--symbol", "not a symbol"]),
    (("ls", "--data", "/nonexistent/nova"), ["does not exist"]),
    (("check", "--date", "yesterday"), ["--date", "not a date"]),
    (("compact", "--zstd-level", "40"), ["--zstd-level", "1"]),
    (("venue", "--port", "70000"), ["--port", "70000"]),
])
def test_bad_options_get_one_sentence(tmp_path: Path, args: tuple[str, ...], says: list[str]) -> None:
    done = nova(*args, *(("--data", str(tmp_path)) if "--data" not in args and args[0] != "venue" else ()))
    assert done.returncode not in (0, None)
    sentence = assert_one_sentence(done.stderr)
    for word in says:
        assert word in sentence, sentence
    assert not any(tmp_path.iterdir())


# ---- the new perp tables ------------------------------------------------------------------------------------------

def test_liquidations_open_interest_and_instruments_are_recorded(two_runs: dict) -> None:
    root = two_runs["root"]
    liquidations = read_table(root, "liquidations", "perp")
    assert liquidations, "a few seconds of four liquidations a second"
    for row in liquidations:
        assert row["side"] in ("buy", "sell") and row["price"] > 0 and 0 < row["filled_amount"] <= row["amount"]
        assert row["status"] in ("FILLED", "PARTIALLY_FILLED") and row["ts_event"] and row["ts_trade"]
    oi = read_table(root, "open_interest", "perp")
    assert len(oi) >= 6 and all(r["open_interest"] > 0 and r["ts_event"] for r in oi)
    for market, tick in (("spot", 0.01), ("perp", 0.01)):
        rows = read_table(root, "instruments", market)
        assert len(rows) == 2, "one row per run: nothing changed within a run"
        assert rows[0]["tick_size"] == tick and rows[0]["status"] == "TRADING"
        assert json.loads(rows[0]["filters"])[0]["filterType"] == "PRICE_FILTER"
        assert rows[0]["contract_type"] == (None if market == "spot" else "PERPETUAL")
    assert not (root / "liquidations" / "exchange=binance" / "market=spot").exists()


async def test_bad_liquidations_and_open_interest_are_ledgered_not_written(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(derivatives, "LIQUIDATIONS_PER_S", 4.0)
    async with Venue(SyntheticSource([ETH], seed=8)) as venue:
        rec = Recorder(RecorderConfig(symbols=[ETH], data=str(tmp_path), endpoint=venue.url, flush_s=0.2,
                                      oi_every_s=0.2, live_spread=False))
        await rec.start()
        try:
            state = rec.sessions["perp"].states["ETHUSDT"]
            deadline = time.monotonic() + 30
            while state.stats["liquidations"].messages < 1 or state.stats["open_interest"].messages < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            venue.inject_malformed("perp", "ETHUSDT", "nan", stream="forceOrder", count=2)
            venue.open_interest_fault("perp", fail=3, status=503)
            venue.open_interest_fault("perp", malformed="non-numeric")
            while state.stats["liquidations"].errors < 2 or state.stats["open_interest"].reconnects < 1:
                assert time.monotonic() < deadline, state.stats
                await asyncio.sleep(0.05)
        finally:
            await rec.stop()
    events = [e for e in read_table(tmp_path, "events", "perp")]
    bad_liquidations = [e for e in events if e["stream"] == "liquidations" and e["kind"] == "error"]
    assert len(bad_liquidations) == 2 and all("malformed liquidations message" in e["detail"] for e in bad_liquidations)
    failures = [e for e in events if e["stream"] == "open_interest" and e["kind"] == "error"]
    assert any("request failed" in e["detail"] for e in failures), "the failing endpoint is ledgered"
    assert sum("request failed" in e["detail"] for e in failures) == 1, "once, not once per retry"
    assert any("malformed open_interest" in e["detail"] for e in failures)
    assert any(e["kind"] == "reconnect" for e in events if e["stream"] == "open_interest")
    for row in read_table(tmp_path, "liquidations", "perp"):
        assert math.isfinite(row["amount"]) and row["amount"] > 0
    assert all(math.isfinite(r["open_interest"]) for r in read_table(tmp_path, "open_interest", "perp"))


# ---- replay says what it did --------------------------------------------------------------------------------------

def test_a_window_replay_never_silently_replaces_the_days_series(two_runs: dict, copy_of: Any) -> None:
    root = copy_of(two_runs["root"])
    day = sorted(p.name for p in (root / "book").glob("*/*/*/date=*"))[0].split("=", 1)[1]
    assert nova("replay", "--data", str(root), "-q").returncode == 0
    folder = root / "spread" / "exchange=binance" / "market=spot-perp" / f"symbol={SYM}" / f"date={day}"
    assert [p.name for p in folder.iterdir()] == ["replay.parquet"]
    start, end = two_runs["first"]
    window = [time.strftime("%H:%M:%S", time.gmtime(t // 10**9)) for t in (start, end)]
    before = file_states(root)
    refused = nova("replay", "--data", str(root), "--start", window[0], "--end", window[1])
    assert refused.returncode != 0 and "--replace" in assert_one_sentence(refused.stderr)
    assert "the whole day" in refused.stderr and file_states(root) == before, "refused before any work"
    done = nova("replay", "--data", str(root), "--start", window[0], "--end", window[1], "--replace")
    assert done.returncode == 0, done.stderr
    names = [p.name for p in folder.iterdir()]
    assert names == [f"replay_{window[0].replace(':', '')}-{window[1].replace(':', '')}.parquet"], names
    assert "replaced the earlier replay" in done.stdout


def test_an_empty_window_or_a_missing_perp_is_one_sentence(two_runs: dict, tmp_path: Path) -> None:
    done = nova("replay", "--data", str(two_runs["root"]), "--start", "00:00:00", "--end", "00:00:01")
    if done.returncode == 0:
        pytest.skip("the recording was made in the first second of a UTC day")
    sentence = assert_one_sentence(done.stderr)
    assert "nothing of ETH/USDT was recorded between" in sentence and "recorded around it: spot" in sentence
    spot_only = tmp_path / "spot-only"
    for table in ("book", "bbo", "events"):
        shutil.copytree(two_runs["root"] / table / "exchange=binance" / "market=spot",
                        spot_only / table / "exchange=binance" / "market=spot")
    done = nova("replay", "--data", str(spot_only))
    sentence = assert_one_sentence(done.stderr)
    assert done.returncode != 0 and "no perp book or bookTicker recorded" in sentence and "only spot" in sentence
    assert not (spot_only / "spread").exists()


def test_the_first_runs_compilation_is_announced(two_runs: dict, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import replay.kernel
    from nova.cli import app

    monkeypatch.setattr(replay.kernel, "kernels_cached", lambda: False)
    result = CliRunner().invoke(app, ["replay", "--data", str(two_runs["root"]), "--out",
                                      str(tmp_path / "s.parquet"), "-q"])
    assert result.exit_code == 0, result.output
    assert "Compiling the replay loop" in result.stderr
    monkeypatch.setattr(replay.kernel, "kernels_cached", lambda: True)
    result = CliRunner().invoke(app, ["replay", "--data", str(two_runs["root"]), "--out",
                                      str(tmp_path / "s.parquet"), "-q"])
    assert "Compiling" not in result.stderr


# ---- macros: the spellings the CLI accepts ------------------------------------------------------------------------

def test_macros_accept_the_clis_spellings_and_refuse_others(two_runs: dict) -> None:
    start, end = two_runs["second"]
    t = start + (end - start) // 2
    con = connect(two_runs["root"])

    def tops(market: str, symbol: str) -> list:
        return con.execute(f"SELECT * FROM top_of_book('{market}', '{symbol}', {ts_sql(t)}, {ts_sql(t + 10**9)}, "
                           "INTERVAL 100 MILLISECOND)").fetchall()

    want = tops("perp", SYM)
    assert len(want) == 10 and all(row[-2] for row in want)
    for market, symbol in (("PERP", "ETH/USDT"), ("perp", "ETHUSDT"), ("Perp", "eth-usdt"), ("perp", "ETH/USDT:USDT"),
                           (" perp ", "eth_usdt")):
        assert tops(market, symbol) == want, (market, symbol)
    for market, symbol, says in (("futures", SYM, "is not spot or perp"), ("perp", "ETH USDT", "is not a symbol"),
                                 ("perp", "BTC/USDT", "BTC-USDT is not recorded here; recorded symbols: ETH-USDT")):
        done = nova("sql", "--data", str(two_runs["root"]),
                    f"SELECT * FROM top_of_book('{market}', '{symbol}', now(), now() + INTERVAL 1 SECOND, "
                    "INTERVAL 1 SECOND)")
        assert done.returncode != 0 and says in assert_one_sentence(done.stderr), done.stderr


# ---- archives are read-only ---------------------------------------------------------------------------------------

@pytest.fixture
def read_only(two_runs: dict, tmp_path: Path) -> Iterator[Path]:
    """A read-only copy of the recording: a read-only bind mount as root (root writes through permissions),
    the permissions otherwise."""
    copy = tmp_path / "archive"
    shutil.copytree(two_runs["root"], copy)
    view = tmp_path / "read-only"
    view.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", str(copy), str(view)], capture_output=True).returncode != 0:
            pytest.skip("cannot bind-mount here as root, and root ignores file permissions")
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        try:
            yield view
        finally:
            subprocess.run(["umount", "-l", str(view)], check=False)
    else:
        for p in [copy, *copy.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        try:
            yield copy
        finally:
            for p in [copy, *copy.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)


def test_a_read_only_archive_is_read_and_never_written(read_only: Path, tmp_path: Path) -> None:
    before = file_states(read_only)
    for args in (("check",), ("ls",), ("sql", "SELECT count(*) FROM book"),
                 ("replay", "--out", str(tmp_path / "out.parquet"), "-q")):
        done = nova(*args, "--data", str(read_only))
        assert done.returncode == 0, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert (tmp_path / "out.parquet").is_file()
    for args, says in ((("replay",), "--out"), (("compact",), "not writable"), (("recover",), "not writable")):
        done = nova(*args, "--data", str(read_only))
        assert done.returncode != 0, args
        assert says in assert_one_sentence(done.stderr), (args, done.stderr)
    assert file_states(read_only) == before


# ---- a killed recorder --------------------------------------------------------------------------------------------

def test_recover_finishes_a_killed_recorder_and_a_restart_ledgers_its_stop(tmp_path: Path) -> None:
    root = tmp_path / "data"
    with venue_process() as url:
        spawned = time.time_ns()
        proc = spawn(record_args(url, root))
        try:
            wait_recording(proc, root, spawned)
            time.sleep(1.0)
            busy = nova("recover", "--data", str(root))  # skips the streams the live recorder claims
            assert busy.returncode == 0 and "skipped: spot ETH-USDT" in busy.stderr, busy.stderr
            assert "recovered" not in busy.stderr and journals(root), "a live recorder's journals are not leftovers"
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        finally:
            stop(proc)
        assert journals(root)
        done = nova("recover", "--data", str(root))
        assert done.returncode == 0 and "recovered" in done.stderr, done.stderr
        assert hidden_leftovers(root) == [] and not (root / LOCK).exists()
        for market in ("spot", "perp"):
            events = read_table(root, "events", market)
            stops = [e for e in events if e["kind"] == "stop" and e["stream"] == "book"]
            assert len(stops) == 1 and stops[0]["detail"] == CRASH_DETAIL
            last_row = max(r["ts_recv"] for r in read_table(root, "book", market))
            assert stops[0]["ts_recv"] == last_row, "the run ended at its last recorded row"
        again = nova("recover", "--data", str(root))
        assert again.returncode == 0 and "nothing to recover" in again.stderr
        assert nova("check", "--data", str(root)).returncode == 0

        # killed again; this time the next recorder finishes it and ledgers the stop itself
        spawned = time.time_ns()
        proc = spawn(record_args(url, root))
        try:
            wait_recording(proc, root, spawned)
            time.sleep(1.0)
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        finally:
            stop(proc)
        proc = spawn(record_args(url, root, "--duration", "2s"))
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    for market in ("spot", "perp"):
        kinds = [(e["kind"], e["detail"] == CRASH_DETAIL)
                 for e in sorted(read_table(root, "events", market), key=lambda e: e["ts_recv"])
                 if e["stream"] == "book" and e["kind"] in ("start", "stop")]
        assert kinds == [("start", False), ("stop", True), ("start", False), ("stop", True), ("start", False),
                         ("stop", False)], kinds
    assert not (root / LOCK).exists(), "a clean stop removes the lock file"


# ---- small things -------------------------------------------------------------------------------------------------

def test_version_and_short_help() -> None:
    done = nova("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"nova {_version()}"
    for args in (("-h",), ("replay", "-h"), ("ls", "-h")):
        done = nova(*args)
        assert done.returncode == 0 and "Usage:" in done.stdout, args


def test_compact_with_nothing_to_do_exits_0(two_runs: dict, copy_of: Any) -> None:
    root = copy_of(two_runs["root"])
    done = nova("compact", "--data", str(root))
    assert done.returncode == 0 and "nothing to compact" in done.stderr, done.stderr


def test_demo_records_into_its_own_folder_and_says_what_to_run_next(tmp_path: Path) -> None:
    done = subprocess.run([*NOVA, "demo", "--duration", "3s", "-q"], capture_output=True, text=True, cwd=tmp_path,
                          env={**ENV, "NOVA_DATA": str(tmp_path / "real")}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "demo-data" / "book").is_dir() and not (tmp_path / "real").exists()
    lines = [line.strip() for line in done.stderr.splitlines()]
    follow = [line for line in lines if line.startswith("nova ")]
    assert follow and all("--data demo-data" in line for line in follow), lines
    for line in follow:  # the printed commands work as printed
        argv = line.split(" ", 1)[1]
        import shlex

        ran = subprocess.run([*NOVA, *shlex.split(argv)], capture_output=True, text=True, cwd=tmp_path, env=ENV,
                             timeout=120)
        assert ran.returncode == 0, (line, ran.stderr)


def test_check_accepts_the_symbol_spellings_of_record(two_runs: dict) -> None:
    want = nova("check", "--data", str(two_runs["root"]), "--symbol", "ETH-USDT", "--json").stdout
    assert want and nova("check", "--data", str(two_runs["root"]), "--symbol", "ETHUSDT", "--json").stdout == want
    assert nova("check", "--data", str(two_runs["root"]), "--symbol", "eth/usdt", "--json").stdout == want
    report = [json.loads(line) for line in want.splitlines()]
    assert all(r["ok"] for r in report)
    watched = [r["watched_s"] for r in report if r["table"] == "book"]
    assert len(watched) == 2 and all(w > 0 for w in watched)
