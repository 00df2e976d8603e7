"""`nova record --metrics-port`: Prometheus scrapes `/metrics`, a probe asks `/health`, as in production.

The recorder runs as a subprocess against a `nova venue` subprocess; the venue's pause makes a book stream fall
silent, which `/health` must report (503, the reason) and then clear.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ENV, NOVA, REPO, nova, one_sentence, stop, venue_process

OPS = REPO / "docs" / "ops"  # the example Grafana dashboard and alert rules: they may use only served metrics


@pytest.fixture(scope="module")
def venue_url() -> Iterator[str]:
    with venue_process("--symbols", "ETH/USDT,BTC/USDT") as url:
        yield url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def wait_for(url: str, status: int, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code, body = get(url)
        if code == status:
            return body
        time.sleep(0.2)
    raise AssertionError(f"{url} never answered {status} (last: {get(url)})")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, as Prometheus would read the exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape_until(base: str, done: Callable[[dict], bool], timeout_s: float = 30.0) -> dict:
    """The first scrape of ``/metrics`` that ``done`` accepts (the last one if none did by the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = samples(wait_for(base + "/metrics", 200))
        if done(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def recorder(venue_url: str, data: Path, port: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*NOVA, "record", *extra, "--venue", venue_url, "--data", str(data), "-q",
                             "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)


def test_metrics_and_health_follow_the_streams(venue_url: str, tmp_path: Path) -> None:
    port = free_port()
    proc = recorder(venue_url, tmp_path / "data", port, "ETH/USDT", "--stall", "3s")
    base = f"http://127.0.0.1:{port}"
    try:
        assert json.loads(wait_for(base + "/health", 200)) == {"status": "ok", "reasons": []}
        book = (("market", "spot"), ("stream", "book"), ("symbol", "ETH-USDT"))
        perp = (("market", "perp"), ("stream", "book"), ("symbol", "ETH-USDT"))
        # the first rows reach the journal a flush after the first messages: wait for them, not for a fixed time
        got = scrape_until(base, lambda got: got.get(("nova_stream_rows_total", book), 0) > 0
                           and got.get(("nova_rows_written_total", ()), 0) > 0
                           and got.get(("nova_stream_messages_total", perp), 0) > 0)
        assert got[("nova_stream_messages_total", book)] > 0
        assert got[("nova_stream_rows_total", book)] > 0
        assert got[("nova_stream_gaps_total", book)] == 0
        assert 0 <= got[("nova_stream_last_message_age_seconds", book)] < 3
        assert abs(got[("nova_stream_ws_lag_seconds", book)]) < 3  # the venue stamps E with its own clock
        assert got[("nova_stream_handovers_total", book)] == 0
        assert got[("nova_rows_written_total", ())] > 0
        assert got[("nova_healthy", ())] == 1
        assert got[("nova_disk_free_bytes", ())] > 0
        assert got[("nova_stream_messages_total", perp)] > 0

        served = {name for name, _ in got}
        for path in (OPS / "grafana-dashboard.json", OPS / "alerts.yml"):
            used = set(re.findall(r"\bnova_[a-z_]+", path.read_text()))
            assert used and used <= served, (path.name, sorted(used - served))
        rules = yaml.safe_load((OPS / "alerts.yml").read_text())["groups"][0]["rules"]
        assert {r["alert"] for r in rules} >= {"NovaStreamSilent", "NovaGapsRising", "NovaDiskNearlyFull"}
        panels = json.loads((OPS / "grafana-dashboard.json").read_text())["panels"]
        assert all(t["expr"] for p in panels for t in p["targets"])

        urllib.request.urlopen(urllib.request.Request(venue_url + "/_venue/pause?market=spot", method="POST"))
        body = json.loads(wait_for(base + "/health", 503))
        assert body["status"] == "unhealthy"
        assert any(r.startswith("spot ETH-USDT book: silent for") for r in body["reasons"]), body
        assert samples(get(base + "/metrics")[1])[("nova_healthy", ())] == 0
        urllib.request.urlopen(urllib.request.Request(venue_url + "/_venue/resume?market=spot", method="POST"))
        wait_for(base + "/health", 200)
    finally:
        stop(proc)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def test_a_fleet_serves_every_workers_streams(venue_url: str, tmp_path: Path) -> None:
    port = free_port()
    proc = recorder(venue_url, tmp_path / "data", port, "ETH/USDT", "BTC/USDT", "--workers", "2")
    try:
        wait_for(f"http://127.0.0.1:{port}/health", 200, timeout_s=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = samples(get(f"http://127.0.0.1:{port}/metrics")[1])
            symbols = {dict(labels)["symbol"] for (name, labels), value in got.items()
                       if name == "nova_stream_messages_total" and value > 0}
            if symbols == {"ETH-USDT", "BTC-USDT"}:
                break
            time.sleep(0.5)
        assert symbols == {"ETH-USDT", "BTC-USDT"}
    finally:
        stop(proc)


def test_a_metrics_port_in_use_is_one_sentence(venue_url: str, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_sentence(nova("record", "ETH/USDT", "--venue", venue_url, "--data", str(tmp_path / "d"), "-q",
                                 "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--duration", "5s"))
    assert f"127.0.0.1:{port}" in line and "--metrics-port" in line, line
