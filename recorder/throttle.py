"""Pacing REST requests by Binance's request weight, so that many symbols (and many recorder processes on one
IP) resync without being throttled or banned.

Binance counts weight per IP in fixed windows (a minute, aligned to the clock) and says the weight used so far
in every answer (``X-MBX-USED-WEIGHT-1M``). A ``WeightBudget`` keeps a market's requests under two caps: this
process's share of the limit (``share``: 1/N for N worker processes on one machine), and, from the header, the
whole IP's use (other processes, other tools), each with some headroom. A request that does not fit waits for
the next window. A 429 or 418 is answered by waiting its ``Retry-After`` before anything else is asked. The
limit and the window come from the server's exchangeInfo ``rateLimits`` (nova.core.limits.weight_limits).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import ccxt

from nova.core.limits import BANNED, USED_WEIGHT_HEADER, WEIGHT_PER_MINUTE, WEIGHT_WINDOW_S
from nova.core.markets import Market

HEADROOM = 0.9  # of a limit: the weight of requests in flight is only known when they are answered


class Throttled(ccxt.RateLimitExceeded):
    """The server answered 429 (over the weight limit) or 418 (banned); wait ``retry_after_s``."""

    def __init__(self, status: int, retry_after_s: float, text: str) -> None:
        super().__init__(text)
        self.status, self.retry_after_s = status, retry_after_s

    @property
    def banned(self) -> bool:
        return self.status == BANNED


def header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    """A response header by name, whatever its case."""
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def retry_after_s(headers: Mapping[str, Any] | None, default: float = 1.0) -> float:
    """The ``Retry-After`` of an answer in seconds (Binance sends whole seconds), or ``default``."""
    text = header(headers, "Retry-After")
    try:
        return max(0.0, float(text)) if text is not None else default
    except ValueError:
        return default


class WeightBudget:
    """The request weight one market of one recorder may still spend in the current window."""

    def __init__(self, market: Market, share: float = 1.0) -> None:
        self.market = market
        self.share = share
        self.limit, self.window_s = WEIGHT_PER_MINUTE[market], WEIGHT_WINDOW_S
        self.window = -1
        self.used = 0  # by this process, in this window
        self.ip_used = 0  # by the whole IP, as the server last said (plus what we sent since)
        self.hold_until = 0.0
        self.waits = 0  # requests that had to wait (for the status view and the tests)
        self.throttled = 0  # 429/418 answers received

    def configure(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s

    def _roll(self, now: float) -> int:
        window = int(now // self.window_s)
        if window != self.window:
            self.window, self.used, self.ip_used = window, 0, 0
        return window

    async def acquire(self, weight: int) -> None:
        """Wait until ``weight`` fits in this window (a request heavier than a whole share goes alone)."""
        waited = False
        while True:
            now = time.time()
            if self.hold_until > now:
                waited = True
                await asyncio.sleep(self.hold_until - now)
                continue
            window = self._roll(now)
            own_cap, ip_cap = self.limit * self.share * HEADROOM, self.limit * HEADROOM
            fits = self.used + weight <= own_cap and self.ip_used + weight <= ip_cap
            if fits or (self.used == 0 and self.ip_used + weight <= self.limit):
                self.used += weight
                self.ip_used += weight
                self.waits += waited
                return
            waited = True
            await asyncio.sleep((window + 1) * self.window_s - now + 0.05)

    def observe(self, headers: Mapping[str, Any] | None) -> None:
        """Learn the IP's use of the window from an answer's ``X-MBX-USED-WEIGHT-1M``."""
        text = header(headers, USED_WEIGHT_HEADER)
        if text is not None and text.isdigit():
            self._roll(time.time())
            self.ip_used = max(self.ip_used, int(text))

    def hold(self, seconds: float) -> None:
        """Ask nothing for ``seconds`` (a 429's or 418's Retry-After)."""
        self.throttled += 1
        self.hold_until = max(self.hold_until, time.time() + seconds)
