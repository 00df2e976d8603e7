"""Pre-generated feeds for the benchmarks: the real USDT-M ETHUSDT capture, tiled to any length.

Each tile repeats the captured diff-depth messages with update ids shifted past the previous tile and
receive times shifted by the capture's span, so the id chain (``pu == previous u``) holds end to end and
the venue can play it as one long, realistic session (65 level changes per message on average).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("NOVA_REALDATA", REPO.parent / "shared" / "realdata"))
PERP_CAPTURE = REALDATA / "binance" / "usdm_ethusdt_20240808.gz"


def tiled_perp_feed(path: Path, messages: int) -> int:
    """Write a capture of at least ``messages`` diff-depth messages to ``path``; returns the count written."""
    snapshot: tuple[int, dict] | None = None
    depth: list[tuple[int, dict]] = []
    with gzip.open(PERP_CAPTURE, "rt") as fh:
        for line in fh:
            ts, body = line.split(" ", 1)
            obj = orjson.loads(body)
            data = obj.get("data", obj)
            if "lastUpdateId" in data and snapshot is None:
                snapshot = (int(ts), data)
            elif data.get("e") == "depthUpdate":
                depth.append((int(ts), data))
    assert snapshot is not None
    id_span = depth[-1][1]["u"] - depth[0][1]["U"] + 1000
    time_span = depth[-1][0] - depth[0][0] + 50_000_000
    written, prev_u = 0, None
    with open(path, "wb") as out:
        out.write(b"%d %s\n" % (snapshot[0], orjson.dumps(snapshot[1])))
        tile = 0
        while written < messages:
            shift = tile * id_span
            for i, (ts, msg) in enumerate(depth):
                shifted = {**msg, "U": msg["U"] + shift, "u": msg["u"] + shift, "pu": msg["pu"] + shift}
                if i == 0 and prev_u is not None:
                    shifted["pu"] = prev_u  # chain each tile to the end of the previous one
                prev_u = shifted["u"]
                line = orjson.dumps({"stream": "ethusdt@depth@0ms", "data": shifted})
                out.write(b"%d %s\n" % (ts + tile * time_span, line))
                written += 1
            tile += 1
    return written
