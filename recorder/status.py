"""What the recorder shows while it runs: a live rich table on a terminal, a periodic log line otherwise.

The spread shown is computed by ``nova.core.spread.SpreadLogic`` (the kernel replay uses) from the recorder's own
live books and the latest bookTicker and funding of each symbol. The plain log line (no terminal) shows it from
bookTicker alone: keeping depth books costs the recorder about 4 µs per 65-level message, for nobody to see.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from nova.core.spread import Reading
from recorder.recorder import Recorder


def take_readings(recorder: Recorder, now_ns: int) -> dict[Any, Reading]:
    """The live reading of every symbol, after feeding in the latest bookTicker and funding."""
    out = {}
    with recorder.live_lock:
        for symbol, logic in recorder.live.items():
            for market, session in recorder.sessions.items():
                state = session.states.get(symbol.exchange_id)
                if state is None:
                    continue  # started or stopped this moment (a listing, recorder.listings)
                bbo = state.latest_bbo
                if bbo is not None:
                    logic.on_bbo(market, update_id=bbo.update_id, bid_price=bbo.bid_price, bid_amount=bbo.bid_amount,
                                 ask_price=bbo.ask_price, ask_amount=bbo.ask_amount, ts_ns=bbo.ts_recv)
                if market == "perp" and not math.isnan(state.latest_funding):
                    logic.on_funding(state.latest_funding)
            out[symbol] = logic.reading(now_ns)
    return out


class StatusView:
    """Renders the recorder's counters and live spread every ``interval_s`` (rich) or ``log_every_s`` (plain)."""

    def __init__(self, recorder: Recorder, console: Console, live: bool, interval_s: float = 0.5,
                 log_every_s: float = 10.0) -> None:
        self.recorder = recorder
        self.console = console
        self.live = live
        self.interval_s = interval_s if live else log_every_s
        # rates are over the last interval; the first one is over the time since the view started, or the
        # first log line (10 s in) would report 0/s for every stream
        self._started = time.monotonic()
        self._last: dict[str, tuple[float, int]] = {}

    def _rates(self) -> dict[str, float]:
        now = time.monotonic()
        rates = {}
        for key, counts in self.recorder.summary().items():
            then, before = self._last.get(key, (self._started, 0))
            rates[key] = (counts["messages"] - before) / (now - then) if now > then else 0.0
            self._last[key] = (now, counts["messages"])
        return rates

    def render(self) -> Group:
        now = time.time_ns()
        rates = self._rates()
        streams = Table(title=f"nova record -> {self.recorder.config.data}   "
                              f"({(now - self.recorder.started_ns) / 1e9:,.0f} s)", expand=False)
        for col in ("stream", "msg/s", "messages", "rows", "last", "gaps", "reconn", "errors"):
            streams.add_column(col, justify="left" if col == "stream" else "right", no_wrap=True)
        for key, counts in self.recorder.summary().items():
            market, symbol, stream = key.split("/")
            last = counts["last_recv_ns"]
            age = "stopped" if counts.get("stopped") else f"{(now - last) / 1e9:.1f}s" if last else "-"
            streams.add_row(f"{market} {symbol} {stream}", f"{rates.get(key, 0):,.1f}", f"{counts['messages']:,}",
                            f"{counts['rows']:,}", age, str(counts["gaps"]), str(counts["reconnects"]),
                            str(counts["errors"]))
        spread = Table(title="live spot-perp spread (nova.core.spread: the code replay runs)", expand=False)
        for col in ("symbol", "spot bid / ask", "perp bid / ask", "basis", "open / close", "net open", "skew",
                    "funding", "state"):
            spread.add_column(col, justify="right", no_wrap=True)
        for symbol, r in take_readings(self.recorder, now).items():
            flag = "ok" if r.valid and not r.stale else ("stale leg" if r.valid else "syncing")
            if r.opportunity:
                flag = "[bold green]opportunity[/]"
            funding = "-" if math.isnan(r.funding_rate) else f"{r.funding_rate * 100:.4f}%"
            spread.add_row(str(symbol), f"{_f(r.spot_bid)} / {_f(r.spot_ask)}", f"{_f(r.perp_bid)} / {_f(r.perp_ask)}",
                           f"{_f(r.basis_bps, 2)} bps", f"{_f(r.open_bps, 2)} / {_f(r.close_bps, 2)}",
                           f"{_f(r.net_open_bps, 2)}", f"{_f(r.skew_ms, 0)} ms", funding, flag)
        backlog = self.recorder.backlog()
        if backlog is not None:  # an object-store root: what waits in the spool for the store
            streams.caption = f"upload backlog: {backlog.text()}"
        return Group(streams, spread)

    def log_line(self) -> str:
        now = time.time_ns()
        rates = self._rates()
        parts = []
        for key, counts in self.recorder.summary().items():
            parts.append(f"{key} {rates.get(key, 0):.1f}/s rows={counts['rows']} gaps={counts['gaps']} "
                         f"reconnects={counts['reconnects']}")
        for symbol, r in take_readings(self.recorder, now).items():
            parts.append(f"{symbol} basis={_f(r.basis_bps, 2)}bps open={_f(r.open_bps, 2)}bps "
                         f"close={_f(r.close_bps, 2)}bps valid={r.valid}")
        backlog = self.recorder.backlog()
        if backlog is not None:
            parts.append(f"upload backlog: {backlog.text()}")
        return "nova record: " + "; ".join(parts)

    async def run(self) -> None:
        if not self.live:  # a log line every 10 s shows the spread from bookTicker: no depth book is needed
            self.recorder.drop_live_books()
        if self.live:
            with Live(self.render(), console=self.console, refresh_per_second=4, transient=False) as live:
                while True:
                    await asyncio.sleep(self.interval_s)
                    live.update(self.render())
        else:
            while True:
                await asyncio.sleep(self.interval_s)
                self.console.print(self.log_line(), soft_wrap=True, highlight=False)


def _f(value: float, digits: int | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if digits is None:
        return f"{value:,.8g}"
    return f"{value:,.{digits}f}"


class FleetView:
    """One status for N worker processes (recorder.fleet): per worker and in total, messages per second, rows,
    gaps, reconnects and errors, from the counters the workers report."""

    def __init__(self, fleet: Any, console: Console, data: str) -> None:
        self.fleet, self.console, self.data = fleet, console, data
        self._started = time.monotonic()
        self._last: dict[int, tuple[float, int]] = {}

    def rows(self) -> list[tuple[str, int, float, int, int, int, int, int, str]]:
        now = time.monotonic()
        out = []
        for w in self.fleet.workers:
            counts = w.summary.values()
            messages = sum(c["messages"] for c in counts)
            then, before = self._last.get(w.index, (self._started, 0))
            rate = (messages - before) / (now - then) if now > then else 0.0
            self._last[w.index] = (now, messages)
            state = "failed" if w.failure else "stopped" if w.done else "recording" if w.started else "starting"
            out.append((f"worker {w.index + 1}", len(w.symbols), rate, messages, sum(c["rows"] for c in counts),
                        sum(c["gaps"] for c in counts), sum(c["reconnects"] for c in counts),
                        sum(c["errors"] for c in counts), state))
        return out

    def render(self) -> Table:
        rows = self.rows()
        table = Table(title=f"nova record --workers {len(rows)} -> {self.data}   "
                            f"({time.monotonic() - self._started:,.0f} s)", expand=False)
        for col in ("worker", "symbols", "msg/s", "messages", "rows", "gaps", "reconn", "errors", "state"):
            table.add_column(col, justify="left" if col in ("worker", "state") else "right", no_wrap=True)
        for name, symbols, rate, *counts, state in rows:
            table.add_row(name, str(symbols), f"{rate:,.1f}", *(f"{c:,}" for c in counts), state)
        totals: list[float] = [sum(float(r[i]) for r in rows) for i in range(1, 8)]
        table.add_row("all", f"{totals[0]:.0f}", f"{totals[1]:,.1f}", *(f"{c:,.0f}" for c in totals[2:]), "")
        return table

    def log_line(self) -> str:
        rows = self.rows()
        parts = [f"{name} {rate:.1f}/s rows={rows_} gaps={gaps} reconnects={rec} {state}"
                 for name, _, rate, _, rows_, gaps, rec, _, state in rows]
        return "nova record: " + "; ".join(parts)
