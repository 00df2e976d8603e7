"""notebooks/spread_analysis.ipynb runs top to bottom on real recordings, draws holes as holes, and agrees with
`nova replay`.

The main recording: the venue plays the real ETHUSDT captures (spot and USDT-M, ~6 minutes) as fast as the
recorder reads them, in two recording runs with a hole between them: the playback is paused, the first run
stops, nobody records for a few seconds, a second run starts and the playback resumes. The real recorder
(ccxt.pro over real sockets) records book, bookTicker and trades (the captures have no markPrice, forceOrder or
openInterest: the notebook must cope). ``Replay`` then writes the spread table, as ``nova replay`` would, and the
notebook is executed by nbclient in a kernel of this interpreter (a kernel spec in a temporary folder; no network
beyond 127.0.0.1). A second, synthetic recording holds funding, liquidations and open interest, so every figure
is drawn from data.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from nova.analysis.sql import connect
from nova.venue import CaptureSource, SyntheticSource, Venue, VenueConfig, derivatives
from recorder.recorder import Recorder, RecorderConfig
from tests.helpers import ETH, REPO, realdata_file, wait_until_recorded
from tests.oracle import read_table

NOTEBOOK = REPO / "notebooks" / "spread_analysis.ipynb"
NEEDS_EXTRA = "the notebook tests need the test extra (pip install -e '.[test]')"
FIGURES = ("spread_main", "open_close_fee_band", "basis_distribution", "opportunity_windows", "funding",
           "liquidations_open_interest", "depth_profile")
HOLE_S = 3.0
pytestmark = pytest.mark.timeout(240)


def test_committed_notebook_has_no_outputs() -> None:
    """Outputs are stripped in git: no outputs, no execution counts, a tagged parameters cell."""
    nbformat = pytest.importorskip("nbformat", reason=NEEDS_EXTRA)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"outputs left in: {cell.source[:60]!r}"
        assert "execution" not in cell.metadata, "execution timings left in the cell metadata"
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell is the tagged parameters cell"
    assert all(name in code[0].source for name in ("NOVA_DATA", "NOVA_DATE", "NOVA_SYMBOL", "NOVA_FIGURES"))


async def record_real_captures(root: Path, hole_s: float = 0.0) -> None:
    """Play the real ETHUSDT captures at full speed into the recorder until it has every book message; with
    ``hole_s``, in two runs with that long a pause between them."""
    source = CaptureSource([realdata_file("spot_ethusdt_20240808.gz")], [realdata_file("usdm_ethusdt_20240808.gz")],
                           speed=None)
    venue = Venue(source, VenueConfig())
    await venue.start()
    config = RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, flush_s=0.2,
                            tables=("book", "bbo", "trades"), snapshot_limit={"spot": 1000, "perp": 1000},
                            live_spread=False)
    rec = Recorder(config)
    try:
        await rec.start()
        if hole_s:
            perp = rec.sessions["perp"].states["ETHUSDT"]
            deadline = time.monotonic() + 60
            while perp.stats["book"].messages < 2500:  # about a third of the capture
                assert time.monotonic() < deadline, "the playback did not get going"
                await asyncio.sleep(0.05)
            venue.pause()
            for market, session in rec.sessions.items():
                state = session.states["ETHUSDT"]
                while state.seq.last_id != venue.truth(market, "ETHUSDT")["lastUpdateId"] or not state.seq.live:
                    assert time.monotonic() < deadline, "the first run did not catch up"
                    await asyncio.sleep(0.05)
            await rec.stop()
            await asyncio.sleep(hole_s)  # nobody records
            rec = Recorder(config)
            await rec.start()  # subscribes and takes its snapshots while the playback is paused
            for session in rec.sessions.values():
                while not session.states["ETHUSDT"].seq.live:
                    assert time.monotonic() < deadline, "the second run did not sync"
                    await asyncio.sleep(0.05)
            venue.resume()
        await wait_until_recorded(rec, venue, source, timeout_s=120)
        await asyncio.sleep(0.3)  # the last bookTickers and trades of the capture
    finally:
        await rec.stop()
        await venue.stop()


async def record_synthetic(root: Path) -> None:
    """A few seconds of the synthetic venue with every perp stream: funding, liquidations, open interest."""
    saved = derivatives.LIQUIDATIONS_PER_S
    derivatives.LIQUIDATIONS_PER_S = 4.0
    try:
        async with Venue(SyntheticSource([ETH], seed=12)) as venue:
            rec = Recorder(RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, flush_s=0.2,
                                          oi_every_s=0.5, live_spread=False))
            await rec.run(duration_s=8.0)
    finally:
        derivatives.LIQUIDATIONS_PER_S = saved


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic recording for the tests that only read it (the notebook writes under its figures folder)."""
    root = tmp_path_factory.mktemp("synthetic") / "data"
    asyncio.run(record_synthetic(root))
    return root


def main_date(root: Path) -> str:
    """The recorded date holding most of the book (a recording made across midnight UTC has two)."""
    dates = {p.name.split("=", 1)[1] for p in root.glob("book/*/*/*/date=*")}
    return max(dates, key=lambda d: sum(f.stat().st_size for f in root.glob(f"book/*/*/*/date={d}/*.parquet")))


def execute_notebook(tmp_path: Path, data: Path, day: str, figures: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Run the notebook on ``data``; returns its findings table (and checks every figure was drawn)."""
    nbformat = pytest.importorskip("nbformat", reason=NEEDS_EXTRA)
    nbclient = pytest.importorskip("nbclient", reason=NEEDS_EXTRA)
    for module in ("ipykernel", "matplotlib", "pandas"):
        pytest.importorskip(module, reason=NEEDS_EXTRA)
    # A kernel of this very interpreter, declared in a temporary Jupyter path; Jupyter's and IPython's own
    # files go there too, not into the home directory.
    jupyter = tmp_path / "jupyter"
    spec = jupyter / "kernels" / "nova-test"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "nova test", "language": "python"}))
    for name, value in (("JUPYTER_PATH", jupyter), ("JUPYTER_DATA_DIR", jupyter),
                        ("JUPYTER_RUNTIME_DIR", jupyter / "run"), ("IPYTHONDIR", tmp_path / "ipython"),
                        ("MPLCONFIGDIR", tmp_path / "mpl"), ("NOVA_DATA", data), ("NOVA_DATE", day),
                        ("NOVA_SYMBOL", "ETH/USDT"), ("NOVA_FIGURES", figures)):
        monkeypatch.setenv(name, str(value))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="nova-test", timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
    for name in FIGURES:
        path = figures / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 5000, f"{name}.png was not produced"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    last = [cell for cell in nb.cells if cell.cell_type == "code"][-1]
    assert any("text/html" in out.get("data", {}) and "best entry (open_bps)" in out["data"]["text/html"]
               for out in last.outputs), "the findings table was not displayed"
    with open(figures / "findings.csv", newline="") as fh:
        return dict(csv.reader(fh))


def bps_of(text: str) -> float:
    match = re.match(r"(-?\d+\.\d+) bps$", text)
    assert match, text
    return float(match.group(1))


@pytest.mark.realdata
def test_notebook_on_a_day_with_a_hole_agrees_with_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, figures = tmp_path / "data", tmp_path / "figures"
    asyncio.run(record_real_captures(data, hole_s=HOLE_S))
    day = main_date(data)
    events = [e for e in read_table(data, "events", "perp") if e["stream"] == "book"]
    stop = min(e["ts_recv"] for e in events if e["kind"] == "stop")
    restart = max(e["ts_recv"] for e in events if e["kind"] == "start")
    assert restart - stop >= HOLE_S * 1e9

    # the macros give no quote inside the hole
    con = connect(data)
    for t in (stop + 10**9, (stop + restart) // 2, restart - 10**9):
        for market in ("spot", "perp"):
            bid, valid = con.execute(f"SELECT bid_price, valid FROM top_of_book('{market}', 'ETH-USDT', "
                                     f"make_timestamptz({t // 1000}), make_timestamptz({t // 1000 + 1}), "
                                     "INTERVAL 1 MICROSECOND)").fetchall()[0]
            assert bid is None and valid is False, (market, t)
            assert con.execute(f"SELECT count(*) FROM book_at('{market}', 'ETH-USDT', make_timestamptz({t // 1000}), "
                               "5) WHERE valid").fetchall()[0][0] == 0
        assert con.execute(f"SELECT count(*) FROM basis('ETH-USDT', make_timestamptz({t // 1000}), "
                           f"make_timestamptz({t // 1000 + 1}), INTERVAL 1 MICROSECOND) WHERE basis_bps IS NOT NULL"
                           ).fetchall()[0][0] == 0

    from replay import Replay

    summary = Replay(str(data), "ETH/USDT", day).run(write=True)  # what `nova replay --date DAY` does
    assert summary.invalid_s >= HOLE_S
    findings = execute_notebook(tmp_path, data, day, figures, monkeypatch)
    assert findings["funding"] == "not recorded" and findings["liquidations"] == "not recorded"
    assert "dataset's spread table" in findings["spread readings"], "the notebook should use nova replay's output"
    # the headline figures are replay's, within rounding
    assert bps_of(findings["basis mean, valid readings"]) == pytest.approx(summary.basis_mean_bps, abs=1e-4)
    assert bps_of(findings["basis mean over valid time"]) == pytest.approx(summary.basis_time_mean_bps, abs=1e-3)
    assert re.match(r"mean -?\d+\.\d\d bps, p5 ", findings["basis (time-sampled)"]), findings
    # the cross-symbol section ranks the same replay: its row of this day says what the summary says
    ranking = pd.read_csv(figures / "scan.csv")
    row = ranking[(ranking.symbol == "ETH/USDT") & (ranking.date == day)].iloc[0]
    assert row.valid_minutes * 60 == pytest.approx(summary.valid_s, abs=0.06)
    assert row.basis_mean_bps == pytest.approx(summary.basis_time_mean_bps, abs=1e-3)
    assert not row.replayed and (figures / "scan.png").exists()
    assert "ETH" in findings["perp depth at the instant"] and "ETH" in findings["spot depth at the instant"]
    # the plotted basis has a hole where nobody watched, and no value in it
    buckets = pd.read_csv(figures / "basis_buckets.csv", index_col=0, parse_dates=True)
    stamps = buckets.index.astype("int64")
    inside = buckets[(stamps >= stop) & (stamps + (stamps[1] - stamps[0]) <= restart)]
    assert len(inside) >= 1 and inside["mean"].isna().all(), inside
    assert buckets.loc[stamps < stop, "mean"].notna().mean() > 0.9, "the first run is drawn"
    # and the second, from when both its books are in sync: the perp book ledgers a gap right after the resume and
    # resyncs, and how long that takes depends on the machine (a fixed second after the restart was not enough)
    synced = max(max(e["ts_recv"] for e in read_table(data, "events", market)
                     if e["stream"] == "book" and e["kind"] == "snapshot" and e["ts_recv"] > restart)
                 for market in ("spot", "perp"))
    assert (stamps > synced).sum() >= 10, "the second run has readings after its books are in sync"
    assert buckets.loc[stamps > synced, "mean"].notna().mean() > 0.9, "and the second"


def test_notebook_draws_funding_liquidations_and_open_interest(tmp_path: Path, synthetic: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data, figures = synthetic, tmp_path / "figures"
    findings = execute_notebook(tmp_path, data, main_date(data), figures, monkeypatch)
    assert findings["funding"].startswith("mean "), findings["funding"]
    assert re.match(r"\d+: \d+ sells, \d+ buys", findings["liquidations"]), findings["liquidations"]
    assert findings["open interest"].endswith(" ETH"), findings["open interest"]
    assert "Replay.run()" in findings["spread readings"], "no nova replay output: the notebook replays itself"
    assert "synthetic market" in findings["sources"]


def test_notebook_on_an_object_store(tmp_path: Path, synthetic: Path, monkeypatch: pytest.MonkeyPatch,
                                     s3_root: str) -> None:
    """NOVA_DATA=s3://BUCKET/PREFIX: the same notebook, reading the store (views, macros, the spread table)."""
    import pyarrow.fs as pafs

    from nova.core.dataset import Dataset
    from replay import Replay

    local, figures = synthetic, tmp_path / "figures"
    day = main_date(local)
    store = Dataset(s3_root)
    pafs.copy_files(str(local), store.root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=store.fs)
    Replay(s3_root, "ETH/USDT", day).run(write=True)  # what `nova replay --data s3://...` stores
    findings = execute_notebook(tmp_path, s3_root, day, figures, monkeypatch)  # type: ignore[arg-type]
    assert "dataset's spread table" in findings["spread readings"], findings["spread readings"]
    assert findings["funding"].startswith("mean ") and findings["open interest"].endswith(" ETH")
