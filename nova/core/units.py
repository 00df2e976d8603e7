"""Parsing of the human quantities the CLI accepts (durations like ``30s``, ``15m``, ``1h30m``)."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


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
