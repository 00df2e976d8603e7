"""notebooks/spread_analysis.ipynb runs top to bottom on a real recording and produces its figures.

The recording: the venue plays the real ETHUSDT captures (spot and USDT-M, ~6 minutes) as fast as the
recorder reads them, and the real recorder (ccxt.pro over real sockets) records book, bookTicker and trades
(the captures have no markPrice stream, so there is no funding table: the notebook must cope). ``Replay``
then writes the spread table, as ``nova replay`` would, and the notebook is executed by nbclient in a kernel
of this interpreter (a kernel spec in a temporary folder; no network beyond 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import sys
from pathlib import Path

import pytest

from nova.venue import CaptureSource, Venue, VenueConfig
from recorder.recorder import Recorder, RecorderConfig
from tests.conftest import ETH, REPO, realdata_file, wait_until_recorded

NOTEBOOK = REPO / "notebooks" / "spread_analysis.ipynb"
NEEDS_EXTRA = "the notebook tests need the test extra (pip install -e '.[test]')"
FIGURES = ("spread_main", "open_close_fee_band", "basis_distribution", "opportunity_windows", "funding",
           "depth_profile")
pytestmark = pytest.mark.timeout(180)


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


async def record_real_captures(root: Path) -> None:
    """Play the real ETHUSDT captures at full speed into the recorder until it has every book message."""
    source = CaptureSource([realdata_file("spot_ethusdt_20240808.gz")], [realdata_file("usdm_ethusdt_20240808.gz")],
                           speed=None)
    venue = Venue(source, VenueConfig())
    await venue.start()
    rec = Recorder(RecorderConfig(symbols=[ETH], data=str(root), endpoint=venue.url, flush_s=0.2,
                                  tables=("book", "bbo", "trades"), snapshot_limit={"spot": 1000, "perp": 1000},
                                  live_spread=False))
    try:
        await rec.start()
        await wait_until_recorded(rec, venue, source, timeout_s=90)
        await asyncio.sleep(0.3)  # the last bookTickers and trades of the capture
    finally:
        await rec.stop()
        await venue.stop()


def main_date(root: Path) -> str:
    """The recorded date holding most of the book (a recording made across midnight UTC has two)."""
    dates = {p.name.split("=", 1)[1] for p in root.glob("book/*/*/*/date=*")}
    return max(dates, key=lambda d: sum(f.stat().st_size for f in root.glob(f"book/*/*/*/date={d}/*.parquet")))


@pytest.mark.realdata
def test_notebook_runs_on_a_recording_of_the_real_captures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat", reason=NEEDS_EXTRA)
    nbclient = pytest.importorskip("nbclient", reason=NEEDS_EXTRA)
    for module in ("ipykernel", "matplotlib", "pandas"):
        pytest.importorskip(module, reason=NEEDS_EXTRA)
    data, figures = tmp_path / "data", tmp_path / "figures"
    asyncio.run(record_real_captures(data))
    day = main_date(data)
    from replay import Replay

    Replay(str(data), "ETH/USDT", day).run(write=True)  # what `nova replay --date DAY` does

    # A kernel of this very interpreter, declared in a temporary Jupyter path; Jupyter's and IPython's own
    # files go there too, not into the home directory.
    jupyter = tmp_path / "jupyter"
    spec = jupyter / "kernels" / "nova-test"
    spec.mkdir(parents=True)
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
    with open(figures / "findings.csv", newline="") as fh:
        findings = dict(csv.reader(fh))
    assert len(findings) >= 12, findings
    assert findings["funding"] == "not recorded"
    assert "dataset's spread table" in findings["spread readings"], "the notebook should use nova replay's output"
    assert re.match(r"mean -?\d+\.\d\d bps, p5 ", findings["basis (time-sampled)"]), findings
    assert "ETH" in findings["perp depth at the instant"] and "ETH" in findings["spot depth at the instant"]
    # the findings table is the notebook's last output
    last = [cell for cell in nb.cells if cell.cell_type == "code"][-1]
    assert any("text/html" in out.get("data", {}) and "best entry (open_bps)" in out["data"]["text/html"]
               for out in last.outputs), "the findings table was not displayed"
