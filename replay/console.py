"""What ``nova replay`` shows on a terminal: a progress bar while it runs (over data time for one range, over
pieces for many), the summary table at the end."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from replay.api import Progress as ReplayProgress
from replay.pieces import PieceResult, total
from replay.summary import ReplaySummary, format_duration, format_ns, summary_rows


class _DataTime(ProgressColumn):
    """The data time the replay has reached."""

    def render(self, task: Task) -> Text:
        data_ns = task.fields.get("data_ns")
        return Text(format_ns(data_ns)[:19] if data_ns else "-", style="cyan")


class _Rate(ProgressColumn):
    """Merged events per second of wall time, over the run so far."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate", 0.0)
        return Text(f"{rate:,.0f} ev/s", style="magenta")


class ProgressBar:
    """A rich progress bar over the range's data time; a no-op when disabled (quiet, or not a terminal)."""

    def __init__(self, console: Console, title: str, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._task: Any = None
        if enabled:
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), _DataTime(),
                                      TextColumn("ETA"), TimeRemainingColumn(), _Rate(), console=console,
                                      transient=True)
            self._task = self._progress.add_task(title, total=1.0, data_ns=None, rate=0.0)

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, p: ReplayProgress) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=p.fraction, data_ns=p.data_ns,
                                  rate=p.events / p.wall_s if p.wall_s > 0 else 0.0)


def summary_table(summary: ReplaySummary) -> Table:
    table = Table(title=f"nova replay {summary.symbol}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for label, value in summary_rows(summary):
        table.add_row(label, value)
    return table


class PiecesBar:
    """A rich progress bar over the pieces of a batch replay (pieces done of all, with the time left); a no-op
    when disabled."""

    def __init__(self, console: Console, title: str, total: int, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._task: Any = None
        if enabled:
            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                      TextColumn("{task.completed}/{task.total} pieces"), TextColumn("ETA"),
                                      TimeRemainingColumn(), TextColumn("[red]{task.fields[failed]}"),
                                      console=console, transient=True)
            self._task = self._progress.add_task(title, total=total, failed="")

    def __enter__(self) -> PiecesBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, result: PieceResult, done: int, total: int) -> None:
        if self._progress is not None:
            failed = self._progress.tasks[0].fields.get("failed", "")
            if not result.ok:
                count = int(failed.split()[0]) + 1 if failed else 1
                failed = f"{count} failed"
            self._progress.update(self._task, completed=done, total=total, failed=failed)


def pieces_table(results: list[PieceResult], title: str) -> Table:
    """A row per symbol and date, and a total: what a batch replay did (a failed piece's sentence is printed
    apart, where it can be read whole)."""
    table = Table(title=title)
    for name, justify in (("symbol", "left"), ("date", "left"), ("events", "right"), ("readings", "right"),
                          ("valid time", "right"), ("basis mean", "right"), ("best open", "right"),
                          ("opportunities", "right"), ("gaps", "right"), ("wall", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in [*results, total(results)]:
        if not r.ok:
            table.add_row(r.symbol, r.date, Text("failed", style="red"), *[""] * 7)
            continue
        style = "bold" if r.symbol == "total" else None
        table.add_row(r.symbol, r.date, f"{r.events:,}", f"{r.readings:,}", format_duration(r.valid_s),
                      _bps(r.basis_time_mean_bps), _bps(r.best_open_bps),
                      f"{r.opportunities:,} ({format_duration(r.opportunity_s)})", f"{r.gaps}",
                      format_duration(r.wall_s), style=style)
    return table


def _bps(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.2f} bps"
