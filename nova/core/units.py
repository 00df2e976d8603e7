"""The human quantities Nova accepts, and the checks every entry point shares.

Parsing: durations like ``30s``, ``15m``, ``1h30m``; speeds like ``10``, ``0.5`` or ``max``; dates ``YYYY-MM-DD``.
The CLI's option types call these, so the shell and Python read a quantity the same way.

Checking: ``BadValue`` and the small ``check_*`` helpers below are what the library's parameter classes
(``RecorderConfig``, ``SpreadParams``, ``Replay``) validate themselves with. A bad value is refused where it
enters the library, in one sentence naming the parameter as a Python caller wrote it (``flush_s must be a
positive, finite number of seconds, not 0``); the CLI prints the same sentence after the option it came from.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import re
from collections.abc import Iterable
from typing import Any

from nova.core.errors import NovaError

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


# ---- parsing ------------------------------------------------------------------------------------------------------

def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``500ms``, ``30s``, ``15m``, ``1h30m``, ``2d``; a bare number means seconds)."""
    raw = text.strip().lower().replace(" ", "")
    if not raw:
        raise ValueError("an empty duration")
    try:
        value = float(raw)
    except ValueError:
        pos, total = 0, 0.0
        for m in _PART.finditer(raw):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _SECONDS[m.group(2)]
            pos = m.end()
        if pos != len(raw) or pos == 0:
            raise ValueError(f"'{text}' is not a duration; write it like 30s, 15m, 1h30m or 500ms") from None
        value = total
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"'{text}' is not a duration; it must be a finite, non-negative time")
    return value


def parse_speed(text: str) -> float | None:
    """A pace as typed: ``max`` (None: as fast as possible) or a number (1 = the recorded pace, 10 = ten times
    faster). Only the spelling is checked here; ``check_speed`` says which numbers are speeds."""
    raw = text.strip().lower()
    if raw == "max":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"'{text}' is not a speed; write a positive number like 1, 10 or 0.5, or max") from None


def parse_date(text: str) -> str:
    """A ``YYYY-MM-DD`` date, checked (``2026-02-30`` is not one), in its canonical spelling."""
    value = text.strip()
    try:
        if _DATE.fullmatch(value):
            return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise ValueError(f"'{text}' is not a date; write it as YYYY-MM-DD, for example 2026-11-24")


# ---- checking -----------------------------------------------------------------------------------------------------

def shown(value: Any) -> str:
    """A value as a sentence quotes it: ``0`` rather than ``0.0``, strings in quotes, the rest as Python writes it."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class BadValue(NovaError, ValueError):
    """A parameter outside what it may be: ``{parameter} {rule}, not {value}``.

    A NovaError, so the CLI prints it as its one sentence; also a ValueError, so callers that caught the
    ValueError these classes raised before keep working. ``parameter`` is the name a Python caller wrote
    (``flush_s``, ``depth_ms['spot']``): the CLI looks it up to say which option it came from.
    """

    def __init__(self, parameter: str, rule: str, value: Any, text: str | None = None) -> None:
        self.parameter, self.rule, self.value = parameter, rule, value
        self.text = shown(value) if text is None else text
        super().__init__(f"{parameter} {rule}, not {self.text}")

    def renamed(self, parameter: str) -> BadValue:
        """The same complaint about a parameter a caller knows by another name (Replay's ``fee_spot`` is
        SpreadParams' ``fee_spot_bps``)."""
        return BadValue(parameter, self.rule, self.value, self.text)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes despite the custom signature
        return BadValue, (self.parameter, self.rule, self.value, self.text)


def is_number(value: Any) -> bool:
    """A real number, numpy's included (bools are not, though Python counts them as ints)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_finite(name: str, value: Any, unit: str) -> float:
    """Any finite number of ``unit`` (a threshold may be negative)."""
    if not (is_number(value) and math.isfinite(value)):
        raise BadValue(name, f"must be a finite number of {unit}", value)
    return value


def check_not_negative(name: str, value: Any, unit: str) -> float:
    """A finite number of ``unit`` that is 0 or more (fees, sizes, tolerances)."""
    if not (is_number(value) and math.isfinite(value) and value >= 0):
        raise BadValue(name, f"must be a finite, non-negative number of {unit}", value)
    return value


def check_positive(name: str, value: Any, unit: str) -> float:
    """A finite number of ``unit`` above 0 (intervals, rates)."""
    if not (is_number(value) and math.isfinite(value) and value > 0):
        raise BadValue(name, f"must be a positive, finite number of {unit}", value)
    return value


def check_at_least(name: str, value: Any, low: float, unit: str) -> float:
    """A finite number of ``unit`` of at least ``low``."""
    if not (is_number(value) and math.isfinite(value) and value >= low):
        raise BadValue(name, f"must be a finite number of {unit}, at least {shown(low)}", value)
    return value


def check_count(name: str, value: Any, low: int, what: str) -> int:
    """A whole number of ``what`` of at least ``low``."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= low):
        raise BadValue(name, f"must be a whole number of {what}, at least {low}", value)
    return int(value)


def check_subset(name: str, values: Any, choices: Iterable[str], what: str) -> tuple[str, ...]:
    """A non-empty tuple (or list) of distinct items of ``choices``, returned as a tuple."""
    allowed = tuple(choices)
    items = tuple(values) if isinstance(values, tuple | list) else None
    if not items or any(item not in allowed for item in items) or len(set(items)) != len(items):
        raise BadValue(name, f"must name one or more {what}, each once, out of {', '.join(allowed)}", values)
    return items


def check_speed(value: Any, name: str = "speed") -> float | None:
    """A replay or playback pace: a positive, finite multiple of the recorded pace, or None for as fast as
    possible (spelled ``max`` on the command line)."""
    if value is not None and not (is_number(value) and math.isfinite(value) and value > 0):
        raise BadValue(name, "must be a positive number (a multiple of the recorded pace), or None / max for as "
                       "fast as possible", value)
    return value

