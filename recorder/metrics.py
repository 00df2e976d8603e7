"""``nova record --metrics-port``: Prometheus metrics on ``/metrics`` and a health check on ``/health``.

Why a collector read at scrape time rather than counters bumped per message: the recorder already counts what
its status view shows (``Recorder.summary``, or the workers' reports in a fleet), so a scrape turns those counts
into metric families and the hot path pays nothing. Names follow Prometheus' conventions (``nova_`` prefix,
``_total`` counters, base units: seconds and bytes; labels ``market``, ``symbol``, ``stream``).

``/health`` answers 200 while every recorded book stream is live (a message within the stall limit) and 503 with
the reasons otherwise, for a load balancer, a systemd watchdog or a Kubernetes probe.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from nova.core.errors import NovaError

LABELS = ["market", "symbol", "stream"]
STREAM_COUNTERS = (  # summary key, metric name, help
    ("messages", "nova_stream_messages", "Messages received on the stream."),
    ("rows", "nova_stream_rows", "Rows written for the stream."),
    ("gaps", "nova_stream_gaps", "Sequence gaps ledgered (each followed by a resync)."),
    ("reconnects", "nova_stream_reconnects", "Reconnects of the stream's connection."),
    ("handovers", "nova_stream_handovers", "Planned reconnects made before the old connection closed."),
    ("errors", "nova_stream_errors", "Messages or requests refused as malformed or failed."),
)
HEALTH_STREAM = "book"  # a book stream always flows; quotes and liquidations may be quiet for minutes


@dataclass
class Probe:
    """What the metrics read, as callables so that one server fronts a recorder or a fleet of them."""

    summary: Callable[[], dict[str, dict[str, Any]]]  # "market/SYMBOL/stream" -> counts (Recorder.summary)
    stall_s: float  # a book stream silent this long is not live
    data_dir: str | None = None  # a local folder whose free space matters (the data root or the spool)
    backlog: Callable[[], tuple[int, int] | None] = field(default=lambda: None)  # (files, bytes) waiting to upload
    clock: Callable[[], int] = time.time_ns

    def streams(self) -> Iterator[tuple[list[str], dict[str, Any]]]:
        for key, counts in sorted(self.summary().items()):
            yield key.split("/", 2), counts

    def health(self) -> tuple[bool, list[str]]:
        """(every book stream live, why not): a stream that never sent, or has been silent beyond the limit."""
        now, why = self.clock(), []
        books = [(labels, counts) for labels, counts in self.streams()
                 if labels[2] == HEALTH_STREAM and not counts.get("stopped")]  # a delisted symbol is not down
        if not books:
            why.append("no book stream is being recorded yet")
        for (market, symbol, _), counts in books:
            last = counts.get("last_recv_ns") or 0
            if not last:
                why.append(f"{market} {symbol} book: no message yet")
            elif (now - last) / 1e9 > self.stall_s:
                why.append(f"{market} {symbol} book: silent for {(now - last) / 1e9:.0f} s")
        return not why, why


class RecorderCollector(Collector):
    """The probe's counts as metric families, made at each scrape."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def collect(self) -> Iterator[Any]:
        probe, now = self.probe, self.probe.clock()
        streams = list(probe.streams())
        for key, name, text in STREAM_COUNTERS:
            family = CounterMetricFamily(name, text, labels=LABELS)
            for labels, counts in streams:
                family.add_metric(labels, float(counts.get(key, 0)))
            yield family
        age = GaugeMetricFamily("nova_stream_last_message_age_seconds", "Seconds since the stream's last message.",
                                labels=LABELS)
        lag = GaugeMetricFamily("nova_stream_ws_lag_seconds", "Receive time minus exchange time of the stream's "
                                "last message (clock offset included).", labels=LABELS)
        for labels, counts in streams:
            if counts.get("last_recv_ns"):
                age.add_metric(labels, (now - counts["last_recv_ns"]) / 1e9)
            if counts.get("last_recv_ns") and counts.get("last_event_ns"):
                lag.add_metric(labels, (counts["last_recv_ns"] - counts["last_event_ns"]) / 1e9)
        yield age
        yield lag
        yield CounterMetricFamily("nova_rows_written", "Rows written, every stream.",
                                  value=float(sum(c.get("rows", 0) for _, c in streams)))
        live, _ = probe.health()
        yield GaugeMetricFamily("nova_healthy", "1 while every book stream is live (as /health).", value=float(live))
        backlog = probe.backlog()
        if backlog is not None:
            yield GaugeMetricFamily("nova_upload_backlog_files", "Finished files waiting in the spool for upload.",
                                    value=float(backlog[0]))
            yield GaugeMetricFamily("nova_spool_bytes", "Bytes of finished files waiting in the spool.",
                                    value=float(backlog[1]))
        if probe.data_dir is not None:
            try:
                free = shutil.disk_usage(probe.data_dir).free
            except OSError:
                return
            yield GaugeMetricFamily("nova_disk_free_bytes", "Free bytes on the disk the recorder writes to.",
                                    value=float(free))


class MetricsServer:
    """``/metrics`` and ``/health`` over HTTP on the recorder's event loop."""

    def __init__(self, probe: Probe, port: int, host: str = "0.0.0.0") -> None:
        self.probe, self.port, self.host = probe, port, host
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RecorderCollector(probe))
        self._runner: web.AppRunner | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        live, why = self.probe.health()
        return web.json_response({"status": "ok" if live else "unhealthy", "reasons": why}, status=200 if live else 503)

    async def start(self) -> str:
        """Listen; returns the URL. A port in use is one sentence (NovaError)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise NovaError(f"cannot serve metrics on {self.host}:{self.port} ({exc.strerror or exc}); choose "
                            "another --metrics-port") from None
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else self.port
        self.port = port
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{shown}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
