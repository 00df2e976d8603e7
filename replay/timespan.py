"""Turning what a user types (symbol, dates, times, clock) into a ``ReplayRange``, or one sentence saying why not.

Both the CLI and the Python API come through here, so every bad input gets the same answer, naming what does
exist (the recorded symbols, the recorded dates of the symbol) so that the next attempt is right.
"""

from __future__ import annotations

import datetime as dt
import re

from nova.core.errors import NovaError
from nova.core.markets import MARKETS, Symbol
from nova.core.units import BadValue
from nova.core.units import parse_date as _parse_date
from replay.engine import ReplayRange
from replay.plan import STREAM_TABLES, ReplaySource, date_ns, shift_date

CLOCKS = ("recv", "event")
_TIME = re.compile(r"^\d{1,2}:\d{2}(:\d{2}(\.\d{1,9})?)?$")


def check_clock(clock: str) -> str:
    """``recv`` (order and pace by our receive time) or ``event`` (by exchange time)."""
    if clock not in CLOCKS:
        raise BadValue("clock", "must be recv (order by our receive time) or event (by exchange time)", clock)
    return clock


def parse_date(option: str, text: str) -> str:
    """A ``YYYY-MM-DD`` date, checked (``2026-02-30`` is not one)."""
    try:
        return _parse_date(text)
    except ValueError:
        raise NovaError(f"{option} {text} is not a date; write it as YYYY-MM-DD, for example 2026-11-24") from None


def date_range(date: str | None, until: str | None, default: str | None) -> tuple[str | None, str | None]:
    """``--date`` (``default`` when not given) and ``--until`` (``--date`` when not given), each checked, and
    ``--until`` not before ``--date``; NovaError (one sentence) otherwise."""
    first = parse_date("--date", date) if date is not None else default
    last = parse_date("--until", until) if until is not None else first
    if first is not None and last is not None and last < first:
        raise NovaError(f"--until {last} is before --date {first}; give the first date with --date and the last "
                        "with --until")
    return first, last


def parse_time(option: str, text: str, day: str) -> int:
    """ns since the epoch of ``HH:MM[:SS[.fff]]`` on ``day`` (UTC), or of a full ISO time (UTC unless it says)."""
    value = text.strip()
    try:
        if _TIME.match(value):
            hours, minutes, *rest = value.split(":")
            seconds = float(rest[0]) if rest else 0.0
            if int(hours) > 24 or int(minutes) > 59 or seconds >= 60 or (int(hours) == 24 and (int(minutes)
                                                                                                or seconds)):
                raise ValueError(value)
            return date_ns(day) + (int(hours) * 3600 + int(minutes) * 60) * 10**9 + round(seconds * 1e9)
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        raise NovaError(f"{option} {text} is not a time; write HH:MM[:SS] (UTC, on the replayed date) or a full "
                        "time like 2026-11-24T13:30:00Z") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    delta = stamp - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _listing(items: list[str], limit: int = 12) -> str:
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit // 2]) + f", ... ({len(items) - limit} more) ..., " + ", ".join(items[-limit // 2:])


def resolve(dataset: ReplaySource, symbol: str, date: str | None, until: str | None, start: str | None,
            end: str | None, clock: str) -> tuple[ReplayRange, list[str]]:
    """The range to replay and the recorded dates it covers; NovaError (one sentence) for any bad input."""
    check_clock(clock)
    try:
        sym = Symbol.parse(symbol)
    except ValueError as exc:
        raise NovaError(str(exc)) from None
    recorded = dataset.symbols()
    if sym.unified not in recorded:
        where = dataset.root_text
        if not recorded:
            raise NovaError(f"nothing is recorded under {where}; record first (nova record {sym}) or point --data "
                            "at a recording")
        raise NovaError(f"{sym} is not recorded under {where}; recorded symbols: {', '.join(recorded)}")
    have = {m: dataset.dates(sym, tables=("book", "bbo"), markets=(m,)) for m in MARKETS}
    for market, other in (("perp", "spot"), ("spot", "perp")):
        if not have[market] and have[other]:
            tables = [t for t in STREAM_TABLES if dataset.dates(sym, tables=(t,), markets=(other,))]
            raise NovaError(f"{sym} has no {market} book or bookTicker recorded under {dataset.root_text} (only "
                            f"{other}: {', '.join(tables)}); replay compares spot with perp, so both must be "
                            f"recorded (nova record {sym} records both)")
    dates = dataset.dates(sym)
    if not dates:
        raise NovaError(f"{sym} has no complete recording file under {dataset.root_text} yet (files appear when "
                        "their 15-minute window ends, or when the recorder stops)")
    first, last = date_range(date, until, dates[-1])
    assert first is not None and last is not None
    covered = [d for d in dates if first <= d <= last]
    if not covered:
        span = first if first == last else f"{first}..{last}"
        raise NovaError(f"no recording of {sym} on {span} under {dataset.root_text}; recorded dates: "
                        f"{_listing(dates)}")
    lo, hi = date_ns(first), date_ns(shift_date(last, 1))
    start_ns = parse_time("--start", start, first) if start is not None else lo
    end_ns = parse_time("--end", end, last) if end is not None else hi
    span = first if first == last else f"{first}..{last}"
    if not lo <= start_ns < hi:
        raise NovaError(f"--start {start} is outside the replayed dates {span}; widen them with --date/--until")
    if not lo < end_ns <= hi:
        raise NovaError(f"--end {end} is outside the replayed dates {span}; widen them with --date/--until")
    if end_ns <= start_ns:
        raise NovaError(f"--end {end} is not after --start {start}; the window must be a forward time range")
    return ReplayRange(sym, start_ns, end_ns, clock), covered
