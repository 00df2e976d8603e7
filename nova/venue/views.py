"""Binance's payloads for the views of a symbol's tape: 24h tickers, klines, book tickers, premium index.

One builder per payload, shared by the WebSocket streams (``nova.venue.pushers``) and the REST endpoints
(``nova.venue.market_rest``) where Binance sends the same numbers under two spellings. Field order and names
follow Binance's spot and USDⓈ-M documentation; spot and USDⓈ-M differ where Binance's do.
"""

from __future__ import annotations

from decimal import Decimal

from nova.core.markets import Market
from nova.venue.tape import Stats, SymbolTape, num


def _change(s: Stats) -> tuple[str, str]:
    change = s.close - s.open
    pct = change / s.open * 100 if s.open else Decimal(0)
    return num(change), f"{pct:.3f}"


def ticker_rest(market: Market, symbol: str, tape: SymbolTape, s: Stats) -> dict:
    """``GET ticker/24hr`` for one symbol."""
    change, pct = _change(s)
    last = tape.last_trade or {}
    out: dict = {"symbol": symbol, "priceChange": change, "priceChangePercent": pct, "weightedAvgPrice": num(s.vwap)}
    if market == "spot":
        bbo = tape.book_ticker or {}
        out |= {"prevClosePrice": num(s.open), "lastPrice": num(s.close), "lastQty": last.get("q", "0"),
                "bidPrice": bbo.get("b", "0"), "bidQty": bbo.get("B", "0"), "askPrice": bbo.get("a", "0"),
                "askQty": bbo.get("A", "0")}
    else:
        out |= {"lastPrice": num(s.close), "lastQty": last.get("q", "0")}
    return out | {"openPrice": num(s.open), "highPrice": num(s.high), "lowPrice": num(s.low),
                  "volume": num(s.volume), "quoteVolume": num(s.quote), "openTime": s.open_ms,
                  "closeTime": s.close_ms, "firstId": s.first_id, "lastId": s.last_id, "count": s.count}


def ticker_event(market: Market, symbol: str, tape: SymbolTape, s: Stats, now_ms: int) -> dict:
    """The ``<symbol>@ticker`` event."""
    change, pct = _change(s)
    last = tape.last_trade or {}
    out: dict = {"e": "24hrTicker", "E": now_ms, "s": symbol, "p": change, "P": pct, "w": num(s.vwap)}
    if market == "spot":
        bbo = tape.book_ticker or {}
        out |= {"x": num(s.open), "c": num(s.close), "Q": last.get("q", "0"), "b": bbo.get("b", "0"),
                "B": bbo.get("B", "0"), "a": bbo.get("a", "0"), "A": bbo.get("A", "0")}
    else:
        out |= {"c": num(s.close), "Q": last.get("q", "0")}
    return out | {"o": num(s.open), "h": num(s.high), "l": num(s.low), "v": num(s.volume), "q": num(s.quote),
                  "O": s.open_ms, "C": s.close_ms, "F": s.first_id, "L": s.last_id, "n": s.count}


def mini_ticker_event(symbol: str, s: Stats, now_ms: int) -> dict:
    """The ``<symbol>@miniTicker`` event."""
    return {"e": "24hrMiniTicker", "E": now_ms, "s": symbol, "c": num(s.close), "o": num(s.open),
            "h": num(s.high), "l": num(s.low), "v": num(s.volume), "q": num(s.quote)}


def kline_row(k: Stats) -> list:
    """One row of ``GET klines``."""
    return [k.open_ms, num(k.open), num(k.high), num(k.low), num(k.close), num(k.volume), k.close_ms, num(k.quote),
            k.count, num(k.taker_buy), num(k.taker_buy_quote), "0"]


def kline_event(symbol: str, interval: str, k: Stats, now_ms: int) -> dict:
    """The ``<symbol>@kline_<interval>`` event for the current kline (``x``: it has closed)."""
    return {"e": "kline", "E": now_ms, "s": symbol,
            "k": {"t": k.open_ms, "T": k.close_ms, "s": symbol, "i": interval, "f": k.first_id, "L": k.last_id,
                  "o": num(k.open), "c": num(k.close), "h": num(k.high), "l": num(k.low), "v": num(k.volume),
                  "n": k.count, "x": now_ms > k.close_ms, "q": num(k.quote), "V": num(k.taker_buy),
                  "Q": num(k.taker_buy_quote), "B": "0"}}


def book_ticker_rest(market: Market, symbol: str, bbo: dict) -> dict:
    """``GET ticker/bookTicker`` for one symbol, from its last bookTicker message."""
    out: dict = {"symbol": symbol, "bidPrice": bbo["b"], "bidQty": bbo["B"], "askPrice": bbo["a"], "askQty": bbo["A"]}
    if market == "perp":
        return {"lastUpdateId": bbo.get("u", 0), **out, "time": bbo.get("T", bbo.get("E", 0))}
    return out


def premium_index(mark: dict) -> dict:
    """``GET /fapi/v1/premiumIndex`` for one symbol, from its last markPriceUpdate."""
    return {"symbol": mark["s"], "markPrice": mark["p"], "indexPrice": mark.get("i", mark["p"]),
            "estimatedSettlePrice": mark.get("P", mark["p"]), "lastFundingRate": mark.get("r", "0"),
            "interestRate": "0.00010000", "nextFundingTime": mark.get("T", 0), "time": mark["E"]}


def mark_array_item(mark: dict) -> dict:
    """One element of ``!markPrice@arr``: the symbol's last markPriceUpdate."""
    return {k: mark[k] for k in ("e", "E", "s", "p", "ap", "P", "i", "r", "T") if k in mark}


def partial_depth(market: Market, symbol: str, top: dict, levels: int, prev_u: int | None, now_ms: int) -> dict:
    """A partial book depth message: spot's bare ``lastUpdateId`` book, USDⓈ-M's ``depthUpdate`` event.

    ``prev_u`` is the ``u`` of this stream's previous message (USDⓈ-M's ``pu``); its ``U`` is the first id
    after it, as the venue cannot know which internal update came next.
    """
    bids, asks = top["bids"][:levels], top["asks"][:levels]
    u = top["lastUpdateId"]
    if market == "spot":
        return {"lastUpdateId": u, "bids": bids, "asks": asks}
    pu = u if prev_u is None else prev_u
    return {"e": "depthUpdate", "E": now_ms, "T": top.get("T") or now_ms, "s": symbol, "U": min(pu + 1, u), "u": u,
            "pu": pu, "b": bids, "a": asks}
