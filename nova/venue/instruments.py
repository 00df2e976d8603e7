"""Instrument definitions and the ``exchangeInfo`` bodies the venue serves.

ccxt builds its markets (precision, limits, ids) from these bodies, so they carry the fields ccxt reads and
the filters a real Binance listing has; numbers are realistic for each asset rather than arbitrary.
"""

from __future__ import annotations

from dataclasses import dataclass

from nova.core.limits import WEIGHT_PER_MINUTE
from nova.core.markets import Market, Symbol

# Typical listing parameters: (reference price, spot tick, spot step, perp tick, perp step).
_LISTINGS: dict[str, tuple[float, str, str, str, str]] = {
    "BTC": (90000.0, "0.01", "0.00001", "0.10", "0.001"),
    "ETH": (3000.0, "0.01", "0.0001", "0.01", "0.001"),
    "BNB": (600.0, "0.01", "0.001", "0.010", "0.01"),
    "SOL": (150.0, "0.01", "0.001", "0.0100", "1"),
    "XRP": (0.6, "0.0001", "0.1", "0.0001", "0.1"),
    "DOGE": (0.15, "0.00001", "1", "0.00001", "1"),
}
_DEFAULT_LISTING = (25.0, "0.001", "0.01", "0.001", "0.01")

# Binance prints spot prices and sizes with 8 decimals whatever the tick; futures use the tick's decimals.
SPOT_DECIMALS = 8


def _decimals(step: str) -> int:
    return len(step.split(".")[1]) if "." in step else 0


@dataclass(frozen=True)
class Instrument:
    """One tradable market of the venue, with integer tick and lot arithmetic (no float drift)."""

    symbol: Symbol
    market: Market
    reference_price: float
    tick: str
    step: str
    status: str = "TRADING"  # exchangeInfo's: BREAK while trading is halted

    @classmethod
    def for_symbol(cls, symbol: Symbol, market: Market) -> Instrument:
        price, s_tick, s_step, p_tick, p_step = _LISTINGS.get(symbol.base, _DEFAULT_LISTING)
        if market == "spot":
            return cls(symbol, market, price, s_tick, s_step)
        return cls(symbol, market, price, p_tick, p_step)

    @property
    def tick_decimals(self) -> int:
        return _decimals(self.tick)

    @property
    def step_decimals(self) -> int:
        return _decimals(self.step)

    @property
    def tick_units(self) -> int:
        """The tick expressed in units of 10**-tick_decimals (``0.10`` -> 10 at 2 decimals)."""
        return int(self.tick.replace(".", ""))

    @property
    def step_units(self) -> int:
        return int(self.step.replace(".", ""))

    @property
    def price_decimals_out(self) -> int:
        return SPOT_DECIMALS if self.market == "spot" else self.tick_decimals

    @property
    def qty_decimals_out(self) -> int:
        return SPOT_DECIMALS if self.market == "spot" else self.step_decimals

    def price_str(self, units: int) -> str:
        """Format a price held in units of 10**-tick_decimals the way Binance prints it."""
        return _fixed(units, self.tick_decimals, self.price_decimals_out)

    def qty_str(self, units: int) -> str:
        return _fixed(units, self.step_decimals, self.qty_decimals_out)


def _fixed(units: int, decimals: int, out_decimals: int) -> str:
    scaled = units * 10 ** (out_decimals - decimals)
    if out_decimals == 0:
        return str(scaled)
    sign = "-" if scaled < 0 else ""
    scaled = abs(scaled)
    whole, frac = divmod(scaled, 10**out_decimals)
    return f"{sign}{whole}.{frac:0{out_decimals}d}"


_SPOT_RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": WEIGHT_PER_MINUTE["spot"]},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
]
_FUTURES_RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": WEIGHT_PER_MINUTE["perp"]},
    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
]
_ORDER_TYPES_SPOT = ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"]
_ORDER_TYPES_FUTURES = ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                        "TRAILING_STOP_MARKET"]


def spot_symbol_info(inst: Instrument) -> dict:
    max_price = inst.price_str(10**7 * 10**inst.tick_decimals)
    return {
        "symbol": inst.symbol.exchange_id,
        "status": inst.status,
        "baseAsset": inst.symbol.base,
        "baseAssetPrecision": 8,
        "quoteAsset": inst.symbol.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": _ORDER_TYPES_SPOT,
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": inst.price_str(inst.tick_units),
             "maxPrice": max_price, "tickSize": inst.price_str(inst.tick_units)},
            {"filterType": "LOT_SIZE", "minQty": inst.qty_str(inst.step_units),
             "maxQty": "9000.00000000", "stepSize": inst.qty_str(inst.step_units)},
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "1000.00000000",
             "stepSize": "0.00000000"},
            {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
             "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
            {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
             "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def perp_symbol_info(inst: Instrument) -> dict:
    return {
        "symbol": inst.symbol.exchange_id,
        "pair": inst.symbol.exchange_id,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": inst.status,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": inst.symbol.base,
        "quoteAsset": inst.symbol.quote,
        "marginAsset": inst.symbol.quote,
        "pricePrecision": inst.tick_decimals,
        "quantityPrecision": inst.step_decimals,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": ["Layer-1"],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": inst.price_str(inst.tick_units),
             "maxPrice": inst.price_str(10**6 * 10**inst.tick_decimals), "tickSize": inst.tick},
            {"filterType": "LOT_SIZE", "stepSize": inst.step, "maxQty": "10000", "minQty": inst.step},
            {"filterType": "MARKET_LOT_SIZE", "stepSize": inst.step, "maxQty": "2000", "minQty": inst.step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MIN_NOTIONAL", "notional": "20"},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
             "multiplierDecimal": "4"},
        ],
        "orderTypes": _ORDER_TYPES_FUTURES,
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        "permissionSets": ["GRID", "COPY"],
    }


def exchange_info(instruments: list[Instrument], market: Market, server_time_ms: int) -> dict:
    """The full ``exchangeInfo`` body for one market (spot ``/api/v3`` or USDT-M ``/fapi/v1``)."""
    listed = [i for i in instruments if i.market == market]
    if market == "spot":
        return {
            "timezone": "UTC",
            "serverTime": server_time_ms,
            "rateLimits": _SPOT_RATE_LIMITS,
            "exchangeFilters": [],
            "symbols": [spot_symbol_info(i) for i in listed],
        }
    quotes = sorted({i.symbol.quote for i in listed})
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": _FUTURES_RATE_LIMITS,
        "exchangeFilters": [],
        "assets": [{"asset": q, "marginAvailable": True, "autoAssetExchange": "-10000"} for q in quotes],
        "symbols": [perp_symbol_info(i) for i in listed],
    }
