"""``nova serve``: a recorded dataset played through the venue, so any Binance client runs against history.

Why the playback holds at some snapshots: a client that is to end with the recorder's books must resync where
the recorder resynced. After a ledgered book break (gap, disconnect, stop, start; nova.core.validity) the
recorder asked for a snapshot and the dataset holds the one it got. The wire shows the same break (the
recorded diffs do not chain, and a disconnect or a run boundary closes the market's connections), a client
asks for a snapshot, and while the book is broken ``/depth`` waits for the next recorded snapshot and serves
it verbatim; the playback holds there (at most ``snapshot_hold_s``) until a client has it. Diffs the recorder
received while its request was in flight are played before the snapshot (recording.arrival_order), so the
client holds the very diffs the recorder held. While the book is whole, ``/depth`` is the book at the
playhead, rebuilt by the contract's rule with the core's L2Book, ``lastUpdateId`` the last applied ``u``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import time
from collections.abc import Iterator
from typing import Any

from nova.core.book import L2Book
from nova.core.contract import date_of
from nova.core.dataset import Dataset
from nova.core.errors import NovaError
from nova.core.markets import Market, Symbol
from nova.core.pacing import Lateness, Pacer
from nova.core.validity import BOOK_BREAKS
from nova.venue.instruments import Instrument
from nova.venue.read_ahead import ReadAhead
from nova.venue.recorded_text import OPEN_INTEREST, Formats, Outgoing, Printer
from nova.venue.recording import BookMessage, Entry, timeline
from nova.venue.source import FeedSource, NoData, Publish

SNAPSHOT_HOLD_S = 10.0
RESUBSCRIBE_WAIT_S = 10.0
PARTIAL = "partial depth"  # what a depth5/10/20 subscription counts as: a client, but not one that resyncs
SETTLE_S = 0.5  # subscriptions of one client arrive one by one: start once they stop coming
REST_FIRST_S = 1.0  # a client that asks a market's REST depth before subscribing to it (python-binance's depth
# cache) starts the playback when that market still has no depth subscriber this long after
LONE_CLIENT_S = 3.0  # a client that subscribed to no depth on some market starts the playback after this long
FLUSH_S = 0.2  # after the last frames left the server, before a recorded disconnect closes the connection
DISCONNECTING = frozenset({"disconnect", "stop"})
UNAPPLIED_LIMIT = 4096  # book messages that may wait to be applied (memory at --speed max, where nothing is idle)
SETTLE_AHEAD_NS = 2_000_000  # apply the waiting messages when the next entry is due at least this far ahead
_TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?")
SPOT_DECIMALS = 8  # Binance prints spot prices and sizes with 8 decimals


class BadInstant(NovaError, ValueError):
    """A time the playback cannot go to (the control API answers it with 400)."""


def parse_instant(text: str | int, what: str = "t") -> int:
    """ns since the epoch from an ISO time (UTC unless it says otherwise) or an integer of ns."""
    raw = str(text).strip()
    if raw.isdigit():
        return int(raw)
    try:
        moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadInstant(f"{what} {raw!r} is not a time; write it as HH:MM[:SS], ISO (2024-08-09T10:00:00) or "
                         "ns since the epoch") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


def instant_on(text: str | int, date: str, what: str) -> int:
    """Like ``parse_instant``, and ``HH:MM[:SS]`` is a time of day on ``date`` (UTC)."""
    raw = str(text).strip()
    if _TIME_OF_DAY.fullmatch(raw):
        raw = f"{date}T{raw}"
    return parse_instant(raw, what)


def iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dates(first: str, last: str) -> list[str]:
    lo, hi = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(lo + dt.timedelta(days=i)).isoformat() for i in range((hi - lo).days + 1)]


def _step_text(filters: str | None, filter_type: str, key: str) -> str | None:
    """A filter's step as Binance wrote it, trailing zeros dropped (``0.01000000`` -> ``0.01``)."""
    try:
        for f in json.loads(filters or "[]"):
            if isinstance(f, dict) and f.get("filterType") == filter_type and f.get(key):
                text = str(f[key])
                return text.rstrip("0").rstrip(".") if "." in text else text
    except ValueError:
        return None
    return None


def _decimals(step: str) -> int:
    return len(step.split(".")[1]) if "." in step else 0


def _warm_up() -> None:
    """Have numba compile the book's kernels now: the first snapshot of a playback otherwise spends ~0.2 s in the
    compiler while the clock runs, and every message behind it leaves that late."""
    book = L2Book()
    book.apply(["bid", "ask"], [1.0, 2.0], [1.0, 1.0])
    book.levels("bid", 1)
    book.levels("ask", None)
    book.clear()


class DatasetSource(FeedSource):
    """Plays one symbol of a recorded dataset (spot and perp) by receive time, at a chosen speed."""

    def __init__(self, root: str, date: str, until: str | None = None, start: str | int | None = None,
                 end: str | int | None = None, symbols: list[Symbol] | None = None, speed: float | None = 1.0,
                 autostart: bool = False, snapshot_hold_s: float = SNAPSHOT_HOLD_S) -> None:
        super().__init__()
        if speed is not None and not speed > 0:
            raise NovaError(f"--speed must be a positive number or 'max', not {speed}")
        self.ds = Dataset(root)
        self.ds.check_reachable()
        self.speed = speed
        self.snapshot_hold_s = snapshot_hold_s
        self.dates = _dates(date, until or date)
        if until is not None and until < date:
            raise NovaError(f"--until {until} is before --date {date}; give a later --until")
        self.symbol = self._pick_symbol(symbols)
        self.markets: list[Market] = [m for m in ("spot", "perp") if self._has_book(m)]
        if "perp" not in self.markets:
            raise NovaError(f"{self.symbol.dashed} has no recorded perp book on {self._range_text()} in {root}; "
                            "serve a symbol recorded on both markets")
        if "spot" not in self.markets:
            raise NovaError(f"{self.symbol.dashed} has no recorded spot book on {self._range_text()} in {root}; "
                            "serve a symbol recorded on both markets")
        day_lo = int(dt.datetime.fromisoformat(self.dates[0]).replace(tzinfo=dt.UTC).timestamp()) * 10**9
        day_hi = int(dt.datetime.fromisoformat(self.dates[-1]).replace(tzinfo=dt.UTC).timestamp()) * 10**9 \
            + 86_400 * 10**9
        self.start_ns = instant_on(start, self.dates[0], "--start") if start is not None else day_lo
        self.end_ns = instant_on(end, self.dates[-1], "--end") if end is not None else day_hi
        if self.end_ns <= self.start_ns:
            raise NovaError(f"--end {iso(self.end_ns)} is not after --start {iso(self.start_ns)}; give a later --end")
        self.ledgers = {m: [e for e in self.ds.ledger(m, self.symbol.dashed, "book")
                            if date_of(e["ts_recv"]) in self.dates] for m in self.markets}
        self.snapshot_times = {m: [e["ts_recv"] for e in self.ledgers[m] if e["kind"] == "snapshot"]
                               for m in self.markets}
        for m in self.markets:
            before_end = [t for t in self.snapshot_times[m] if t < self.end_ns]
            if not before_end:
                first = self.snapshot_times[m][0] if self.snapshot_times[m] else None
                offer = (f"; the first valid time is {iso(first)}" if first is not None
                         else "; it holds no book snapshot at all")
                raise NovaError(f"the {m} book of {self.symbol.dashed} has no snapshot to start from before "
                                f"{iso(self.end_ns)}{offer}")
        self.formats: dict[Market, Formats] = {}
        self.derived_instruments: list[Market] = []
        self.instruments = [self._instrument(m) for m in self.markets]
        self.printer = Printer(self.symbol, self.formats)
        self.books: dict[Market, L2Book] = {}
        self._unapplied: dict[Market, list[BookMessage]] = {}
        self.last_u: dict[Market, int | None] = {}
        self.last_ms: dict[Market, tuple[int | None, int | None]] = {}
        self._broken: dict[Market, bool] = {}
        self._held: dict[Market, dict | None] = {}
        self._released: dict[Market, asyncio.Event] = {}
        self._open_interest: str | None = None
        self._subscribed: dict[Market, set[str]] = {m: set() for m in self.markets}
        self._last_subscribe = 0.0
        self._rest_first: dict[Market, float] = {}  # market -> when its REST depth was asked before playback started
        self.started = asyncio.Event()
        if autostart:
            self.started.set()
        self.finished = False
        self.playhead_ns: int | None = None
        self.sent = 0
        self.breaks_played = 0
        self.holds = 0
        self.lateness = Lateness()  # paced playback only: at --speed max nothing is scheduled
        self._seek_to: int | None = None
        self._seeked = asyncio.Event()
        self._reset()

    # ---- what is served ----------------------------------------------------------------------------------
    def _range_text(self) -> str:
        return self.dates[0] if len(self.dates) == 1 else f"{self.dates[0]}..{self.dates[-1]}"

    def _pick_symbol(self, symbols: list[Symbol] | None) -> Symbol:
        recorded = [s for s in self.ds.symbols(("book",))
                    if any(self.ds.files(p) for d in self.dates for p in self.ds.partitions("book", None, s, d))]
        if not recorded:
            raise NovaError(f"{self.ds.text} holds no recorded book on {self._range_text()}; pick a date with data "
                            "(nova ls shows them)")
        if not symbols:
            if len(recorded) > 1:
                raise NovaError(f"{self.ds.text} holds several symbols on {self._range_text()} "
                                f"({', '.join(recorded)}); pick one with --symbols")
            return Symbol.parse(recorded[0])
        if len(symbols) > 1:
            raise NovaError("nova serve plays one symbol at a time; give one in --symbols")
        if symbols[0].dashed not in recorded:
            raise NovaError(f"{symbols[0].unified} is not recorded in {self.ds.text} on {self._range_text()} "
                            f"(recorded: {', '.join(recorded)})")
        return symbols[0]

    def _has_book(self, market: Market) -> bool:
        return any(self.ds.files(p) for d in self.dates
                   for p in self.ds.partitions("book", market, self.symbol.dashed, d))

    def _instrument(self, market: Market) -> Instrument:
        """The recorded exchangeInfo entry's tick and step; without one, the decimals the recorded prices
        need (``derived_instruments`` says which market that was)."""
        row = None
        for date in self.dates:
            for p in self.ds.partitions("instruments", market, self.symbol.dashed, date):
                for path, _ in self.ds.files(p):
                    table = self.ds.read_table(path, columns=["filters"])
                    if table.num_rows:
                        row = table.column("filters")[0].as_py()
                        break
        tick = _step_text(row, "PRICE_FILTER", "tickSize")
        step = _step_text(row, "LOT_SIZE", "stepSize")
        if tick is None or step is None:
            self.derived_instruments.append(market)
            tick, step = self._derived_steps(market)
        if market == "spot":
            self.formats[market] = Formats(SPOT_DECIMALS, SPOT_DECIMALS)
        else:
            self.formats[market] = Formats(_decimals(tick), _decimals(step))
        return Instrument(self.symbol, market, 1.0, tick, step)

    def _derived_steps(self, market: Market) -> tuple[str, str]:
        from nova.venue.recording import book_messages

        for m in book_messages(self.ds, market, self.symbol, self.dates, 0):
            pd = max((_decimals(repr(p)) for p in m.prices), default=2)
            qd = max((_decimals(repr(q)) for q in m.amounts), default=3)
            return (f"{10.0 ** -pd:.{pd}f}" if pd else "1"), (f"{10.0 ** -qd:.{qd}f}" if qd else "1")
        return "0.01", "0.001"

    @property
    def description(self) -> str:
        """The dataset and what of it is played: a recording of another day is another market."""
        return f"recorded {self.symbol.dashed} {self._range_text()} from {self.ds.text}"

    # ---- subscriptions and start -------------------------------------------------------------------------
    def on_subscribe(self, market: Market, stream_id: str, key: str) -> None:
        if market in self._subscribed:
            name = key.split("@", 1)[0]  # partial depth (depth5/10/20) starts playback too, but needs no snapshot
            self._subscribed[market].add(PARTIAL if name.startswith("depth") and name != "depth" else name)
            self._last_subscribe = time.monotonic()

    def start(self) -> None:
        self.started.set()

    async def _subscribers(self, markets: list[Market], timeout_s: float | None) -> None:
        """Wait until every market has a depth subscriber, then until subscriptions stop arriving; at the start,
        also until subscriptions have stopped arriving for ``LONE_CLIENT_S`` (a bot of one market, or of quotes)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while not all(self._subscribed[m] & {"depth", PARTIAL} for m in markets):
            if self.started.is_set() and timeout_s is None:
                return
            if deadline is not None and loop.time() > deadline:
                return
            now = time.monotonic()
            if timeout_s is None and any(now - asked > REST_FIRST_S and "depth" not in self._subscribed[m]
                                         for m, asked in self._rest_first.items()):
                return  # a REST-first client waits for its snapshot before it subscribes: start for it
            if (timeout_s is None and any(self._subscribed.values())
                    and now - self._last_subscribe > LONE_CLIENT_S):
                return  # a client of one market's book, or of quotes only: nobody else is coming
            await asyncio.sleep(0.01)
        while time.monotonic() - self._last_subscribe < SETTLE_S:
            await asyncio.sleep(0.05)

    # ---- control -----------------------------------------------------------------------------------------
    def seek(self, t: str | int) -> int:
        """Move the playhead to ``t`` (ISO, ns, or HH:MM[:SS] on the first date; the books are rebuilt from the
        last snapshot before it); returns it in ns."""
        ns = instant_on(t, self.dates[0], "t")
        if not self.start_ns <= ns < self.end_ns:
            raise BadInstant(f"t {iso(ns)} is outside the served range {iso(self.start_ns)} .. {iso(self.end_ns)}")
        self._seek_to = ns
        self._seeked.set()
        self.resume()
        for event in self._released.values():
            event.set()
        return ns

    def status(self) -> dict:
        return {
            "source": "dataset",
            "symbol": self.symbol.dashed,
            "range": [iso(self.start_ns), iso(self.end_ns)],
            "speed": "max" if self.speed is None else self.speed,
            "started": self.started.is_set(),
            "finished": self.finished,
            "playhead_ns": self.playhead_ns,
            "playhead": None if self.playhead_ns is None else iso(self.playhead_ns),
            "messages_played": self.sent,
            "breaks_played": self.breaks_played,
            "snapshot_holds": self.holds,
            "lateness": self.lateness.summary(),
            "books_valid": {m: not self._broken[m] for m in self.markets},
            "exchange_info": {m: "derived from the recording" if m in self.derived_instruments else "recorded"
                              for m in self.markets},
        }

    # ---- playback ----------------------------------------------------------------------------------------
    def _reset(self) -> None:
        for m in self.markets:
            self.books[m] = L2Book()
            self._unapplied[m] = []
            self.last_u[m] = None
            self.last_ms[m] = (None, None)
            self._broken[m] = True
            self._held[m] = None
            self._released[m] = asyncio.Event()
        self._open_interest = None
        self._warming = True  # the books are being rebuilt up to the playhead: not yet served

    def _entries(self, from_ns: int) -> Iterator[Entry]:
        book_lo = {}
        for m in self.markets:
            before = [t for t in self.snapshot_times[m] if t <= from_ns]
            book_lo[m] = before[-1] if before else from_ns
        return timeline(self.ds, self.symbol, self.markets, self.dates, book_lo, from_ns, self.ledgers)

    async def run(self, publish: Publish) -> None:
        self._publish = publish
        await asyncio.to_thread(_warm_up)
        if not self.started.is_set():
            await self._subscribers(self.markets, None)
            self.started.set()
        from_ns = self.start_ns
        while True:
            await self._play(publish, from_ns)
            if self._seek_to is None:
                self.finished = True
                for event in self._released.values():
                    event.set()
                self._seeked.clear()
                await self._seeked.wait()
            self.finished = False
            from_ns, self._seek_to = self._seek_to if self._seek_to is not None else self.start_ns, None
            self._reset()
            if self.disconnect is not None:  # clients' books belong to the old playhead: make them resync
                await self.disconnect(None)

    async def _play(self, publish: Publish, from_ns: int) -> None:
        entries = ReadAhead(self._entries(from_ns), self.printer, from_ns)
        n = 0
        try:
            with Pacer(self.speed, self.lateness) as pacer:  # replay's pacing rule (nova.core.pacing), one histogram
                while True:
                    item = entries.next_now()
                    if item is ReadAhead.WAIT:
                        item = await entries.next()
                    n += 1
                    if item is None or item[0].ts_recv >= self.end_ns or self._seek_to is not None:
                        return
                    if not self._played_now(publish, item[0], item[1], from_ns, pacer):
                        await self._paced(publish, item[0], item[1], from_ns, n, pacer)
        finally:
            entries.close()

    def _played_now(self, publish: Publish, entry: Entry, out: Outgoing | None, from_ns: int, pacer: Pacer) -> bool:
        """Play a due book diff or quote on the spot, without a coroutine or a loop turn (False: the entry needs
        ``_paced``: it is not due yet, it may hold or disconnect, or the playback is paused or unpaced)."""
        if entry.ts_recv < from_ns or entry.table == "events" or not self._resumed.is_set():
            return False
        book = entry.table == "book"
        if (book and entry.row.snapshot) or not pacer.due_now(entry.ts_recv):
            return False
        self._warming = False
        self.playhead_ns = entry.ts_recv
        if book:
            self._diff(publish, entry.market, entry.row, out)
        elif out is not None:
            self._quote(publish, entry.market, out)
        return True

    async def _paced(self, publish: Publish, entry: Entry, out: Outgoing | None, from_ns: int, n: int,
                     pacer: Pacer) -> None:
        """Play one entry at its time; pauses and snapshot holds move the pacer's wall origin, not lateness."""
        if entry.ts_recv >= from_ns:
            self._warming = False
            if not self._resumed.is_set():
                paused_at = time.perf_counter_ns()
                await self._resumed.wait()
                pacer.shift(time.perf_counter_ns() - paused_at)
            if pacer.paced:
                if self._unapplied_any and pacer.due(entry.ts_recv) - time.perf_counter_ns() > SETTLE_AHEAD_NS:
                    self._settle_all()  # time to spare before this entry is due: bring the books up to date now
                await pacer.wait_async(entry.ts_recv)
            elif n % 256 == 0:
                await self.drain()
                await asyncio.sleep(0)
            self.playhead_ns = entry.ts_recv
            held = await self._entry(publish, entry, out, True)
            if held:
                pacer.shift(round(held * 1e9))
        else:
            await self._entry(publish, entry, None, False)

    async def _entry(self, publish: Publish, e: Entry, out: Outgoing | None, live: bool) -> float:
        """Play one entry (``live``: on the wire, as its message ``out``; otherwise only into the books); returns
        seconds held."""
        market = e.market
        if e.table == "book":
            return await self._book(publish, market, e.row, out, live)
        if e.table == "events":
            kind = e.row["kind"]
            if kind in BOOK_BREAKS:
                self._broken[market] = True
                if live:
                    self.breaks_played += 1
                if (live and kind in DISCONNECTING and self.disconnect is not None
                        and any(t > e.ts_recv for t in self.snapshot_times[market])):
                    return await self._reconnect(market)
            return 0.0
        if out is not None:
            self._quote(publish, market, out)
        return 0.0

    def _quote(self, publish: Publish, market: Market, out: Outgoing) -> None:
        if out.keys == OPEN_INTEREST:
            self._open_interest = out.text
        else:
            publish(market, self.symbol.stream_id, out.keys, out.text)

    async def _reconnect(self, market: Market) -> float:
        """A recorded disconnect or end of run: close the market's connections and wait for the clients to
        come back, as the recorder did."""
        assert self.disconnect is not None
        loop = asyncio.get_running_loop()
        began = loop.time()
        had = bool(self._subscribed[market])
        self._subscribed[market] = set()
        # what the recorder received before its connection dropped must reach the clients before the close
        await self.drain(0)
        await asyncio.sleep(FLUSH_S)
        await self.disconnect(market)
        if had:
            await self._subscribers([market], RESUBSCRIBE_WAIT_S)
        return loop.time() - began

    async def _book(self, publish: Publish, market: Market, m: BookMessage, out: Outgoing | None, live: bool
                    ) -> float:
        waited = 0.0
        if m.snapshot:
            self._apply(market, m)
            if live and self._broken[market] and "depth" in self._subscribed[market]:
                # a client resyncs here, as the recorder did: hand it this snapshot, holding until it asks
                loop = asyncio.get_running_loop()
                began = loop.time()
                self._held[market] = self.printer.snapshot(market, m)
                self._released[market].clear()
                self.holds += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._released[market].wait(), self.snapshot_hold_s)
                self._held[market] = None
                waited = loop.time() - began
            self._broken[market] = False
            return waited
        self._diff(publish, market, m, out)
        return waited

    def _diff(self, publish: Publish, market: Market, m: BookMessage, out: Outgoing | None) -> None:
        if not m.stale:
            self._apply(market, m)
        if out is not None:
            publish(market, self.symbol.stream_id, out.keys, out.text, out.ids)
            self.sent += 1

    def _apply(self, market: Market, m: BookMessage) -> None:
        """The contract's rebuild rule (clear on a snapshot, set price -> amount, remove at 0), applied lazily: the
        levels wait in ``_unapplied`` until a REST answer needs the book or the playback has time to spare, and
        are then applied in one call (in order, so the result is the same); a snapshot drops what waited."""
        if m.snapshot:
            self._unapplied[market] = [m]
        elif m.sides:
            self._unapplied[market].append(m)
            if len(self._unapplied[market]) >= UNAPPLIED_LIMIT:
                self._settle(market)
        self.last_u[market] = m.last_id
        self.last_ms[market] = (None if m.ts_event is None else m.ts_event // 1_000_000,
                                None if m.ts_trade is None else m.ts_trade // 1_000_000)

    @property
    def _unapplied_any(self) -> bool:
        return any(self._unapplied.values())

    def _settle(self, market: Market) -> None:
        waiting = self._unapplied[market]
        if not waiting:
            return
        self._unapplied[market] = []
        book = self.books[market]
        if waiting[0].snapshot:
            book.clear()
        sides = [s for m in waiting for s in m.sides]
        if sides:
            book.apply(sides, [p for m in waiting for p in m.prices], [a for m in waiting for a in m.amounts])

    def _settle_all(self) -> None:
        for market in self.markets:
            self._settle(market)

    # ---- REST ----------------------------------------------------------------------------------------------
    async def snapshot(self, market: Market, exchange_id: str, limit: int) -> dict:
        """While the book is broken (before its first snapshot, after a ledgered break), the next recorded
        snapshot, verbatim; otherwise the book at the playhead (once the books have been rebuilt up to the start
        of the range or the seek)."""
        if not self.started.is_set():
            self._rest_first.setdefault(market, time.monotonic())
        while not self.finished:
            held = self._held[market]
            if held is not None:
                self._released[market].set()
                return {**held, "bids": held["bids"][:limit], "asks": held["asks"][:limit]}
            if not self._warming and not self._broken[market]:
                break
            await asyncio.sleep(0.005)
        return self._book_body(market, limit)

    def _book_body(self, market: Market, limit: int | None) -> dict:
        self._settle(market)
        book, fmt = self.books[market], self.formats[market]
        sides = []
        for side in ("bid", "ask"):
            prices, amounts = book.levels(side, limit)
            sides.append([[fmt.price(float(p)), fmt.qty(float(q))] for p, q in zip(prices, amounts, strict=True)])
        body: dict[str, Any] = {"lastUpdateId": self.last_u[market] or 0, "bids": sides[0], "asks": sides[1]}
        if market == "perp":
            event, trade = self.last_ms[market]
            body = {"lastUpdateId": body["lastUpdateId"], "E": event or 0, "T": trade or event or 0,
                    "bids": sides[0], "asks": sides[1]}
        return body

    def truth(self, market: Market, exchange_id: str) -> dict:
        return self._book_body(market, None)

    def top(self, market: Market, exchange_id: str, levels: int) -> dict:
        """Only the ``levels`` best of each side are printed (a partial-depth push every 100 ms would otherwise
        print the whole book, thousands of levels, on the event loop)."""
        book = self._book_body(market, levels)
        return {"lastUpdateId": book["lastUpdateId"], "T": book.get("T", 0), "bids": book["bids"],
                "asks": book["asks"]}

    def now_ms(self) -> int:
        """The recorded time of the playhead (the receive time of the last message played; the start of the range
        before the first)."""
        return (self.playhead_ns if self.playhead_ns is not None else self.start_ns) // 1_000_000

    def open_interest(self, exchange_id: str) -> str:
        if self._open_interest is None:
            raise NoData(f"the recording holds no open interest for {exchange_id} before the playhead")
        return self._open_interest
