"""Binance's connection and request limits, stated once: the recorder paces itself by them and the venue
enforces them (``nova.venue.ratelimit``).

Numbers from Binance's API documentation (spot ``/api/v3``, USDⓈ-M ``/fapi/v1``), December 2026:
- WebSocket: a connection carries at most 1024 streams on spot and 200 on USDⓈ-M; an IP may open at most 300
  connections per 5 minutes (each market's servers count their own); a connection is closed 24 hours after it
  opened (and earlier, after a ``serverShutdown`` notice, for maintenance).
- REST: request weight is counted per IP per minute, 6000 on spot and 2400 on USDⓈ-M, and reported in the
  ``X-MBX-USED-WEIGHT-1M`` header of every response. Over the limit the answer is 429 with a ``Retry-After``
  (seconds); an IP that keeps sending after 429s is banned with 418 (``Retry-After`` again, 2 minutes up to 3
  days).
- ``GET depth`` weighs by its ``limit`` (tables below), and so do USDⓈ-M ``klines``. The market-data endpoints
  the venue serves weigh what Binance's pages for them say (``_WEIGHTS``): most cost more when they answer for
  every symbol (no ``symbol``) than for one; spot ``ticker/24hr`` with ``symbols`` weighs by how many are named.
  exchangeInfo weighs 20 on spot and 1 on USDⓈ-M; anything else 1.
"""

from __future__ import annotations

import math

from nova.core.markets import Market

STREAMS_PER_CONNECTION: dict[Market, int] = {"spot": 1024, "perp": 200}
CONNECTIONS_PER_WINDOW = 300
CONNECTION_WINDOW_S = 300.0
CONNECTION_MAX_AGE_S = 24 * 3600.0
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


# USDⓈ-M klines by limit: (highest limit, weight); above the last, 10
_PERP_KLINE_WEIGHTS = ((99, 1), (499, 2), (1000, 5))
_PERP_KLINE_TOP_WEIGHT = 10
_KLINES_DEFAULT_LIMIT = 500
# spot ticker/24hr with ``symbols``: (most symbols named, weight); more than the last weighs as all symbols
_SPOT_TICKER_SYMBOLS_WEIGHTS = ((20, 2), (100, 40))

# (market, endpoint under /api/v3 or /fapi/v1) -> (weight for one symbol, weight for every symbol). Endpoints
# that require a symbol have both the same. Binance API docs (spot rest-api.md; USDⓈ-M "Market Data"), 2026.
_WEIGHTS: dict[tuple[Market, str], tuple[int, int]] = {
    ("spot", "exchangeInfo"): (20, 20),
    ("spot", "ticker/price"): (2, 4),
    ("spot", "ticker/bookTicker"): (2, 4),
    ("spot", "ticker/24hr"): (2, 80),
    ("spot", "klines"): (2, 2),
    ("spot", "trades"): (25, 25),
    ("spot", "aggTrades"): (4, 4),
    ("spot", "avgPrice"): (2, 2),
    ("perp", "exchangeInfo"): (1, 1),
    ("perp", "ticker/price"): (1, 2),
    ("perp", "ticker/bookTicker"): (2, 5),
    ("perp", "ticker/24hr"): (1, 40),
    ("perp", "trades"): (5, 5),
    ("perp", "aggTrades"): (20, 20),
    ("perp", "premiumIndex"): (1, 10),
    ("perp", "openInterest"): (1, 1),
}


def _endpoint(path: str) -> str:
    """``/api/v3/ticker/price`` -> ``ticker/price``: the path under the market's API prefix."""
    parts = path.strip("/").split("/")
    return "/".join(parts[2:]) if len(parts) > 2 else parts[-1]


def _limit(query: dict[str, str], default: int) -> int:
    text = query.get("limit", "")
    return int(text) if text.isdigit() and len(text) < 10 else default


def _symbols_named(query: dict[str, str]) -> int:
    """How many symbols a ``symbols=["A","B"]`` parameter names."""
    return len([s for s in query.get("symbols", "").strip("[]").split(",") if s.strip().strip('"')])


def request_weight(market: Market, path: str, query: dict[str, str]) -> int:
    """The weight of a REST request to ``path`` (``/api/v3/depth``, ``/fapi/v1/ticker/24hr`` ...)."""
    name = _endpoint(path)
    if name == "depth":
        return depth_weight(market, _limit(query, 100 if market == "spot" else 500))
    if name == "klines" and market == "perp":
        limit = _limit(query, _KLINES_DEFAULT_LIMIT)
        return next((w for top, w in _PERP_KLINE_WEIGHTS if limit <= top), _PERP_KLINE_TOP_WEIGHT)
    weights = _WEIGHTS.get((market, name))
    if weights is None:
        return 1
    one, every = weights
    if "symbol" in query:
        return one
    if market == "spot" and name == "ticker/24hr" and "symbols" in query:
        named = _symbols_named(query)
        return next((w for top, w in _SPOT_TICKER_SYMBOLS_WEIGHTS if named <= top), every)
    return every


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
