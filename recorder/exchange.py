"""ccxt.pro's binance, subclassed so that every market-data message reaches the recorder untouched.

Why subclass instead of consuming ``watch_order_book``: a watch loop sees a coalesced book, not the messages.
The hooks below receive every diff-depth message, every REST snapshot, every bookTicker, trade and
markPrice update, with the raw frame text, before ccxt would process them.

Why ccxt's own book is bypassed: the recorder keeps its own books (``nova.core.book``) from the recorded rows.
Letting ccxt merge every diff into its float book would cost more than the rest of the recorder together
(DESIGN §6 holds the recorder to 0.85x a ccxt client that does nothing), and its book is not what we store:
rows come from the raw message strings. ccxt still does what it is good at: connecting, subscribing,
re-subscribing after reconnects, answering pings, and fetching the REST snapshot after each subscription.

Why diff frames skip ccxt's JSON parse too: a diff carries ~65 levels, and parsing them into Python lists was the
largest cost of a message, for lists nobody reads (the writer parses the levels from the frame text). A text
frame that begins as Binance's diffs do goes to the session's ``on_depth_frame``, which decodes only the header
before the level arrays (into the same checked shape); anything else, or anything it refuses, takes ccxt's path
as before, so every malformed frame is still ledgered the same way.

The hook names are ccxt internals of the pinned version (4.5.x): ``handle_order_book`` (snake_case; a
camelCase override is ignored), the implicit REST methods ``fetch_order_book`` calls, hooked as
``public_get_depth`` (spot, snake_case) and ``fapiPublicGetDepth`` (USDT-M, camelCase), ``handle_bids_asks``,
``handle_trade``, ``handle_mark_prices``, ``handle_liquidation``, the exchangeInfo requests
(``publicGetExchangeInfo``, ``fapiPublicGetExchangeInfo``: camelCase both), ``handle_order_book_subscription``,
``handle_message`` (for the ``serverShutdown`` notice ccxt ignores), and the client's
``handle_text_or_binary_message``.
tests/test_recorder_faults.py (the hook test) fails if any of them stops being called.

Bad input from the wire (tests/test_wire_faults.py): ccxt processes frames inside an asyncio callback, so a
frame it cannot decode (a binary frame that is not UTF-8, broken JSON) or a message its router trips on
(a JSON array without event objects) raises out of that callback and silently ends the connection's receive
loop. The client wrapper below therefore refuses binary frames (Binance sends text only), catches whatever
parsing a frame raises, and ``handle_message`` hands every message ccxt would ignore (unknown event types,
a bookTicker without its fields) to the sink: each is ledgered as an error and the connection reads on.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import ccxt.pro as ccxtpro

from nova.core.limits import depth_weight, weight_limits
from nova.core.markets import Market
from recorder.intake import Intake
from recorder.throttle import Throttled, WeightBudget, retry_after_s
from recorder.wire import DEPTH_FRAME_START, LEVELS_START

# Events the recorder subscribes to; ccxt routes them to the hooks below (spot's bookTicker has no "e").
_ROUTED_EVENTS = frozenset({"depthUpdate", "bookTicker", "trade", "aggTrade", "markPriceUpdate", "forceOrder"})


class Sink(Protocol):
    """Where the hooks deliver messages; ``ts`` is the local receive time in ns."""

    def on_depth(self, market: Market, message: dict, raw: str | None, ts: int) -> None: ...

    def on_snapshot(self, market: Market, symbol: str, response: dict, ts: int) -> None: ...

    def on_bbo(self, market: Market, message: dict, ts: int) -> None: ...

    def on_trade(self, market: Market, message: dict, ts: int) -> None: ...

    def on_funding(self, market: Market, message: dict, ts: int) -> None: ...

    def on_liquidation(self, market: Market, message: dict, ts: int) -> None: ...

    def on_exchange_info(self, market: Market, response: Any, ts: int) -> None: ...

    def on_subscribed(self, market: Market, symbols: list[str], ts: int) -> None: ...

    def on_snapshot_requested(self, market: Market, symbol: str) -> None: ...

    def on_snapshot_failed(self, market: Market, symbol: str, error: BaseException) -> None: ...

    def on_snapshot_throttled(self, market: Market, symbol: str, error: Throttled) -> None: ...

    def on_server_shutdown(self, market: Market, client: Any, ts: int) -> None: ...

    def on_unexpected(self, market: Market, client: Any, message: Any, ts: int, why: str,
                      decoded: bool) -> None: ...


class TakesFrames:
    """A sink that reads diff-depth frames itself (``on_depth_frame(market, frame, cut, ts) -> bool``): the
    recorder's MarketSession. A handover's gate is not one: its messages go through ccxt's path, as parsed dicts
    it orders by id."""

    def on_depth_frame(self, market: Market, frame: str, cut: int, ts: int) -> bool:
        raise NotImplementedError


class RecordingBinance(ccxtpro.binance):
    """One market (spot or USDT-M) of Binance, with every message handed to ``sink``."""

    def __init__(self, config: dict[str, Any], market: Market, sink: Sink, intake: Intake | None = None) -> None:
        super().__init__(config)
        self.nova_market: Market = market
        self.nova_sink = sink
        self.nova_intake = intake  # back-pressure (recorder.intake): each connection reads on only when it allows
        self.nova_hook_calls: dict[str, int] = {}  # for the tests that pin the hooks to the ccxt version
        # REST weight pacing (recorder.throttle): snapshots and open interest wait for room in the window
        self.nova_budget = WeightBudget(market)
        # a handover's new connection: the exchange ids whose book subscription it has settled (acknowledged, or
        # refused as unknown), so that a quiet symbol need not overlap (recorder.handover.Gate.missing)
        self.nova_settled: set[str] = set()

    def _count(self, hook: str) -> None:
        self.nova_hook_calls[hook] = self.nova_hook_calls.get(hook, 0) + 1

    # ---- WebSocket: keep the raw frame text of every message ---------------------------------------------
    def client(self, url: str) -> Any:
        client = super().client(url)
        if not getattr(client, "nova_wrapped", False):
            parse = client.handle_text_or_binary_message
            market, sink = self.nova_market, self.nova_sink

            def keep_raw(data: Any, _parse: Any = parse, _client: Any = client) -> None:
                if not isinstance(data, str):  # Binance sends text frames only
                    _client.nova_raw = None
                    sink.on_unexpected(market, _client, data, time.time_ns(),
                                       f"binary frame of {len(data)} bytes", False)
                    return
                if (data.startswith(DEPTH_FRAME_START) and data.endswith("]}")  # whole: not cut short
                        and isinstance(self.nova_sink, TakesFrames)):
                    # a diff: its header read without ccxt's parse of the whole frame (MarketSession.on_depth_frame)
                    cut = data.find(LEVELS_START)
                    if cut > 0 and self.nova_sink.on_depth_frame(market, data, cut, time.time_ns()):
                        return
                _client.nova_raw = data
                try:
                    _parse(data)
                except Exception as exc:  # raised out of ccxt's callback it would end the receive loop
                    sink.on_unexpected(market, _client, data, time.time_ns(),
                                       f"{type(exc).__name__}: {str(exc)[:100]}", False)

            client.handle_text_or_binary_message = keep_raw
            if self.nova_intake is not None:
                # ccxt schedules ``self.receive_loop`` after every message: one read, then the next call. Gating
                # that call holds the connection back without touching ccxt's loop or losing a frame.
                gate, receive_loop = self.nova_intake.gate, client.receive_loop
                client.receive_loop = lambda _gate=gate, _receive_loop=receive_loop: _gate(_receive_loop)
            client.nova_raw = None
            client.nova_wrapped = True
        return client

    # ---- diff depth: every message, raw; ccxt's own book is not updated (see module docstring) -----------
    def handle_order_book(self, client: Any, message: dict) -> None:
        ts = time.time_ns()
        self.nova_sink.on_depth(self.nova_market, message, getattr(client, "nova_raw", None), ts)

    def handle_order_book_subscription(self, client: Any, message: Any, subscription: dict) -> None:
        self._count("handle_order_book_subscription")
        symbols = self.safe_list(subscription, "symbols") or [self.safe_string(subscription, "symbol")]
        if getattr(self, "nova_successor", False):
            # a handover's new connection: no snapshot, the old connection's book goes on (recorder.handover)
            self.nova_settled.update(self.markets[s]["id"] for s in symbols if s in (self.markets or {}))
            return
        self.nova_sink.on_subscribed(self.nova_market, [s for s in symbols if s], time.time_ns())
        super().handle_order_book_subscription(client, message, subscription)

    # ---- REST snapshots: the raw response, strings and all -----------------------------------------------
    async def public_get_depth(self, params: dict | None = None) -> Any:
        # Spot: ccxt's constructor copies every snake_case method onto its camelCase name on the class, so
        # this override becomes the publicGetDepth that fetch_order_book calls (a camelCase override would
        # be overwritten by the copy of the inherited snake_case entry).
        return await self._depth_snapshot("spot", super().public_get_depth, params or {})

    async def fapiPublicGetDepth(self, params: dict | None = None) -> Any:
        # USDT-M: the snake_case entry is fapipublic_get_depth, whose camelCase copy ("fapipublicGetDepth")
        # is not the name fetch_order_book calls; only a camelCase override reaches it.
        return await self._depth_snapshot("perp", super().fapiPublicGetDepth, params or {})

    async def _depth_snapshot(self, market: Market, call: Any, params: dict) -> Any:
        """Paced by the weight budget; a 429 or 418 is ledgered and the same request retried after its
        Retry-After (the diffs that arrive meanwhile are held by the sequencer, so nothing is lost)."""
        self._count("publicGetDepth" if market == "spot" else "fapiPublicGetDepth")
        symbol = str(params.get("symbol", ""))
        self.nova_sink.on_snapshot_requested(market, symbol)
        limit = params.get("limit")
        weight = depth_weight(market, int(limit) if isinstance(limit, int | str) and str(limit).isdigit() else 1000)
        while True:
            await self.nova_budget.acquire(weight)
            try:
                response = await call(params)
            except Throttled as exc:
                self.nova_budget.hold(exc.retry_after_s)
                self.nova_sink.on_snapshot_throttled(market, symbol, exc)
                continue
            except BaseException as exc:
                self.nova_sink.on_snapshot_failed(market, symbol, exc)
                raise
            finally:
                self.nova_budget.observe(self.last_response_headers)
            self.nova_sink.on_snapshot(market, symbol, response, time.time_ns())
            return response

    async def fapiPublicGetOpenInterest(self, params: dict | None = None) -> Any:
        # USDT-M only, camelCase as the recorder calls it: paced by the same budget as the snapshots
        await self.nova_budget.acquire(1)
        try:
            return await super().fapiPublicGetOpenInterest(params or {})
        except Throttled as exc:
            self.nova_budget.hold(exc.retry_after_s)
            raise
        finally:
            self.nova_budget.observe(self.last_response_headers)

    def handle_errors(self, code: int, reason: str, url: str, method: str, headers: Any, body: str, response: Any,
                      request_headers: Any, request_body: Any) -> Any:
        """429 (over the weight limit) and 418 (banned) become Throttled, with the Retry-After the server sent."""
        if code in (429, 418):
            raise Throttled(code, retry_after_s(headers), f"{self.id} {method} {url} {code} {reason} {body[:200]}")
        return super().handle_errors(code, reason, url, method, headers, body, response, request_headers,
                                     request_body)

    # ---- exchangeInfo: the instruments, raw (ccxt's load_markets asks once per start) -----------------------
    async def publicGetExchangeInfo(self, params: dict | None = None) -> Any:
        # spot: ccxt's snake-to-camel copy of public_get_exchangeinfo lands on "publicGetExchangeinfo", not on
        # the name fetch_markets calls, so (unlike depth) the camelCase override is the one reached
        return await self._exchange_info("spot", super().publicGetExchangeInfo, params or {})

    async def fapiPublicGetExchangeInfo(self, params: dict | None = None) -> Any:
        # USDT-M: only the camelCase override is reached (see fapiPublicGetDepth)
        return await self._exchange_info("perp", super().fapiPublicGetExchangeInfo, params or {})

    async def _exchange_info(self, market: Market, call: Any, params: dict) -> Any:
        self._count("publicGetExchangeInfo" if market == "spot" else "fapiPublicGetExchangeInfo")
        response = await call(params)
        if isinstance(response, dict):
            self.nova_budget.configure(*weight_limits(response.get("rateLimits"), market))
        self.nova_sink.on_exchange_info(market, response, time.time_ns())
        return response

    # ---- notices ccxt does not handle ------------------------------------------------------------------------
    def handle_message(self, client: Any, message: Any) -> None:
        body = message.get("data", message) if isinstance(message, dict) and "stream" in message else message
        if isinstance(body, dict):
            event = body.get("e")
            if event == "serverShutdown":
                self.nova_sink.on_server_shutdown(self.nova_market, client, time.time_ns())
                return
            if not (event in _ROUTED_EVENTS or (event is None and (
                    "id" in body or "error" in body or "status" in body  # replies and errors: ccxt's
                    or ("a" in body and "b" in body)))):  # spot bookTicker
                why = f"unknown event type {str(event)[:40]!r}" if event is not None else "no event type"
                self.nova_sink.on_unexpected(self.nova_market, client, body, time.time_ns(), why, True)
                return
        elif not (isinstance(body, list) and body and all(  # ccxt routes arrays of markPriceUpdate only
                isinstance(item, dict) and item.get("e") == "markPriceUpdate" for item in body)):
            why = "not a JSON object" if not isinstance(body, list) else "an array that is not of markPriceUpdate"
            self.nova_sink.on_unexpected(self.nova_market, client, body, time.time_ns(), why,
                                         isinstance(body, list))
            return
        super().handle_message(client, message)

    # ---- the other streams: recorded as they come, not parsed by ccxt -------------------------------------
    def handle_bids_asks(self, client: Any, message: Any) -> None:
        ts = time.time_ns()
        for item in message if isinstance(message, list) else [message]:
            self.nova_sink.on_bbo(self.nova_market, item, ts)

    def handle_trade(self, client: Any, message: dict) -> None:
        self.nova_sink.on_trade(self.nova_market, message, time.time_ns())

    def handle_liquidation(self, client: Any, message: dict) -> None:
        self.nova_sink.on_liquidation(self.nova_market, message, time.time_ns())

    def handle_mark_prices(self, client: Any, message: Any) -> None:
        ts = time.time_ns()
        for item in message if isinstance(message, list) else [message]:
            self.nova_sink.on_funding(self.nova_market, item, ts)
