"""Regenerate docs/spread.png, the README's plot: the notebook's main figure (mids, basis, opportunity windows).

    python docs/make_plots.py                      # record the real ETHUSDT captures, then plot them
    python docs/make_plots.py --speed 5            # a slower playback (closer to the original pacing)
    python docs/make_plots.py --data data --date 2026-11-24   # plot an existing recording instead

Without ``--data`` the simulated venue plays the real Binance captures in ``../shared/realdata/binance/``
(``NOVA_REALDATA`` to use another folder): spot and USDT-M ETHUSDT, 2024-08-08 23:54-24:00 UTC, at
``--speed`` (default 10: the ~6 minutes take ~35 s). The real recorder records book, bookTicker and trades
into a temporary folder. A paced playback keeps the two markets' receive times aligned as they were
captured (at ``max`` each connection drains at its own pace, which distorts the basis by several bps).

Then ``notebooks/spread_analysis.ipynb`` is executed top to bottom on that recording (nbclient, in a kernel
of this interpreter), so the picture is exactly the notebook's ``spread_main`` figure; it is stored as a
256-colour PNG to stay small. Needs the test extra (``pip install -e '.[test]'``) for nbclient, ipykernel,
matplotlib and pandas.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NOTEBOOK = REPO / "notebooks" / "spread_analysis.ipynb"
REALDATA = Path(os.environ.get("NOVA_REALDATA", REPO.parent / "shared" / "realdata")) / "binance"
CAPTURES = {"spot": REALDATA / "spot_ethusdt_20240808.gz", "perp": REALDATA / "usdm_ethusdt_20240808.gz"}


async def record_captures(root: Path, speed: float | None) -> None:
    """The venue plays the real captures; the recorder records them until it has every book message."""
    from nova.core.markets import Symbol
    from nova.venue import CaptureSource, Venue, VenueConfig
    from recorder.recorder import Recorder, RecorderConfig

    source = CaptureSource([CAPTURES["spot"]], [CAPTURES["perp"]], speed=speed)
    venue = Venue(source, VenueConfig())
    await venue.start()
    rec = Recorder(RecorderConfig(symbols=[Symbol("ETH", "USDT")], data=str(root), endpoint=venue.url,
                                  tables=("book", "bbo", "trades"), snapshot_limit={"spot": 1000, "perp": 1000},
                                  live_spread=False))
    try:
        await rec.start()
        while not source.finished or any(s.states["ETHUSDT"].seq.last_id != venue.truth(m, "ETHUSDT")["lastUpdateId"]
                                         for m, s in rec.sessions.items()):
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
    finally:
        await rec.stop()
        await venue.stop()


def run_notebook(data: Path, date: str | None, symbol: str, figures: Path, work: Path) -> None:
    """Execute the notebook on ``data`` with its figures going to ``figures``."""
    import nbclient
    import nbformat

    spec = work / "jupyter" / "kernels" / "nova-docs"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "nova docs", "language": "python"}))
    os.environ.update({"JUPYTER_PATH": str(work / "jupyter"), "JUPYTER_RUNTIME_DIR": str(work / "jupyter" / "run"),
                       "NOVA_DATA": str(data.resolve()), "NOVA_SYMBOL": symbol, "NOVA_FIGURES": str(figures)})
    if date:
        os.environ["NOVA_DATE"] = date
    else:
        os.environ.pop("NOVA_DATE", None)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, kernel_name="nova-docs", timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="plot this recording instead of recording the real captures")
    parser.add_argument("--date", help="the date to plot (default: the last recorded one)")
    parser.add_argument("--symbol", default="ETH/USDT")
    parser.add_argument("--speed", default="10", help="capture playback speed when recording (a factor, or max)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "spread.png")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nova-docs-") as tmp:
        work = Path(tmp)
        data = args.data
        if data is None:
            missing = [str(p) for p in CAPTURES.values() if not p.is_file()]
            if missing:
                raise SystemExit(f"the real captures are missing ({', '.join(missing)}); set NOVA_REALDATA or "
                                 "give --data")
            speed = None if args.speed == "max" else float(args.speed)
            data = work / "data"
            started = time.perf_counter()
            asyncio.run(record_captures(data, speed))
            print(f"recorded the real ETHUSDT captures at speed {args.speed} into {data} in "
                  f"{time.perf_counter() - started:.1f} s")
        figures = work / "figures"
        run_notebook(data, args.date, args.symbol, figures, work)
        from PIL import Image

        args.out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(figures / "spread_main.png") as image:
            image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
        print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB); the notebook's findings:")
        print((figures / "findings.csv").read_text())


if __name__ == "__main__":
    main()
