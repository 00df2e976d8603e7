"""The recorder's plain status line (what `nova record` prints every 10 s when stdout is not a terminal)."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from rich.console import Console

from recorder import status
from recorder.status import StatusView


class CountingRecorder:
    """Stands in for a Recorder: the status view reads only its counters (no live books here)."""

    def __init__(self) -> None:
        self.messages = 0
        self.live: dict[Any, Any] = {}
        self.live_lock = threading.Lock()
        self.sessions: dict[str, Any] = {}

    def summary(self) -> dict[str, dict[str, int]]:
        return {"perp/ETH-USDT/book": {"messages": self.messages, "rows": 10 * self.messages, "gaps": 0,
                                       "reconnects": 0, "errors": 0}}

    def backlog(self) -> None:
        return None  # a local root: no spool, no uploads


def rate_in(line: str) -> float:
    found = re.search(r"perp/ETH-USDT/book ([\d.]+)/s", line)
    assert found, line
    return float(found.group(1))


def test_the_first_log_line_reports_the_rate_since_start_and_later_ones_per_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(status.time, "monotonic", lambda: clock[0])
    rec = CountingRecorder()
    view = StatusView(rec, Console(), live=False)  # type: ignore[arg-type]
    clock[0] += 10.0
    rec.messages = 500
    first = view.log_line()
    assert rate_in(first) == 50.0, first  # since the start, not 0/s for lack of a previous sample
    assert "rows=5000" in first
    clock[0] += 2.0
    rec.messages = 520
    assert rate_in(view.log_line()) == 10.0  # over the last interval only
    clock[0] += 2.0
    assert rate_in(view.log_line()) == 0.0
