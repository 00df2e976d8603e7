"""``nova merge``: redundant recordings made one, by exchange ids (DESIGN §6 "Redundancy").

The proof (slow): two recorders of one venue into two roots, each stopped and restarted at a different moment,
so each alone has a stretch only the other watched; the merged recording has no break and no unwatched
stretch, and its books equal the venue's truth (at the end) and each source's book at every message the
source held valid. On crafted recordings: a copy merges to the identity (across midnight) and merging again
changes nothing, stale is recomputed on the merged chain, a disagreement needs --prefer, and every refusal is
one sentence and writes nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nova.analysis.check import check
from nova.analysis.merge import COVERED, merge
from nova.core.dataset import Dataset
from nova.venue import SyntheticSource, Venue, VenueConfig
from recorder.recorder import Recorder, RecorderConfig
from tests.helpers import (
    ETH,
    MARKETS,
    STREAMS,
    await_until,
    entries,
    ledger,
    nova,
    ok,
    one_sentence,
    rebuilt_equals_truth,
    write_midnight_dataset,
)
from tests.oracle import read_table

TABLES = ("book", "bbo", "trades", "funding", "instruments")


def rows_without_msg(root: Path, table: str, market: str) -> list[str]:
    """A table's rows as comparable text, ignoring msg (which the merge renumbers), in sorted order."""
    return sorted(str(sorted((k, v) for k, v in r.items() if k != "msg")) for r in read_table(root, table, market))


def same_rows(a: Path, b: Path, tables: tuple[str, ...] = TABLES) -> None:
    for table in tables:
        for market in MARKETS:
            assert rows_without_msg(a, table, market) == rows_without_msg(b, table, market), (table, market)


def files_of(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.parquet")}


# ---- crafted recordings (quick) ------------------------------------------------------------------------------------

@pytest.fixture
def crafted(tmp_path: Path) -> Path:
    root = tmp_path / "a"
    write_midnight_dataset(root)
    return root


def test_a_copy_merges_to_the_identity_across_midnight(crafted: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(crafted, copy)
    merge([str(crafted), str(copy)], str(tmp_path / "m"))
    same_rows(crafted, tmp_path / "m")
    for market in MARKETS:
        msgs = [r["msg"] for r in read_table(tmp_path / "m", "book", market)]
        assert msgs == sorted(msgs) and len(set(msgs)) == msgs[-1], "msg strictly increasing over both days"
    assert [r.ok for r in check(tmp_path / "m")] == [True] * len(check(tmp_path / "m"))
    assert sorted(r.table for r in check(tmp_path / "m") if r.breaks) == \
        sorted(r.table for r in check(crafted) if r.breaks), "the crafted gap every source has stays"
    before = files_of(tmp_path / "m")
    again = merge([str(crafted), str(copy)], str(tmp_path / "m"))
    assert not any(r.written for r in again) and files_of(tmp_path / "m") == before, "merging again: no change"
    merge([str(tmp_path / "m"), str(crafted)], str(tmp_path / "m2"))
    same_rows(tmp_path / "m", tmp_path / "m2", (*TABLES, "events"))


def test_stale_is_recomputed_on_the_merged_chain(crafted: Path, tmp_path: Path) -> None:
    """Diffs a source wrote stale (as after its own gap) are applied where the merged chain is continuous."""
    skipped = tmp_path / "skipped"
    shutil.copytree(crafted, skipped)

    def mark_stale(t: pa.Table) -> pa.Table:
        msg = t.column("msg").to_numpy()
        snapshot = t.column("snapshot").to_numpy(zero_copy_only=False)
        stale = t.column("stale").to_numpy(zero_copy_only=False) | ((msg >= 50) & (msg < 80) & ~snapshot)
        return t.set_column(t.schema.get_field_index("stale"), "stale", pa.array(stale, pa.bool_()))

    _edit(skipped, "book", "spot", mark_stale)
    assert sum(r["stale"] for r in read_table(skipped, "book", "spot")) > \
        sum(r["stale"] for r in read_table(crafted, "book", "spot"))
    merge([str(skipped)], str(tmp_path / "m"))
    assert rows_without_msg(tmp_path / "m", "book", "spot") == rows_without_msg(crafted, "book", "spot")


def _edit(root: Path, table: str, market: str, change: Any) -> None:
    """Rewrite every file of a table and market of a recording through ``change(pyarrow table)``."""
    for path in (root / table / "exchange=binance" / f"market={market}").rglob("*.parquet"):
        pq.write_table(change(pq.read_table(path)), path)


@pytest.mark.slow
def test_a_disagreement_needs_prefer(crafted: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(crafted, other)

    def bump(t: pa.Table) -> pa.Table:
        prices = t.column("bid_price").to_pylist()
        prices[3] = 1.0
        return t.set_column(t.schema.get_field_index("bid_price"), "bid_price", pa.array(prices, pa.float64()))

    _edit(other, "bbo", "spot", bump)
    dst = tmp_path / "m"
    line = one_sentence(nova("merge", str(crafted), str(other), "--into", str(dst)))
    assert "disagree on bbo update_id" in line and "--prefer" in line and str(other) in line, line
    assert not dst.exists(), "a refused merge writes nothing"
    ok(nova("merge", str(crafted), str(other), "--into", str(dst), "--prefer", str(other)))
    assert 1.0 in [r["bid_price"] for r in read_table(dst, "bbo", "spot")], "the preferred source won"
    assert len(read_table(dst, "bbo", "spot")) == len(read_table(crafted, "bbo", "spot"))


@pytest.mark.slow
def test_bad_input_is_one_sentence_and_writes_nothing(crafted: Path, tmp_path: Path) -> None:
    dst = tmp_path / "m"
    other_symbol = tmp_path / "btc"
    shutil.copytree(crafted, other_symbol)
    for folder in list(other_symbol.rglob("symbol=ETH-USDT")):
        folder.rename(folder.with_name("symbol=BTC-USDT"))
    other_venue = tmp_path / "elsewhere"
    shutil.copytree(crafted, other_venue)

    def from_source(name: str) -> Any:
        def change(t: pa.Table) -> pa.Table:
            starts = [kind == "start" for kind in t.column("kind").cast(pa.string()).to_pylist()]
            return t.set_column(t.schema.get_field_index("source"), "source",
                                pa.array([name if s else None for s in starts], pa.string()))
        return change

    for market in MARKETS:
        _edit(crafted, "events", market, from_source("venue one"))
        _edit(other_venue, "events", market, from_source("venue two"))
    cases = {
        "does not exist": ("merge", str(crafted), str(tmp_path / "nope"), "--into", str(dst)),
        "also one of the recordings": ("merge", str(crafted), "--into", str(crafted)),
        "only recordings of the same symbols": ("merge", str(crafted), str(other_symbol), "--into", str(dst)),
        "only recordings of the same venue": ("merge", str(crafted), str(other_venue), "--into", str(dst)),
        "is not one of the recordings": ("merge", str(crafted), "--into", str(dst), "--prefer", str(other_venue)),
    }
    for expected, args in cases.items():
        line = one_sentence(nova(*args))
        assert expected in line, (expected, line)
        assert not dst.exists(), expected


# ---- two live recorders (slow) -------------------------------------------------------------------------------------

async def _record_two(out: Path) -> dict[str, dict]:
    """Recorders a and b of one venue, each stopped and restarted while the other records; returns the truth."""
    venue = Venue(SyntheticSource([ETH], seed=5), VenueConfig())
    await venue.start()
    recorders: list[Recorder] = []

    def make(name: str) -> Recorder:
        rec = Recorder(RecorderConfig(symbols=[ETH], data=str(out / name), endpoint=venue.url, flush_s=0.2,
                                      tables=STREAMS["perp"], recorder_id=name))
        recorders.append(rec)
        return rec

    def live(rec: Recorder, since: int) -> bool:
        return all(s.states["ETHUSDT"].seq.live and s.states["ETHUSDT"].stats["book"].last_recv_ns > since
                   for s in rec.sessions.values())

    async def started(name: str) -> Recorder:
        since = time.time_ns()
        rec = make(name)
        await rec.start()
        await await_until(lambda: live(rec, since), lambda: f"{name} live")
        return rec

    try:
        a, b = await started("a"), await started("b")
        for name in ("a", "b"):  # each in turn is away for a second while the other records
            await asyncio.sleep(1.0)
            await (a if name == "a" else b).stop()
            await asyncio.sleep(1.0)
            if name == "a":
                a = await started("a")
            else:
                b = await started("b")
        await asyncio.sleep(1.0)
        venue.pause()
        for rec in (a, b):
            for market, session in rec.sessions.items():
                state = session.states["ETHUSDT"]
                truth_id = venue.truth(market, "ETHUSDT")["lastUpdateId"]
                await await_until(lambda s=state, t=truth_id: s.seq.last_id == t, lambda: "caught up")
        return {m: venue.truth(m, "ETHUSDT") for m in MARKETS}
    finally:
        for rec in recorders:
            await rec.stop()
        await venue.stop()


@pytest.fixture(scope="module")
def two_recorders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    out = tmp_path_factory.mktemp("redundant")
    truth = asyncio.run(_record_two(out))
    return out, truth


@pytest.mark.slow
def test_two_recorders_with_restarts_merge_without_gaps(two_recorders: tuple[Path, dict], tmp_path: Path) -> None:
    out, truth = two_recorders
    merged = tmp_path / "merged"
    ok(nova("merge", str(out / "a"), str(out / "b"), "--into", str(merged)))
    watched = {}
    for root in (out / "a", out / "b", merged):
        reports = check(root)
        assert all(r.ok for r in reports), [r.problems for r in reports]
        watched[root.name] = {r.market: r.watched_s for r in reports if r.table == "book"}
    for market in MARKETS:
        events = ledger(merged, market)
        assert not [e for e in events if e["kind"] in ("gap", "disconnect")], "no break and no unwatched time"
        assert len(entries(events, "snapshot", "book")) == 1, "one snapshot: the chain never broke"
        assert {e["recorder_id"] for e in entries(events, COVERED, "book")} == {"a", "b"}
        for source in ("a", "b"):
            alone = ledger(out / source, market)
            assert len(entries(alone, "start", "book")) == 2, "each source alone was away once"
            assert watched["merged"][market] > watched[source][market]
        spans = Dataset(merged).book_spans(market, "ETH-USDT")
        assert len(spans) == 1, spans
        tops = rebuilt_equals_truth(merged, market, truth[market])
        for source in ("a", "b"):
            theirs = rebuilt_equals_truth(out / source, market, truth[market])
            assert all(tops[u] == top for u, top in theirs.items() if u in tops), "same book at every message"
            snapshots = {r["last_id"] for r in read_table(out / source, "book", market) if r["snapshot"]}
            assert set(theirs) - set(tops) <= snapshots, "only snapshots the merged chain did not need are left"
        rows = read_table(merged, "book", market)
        ids = [r["last_id"] for r in rows if not r["stale"] and not r["snapshot"]]
        assert ids == sorted(ids), "one chain, in id order"
    ok(nova("replay", "--data", str(merged)))


@pytest.mark.slow
def test_merging_again_or_with_a_source_changes_nothing(two_recorders: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = two_recorders
    merged = tmp_path / "merged"
    merge([str(out / "a"), str(out / "b")], str(merged))
    before = files_of(merged)
    assert not any(r.written for r in merge([str(out / "b"), str(out / "a")], str(merged)))
    assert files_of(merged) == before
    merge([str(out / "b"), str(merged)], str(tmp_path / "again"))
    same_rows(merged, tmp_path / "again", (*TABLES, "events"))
    copy = tmp_path / "copy"
    shutil.copytree(out / "a", copy)
    merge([str(out / "a"), str(copy)], str(tmp_path / "identity"))
    same_rows(out / "a", tmp_path / "identity")
