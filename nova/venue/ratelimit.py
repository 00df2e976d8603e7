"""Binance's REST rate-limit replies, as the venue gives them (the limits themselves: nova.core.limits).

Every REST request under ``/api/v3`` and ``/fapi/v1`` costs its weight against its client IP's budget of the
current window (a fixed window aligned to the clock, as Binance's minute); every answer says the weight used so
far in the ``X-MBX-USED-WEIGHT-1M`` header. A request over the budget is answered 429 with ``Retry-After`` (the
seconds to the next window) and is not served; a client that sends more than ``ban_after`` further requests
before that is banned: 418 with ``Retry-After`` for ``ban_s``. Limits are per market (spot and USDⓈ-M are
separate servers at Binance) and configurable, so tests can use tiny ones (``nova venue --spot-weight-limit``,
``POST /_venue/limits``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from nova.core.limits import BANNED, DEFAULT_BAN_S, THROTTLED, WEIGHT_PER_MINUTE, WEIGHT_WINDOW_S
from nova.core.markets import Market

# WebSocket messages a client may send per second per connection (requests, pings and pongs alike): Binance's
# spot streams allow 5, USDⓈ-M 10, and close a connection over it.
INCOMING_PER_S: dict[Market, int] = {"spot": 5, "perp": 10}


class IncomingCounter:
    """Counts one connection's incoming WebSocket messages over the last second."""

    def __init__(self, per_s: int) -> None:
        self.per_s = per_s
        self.times: deque[float] = deque()

    def over(self, now: float | None = None) -> bool:
        """Count a message; True once the connection has sent more than its limit within one second."""
        if not self.per_s:
            return False
        now = time.monotonic() if now is None else now
        times = self.times
        times.append(now)
        while times and times[0] <= now - 1.0:
            times.popleft()
        return len(times) > self.per_s


@dataclass
class RateLimits:
    """The venue's REST limits: weight per window per IP and market (0: no limit), and the ban."""

    weight: dict[Market, int] = field(default_factory=lambda: dict(WEIGHT_PER_MINUTE))
    window_s: float = WEIGHT_WINDOW_S
    ban_after: int = 5  # requests a client may still send while told to wait, before it is banned
    ban_s: float = DEFAULT_BAN_S

    def check(self) -> None:
        if any(not isinstance(v, int) or v < 0 for v in self.weight.values()):
            raise ValueError("weight limits must be whole numbers, 0 for no limit")
        if self.window_s <= 0 or self.ban_s <= 0 or self.ban_after < 0:
            raise ValueError("the window and the ban must be positive, ban_after not negative")

    def rate_limits(self, market: Market, announced: list[dict]) -> list[dict]:
        """exchangeInfo's ``rateLimits`` with the REQUEST_WEIGHT entry saying this venue's limit and window."""
        others = [e for e in announced if e.get("rateLimitType") != "REQUEST_WEIGHT"]
        if not self.weight.get(market):
            return others
        if self.window_s % 60 == 0:
            interval, num = "MINUTE", int(self.window_s // 60)
        else:
            interval, num = "SECOND", max(1, round(self.window_s))
        return [{"rateLimitType": "REQUEST_WEIGHT", "interval": interval, "intervalNum": num,
                 "limit": self.weight[market]}, *others]


@dataclass
class _Client:
    window: int = -1
    used: int = 0
    wait_until: float = 0.0  # told to wait (429) until then
    strikes: int = 0  # requests sent while told to wait
    banned_until: float = 0.0


@dataclass
class Verdict:
    """What to answer: ``status`` None to serve; ``used`` for the header; ``retry_after_s`` with a refusal."""

    status: int | None
    used: int
    retry_after_s: int = 0
    until_ms: int = 0


class WeightCounter:
    """Counts request weight per (market, client IP) and decides 429/418, Binance's way."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self.clients: dict[tuple[Market, str], _Client] = {}
        self.throttled = {"spot": 0, "perp": 0}
        self.banned = {"spot": 0, "perp": 0}

    def admit(self, market: Market, ip: str, weight: int, now: float | None = None) -> Verdict:
        now = time.time() if now is None else now
        limit = self.limits.weight.get(market, 0)
        client = self.clients.setdefault((market, ip), _Client())
        window = int(now // self.limits.window_s)
        if window != client.window:
            client.window, client.used = window, 0
        if client.banned_until > now:
            self.banned[market] += 1
            return self._refuse(BANNED, client, client.banned_until, now)
        if client.wait_until > now:
            client.strikes += 1
            if client.strikes > self.limits.ban_after:
                client.banned_until = now + self.limits.ban_s
                self.banned[market] += 1
                return self._refuse(BANNED, client, client.banned_until, now)
            self.throttled[market] += 1
            return self._refuse(THROTTLED, client, client.wait_until, now)
        if limit and client.used + weight > limit:
            client.wait_until, client.strikes = (window + 1) * self.limits.window_s, 0
            self.throttled[market] += 1
            return self._refuse(THROTTLED, client, client.wait_until, now)
        client.used += weight
        return Verdict(None, client.used)

    @staticmethod
    def _refuse(status: int, client: _Client, until: float, now: float) -> Verdict:
        return Verdict(status, client.used, max(1, math.ceil(until - now)), int(until * 1000))

    def used(self, market: Market) -> dict[str, int]:
        """Weight used in the current window, per client IP."""
        window = int(time.time() // self.limits.window_s)
        return {ip: c.used for (m, ip), c in self.clients.items() if m == market and c.window == window}

    def clear(self) -> None:
        """Forget every count and ban (the control API does this when the limits change)."""
        self.clients.clear()
