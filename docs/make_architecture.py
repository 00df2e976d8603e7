"""Draw docs/architecture.png, the picture of docs/architecture.md: the three floors and the two journeys of a book
message (socket -> Parquet, Parquet -> spread reading).

    python docs/make_architecture.py

Matplotlib only (the test extra has it); boxes and arrows are placed by hand, so the picture stays readable.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).resolve().parent / "architecture.png"
FLOORS = {  # floor -> (y, height, colour, title)
    "roof": (8.5, 1.2, "#f3e5f5", "roof: nova/cli.py (the `nova` command), nova/__init__.py (the public Python API)"),
    "sides": (4.6, 3.6, "#e3f2fd", "sides: import only the core, never each other"),
    "core": (1.7, 2.6, "#e8f5e9", "core: nova/core/ (imports no side)"),
}
BOXES = {  # name -> (x, y, w, h, text)
    "cli": (0.4, 8.65, 13.2, 0.55, "nova record | replay | sql | check | ls | compact | recover | venue | demo"),
    "venue": (0.4, 6.6, 2.6, 1.1, "nova/venue/\nsimulated Binance\n(REST + WebSocket)"),
    "recorder": (3.5, 4.85, 3.1, 2.85, "recorder/\nexchange.py (ccxt hooks)\nsession.py (per stream)\nsequencer.py\n"
                                       "rows.py, writer.py\nrecorder.py, status.py"),
    "replay": (7.0, 4.85, 3.1, 2.85, "replay/\ndataset.py (plan)\nreader.py, merge.py\nkernel.py (loop)\n"
                                     "engine.py, api.py\noutput.py, summary.py"),
    "analysis": (10.5, 4.85, 3.1, 2.85, "nova/analysis/\nsql.py, macros.py\ncheck.py, ls.py\ncompact.py"),
    "dataset": (0.4, 1.9, 3.6, 1.7, "dataset.py\njournal.py, lock.py\none owner of the root's\nlayout, names and I/O"),
    "contract": (4.3, 1.9, 2.6, 1.7, "contract.py\nschemas, encodings\nmarkets.py, units.py"),
    "rules": (7.2, 1.9, 3.0, 1.7, "rules.py (id chain)\nbook.py (the book,\nthe rebuild rule)"),
    "validity": (10.5, 1.9, 3.1, 1.7, "validity.py (when a\nmarket is trusted)\nspread.py (DESIGN §4)"),
    "parquet": (0.4, 0.2, 13.2, 0.8, "the dataset: {root}/{table}/exchange=binance/market=/symbol=/date=/*.parquet  "
                                     "(local path, later s3://)"),
}
ARROWS = [  # (from, to, label, colour, x offset of the start, x offset of the end, where the label sits)
    ("venue", "recorder", "ws / REST", "#1565c0", 0.0, 0.0, 0.5),
    ("recorder", "rules", "1 sequence", "#1565c0", 0.4, -0.9, 0.75),
    ("recorder", "dataset", "2 journal\n-> Parquet", "#1565c0", -0.9, 0.6, 0.5),
    ("dataset", "parquet", "", "#1565c0", 0.0, 0.0, 0.5),
    ("dataset", "replay", "row groups", "#2e7d32", 1.4, -1.0, 0.3),
    ("replay", "rules", "rebuild", "#2e7d32", 0.0, 0.3, 0.5),
    ("replay", "validity", "readings", "#2e7d32", 1.0, -0.8, 0.5),
    ("analysis", "validity", "", "#6a1b9a", 0.6, 0.6, 0.5),
    ("analysis", "dataset", "views", "#6a1b9a", -1.2, 1.6, 0.2),
]


def ends(a: str, b: str, dx0: float, dx1: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where an arrow from box a to box b starts and ends: on the facing edges (bottom to top, or side to side)."""
    xa, ya, wa, ha, _ = BOXES[a]
    xb, yb, wb, hb, _ = BOXES[b]
    if ya >= yb + hb:  # b is below a
        return (xa + wa / 2 + dx0, ya), (xb + wb / 2 + dx1, yb + hb)
    return (xa + wa, ya + ha / 2), (xb, yb + hb - 0.4)


def main() -> None:
    fig, ax = plt.subplots(figsize=(12, 8.2))
    ax.set_xlim(0, 14)
    ax.set_ylim(0, 10.3)
    ax.axis("off")
    for y, h, colour, title in FLOORS.values():
        ax.add_patch(FancyBboxPatch((0.15, y), 13.7, h, boxstyle="round,pad=0.02", fc=colour, ec="#9e9e9e", lw=0.8))
        ax.text(0.3, y + h - 0.05, title, va="top", fontsize=9, color="#424242", style="italic")
    for x, y, w, h, text in BOXES.values():
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04", fc="white", ec="#616161", lw=1.0))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.2, family="monospace")
    for a, b, label, colour, dx0, dx1, at in ARROWS:
        (x0, y0), (x1, y1) = ends(a, b, dx0, dx1)
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, color=colour,
                                     lw=1.3, shrinkA=2, shrinkB=2, alpha=0.9))
        if label:
            ax.text(x0 + (x1 - x0) * at, y0 + (y1 - y0) * at, label, fontsize=7.5, color=colour, ha="center",
                    va="center",
                    bbox={"fc": "white", "ec": "none", "alpha": 0.85, "pad": 1})
    ax.text(7, 10.05, "Nova: three floors; a book message from the socket to Parquet (blue), from Parquet to a "
            "spread reading (green)", ha="center", fontsize=10, weight="bold")
    fig.savefig(OUT, dpi=110, bbox_inches="tight")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
