"""Symbol and market naming shared by the venue, the recorder and replay.

Users type symbols the ccxt way (``ETH/USDT``); Binance speaks ``ETHUSDT`` on the wire and ``ethusdt`` in
stream names; the dataset uses ``ETH-USDT`` because a slash cannot live in a hive partition value. Keeping
every spelling in one place stops the three sides from drifting apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Market = Literal["spot", "perp"]
MARKETS: tuple[Market, ...] = ("spot", "perp")

# Quote assets we can split an undelimited id like ETHUSDT on, longest first.
KNOWN_QUOTES = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "EUR", "TRY", "BTC", "ETH", "BNB")

_SYMBOL_RE = re.compile(r"^([A-Z0-9]+)[/\-_]([A-Z0-9]+)(?::([A-Z0-9]+))?$")


@dataclass(frozen=True, order=True)
class Symbol:
    """A base/quote pair, independent of the market (spot or perp) it trades on."""

    base: str
    quote: str

    @classmethod
    def parse(cls, text: str) -> Symbol:
        """Accept ``ETH/USDT``, ``eth-usdt``, ``ETH/USDT:USDT`` or ``ETHUSDT``; raise ValueError otherwise."""
        raw = text.strip().upper()
        match = _SYMBOL_RE.match(raw)
        if match:
            return cls(match.group(1), match.group(2))
        if raw.isalnum():
            for quote in KNOWN_QUOTES:
                if raw.endswith(quote) and len(raw) > len(quote):
                    return cls(raw[: -len(quote)], quote)
        raise ValueError(f"'{text}' is not a symbol; write it as BASE/QUOTE, for example ETH/USDT")

    @property
    def unified(self) -> str:
        """ccxt's spot spelling, ``ETH/USDT``."""
        return f"{self.base}/{self.quote}"

    @property
    def dashed(self) -> str:
        """The dataset's partition value, ``ETH-USDT``."""
        return f"{self.base}-{self.quote}"

    @property
    def exchange_id(self) -> str:
        """Binance's REST symbol, ``ETHUSDT``."""
        return f"{self.base}{self.quote}"

    @property
    def stream_id(self) -> str:
        """Binance's WebSocket stream prefix, ``ethusdt``."""
        return self.exchange_id.lower()

    def ccxt_symbol(self, market: Market) -> str:
        """ccxt's unified symbol for this pair on ``market`` (perps settle in the quote asset)."""
        return self.unified if market == "spot" else f"{self.unified}:{self.quote}"

    def __str__(self) -> str:
        return self.unified


# ---- what exchangeInfo lists (the recorder's --all, at start and while it runs) ------------------------------------
TRADING = "TRADING"  # a symbol's exchangeInfo status while it trades; anything else (BREAK, HALT, SETTLING ...) not
PERPETUAL = "PERPETUAL"  # USDT-M's contractType of a perpetual (the others are dated deliveries)


def listed(market: Market, entries: object) -> dict[Symbol, str]:
    """Symbol -> exchangeInfo status of every entry of ``market`` that Nova can record: spot pairs, and USDT-M
    perpetuals (settled in their quote asset). Entries without the fields are left out (the recorder ledgers a
    malformed exchangeInfo where it records instruments)."""
    out: dict[Symbol, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        base, quote, status = entry.get("baseAsset"), entry.get("quoteAsset"), entry.get("status")
        if not (isinstance(base, str) and isinstance(quote, str) and isinstance(status, str) and base and quote):
            continue
        if market == "perp" and (entry.get("contractType") != PERPETUAL
                                 or entry.get("marginAsset", quote) != quote):
            continue
        out[Symbol(base.upper(), quote.upper())] = status
    return out


def tradable(statuses: dict[Market, dict[Symbol, str]]) -> set[Symbol]:
    """The symbols TRADING on every given market (with both: a spot pair that has a USDT-M perpetual)."""
    found = [{s for s, status in by_symbol.items() if status == TRADING} for by_symbol in statuses.values()]
    return set.intersection(*found) if found else set()
