"""Many symbols and days at once: ``nova replay --symbols`` on a process pool, a local Dask cluster and an object
store, and ``nova scan``'s ranking, each checked against replaying the pieces one by one.

The dataset: ETH/USDT around one midnight, BTC/USDT around the same midnight (a funding settlement at it) and
again two days later (perp below spot), all crafted (tests.helpers.write_midnight_dataset): six pieces, a
perp gap in each, books that must carry across each midnight.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pytest

from nova.core.dataset import Dataset
from nova.core.errors import NovaError
from nova.core.markets import Symbol
from replay import Replay
from replay.pieces import ALL, Piece, PieceOptions, plan, run_pieces
from replay.plan import DAY_NS, date_ns
from replay.scan import scan
from tests.helpers import AFTER, BEFORE, nova, ok, one_sentence, write_midnight_dataset
from tests.s3server import S3Server

BTC = Symbol("BTC", "USDT")
LAST = "2026-11-27"
PIECES = [Piece("BTC/USDT", d) for d in ("2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27")] + [
    Piece("ETH/USDT", d) for d in (BEFORE, AFTER)]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pieces") / "data"
    write_midnight_dataset(root)
    write_midnight_dataset(root, BTC, premium=3.0, settle_at_midnight=True)
    write_midnight_dataset(root, BTC, days=2, premium=-2.0)
    return root


def fresh(source: Path, tmp_path: Path, name: str = "data") -> Path:
    root = tmp_path / name
    shutil.copytree(source, root)
    return root


def stored(root: str | Path, piece: Piece) -> pa.Table:
    """The spread series a piece left in the dataset (exactly one file)."""
    data = Dataset(str(root))
    files = data.files(data.spread_partition(Symbol.parse(piece.symbol), piece.date))
    assert len(files) == 1, files
    return data.read_table(files[0][0])


@pytest.fixture(scope="module")
def alone(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[Piece, pa.Table]:
    """Each piece replayed on its own, in this process: what every way of running a batch must give."""
    root = fresh(source, tmp_path_factory.mktemp("alone"))
    out = {}
    for piece in PIECES:
        Replay(str(root), piece.symbol, piece.date).run(write=True)
        out[piece] = stored(root, piece)
    return out


def test_the_plan_names_every_piece_and_refuses_what_is_not_there(source: Path) -> None:
    assert plan(str(source), ALL, BEFORE, LAST).pieces == sorted(PIECES)
    assert plan(str(source), "eth-usdt", BEFORE, LAST).pieces == [p for p in PIECES if p.symbol == "ETH/USDT"]
    assert plan(str(source), "ETH/USDT,BTC/USDT").pieces == [Piece("BTC/USDT", LAST), Piece("ETH/USDT", AFTER)]
    later = plan(str(source), ALL, "2026-11-26", LAST)
    assert later.pieces == [Piece("BTC/USDT", "2026-11-26"), Piece("BTC/USDT", LAST)]
    assert any(n.startswith("ETH/USDT: nothing recorded") for n in later.notes)
    with pytest.raises(NovaError, match=r"XRP/USDT, DOGE/USDT are not recorded under .*; recorded symbols: "
                                        r"BTC/USDT, ETH/USDT"):
        plan(str(source), "ETH/USDT,XRP/USDT,DOGE/USDT", BEFORE)
    with pytest.raises(NovaError, match=r"nothing of BTC/USDT, ETH/USDT is recorded on both markets on "
                                        r"2026-12-01\.\.2026-12-03"):
        plan(str(source), ALL, "2026-12-01", "2026-12-03")


def test_a_process_pool_gives_each_piece_exactly_what_replaying_it_alone_gives(
        source: Path, alone: dict[Piece, pa.Table], tmp_path: Path) -> None:
    root = fresh(source, tmp_path)
    text = ok(nova("replay", "--symbols", "all", "--date", BEFORE, "--until", LAST, "--workers", "2", "--data",
                   str(root)))
    for piece in PIECES:
        assert stored(root, piece).equals(alone[piece]), piece
        assert f"{piece.symbol} │ {piece.date}" in text
    assert "│ total    │ 6 of 6 pieces" in text


def test_books_carry_across_midnight_as_in_one_multi_day_replay(source: Path, alone: dict[Piece, pa.Table],
                                                                 tmp_path: Path) -> None:
    """The spread partition of each date of one BEFORE..LAST replay equals the piece of that date."""
    root = fresh(source, tmp_path)
    Replay(str(root), "BTC/USDT", BEFORE, until=LAST).run(write=True)
    for piece in (p for p in PIECES if p.symbol == "BTC/USDT"):
        assert stored(root, piece).equals(alone[piece]), piece


@pytest.mark.slow
def test_a_local_dask_cluster_gives_what_one_process_gives(source: Path, alone: dict[Piece, pa.Table],
                                                           tmp_path: Path) -> None:
    from distributed import LocalCluster

    root = fresh(source, tmp_path)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        done: list[str] = []
        results = run_pieces(str(root), PIECES, PieceOptions(), scheduler=cluster.scheduler_address,
                             on_done=lambda r, i, n: done.append(f"{i}/{n}"))
    assert [r.piece for r in results] == PIECES and all(r.ok for r in results)
    assert done == [f"{i}/6" for i in range(1, 7)]
    for piece in PIECES:
        assert stored(root, piece).equals(alone[piece]), piece


@pytest.mark.slow
def test_pieces_on_an_object_store(source: Path, alone: dict[Piece, pa.Table], s3_server: S3Server,
                                   s3_root: str) -> None:
    pafs.copy_files(str(source), s3_root.removeprefix("s3://"), source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3_server.filesystem())
    results = run_pieces(s3_root, PIECES, PieceOptions(), workers=2)
    assert all(r.ok for r in results), [r.error for r in results]
    for piece in PIECES:
        assert stored(s3_root, piece).equals(alone[piece]), piece
    ranking = scan(s3_root, ALL, BEFORE, LAST).table
    assert ranking.num_rows == 6 and not any(ranking.column("replayed").to_pylist())


def test_a_failing_piece_is_named_and_the_others_are_written(source: Path, alone: dict[Piece, pa.Table],
                                                             tmp_path: Path) -> None:
    root = fresh(source, tmp_path)
    data = Dataset(str(root))
    victim = data.files(data.partition("book", "perp", BTC, "2026-11-26"))[0][0]
    Path(victim).write_bytes(Path(victim).read_bytes()[:100])  # torn: no footer
    proc = nova("replay", "--symbols", "BTC/USDT", "--date", "2026-11-25", "--until", LAST, "--workers", "2",
                "--data", str(root))
    assert proc.returncode == 1
    for date in ("2026-11-26", LAST):  # the 27th warms its books up from the 26th's last snapshot: that file
        assert f"error: BTC/USDT {date}: cannot read {victim}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert stored(root, Piece("BTC/USDT", "2026-11-25")).equals(alone[Piece("BTC/USDT", "2026-11-25")])


@pytest.mark.parametrize(("args", "says"), [
    (["--symbols", "ETH/USDT,XRP/USDT"], "XRP/USDT is not recorded under"),
    (["--symbols", "all", "--date", "2026-12-01", "--until", "2026-12-02"], "is recorded on both markets on "
                                                                           "2026-12-01..2026-12-02"),
    (["--symbols", "all", "--workers", "0"], "--workers"),
    (["--symbols", "all", "--out", "x.parquet"], "--out applies to one symbol's range"),
    (["--symbols", "all", "--start", "10:00"], "--start applies to one symbol's range"),
    (["--symbols", "all", "--speed", "1"], "--speed applies to one symbol's range"),
    (["--symbols", "ETH/USDT", "--symbol", "BTC/USDT"], "--symbol applies to one symbol's range"),
    (["--symbols", "ETH/USDT", "--fee-spot", "-1"], "--fee-spot"),
    (["--symbols", "all", "--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler at "
                                                              "tcp://127.0.0.1:9"),
])
def test_bad_batch_input_is_one_sentence_and_writes_nothing(source: Path, args: list[str], says: str) -> None:
    proc = nova("replay", "--data", str(source), *args)
    assert proc.returncode != 0
    assert says in one_sentence(proc)
    assert not (source / "spread").exists()


# ---- nova scan ----------------------------------------------------------------------------------------------------

def time_weighted(table: pa.Table, until: int) -> dict[str, float]:
    """An independent reading of a stored series: each valid reading lasts until the next (the last one
    until ``until``); quantiles by sorting the readings' basis with their durations."""
    ts = table.column("ts").cast(pa.int64()).to_pylist()
    lasted = [b - a for a, b in zip(ts, [*ts[1:], until], strict=True)]
    valid = table.column("valid").to_pylist()
    basis = table.column("basis_bps").to_pylist()
    pairs = sorted((b, d) for b, d, v in zip(basis, lasted, valid, strict=True) if v and b is not None)
    weights = np.cumsum([d for _, d in pairs])
    def quantile(q: float) -> float:
        return pairs[int(np.searchsorted(weights, q * weights[-1]))][0]
    return {"valid_ns": sum(d for d, v in zip(lasted, valid, strict=True) if v),
            "mean": sum(b * d for b, d in pairs) / weights[-1], "p5": quantile(0.05), "p95": quantile(0.95)}


@pytest.fixture(scope="module")
def scanned(source: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A scan of a dataset with no spread table: every piece is replayed on the way."""
    root = fresh(source, tmp_path_factory.mktemp("scan"))
    result = scan(str(root), ALL, BEFORE, LAST, threshold=-12.0, workers=2)
    return root, {(r["symbol"], r["date"]): r for r in result.table.to_pylist()}


def test_scan_replays_what_is_missing_and_then_reads_the_stored_series(scanned: tuple[Path, dict]) -> None:
    root, rows = scanned
    assert sorted(rows) == sorted((p.symbol, p.date) for p in PIECES)
    assert all(r["replayed"] for r in rows.values())
    again = scan(str(root), ALL, BEFORE, LAST, threshold=-12.0).table.to_pylist()
    assert not any(r["replayed"] for r in again)
    assert [{k: v for k, v in r.items() if k != "replayed"} for r in again] == \
        [{k: v for k, v in r.items() if k != "replayed"} for r in sorted(rows.values(), key=lambda r: (
            -r["minutes_above"], r["symbol"], r["date"]))]


def test_scan_figures_agree_with_replay_and_with_the_series(scanned: tuple[Path, dict]) -> None:
    root, rows = scanned
    for piece in PIECES:
        row = rows[(piece.symbol, piece.date)]
        summary = Replay(str(root), piece.symbol, piece.date, threshold=-12.0).summary()
        assert row["valid_minutes"] == pytest.approx(summary.valid_s / 60, abs=1e-3)
        assert row["basis_mean_bps"] == pytest.approx(summary.basis_time_mean_bps, abs=1e-3)
        assert row["minutes_above"] == pytest.approx(summary.opportunity_s / 60, abs=1e-3)
        series = stored(root, piece)
        end = min(summary.last_ns, date_ns(piece.date) + DAY_NS)
        mine = time_weighted(series, end)
        assert row["basis_p5_bps"] == pytest.approx(mine["p5"], abs=0.01)
        assert row["basis_p95_bps"] == pytest.approx(mine["p95"], abs=0.01)
        usable = pc.and_(series.column("valid"), pc.invert(series.column("stale")))
        best = pc.max(pc.filter(series.column("net_open_bps"), usable)).as_py()
        assert row["best_net_open_bps"] == pytest.approx(best, abs=1e-3)


def test_funding_counts_only_watched_settlements(scanned: tuple[Path, dict]) -> None:
    _, rows = scanned
    settled = rows[("BTC/USDT", AFTER)]  # at midnight, last rate 2 bps seen 1 s before; 08:00 nobody watched
    assert (settled["funding_bps"], settled["settlements"], settled["settlements_missed"]) == (2.0, 2, 1)
    assert rows[("ETH/USDT", AFTER)]["funding_bps"] == 0.0 and rows[("ETH/USDT", AFTER)]["settlements_missed"] == 1
    assert rows[("BTC/USDT", BEFORE)]["settlements"] == 0


def test_other_fees_need_no_replay_and_move_every_entry_by_the_difference(scanned: tuple[Path, dict]) -> None:
    root, rows = scanned
    cheaper = {(r["symbol"], r["date"]): r for r in scan(str(root), ALL, BEFORE, LAST, fee_spot=7.0,
                                                            fee_perp=3.0).table.to_pylist()}
    for key, row in rows.items():
        assert not cheaper[key]["replayed"]
        assert cheaper[key]["best_net_open_bps"] == pytest.approx(row["best_net_open_bps"] + 5.0, abs=1e-3)


def test_scan_by_symbol_adds_the_days_up(scanned: tuple[Path, dict]) -> None:
    root, rows = scanned
    per_symbol = {r["symbol"]: r for r in scan(str(root), ALL, BEFORE, LAST, threshold=-12.0,
                                               by="symbol").table.to_pylist()}
    btc = [r for (s, _), r in rows.items() if s == "BTC/USDT"]
    assert per_symbol["BTC/USDT"]["date"] == f"{BEFORE}..{LAST}"
    assert per_symbol["BTC/USDT"]["minutes_above"] == pytest.approx(sum(r["minutes_above"] for r in btc), abs=1e-3)
    assert per_symbol["BTC/USDT"]["best_net_open_bps"] == max(r["best_net_open_bps"] for r in btc)
    weighted = sum(r["basis_mean_bps"] * r["valid_minutes"] for r in btc) / sum(r["valid_minutes"] for r in btc)
    assert per_symbol["BTC/USDT"]["basis_mean_bps"] == pytest.approx(weighted, abs=1e-3)
    assert per_symbol["BTC/USDT"]["funding_bps"] == 2.0


def test_scan_cli_writes_csv_and_json_and_refuses_bad_input(scanned: tuple[Path, dict], tmp_path: Path) -> None:
    root, rows = scanned
    out = tmp_path / "ranking.csv"
    ok(nova("scan", "--data", str(root), "--date", BEFORE, "--until", LAST, "--threshold", "-12", "--output",
            str(out)))
    parsed = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["symbol"], r["date"]) for r in parsed][:1] == [max(
        rows, key=lambda k: (rows[k]["minutes_above"], [-ord(c) for c in k[0] + k[1]]))]
    assert len(parsed) == 6
    lines = ok(nova("scan", "--data", str(root), "--date", BEFORE, "--until", LAST, "--by", "symbol", "--sort",
                    "funding_bps", "--format", "json")).splitlines()
    assert [json.loads(line)["symbol"] for line in lines] == ["BTC/USDT", "ETH/USDT"]
    for args, says in ((["--symbols", "ETH/USDT,XRP/USDT"], "XRP/USDT is not recorded"),
                       (["--date", "2026-12-01"], "is recorded on both markets on 2026-12-01"),
                       (["--workers", "0"], "--workers"), (["--sort", "money"], "--sort")):
        proc = nova("scan", "--data", str(root), *args)
        assert proc.returncode != 0 and says in one_sentence(proc), (args, proc.stderr)


def test_scan_counts_no_time_nobody_watched(scanned: tuple[Path, dict]) -> None:
    """Each crafted piece covers 20 s of its day: a scan never counts more, whatever the day's length."""
    _, rows = scanned
    for row in rows.values():
        assert 0 < row["valid_minutes"] <= 20 / 60 + 1e-9
        assert not math.isnan(row["basis_mean_bps"])
