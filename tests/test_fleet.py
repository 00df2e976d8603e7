"""Many symbols, many recorders (issue 12 §2): ``--all``, ``--shard``, ``--workers``, recorder ids in file names,
per-stream claims, and Binance's REST rate limits on both sides (the venue's 429/418, the recorder's pacing).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from nova.core.dataset import BadRecorderId, Dataset, file_id, new_file_name, temp_name
from nova.core.journal import writer as journal_writer
from nova.core.limits import USED_WEIGHT_HEADER, depth_weight, weight_limits
from nova.core.lock import StreamBusy
from nova.core.markets import Symbol
from nova.venue import SyntheticSource
from nova.venue.ratelimit import RateLimits
from recorder.fleet import listed_symbols, shard, split
from recorder.recorder import Recorder, RecorderConfig
from recorder.rows import TradeRow, table_batch
from tests.helpers import (
    ETH,
    FLUSH_S,
    NOVA,
    assert_one_sentence,
    control,
    get_json,
    ledger,
    nova,
    novas,
    one_sentence,
    read_table,
    rebuilt_equals_truth,
    record_args,
    spawn,
    stop,
    venue_process,
    wait_until,
)

SYMBOLS = "ETH/USDT,BTC/USDT,SOL/USDT,XRP/USDT,BNB/BTC"
LISTED_USDT = {"ETH-USDT", "BTC-USDT", "SOL-USDT", "XRP-USDT"}  # on both markets, quoted in USDT (not DOGE: spot only)


def recorded(root: Path, table: str = "book") -> dict[str, set[str]]:
    """market -> the symbols with files of ``table``."""
    out: dict[str, set[str]] = {}
    for path in root.glob(f"{table}/exchange=binance/market=*/symbol=*"):
        if any(path.rglob("*.parquet")):
            out.setdefault(path.parent.name.split("=", 1)[1], set()).add(path.name.split("=", 1)[1])
    return out


def writing(root: Path, table: str) -> set[Path]:
    """The partitions of ``table`` with a journal (files being recorded: they become visible when finished)."""
    return {p.parent for p in root.glob(f"{table}/exchange=binance/market=*/symbol=*/date=*/.*.arrows")}


# ---- shards ---------------------------------------------------------------------------------------------------------

def test_shards_are_disjoint_cover_the_list_and_stay_put_when_a_symbol_is_listed() -> None:
    rng = random.Random(12)
    bases = sorted({"".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(2, 6)))
                    for _ in range(400)})
    symbols = [Symbol(b, q) for b in bases for q in ("USDT", "BTC")]
    for count in (1, 2, 3, 7):
        parts = [shard(symbols, i, count) for i in range(1, count + 1)]
        assert sorted(s for p in parts for s in p) == sorted(symbols), "the shards cover the list"
        assert sum(len(p) for p in parts) == len(symbols), "and are disjoint"
        if count > 1:
            assert all(len(p) > len(symbols) / count / 2 for p in parts), "a hash spreads them"
        # listing order and new listings do not move anyone
        grown = [*reversed(symbols), Symbol("NEWCOIN", "USDT")]
        for i, part in enumerate(parts, 1):
            assert set(part) <= set(shard(grown, i, count))
        for workers in (1, 2, 5):
            for part in parts:
                pieces = split(part, workers, count)
                assert sorted(s for p in pieces for s in p) == sorted(part) and sum(map(len, pieces)) == len(part)
                assert all(pieces) or len(part) < workers * 4, "workers of one shard get some symbols each"


# ---- names --------------------------------------------------------------------------------------------------------

def test_file_names_carry_a_sanitized_recorder_id_and_old_names_still_sort() -> None:
    t = 1_765_000_000_123_000_000
    name = new_file_name(t, "box-1")
    assert name.startswith("20251206T054640.123Z-box-1-") and name.endswith(".parquet")
    assert file_id("ip-10-0-0-1.eu-west-1.compute.internal") == "ip-10-0-0-1.eu-west-1.compute.internal"
    assert file_id(" my box/2 ") == "my-box-2" and file_id("x" * 100) == "x" * 64 and file_id("..a_b") == "a-b"
    for bad in ("", "   ", "!!!", "...", "/"):
        with pytest.raises(BadRecorderId):
            file_id(bad)
    old, later = new_file_name(t), new_file_name(t + 10**6, "a")
    assert sorted([later, old, new_file_name(t - 10**6, "z")])[1:] == [old, later], "start time decides the order"


# ---- claims -------------------------------------------------------------------------------------------------------

def test_a_stream_is_claimed_once_and_recovery_touches_only_claimed_streams(tmp_path: Path) -> None:
    data = Dataset(tmp_path)
    mine = data.claim([("spot", "ETH-USDT"), ("perp", "ETH-USDT")], "one")
    try:
        with pytest.raises(StreamBusy) as busy:
            data.claim([("spot", "BTC-USDT"), ("perp", "ETH-USDT")], "two")
        assert busy.value.holder is not None and busy.value.holder.recorder_id == "one"
        assert data.claimed("spot", "BTC-USDT") is None, "all or none: the free stream was given back"
        other = data.claim([("spot", "BTC-USDT")], "two")  # another symbol of the same root: fine
        assert data.claimed("perp", "ETH-USDT").recorder_id == "one" and data.locked()
        # an open journal of each; recovery of "two" finishes its own only
        for symbol in ("ETH-USDT", "BTC-USDT"):
            partition = data.partition("trades", "spot", symbol, "2026-12-06")
            sink = data.open_journal(partition, new_file_name(time.time_ns(), symbol))
            journal_writer(sink, "trades").close()
            sink.close()
        done = data.recover([("spot", "BTC-USDT")])
        assert len(done) == 1 and "BTC-USDT" in done[0]
        assert [p.parent.parent.name for p in tmp_path.rglob(".*.arrows")] == ["symbol=ETH-USDT"]
        other.release()
    finally:
        mine.release()
    assert not data.locked() and not (tmp_path / ".nova-claims").exists(), "the last claim out leaves no trace"


def test_recovery_of_a_recorder_killed_while_finishing_a_journal(tmp_path: Path) -> None:
    """A kill during a rotation's encode leaves the journal and the half-written temporary its rewrite uses
    (the same name the recovery's rewrite writes and renames): recovery finishes the journal, every row, and
    does not stumble on the temporary it already replaced (it did: an unexpected FileNotFoundError)."""
    data = Dataset(tmp_path)
    partition = data.partition("trades", "spot", "ETH-USDT", "2026-12-06")
    final = new_file_name(time.time_ns(), "vm")
    sink = data.open_journal(partition, final)
    writer = journal_writer(sink, "trades")
    rows = [TradeRow(ts_recv=10**18 + k, ts_event=None, trade_id=k, price=3000.0, amount=1.0, taker_side="buy")
            for k in range(5)]
    writer.write_batch(table_batch("trades", rows))
    writer.close()
    sink.close()
    half = Path(partition.path) / temp_name(final)
    half.write_bytes(b"PAR1 half a file")
    done = data.recover([("spot", "ETH-USDT")])
    assert done == [f"deleted the unfinished file {half}", f"recovered 5 rows into {partition.path}/{final}"]
    assert sorted(p.name for p in Path(partition.path).iterdir()) == [final]
    assert pq.read_table(Path(partition.path) / final).column("trade_id").to_pylist() == list(range(5))


def test_claims_on_an_object_store_heartbeat_go_stale_and_are_taken_over(s3_root: str) -> None:
    data = Dataset(s3_root)
    lost: list[tuple[str, str, str]] = []
    first = data.claim([("spot", "ETH-USDT")], "one", heartbeat_s=3600, stale_s=60, settle_s=0.05,
                       on_lost=lambda m, s, h: lost.append((m, s, h.recorder_id if h else "?")))
    with pytest.raises(StreamBusy) as busy:
        data.claim([("spot", "ETH-USDT")], "two", settle_s=0.05)
    assert busy.value.holder.recorder_id == "one"
    assert data.claimed("spot", "ETH-USDT").recorder_id == "one"
    second = data.claim([("spot", "BTC-USDT")], "two", settle_s=0.05)  # another stream: fine
    first.beat()  # a heartbeat of the live holder keeps the claim
    assert not lost and data.claimed("spot", "ETH-USDT").recorder_id == "one"
    # a claim whose heartbeat is older than stale_s (its recorder stalled or died) is taken over ...
    thief = data.claim([("spot", "ETH-USDT")], "three", stale_s=0.0, settle_s=0.05)
    # ... and its old holder, if it comes back, finds out at its next heartbeat
    first.beat()
    assert lost == [("spot", "ETH-USDT", "three")] and not first.held
    assert data.claimed("spot", "ETH-USDT").recorder_id == "three"
    for claims in (first, second, thief):
        claims.release()
    assert data.claimed("spot", "ETH-USDT") is None and not data.locked()


# ---- the venue's rate limits ----------------------------------------------------------------------------------------

def test_binance_limits_are_stated_once() -> None:
    assert [depth_weight("spot", n) for n in (100, 500, 1000, 5000)] == [5, 25, 50, 250]
    assert [depth_weight("perp", n) for n in (5, 100, 500, 1000)] == [2, 5, 10, 20]
    announced = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "SECOND", "intervalNum": 2, "limit": 30}]
    assert weight_limits(announced, "spot") == (30, 2.0) and weight_limits([], "perp") == (2400, 60.0)


async def test_the_venue_counts_weight_answers_429_with_retry_after_then_418(make_venue, session) -> None:
    venue = await make_venue(limits=RateLimits({"spot": 60, "perp": 0}, window_s=3600, ban_after=1, ban_s=90))
    info = await session.get(f"{venue.url}/api/v3/exchangeInfo")
    assert info.headers[USED_WEIGHT_HEADER] == "20"
    assert {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 60, "limit": 60} in \
        (await info.json())["rateLimits"]
    statuses = []
    for _ in range(3):  # 20 + 3 x 25 (limit 500): the third goes over
        async with session.get(f"{venue.url}/api/v3/depth", params={"symbol": "ETHUSDT", "limit": "500"}) as r:
            statuses.append((r.status, r.headers[USED_WEIGHT_HEADER], r.headers.get("Retry-After")))
            body = await r.json()
    assert [s[:2] for s in statuses] == [(200, "45"), (429, "45"), (429, "45")]
    assert 1 <= int(statuses[1][2]) <= 3600 and body["code"] == -1003 and "per 60 MINUTE" in body["msg"]
    async with session.get(f"{venue.url}/api/v3/ping") as r:  # still sending while told to wait: banned
        assert r.status == 418 and 85 <= int(r.headers["Retry-After"]) <= 90
        assert "IP banned until" in (await r.json())["msg"]
    code, _ = await get_json(session, f"{venue.url}/fapi/v1/depth", symbol="ETHUSDT", limit=1000)
    assert code == 200, "USD-M counts its own weight (and has no limit here)"
    status = venue.status()["markets"]["spot"]
    assert status["throttled"] >= 2 and status["banned"] == 1 and status["weight_limit"] == 60
    # the control API changes the limits and forgets the counts
    async with session.post(f"{venue.url}/_venue/limits", params={"spot": "0"}) as r:
        assert (await r.json())["weight"]["spot"] == 0
    code, _ = await get_json(session, f"{venue.url}/api/v3/depth", symbol="ETHUSDT", limit=5000)
    assert code == 200
    async with session.post(f"{venue.url}/_venue/limits", params={"window": "-1"}) as r:
        assert r.status == 400


@pytest.mark.slow
async def test_throttled_snapshots_are_retried_after_retry_after_and_nothing_is_lost(make_venue, session,
                                                                                     tmp_path: Path) -> None:
    """Another client on the IP spends the weight the recorder planned with (the recorder paces by its own count
    and the weight header, so only another client makes it meet a 429): its snapshot gets 429, waits the
    Retry-After, asks again; the book rebuilt from the rows equals the venue's."""
    venue = await make_venue(SyntheticSource([ETH], seed=3), limits=RateLimits({"spot": 300, "perp": 300},
                                                                                window_s=3, ban_after=50))
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(tmp_path), endpoint=venue.url, flush_s=0.2,
                                  tables=("book",), markets=("spot",)))
    await rec.start()
    try:
        state = rec.sessions["spot"].states["ETHUSDT"]
        while not state.seq.live:
            await asyncio.sleep(0.05)
        budget = rec.sessions["spot"].exchange.nova_budget
        deadline = time.monotonic() + 60
        while budget.throttled == 0:  # (again if the 3 s window happened to end before the resync was asked)
            assert time.monotonic() < deadline, "the recorder was never throttled"
            # at the start of a window (the recorder's own count is empty), spend the weight as another tool on
            # this IP would, then break the chain: the resync's snapshot does not fit any more
            await asyncio.sleep(3 - time.time() % 3 + 0.05)
            while (await session.get(f"{venue.url}/api/v3/depth", params={"symbol": "ETHUSDT", "limit": "100"})
                   ).status == 200:
                pass
            venue.drop_next("spot", "ETHUSDT")
            for _ in range(20):
                if budget.throttled:
                    break
                await asyncio.sleep(0.05)
            while not state.seq.live:
                assert time.monotonic() < deadline, "the recorder did not resync after the throttle"
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        venue.pause()
        truth_id = venue.truth("spot", "ETHUSDT")["lastUpdateId"]
        while state.seq.last_id != truth_id:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        await rec.stop()
    rebuilt_equals_truth(tmp_path, "spot", venue.truth("spot", "ETHUSDT"))
    throttled = [e for e in ledger(tmp_path, "spot") if "throttled (429)" in (e["detail"] or "")]
    assert throttled and "retrying after" in throttled[0]["detail"]
    assert venue.status()["markets"]["spot"]["banned"] == 0, "the recorder waited instead of insisting"


# ---- the command line ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_bad_fleet_input_is_one_sentence_and_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    common = ("--venue", "http://127.0.0.1:9", "--data", str(data))
    results = novas(*((*args, *common) for args in (
        ("record", "--shard", "3/2", "ETH/USDT"), ("record", "--shard", "0/0", "ETH/USDT"),
        ("record", "--workers", "0", "ETH/USDT"), ("record", "--all", "ETH/USDT"), ("record",),
        ("record", "--recorder-id", "!!!", "ETH/USDT"))))
    says = [one_sentence(r) for r in results]
    for sentence, words in zip(says, ("between 1 and 2", "N must be 1 or more", "--workers", "not both",
                                      "or --all", "--recorder-id"), strict=True):
        assert words in sentence, sentence
    assert not data.exists()


@pytest.mark.slow
def test_all_records_exactly_the_listed_symbols_and_ids_name_the_files(tmp_path: Path) -> None:
    with venue_process("--symbols", SYMBOLS, "--spot-only", "DOGE/USDT") as url:
        listed = asyncio.run(listed_symbols(url, ("spot", "perp"), "USDT"))
        assert {s.dashed for s in listed} == LISTED_USDT
        done = nova("record", "--all", "--quote", "usdt", "--venue", url, "--data", str(tmp_path), "--flush",
                    f"{FLUSH_S}s", "--duration", "4s", "--tables", "book,bbo", "--recorder-id", "box 7", "-q")
    assert done.returncode == 0, done.stderr
    assert recorded(tmp_path) == {"spot": LISTED_USDT, "perp": LISTED_USDT}
    names = [p.name for p in tmp_path.rglob("*.parquet")]
    assert names and all("Z-box-7-" in n for n in names), names[:3]
    assert not list(tmp_path.rglob(".nova-claims")), "a clean stop gives back every claim"


@pytest.mark.slow
def test_workers_write_every_stream_once_and_stop_cleanly_on_sigint(tmp_path: Path) -> None:
    with venue_process("--symbols", SYMBOLS) as url:
        proc = spawn([*NOVA, "record", "--all", "--workers", "2", "--venue", url, "--data", str(tmp_path),
                      "--flush", f"{FLUSH_S}s", "--tables", "book,bbo", "--recorder-id", "w"])
        try:
            wait_until(lambda: proc.poll() is not None or len(writing(tmp_path, "book")) == 10,
                       "every worker's first flush", timeout=90)
            time.sleep(1.0)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=90)
        finally:
            stop(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    every = {"ETH-USDT", "BTC-USDT", "SOL-USDT", "XRP-USDT", "BNB-BTC"}
    assert recorded(tmp_path) == {"spot": every, "perp": every}
    for market in ("spot", "perp"):
        events = read_table(tmp_path, "events", market)
        starts = [e for e in events if e["kind"] == "start" and e["stream"] == "book"]
        stops = [e for e in events if e["kind"] == "stop" and e["stream"] == "book"]
        assert len(starts) == len(stops) == 5, "each stream recorded once, by one worker, and stopped cleanly"
    assert ("worker 1" in out and "worker 2" in out) or "recorded into" in out
    assert not list(tmp_path.rglob(".*.arrows")) and not list(tmp_path.rglob(".nova-claims"))


@pytest.mark.slow
def test_a_second_recorder_of_a_stream_is_refused_and_one_of_another_symbol_works(tmp_path: Path) -> None:
    with venue_process("--symbols", "ETH/USDT,BTC/USDT") as url:
        first = spawn(record_args(url, tmp_path, "--recorder-id", "one"))
        try:
            wait_until(lambda: first.poll() is not None or writing(tmp_path, "book"), "the first recorder's flush",
                       timeout=60)
            same = nova(*record_args(url, tmp_path, "--duration", "2s", "--recorder-id", "two")[len(NOVA):])
            line = one_sentence(same)
            assert "ETH-USDT is already being recorded" in line and "recorder one" in line, line
            other = nova(*record_args(url, tmp_path, "--duration", "2s", "--recorder-id", "two",
                                      symbol="BTC/USDT")[len(NOVA):])
            assert other.returncode == 0, other.stderr
            first.send_signal(signal.SIGINT)
            _, err = first.communicate(timeout=60)
            assert first.returncode == 0, err
        finally:
            stop(first)
    assert recorded(tmp_path) == {"spot": {"ETH-USDT", "BTC-USDT"}, "perp": {"ETH-USDT", "BTC-USDT"}}
    ids = {p.name.split("Z-", 1)[1].rsplit("-", 1)[0] for p in tmp_path.rglob("*.parquet")}
    assert ids == {"one", "two"}
    assert_one_sentence(same.stderr)
    assert nova("check", "--data", str(tmp_path)).returncode == 0


@pytest.mark.slow
def test_venue_limits_from_the_command_line() -> None:
    with venue_process("--spot-weight-limit", "50", "--weight-window", "20s") as url:
        limits = control(url, "limits")
        assert limits["weight"] == {"spot": 50, "perp": 2400} and limits["window_s"] == 20


def worker_pids(parent: int) -> list[int]:
    """The recorder worker processes of a `nova record --workers` (multiprocessing's spawned children)."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent \
                    and b"spawn_main" in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
        except OSError:
            continue
    return sorted(out)


@pytest.mark.slow
def test_a_worker_that_dies_is_reported_and_the_others_keep_recording(tmp_path: Path) -> None:
    with venue_process("--symbols", "ETH/USDT,BTC/USDT,SOL/USDT,XRP/USDT") as url:
        proc = spawn([*NOVA, "record", "--all", "--workers", "2", "--venue", url, "--data", str(tmp_path),
                      "--flush", f"{FLUSH_S}s", "--tables", "book", "-q"])
        try:
            wait_until(lambda: proc.poll() is not None or len(writing(tmp_path, "book")) == 8,
                       "every worker's first flush", timeout=90)
            victim, survivor = worker_pids(proc.pid)
            os.kill(victim, signal.SIGKILL)
            time.sleep(1.0)
            before = {p: p.stat().st_size for p in tmp_path.rglob(".*.arrows")}
            wait_until(lambda: any(p.stat().st_size > s for p, s in before.items() if p.exists()),
                       "the surviving worker to keep writing", timeout=30)
            assert proc.poll() is None and survivor in worker_pids(proc.pid)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=90)
        finally:
            stop(proc)
    assert proc.returncode == 1, err
    assert "died" in err and "the other workers keep recording" in err and "Traceback" not in err, err
    assert "1 of 2 workers did not finish cleanly" in err.splitlines()[-1], err
