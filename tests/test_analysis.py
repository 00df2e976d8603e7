"""The analysis tools (``nova sql``, ``nova check``, ``nova compact``) against real recordings.

Recordings are made once per module by the real recorder (ccxt.pro over real sockets) against the in-process
venue: a clean one, and a faulty one with 1 s rotation, a dropped depth message on both markets and a forced
disconnect of every connection. Every expectation is computed independently of ``nova/analysis/``: the book by
tests/oracle.py's plain reader rule, tops of book and mids from the ``bbo`` rows read with pyarrow.

Time rule used for "the book at t": a message counts from the moment it takes effect, which is the largest
receive time of the stream so far (``msg`` order). The diffs a sequencer holds back for a REST snapshot are
written right after it with slightly earlier receive times; they take effect with the snapshot. This is the
rule replay uses (replay/reader.py: a running maximum of ``ts_recv``), and where receive times are
non-decreasing it is exactly "the rows with ts_recv <= t".
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nova.analysis.check import check
from nova.analysis.compact import compact
from nova.analysis.sql import connect, run
from nova.core.contract import RECORDED_TABLES
from nova.core.dataset import STAGING, Dataset
from nova.venue import SyntheticSource, Venue, VenueConfig
from recorder.recorder import Recorder, RecorderConfig
from tests.helpers import (
    ETH,
    MARKETS,
    REPO,
    file_states,
    nova,
    novas,
    one_sentence,
    record_until,
    ts_sql,
)
from tests.oracle import read_table, rebuild_from_rows

SYM = "ETH-USDT"
FAR_FUTURE = "2099-01-01"
pytestmark = pytest.mark.timeout(120)


# ---- recordings ----------------------------------------------------------------------------------------------------

async def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# The faulty recording's venue answers REST snapshots slower than its 100 ms depth pushes, so that every snapshot
# has diffs held back for it (with the 30 ms default, a run could have none, and the look-ahead test had nothing
# to look at).
HELD_BACK_LATENCY_S = 0.15


async def _record(root: Path, seed: int, faults: bool) -> None:
    config = VenueConfig(snapshot_latency_s=HELD_BACK_LATENCY_S) if faults else VenueConfig()
    venue = Venue(SyntheticSource([ETH], seed=seed), config)
    await venue.start()
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, flush_s=0.2,
                                  rotate_s=1.0 if faults else 900.0))
    try:
        await rec.start()
        states = [rec.sessions[m].states["ETHUSDT"] for m in MARKETS]
        await _until(lambda: all(s.seq.live and s.stats["book"].messages >= 5 for s in states), "live books")
        await asyncio.sleep(1.0)
        if faults:
            for market in MARKETS:
                venue.drop_next(market, "ETHUSDT")
            await _until(lambda: all(s.stats["book"].gaps >= 1 for s in states), "both gaps")
            await _until(lambda: all(s.seq.live for s in states), "resync after the gaps")
            await asyncio.sleep(1.0)
            cut = time.time_ns()
            await venue.close_connections(None)
            await _until(lambda: all(s.seq.live and s.stats["book"].reconnects >= 1 and
                                     s.stats["bbo"].last_recv_ns > cut for s in states), "reconnect")
            await asyncio.sleep(1.5)
        await record_until(venue, rec, min_messages=1)
    finally:
        await rec.stop()
        await venue.stop()


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"clean": ..., "faulty": ...}, recorded concurrently (about 6 s); never modified by the tests."""
    base = tmp_path_factory.mktemp("recordings")
    roots = {"clean": base / "clean", "faulty": base / "faulty"}

    async def both() -> None:
        await asyncio.gather(_record(roots["clean"], seed=11, faults=False),
                             _record(roots["faulty"], seed=5, faults=True))

    asyncio.run(both())
    for market in MARKETS:
        gaps = [e for e in read_table(roots["faulty"], "events", market) if e["kind"] == "gap"]
        assert gaps, (market, "the faulty recording has no ledgered gap")
    return roots


# ---- helpers -------------------------------------------------------------------------------------------------------

def ceil_us(ns: int) -> int:
    return -(-ns // 1000) * 1000


def floor_us(ns: int) -> int:
    """What ``nova sql`` shows of a receive time: TIMESTAMPTZ, whole microseconds (truncated)."""
    return ns // 1000 * 1000


def ledger_breaks(root: Path, market: str, stream: str, kinds: tuple[str, ...]) -> list[int]:
    """Times of the ledger events of one stream that end its validity. Written out here, independently of
    nova.core.validity: a quote or book is valid until its stream's next such event."""
    return sorted(e["ts_recv"] for e in read_table(root, "events", market)
                  if e["stream"] == stream and e["kind"] in kinds)


QUOTE_BREAKS = ("disconnect", "error", "stop", "start")
BOOK_BREAKS = ("gap", "disconnect", "stop", "start")


def broken(breaks: list[int], since: int, t: int) -> bool:
    """Whether a break lies in [since, t]."""
    i = bisect.bisect_left(breaks, since)
    return i < len(breaks) and breaks[i] <= t


def visible_parquet(root: Path) -> list[Path]:
    """What a hive reader sees: .parquet files with no hidden component under the root."""
    return sorted(p for p in root.rglob("*.parquet") if not any(x.startswith(".") for x in p.relative_to(root).parts))


def partitions(root: Path) -> dict[Path, list[Path]]:
    out: dict[Path, list[Path]] = {}
    for path in visible_parquet(root):
        out.setdefault(path.parent.relative_to(root), []).append(path)
    return out


def dataset_rows(root: Path) -> Counter:
    """The multiset of rows of every table: (partition folder, row tuple with timestamps as int ns)."""
    rows: Counter = Counter()
    for path in visible_parquet(root):
        table = pq.read_table(path)
        for i, field in enumerate(table.schema):
            if pa.types.is_timestamp(field.type):
                table = table.set_column(i, field.name, table[field.name].cast(pa.int64()))
            elif pa.types.is_dictionary(field.type):
                table = table.set_column(i, field.name, table[field.name].cast(pa.string()))
        folder = str(path.parent.relative_to(root))
        rows.update((folder, *r.items()) for r in table.to_pylist())
    return rows


def sorted_rows(rows: Counter) -> list[tuple]:
    return sorted(rows.elements(), key=repr)


def messages(rows: list[dict]) -> list[dict]:
    """The first row of every message, in msg order."""
    firsts: dict[int, dict] = {}
    for row in rows:
        firsts.setdefault(row["msg"], row)
    return list(firsts.values())


def book_as_of(rows: list[dict], t: int) -> tuple[dict[float, float], dict[float, float]]:
    """tests/oracle.py's rule over the messages in effect at t (see the module docstring)."""
    upto = 0
    while upto < len(rows) and rows[upto]["ts_recv"] <= t:
        upto += 1
    book: tuple[dict[float, float], dict[float, float]] = ({}, {})
    for _, bids, asks in rebuild_from_rows(rows[:upto]):
        book = (bids, asks)
    return dict(book[0]), dict(book[1])


def book_valid_at(root: Path, market: str, rows: list[dict], t: int) -> tuple[bool, int | None]:
    """(valid, time of the snapshot in effect) at t: the last snapshot among the messages in effect, and no break
    of the book stream at or after it and by t."""
    upto = 0
    while upto < len(rows) and rows[upto]["ts_recv"] <= t:
        upto += 1
    snaps = [r["ts_recv"] for r in rows[:upto] if r["snapshot"]]
    if not snaps:
        return False, None
    return not broken(ledger_breaks(root, market, "book", BOOK_BREAKS), snaps[-1], t), snaps[-1]


def top_levels(bids: dict[float, float], asks: dict[float, float], n: int) -> list[tuple]:
    out = [("bid", i + 1, p, bids[p]) for i, p in enumerate(sorted(bids, reverse=True)[:n])]
    return out + [("ask", i + 1, p, asks[p]) for i, p in enumerate(sorted(asks)[:n])]


def sql_book_at(con: duckdb.DuckDBPyConnection, market: str, t: int, n: int) -> list[tuple]:
    return con.execute(f"SELECT side, level, price, amount FROM book_at('{market}', '{SYM}', {ts_sql(t)}, {n})"
                       ).fetchall()


NO_BOOK = [(None, None, None, None)]  # book_at's answer for an instant with no valid book


def check_json(proc: subprocess.CompletedProcess) -> list[dict]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def quote_span(root: Path) -> tuple[int, int]:
    ts = [r["ts_recv"] for m in MARKETS for r in read_table(root, "bbo", m)]
    return min(ts), max(ts)


def book_instants(root: Path, market: str, seed: int = 7) -> dict[int, str]:
    """Instants at which the book is interesting: before anything, right after every snapshot (the first one
    and the resyncs after the gap and the reconnect), at the gap, at stale messages, at random, after all."""
    rows = read_table(root, "book", market)
    msgs = messages(rows)
    first_snapshot = next(m["msg"] for m in msgs if m["snapshot"])
    instants: dict[int, str] = {}

    def add(t: int, why: str) -> None:
        instants[t] = f"{instants[t]}; {why}" if t in instants else why

    add((msgs[0]["ts_recv"] // 1000 - 1) * 1000, "before any message")
    add(ceil_us(max(m["ts_recv"] for m in msgs)) + 1000, "after the last message")
    for m in msgs:
        if m["snapshot"]:
            add(ceil_us(m["ts_recv"]), f"right after snapshot msg {m['msg']}")
        elif m["stale"] and m["msg"] > first_snapshot:
            add(ceil_us(m["ts_recv"]), f"at stale msg {m['msg']}")
    for e in read_table(root, "events", market):
        if e["stream"] == "book" and e["kind"] in ("gap", "resync", "disconnect", "reconnect"):
            add(ceil_us(e["ts_recv"]), f"at the {e['kind']} event")
        if e["stream"] == "book" and e["kind"] == "stop":
            add(ceil_us(e["ts_recv"]) + 1000, "after the stop")
    rng = random.Random(seed)
    lo, hi = msgs[0]["ts_recv"], msgs[-1]["ts_recv"]
    for _ in range(6):
        add(rng.randrange(lo, hi) // 1000 * 1000, "random")
    return instants


def held_back_instants(root: Path, market: str) -> dict[int, tuple[str, int]]:
    """Instants after a held-back diff was received but before the snapshot it is written after arrived."""
    msgs = messages(read_table(root, "book", market))
    out = {}
    for i, snap in enumerate(msgs):
        if not snap["snapshot"]:
            continue
        for later in msgs[i + 1:]:
            if later["ts_recv"] >= snap["ts_recv"]:
                break
            t = ceil_us(later["ts_recv"])
            if t < floor_us(snap["ts_recv"]):  # nova sql sees microseconds: the snapshot must be after t there too
                out[t] = (f"msg {later['msg']} received before snapshot msg {snap['msg']}", snap["ts_recv"])
    return out


# ---- 1. the macros equal the same quantity computed independently --------------------------------------------------

STEP_MS = 37


def expected_tops(root: Path, market: str, grid: list[int]) -> list[tuple]:
    """(t, bid, bid size, ask, ask size, quote time as nova sql shows it, valid) at every instant: the last
    quote received by t, its prices only while no break of the bookTicker stream came at or after it and by t."""
    quotes = sorted(read_table(root, "bbo", market), key=lambda r: (r["ts_recv"], r["update_id"]))
    times = [q["ts_recv"] for q in quotes]
    breaks = ledger_breaks(root, market, "bbo", QUOTE_BREAKS)
    out = []
    for t in grid:
        i = bisect.bisect_right(times, t) - 1
        if i < 0:
            out.append((t, None, None, None, None, None, False))
            continue
        q, at = quotes[i], times[i]
        valid = not broken(breaks, at, t)
        prices = (q["bid_price"], q["bid_amount"], q["ask_price"], q["ask_amount"]) if valid else (None,) * 4
        out.append((t, *prices, floor_us(at), valid))
    return out


def tob_grid(root: Path) -> tuple[int, int, list[int]]:
    lo, hi = quote_span(root)
    t0 = (lo // 10**6 - 100) * 10**6  # some instants before the first quote
    t1 = (hi // 10**6 + 150) * 10**6
    step = STEP_MS * 10**6
    return t0, t1, list(range(t0, t1 - step + 1, step))


def test_top_of_book_is_the_last_quote_at_or_before_each_instant(recordings: dict[str, Path]) -> None:
    root = recordings["faulty"]
    t0, t1, grid = tob_grid(root)
    con = connect(root)
    for market in MARKETS:
        got = con.execute(f"SELECT epoch_ns(ts), bid_price, bid_amount, ask_price, ask_amount, epoch_ns(quote_ts), "
                          f"valid FROM top_of_book('{market}', '{SYM}', {ts_sql(t0)}, {ts_sql(t1)}, "
                          f"INTERVAL '{STEP_MS} milliseconds')").fetchall()
        want = expected_tops(root, market, grid)
        assert [g[0] for g in got] == grid, "the grid is [t0, t1) every step"
        assert got == want
        assert sum(w[1] is None for w in want) >= 2 and sum(w[1] is not None for w in want) > 100
        assert any(w[5] is not None and not w[6] for w in want), "quotes from before a break are not valid"


def test_basis_is_the_perp_over_spot_mid_from_those_tops(recordings: dict[str, Path]) -> None:
    root = recordings["faulty"]
    t0, t1, grid = tob_grid(root)
    result = run(root, f"SELECT epoch_ns(ts) AS t, spot_mid, perp_mid, basis_bps FROM basis('{SYM}', {ts_sql(t0)}, "
                       f"{ts_sql(t1)}, INTERVAL '{STEP_MS} milliseconds')")
    got = [tuple(r.values()) for r in result.to_pylist()]
    spot, perp = expected_tops(root, "spot", grid), expected_tops(root, "perp", grid)
    assert [g[0] for g in got] == grid
    checked = 0
    for (t, s_mid, p_mid, bps), s, p in zip(got, spot, perp, strict=True):  # invalid legs have no prices
        if s[1] is None or p[1] is None:
            assert bps is None, t
            continue
        want_s, want_p = (s[1] + s[3]) / 2, (p[1] + p[3]) / 2
        assert (s_mid, p_mid) == (want_s, want_p), t
        assert bps == pytest.approx((want_p / want_s - 1) * 1e4, rel=1e-12, abs=0), t
        checked += 1
    assert checked > 100


@pytest.mark.slow  # hundreds of instants (~7 s)
def test_book_at_equals_the_rebuilt_book(recordings: dict[str, Path]) -> None:
    """Right after snapshots, at the gap, at stale messages, at the resyncs, at random and at the end: the top
    n levels (and the whole book) equal tests/oracle.py's rebuild from the rows with ts_recv <= t."""
    root = recordings["faulty"]
    con = connect(root)
    for market in MARKETS:
        rows = read_table(root, "book", market)
        instants = book_instants(root, market)
        assert sum("snapshot" in why for why in instants.values()) >= 3, "initial, after the gap, after reconnect"
        checked = []
        invalid = 0
        for t, why in sorted(instants.items()):
            plain = [r for r in rows if r["ts_recv"] <= t]
            if plain != rows[:len(plain)]:  # inside a held-back diff's window: see the next test
                assert "snapshot" not in why and "gap" not in why, (market, why)
                continue
            checked.append(why)
            bids, asks = book_as_of(rows, t)
            valid, _ = book_valid_at(root, market, rows, t)
            for n in (1, 5, 1_000_000):
                want = top_levels(bids, asks, n) if valid else NO_BOOK
                assert sql_book_at(con, market, t, n) == want, (market, why, t, n)
            invalid += not valid
            if "before any message" in why or "after the stop" in why:
                assert not valid, (market, why)
            if "snapshot" in why:
                assert valid and len(bids) > 5 and len(asks) > 5, (market, why)
        assert len(checked) >= 10 and any("gap" in why for why in checked), (market, checked)
        assert invalid >= 3, "before any message, at a break, after the stop: no book"


def test_book_at_uses_nothing_received_after_t(recordings: dict[str, Path]) -> None:
    """Between a held-back diff's arrival and its snapshot's, the book at t is the one in effect before the
    snapshot: book_at must not use a snapshot received after t (look-ahead), and agrees with replay's clock."""
    root = recordings["faulty"]
    con = connect(root)
    windows: Counter[str] = Counter()
    for market in MARKETS:
        rows = read_table(root, "book", market)
        for t, (why, snapshot_ns) in sorted(held_back_instants(root, market).items()):
            windows[market] += 1
            bids, asks = book_as_of(rows, t)
            valid, in_effect = book_valid_at(root, market, rows, t)
            assert sql_book_at(con, market, t, 1_000_000) == (top_levels(bids, asks, 1_000_000) if valid
                                                               else NO_BOOK), why
            top5 = con.execute(f"SELECT side, level, price, amount, epoch_ns(snapshot_ts) "
                               f"FROM book_at('{market}', '{SYM}', {ts_sql(t)}, 5)").fetchall()
            assert [row[:4] for row in top5] == (top_levels(bids, asks, 5) if valid else NO_BOOK), why
            (got,) = {row[4] for row in top5}
            assert got == (None if in_effect is None else floor_us(in_effect)), "the snapshot in effect at t"
            assert got is None or got < snapshot_ns, "no look-ahead"
    assert all(windows[m] > 0 for m in MARKETS), ("ccxt holds diffs back during every snapshot request", windows)


def test_macros_do_not_depend_on_the_local_time_zone(recordings: dict[str, Path], tmp_path: Path) -> None:
    """Partitions are UTC dates: the macros must find the data whatever TimeZone the session has. A copy of the
    recording is moved to 00:20 UTC on 2024-03-01, which is still 2024-02-29 at UTC-1."""
    root = shifted_copy(recordings["faulty"], tmp_path / "shifted", "2024-03-01", 20 * 60)
    lo, hi = quote_span(root)
    query = (f"SELECT (SELECT count(*) FROM book_at('perp', '{SYM}', {ts_sql(ceil_us(hi))}, 1000000)) AS levels, "
             f"(SELECT count(bid_price) FROM top_of_book('spot', '{SYM}', {ts_sql(lo // 1000 * 1000)}, "
             f"{ts_sql(ceil_us(hi))}, INTERVAL '250 milliseconds')) AS quotes, "
             f"(SELECT count(basis_bps) FROM basis('{SYM}', {ts_sql(lo // 1000 * 1000)}, {ts_sql(ceil_us(hi))}, "
             "INTERVAL '250 milliseconds')) AS bases")
    answers = {}
    with ThreadPoolExecutor(3) as pool:
        procs = pool.map(lambda tz: (tz, nova("sql", "--data", str(root), "--format", "json", query,
                                              env={"TZ": tz})), ("UTC", "Etc/GMT+1", "Etc/GMT-14"))
        for tz, proc in procs:
            assert proc.returncode == 0, proc.stderr
            answers[tz] = json.loads(proc.stdout)
    assert answers["UTC"]["levels"] > 10 and answers["UTC"]["quotes"] > 10 and answers["UTC"]["bases"] > 10
    assert answers["Etc/GMT+1"] == answers["UTC"] == answers["Etc/GMT-14"], answers


def shifted_copy(src: Path, dst: Path, day: str, seconds_into_day: int) -> Path:
    """The recording with every timestamp moved by one constant so that it starts at ``day`` + seconds."""
    files = visible_parquet(src)
    first = min(pq.read_table(p, columns=["ts_recv"])["ts_recv"].cast(pa.int64()).to_numpy().min() for p in files)
    start = int(dt.datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp()) + seconds_into_day
    delta = start * 10**9 - int(first)
    for path in files:
        table = pq.read_table(path)
        for i, field in enumerate(table.schema):
            if pa.types.is_timestamp(field.type):
                moved = pa.compute.add(table[field.name].cast(pa.int64()), delta).cast(field.type)
                table = table.set_column(i, field, moved)
        rel = path.relative_to(src)
        target = dst / rel.parent.parent / f"date={day}" / rel.name
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
    return dst


# ---- 2. nova check -------------------------------------------------------------------------------------------------

def test_check_clean_recording_passes(recordings: dict[str, Path]) -> None:
    proc = nova("check", "--data", str(recordings["clean"]), "--json")
    reports = check_json(proc)
    assert proc.returncode == 0, reports
    assert {(r["table"], r["market"]) for r in reports} >= {(t, m) for t in ("book", "bbo", "trades", "events")
                                                           for m in MARKETS}
    for r in reports:
        assert r["ok"] and not r["problems"], r
        assert r["rows"] > 0 and r["files"] >= 1
    for r in (r for r in reports if r["table"] == "book"):
        assert r["breaks"] == 0 and r["crossed"] == 0 and r["messages"] > 5, r
        assert r["rows"] == len(read_table(recordings["clean"], "book", r["market"]))


def test_check_faulty_recording_has_every_break_explained(recordings: dict[str, Path]) -> None:
    proc = nova("check", "--data", str(recordings["faulty"]), "--json")
    reports = check_json(proc)
    assert proc.returncode == 0, [r["problems"] for r in reports]
    books = {r["market"]: r for r in reports if r["table"] == "book"}
    for market in MARKETS:
        r = books[market]
        assert r["breaks"] >= 2, ("the dropped message and the reconnect", r)
        assert r["explained"] == r["breaks"] and r["ok"], r
        assert r["files"] >= 4, "rotated every second"
        assert r["messages"] == len(messages(read_table(recordings["faulty"], "book", market)))


def test_check_names_a_damaged_file_and_crash_leftovers(recordings: dict[str, Path], copy_of: Any) -> None:
    root = copy_of(recordings["clean"])
    damaged = partitions(root)[next(k for k in partitions(root) if str(k).startswith("book/")
                                    and "market=perp" in str(k))][0]
    size = damaged.stat().st_size
    with open(damaged, "r+b") as fh:
        fh.truncate(size // 2)
    bbo_folder = root / next(k for k in partitions(root) if str(k).startswith("bbo/"))
    tmp = bbo_folder / ".x.parquet.tmp"
    tmp.write_bytes(b"PAR1 half a file")
    journal = bbo_folder / ".y.arrows"
    journal.write_bytes(b"\xff\xff\xff\xff")
    proc, table = novas(("check", "--data", str(root), "--json"), ("check", "--data", str(root)))
    reports = check_json(proc)
    assert proc.returncode == 1, proc.stderr
    problems = " | ".join(p for r in reports for p in r["problems"])
    for path in (damaged, tmp, journal):
        assert str(path) in problems, (path, problems)
    assert [str(damaged)] == [u for r in reports for u in r["unreadable"]]
    assert {str(tmp), str(journal)} == {x for r in reports for x in r["leftovers"]}
    assert {r["table"] for r in reports if not r["ok"]} == {"book", "bbo"}
    # The table view names them too, on stderr, and says PROBLEM.
    assert table.returncode == 1 and "PROBLEM" in table.stdout
    assert damaged.name in table.stderr and tmp.name in table.stderr and journal.name in table.stderr


def test_check_does_not_flag_journals_while_a_recorder_holds_the_lock(recordings: dict[str, Path],
                                                                      copy_of: Any) -> None:
    root = copy_of(recordings["clean"])
    folder = root / next(k for k in partitions(root) if str(k).startswith("trades/"))
    (folder / ".open.arrows").write_bytes(b"")
    claims = Dataset(root).claim([("spot", "ETH-USDT"), ("perp", "ETH-USDT")], "test")  # as a live recorder does
    try:
        assert all(r.ok for r in check(root)), "a live recorder's journal is not a leftover"
        (folder / ".z.parquet.tmp").write_bytes(b"")
        assert [r.leftovers for r in check(root) if r.leftovers] == [[str(folder / ".z.parquet.tmp")]]
    finally:
        claims.release()
    assert {x for r in check(root) for x in r.leftovers} == {str(folder / ".open.arrows"),
                                                              str(folder / ".z.parquet.tmp")}


# ---- 3. nova compact -----------------------------------------------------------------------------------------------

def view_results(root: Path) -> dict[str, list]:
    """Every view in full, and the macros at a few instants."""
    con = connect(root)
    out: dict[str, list] = {}
    for view in RECORDED_TABLES:
        if (root / view).is_dir():
            out[view] = con.execute(f"SELECT * FROM {view} ORDER BY ALL").fetchall()
    out["counts"] = con.execute("SELECT 'book', market, count(*), count(DISTINCT msg) FROM book GROUP BY ALL UNION ALL "
                                "SELECT 'bbo', market, count(*), 0 FROM bbo GROUP BY ALL ORDER BY ALL").fetchall()
    t0, t1, _ = tob_grid(root)
    for market in MARKETS:
        for t in sorted(book_instants(root, market))[::3]:
            out[f"book_at {market} {t}"] = sql_book_at(con, market, t, 20)
        out[f"tob {market}"] = con.execute(f"SELECT * FROM top_of_book('{market}', '{SYM}', {ts_sql(t0)}, "
                                           f"{ts_sql(t1)}, INTERVAL '100 milliseconds')").fetchall()
    out["basis"] = con.execute(f"SELECT * FROM basis('{SYM}', {ts_sql(t0)}, {ts_sql(t1)}, "
                               "INTERVAL '100 milliseconds')").fetchall()
    return out


def test_compact_preserves_rows_and_views_and_reports_bytes(recordings: dict[str, Path], copy_of: Any) -> None:
    root = copy_of(recordings["faulty"])
    before = partitions(root)
    sizes = {folder: (len(files), sum(f.stat().st_size for f in files)) for folder, files in before.items()}
    rows, views = dataset_rows(root), view_results(root)
    assert max(len(files) for files in before.values()) >= 4, "rotated every second"

    results = compact(root, None, today=FAR_FUTURE)

    after = partitions(root)
    assert set(after) == set(before)
    assert all(len(files) == 1 for files in after.values()), {str(k): len(v) for k, v in after.items()}
    assert not (root / STAGING).exists()
    assert sorted_rows(dataset_rows(root)) == sorted_rows(rows), "the multiset of rows is exactly preserved"
    assert view_results(root) == views, "every view and macro answers the same"
    assert {(r.table, r.partition) for r in results} == {(str(k.parts[0]), str(Path(*k.parts[1:]))) for k in before}
    for r in results:
        folder = Path(r.table, r.partition)
        files = before[folder]
        assert (r.files_before, r.bytes_before) == sizes[folder], r
        assert r.files_after == 1 and r.bytes_after == after[folder][0].stat().st_size, r
        assert r.rows == (pq.read_metadata(after[folder][0]).num_rows if len(files) > 1 else 0), r
        assert r.skipped == ("" if len(files) > 1 else "already one file"), r
    for folder, files in after.items():  # stream (msg) order is kept inside the merged book files
        if folder.parts[0] == "book":
            msg = pq.read_table(files[0], columns=["msg"])["msg"].to_pylist()
            assert msg == sorted(msg), folder
    assert all(r.ok for r in check(root)), "the compacted day still checks"


def test_compact_cli_refuses_todays_partitions(recordings: dict[str, Path], copy_of: Any) -> None:
    root = copy_of(recordings["faulty"])
    day = next(iter(partitions(root))).name.split("=", 1)[1]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    if day != today:
        pytest.skip("the recording was made on the previous UTC day (run across midnight)")
    states = file_states(root)
    refused, nothing, nothing_then = novas(("compact", "--data", str(root), "--date", day),
                                           ("compact", "--data", str(root)),
                                           ("compact", "--data", str(root), "--date", "1999-01-01"))
    assert "not a closed day" in one_sentence(refused)
    for proc in (nothing, nothing_then):  # nothing to do is not an error (cron)
        assert proc.returncode == 0 and "nothing to compact" in proc.stderr, proc.stderr
    assert file_states(root) == states, "nothing was touched"


def test_compact_cli_on_a_closed_day(recordings: dict[str, Path], tmp_path: Path) -> None:
    root = shifted_copy(recordings["faulty"], tmp_path / "closed", "2024-03-01", 3600)
    before = partitions(root)
    rows = dataset_rows(root)
    n_before, bytes_before = sum(map(len, before.values())), sum(p.stat().st_size for v in before.values() for p in v)
    proc = nova("compact", "--data", str(root), "--date", "2024-03-01")
    assert proc.returncode == 0, proc.stderr
    after = partitions(root)
    assert all(len(v) == 1 for v in after.values()) and set(after) == set(before)
    assert sorted_rows(dataset_rows(root)) == sorted_rows(rows)
    caption = re.search(r"(\d+) files, ([\d,]+) bytes -> (\d+) files, ([\d,]+) bytes", proc.stdout)
    assert caption, proc.stdout
    bytes_after = sum(p.stat().st_size for v in after.values() for p in v)
    assert (int(caption[1]), int(caption[2].replace(",", "")), int(caption[3]), int(caption[4].replace(",", ""))) \
        == (n_before, bytes_before, len(after), bytes_after)


# A compaction that SIGKILLs itself at a chosen point: just before or just after the n-th partition swap, or in the
# middle of writing the n-th merged file. Deterministic, so every run is interrupted where it hurts most.
KILLABLE = f"""
import os, signal, sys
from pathlib import Path
import pyarrow.parquet as pq
import nova.core.local_swap as c
root, phase, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
calls = {{"swap": 0, "write": 0}}
swap, write = c.exchange_paths, pq.ParquetWriter.write_table

def die(kind, when):
    if phase == when and calls[kind] == n:
        os.kill(os.getpid(), signal.SIGKILL)

def exchange(a, b):
    calls["swap"] += 1
    die("swap", "before")
    swap(a, b)
    die("swap", "after")

def write_table(self, *args, **kwargs):
    calls["write"] += 1
    write(self, *args, **kwargs)
    die("write", "write")

c.exchange_paths, pq.ParquetWriter.write_table = exchange, write_table
print("ready", flush=True)
from nova.analysis.compact import compact
compact(root, None, today="{FAR_FUTURE}")
"""


def bigger_copy(src: Path, dst: Path, days: int) -> Path:
    """The recording's partitions copied under ``days`` closed dates (more partitions to kill compaction in)."""
    for folder in partitions(src):
        for k in range(days):
            shutil.copytree(src / folder, dst / folder.parent / f"date=2024-01-{k + 1:02d}")
    return dst


def plain(table: pa.Table) -> pa.Table:
    """Dictionary columns as plain strings, so that tables written by different writers compare by value."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table[field.name].cast(pa.string()))
    return table


@pytest.mark.slow
def test_interrupted_compaction_leaves_a_consistent_dataset(recordings: dict[str, Path], tmp_path: Path) -> None:
    """SIGKILL a compaction subprocess at random moments (fixed seed), resuming each time: after every kill each
    partition shows exactly its old files (untouched) or one merged file holding exactly their rows."""
    root = bigger_copy(recordings["faulty"], tmp_path / "big", days=12)
    stat = {p: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) for p in visible_parquet(root)}
    old = {folder: sorted(p.name for p in files) for folder, files in partitions(root).items()}
    rows = {folder: plain(pa.concat_tables([pq.read_table(p) for p in files]))
            for folder, files in partitions(root).items()}  # every file read once, in name (stream) order
    counts = {t: sum(v.num_rows for k, v in rows.items() if k.parts[0] == t) for t in RECORDED_TABLES}
    merged: set[Path] = set()

    def consistent() -> None:
        now = partitions(root)
        assert set(now) == set(old), "no partition vanished or appeared"
        for folder, files in now.items():
            if [p.name for p in files] == old[folder]:
                assert all((p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) == stat[p] for p in files)
                continue
            assert len(files) == 1 and files[0].name not in old[folder], (folder, "old files or the merged one",
                                                                          [p.name for p in files])
            if files[0] not in merged:
                assert plain(pq.read_table(files[0])).equals(rows[folder]), (folder, "the merged rows differ")
                merged.add(files[0])
        con = connect(root)
        assert {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in RECORDED_TABLES} == counts

    interrupted = 0
    for phase, n in (("after", 1), ("write", 2), ("before", 2), ("after", 2), ("write", 1), ("before", 1)):
        proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(root), phase, str(n)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        interrupted += proc.wait(60) == -signal.SIGKILL
        proc.stdout.close()
        consistent()
    assert interrupted == 6, "every run died where it was told to"
    assert 0 < len(merged) < len(old), "the kills left a half-compacted dataset"
    assert (root / STAGING).exists(), "a killed run leaves its staging folder"
    compact(root, None, today=FAR_FUTURE)
    assert not (root / STAGING).exists()
    assert all(len(files) == 1 for files in partitions(root).values())
    consistent()
    assert len(merged) == sum(len(files) > 1 for files in old.values()), "every partition of several files"


# ---- 4. bad input through the CLI ----------------------------------------------------------------------------------

def test_bad_sql_is_one_sentence(recordings: dict[str, Path]) -> None:
    data = str(recordings["clean"])
    typo, column, view, empty = novas(("sql", "--data", data, "SELEC count(*) FROM book"),
                                      ("sql", "--data", data, "SELECT no_such_column FROM book"),
                                      ("sql", "--data", data, "SELECT * FROM no_such_view"),
                                      ("sql", "--data", data, ""))
    assert "does not parse" in one_sentence(typo)
    assert "query failed" in one_sentence(column) and "no_such_column" in one_sentence(column)
    assert "query failed" in one_sentence(view) and "no_such_view" in one_sentence(view)
    one_sentence(empty)


def test_write_statements_are_refused(recordings: dict[str, Path], copy_of: Any, tmp_path: Path) -> None:
    root = copy_of(recordings["clean"])
    states = file_states(root)
    some_file = visible_parquet(root)[0]
    out = tmp_path / "exported.csv"
    writes = (f"COPY book TO '{out}'", f"COPY (SELECT 1) TO '{root}/book/x.parquet' (FORMAT parquet)",
              "CREATE TABLE t AS SELECT * FROM book", "INSERT INTO book SELECT * FROM book",
              "SELECT 1; CREATE VIEW v AS SELECT 1")
    # Settings that would make DuckDB write files (its query log over a recorded file, a profile) are refused too.
    settings = (f"SET log_query_path = '{some_file}'; SELECT count(*) FROM events",
                f"PRAGMA enable_profiling = 'json'; PRAGMA profiling_output = '{root}/book/profile.json'; "
                "SELECT count(*) FROM book")
    procs = novas(*(("sql", "--data", str(root), statement) for statement in (*writes, *settings)))
    for statement, proc in zip(writes, procs, strict=False):
        assert "read-only" in one_sentence(proc), statement
    for statement, proc in zip(settings, procs[len(writes):], strict=True):
        assert "locked" in one_sentence(proc), statement
    assert not out.exists()
    assert file_states(root) == states, "the dataset is byte for byte untouched"
    assert all(r.ok for r in check(root))


def test_empty_or_missing_data_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "book").mkdir()
    missing = tmp_path / "missing"
    calls = [("sql", "--data", str(empty), "SELECT 1"), ("check", "--data", str(empty)),
             ("compact", "--data", str(missing)), ("sql", "--data", str(missing), "SELECT 1"),
             ("ls", "--data", str(empty)), ("ls", "--data", str(missing)), ("compact", "--data", str(empty))]
    *failing, nothing = novas(*calls)
    for call, proc in zip(calls, failing, strict=False):
        assert call[2] in one_sentence(proc), call
    assert nothing.returncode == 0 and "nothing to compact" in nothing.stderr, nothing.stderr


def test_a_date_with_no_data(recordings: dict[str, Path]) -> None:
    no_day, no_symbol = novas(("check", "--data", str(recordings["clean"]), "--date", "1999-01-01"),
                              ("check", "--data", str(recordings["clean"]), "--symbol", "BTC/USDT", "--json"))
    assert "1999-01-01" in one_sentence(no_day)
    assert "BTC-USDT" in one_sentence(no_symbol)


def test_parquet_output_needs_a_file(recordings: dict[str, Path], tmp_path: Path) -> None:
    data = str(recordings["clean"])
    out = tmp_path / "counts.parquet"
    no_output, bad_format, proc = novas(("sql", "--data", data, "--format", "parquet", "SELECT 1"),
                                        ("sql", "--data", data, "--format", "xlsx", "SELECT 1"),
                                        ("sql", "--data", data, "--format", "parquet", "--output", str(out),
                                         "SELECT market, count(*) AS n FROM bbo GROUP BY market ORDER BY market"))
    assert "--output" in one_sentence(no_output)
    assert "--format" in one_sentence(bad_format)
    assert proc.returncode == 0, proc.stderr
    want = [{"market": m, "n": len(read_table(recordings["clean"], "bbo", m))} for m in ("perp", "spot")]
    assert pq.read_table(out).to_pylist() == want
