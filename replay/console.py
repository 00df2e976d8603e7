"""What ``nova replay`` shows on a terminal: a progress bar while it runs, the summary table at the end."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from replay.api import Progress as ReplayProgress
from replay.summary import ReplaySummary, format_ns, summary_rows


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
