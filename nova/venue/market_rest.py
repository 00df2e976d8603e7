"""The venue's REST market-data endpoints beyond depth: tickers, klines, trades, average price, premium index.

Why here: they are views of the tape (``nova.venue.tape``) and the book, the same for every feed, so the
server only registers them (``add_routes``). Paths, parameters, limits and error codes are Binance's: spot
under ``/api/v3``, USDⓈ-M under ``/fapi/v1`` where Binance has the endpoint (``avgPrice`` is spot only,
``premiumIndex`` USDⓈ-M only); a missing ``symbol`` means every symbol where Binance allows that. A symbol the
feed has nothing for yet (no trade, no mark price) gets Binance's JSON error with a sentence saying so.
Each costs the request weight Binance documents for it (``nova.core.limits.request_weight``: more without
``symbol``), charged by the server's weight middleware before the handler runs, as for every REST request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from nova.core.markets import Market
from nova.venue.streams import KLINE_INTERVALS_S
from nova.venue.tape import agg_row, trade_row
from nova.venue.views import book_ticker_rest, kline_row, premium_index, ticker_rest

if TYPE_CHECKING:
    from nova.venue.server import Venue

AVG_PRICE_MINUTES = 5


class Refused(Exception):
    """A request Binance would refuse: HTTP status, Binance error code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _error(exc: Refused) -> web.Response:
    return web.json_response({"code": exc.code, "msg": exc.msg}, status=exc.status)


def _int(query: Any, name: str, default: int | None) -> int | None:
    text = query.get(name)
    if text is None:
        return default
    if not text.lstrip("-").isdigit() or len(text) > 20:
        raise Refused(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(text)


def _limit(query: Any, default: int, top: int) -> int:
    limit = _int(query, "limit", default)
    assert limit is not None
    if limit < 1:
        raise Refused(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return min(limit, top)


class MarketRest:
    """Handlers bound to one venue."""

    def __init__(self, venue: Venue) -> None:
        self.venue = venue

    def symbols(self, market: Market, query: Any, required: bool) -> list[str]:
        """The symbols a request names (``symbol``, or ``symbols`` as a JSON list), or all of the market's."""
        listed = [i.symbol.exchange_id for i in self.venue.source.instruments if i.market == market]
        one = query.get("symbol")
        many = query.get("symbols")
        if one is None and many is None:
            if required:
                raise Refused(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            return listed
        wanted = [one] if one is not None else [s.strip('"') for s in many.strip("[]").split(",") if s]
        for s in wanted:
            if s not in listed:
                raise Refused(400, -1121, "Invalid symbol.")
        return wanted

    def route(self, market: Market, build: Any) -> Any:
        async def handler(request: web.Request) -> web.Response:
            try:
                return web.json_response(build(market, request.query), dumps=_dumps)
            except Refused as exc:
                return _error(exc)
        return handler

    # ---- the endpoints (market, query) -> body ------------------------------------------------------------
    def _one_or_all(self, market: Market, query: Any, item: Any) -> Any:
        names = self.symbols(market, query, required=False)
        items = [x for x in (item(market, s) for s in names) if x is not None]
        if query.get("symbol") is not None:
            if not items:
                raise Refused(400, -1121, f"No data yet for {names[0]}: the feed has not sent what this "
                                          "endpoint is made of.")
            return items[0]
        return items

    def ticker_price(self, market: Market, query: Any) -> Any:
        def item(m: Market, s: str) -> dict | None:
            last = self.venue.tape.of(m, s).last_trade
            if last is None:
                return None
            return {"symbol": s, "price": last["p"]} | ({"time": last["T"]} if m == "perp" else {})
        return self._one_or_all(market, query, item)

    def book_ticker(self, market: Market, query: Any) -> Any:
        def item(m: Market, s: str) -> dict | None:
            bbo = self.venue.tape.of(m, s).book_ticker
            if bbo is None:
                top = self.venue.source.top(m, s, 1)
                if not top["bids"] or not top["asks"]:
                    return None
                bbo = {"b": top["bids"][0][0], "B": top["bids"][0][1], "a": top["asks"][0][0],
                       "A": top["asks"][0][1], "u": top["lastUpdateId"], "T": top.get("T", 0)}
            return book_ticker_rest(m, s, bbo)
        return self._one_or_all(market, query, item)

    def ticker_24hr(self, market: Market, query: Any) -> Any:
        def item(m: Market, s: str) -> dict | None:
            tape = self.venue.tape.of(m, s)
            stats = tape.rolling()
            return None if stats is None else ticker_rest(m, s, tape, stats)
        return self._one_or_all(market, query, item)

    def klines(self, market: Market, query: Any) -> Any:
        symbol = self.symbols(market, query, required=True)[0]
        interval = query.get("interval")
        if interval is None:
            raise Refused(400, -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        if interval not in KLINE_INTERVALS_S:
            raise Refused(400, -1120, "Invalid interval.")
        limit = _limit(query, 500, 1000 if market == "spot" else 1500)
        rows = self.venue.tape.of(market, symbol).klines(KLINE_INTERVALS_S[interval], _int(query, "startTime", None),
                                                         _int(query, "endTime", None), limit)
        return [kline_row(k) for k in rows]

    def trades(self, market: Market, query: Any) -> Any:
        symbol = self.symbols(market, query, required=True)[0]
        limit = _limit(query, 500, 1000)
        return [trade_row(market, p) for p in list(self.venue.tape.of(market, symbol).trades)[-limit:]]

    def agg_trades(self, market: Market, query: Any) -> Any:
        symbol = self.symbols(market, query, required=True)[0]
        limit = _limit(query, 500, 1000)
        aggs = [agg_row(market, p) for p in self.venue.tape.of(market, symbol).aggs]
        start, end, from_id = _int(query, "startTime", None), _int(query, "endTime", None), _int(query, "fromId", None)
        if from_id is not None:
            return [a for a in aggs if a["a"] >= from_id][:limit]
        if start is not None or end is not None:
            return [a for a in aggs if (start is None or a["T"] >= start) and (end is None or a["T"] <= end)][:limit]
        return aggs[-limit:]

    def avg_price(self, market: Market, query: Any) -> Any:
        symbol = self.symbols(market, query, required=True)[0]
        tape = self.venue.tape.of(market, symbol)
        stats = tape.rolling(AVG_PRICE_MINUTES)
        if stats is None:
            raise Refused(400, -1121, f"No trades yet for {symbol}: an average price needs some.")
        return {"mins": AVG_PRICE_MINUTES, "price": f"{stats.vwap:.8f}", "closeTime": stats.close_ms}

    def premium_index(self, market: Market, query: Any) -> Any:
        def item(m: Market, s: str) -> dict | None:
            mark = self.venue.tape.of(m, s).mark
            return None if mark is None else premium_index(mark)
        return self._one_or_all(market, query, item)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def add_routes(router: web.UrlDispatcher, venue: Venue) -> None:
    """Register the endpoints on the venue's router (before its catch-all)."""
    rest = MarketRest(venue)
    for prefix, market in (("/api/v3", "spot"), ("/fapi/v1", "perp")):
        m: Market = market  # type: ignore[assignment]
        router.add_get(f"{prefix}/ticker/price", rest.route(m, rest.ticker_price))
        router.add_get(f"{prefix}/ticker/bookTicker", rest.route(m, rest.book_ticker))
        router.add_get(f"{prefix}/ticker/24hr", rest.route(m, rest.ticker_24hr))
        router.add_get(f"{prefix}/klines", rest.route(m, rest.klines))
        router.add_get(f"{prefix}/trades", rest.route(m, rest.trades))
        router.add_get(f"{prefix}/aggTrades", rest.route(m, rest.agg_trades))
    router.add_get("/api/v3/avgPrice", rest.route("spot", rest.avg_price))
    router.add_get("/fapi/v1/premiumIndex", rest.route("perp", rest.premium_index))
