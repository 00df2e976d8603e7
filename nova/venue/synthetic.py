"""A seeded synthetic market: spot and perp books per symbol whose mids move together with a wandering basis.

Why it looks the way it does: a recorder, a book rebuild and a spread study are only tested if the feed has
the awkward properties of the real one. So the engine changes the book through many small internal updates
(each with its own update id) and the streams coalesce them into messages, exactly like Binance: spot ids
are contiguous, perp ids jump and chain by ``pu``, snapshots land inside message ranges, the number of level
changes per message is long-tailed (a ladder refresh now and then touches hundreds), bookTicker fires on
every top-of-book change, trades come out of the book, and funding is published every second. Each perp
also has liquidations and open interest (``nova.venue.derivatives``) that follow its price.

Everything random derives from the seed and the tick count, never from wall-clock jitter, so the same seed
replays the same sequence of internal updates.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import math
import random
import time
from dataclasses import dataclass

import orjson

from nova.core.markets import Market, Symbol
from nova.venue.derivatives import PerpFlow, force_order_payload, open_interest_body
from nova.venue.instruments import Instrument
from nova.venue.source import FeedSource, Publish
from nova.venue.streams import DEPTH_SPEEDS_MS, FORCE_ORDER_KEY, DepthWindow, depth_key, mark_key

TICK_MS = 10  # engine step; depth windows are whole numbers of steps
FORCE_ORDER_WINDOW_TICKS = 1000 // TICK_MS  # Binance pushes at most one liquidation per symbol per 1000 ms
MAX_LEVELS = 800  # per side; stays under ccxt's default snapshot depth (1000) so its book can be exact
MIN_LEVELS = 300


@dataclass(frozen=True)
class MarketProfile:
    """Realistic rates per market at ``rate == 1`` (Binance ETHUSDT, 2024)."""

    updates_per_s: float  # internal book updates
    batch_per_s: float  # engine batches, i.e. messages of the 0 ms depth stream
    id_jump: int  # perp ids advance by 1..id_jump per update (other symbols share the id space)
    levels_mean: float  # mean levels touched by an ordinary update
    refresh_share: float  # share of updates that re-size a whole ladder (tens to hundreds of levels)


PROFILES: dict[Market, MarketProfile] = {
    "spot": MarketProfile(updates_per_s=150.0, batch_per_s=30.0, id_jump=1, levels_mean=1.3, refresh_share=0.005),
    "perp": MarketProfile(updates_per_s=260.0, batch_per_s=20.0, id_jump=900, levels_mean=7.0, refresh_share=0.012),
}


def _text(payload: dict) -> str:
    return orjson.dumps(payload).decode()


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


class SyntheticBook:
    """One market's book in integer ticks and lots, with the update machinery of the engine."""

    def __init__(self, inst: Instrument, rng: random.Random, first_id: int) -> None:
        self.inst = inst
        self.rng = rng
        self.profile = PROFILES[inst.market]
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.bid_px: list[int] = []  # ascending
        self.ask_px: list[int] = []  # ascending
        self.last_id = first_id
        self.last_time_ms = int(time.time() * 1000)
        self.trade_id = rng.randrange(10**9, 2 * 10**9)
        self.agg_id = rng.randrange(10**8, 10**9)
        self.tick = float(inst.tick)
        self.step = float(inst.step)
        # Median resting size worth about $4k, heavy tailed like real books.
        self.lot_median = max(1.0, 4000.0 / inst.reference_price / self.step)
        self.changes: list[tuple[bool, int, int]] = []
        self.trades: list[tuple[int, int, bool]] = []  # (price ticks, lots, buyer_is_maker)
        self.halted = False  # trading halted (exchangeInfo status BREAK): the book stands still

    # ---- primitive edits -------------------------------------------------------------------------------
    def _set(self, is_bid: bool, px: int, lots: int) -> None:
        book, ladder = (self.bids, self.bid_px) if is_bid else (self.asks, self.ask_px)
        if lots <= 0:
            if px in book:
                del book[px]
                del ladder[bisect.bisect_left(ladder, px)]
                self.changes.append((is_bid, px, 0))
            return
        if px not in book:
            bisect.insort(ladder, px)
        book[px] = lots
        self.changes.append((is_bid, px, lots))

    def _lots(self, scale: float = 1.0) -> int:
        return max(1, int(self.lot_median * scale * self.rng.lognormvariate(0.0, 1.3)))

    @property
    def best_bid(self) -> int:
        return self.bid_px[-1]

    @property
    def best_ask(self) -> int:
        return self.ask_px[0]

    def top(self) -> tuple[int, int, int, int]:
        bb, ba = self.bid_px[-1], self.ask_px[0]
        return bb, self.bids[bb], ba, self.asks[ba]

    # ---- construction ----------------------------------------------------------------------------------
    def build(self, mid_ticks: int) -> None:
        rng = self.rng
        for is_bid in (True, False):
            px = mid_ticks - 1 if is_bid else mid_ticks + 1
            for i in range(rng.randrange(450, 600)):
                self._set(is_bid, px, self._lots(1.0 + i / 100))
                gap = 1 if i < 30 else 1 + int(rng.expovariate(1 / (1 + i / 40)))
                px = px - gap if is_bid else px + gap
        self.changes.clear()

    # ---- one internal update ---------------------------------------------------------------------------
    def update(self, target_mid_ticks: float, time_ms: int) -> None:
        """Apply one internal update, leaving its level changes in ``changes`` and fills in ``trades``."""
        rng = self.rng
        book_mid = (self.best_bid + self.best_ask) / 2
        drift = target_mid_ticks - book_mid
        r = rng.random()
        if abs(drift) >= 1.0 and r < 0.45:
            self._move(drift)
        elif r < 0.49:
            self._take(rng.random() < 0.5)
        elif r < 1.0 - self.profile.refresh_share:
            for _ in range(1 + int(rng.expovariate(1 / max(self.profile.levels_mean - 1, 0.01)))):
                self._quote()
        else:
            self._refresh()
        self._keep_depth()
        self.last_id += 1 if self.profile.id_jump == 1 else rng.randint(1, self.profile.id_jump)
        self.last_time_ms = time_ms

    def _quote(self) -> None:
        """Place, resize or cancel resting liquidity, mostly near the top."""
        rng = self.rng
        is_bid = rng.random() < 0.5
        # Mostly near the top; now and then far away, like the real book's 200.00 bids.
        dist = rng.randrange(50, 3000) if rng.random() < 0.03 else int(rng.expovariate(0.12))
        best = self.best_bid if is_bid else self.best_ask
        px = best - dist if is_bid else best + dist
        if px <= 0:
            return
        book = self.bids if is_bid else self.asks
        spread = self.best_ask - self.best_bid
        if spread > 1 and rng.random() < 0.5:  # someone improves the price inside a wide spread
            px = self.best_bid + 1 if is_bid else self.best_ask - 1
        if px in book and rng.random() < 0.35 and len(book) > 1:
            self._set(is_bid, px, 0)
        else:
            self._set(is_bid, px, self._lots())
        if self.bid_px[-1] >= self.ask_px[0]:  # never happens by construction; a guard for the invariant
            raise AssertionError("synthetic book crossed")

    def _take(self, buy: bool) -> None:
        """A taker order walking the opposite side: fills become trades, emptied levels disappear."""
        rng = self.rng
        want = self._lots(0.4)
        levels = self.ask_px if buy else self.bid_px
        book = self.asks if buy else self.bids
        while want > 0 and len(levels) > 1:
            px = levels[0] if buy else levels[-1]
            have = book[px]
            fill = min(want, have)
            self.trades.append((px, fill, not buy))
            want -= fill
            self._set(not buy, px, have - fill)
            if rng.random() < 0.7:
                break

    def _move(self, drift: float) -> None:
        """Follow the target mid: takers clear the near side and makers quote at the new prices."""
        up = drift > 0
        steps = min(int(abs(drift)) or 1, 3)
        for _ in range(steps):
            taken = self.rng.random() < 0.12  # the level is traded through, or its makers step away
            if up:
                px = self.ask_px[0]
                if len(self.ask_px) > 1:
                    if taken:
                        self.trades.append((px, self.asks[px], False))
                    self._set(False, px, 0)
                self._set(True, self.ask_px[0] - 1, self._lots())
            else:
                px = self.bid_px[-1]
                if len(self.bid_px) > 1:
                    if taken:
                        self.trades.append((px, self.bids[px], True))
                    self._set(True, px, 0)
                self._set(False, self.bid_px[-1] + 1, self._lots())

    def _refresh(self) -> None:
        """A market maker re-sizing a whole ladder: the long tail of level changes per message."""
        rng = self.rng
        is_bid = rng.random() < 0.5
        ladder = self.bid_px if is_bid else self.ask_px
        n = min(len(ladder), rng.randrange(50, 400))
        chosen = ladder[-n:] if is_bid else ladder[:n]
        for px in list(chosen):
            if rng.random() < 0.6:
                self._set(is_bid, px, self._lots())

    def _keep_depth(self) -> None:
        while len(self.bid_px) > MAX_LEVELS:
            self._set(True, self.bid_px[0], 0)
        while len(self.ask_px) > MAX_LEVELS:
            self._set(False, self.ask_px[-1], 0)
        while len(self.bid_px) < MIN_LEVELS and self.bid_px[0] > 2:
            self._set(True, max(1, self.bid_px[0] - 1 - int(self.rng.expovariate(0.3))), self._lots(2.0))
        while len(self.ask_px) < MIN_LEVELS:
            self._set(False, self.ask_px[-1] + 1 + int(self.rng.expovariate(0.3)), self._lots(2.0))

    # ---- views -----------------------------------------------------------------------------------------
    def levels(self, limit: int | None = None) -> tuple[list[list[str]], list[list[str]]]:
        ps, qs = self.inst.price_str, self.inst.qty_str
        tu, su = self.inst.tick_units, self.inst.step_units
        bid_px = self.bid_px[::-1] if limit is None else self.bid_px[: -limit - 1 : -1]
        ask_px = self.ask_px if limit is None else self.ask_px[:limit]
        bids = [[ps(p * tu), qs(self.bids[p] * su)] for p in bid_px]
        asks = [[ps(p * tu), qs(self.asks[p] * su)] for p in ask_px]
        return bids, asks


@dataclass
class _SymbolPath:
    """The shared random walk of one symbol: spot mid and the perp basis (in bps) around it."""

    mid: float
    basis_bps: float
    premium_ema: float = 0.0


class SyntheticSource(FeedSource):
    """Runs every synthetic book of the venue on one clock and publishes their streams."""

    BASIS_MEAN_BPS = 4.0
    BASIS_REVERSION_PER_S = 1 / 120
    BASIS_VOL_BPS = 0.8  # per sqrt(second): stationary sd ~ 6 bps
    BASIS_JUMP_PER_S = 1 / 240
    MID_VOL_BPS = 1.5  # per sqrt(second)

    def __init__(self, symbols: list[Symbol], seed: int = 1, rate: float = 1.0,
                 spot_only: list[Symbol] | None = None) -> None:
        super().__init__()
        spot_only = spot_only or []
        self.seed = seed
        self.rate = rate
        self.instruments = []
        self.books: dict[tuple[Market, str], SyntheticBook] = {}
        self.paths: dict[str, _SymbolPath] = {}
        self.windows: dict[tuple[Market, str], dict[int, DepthWindow]] = {}
        self.flows: dict[str, PerpFlow] = {}  # perp symbol -> its liquidations and open interest
        self.path_rng = random.Random(f"{seed}:paths")
        self.batch_rng = random.Random(f"{seed}:batches")
        self.ticks = 0
        for sym in [*symbols, *spot_only]:
            self._add(sym, ("spot",) if sym in spot_only else ("spot", "perp"))

    def _add(self, sym: Symbol, markets: tuple[Market, ...]) -> None:
        for market in markets:
            inst = Instrument.for_symbol(sym, market)
            self.instruments.append(inst)
            rng = random.Random(f"{self.seed}:{sym.exchange_id}:{market}")
            first_id = rng.randrange(10**10, 4 * 10**10) if market == "spot" else \
                rng.randrange(10**12, 6 * 10**12)
            book = SyntheticBook(inst, rng, first_id)
            key = (market, sym.exchange_id)
            self.books[key] = book
            self.windows[key] = {ms: DepthWindow(ms, first_id) for ms in DEPTH_SPEEDS_MS}
        ref = Instrument.for_symbol(sym, "spot").reference_price
        self.paths[sym.exchange_id] = _SymbolPath(
            mid=ref * (1 + self.path_rng.uniform(-0.02, 0.02)), basis_bps=self.BASIS_MEAN_BPS)
        for market in markets:
            book = self.books[(market, sym.exchange_id)]
            book.build(round(self._target_mid(sym.exchange_id, market) / book.tick))
        if "perp" in markets:
            self.flows[sym.exchange_id] = PerpFlow(self.seed, self.books[("perp", sym.exchange_id)].inst,
                                                   self._target_mid(sym.exchange_id, "perp"))

    # ---- listings that change (the control API's /_venue/listing) ------------------------------------------
    def listing(self, action: str, sym: Symbol, spot_only: bool = False) -> list[Instrument]:
        """``list`` a new symbol (both markets, or spot only), ``delist`` one (gone from exchangeInfo, its streams
        fall silent), ``halt`` one (status BREAK, no updates) or ``resume`` it; returns its instruments after.
        ``ValueError`` with the reason for what cannot be done."""
        listed = [i for i in self.instruments if i.symbol == sym]
        if action == "list":
            if listed:
                raise ValueError(f"{sym.exchange_id} is listed already")
            self._add(sym, ("spot",) if spot_only else ("spot", "perp"))
        elif not listed:
            raise ValueError(f"{sym.exchange_id} is not listed")
        elif action == "delist":
            self.instruments = [i for i in self.instruments if i.symbol != sym]
            for inst in listed:
                self.books.pop((inst.market, sym.exchange_id), None)
                self.windows.pop((inst.market, sym.exchange_id), None)
            self.paths.pop(sym.exchange_id, None)
            self.flows.pop(sym.exchange_id, None)
            return []
        elif action in ("halt", "resume"):
            status = "BREAK" if action == "halt" else "TRADING"
            self.instruments = [dataclasses.replace(i, status=status) if i.symbol == sym else i
                                for i in self.instruments]
            for inst in listed:
                self.books[(inst.market, sym.exchange_id)].halted = action == "halt"
        else:
            raise ValueError(f"unknown listing action {action!r}: use list, delist, halt or resume")
        return [i for i in self.instruments if i.symbol == sym]

    def _target_mid(self, exchange_id: str, market: Market) -> float:
        path = self.paths[exchange_id]
        return path.mid if market == "spot" else path.mid * (1 + path.basis_bps / 1e4)

    # ---- the clock -------------------------------------------------------------------------------------
    async def run(self, publish: Publish) -> None:
        self._publish = publish
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            now = loop.time()
            # Always yield to the loop, even when behind: clients, REST and the control API share it.
            await asyncio.sleep(max(0.0, next_at - now))
            if all(self._paused.values()):
                await self._resumed.wait()
                next_at = loop.time()
                continue
            self.step(publish)
            next_at += TICK_MS / 1000
            if loop.time() - next_at > 1.0:  # fell far behind (machine busy): skip rather than burst
                next_at = loop.time()

    def step(self, publish: Publish) -> None:
        """Advance every unpaused market by one engine tick and publish what it produced."""
        self.ticks += 1
        dt = TICK_MS / 1000
        now_ms = int(time.time() * 1000)
        for path in self.paths.values():
            self._advance_path(path, dt)
        batch_end = self.batch_rng.random()
        for (market, exchange_id), book in self.books.items():
            if self._paused[market] or book.halted:
                continue
            profile = book.profile
            n = _poisson(book.rng, profile.updates_per_s * dt * self.rate)
            target = self._target_mid(exchange_id, market) / book.tick
            windows = self.windows[(market, exchange_id)]
            for _ in range(n):
                before = book.top()
                book.update(target, now_ms)
                if book.changes:
                    for w in windows.values():
                        w.add(book.last_id, now_ms, book.changes)
                    book.changes = []
                if book.trades:
                    self._publish_trades(publish, book, now_ms)
                if book.top() != before:
                    self._publish_book_ticker(publish, book, now_ms)
            # Engine batches (the 0 ms stream) close at a rate-scaled probability per tick.
            p_batch = min(1.0, profile.batch_per_s * dt * max(1.0, self.rate ** 0.5))
            for ms, w in windows.items():
                due = batch_end < p_batch if ms == 0 else self.ticks % (ms // TICK_MS) == 0
                if due:
                    self._flush(publish, book, w, now_ms)
            if market == "perp":
                if self.ticks % 100 == 0:
                    self._publish_mark(publish, book, exchange_id, 1, now_ms)
                if self.ticks % 300 == 0:
                    self._publish_mark(publish, book, exchange_id, 3, now_ms)
                self._advance_flow(publish, book, exchange_id, dt, now_ms)

    def _advance_flow(self, publish: Publish, book: SyntheticBook, exchange_id: str, dt: float,
                      now_ms: int) -> None:
        """Liquidations and open interest of a perp, after its book moved; a 1000 ms window's latest
        liquidation is pushed when the window closes."""
        flow = self.flows[exchange_id]
        flow.advance(book, self._target_mid(exchange_id, "perp"), dt, self.rate, now_ms)
        if self.ticks % FORCE_ORDER_WINDOW_TICKS == 0:
            liq = flow.take_pending()
            if liq is not None:
                payload = force_order_payload(book.inst, liq, now_ms)
                publish("perp", book.inst.symbol.stream_id, FORCE_ORDER_KEY, _text(payload))

    def _advance_path(self, path: _SymbolPath, dt: float) -> None:
        rng = self.path_rng
        sq = math.sqrt(dt)
        path.mid *= math.exp(self.MID_VOL_BPS / 1e4 * sq * rng.gauss(0, 1))
        path.basis_bps += (self.BASIS_REVERSION_PER_S * (self.BASIS_MEAN_BPS - path.basis_bps) * dt
                           + self.BASIS_VOL_BPS * sq * rng.gauss(0, 1))
        if rng.random() < self.BASIS_JUMP_PER_S * dt:
            path.basis_bps += rng.choice((-1, 1)) * rng.uniform(8, 20)
        path.premium_ema += (path.basis_bps / 1e4 - path.premium_ema) * dt / 60

    # ---- payloads (field order and formats as Binance sends them) ---------------------------------------
    def _flush(self, publish: Publish, book: SyntheticBook, w: DepthWindow, now_ms: int) -> None:
        taken = w.take()
        if taken is None:
            return
        first, last, prev, t_ms, bids, asks = taken
        inst = book.inst
        ps, qs, tu, su = inst.price_str, inst.qty_str, inst.tick_units, inst.step_units
        b = [[ps(p * tu), qs(q * su)] for p, q in bids]
        a = [[ps(p * tu), qs(q * su)] for p, q in asks]
        sym = inst.symbol.exchange_id
        if inst.market == "spot":
            b.reverse()  # spot lists bids best first; USDT-M lists both sides ascending
            payload = {"e": "depthUpdate", "E": now_ms, "s": sym, "U": first, "u": last, "b": b, "a": a}
        else:
            payload = {"e": "depthUpdate", "E": now_ms, "T": t_ms, "s": sym, "U": first, "u": last,
                       "pu": prev, "b": b, "a": a}
        publish(inst.market, inst.symbol.stream_id, depth_key(w.speed_ms), _text(payload), (first, last))

    def _publish_book_ticker(self, publish: Publish, book: SyntheticBook, now_ms: int) -> None:
        inst = book.inst
        bb, bq, ba, aq = book.top()
        ps, qs, tu, su = inst.price_str, inst.qty_str, inst.tick_units, inst.step_units
        sym = inst.symbol.exchange_id
        if inst.market == "spot":
            payload = {"u": book.last_id, "s": sym, "b": ps(bb * tu), "B": qs(bq * su),
                       "a": ps(ba * tu), "A": qs(aq * su)}
        else:
            payload = {"e": "bookTicker", "u": book.last_id, "s": sym, "b": ps(bb * tu), "B": qs(bq * su),
                       "a": ps(ba * tu), "A": qs(aq * su), "T": book.last_time_ms, "E": now_ms}
        publish(inst.market, inst.symbol.stream_id, "bookTicker", _text(payload))

    def _publish_trades(self, publish: Publish, book: SyntheticBook, now_ms: int) -> None:
        inst = book.inst
        ps, qs, tu, su = inst.price_str, inst.qty_str, inst.tick_units, inst.step_units
        sym, stream = inst.symbol.exchange_id, inst.symbol.stream_id
        flow = self.flows.get(sym) if inst.market == "perp" else None
        for px, lots, maker_buy in book.trades:
            if flow is not None:
                flow.on_trade(lots)
            book.trade_id += 1
            book.agg_id += 1
            p, q = ps(px * tu), qs(lots * su)
            if inst.market == "spot":
                trade = {"e": "trade", "E": now_ms, "s": sym, "t": book.trade_id, "p": p, "q": q,
                         "T": now_ms, "m": maker_buy, "M": True}
                agg = {"e": "aggTrade", "E": now_ms, "s": sym, "a": book.agg_id, "p": p, "q": q,
                       "f": book.trade_id, "l": book.trade_id, "T": now_ms, "m": maker_buy, "M": True}
            else:
                trade = {"e": "trade", "E": now_ms, "T": now_ms, "s": sym, "t": book.trade_id, "p": p,
                         "q": q, "X": "MARKET", "m": maker_buy}
                agg = {"e": "aggTrade", "E": now_ms, "a": book.agg_id, "s": sym, "p": p, "q": q, "nq": q,
                       "f": book.trade_id, "l": book.trade_id, "T": now_ms, "m": maker_buy}
            publish(inst.market, stream, "trade", _text(trade))
            publish(inst.market, stream, "aggTrade", _text(agg))
        book.trades = []

    def _publish_mark(self, publish: Publish, book: SyntheticBook, exchange_id: str, speed_s: int,
                      now_ms: int) -> None:
        path = self.paths[exchange_id]
        mark = (book.best_bid + book.best_ask) / 2 * book.tick
        premium = path.premium_ema
        funding = premium + min(max(0.0001 - premium, -0.0005), 0.0005)
        eight_h = 8 * 3600 * 1000
        payload = {"e": "markPriceUpdate", "E": now_ms, "s": exchange_id, "p": f"{mark:.8f}",
                   "ap": f"{mark:.8f}", "P": f"{path.mid * (1 + premium):.8f}", "i": f"{path.mid:.8f}",
                   "r": f"{funding:.8f}", "T": (now_ms // eight_h + 1) * eight_h}
        publish("perp", book.inst.symbol.stream_id, mark_key(speed_s), _text(payload))

    # ---- what the server asks -----------------------------------------------------------------------------
    def pause(self, market: Market | None = None) -> None:
        """Stop the market(s) and close every open depth window, so clients can catch up with the truth."""
        super().pause(market)
        if self._publish is None:
            return
        now_ms = int(time.time() * 1000)
        for (m, exchange_id), windows in self.windows.items():
            if self._paused[m]:
                for w in windows.values():
                    self._flush(self._publish, self.books[(m, exchange_id)], w, now_ms)

    async def snapshot(self, market: Market, exchange_id: str, limit: int) -> dict:
        book = self.books[(market, exchange_id)]
        bids, asks = book.levels(limit)
        if market == "spot":
            return {"lastUpdateId": book.last_id, "bids": bids, "asks": asks}
        return {"lastUpdateId": book.last_id, "E": int(time.time() * 1000), "T": book.last_time_ms,
                "bids": bids, "asks": asks}

    def top(self, market: Market, exchange_id: str, levels: int) -> dict:
        book = self.books[(market, exchange_id)]
        bids, asks = book.levels(levels)
        return {"lastUpdateId": book.last_id, "T": book.last_time_ms, "bids": bids, "asks": asks}

    def truth(self, market: Market, exchange_id: str) -> dict:
        book = self.books[(market, exchange_id)]
        bids, asks = book.levels()
        return {"lastUpdateId": book.last_id, "bids": bids, "asks": asks}

    def open_interest(self, exchange_id: str) -> str:
        flow = self.flows[exchange_id]
        return _text(open_interest_body(flow.inst, flow.oi_lots, int(time.time() * 1000)))

    @property
    def description(self) -> str:
        return f"synthetic market, seed {self.seed}, rate x{self.rate:g}"

    def status(self) -> dict:
        return {"source": "synthetic", "seed": self.seed, "rate": self.rate, "ticks": self.ticks,
                "liquidations": {s: {"generated": f.liquidations, "pushed": f.pushed} for s, f in self.flows.items()}}
