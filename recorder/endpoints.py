"""Where the recorder's ccxt.pro clients connect: real Binance, its testnet, or any DESIGN §3 venue URL.

The recorder knows nothing about the simulated venue; it only sees URLs. A venue at ``http://HOST:PORT``
serves Binance's paths under fixed prefixes (``/api/v3``, ``/fapi/v1``, ``/stream/ws``, ``/fstream/ws``),
so pointing ccxt at it is a matter of rewriting the handful of URLs that market data uses.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlparse

from nova.core.errors import NovaError
from nova.core.limits import STREAMS_PER_CONNECTION
from nova.core.markets import Market
from nova.core.secrets import redact, redact_url

Endpoint = Literal["binance", "testnet"] | str


def check_venue_url(url: str) -> str:
    """Normalize ``--venue``; raise NovaError with a hint if it is not an http(s) base URL."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise NovaError(f"--venue '{redact(url)}' is not a base URL; write it like http://127.0.0.1:8765")
    return f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"


def ccxt_options(market: Market, depth_rate_ms: int, connections: int | None = None) -> dict[str, Any]:
    """Options that make ``load_markets`` one request, pick the diff-depth stream speed, and keep ccxt inside
    Binance's connection limits (nova.core.limits): at most ``connections`` WebSocket connections (ccxt spreads
    subscriptions over them round-robin; its default is 50) and Binance's streams per connection on each."""
    kind = "spot" if market == "spot" else "linear"
    options: dict[str, Any] = {
        "fetchMarkets": {"types": [kind]},
        "fetchCurrencies": False,
        "fetchMargins": False,
        "watchOrderBookRate": str(depth_rate_ms),
        "subscriptionLimitByStream": {kind: STREAMS_PER_CONNECTION[market]},
    }
    if connections is not None:
        options["streamLimits"] = {kind: connections}
    return options


def point_at_venue(exchange: Any, venue_url: str) -> None:
    """Rewrite a ccxt.pro binance instance's market-data URLs to a DESIGN §3 venue."""
    base = check_venue_url(venue_url)
    ws = "ws" + base[4:]  # http -> ws, https -> wss
    api = exchange.urls["api"]
    api["public"] = f"{base}/api/v3"
    api["fapiPublic"] = f"{base}/fapi/v1"
    api["ws"]["spot"] = f"{ws}/stream/ws"
    api["ws"]["linear"] = f"{ws}/fstream/ws"  # ccxt inserts /public or /market itself


def configure(exchange: Any, endpoint: Endpoint) -> None:
    """Apply ``endpoint``: real Binance (nothing to do), ccxt's sandbox URLs, or a venue base URL."""
    if endpoint == "binance":
        return
    if endpoint == "testnet":
        exchange.set_sandbox_mode(True)
        return
    point_at_venue(exchange, endpoint)


def describe_source(endpoint: Endpoint, server: str | None) -> tuple[str, str]:
    """(identity, where) of the source a session records from, for the ledger's provenance.

    The identity must compare equal for two runs of one market and differ between markets: real Binance and
    its testnet are named; a server at a venue URL is named by its own description when its ``Server`` header
    carries one (``product/version (what it serves)``, as Nova's venue sends), since its port changes from
    run to run while what it serves does not; otherwise by its URL. ``where`` is the URL itself.
    """
    if endpoint == "binance":
        return "Binance", "Binance (api.binance.com, fapi.binance.com)"
    if endpoint == "testnet":
        return "Binance testnet", "the Binance testnet (ccxt's sandbox URLs)"
    where = redact_url(check_venue_url(endpoint))  # the ledger keeps where data came from, never a password
    if server and "(" in server and server.rstrip().endswith(")"):
        return server.strip(), where
    return where + (f" (server {server.strip()})" if server else ""), where


def versions() -> str:
    """The software that records, as the ledger's provenance keeps it."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import ccxt

    try:
        nova = version("nova-recorder")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without installing
        nova = "dev"
    return f"nova {nova}, ccxt {ccxt.__version__}, python {platform.python_version()}"
