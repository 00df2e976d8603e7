"""Playback of raw Binance captures (``<recv_ts> <json>`` lines, gzip or plain).

Why playback keeps its own book: a client may ask for a snapshot at any moment of the playback, not only when
the capture's own REST snapshot went by. So the venue applies the captured diffs to the captured snapshot by
Binance's local-book rules and answers ``/depth`` from that book, exactly as Binance answers from its own.
Before the capture's snapshot has played, the book is unknown and a ``/depth`` request waits for it, which
is what a slow snapshot looks like on the real exchange.

To reproduce the recorded session exactly, playback holds at each captured snapshot until a client asks for
it (at most ``SNAPSHOT_HOLD_S``) and serves it verbatim: the client then holds the same snapshot and the
same buffered diffs the original recorder held, and rebuilds the very book Binance's rules give. Snapshot
requests after that (a resync after a gap) are answered from the venue's current book.

Besides stream messages (routed by their stream name or event type, ``forceOrder`` included), a capture may
hold REST bodies: the depth snapshot, and USDT-M open interest (a bare ``{"openInterest","symbol","time"}``
line), which from the moment it plays is what ``/fapi/v1/openInterest`` answers for that symbol, verbatim.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import heapq
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import orjson

from nova.core.errors import NovaError
from nova.core.markets import Market, Symbol
from nova.venue.instruments import Instrument
from nova.venue.source import FeedSource, NoData, Publish
from nova.venue.streams import DEPTH_SPEEDS_MS, FORCE_ORDER_KEY, MARK_PRICE_SPEEDS_S, depth_key, mark_key

SNAPSHOT_HOLD_S = 10.0
PENDING_LIMIT_CHARS = 256 << 20
_DEPTH_IDS = re.compile(r'"U":(\d+),"u":(\d+)')


class CaptureLine(NamedTuple):
    """One line of a capture: receive time in ns, the stream name if wrapped, the bare payload and, when it
    can be cut out of the line as is, the payload's JSON text (so playback need not re-encode it)."""

    recv_ns: int
    stream: str | None
    payload: dict
    raw: str | None = None


def to_ns(ts: int) -> int:
    """Captures stamp receive times in ns, µs or ms since the epoch; normalize to ns by magnitude."""
    if ts >= 10**17:
        return ts
    if ts >= 10**14:
        return ts * 1_000
    if ts >= 10**11:
        return ts * 1_000_000
    raise ValueError(f"receive time {ts} is not an epoch timestamp in ns, µs or ms")


def read_capture_text(path: Path) -> Iterator[tuple[int, int, str]]:
    """(line number, receive ns, JSON text) per line of a capture; a malformed line raises NovaError."""
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                ts_text, _, body = line.partition(" ")
                try:
                    recv_ns = to_ns(int(ts_text))
                    if not body.startswith("{"):
                        raise ValueError("no JSON object after the timestamp")
                except ValueError as exc:
                    raise NovaError(f"{path}:{lineno} is not a '<recv_ts> <json>' capture line ({exc}); "
                                    "check that the file is a raw Binance capture") from None
                yield lineno, recv_ns, body
    except OSError as exc:
        raise NovaError(f"cannot read capture {path}: {exc.strerror or exc}; check the path") from None


def read_capture(path: Path) -> Iterator[CaptureLine]:
    """Yield the decoded lines of one capture file; a malformed line raises NovaError naming file and line."""
    for lineno, recv_ns, body in read_capture_text(path):
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise NovaError(f"{path}:{lineno} holds no valid JSON ({exc}); check that the file is a raw "
                            "Binance capture") from None
        if isinstance(obj, dict) and "data" in obj and "stream" in obj:
            # Binance writes {"stream":...,"data":{...}}: the payload text is the tail of the line.
            raw = body[body.index('"data":') + 7: body.rindex("}")] if body.startswith('{"stream":') else None
            yield CaptureLine(recv_ns, obj["stream"], obj["data"], raw)
        elif isinstance(obj, dict):
            yield CaptureLine(recv_ns, None, obj, body)


def _is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError as exc:
        raise NovaError(f"cannot read capture {path}: {exc.strerror or exc}; check the path") from None


class Playable(NamedTuple):
    """A capture line ready to send: routing, the payload's JSON text, and what playback itself needs."""

    recv_ns: int
    stream_id: str
    keys: tuple[str, ...]
    text: str
    ids: tuple[int, int] | None  # (U, u) of a diff-depth message
    snapshot: dict | None  # the captured REST snapshot, for the line that holds one
    name: str | None = None  # the stream name the capture's combined-stream wrapper gave
    open_interest: bool = False  # the line is an openInterest REST body (``text``), for symbol ``stream_id``


def playback_lines(path: Path, market: Market) -> Iterator[Playable]:
    """The lines of a capture, routed without decoding the JSON where the combined-stream wrapper already
    names the stream; payload text is cut out of the line as is."""
    for _, recv_ns, body in read_capture_text(path):
        if body.startswith('{"stream":"'):
            end = body.index('"', 11)
            stream_id, _, kind = body[11:end].partition("@")
            keys = _keys_for_stream(kind)
            if keys is not None:
                text = body[body.index('"data":', end) + 7: body.rindex("}")]
                ids = _ids(text) if keys is _DEPTH_KEYS else None
                yield Playable(recv_ns, stream_id, keys, text, ids, None, body[11:end])
                continue
        obj = orjson.loads(body)
        if "lastUpdateId" in obj and "bids" in obj:
            yield Playable(recv_ns, "", (), body, None, obj)
            continue
        if is_open_interest_body(obj):
            yield Playable(recv_ns, str(obj["symbol"]).lower(), (), body, None, None, open_interest=True)
            continue
        payload, text = obj, body
        if "stream" in obj and "data" in obj:
            payload, text = obj["data"], orjson.dumps(obj["data"]).decode()
        keys = stream_keys(CaptureLine(recv_ns, None, payload), market)
        ids = (int(payload["U"]), int(payload["u"])) if keys is _DEPTH_KEYS else None
        yield Playable(recv_ns, _symbol_of(payload).lower(), keys, text, ids, None)


def is_open_interest_body(obj: object) -> bool:
    """A ``/fapi/v1/openInterest`` response body, as a recorder writes it into a capture."""
    return isinstance(obj, dict) and "openInterest" in obj and isinstance(obj.get("symbol"), str) and "e" not in obj


def _symbol_of(payload: dict) -> str:
    """The symbol of a stream payload: ``s``, or ``o.s`` for a forceOrder (Binance nests the order there)."""
    sym = payload.get("s")
    if sym is None and isinstance(payload.get("o"), dict):
        sym = payload["o"].get("s")
    return str(sym or "")


def _ids(text: str) -> tuple[int, int]:
    m = _DEPTH_IDS.search(text)
    if m is not None:
        return int(m.group(1)), int(m.group(2))
    obj = orjson.loads(text)
    return int(obj["U"]), int(obj["u"])


def _keys_for_stream(kind: str) -> tuple[str, ...] | None:
    if kind.startswith("depth") and not kind[5:6].isdigit():  # diff depth, not the partial-book depth5/10/20
        return _DEPTH_KEYS
    if kind.startswith("markPrice"):
        return _MARK_KEYS
    if kind in ("bookTicker", "trade", "aggTrade"):
        return (kind,)
    if kind == FORCE_ORDER_KEY:
        return _FORCE_ORDER_KEYS
    return None


_DEPTH_KEYS = tuple(depth_key(ms) for ms in DEPTH_SPEEDS_MS)
_MARK_KEYS = tuple(mark_key(s) for s in MARK_PRICE_SPEEDS_S)
_FORCE_ORDER_KEYS = (FORCE_ORDER_KEY,)


def stream_keys(line: CaptureLine, market: Market) -> tuple[str, ...]:
    """The venue stream keys a captured message is published under.

    Playback serves what was captured: a depth subscription of any speed receives the captured depth
    messages (they cannot be made finer), and a bare payload is routed by its event type.
    """
    p = line.payload
    event = p.get("e")
    if event == "depthUpdate":
        return _DEPTH_KEYS
    if event == "markPriceUpdate":
        return _MARK_KEYS
    if event in ("trade", "aggTrade", "bookTicker"):
        return (event,)
    if event == "forceOrder":
        return _FORCE_ORDER_KEYS
    if event is None and "u" in p and "b" in p and "a" in p and not isinstance(p["b"], list):
        return ("bookTicker",)
    return ()


@dataclass
class PlaybackBook:
    """The book as Binance's local-book rules build it from the captured snapshot and diffs."""

    market: Market
    bids: dict[str, str] = field(default_factory=dict)  # price string as Binance wrote it -> size string
    asks: dict[str, str] = field(default_factory=dict)
    last_id: int | None = None
    synced: bool = False  # the first diff after the snapshot has been applied
    id_breaks: int = 0
    snapshot_T: int | None = None
    last_time_ms: int = 0
    buffered: list[dict] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # diffs played but not yet applied (JSON text)
    pending_chars: int = 0

    def add(self, text: str) -> None:
        """Queue a played diff; the book is brought up to date only when read or when the queue is large,
        which keeps a max-speed playback several times faster than any one client can read."""
        self.pending.append(text)
        self.pending_chars += len(text)
        if self.pending_chars > PENDING_LIMIT_CHARS:
            self.sync()

    def sync(self) -> None:
        pending, self.pending, self.pending_chars = self.pending, [], 0
        for text in pending:
            self.apply(orjson.loads(text))

    def load_snapshot(self, snap: dict) -> None:
        """Take the captured snapshot, then the diffs that were received before it (its REST reply came
        back after they did), exactly as a client following Binance's procedure would."""
        self.sync()
        self.bids = {p: q for p, q in snap["bids"] if float(q) != 0}
        self.asks = {p: q for p, q in snap["asks"] if float(q) != 0}
        self.last_id = int(snap["lastUpdateId"])
        self.synced = False
        self.snapshot_T = snap.get("T")
        pending, self.buffered = self.buffered, []
        for msg in pending:
            self.apply(msg)

    def apply(self, msg: dict) -> None:
        if self.last_id is None:
            self.buffered.append(msg)
            return
        first, last = int(msg["U"]), int(msg["u"])
        spot = self.market == "spot"
        if not self.synced:
            if (last <= self.last_id) if spot else (last < self.last_id):
                return  # older than the snapshot
            chained = first <= self.last_id + 1 if spot else first <= self.last_id
            self.synced = True
        else:
            chained = first == self.last_id + 1 if spot else int(msg.get("pu", -1)) == self.last_id
        if not chained:
            self.id_breaks += 1  # the capture itself has a gap; keep applying, the status reports it
        # dict.update takes the [price, size] pairs at C speed; removed levels stay as zero sizes until the
        # book is read (or grows), which keeps a max-speed playback ahead of its clients.
        self.bids.update(msg["b"])
        self.asks.update(msg["a"])
        if len(self.bids) + len(self.asks) > 50_000:
            self._purge()
        self.last_id = last
        self.last_time_ms = int(msg.get("T") or msg.get("E") or 0)

    def _purge(self) -> None:
        self.bids = {p: q for p, q in self.bids.items() if float(q) != 0}
        self.asks = {p: q for p, q in self.asks.items() if float(q) != 0}

    def levels(self, limit: int | None = None) -> tuple[list[list[str]], list[list[str]]]:
        self.sync()
        self._purge()
        bid_keys = sorted(self.bids, key=float, reverse=True)[:limit]
        ask_keys = sorted(self.asks, key=float)[:limit]
        return [[k, self.bids[k]] for k in bid_keys], [[k, self.asks[k]] for k in ask_keys]


class CaptureSource(FeedSource):
    """Plays capture files of one spot and/or one perp symbol, merged by receive time, at a chosen speed."""

    def __init__(self, spot_files: list[Path], perp_files: list[Path], speed: float | None = 1.0,
                 autostart: bool = False, preload: bool = False) -> None:
        super().__init__()
        if not spot_files and not perp_files:
            raise NovaError("capture playback needs at least one --capture-spot or --capture-perp file")
        if speed is not None and speed <= 0:
            raise NovaError(f"--speed must be a positive number or 'max', not {speed}")
        self.files: dict[Market, list[Path]] = {"spot": list(spot_files), "perp": list(perp_files)}
        self.speed = speed
        self.books: dict[Market, PlaybackBook] = {}
        self.snapshot_ready: dict[Market, asyncio.Event] = {}
        self._held: dict[Market, dict] = {}  # market -> captured snapshot the playback is holding at
        self._hold_released = asyncio.Event()
        self.instruments = []
        self.captured_streams: dict[Market, set[str]] = {}
        self.sent = 0
        self.open_interest_played = 0
        self._open_interest: dict[str, str] = {}  # symbol (upper case) -> the last openInterest body played
        self.finished = False
        self.started = asyncio.Event()
        self._depth_subscribed: set[Market] = set()
        for market, files in self.files.items():
            if not files:
                continue
            symbol = self._probe_symbol(market, files)
            self.instruments.append(Instrument.for_symbol(symbol, market))
            self.books[market] = PlaybackBook(market)
            self.snapshot_ready[market] = asyncio.Event()
            self.captured_streams[market] = set()
        self.preload = preload  # read every line before playing, so max speed measures clients, not parsing
        if autostart:
            self.started.set()

    @staticmethod
    def _probe_symbol(market: Market, files: list[Path]) -> Symbol:
        for line in read_capture(files[0]):
            sym = line.payload.get("s")
            if isinstance(sym, str):
                try:
                    return Symbol.parse(sym)
                except ValueError:
                    break
        raise NovaError(f"found no symbol ('s' field) in {files[0]}; is it a Binance {market} capture?")

    def _lines(self, market: Market) -> Iterator[tuple[int, int, Market, Playable]]:
        seq = 0
        for path in self.files[market]:
            for line in playback_lines(path, market):
                seq += 1
                yield line.recv_ns, seq, market, line

    def on_subscribe(self, market: Market, stream_id: str, key: str) -> None:
        if key.startswith("depth@") and market in self.books:
            self._depth_subscribed.add(market)
            if self._depth_subscribed >= set(self.books):
                self.started.set()

    def start(self) -> None:
        self.started.set()

    async def run(self, publish: Publish) -> None:
        self._publish = publish
        merged: Iterable[tuple[int, int, Market, Playable]] = heapq.merge(
            *(self._lines(m) for m in self.books), key=lambda t: (t[0], t[1]))
        if self.preload:
            merged = await asyncio.to_thread(list, merged)
        await self.started.wait()
        loop = asyncio.get_running_loop()
        t0_data: int | None = None
        t0_wall = loop.time()
        for n, (recv_ns, _, market, line) in enumerate(merged):
            if not self._resumed.is_set():
                paused_at = loop.time()
                await self._resumed.wait()
                t0_wall += loop.time() - paused_at
            if t0_data is None:
                t0_data = recv_ns
            if self.speed is not None:
                due = t0_wall + (recv_ns - t0_data) / 1e9 / self.speed
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif n % 256 == 0:
                await self.drain()
            self._play(publish, market, line)
            if market in self._held:
                held_at = loop.time()
                self._hold_released.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hold_released.wait(), SNAPSHOT_HOLD_S)
                self._held.pop(market, None)
                t0_wall += loop.time() - held_at
        self.finished = True

    def _play(self, publish: Publish, market: Market, line: Playable) -> None:
        if line.open_interest:
            self._open_interest[line.stream_id.upper()] = line.text
            self.open_interest_played += 1
            return
        book = self.books[market]
        if line.snapshot is not None:
            book.load_snapshot(line.snapshot)
            if market in self._depth_subscribed:  # someone will ask for it: wait for them
                self._held[market] = line.snapshot
            self.snapshot_ready[market].set()
            return
        if line.ids is not None:
            book.add(line.text)
        if line.keys:
            if line.name:
                self.captured_streams[market].add(line.name)
            publish(market, line.stream_id, line.keys, line.text, line.ids)
        self.sent += 1

    async def snapshot(self, market: Market, exchange_id: str, limit: int) -> dict:
        await self.snapshot_ready[market].wait()
        held = self._held.get(market)
        if held is not None:  # the playback waits at the captured snapshot: hand it over as recorded
            self._hold_released.set()
            return {**held, "bids": held["bids"][:limit], "asks": held["asks"][:limit]}
        book = self.books[market]
        bids, asks = book.levels(limit)
        if market == "spot":
            return {"lastUpdateId": book.last_id, "bids": bids, "asks": asks}
        return {"lastUpdateId": book.last_id, "E": int(time.time() * 1000),
                "T": book.last_time_ms or book.snapshot_T, "bids": bids, "asks": asks}

    def top(self, market: Market, exchange_id: str, levels: int) -> dict:
        book = self.books[market]
        bids, asks = book.levels(levels)
        return {"lastUpdateId": book.last_id, "T": book.last_time_ms, "bids": bids, "asks": asks}

    def truth(self, market: Market, exchange_id: str) -> dict:
        book = self.books[market]
        bids, asks = book.levels()
        return {"lastUpdateId": book.last_id, "bids": bids, "asks": asks}

    def open_interest(self, exchange_id: str) -> str:
        """The last openInterest body the playback passed for the symbol, as recorded (its ``time`` too)."""
        body = self._open_interest.get(exchange_id.upper())
        if body is None:
            raise NoData(f"this capture holds no open interest for {exchange_id} yet")
        return body

    @property
    def description(self) -> str:
        """The capture files by base name: the same captures played at another speed are the same market."""
        names = [p.name for p in (*self.files["spot"], *self.files["perp"])]
        return "capture playback of " + ", ".join(names)

    def pause(self, market: Market | None = None) -> None:
        """Playback is one merged timeline, so pausing any market pauses the whole playback."""
        super().pause(None)

    @staticmethod
    def _synced(book: PlaybackBook) -> PlaybackBook:
        book.sync()
        return book

    def status(self) -> dict:
        return {
            "source": "capture",
            "speed": "max" if self.speed is None else self.speed,
            "started": self.started.is_set(),
            "finished": self.finished,
            "messages_played": self.sent,
            "open_interest_played": self.open_interest_played,
            "captured_streams": {m: sorted(s) for m, s in self.captured_streams.items()},
            "id_breaks": {m: self._synced(b).id_breaks for m, b in self.books.items()},
        }

