"""What a USDT-M perpetual has besides its book: liquidations (``<symbol>@forceOrder``) and open interest.

Why they are modelled rather than drawn at random: a recorder that stores liquidations next to the book is
meant for studies that ask *when* liquidations happen and *what* they did to the price, so the synthetic ones
follow the market: they cluster right after the perp price moves (a move or a basis jump pushes leveraged
positions past their margin), they are on the side the move hurt (the price fell: longs are sold out,
``SELL``; it rose: shorts are bought in, ``BUY``), and they are priced through the touch of the current book,
with the average fill price what sweeping that book would have given.

Binance pushes at most one liquidation per symbol per 1000 ms: the latest one of the window, as a snapshot.
The window runs on the engine clock, so the pushes, like every other synthetic message, follow from the seed.

Open interest is a slow random walk around its starting level (about 2e8 USDT of notional), moved a little
by every trade (a position opened or closed) and down by every liquidation (a position closed by force).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nova.venue.instruments import Instrument

if TYPE_CHECKING:
    from nova.venue.synthetic import SyntheticBook

LIQUIDATIONS_PER_S = 1 / 40  # base hazard per symbol at rate 1; with the moves, about one per 20-30 s
MOVE_EMA_S = 5.0  # "recently": the perp mid against its own ~5 s average
MOVE_SCALE_BPS = 4.0  # a move of this size doubles the hazard, twice this size makes it five times
MAX_BOOST = 25.0
NOTIONAL_MEDIAN_USDT = 3000.0
NOTIONAL_SIGMA = 1.3
THROUGH_TOUCH_MEDIAN = 0.0004  # a liquidation's limit price sits this far through the touch (a fraction)
TIGHT_PRICE_SHARE = 0.08  # now and then it is priced a tick or two through and the book cannot fill it all

OPEN_INTEREST_USDT = 2e8
OPEN_INTEREST_VOL_PER_SQRT_S = 0.0004  # ~2.4 % per hour
OPEN_INTEREST_REVERSION_PER_S = 1 / (6 * 3600)


@dataclass(frozen=True)
class Liquidation:
    """One liquidation order as the engine saw it, in integer ticks and lots of its instrument."""

    sell: bool
    price: int  # limit price, ticks
    avg_price_units: int  # average fill price in units of 10**-tick_decimals (between price and the touch)
    qty: int  # lots
    filled: int  # lots, 1 <= filled <= qty
    last: int  # lots of the last fill, 1 <= last <= filled
    time_ms: int

    @property
    def status(self) -> str:
        return "FILLED" if self.filled == self.qty else "PARTIALLY_FILLED"


def force_order_payload(inst: Instrument, liq: Liquidation, event_ms: int) -> dict:
    """The ``forceOrder`` event, fields and formats as Binance USDT-M sends them."""
    ps, qs, tu, su = inst.price_str, inst.qty_str, inst.tick_units, inst.step_units
    return {"e": "forceOrder", "E": event_ms, "o": {
        "s": inst.symbol.exchange_id, "S": "SELL" if liq.sell else "BUY", "o": "LIMIT", "f": "IOC",
        "q": qs(liq.qty * su), "p": ps(liq.price * tu), "ap": ps(liq.avg_price_units), "X": liq.status,
        "l": qs(liq.last * su), "z": qs(liq.filled * su), "T": liq.time_ms}}


def open_interest_body(inst: Instrument, lots: float, time_ms: int) -> dict:
    """The ``/fapi/v1/openInterest`` body: base units at the step's decimals, as Binance answers it."""
    return {"openInterest": inst.qty_str(max(0, round(lots)) * inst.step_units), "symbol": inst.symbol.exchange_id,
            "time": time_ms}


class PerpFlow:
    """Liquidations and open interest of one perp symbol, each from its own random stream of the seed.

    Own streams, so that adding them left every book, trade and mark price of a seed as it was.
    """

    def __init__(self, seed: int, inst: Instrument, mid: float) -> None:
        sym = inst.symbol.exchange_id
        self.inst = inst
        self.liq_rng = random.Random(f"{seed}:{sym}:liquidations")
        self.oi_rng = random.Random(f"{seed}:{sym}:openInterest")
        self.mid_ema = mid
        self.move_bps = 0.0
        step = float(inst.step)
        self.oi_anchor = OPEN_INTEREST_USDT / inst.reference_price / step * self.oi_rng.uniform(0.8, 1.2)
        self.oi_lots = self.oi_anchor
        self.pending: Liquidation | None = None  # the latest liquidation of the current 1000 ms window
        self.liquidations = 0  # generated, pushed or not
        self.pushed = 0

    # ---- the engine's tick ---------------------------------------------------------------------------
    def advance(self, book: SyntheticBook, mid: float, dt: float, rate: float, now_ms: int) -> Liquidation | None:
        """One engine tick: follow the perp mid, walk open interest, maybe liquidate someone."""
        self.move_bps = (mid / self.mid_ema - 1) * 1e4
        self.mid_ema += (mid - self.mid_ema) * dt / MOVE_EMA_S
        self._walk_open_interest(dt)
        if self.liq_rng.random() >= self.hazard_per_s(rate) * dt:
            return None
        liq = self.liquidate(book, now_ms)
        self.pending = liq
        self.liquidations += 1
        self.oi_lots = max(0.0, self.oi_lots - liq.filled)
        return liq

    def hazard_per_s(self, rate: float) -> float:
        boost = 1.0 + min(MAX_BOOST, (self.move_bps / MOVE_SCALE_BPS) ** 2)
        return LIQUIDATIONS_PER_S * boost * rate

    def take_pending(self) -> Liquidation | None:
        """Close the 1000 ms window: its latest liquidation, if any, is the one Binance pushes."""
        liq, self.pending = self.pending, None
        if liq is not None:
            self.pushed += 1
        return liq

    def on_trade(self, lots: int) -> None:
        """A trade opens or closes positions: open interest moves by its size, either way."""
        self.oi_lots = max(0.0, self.oi_lots + (lots if self.oi_rng.random() < 0.5 else -lots))

    # ---- pieces ----------------------------------------------------------------------------------------
    def _walk_open_interest(self, dt: float) -> None:
        drift = OPEN_INTEREST_REVERSION_PER_S * math.log(self.oi_anchor / max(self.oi_lots, 1.0)) * dt
        shock = OPEN_INTEREST_VOL_PER_SQRT_S * math.sqrt(dt) * self.oi_rng.gauss(0.0, 1.0)
        self.oi_lots *= math.exp(drift + shock)

    def liquidate(self, book: SyntheticBook, now_ms: int) -> Liquidation:
        """A liquidation on the side the recent move hurt, priced through the touch of ``book``."""
        rng = self.liq_rng
        # The side the recent move hurt; with no clear move, either.
        sell = self.move_bps < 0 if abs(self.move_bps) >= 0.5 else rng.random() < 0.5
        touch = book.best_bid if sell else book.best_ask
        if rng.random() < TIGHT_PRICE_SHARE:
            through = rng.randint(1, 2)
        else:
            through = max(1, round(touch * min(0.01, rng.lognormvariate(math.log(THROUGH_TOUCH_MEDIAN), 0.7))))
        price = touch - through if sell else touch + through
        notional = NOTIONAL_MEDIAN_USDT * rng.lognormvariate(0.0, NOTIONAL_SIGMA)
        qty = max(1, round(notional / (touch * book.tick) / book.step))
        filled, notional_units, last = sweep(book, sell, price, qty)
        avg = round(notional_units / filled) if filled else touch * self.inst.tick_units
        return Liquidation(sell, price, avg, qty, filled, last, now_ms)


def sweep(book: SyntheticBook, sell: bool, limit_px: int, want: int) -> tuple[int, int, int]:
    """What an IOC order for ``want`` lots limited at ``limit_px`` would take from the book, without taking it:
    (lots filled, sum of price units x lots, lots of the last fill). The book itself is left alone: its
    takers already model the aggressive flow, and so every book of a seed stayed what it was before
    liquidations existed."""
    ladder = book.bid_px if sell else book.ask_px
    sizes = book.bids if sell else book.asks
    tick_units = book.inst.tick_units
    filled = notional = last = 0
    n = len(ladder)
    for i in range(n):
        px = ladder[n - 1 - i] if sell else ladder[i]
        if (px < limit_px) if sell else (px > limit_px):
            break
        last = min(want - filled, sizes[px])
        filled += last
        notional += px * tick_units * last
        if filled == want:
            break
    return filled, notional, last
