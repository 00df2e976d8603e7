"""`nova record` into an object store (DESIGN §6): a local spool, uploads under final names, a store that goes
away, a crash in the middle of an upload. Against the real S3-compatible server (moto) and the venue.

- the spool's upload is idempotent by name and size, and keeps marks that stand in for the store while it is
  down (message numbers, last events);
- recording from the venue into ``s3://``: the books rebuilt from the store equal the venue's truth, the spool
  is empty after a clean stop;
- the store goes away mid-run (a TCP proxy in front of it refuses everything) and comes back: recording never
  stops, the ledger says when uploads failed and when the backlog drained, every file is in the store once;
- a stop while the store is down: exit non-zero with one sentence, the files stay in the spool, the next start
  uploads them;
- ``kill -9`` of the recorder while an upload crawls through a slow store, then a restart: nothing lost, no
  message twice;
- the spool on a full disk: today's clean stop with one sentence.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from rich.console import Console

from nova.core.dataset import Dataset, final_name_of_journal
from nova.core.errors import NovaError
from nova.core.spool import MARKS_NAME, Spool
from nova.venue import SyntheticSource
from recorder.recorder import Recorder, RecorderConfig
from recorder.status import StatusView
from recorder.upload import UPLOAD_STREAM, Uploader
from recorder.writer import DatasetWriter
from tests.helpers import (
    ENV,
    ETH,
    MARKETS,
    RECORDING_SEED,
    STREAMS,
    assert_one_sentence,
    await_until,
    flowing,
    ledger,
    rebuilt_equals_truth,
    record_args,
    record_until,
    small_disk,
    stop,
    venue_process,
    wait_until,
    write_midnight_dataset,
)
from tests.oracle import read_table
from tests.s3server import S3Server

# ---- a store that can go away: a TCP proxy in front of the S3 server -----------------------------------------------

class Proxy:
    """Forwards 127.0.0.1:port to the S3 server. ``down()`` cuts every connection and refuses new ones until
    ``up()``; ``slow(bytes_per_s)`` throttles what clients send (uploads crawl); ``parquet_puts`` counts the
    requests that upload a Parquet file (or a part of one)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refusing = False
        self.rate: float | None = None
        self.parquet_puts = 0
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(16384 if self.rate is None or not upstream else 1024):
                if upstream:
                    if data.startswith(b"PUT ") and b".parquet" in data.split(b"\r\n", 1)[0]:
                        self.parquet_puts += 1
                    if self.rate is not None:
                        time.sleep(len(data) / self.rate)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def down(self) -> None:
        self.refusing = True
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def up(self) -> None:
        self.refusing = False

    def slow(self, bytes_per_s: float | None) -> None:
        self.rate = bytes_per_s

    def close(self) -> None:
        self.closed = True
        self.down()
        self.listener.close()


@pytest.fixture
def proxy(s3_server: S3Server, s3_root: str) -> Iterator[Proxy]:
    """A proxy in front of the S3 server, and this process's AWS_ENDPOINT_URL pointing at it."""
    p = Proxy(s3_server.port)
    old = os.environ["AWS_ENDPOINT_URL"]
    os.environ["AWS_ENDPOINT_URL"] = p.url
    yield p
    os.environ["AWS_ENDPOINT_URL"] = old
    p.close()


# ---- reading what reached the store --------------------------------------------------------------------------------

def download(server: S3Server, root: str, dest: Path) -> Path:
    """The store's objects under ``root`` as a local folder (the tests' oracle reads local files)."""
    store = root.removeprefix("s3://")
    fs = server.filesystem()
    for info in fs.get_file_info(pafs.FileSelector(store, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            target = dest / info.path[len(store):].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as src:
                target.write_bytes(src.read())
    return dest


def store_files(server: S3Server, root: str) -> list[str]:
    """Relative names of the store's visible Parquet files."""
    store = root.removeprefix("s3://")
    infos = server.filesystem().get_file_info(pafs.FileSelector(store, recursive=True, allow_not_found=True))
    return sorted(i.path[len(store):].lstrip("/") for i in infos
                  if i.type == pafs.FileType.File and i.base_name.endswith(".parquet"))


def spool_files(spool: Path, *suffixes: str) -> list[Path]:
    return sorted(p for p in spool.rglob("*") if p.is_file() and p.name.endswith(suffixes or (".parquet", ".arrows")))


def assert_each_message_once(local: Path) -> None:
    """Book messages numbered 1.. without a number used twice or an exchange message stored twice."""
    for market in MARKETS:
        rows = read_table(local, "book", market)
        by_msg: dict[int, tuple] = {}
        for r in rows:
            key = (r["first_id"], r["last_id"], r["snapshot"], r["ts_recv"])
            assert by_msg.setdefault(r["msg"], key) == key, (market, r["msg"])
        diffs = [k[:2] for k in by_msg.values() if not k[2]]
        assert len(diffs) == len(set(diffs)), f"{market}: a diff stored twice"
        for table in ("bbo", "trades"):
            stored = read_table(local, table, market)
            ids = [r["update_id" if table == "bbo" else "trade_id"] for r in stored]
            assert len(ids) == len(set(ids)), f"{market} {table}: a message stored twice"


# ---- the spool itself ----------------------------------------------------------------------------------------------

def test_upload_is_idempotent_and_marks_stand_in_for_the_store(s3_root: str, tmp_path: Path) -> None:
    spool = Spool(Dataset(s3_root), tmp_path / "spool")
    assert spool.path == tmp_path / "spool" / s3_root.removeprefix("s3://")
    writer = DatasetWriter(spool.local, recorder_id="t1")
    from recorder.rows import event_row, table_batch

    writer.write("events", "perp", ETH, table_batch("events", [
        event_row(ts_recv=1_000, stream="book", kind="start", detail="x"),
        event_row(ts_recv=2_000, stream="book", kind="gap", detail="y")]))
    writer.close()
    [(path, size)] = spool.pending()
    assert spool.pending({("spot", "ETH-USDT")}) == []
    copy = tmp_path / "copy.parquet"
    shutil.copy(path, copy)
    assert spool.upload(path) is True  # uploaded, deleted locally, noted in the marks
    assert not os.path.exists(path) and spool.pending() == []
    assert spool.store.fs.get_file_info(spool.destination(path)).size == size
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copy(copy, path)  # as if a crash came between the upload and the delete
    assert spool.upload(path) is False and not os.path.exists(path)
    assert list(spool.path.rglob(MARKS_NAME))
    assert spool.has_history()
    assert spool.last_event("perp", "ETH-USDT", "book") == (2_000, "gap")


@pytest.mark.slow
def test_marks_continue_numbering_while_the_store_is_down(s3_root: str, tmp_path: Path) -> None:
    spool = Spool(Dataset(s3_root), tmp_path / "spool")
    write_midnight_dataset(spool.path)  # a crafted recording, as if just finished in the spool
    expected = spool.local.max_msg("spot", "ETH-USDT")
    assert expected > 30
    for path, _ in spool.pending():
        spool.upload(path)
    assert spool.pending() == [] and spool.local.max_msg("spot", "ETH-USDT") == 0
    assert spool.max_msg("spot", "ETH-USDT") == expected
    os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens: the store is down
    down = Spool(Dataset(s3_root), tmp_path / "spool")
    assert down.has_history()
    assert down.max_msg("spot", "ETH-USDT") == expected  # the store's reads fail: the marks stand in
    down.offline = True  # as the recorder marks a store found down at start: no more waiting on it
    assert down.last_row_ns("book", "spot", "ETH-USDT") is not None
    assert down.last_event("perp", "ETH-USDT", "book") is not None


def test_uploader_retries_with_backoff_and_notes_the_backlog(proxy: Proxy, s3_server: S3Server, s3_root: str,
                                                            tmp_path: Path) -> None:
    spool = Spool(Dataset(s3_root), tmp_path / "spool")
    write_midnight_dataset(spool.path)
    waiting = spool.pending()
    proxy.down()
    uploader = Uploader(spool, backoff_base_s=0.05, backoff_cap_s=0.2)
    uploader.start()
    try:
        wait_until(lambda: uploader.backlog().failing is not None, "uploads to fail")
        backlog = uploader.backlog()
        assert backlog.files == len(waiting) and backlog.bytes == sum(size for _, size in waiting)
        assert "uploads failing" in backlog.text()
        proxy.up()
        wait_until(lambda: uploader.backlog().files == 0, "the backlog to drain")
        assert [kind for _, kind, _ in uploader.take_notices()] == ["error", "reconnect"]
    finally:
        left = uploader.finish(5)
    assert left.files == 0 and spool.pending() == []
    assert sorted(Path(f).name for f in store_files(s3_server, s3_root)) == sorted(Path(p).name for p, _ in waiting)


def test_spool_is_refused_for_a_local_root(tmp_path: Path) -> None:
    with pytest.raises(NovaError, match="only for object-store roots"):
        RecorderConfig(symbols=[ETH], data=str(tmp_path), spool=str(tmp_path / "s"))


# ---- the recorder into the store -------------------------------------------------------------------------------------

async def _record(make_venue, root: str, spool: Path, **config):  # type: ignore[no-untyped-def]
    venue = await make_venue(SyntheticSource([ETH], seed=RECORDING_SEED))
    config.setdefault("tables", STREAMS["perp"])
    rec = Recorder(RecorderConfig(symbols=[ETH], data=root, endpoint=venue.url, flush_s=0.2, spool=str(spool),
                                  backoff_base_s=0.1, backoff_cap_s=0.5, **config))
    await rec.start()
    await flowing(rec, 0)
    return venue, rec


@pytest.mark.slow
async def test_recording_into_the_store_rebuilds_the_venues_books(make_venue, s3_server: S3Server, s3_root: str,
                                                                 tmp_path: Path) -> None:
    venue, rec = await _record(make_venue, s3_root, tmp_path / "spool", rotate_s=1)
    try:
        await record_until(venue, rec, min_messages=40)
        truth = {m: venue.truth(m, "ETHUSDT") for m in MARKETS}
    finally:
        await rec.stop()
    assert rec.fatal is None
    assert spool_files(tmp_path / "spool") == []  # everything left the spool
    local = download(s3_server, s3_root, tmp_path / "store")
    assert len(store_files(s3_server, s3_root)) > 4  # rotated every second: several files per stream
    for market in MARKETS:
        rebuilt_equals_truth(local, market, truth[market])
    assert_each_message_once(local)


@pytest.mark.slow
async def test_the_store_going_away_never_stops_the_recording(make_venue, proxy: Proxy, s3_server: S3Server,
                                                              s3_root: str, tmp_path: Path) -> None:
    venue, rec = await _record(make_venue, s3_root, tmp_path / "spool", rotate_s=1)
    try:
        await await_until(lambda: rec.uploader is not None and rec.uploader.uploaded > 0, lambda: "a first upload")
        proxy.down()
        messages = {m: rec.sessions[m].states["ETHUSDT"].stats["book"].messages for m in MARKETS}
        await await_until(lambda: (b := rec.backlog()) is not None and b.failing is not None and b.files >= 2,
                          lambda: rec.backlog())
        backlog = rec.backlog()
        assert backlog is not None and backlog.bytes > 0
        view = StatusView(rec, Console(file=io.StringIO()), live=False)
        assert "upload backlog:" in view.log_line() and "uploads failing" in view.log_line()
        assert "upload backlog:" in str(view.render().renderables[0].caption)
        # recording went on meanwhile
        assert all(rec.sessions[m].states["ETHUSDT"].stats["book"].messages > messages[m] for m in MARKETS)
        assert rec.fatal is None
        proxy.up()
        await await_until(lambda: (b := rec.backlog()) is not None and b.failing is None,
                          lambda: rec.backlog(), timeout=60)
        await record_until(venue, rec, min_messages=40)
        truth = {m: venue.truth(m, "ETHUSDT") for m in MARKETS}
    finally:
        await rec.stop()
    assert rec.fatal is None, rec.fatal
    assert spool_files(tmp_path / "spool") == []
    local = download(s3_server, s3_root, tmp_path / "store")
    for market in MARKETS:
        rebuilt_equals_truth(local, market, truth[market])
        events = [e for e in ledger(local, market) if e["stream"] == UPLOAD_STREAM]
        kinds = [e["kind"] for e in events]
        assert kinds[:2] == ["error", "reconnect"], events
        assert "failing" in events[0]["detail"] and "waiting" in events[0]["detail"]
        assert "drained" in events[1]["detail"]
    assert_each_message_once(local)


@pytest.mark.slow
async def test_a_stop_while_the_store_is_down_leaves_the_spool_for_the_next_start(
        make_venue, proxy: Proxy, s3_server: S3Server, s3_root: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    venue, rec = await _record(make_venue, s3_root, spool, upload_wait_s=1)
    try:
        await record_until(venue, rec, min_messages=20)
        proxy.down()
        truth = {m: venue.truth(m, "ETHUSDT") for m in MARKETS}
    finally:
        await rec.stop()
    assert rec.fatal is not None and "stay in the spool" in rec.fatal and "next nova record" in rec.fatal
    waiting = [p.name for p in spool_files(spool, ".parquet")]
    assert waiting and store_files(s3_server, s3_root) == []  # nothing half-uploaded either

    # a restart with the store still down records into the spool, continuing the numbering
    spooled = Spool(Dataset(s3_root), spool).path
    last_msg = {m: max(r["msg"] for r in read_table(spooled, "book", m)) for m in MARKETS}
    rec2 = Recorder(RecorderConfig(symbols=[ETH], data=s3_root, endpoint=venue.url, flush_s=0.2, spool=str(spool),
                                   tables=STREAMS["perp"], backoff_base_s=0.1, backoff_cap_s=0.5))
    venue.resume()
    await rec2.start()
    try:
        assert any("recording into the spool" in line for line in rec2.recovered), rec2.recovered
        for m in MARKETS:
            assert rec2.sessions[m].states["ETHUSDT"].seq.next_msg == last_msg[m] + 1
        await flowing(rec2, 0)
        proxy.up()
        await record_until(venue, rec2, min_messages=20)
        truth = {m: venue.truth(m, "ETHUSDT") for m in MARKETS}
    finally:
        await rec2.stop()
    assert rec2.fatal is None, rec2.fatal
    assert spool_files(spool) == []
    names = {Path(f).name for f in store_files(s3_server, s3_root)}
    assert set(waiting) <= names
    local = download(s3_server, s3_root, tmp_path / "store")
    for market in MARKETS:
        rebuilt_equals_truth(local, market, truth[market])
    assert_each_message_once(local)


@pytest.mark.slow
def test_kill_9_during_an_upload_loses_nothing_and_uploads_nothing_twice(s3_server: S3Server, s3_root: str,
                                                                         tmp_path: Path) -> None:
    proxy = Proxy(s3_server.port)
    env = {**ENV, **s3_server.env, "AWS_ENDPOINT_URL": proxy.url}
    spool = tmp_path / "spool"
    try:
        with venue_process("--rate", "5") as url:
            args = record_args(url, s3_root, "--spool", str(spool), "--rotate", "1s")  # type: ignore[arg-type]
            first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            try:
                wait_until(lambda: store_files(s3_server, s3_root) or first.poll() is not None, "a first upload",
                           timeout=60)
                assert first.poll() is None, first.communicate()[1]
                proxy.slow(4096)  # uploads crawl: the kill lands in the middle of one
                puts = proxy.parquet_puts
                wait_until(lambda: proxy.parquet_puts > puts, "an upload under way")
                time.sleep(0.3)
                os.kill(first.pid, signal.SIGKILL)
                first.wait()
            finally:
                stop(first)
            left = [p.name for p in spool_files(spool, ".parquet")]
            journalled = [final_name_of_journal(p.name) for p in spool_files(spool, ".arrows")]
            assert left or journalled
            proxy.slow(None)
            # an object store's claims outlive a killed holder until they go stale (nova.core.lock)
            wait_until(lambda: all(Dataset(s3_root).claimed(m, "ETH-USDT") is None for m in MARKETS),
                       "the killed recorder's claims to go stale", timeout=90)
            second = subprocess.Popen([*args, "--duration", "3s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env)
            _, err = second.communicate(timeout=120)
            assert second.returncode == 0, err
    finally:
        proxy.close()
    assert spool_files(spool) == []
    names = {Path(f).name for f in store_files(s3_server, s3_root)}
    assert set(left) | set(journalled) <= names, "a file the killed run left in the spool never reached the store"
    local = download(s3_server, s3_root, tmp_path / "store")
    assert_each_message_once(local)
    for market in MARKETS:
        events = ledger(local, market)
        assert [e for e in events if e["kind"] == "stop" and "without a clean stop" in (e["detail"] or "")]
        msgs = sorted({r["msg"] for r in read_table(local, "book", market)})
        assert msgs == list(range(msgs[0], msgs[0] + len(msgs))), "message numbers continue without a hole"


@pytest.mark.slow
def test_a_full_spool_disk_stops_with_one_sentence(s3_server: S3Server, s3_root: str, tmp_path: Path) -> None:
    with small_disk(tmp_path) as small, contextlib.closing(Proxy(s3_server.port)) as proxy:
        with venue_process("--rate", "20") as url:
            proc = subprocess.Popen(record_args(url, s3_root, "--spool", str(small), "--rotate", "1s",  # type: ignore[arg-type]
                                                "--upload-wait", "1s"),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={**ENV, **s3_server.env, "AWS_ENDPOINT_URL": proxy.url})
            try:
                wait_until(lambda: store_files(s3_server, s3_root) or proc.poll() is not None, "a first upload",
                           timeout=60)
                proxy.down()  # from now on the spool only grows, until its disk is full
                _, err = proc.communicate(timeout=120)
            finally:
                stop(proc)
        assert proc.returncode != 0, err
        line = assert_one_sentence(err)
        assert "full" in line and "spool" in line, line


@pytest.mark.slow
def test_an_unreachable_store_without_a_spool_history_is_refused(tmp_path: Path, s3_root: str) -> None:
    env = {**ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "AWS_REGION": "us-east-1"}
    with venue_process() as url:
        proc = subprocess.run(record_args(url, s3_root, "--spool", str(tmp_path / "spool")),  # type: ignore[arg-type]
                              capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    line = assert_one_sentence(proc.stderr)
    assert "object store" in line and "nothing was recorded" in line, line
    assert spool_files(tmp_path / "spool") == []
