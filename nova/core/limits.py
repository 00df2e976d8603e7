"""Binance's connection and request limits, stated once: the recorder paces itself by them and the venue
enforces them (``nova.venue.ratelimit``).

Numbers from Binance's API documentation (spot ``/api/v3``, USDⓈ-M ``/fapi/v1``), December 2026:
- WebSocket: a connection carries at most 1024 streams on spot and 200 on USDⓈ-M; an IP may open at most 300
  connections per 5 minutes (each market's servers count their own).
- REST: request weight is counted per IP per minute, 6000 on spot and 2400 on USDⓈ-M, and reported in the
  ``X-MBX-USED-WEIGHT-1M`` header of every response. Over the limit the answer is 429 with a ``Retry-After``
  (seconds); an IP that keeps sending after 429s is banned with 418 (``Retry-After`` again, 2 minutes up to 3
  days).
- ``GET depth`` weighs by its ``limit`` (tables below); exchangeInfo weighs 20 on spot (2 for one symbol) and 1
  on USDⓈ-M; openInterest 1; anything else this project asks 1.
"""

from __future__ import annotations

import math

from nova.core.markets import Market

STREAMS_PER_CONNECTION: dict[Market, int] = {"spot": 1024, "perp": 200}
CONNECTIONS_PER_WINDOW = 300
CONNECTION_WINDOW_S = 300.0
WEIGHT_PER_MINUTE: dict[Market, int] = {"spot": 6000, "perp": 2400}
WEIGHT_WINDOW_S = 60.0
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
THROTTLED = 429  # over the weight limit: wait Retry-After
BANNED = 418  # kept sending after 429s: banned for Retry-After
DEFAULT_BAN_S = 120.0

# (highest limit, weight) in increasing order of limit
_SPOT_DEPTH_WEIGHTS = ((100, 5), (500, 25), (1000, 50), (5000, 250))
_PERP_DEPTH_WEIGHTS = ((50, 2), (100, 5), (500, 10), (1000, 20))


def depth_weight(market: Market, limit: int) -> int:
    """The request weight of a depth snapshot of ``limit`` levels."""
    for top, weight in _SPOT_DEPTH_WEIGHTS if market == "spot" else _PERP_DEPTH_WEIGHTS:
        if limit <= top:
            return weight
    return (_SPOT_DEPTH_WEIGHTS if market == "spot" else _PERP_DEPTH_WEIGHTS)[-1][1]


def request_weight(market: Market, path: str, query: dict[str, str]) -> int:
    """The weight of a REST request to ``path`` (its last part: ``depth``, ``exchangeInfo`` ...)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name == "depth":
        default = 100 if market == "spot" else 500
        text = query.get("limit", "")
        return depth_weight(market, int(text) if text.isdigit() and len(text) < 10 else default)
    if name == "exchangeInfo":
        if market == "spot":
            return 2 if "symbol" in query else 20
        return 1
    return 1


def weight_limits(rate_limits: object, market: Market) -> tuple[int, float]:
    """(weight limit, window in seconds) announced in an exchangeInfo ``rateLimits`` list, or Binance's
    defaults when it announces none."""
    seconds = {"SECOND": 1.0, "MINUTE": 60.0, "HOUR": 3600.0, "DAY": 86400.0}
    for entry in rate_limits if isinstance(rate_limits, list) else []:
        if isinstance(entry, dict) and entry.get("rateLimitType") == "REQUEST_WEIGHT":
            try:
                window = seconds[str(entry.get("interval"))] * int(entry.get("intervalNum", 1))
                limit = int(entry["limit"])
            except (KeyError, TypeError, ValueError):
                continue
            if limit > 0 and window > 0:
                return limit, window
    return WEIGHT_PER_MINUTE[market], WEIGHT_WINDOW_S


def connections_per_process(workers: int, markets: int) -> int:
    """How many WebSocket connections one of ``workers`` processes may keep per market, so that all of them
    (every market, each connection opened once and reopened once within the window) stay under Binance's
    connections per IP per window."""
    return max(1, math.floor(CONNECTIONS_PER_WINDOW / (2 * workers * markets)))
