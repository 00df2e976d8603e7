"""The simulated Binance venue: REST and WebSocket endpoints on the paths ccxt expects, plus a control API.

Paths (DESIGN §3): spot REST under ``/api/v3``, USDT-M REST under ``/fapi/v1``, spot WebSocket under
``/stream/ws/{n}`` (ccxt recognises spot connections by ``/stream`` in the URL) and USDT-M WebSocket under
``/fstream/{public|market}/ws/{n}``. Replies, errors and keep-alive follow Binance's documented behaviour,
so that the real ccxt.pro client, unchanged but for its URLs, cannot tell the difference.

The control API under ``/_venue`` exposes the truth (the venue's own book), pause/resume, and the faults
tests inject: a dropped message (sequence gap), closed connections, a stalled stream, slow or failing
snapshots, slow, failing or malformed open interest, Binance's ``serverShutdown`` notice, and malformed
frames (``nova.venue.malformed``).

Every HTTP response, the WebSocket upgrade included, names the venue and its feed in a ``Server`` header
(``nova-venue/<version> (<FeedSource.description>)``), so that a recorder can write down where its data came
from; Binance's own servers answer with their own name there.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import secrets
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from nova.core.limits import BANNED, CONNECTION_MAX_AGE_S, STREAMS_PER_CONNECTION, USED_WEIGHT_HEADER, request_weight
from nova.core.markets import Market, Symbol
from nova.venue import malformed as bad
from nova.venue.faults import FAULTS, unknown_fault
from nova.venue.instruments import exchange_info
from nova.venue.market_rest import add_routes as add_market_routes
from nova.venue.pushers import Pushers
from nova.venue.ratelimit import INCOMING_PER_S, IncomingCounter, RateLimits, WeightCounter
from nova.venue.source import FeedSource, NoData
from nova.venue.streams import (
    ALL_SYMBOLS,
    DEPTH_SPEEDS_MS,
    FORCE_ORDER_KEY,
    MARK_PRICE_SPEEDS_S,
    depth_key,
    mark_key,
    parse_stream,
    refusal,
)
from nova.venue.tape import Tape
from nova.venue.timeunit import TIME_UNIT_HEADER, event_text, rest_body, wants_micro
from nova.venue.tls import self_signed, server_context

log = logging.getLogger("nova.venue")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_WELL_FORMED_STREAM = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@_!-")


@dataclass
class VenueConfig:
    """Keep-alive and flow-control settings; the defaults are Binance's."""

    host: str = "127.0.0.1"
    port: int = 0
    ping_interval_s: dict[str, float] = field(default_factory=lambda: {"spot": 20.0, "perp": 180.0})
    pong_timeout_s: dict[str, float] = field(default_factory=lambda: {"spot": 60.0, "perp": 600.0})
    max_queued_frames: int = 500_000  # a client this far behind is disconnected, as Binance does
    shutdown_grace_s: float = 1.0  # between a serverShutdown notice and the close
    # Binance answers /depth from a book that keeps moving while the request is in flight, so its
    # lastUpdateId usually lands inside the next diff's [U, u]; the venue reproduces that latency.
    snapshot_latency_s: float = 0.03
    limits: RateLimits = field(default_factory=RateLimits)  # REST weight per IP, 429 and 418 (nova.venue.ratelimit)
    tls: bool = False  # serve https/wss with a self-signed certificate (nova.venue.tls); its path: Venue.cert_path
    tls_dir: Path | None = None  # where to write that certificate (None: a new temporary directory)
    # Incoming WebSocket messages (requests, pings, pongs) per second a connection may send; over it the venue
    # closes the connection, as Binance does. 0: no limit.
    incoming_per_s: dict[Market, int] = field(default_factory=lambda: dict(INCOMING_PER_S))
    # Binance closes every WebSocket connection 24 hours after it opened; a recorder must plan for it. Tests
    # shorten it to seconds. None: connections live until closed otherwise.
    max_connection_age_s: float | None = CONNECTION_MAX_AGE_S


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def nova_version() -> str:
    try:
        return importlib.metadata.version("nova-recorder")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "dev"


def server_header(description: str) -> str:
    """``nova-venue/<version> (<description>)``; the description is made safe for an HTTP header comment
    (printable ASCII, parentheses balanced away), whatever a capture file happens to be called."""
    safe = "".join(c if " " <= c <= "~" and c not in "()\\" else "?" for c in description)
    return f"nova-venue/{nova_version()} ({safe})"




_WRITE_HIGH_WATER = 4 << 20


def _frame(text: str | bytes, binary: bool = False) -> bytes:
    """One unmasked WebSocket text (or binary) frame (RFC 6455 §5.2), as a server sends it."""
    data = text.encode() if isinstance(text, str) else text
    n = len(data)
    head = 0x82 if binary else 0x81
    if n < 126:
        return bytes((head, n)) + data
    if n < 65536:
        return struct.pack("!BBH", head, 126, n) + data
    return struct.pack("!BBQ", head, 127, n) + data


def _ws_error(code: int, msg: str, req_id: Any = None) -> str:
    return _dumps({"error": {"code": code, "msg": msg}, "id": req_id})


class Connection:
    """One client WebSocket: its subscriptions, an outgoing queue and a writer that honours stalls."""

    def __init__(self, venue: Venue, ws: web.WebSocketResponse, market: Market, combined: bool,
                 transport: asyncio.BaseTransport | None) -> None:
        self.venue = venue
        self.ws = ws
        self.transport = transport
        self.market = market
        self.combined = combined
        self.streams: dict[str, tuple[str, str]] = {}  # stream name as written -> (stream_id, key)
        self.queue: deque[str] = deque()
        self.wake = asyncio.Event()
        self.last_pong = time.monotonic()
        self.frames_sent = 0
        self.closing = False
        self.micro = False  # the client asked for times in microseconds (``?timeUnit=MICROSECOND``)
        self.ping_payload: bytes | None = None  # of the venue's last ping not yet answered

    def send(self, frame: str | bytes) -> None:
        """Queue a frame: a published market message as its JSON text, anything else (replies, notices) as a
        ready-built frame (``reply``). Only published messages count in ``messages_sent``, when written."""
        if self.closing:
            return
        if self.micro and type(frame) is str:
            frame = event_text(frame)
        self.queue.append(frame)
        self.wake.set()
        if len(self.queue) > self.venue.config.max_queued_frames:
            log.warning("disconnecting a %s client that is %d frames behind", self.market, len(self.queue))
            self.closing = True
            asyncio.get_running_loop().create_task(self.ws.close(code=1008, message=b"slow consumer"))

    def reply(self, text: str) -> None:
        """Queue a frame that is not a published market message (a request's reply, a notice)."""
        self.send(_frame(text))

    async def writer(self) -> None:
        """Write queued frames in batches straight to the transport: one syscall for many small frames.

        aiohttp's ``send_str`` costs a syscall per frame, which made the venue slower than one ccxt client;
        server frames are unmasked, so building them here is a few bytes of header. Control frames (pings,
        close) still go through aiohttp on the same transport, between our batches.
        """
        ws, queue, transport = self.ws, self.queue, self.transport
        if not isinstance(transport, asyncio.WriteTransport):
            return
        try:
            while not ws.closed and not transport.is_closing():
                if not queue:
                    self.wake.clear()
                    await self.wake.wait()
                await self.venue.wait_unstalled(self.market)
                batch = []
                published = 0
                while queue and len(batch) < 512:
                    item = queue.popleft()
                    if type(item) is str:  # a published message; replies are queued as built frames
                        published += 1
                        item = _frame(item)
                    batch.append(item)
                if batch and not ws.closed and not transport.is_closing():
                    transport.write(b"".join(batch))
                    self.frames_sent += len(batch)
                    # messages_sent counts what reached the socket: frames still queued when a connection
                    # closes, or published to one already closing, never left the venue.
                    self.venue.stats[self.market].frames_sent += published
                while transport.get_write_buffer_size() > _WRITE_HIGH_WATER and not transport.is_closing():
                    await asyncio.sleep(0.001)
        except (ConnectionError, RuntimeError):
            pass  # the client went away; the handler cleans up

    async def pinger(self) -> None:
        interval = self.venue.config.ping_interval_s[self.market]
        timeout = self.venue.config.pong_timeout_s[self.market]
        while not self.ws.closed:
            await asyncio.sleep(min(interval, timeout))
            await self.venue.wait_unstalled(self.market)
            if time.monotonic() - self.last_pong > timeout:
                log.info("closing a %s connection: no pong for %.0f s", self.market, timeout)
                await self.ws.close(code=1000, message=b"pong timeout")
                return
            self.ping_payload = str(int(time.time() * 1000)).encode()
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.ping(self.ping_payload)

    def ponged(self, payload: bytes) -> None:
        """A pong arrived. On spot only the answer to the venue's last ping keeps the connection alive (Binance:
        unsolicited pongs are allowed but do not prevent disconnection); USDT-M accepts any pong."""
        if self.market == "perp" or (self.ping_payload is not None and payload == self.ping_payload):
            self.last_pong = time.monotonic()
            self.ping_payload = None


@dataclass
class MarketStats:
    frames_sent: int = 0
    messages_published: int = 0
    dropped: int = 0
    snapshots_served: int = 0
    snapshots_inside: int = 0  # snapshots whose lastUpdateId fell strictly inside the next message's [U, u]
    snapshots_failed: int = 0
    open_interest_served: int = 0
    open_interest_failed: int = 0  # answered with an injected error status
    open_interest_malformed: int = 0  # answered with an injected malformed body
    open_interest_missing: int = 0  # answered 404: the feed had no open interest to give (a capture, so far)
    connections_total: int = 0
    aged_out: int = 0  # connections closed at the age limit
    malformed_sent: int = 0  # malformed frames sent to clients (never counted in frames_sent)
    malformed_replaced: int = 0  # real messages replaced by a corrupted copy (their changes never sent)
    last_u: dict[str, int] = field(default_factory=dict)


class Venue:
    """The server. Use ``async with Venue(source) as venue:`` in-process, or ``nova venue`` from a shell."""

    def __init__(self, source: FeedSource, config: VenueConfig | None = None, control_token: str | None = None
                 ) -> None:
        self.source = source
        self.config = config or VenueConfig()
        self.connections: set[Connection] = set()
        self._subs: dict[tuple[Market, str, str], dict[Connection, str]] = {}
        self.stats: dict[Market, MarketStats] = {"spot": MarketStats(), "perp": MarketStats()}
        self._drop_next: set[tuple[Market, str, str]] = set()
        # (market, stream_id, key) -> pending malformed injections: (kind, size) per next real message
        self._malformed: dict[tuple[Market, str, str], deque[tuple[str, int]]] = {}
        self._snapshot_checks: dict[tuple[Market, str], list[int]] = {}
        self._stalled_until: dict[Market, float] = {"spot": 0.0, "perp": 0.0}
        self._snapshot_delay: dict[Market, list[float]] = {"spot": [], "perp": []}
        self._snapshot_fail: dict[Market, list[int]] = {"spot": [], "perp": []}
        self._oi_delay: list[float] = []  # open interest is USDT-M only: one queue of each
        self._oi_fail: list[int] = []
        self._oi_malformed: list[str] = []
        self.weights = WeightCounter(self.config.limits)
        self.tape = Tape()  # trades, best bid/ask and mark prices the venue published (tickers, klines, ...)
        self.pushers = Pushers(self)  # the timed streams: partial depth, tickers, klines, !markPrice@arr
        self.description = source.description
        self.server_header = server_header(self.description)
        self._runner: web.AppRunner | None = None
        self._feed_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self.url = ""
        self.cert_path: Path | None = None  # the self-signed certificate a TLS venue serves with
        source.drain = self.wait_drained  # type: ignore[method-assign]
        source.disconnect = self.close_connections
        # Bound beyond the loopback interface, the control API (seek, pause, faults, truth) needs this token;
        # market data stays open, as Binance's is.
        self.control_token: str | None = control_token or (
            None if self.config.host in LOOPBACK_HOSTS else secrets.token_urlsafe(18))

    # ---- lifecycle ---------------------------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(middlewares=[self._weigh])
        app.on_response_prepare.append(self._stamp)
        r = app.router
        for prefix, market in (("/api/v3", "spot"), ("/fapi/v1", "perp")):
            r.add_get(f"{prefix}/exchangeInfo", self._exchange_info(market))
            r.add_get(f"{prefix}/depth", self._depth(market))
            r.add_get(f"{prefix}/ping", self._ping)
            r.add_get(f"{prefix}/time", self._time)
        r.add_get("/fapi/v1/openInterest", self._open_interest)  # USDT-M only: spot answers 404 as Binance does
        add_market_routes(r, self)
        r.add_get("/dapi/v1/exchangeInfo", self._empty_exchange_info)  # ccxt's default load_markets asks
        r.add_get("/stream/ws", self._ws("spot", combined=False))
        r.add_get("/stream/ws/{name}", self._ws("spot", combined=False))
        r.add_get("/stream/stream", self._ws("spot", combined=True))
        # Binance's own root paths (stream.binance.com), for clients that only let their base URL be changed.
        r.add_get("/ws", self._ws("spot", combined=False))
        r.add_get("/ws/{name}", self._ws("spot", combined=False))
        r.add_get("/stream", self._ws("spot", combined=True))
        for cat in ("", "/public", "/market"):
            r.add_get(f"/fstream{cat}/ws", self._ws("perp", combined=False))
            r.add_get(f"/fstream{cat}/ws/{{name}}", self._ws("perp", combined=False))
            r.add_get(f"/fstream{cat}/stream", self._ws("perp", combined=True))
        guard = self._guarded
        r.add_get("/_venue/book", guard(self._ctl_book))
        r.add_get("/_venue/status", guard(self._ctl_status))
        r.add_get("/_venue/limits", guard(self._ctl_limits))
        r.add_post("/_venue/limits", guard(self._ctl_limits))
        r.add_post("/_venue/pause", guard(self._ctl_pause))
        r.add_post("/_venue/resume", guard(self._ctl_resume))
        r.add_post("/_venue/start", guard(self._ctl_start))
        r.add_post("/_venue/seek", guard(self._ctl_seek))
        r.add_post("/_venue/fault/{kind}", guard(self._ctl_fault))
        r.add_post("/_venue/listing/{action}", guard(self._ctl_listing))
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        ssl_context = None
        if self.config.tls:
            self.cert_path, key_path = self_signed(self.config.tls_dir, self.config.host)
            ssl_context = server_context(self.cert_path, key_path)
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=ssl_context)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        host, port = sockets[0].getsockname()[:2]
        self.url = f"{'https' if ssl_context else 'http'}://{host}:{port}"
        self._feed_task = asyncio.get_running_loop().create_task(self.source.run(self.publish))
        self._feed_task.add_done_callback(self._feed_done)
        self._spawn(self.pushers.run())
        return self.url

    async def _stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        """Name the venue and its feed on every response (REST, control API, errors, WebSocket upgrades)."""
        response.headers["Server"] = self.server_header

    def _feed_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("the venue's feed stopped: %s", task.exception())

    async def stop(self) -> None:
        if self._feed_task:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._feed_task
        for conn in list(self.connections):
            conn.closing = True
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"venue stopping")
        for task in list(self._tasks):
            task.cancel()
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> Venue:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- the feed's outlet --------------------------------------------------------------------------------
    def publish(self, market: Market, stream_id: str, keys: str | tuple[str, ...], text: str,
                ids: tuple[int, int] | None = None) -> None:
        """Deliver one message (its JSON ``text``) to the subscribers of ``stream_id@key`` for each of ``keys``.

        Several keys are aliases of one stream (a capture's depth stream serves every depth speed); ``ids``
        is the ``(U, u)`` range of a diff-depth message, which the drop fault and the snapshot check use.
        """
        if isinstance(keys, str):
            keys = (keys,)
        stats = self.stats[market]
        stats.messages_published += 1
        if ids is not None:
            stats.last_u[stream_id] = ids[1]
        elif keys[0] in ("trade", "aggTrade", "bookTicker") or keys[0].startswith("markPrice@"):
            self.tape.observe(market, stream_id, keys[0], text)
            if keys[0] == "bookTicker" and self._subs.get((market, ALL_SYMBOLS, "bookTicker")):
                self.deliver(market, ALL_SYMBOLS, "bookTicker", text)
        sent = 0
        for key in keys:
            sub_key = (market, stream_id, key)
            if ids is not None and sub_key in self._drop_next:
                self._drop_next.discard(sub_key)
                stats.dropped += 1
                continue
            subs = self._subs.get(sub_key)
            if not subs:
                continue
            if self._malformed and sub_key in self._malformed:
                self._publish_malformed(sub_key, subs, text)
            else:
                for conn, name in subs.items():
                    conn.send(f'{{"stream":"{name}","data":{text}}}' if conn.combined else text)
            sent += len(subs)
        if sent and ids is not None:  # frames_sent is counted by the writers (Connection.writer)
            self._check_snapshots(market, stream_id, ids)

    def deliver(self, market: Market, stream_id: str, key: str, text: str) -> None:
        """Send a message the venue made itself (a timed stream, the all-symbol copy of a bookTicker) to the
        subscribers of ``stream_id@key``; unlike ``publish`` it is no message of the feed's."""
        for conn, name in self._subs.get((market, stream_id, key), {}).items():
            conn.send(f'{{"stream":"{name}","data":{text}}}' if conn.combined else text)

    def subscriptions(self) -> dict[tuple[Market, str, str], dict[Connection, str]]:
        """Every subscribed (market, stream id, key) and its subscribers, for the timed streams."""
        return self._subs

    def _publish_malformed(self, sub_key: tuple[Market, str, str], subs: dict[Connection, str], text: str) -> None:
        """Send the next pending malformed frame of a stream with (or instead of) the real message ``text``."""
        market, _, key = sub_key
        pending = self._malformed[sub_key]
        kind, size = pending.popleft()
        if not pending:
            del self._malformed[sub_key]
        payload, binary = bad.corrupt(kind, bad.family_of_key(key), text, size)
        adding = kind in bad.ADDING
        stats = self.stats[market]
        for conn, name in subs.items():
            if adding:
                conn.send(f'{{"stream":"{name}","data":{text}}}' if conn.combined else text)
            body = payload
            if conn.combined:
                body = (f'{{"stream":"{name}","data":'.encode() + payload + b"}" if isinstance(payload, bytes)
                        else f'{{"stream":"{name}","data":{payload}}}')
            conn.send(_frame(body, binary))  # a built frame: not counted in messages_sent
        stats.malformed_sent += len(subs)
        if not adding:
            stats.malformed_replaced += 1
        log.info("sent a malformed (%s) %s message to %d %s client(s)", kind, key, len(subs), market)

    def _check_snapshots(self, market: Market, stream_id: str, ids: tuple[int, int]) -> None:
        """Count snapshots whose id fell strictly inside the [U, u] of the next message clients saw."""
        first, last = ids
        pending = self._snapshot_checks.get((market, stream_id))
        if pending:
            keep = []
            for lid in pending:
                if last <= lid:
                    keep.append(lid)
                elif first <= lid:
                    self.stats[market].snapshots_inside += 1
            self._snapshot_checks[(market, stream_id)] = keep

    async def wait_drained(self, low_water: int = 2000) -> None:
        """Block a max-speed playback while any client still has many frames queued."""
        while any(len(c.queue) > low_water for c in self.connections if not c.ws.closed):
            await asyncio.sleep(0.001)

    async def wait_unstalled(self, market: Market) -> None:
        while (delay := self._stalled_until[market] - time.monotonic()) > 0:
            await asyncio.sleep(delay)

    # ---- REST -----------------------------------------------------------------------------------------------
    @staticmethod
    def _rest_error(status: int, code: int, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status, dumps=_dumps)

    def _exchange_info(self, market: Market):
        async def handler(request: web.Request) -> web.Response:
            body = exchange_info(self.source.instruments, market, self.source.now_ms())
            body["rateLimits"] = self.config.limits.rate_limits(market, body["rateLimits"])
            wanted = request.query.get("symbol")
            if wanted is not None and market == "spot":
                body["symbols"] = [s for s in body["symbols"] if s["symbol"] == wanted]
                if not body["symbols"]:
                    return self._rest_error(400, -1121, "Invalid symbol.")
            return web.json_response(body, dumps=_dumps)
        return handler

    async def _empty_exchange_info(self, request: web.Request) -> web.Response:
        return web.json_response({"timezone": "UTC", "serverTime": self.source.now_ms(), "rateLimits": [],
                                  "exchangeFilters": [], "symbols": []}, dumps=_dumps)

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": self.source.now_ms()})

    def _depth(self, market: Market):
        async def handler(request: web.Request) -> web.Response:
            symbol = request.query.get("symbol", "")
            if not symbol:
                return self._rest_error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                                                    "or malformed.")
            limit_text = request.query.get("limit")
            limit = 100 if market == "spot" else 500
            if limit_text is not None:
                if not limit_text.isdigit() or len(limit_text) > 20:
                    return self._rest_error(400, -1100, "Illegal characters found in parameter 'limit'; legal "
                                                        "range is '^[0-9]{1,20}$'.")
                limit = int(limit_text)
                if market == "spot":
                    if limit < 1:
                        return self._rest_error(400, -1130, "Data sent for parameter 'limit' is not valid.")
                    limit = min(limit, 5000)
                elif limit > 1000 or limit < 1:
                    return self._rest_error(400, -1130, "Data sent for parameter 'limit' is not valid.")
                elif limit not in (5, 10, 20, 50, 100, 500, 1000):
                    return self._rest_error(400, -4021, f"{limit} is not valid depth limit")
            if self.source.instrument(market, symbol) is None:
                return self._rest_error(400, -1121, "Invalid symbol.")
            delay = self.config.snapshot_latency_s
            if self._snapshot_delay[market]:
                delay += self._snapshot_delay[market].pop(0)
            if delay > 0:
                await asyncio.sleep(delay)
            if self._snapshot_fail[market]:
                self.stats[market].snapshots_failed += 1
                return self._injected_error(market, self._snapshot_fail[market].pop(0))
            body = await self.source.snapshot(market, symbol, limit)
            self.stats[market].snapshots_served += 1
            self._snapshot_checks.setdefault((market, symbol.lower()), []).append(body["lastUpdateId"])
            return web.json_response(body, dumps=_dumps)
        return handler

    def _injected_error(self, market: Market, status: int, retry_after_s: int = 0, until_ms: int = 0) -> web.Response:
        """The body Binance sends with an error status: -1003 when throttled (429) or banned (418), -1001
        otherwise; a throttled or banned answer says when to come back in ``Retry-After``."""
        if status in (429, BANNED):
            limit = self.config.limits.weight.get(market, 0)
            if status == 429:
                text = (f"Too much request weight used; current limit is {limit} request weight per "
                        f"{self._window_text()}. Please use WebSocket Streams for live updates to avoid polling "
                        "the API.")
            else:
                until_ms = until_ms or int(time.time() * 1000) + retry_after_s * 1000
                text = (f"Way too much request weight used; IP banned until {until_ms}. Please use WebSocket "
                        "Streams for live updates to avoid bans.")
            response = self._rest_error(status, -1003, text)
            response.headers["Retry-After"] = str(retry_after_s or 1)
            return response
        return self._rest_error(status, -1001, "Internal error; unable to process your request. Please try again.")

    def _window_text(self) -> str:
        window = self.config.limits.window_s
        return f"{int(window // 60)} MINUTE" if window % 60 == 0 else f"{window:g} SECOND"

    @web.middleware
    async def _weigh(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Count a REST request's weight against its IP (nova.venue.ratelimit); refuse it over the limit."""
        path = request.path
        market: Market | None = "spot" if path.startswith("/api/v3/") else "perp" if path.startswith("/fapi/v1/") \
            else None
        if market is None:
            return await handler(request)
        weight = request_weight(market, path, dict(request.query))
        verdict = self.weights.admit(market, request.remote or "?", weight)
        if verdict.status is not None:
            response: web.StreamResponse = self._injected_error(market, verdict.status, verdict.retry_after_s,
                                                                verdict.until_ms)
        else:
            response = await handler(request)
        if wants_micro(request.headers.get(TIME_UNIT_HEADER)) and isinstance(response, web.Response) \
                and response.content_type == "application/json" and isinstance(response.body, bytes):
            response.body = rest_body(response.body, path)
        response.headers[USED_WEIGHT_HEADER] = str(verdict.used)
        return response

    async def _open_interest(self, request: web.Request) -> web.Response:
        """``GET /fapi/v1/openInterest?symbol=``: the perp's open interest, with any injected fault applied."""
        symbol = request.query.get("symbol", "")
        if not symbol:
            return self._rest_error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or "
                                                "malformed.")
        if self.source.instrument("perp", symbol) is None:
            return self._rest_error(400, -1121, "Invalid symbol.")
        stats = self.stats["perp"]
        if self._oi_delay:
            await asyncio.sleep(self._oi_delay.pop(0))
        if self._oi_fail:
            stats.open_interest_failed += 1
            return self._injected_error("perp", self._oi_fail.pop(0))
        try:
            body = self.source.open_interest(symbol)
        except NoData as exc:
            stats.open_interest_missing += 1
            return self._rest_error(404, -1000, str(exc))
        if self._oi_malformed:
            stats.open_interest_malformed += 1
            return web.Response(text=bad.corrupt_open_interest(self._oi_malformed.pop(0), body),
                                content_type="application/json")
        stats.open_interest_served += 1
        return web.Response(text=body, content_type="application/json")

    async def _not_found(self, request: web.Request) -> web.Response:
        """Any other path: Binance's JSON error shape, so that a client library reports a readable error."""
        return self._rest_error(404, -1000, f"Unknown endpoint {request.method} {request.path}: this venue serves "
                                            "Binance's public market data only.")

    # ---- WebSocket ------------------------------------------------------------------------------------------
    def _ws(self, market: Market, combined: bool):
        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 20)
            await ws.prepare(request)
            conn = Connection(self, ws, market, combined, request.transport)
            conn.micro = wants_micro(request.query.get("timeUnit"))
            self.connections.add(conn)
            self.stats[market].connections_total += 1
            initial = request.match_info.get("name", "")
            names = request.query.get("streams", "").split("/") if combined else [initial]
            for name in names:
                if "@" not in name and not name.startswith("!"):
                    continue  # no stream: ccxt's connection number (``/stream/ws/0``) or nothing
                why = refusal(name, market, self.source.instrument)
                if why is None:
                    self._subscribe(conn, name)
                else:  # said once on the new connection rather than served silently never
                    conn.reply(_ws_error(2, f"Invalid request: {why}"))
            writer = self._spawn(conn.writer())
            pinger = self._spawn(conn.pinger())
            aging = self._spawn(self._age_out(conn)) if self.config.max_connection_age_s else None
            incoming = IncomingCounter(self.config.incoming_per_s.get(market, 0))
            try:
                async for msg in ws:
                    if msg.type != WSMsgType.CLOSE and incoming.over():
                        log.info("closing a %s connection: over %d incoming messages per second", market,
                                 incoming.per_s)
                        conn.closing = True
                        await ws.close(code=1008, message=b"Too many messages")
                        break
                    if msg.type == WSMsgType.TEXT:
                        reply = self._handle_request(conn, msg.data)
                        if reply is not None:
                            conn.reply(reply)
                            if market == "perp" and reply.startswith('{"error":{"code":3'):
                                await asyncio.sleep(0.05)  # USDT-M disconnects on invalid JSON
                                break
                    elif msg.type == WSMsgType.PING:
                        await ws.pong(msg.data)
                    elif msg.type == WSMsgType.PONG:
                        conn.ponged(msg.data)
                    elif msg.type == WSMsgType.BINARY:
                        conn.reply(_ws_error(3, "Invalid JSON: expected value at line 1 column 1"))
            finally:
                conn.closing = True
                self.connections.discard(conn)
                for name in list(conn.streams):
                    self._unsubscribe(conn, name)
                writer.cancel()
                pinger.cancel()
                if aging is not None:
                    aging.cancel()
                if not ws.closed:
                    await ws.close()
            return ws
        return handler

    def _subscribe(self, conn: Connection, name: str) -> None:
        parsed = parse_stream(name, conn.market)
        if parsed is None or name in conn.streams:
            conn.streams.setdefault(name, ("", ""))
            return
        conn.streams[name] = (parsed.stream_id, parsed.key)
        self._subs.setdefault((conn.market, parsed.stream_id, parsed.key), {})[conn] = name
        self.source.on_subscribe(conn.market, parsed.stream_id, parsed.key)

    def _unsubscribe(self, conn: Connection, name: str) -> None:
        stream_id, key = conn.streams.pop(name, ("", ""))
        subs = self._subs.get((conn.market, stream_id, key))
        if subs is not None:
            subs.pop(conn, None)

    def _handle_request(self, conn: Connection, text: str) -> str | None:
        """Answer one client request the way Binance's stream servers do (replies are JSON text)."""
        try:
            req = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            line, col = getattr(exc, "lineno", 1), getattr(exc, "colno", 1)
            return _ws_error(3, f"Invalid JSON: expected value at line {line} column {col}")
        if not isinstance(req, dict):
            return _ws_error(2, f"Invalid request: invalid type: expected struct Request at line 1 column {len(text)}")
        req_id = req.get("id")
        if not (req_id is None or (isinstance(req_id, int) and not isinstance(req_id, bool))
                or (isinstance(req_id, str) and len(req_id) <= 36 and req_id.isalnum())):
            return _ws_error(2, "Invalid request: request ID must be an unsigned integer", None)
        method = req.get("method")
        if method is None:
            return _ws_error(2, f"Invalid request: missing field `method` at line 1 column {len(text)}", req_id)
        if method not in _METHODS:
            col = text.find(str(method)) + len(str(method)) + 1
            return _ws_error(2, f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, "
                                f"`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 "
                                f"column {col}", req_id)
        params = req.get("params", [])
        if not isinstance(params, list):
            return _ws_error(2, "Invalid request: invalid type: expected a sequence", req_id)
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not all(isinstance(p, str) and p and set(p) <= _WELL_FORMED_STREAM and ("@" in p or p[0] == "!")
                       for p in params):
                return _ws_error(2, "Invalid request: invalid stream", req_id)
            if method == "SUBSCRIBE":
                for name in params:
                    why = refusal(name, conn.market, self.source.instrument)
                    if why is not None:  # the whole request is refused, as Binance refuses a bad one
                        return _ws_error(2, f"Invalid request: {why}", req_id)
                if len(set(conn.streams) | set(params)) > STREAMS_PER_CONNECTION[conn.market]:
                    return _ws_error(4, "Too many subscriptions", req_id)
                for name in params:
                    self._subscribe(conn, name)
            else:
                for name in params:
                    self._unsubscribe(conn, name)
            return _dumps({"result": None, "id": req_id})
        if method == "LIST_SUBSCRIPTIONS":
            if params:
                return _ws_error(2, "Invalid request: too many parameters", req_id)
            return _dumps({"result": list(conn.streams), "id": req_id})
        if not params or not isinstance(params[0], str):
            return _ws_error(2, "Invalid request: property name must be a string", req_id)
        if params[0] != "combined":
            return _ws_error(0, "Unknown property", req_id)
        if method == "GET_PROPERTY":
            return _dumps({"result": conn.combined, "id": req_id})
        if len(params) != 2 or not isinstance(params[1], bool):
            return _ws_error(1, "Invalid value type: expected Boolean", req_id)
        conn.combined = params[1]
        return _dumps({"result": None, "id": req_id})

    # ---- control API (also callable in-process) ---------------------------------------------------------------
    def truth(self, market: Market, exchange_id: str) -> dict:
        return self.source.truth(market, exchange_id)

    def status(self) -> dict:
        out: dict[str, Any] = {"url": self.url, "description": self.description, **self.source.status(),
                               "markets": {}}
        for market in ("spot", "perp"):
            s = self.stats[market]
            conns = [c for c in self.connections if c.market == market]
            out["markets"][market] = {
                "symbols": [i.symbol.exchange_id for i in self.source.instruments if i.market == market],
                "paused": self.source.is_paused(market),
                "messages_published": s.messages_published,
                "messages_sent": s.frames_sent,
                "last_u": s.last_u,
                "connections": len(conns),
                "connections_total": s.connections_total,
                "connections_aged_out": s.aged_out,
                "subscriptions": sorted({n for c in conns for n in c.streams}),
                "dropped": s.dropped,
                "malformed_sent": s.malformed_sent,
                "malformed_replaced": s.malformed_replaced,
                "snapshots_served": s.snapshots_served,
                "snapshots_inside": s.snapshots_inside,
                "snapshots_failed": s.snapshots_failed,
                "open_interest_served": s.open_interest_served,
                "open_interest_failed": s.open_interest_failed,
                "open_interest_malformed": s.open_interest_malformed,
                "open_interest_missing": s.open_interest_missing,
                "stalled": self._stalled_until[market] > time.monotonic(),
                "weight_limit": self.config.limits.weight.get(market, 0),
                "weight_used": self.weights.used(market),
                "throttled": self.weights.throttled[market],
                "banned": self.weights.banned[market],
            }
        return out

    def pause(self, market: Market | None = None) -> None:
        self.source.pause(market)

    def resume(self, market: Market | None = None) -> None:
        self.source.resume(market)

    def drop_next(self, market: Market, exchange_id: str, stream: str = "depth") -> int:
        """Drop the next message of ``stream`` (``depth`` means every depth speed clients listen to)."""
        stream_id = exchange_id.lower()
        keys = {k for (m, s, k), subs in self._subs.items() if m == market and s == stream_id and subs
                and (k == stream or k.startswith(stream + "@"))}
        if not keys and stream == "depth":
            keys = {f"depth@{ms}ms" for ms in (0, 100, 250, 500, 1000)}
        elif not keys:
            keys = {stream}
        for key in keys:
            self._drop_next.add((market, stream_id, key))
        return len(keys)

    def inject_malformed(self, market: Market, exchange_id: str, kind: str, stream: str = "depth", count: int = 1,
                         size: int = bad.OVERSIZED_BYTES) -> int:
        """Make the next ``count`` messages of ``stream`` malformed (``kind``, see ``nova.venue.malformed``).

        ``stream`` is ``depth`` (every depth speed clients listen to), ``bookTicker``, ``trade``, ``aggTrade``,
        or on USDT-M ``markPrice`` or ``forceOrder`` (recorder names ``book``, ``bbo``, ``trades``, ``funding``,
        ``liquidations`` are accepted too). Returns the number of stream keys armed; each of them corrupts (or
        adds after) its own next messages.
        """
        bad.check_kind(kind)
        family = bad.stream_family(stream)
        bad.check_market(family, market)
        if count < 1 or size < 1:
            raise ValueError("count and size must be positive")
        if self.source.instrument(market, exchange_id) is None:
            raise ValueError(f"no {market} symbol {exchange_id!r}")
        stream_id = exchange_id.lower()
        keys = {k for (m, s, k), subs in self._subs.items() if m == market and s == stream_id and subs
                and bad.family_of_key(k) == family}
        if not keys:
            keys = ({depth_key(ms) for ms in DEPTH_SPEEDS_MS} if family == "depth" else
                    {mark_key(s) for s in MARK_PRICE_SPEEDS_S} if family == "markPrice" else
                    {FORCE_ORDER_KEY} if family == "forceOrder" else {family})
        for key in keys:
            self._malformed.setdefault((market, stream_id, key), deque()).extend([(kind, size)] * count)
        return len(keys)

    async def _age_out(self, conn: Connection) -> None:
        """Close a connection when it reaches the age limit, as Binance does at 24 hours (a plain close, no
        notice)."""
        assert self.config.max_connection_age_s is not None
        await asyncio.sleep(self.config.max_connection_age_s)
        if not conn.ws.closed:
            log.info("closing a %s connection: it is %.0f s old (the venue's connection age limit)", conn.market,
                     self.config.max_connection_age_s)
            self.stats[conn.market].aged_out += 1
            conn.closing = True
            await conn.ws.close(code=1000, message=b"connection age limit")

    async def close_connections(self, market: Market | None = None, abort: bool = False) -> int:
        victims = [c for c in self.connections if market is None or c.market == market]
        for conn in victims:
            conn.closing = True
            if abort and isinstance(conn.transport, asyncio.Transport):
                conn.transport.abort()  # a network drop: no close frame
            else:
                await conn.ws.close(code=1001, message=b"closed by venue")
        return len(victims)

    def stall(self, market: Market, seconds: float) -> None:
        self._stalled_until[market] = time.monotonic() + seconds

    def snapshot_fault(self, market: Market, delay: float = 0.0, fail: int = 0, status: int = 503,
                       count: int = 1) -> None:
        if delay > 0:
            self._snapshot_delay[market].extend([delay] * count)
        self._snapshot_fail[market].extend([status] * fail)

    def open_interest_fault(self, market: Market = "perp", delay: float = 0.0, fail: int = 0, status: int = 503,
                            malformed: str | None = None, count: int = 1) -> None:
        """Make the next openInterest responses slow (``delay`` s, ``count`` of them), fail (the next ``fail``
        with ``status``) or malformed (the next ``count`` with ``malformed``, a kind of
        ``malformed.OPEN_INTEREST_KINDS``). Open interest is a USDT-M endpoint: ``market`` must be perp."""
        if market != "perp":
            raise ValueError("openInterest is a USDT-M endpoint; use market=perp")
        if malformed:
            bad.check_open_interest_kind(malformed)
        if count < 1 or fail < 0 or delay < 0:
            raise ValueError("count must be positive, fail and delay not negative")
        if not 400 <= status <= 599:
            raise ValueError(f"status {status} is not an HTTP error status (400-599)")
        if delay > 0:
            self._oi_delay.extend([delay] * count)
        self._oi_fail.extend([status] * fail)
        if malformed:
            self._oi_malformed.extend([malformed] * count)

    async def server_shutdown(self, market: Market | None = None, grace_s: float | None = None) -> int:
        """Send ``serverShutdown`` to every connection of the market, then close them after a grace period."""
        victims = [c for c in self.connections if market is None or c.market == market]
        event = {"e": "serverShutdown", "E": self.source.now_ms()}
        for conn in victims:
            conn.reply(_dumps({"stream": "!serverShutdown", "data": event}) if conn.combined else _dumps(event))
        await asyncio.sleep(self.config.shutdown_grace_s if grace_s is None else grace_s)
        for conn in victims:
            conn.closing = True
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"server shutdown")
        return len(victims)

    # ---- control API over HTTP ------------------------------------------------------------------------------
    @staticmethod
    def _market_arg(request: web.Request, required: bool) -> Market | None:
        market = request.query.get("market")
        if market in ("spot", "perp"):
            return market  # type: ignore[return-value]
        if market in (None, "", "all") and not required:
            return None
        raise web.HTTPBadRequest(text=_dumps({"error": "market must be spot or perp"}),
                                 content_type="application/json")

    async def _ctl_book(self, request: web.Request) -> web.Response:
        market = self._market_arg(request, required=True)
        assert market is not None
        symbol = request.query.get("symbol", "")
        if self.source.instrument(market, symbol) is None:
            return web.json_response({"error": f"no {market} symbol {symbol!r}"}, status=404)
        return web.json_response(self.truth(market, symbol), dumps=_dumps)

    async def _ctl_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status(), dumps=_dumps)

    async def _ctl_limits(self, request: web.Request) -> web.Response:
        """``GET|POST /_venue/limits``: the REST weight limits; a POST sets any of ``spot``, ``perp`` (weight per
        window, 0 for none), ``window``, ``ban`` (seconds) and ``ban_after`` (requests), and forgets every count."""
        limits = self.config.limits
        if request.method == "POST":
            q = request.query
            try:
                new = RateLimits(
                    weight={"spot": int(q.get("spot", limits.weight.get("spot", 0))),
                            "perp": int(q.get("perp", limits.weight.get("perp", 0)))},
                    window_s=float(q.get("window", limits.window_s)),
                    ban_after=int(q.get("ban_after", limits.ban_after)), ban_s=float(q.get("ban", limits.ban_s)))
                new.check()
            except ValueError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            self.config.limits = self.weights.limits = limits = new
            self.weights.clear()
        return web.json_response({"weight": limits.weight, "window_s": limits.window_s, "ban_after": limits.ban_after,
                                  "ban_s": limits.ban_s})

    async def _ctl_pause(self, request: web.Request) -> web.Response:
        self.pause(self._market_arg(request, required=False))
        return web.json_response(self.status(), dumps=_dumps)

    async def _ctl_resume(self, request: web.Request) -> web.Response:
        self.resume(self._market_arg(request, required=False))
        return web.json_response(self.status(), dumps=_dumps)

    def _guarded(self, handler: Any) -> Any:
        """The control handler, refused (401) without the control token when the venue has one."""
        async def checked(request: web.Request) -> web.StreamResponse:
            if self.control_token is not None:
                given = request.query.get("token") or request.headers.get("Authorization", "").removeprefix(
                    "Bearer ").strip()
                if not secrets.compare_digest(given.encode(), self.control_token.encode()):
                    return web.json_response({"error": "the control API needs the venue's control token: send "
                                              "'Authorization: Bearer TOKEN' or ?token=TOKEN"}, status=401)
            return await handler(request)
        return checked

    async def _ctl_seek(self, request: web.Request) -> web.Response:
        """``POST /_venue/seek?t=ISO|ns``: move a recorded playback's playhead (``nova serve``)."""
        seek = getattr(self.source, "seek", None)
        if seek is None:
            return web.json_response({"error": "this feed cannot seek; only a recorded playback (nova serve) "
                                      "can"}, status=400)
        try:
            seek(request.query.get("t", ""))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.status(), dumps=_dumps)

    async def _ctl_start(self, request: web.Request) -> web.Response:
        start = getattr(self.source, "start", None)
        if start is not None:
            start()
        return web.json_response(self.status(), dumps=_dumps)

    async def _ctl_listing(self, request: web.Request) -> web.Response:
        """``POST /_venue/listing/{list|delist|halt|resume}?symbol=SOL/USDT[&spot_only=1]``: change what the
        venue lists at runtime (exchangeInfo, streams), as an exchange does; 400 with the reason when it cannot."""
        listing = getattr(self.source, "listing", None)
        if listing is None:
            return web.json_response({"error": "this venue's source plays recorded data; only the synthetic "
                                               "market changes its listings"}, status=400)
        try:
            symbol = Symbol.parse(request.query.get("symbol", ""))
            instruments = listing(request.match_info["action"], symbol,
                                  spot_only=request.query.get("spot_only", "") in ("1", "true"))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        log.info("listing %s %s", request.match_info["action"], symbol.exchange_id)
        return web.json_response({"symbol": symbol.exchange_id, "listed": [
            {"market": i.market, "status": i.status, "tick": i.tick, "step": i.step} for i in instruments]})

    async def _ctl_fault(self, request: web.Request) -> web.Response:
        """``POST /_venue/fault/{name}``: the fault of that name in ``nova.venue.faults.FAULTS`` (the registry the
        command line's ``--fault`` reads too), with the request's parameters; 400 for one it refuses."""
        fault = FAULTS.get(request.match_info["kind"])
        if fault is None:
            return web.json_response({"error": unknown_fault(request.match_info["kind"])}, status=404)
        try:
            market = self._market_arg(request, required=fault.market_required)
            return web.json_response(await fault.apply(self, market, fault.from_query(request.query)))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
