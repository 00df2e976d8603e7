"""Binance's ``timeUnit`` option: times in microseconds instead of milliseconds, per connection or request.

A client asks with ``?timeUnit=MICROSECOND`` on the WebSocket URL or the ``X-MBX-TIME-UNIT: MICROSECOND`` REST
header. The venue's feeds and views speak milliseconds, so the conversion happens at the edge, by field name:
every field Binance documents as a time (``E``, ``T``, ``O``, ``C``; a kline's ``t``/``T``, a liquidation's
order ``T``; REST ``serverTime``, ``time``, ``openTime``, ``closeTime``, ``nextFundingTime``, the kline rows'
open and close times). Never ``t`` at the top of an event: that is a trade id.
"""

from __future__ import annotations

from typing import Any

import orjson

TIME_UNIT_HEADER = "X-MBX-TIME-UNIT"
MICROSECOND = "MICROSECOND"
_EVENT_TIMES = frozenset({"E", "T", "O", "C"})
_NESTED_TIMES = {"k": frozenset({"t", "T"}), "o": frozenset({"T"})}
_REST_TIMES = frozenset({"serverTime", "time", "openTime", "closeTime", "nextFundingTime", "updateTime", "T", "E",
                         "transactTime"})


def wants_micro(value: str | None) -> bool:
    return value is not None and value.upper() == MICROSECOND


def _event(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_event(x) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for k, v in obj.items():
        if k in _EVENT_TIMES and isinstance(v, int) and not isinstance(v, bool):
            v = v * 1000
        elif k in _NESTED_TIMES and isinstance(v, dict):
            v = {nk: nv * 1000 if nk in _NESTED_TIMES[k] and isinstance(nv, int) else nv for nk, nv in v.items()}
        out[k] = v
    return out


def event_text(text: str) -> str:
    """A stream message (raw or wrapped in ``{"stream", "data"}``) with its times in microseconds."""
    obj = orjson.loads(text)
    if isinstance(obj, dict) and "stream" in obj and "data" in obj:
        obj["data"] = _event(obj["data"])
    else:
        obj = _event(obj)
    return orjson.dumps(obj).decode()


def _rest(obj: Any, kline_rows: bool) -> Any:
    if isinstance(obj, list):
        if kline_rows and len(obj) == 12 and isinstance(obj[0], int) and isinstance(obj[6], int):
            return [obj[0] * 1000, *obj[1:6], obj[6] * 1000, *obj[7:]]
        return [_rest(x, kline_rows) for x in obj]
    if isinstance(obj, dict):
        return {k: v * 1000 if k in _REST_TIMES and isinstance(v, int) and not isinstance(v, bool)
                else _rest(v, False) for k, v in obj.items()}
    return obj


def rest_body(body: bytes, path: str) -> bytes:
    """A REST JSON body with its times in microseconds (``path`` tells kline rows from other lists)."""
    return orjson.dumps(_rest(orjson.loads(body), path.endswith("/klines")))
