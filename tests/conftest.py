"""Shared fixtures: in-process venues, ccxt.pro clients pointed at them, an HTTP session, copies of datasets.

Shared functions and constants are in tests/helpers.py."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import ccxt.pro as ccxtpro
import pytest

from nova.core.markets import Market
from nova.venue import FeedSource, SyntheticSource, Venue, VenueConfig
from recorder.endpoints import ccxt_options, point_at_venue
from tests.helpers import ETH
from tests.s3server import S3Server, restore_env, set_env

# The quick check (``pytest -m "not slow"``) leaves out these whole modules: each starts venues, recorders, kills
# or notebooks for many seconds. CI runs everything. Single slow tests elsewhere carry @pytest.mark.slow.
SLOW_MODULES = {
    "test_notebook",  # executes the notebook on two recorded runs (~50 s)
    "test_crash_matrix",  # kill -9 of recorders and compactions (~30 s)
    "test_trust",  # subprocess CLIs on recorded days, demo, recover (~70 s)
    "test_recorder_cli",  # signals, kill -9 at random moments, full disk (~50 s)
    "test_wire_faults",  # every malformed kind on every stream (~20 s)
    "test_recorder_faults",  # injected drops, stalls, serverShutdown (~25 s)
    "test_recorder_realdata",  # the real captures through venue and recorder (~10 s)
    "test_venue_ccxt",  # bare ccxt.pro against the venue (~25 s)
    "test_spark",  # a local Spark session against DuckDB (~55 s)
    "test_serve",  # record, serve and record again, real captures too (~45 s)
    "test_serve_clients",  # python-binance and cryptofeed against nova serve (~40 s)
    "test_pieces",  # batches on process pools, a Dask cluster and an object store, nova scan (~60 s)
    "test_recorder_handover",  # make-before-break across the age limit and serverShutdown (~15 s each run)
    "test_recorder_backpressure",  # a recorder flooded at max speed with a writer slowed on purpose (~20 s)
    "test_secrets",  # a recorder to an object store with planted keys, its every output searched (~40 s)
    "test_metrics",  # recorders with --metrics-port, one a fleet, scraped (~25 s)
    "test_config_file",  # nova record --config against a venue, and every bad file (~25 s)
    "test_export",  # snapshots against the oracle and book_at, the CLI, an object store (~20 s)
    "test_venue_protocol2",  # every new stream and endpoint, TLS, real-capture klines (~16 s)
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
async def make_venue() -> AsyncIterator[Callable[..., Awaitable[Venue]]]:
    """Start venues inside the test's event loop; all are stopped at the end of the test."""
    started: list[Venue] = []

    async def factory(source: FeedSource | None = None, **config: Any) -> Venue:
        venue = Venue(source or SyntheticSource([ETH], seed=1), VenueConfig(**config))
        await venue.start()
        started.append(venue)
        return venue

    yield factory
    for venue in started:
        await venue.stop()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Any]]:
    """ccxt.pro binance instances configured only by URLs and options; closed at the end of the test."""
    clients: list[Any] = []

    def factory(url: str, market: Market, depth_rate_ms: int = 100, **options: Any) -> Any:
        exchange = ccxtpro.binance({"options": {**ccxt_options(market, depth_rate_ms), **options}})
        point_at_venue(exchange, url)
        clients.append(exchange)
        return exchange

    yield factory
    for exchange in clients:
        await exchange.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session for talking to a venue by hand."""
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def copy_of(tmp_path: Path) -> Callable[..., Path]:
    """``copy_of(src, name="copy")``: a copy of a dataset under the test's tmp_path, for tests that damage it."""
    def make(src: Path, name: str = "copy") -> Path:
        dst = tmp_path / name
        shutil.copytree(src, dst)
        return dst
    return make


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One real S3-compatible server (moto's server mode) on 127.0.0.1 for the whole run."""
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_root(s3_server: S3Server) -> Iterator[str]:
    """A fresh bucket's root ``s3://BUCKET/data``, with this process's AWS variables pointing at the server
    (child processes get them from ``s3_server.env``)."""
    old = set_env(s3_server)
    yield f"s3://{s3_server.new_bucket()}/data"
    restore_env(old)
