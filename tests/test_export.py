"""``nova export snapshots``: books on a time grid, held to an independent rebuild, to ``book_at`` and to the CLI.

The dataset is tests.helpers.write_midnight_dataset: both markets from 20 s before to 20 s after UTC midnight of
2026-11-25, a diff every 100 ms (so every message lands exactly on a grid instant of the 100 ms grid, and "at t"
is tested at its edge), a ledgered gap with a resync snapshot on perp, and no ``stop`` (a run that ends at its
last row). The oracle below rebuilds the books with tests/oracle.py's plain reader rule and judges validity from
the ledger written out here; it shares nothing with replay or nova.core.validity.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from nova.analysis.sql import connect
from replay import SnapshotExport, SnapshotSummary, export_snapshots
from replay.snapshots import ExportInterrupted
from tests.helpers import (
    AFTER,
    BEFORE,
    MIDNIGHT,
    file_states,
    nova,
    novas,
    ok,
    one_sentence,
    ts_sql,
    write_midnight_dataset,
)
from tests.oracle import read_table, rebuild_from_rows
from tests.s3server import S3Server

LEVELS = 4
STEP = 100_000_000
DAY = 86_400 * 10**9
SECOND = 10**9
BREAKS = {"gap", "disconnect", "stop", "start"}  # on the book stream: not valid until the next snapshot


def snapshot_file(root: Path, market: str, date: str, name: str = f"snapshot_{LEVELS}_100ms.parquet") -> Path:
    return root / "snapshots" / "exchange=binance" / f"market={market}" / "symbol=ETH-USDT" / f"date={date}" / name


@pytest.fixture(scope="module")
def midnight(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SnapshotSummary]:
    root = tmp_path_factory.mktemp("export") / "data"
    write_midnight_dataset(root)
    summary = export_snapshots(str(root), "ETH/USDT", BEFORE, AFTER, levels=LEVELS, every="100ms")
    return root, summary


# ---- the oracle ------------------------------------------------------------------------------------------------------

@dataclass
class State:
    """The book after one applied message."""

    key: int  # when it took effect: the running maximum of receive times, as the contract's readers order it
    last_id: int
    snapshot_key: int  # when its snapshot took effect
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]


def oracle_states(root: Path, market: str) -> list[State]:
    """Every applied message's book, by tests/oracle.py's reader rule (a message before the first snapshot, or a
    stale one, is not applied)."""
    states: list[State] = []
    key = -(2**63)
    snapshot_key: int | None = None
    for first, bids, asks in rebuild_from_rows(read_table(root, "book", market)):
        key = max(key, first["ts_recv"])
        if first["stale"] or (snapshot_key is None and not first["snapshot"]):
            continue
        if first["snapshot"]:
            snapshot_key = key
        assert snapshot_key is not None
        states.append(State(key, first["last_id"], snapshot_key, sorted(bids.items(), reverse=True)[:LEVELS],
                            sorted(asks.items())[:LEVELS]))
    return states


def oracle_breaks(root: Path, market: str) -> list[tuple[int, str]]:
    """The book's breaks from the ledger, and the end of the run (it has no stop: nothing after its last row)."""
    ledger = read_table(root, "events", market)
    found = [(e["ts_recv"], e["kind"]) for e in ledger if e["stream"] == "book" and e["kind"] in BREAKS]
    if not any(kind == "stop" for _, kind in found):
        found.append((max(r["ts_recv"] for r in read_table(root, "book", market)) + 1, "end of data"))
    return sorted(found)


def oracle_at(states: list[State], breaks: list[tuple[int, str]], t: int) -> tuple[State | None, bool]:
    """The book in effect at t (every message that took effect by t) and whether it is valid."""
    keys = [s.key for s in states]
    i = int(np.searchsorted(keys, t, side="right")) - 1
    if i < 0:
        return None, False
    state = states[i]
    return state, not any(state.snapshot_key <= ts <= t for ts, _ in breaks)


def read(path: Path | str, filesystem: pafs.FileSystem | None = None) -> pa.Table:
    """A snapshot file with its times as int ns (exact, unlike datetime objects or floats)."""
    table = pq.read_table(path, filesystem=filesystem)
    for name in ("ts", "ts_recv"):
        table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(pa.int64()))
    return table


def ints(column: pa.ChunkedArray, missing: int = -(2**63)) -> np.ndarray:
    return pc.fill_null(column, missing).to_numpy()


def level_columns(table: pa.Table) -> list[str]:
    return [n for n in table.column_names if n.startswith(("bid", "ask"))]


def row_levels(table: pa.Table, i: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    row = table.slice(i, 1).to_pylist()[0]
    bids = [(row[f"bid{k}_price"], row[f"bid{k}_amount"]) for k in range(LEVELS) if row[f"bid{k}_price"] is not None]
    asks = [(row[f"ask{k}_price"], row[f"ask{k}_amount"]) for k in range(LEVELS) if row[f"ask{k}_price"] is not None]
    return bids, asks


# ---- the snapshots against the oracle --------------------------------------------------------------------------------

@pytest.mark.parametrize("market", ["spot", "perp"])
def test_every_snapshot_equals_an_independent_rebuild_at_its_instant(midnight: tuple[Path, SnapshotSummary],
                                                                      market: str) -> None:
    root, _ = midnight
    states, breaks = oracle_states(root, market), oracle_breaks(root, market)
    checked_valid = 0
    for date in (BEFORE, AFTER):
        table = read(snapshot_file(root, market, date))
        day = MIDNIGHT - DAY if date == BEFORE else MIDNIGHT
        ts = ints(table.column("ts"))
        assert np.array_equal(ts, day + STEP * np.arange(DAY // STEP)), "one row per instant, aligned to midnight"
        valid = table.column("valid").to_numpy(zero_copy_only=False)
        recv, last_id = ints(table.column("ts_recv")), ints(table.column("last_id"))
        keys = np.array([s.key for s in states])
        at = np.searchsorted(keys, ts, side="right") - 1
        known = at >= 0
        assert np.array_equal(recv != -(2**63), known), "ts_recv is null before the first applied message"
        assert np.array_equal(recv[known], keys[at[known]]), "ts_recv: the last message in effect"
        assert np.array_equal(last_id[known], np.array([s.last_id for s in states])[at[known]])
        # validity at every instant; the instants where anything happens (or may) row by row
        busy = np.flatnonzero(known & (ts <= keys[-1] + 10 * STEP))
        for i in busy:
            state, want = oracle_at(states, breaks, int(ts[i]))
            assert bool(valid[i]) == want, (market, date, int(ts[i]) - MIDNIGHT)
            bids, asks = row_levels(table, int(i))
            if want:
                assert state is not None and (bids, asks) == (state.bids, state.asks), int(ts[i]) - MIDNIGHT
                checked_valid += 1
            else:
                assert (bids, asks) == ([], []), "no levels where the book is not valid"
        quiet = np.ones(len(ts), dtype=bool)
        quiet[busy] = False
        assert not valid[quiet].any(), "before the data and after its end nothing is valid"
        rest = table.filter(pa.array(quiet))
        assert all(rest.column(c).null_count == rest.num_rows for c in level_columns(rest))
        reasons = pc.unique(rest.column("reason")).to_pylist()
        assert all(r.startswith(("no snapshot of this book", "nothing was recorded after")) for r in reasons), reasons
    assert checked_valid >= 390


def test_validity_across_the_perp_gap_and_the_end_of_the_run(midnight: tuple[Path, SnapshotSummary]) -> None:
    root, summary = midnight
    table = read(snapshot_file(root, "perp", BEFORE)).select(["ts", "valid", "reason", "bid0_price"])
    rows = {r["ts"] - MIDNIGHT: r for r in table.slice(DAY // STEP - 210).to_pylist()}
    gap = -9_900_000_000  # the ledgered gap; the resync snapshot follows 50 ms later
    assert not rows[gap]["valid"] and rows[gap]["bid0_price"] is None
    assert rows[gap]["reason"].endswith("(gap at 2026-11-24 23:59:50.100000 UTC)")
    assert rows[gap - STEP]["valid"] and rows[gap + STEP]["valid"]
    after = pq.read_table(snapshot_file(root, "spot", AFTER)).slice(200, 2).to_pylist()  # +20.0 s, +20.1 s
    assert after[0]["valid"] and not after[1]["valid"]
    assert after[1]["reason"].startswith("nothing was recorded after this run's last row (end of data at")
    assert summary.rows == 4 * DAY // STEP and summary.valid_rows == 200 + 199 + 201 + 201
    assert sorted((f.market, f.date) for f in summary.files) == [(m, d) for m in ("perp", "spot")
                                                                  for d in (BEFORE, AFTER)]


def test_the_second_date_starts_with_the_books_carried_from_the_first(midnight: tuple[Path, SnapshotSummary],
                                                                      tmp_path: Path) -> None:
    root, _ = midnight
    alone = tmp_path / "alone"
    shutil.copytree(root, alone, ignore=shutil.ignore_patterns("snapshots"))
    summary = export_snapshots(str(alone), "ETH/USDT", AFTER, levels=LEVELS, every="100ms")
    assert summary.dates == [AFTER] and len(summary.files) == 2
    for market in ("spot", "perp"):
        one = read(snapshot_file(alone, market, AFTER))
        both = read(snapshot_file(root, market, AFTER))
        assert one.equals(both), "a date exported alone equals the same date of a longer export"
        first = one.slice(0, 1).to_pylist()[0]
        assert first["valid"] and first["bid0_price"] is not None, "valid at once: the snapshot came the day before"
        assert first["ts_recv"] == MIDNIGHT, "the message received at midnight counts at midnight"


def test_an_instant_is_what_book_at_says(midnight: tuple[Path, SnapshotSummary]) -> None:
    """The same instant through the export and through nova sql's book_at: which messages count (those received
    by t, t included), validity and the reason, and the levels."""
    root, _ = midnight
    con = connect(root)
    try:
        for market, offset_ms in (("perp", -20_100), ("perp", -20_000), ("perp", -10_000), ("perp", -9_900),
                                  ("perp", -9_800), ("perp", -100), ("spot", 0), ("perp", 0), ("spot", 20_000),
                                  ("spot", 20_100), ("perp", 3_600_000)):
            t = MIDNIGHT + offset_ms * 10**6
            date = BEFORE if t < MIDNIGHT else AFTER
            day = MIDNIGHT - DAY if t < MIDNIGHT else MIDNIGHT
            table = read(snapshot_file(root, market, date))
            row = table.slice((t - day) // STEP, 1).to_pylist()[0]
            assert row["ts"] == t
            macro = con.sql(f"SELECT side, level, price, amount, valid, reason FROM book_at('{market}', 'ETH/USDT', "
                            f"{ts_sql(t)}, {LEVELS})").fetchall()
            assert row["valid"] == macro[0][4], (market, offset_ms)
            if not row["valid"]:
                assert row["reason"] == macro[0][5], (market, offset_ms)
                continue
            bids = [(p, a) for side, _, p, a, *_ in macro if side == "bid"]
            asks = [(p, a) for side, _, p, a, *_ in macro if side == "ask"]
            assert row_levels(table, (t - day) // STEP) == (bids, asks), (market, offset_ms)
    finally:
        con.close()


def test_an_object_store_root_gets_the_same_snapshots(midnight: tuple[Path, SnapshotSummary], s3_server: S3Server,
                                                      s3_root: str) -> None:
    """On an s3:// root (a real S3-compatible server), a 1 s grid: every tenth instant of the local 100 ms grid."""
    root, fs = midnight[0], s3_server.filesystem()
    for table in ("book", "bbo", "funding", "events"):
        pafs.copy_files(str(root / table), f"{s3_root.removeprefix('s3://')}/{table}",
                        source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    summary = export_snapshots(s3_root, "ETH/USDT", AFTER, levels=LEVELS, every="1s")
    assert [(f.market, f.rows) for f in summary.files] == [("perp", DAY // SECOND), ("spot", DAY // SECOND)]
    for f in summary.files:
        stored = read(f.path, fs).drop_columns(["shape"])
        local = read(snapshot_file(root, f.market, AFTER)).drop_columns(["shape"])
        assert stored.equals(local.take(pa.array(np.arange(0, local.num_rows, 10)))), f.market
    selector = pafs.FileSelector(s3_root.removeprefix("s3://"), recursive=True)
    names = [i.base_name for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]
    assert not [n for n in names if n.startswith(".")], "no temporary object is left behind"


def test_an_interrupted_export_leaves_the_previous_files_as_they_were(midnight: tuple[Path, SnapshotSummary],
                                                                       tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(midnight[0], root)
    before = file_states(root)
    job = SnapshotExport(str(root), "ETH/USDT", BEFORE, AFTER, levels=LEVELS, every="100ms")
    with pytest.raises(ExportInterrupted, match="nothing was written"):
        job.run(stop=lambda: True)
    assert file_states(root) == before, "the stored shape is neither replaced nor half-written"


# ---- the command -----------------------------------------------------------------------------------------------------

def test_nova_export_snapshots_writes_replaces_and_sql_reads_it(midnight: tuple[Path, SnapshotSummary],
                                                                 tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(midnight[0], root, ignore=shutil.ignore_patterns("snapshots"))
    args = ("export", "snapshots", "--symbol", "ETH/USDT", "--date", AFTER, "--data", str(root))
    out = ok(nova(*args, "--levels", "3", "--every", "1s"))
    assert "snapshot_3_1s: 172,800 rows (42 valid) in 2 files" in out, out
    first = file_states(root / "snapshots")
    for proc in novas((*args, "--levels", "3", "--every", "1s", "-q"),  # again: the same file, replaced
                      (*args, "--levels", "2", "--every", "250ms", "--market", "perp", "-q")):  # another shape
        ok(proc)
    again = file_states(root / "snapshots")
    assert all(again[k][1] > first[k][1] for k in first)
    assert sorted(p.name for p in snapshot_file(root, "perp", AFTER).parent.iterdir()) == [
        "snapshot_2_250ms.parquet", "snapshot_3_1s.parquet"]
    assert not snapshot_file(root, "spot", AFTER, "snapshot_2_250ms.parquet").exists()
    sql = ("SELECT shape, market, count(*) AS n, count(*) FILTER (WHERE valid) AS v, "
           "min(ts) FILTER (WHERE valid) AS first_valid, max(bid1_price) AS best FROM snapshots "
           "GROUP BY ALL ORDER BY ALL")
    rows = ok(nova("sql", "--data", str(root), "--format", "csv", sql)).strip().splitlines()
    assert rows[0] == "shape,market,n,v,first_valid,best"
    assert [r.split(",")[:4] for r in rows[1:]] == [["snapshot_2_250ms", "perp", "345600", "81"],
                                                      ["snapshot_3_1s", "perp", "86400", "21"],
                                                      ["snapshot_3_1s", "spot", "86400", "21"]]
    assert all(r.split(",")[4].startswith("2026-11-25 00:00:00") for r in rows[1:]), rows


def test_bad_input_is_one_sentence_and_writes_nothing(midnight: tuple[Path, SnapshotSummary]) -> None:
    root = midnight[0]
    before = file_states(root)
    base = ("export", "snapshots", "--data", str(root))
    cases = {
        ("--symbol", "BTC/USDT"): "BTC/USDT has no order book recorded",
        ("--symbol", "ETH"): "'ETH' is not a symbol",
        ("--date", "2026-12-01"): "recorded dates: 2026-11-24, 2026-11-25",
        ("--levels", "0"): "--levels: 0 is out of range; use 1 to 1000",
        ("--levels", "1001"): "--levels: 1001 is out of range",
        ("--every", "0s"): "--every: duration must be a positive",
        ("--every", "soon"): "--every: 'soon' is not a duration",
        ("--every", "7s"): "divide a day",
    }
    results = novas(*((*base, *args) for args in cases))
    for (args, says), proc in zip(cases.items(), results, strict=True):
        assert says in one_sentence(proc), (args, proc.stderr)
    assert file_states(root) == before


@pytest.fixture
def read_only_copy(midnight: tuple[Path, SnapshotSummary], tmp_path: Path) -> Iterator[Path]:
    """The recording behind a read-only bind mount as root (root writes through permissions), else permissions."""
    copy = tmp_path / "archive"
    shutil.copytree(midnight[0], copy, ignore=shutil.ignore_patterns("snapshots"))
    if os.geteuid() != 0:
        for p in [copy, *copy.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        yield copy
        for p in [copy, *copy.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
        return
    view = tmp_path / "read-only"
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(copy), str(view)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here as root, and root ignores file permissions")
    subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
    try:
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def test_a_read_only_root_is_one_sentence(read_only_copy: Path) -> None:
    before = file_states(read_only_copy)
    proc = nova("export", "snapshots", "--data", str(read_only_copy), "--date", AFTER)
    assert "cannot export snapshots into" in one_sentence(proc) and "not writable" in proc.stderr
    assert file_states(read_only_copy) == before
