"""The venue describes itself: a ``Server`` header on every HTTP response, the WebSocket upgrade included.

A recorder writes down where its data came from; against Binance that is Binance, against the venue it is
``nova-venue/<version> (<what market>)``. The description must say which market it is (the synthetic seed
and rate, the capture files) and nothing that differs between two runs of the same market.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.metadata
import os
from pathlib import Path
from urllib.parse import urlparse

from nova.venue import CaptureSource, SyntheticSource, Venue
from nova.venue.server import server_header
from tests.helpers import ETH, write_perp_capture

VERSION = importlib.metadata.version("nova-recorder")


async def upgrade_response(venue: Venue, path: str) -> tuple[str, dict[str, str]]:
    """Ask for a WebSocket upgrade by hand and read the response head: (status line, headers)."""
    url = urlparse(venue.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    try:
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1")
    finally:
        writer.close()
    status, *lines = head.strip().split("\r\n")
    return status, {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}


async def test_server_header_on_every_response(make_venue, session) -> None:
    venue = await make_venue(SyntheticSource([ETH], seed=7, rate=2.5))
    expected = f"nova-venue/{VERSION} (synthetic market, seed 7, rate x2.5)"
    for path, params, status in [
        ("/api/v3/depth", {"symbol": "ETHUSDT", "limit": "5"}, 200),
        ("/fapi/v1/exchangeInfo", {}, 200),
        ("/fapi/v1/openInterest", {"symbol": "ETHUSDT"}, 200),
        ("/fapi/v1/openInterest", {}, 400),  # errors too
        ("/api/v3/openInterest", {"symbol": "ETHUSDT"}, 404),
        ("/_venue/status", {}, 200),
        ("/_venue/book", {"market": "moon"}, 400),
    ]:
        async with session.get(venue.url + path, params=params) as resp:
            assert resp.status == status, path
            assert resp.headers["Server"] == expected, path
    for path in ("/stream/ws/ethusdt@depth", "/fstream/market/ws/ethusdt@forceOrder",
                 "/fstream/stream?streams=ethusdt@bookTicker"):
        status_line, headers = await upgrade_response(venue, path)
        assert status_line.startswith("HTTP/1.1 101"), status_line
        assert headers["upgrade"].lower() == "websocket" and headers["server"] == expected, path
    async with session.get(venue.url + "/_venue/status") as resp:
        assert (await resp.json())["description"] == "synthetic market, seed 7, rate x2.5"


async def test_description_is_stable_across_restarts(make_venue, session) -> None:
    """Same arguments, same header (no port, no time); another seed is another market."""
    headers = []
    for seed in (3, 3, 4):
        venue = await make_venue(SyntheticSource([ETH], seed=seed))
        async with session.get(venue.url + "/api/v3/ping") as resp:
            headers.append(resp.headers["Server"])
    assert headers[0] == headers[1] == f"nova-venue/{VERSION} (synthetic market, seed 3, rate x1)"
    assert headers[2] != headers[0]


async def test_capture_description_names_the_files_not_the_speed(make_venue, session, tmp_path: Path) -> None:
    spot, perp = tmp_path / "spot_ethusdt_20240808.txt", tmp_path / "usdm_ethusdt_20240808.txt"
    write_perp_capture(perp)
    spot.write_text(perp.read_text())  # its content does not matter here, only its name
    descriptions = {CaptureSource([spot], [perp], speed=speed).description for speed in (1.0, 4.0, None)}
    assert descriptions == {"capture playback of spot_ethusdt_20240808.txt, usdm_ethusdt_20240808.txt"}
    venue = await make_venue(CaptureSource([], [perp], speed=None))
    async with session.get(venue.url + "/fapi/v1/ping") as resp:
        assert resp.headers["Server"] == f"nova-venue/{VERSION} (capture playback of usdm_ethusdt_20240808.txt)"
    assert venue.status()["description"] == "capture playback of usdm_ethusdt_20240808.txt"


def test_server_header_is_safe_whatever_a_file_is_called() -> None:
    header = server_header("capture playback of café (1).gz\r\nX-Evil: 1")
    assert header == f"nova-venue/{VERSION} (capture playback of caf? ?1?.gz??X-Evil: 1)"
    header.encode("ascii")
