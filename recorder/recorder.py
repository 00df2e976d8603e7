"""The recorder: ccxt.pro sessions for spot and USDT-M side by side, supervised, flushed to the dataset.

Start and stop it from code (the CLI and the tests do exactly this)::

    rec = Recorder(RecorderConfig(symbols=[Symbol.parse("ETH/USDT")], endpoint="http://127.0.0.1:8765"))
    summary = await rec.run(stop_event)      # or: await rec.start(); ...; await rec.stop()

Everything on the network side runs on one asyncio loop; conversion to Arrow and all file I/O run on one
worker thread (``_write``), so the loop only ever appends to buffers. Every ``flush_s`` the buffers are
swapped out and handed to the worker; a clean stop flushes the rest and finishes every file.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import errno
import functools
import itertools
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import ccxt
import numpy as np

from nova.core.book import usable
from nova.core.dataset import BadRecorderId, Dataset, NotWritable, file_id
from nova.core.errors import NovaError
from nova.core.limits import CONNECTION_MAX_AGE_S
from nova.core.lock import Claims, Holder, StreamBusy
from nova.core.markets import MARKETS, Market, Symbol, listed
from nova.core.secrets import redact_url
from nova.core.spool import Spool
from nova.core.spread import SpreadLogic, SpreadParams
from nova.core.stores import StoreUnavailable, is_object_store
from nova.core.units import BadValue, check_at_least, check_count, check_positive, check_subset
from recorder.endpoints import ccxt_options, check_venue_url, configure, describe_source, versions
from recorder.exchange import RecordingBinance
from recorder.handover import Closed, Gate
from recorder.intake import Intake
from recorder.listings import Changes, Universe, changes
from recorder.recovery import CRASH_DETAIL, missing_stops
from recorder.rows import Levels, book_batch, event_row, malformed_details, table_batch
from recorder.sequencer import SNAPSHOT, STALE
from recorder.session import PERP_ONLY, POLLED, STREAM_MARKERS, STREAMS, MarketSession, SymbolState, Taken
from recorder.upload import UPLOAD_STREAM, Backlog, Uploader
from recorder.writer import DatasetWriter

MARKET_NAME = {"spot": "spot", "perp": "USDT-M"}
UNSUBSCRIBE_WAIT_S = 5.0  # for the exchange's reply to an unsubscribe (a stopped symbol); then it is left be
HANDOVER_WAIT_S = 30.0  # a new connection that shows no overlap with the old one in this long is given up
CAUGHT_UP_WAIT_S = 1.0  # after a switch, when the new connection is to be cut too: its own handover starts this soon
_WATCHED_FOR_STALLS = ("book", "bbo", "funding")  # trades can be legitimately quiet for minutes


@dataclass
class RecorderConfig:
    symbols: list[Symbol]
    data: str = "data"
    endpoint: str = "binance"  # "binance", "testnet" or a DESIGN §3 venue base URL
    markets: tuple[Market, ...] = ("spot", "perp")
    tables: tuple[str, ...] = STREAMS
    flush_s: float = 1.0
    rotate_s: float = 900.0
    stall_s: float = 30.0
    depth_ms: dict[str, int] = field(default_factory=lambda: {"spot": 100, "perp": 0})
    snapshot_limit: dict[str, int] = field(default_factory=lambda: {"spot": 5000, "perp": 1000})
    connect_attempts: int = 3
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    spread: SpreadParams = field(default_factory=SpreadParams)
    live_spread: bool = True  # keep live books for the status view (about 4 µs per 65-level message)
    recorder_id: str | None = None  # who recorded, in the ledger's provenance; default: the host name
    oi_every_s: float = 10.0  # open interest is polled over REST this often
    instruments_every_s: float = 3600.0  # exchangeInfo is checked for changes this often
    weight_share: float = 1.0  # of the IP's REST weight limit this recorder may use (1/N for N workers)
    connections: int | None = None  # WebSocket connections per market at most (None: ccxt's default, 50)
    spool: str | None = None  # an object-store root's local spool (nova.core.spool); None: the default place
    upload_wait_s: float = 60.0  # how long a clean stop waits for the spool's uploads
    # make-before-break (recorder.handover): Binance closes a connection this long after it opened; the recorder
    # hands each market over to a new connection handover_lead_s before that (tests shorten both to seconds)
    max_connection_age_s: float = CONNECTION_MAX_AGE_S
    handover_lead_s: float = 600.0
    queue_bytes: int = 16 << 20  # back-pressure (recorder.intake): held between receiving and the journal, at most
    zstd_level: int | None = None  # of the finished Parquet files; None: the contract's (nova.core.contract)
    # --all (recorder.listings): the rule of which listed symbols are this recorder's; exchangeInfo is then read
    # every listing_every_s, new listings of ours started, delisted or halted symbols stopped (None: fixed symbols)
    listing: Universe | None = None
    listing_every_s: float = 300.0

    DEPTH_SPEEDS_MS: ClassVar[dict[str, tuple[int, ...]]] = {"spot": (100, 1000), "perp": (0, 100, 250, 500)}
    """Binance's diff-depth stream speeds per market (``@depth@100ms``; perp 0 is ``@depth@0ms``, every update)."""

    def __post_init__(self) -> None:
        """Refuse a configuration that cannot record, before anything starts: the CLI and a Python caller get
        the same sentence (``BadValue``, naming the field as written here). Sequences become tuples and a
        venue URL its canonical spelling."""
        self._check_what()
        for name in ("flush_s", "stall_s", "oi_every_s", "instruments_every_s", "backoff_base_s", "backoff_cap_s",
                     "upload_wait_s", "max_connection_age_s", "handover_lead_s", "listing_every_s"):
            check_positive(name, getattr(self, name), "seconds")
        check_at_least("rotate_s", self.rotate_s, 1, "seconds")
        if self.backoff_cap_s < self.backoff_base_s:
            raise BadValue("backoff_cap_s", f"must be at least backoff_base_s ({self.backoff_base_s})",
                           self.backoff_cap_s)
        check_count("connect_attempts", self.connect_attempts, 1, "attempts")
        check_count("queue_bytes", self.queue_bytes, 1 << 16, "bytes")
        if self.zstd_level is not None and (check_count("zstd_level", self.zstd_level, 1, "levels") > 22):
            raise BadValue("zstd_level", "must be one of zstd's levels, 1 to 22", self.zstd_level)
        if not isinstance(self.weight_share, int | float) or not 0 < self.weight_share <= 1:
            raise BadValue("weight_share", "must be a fraction above 0 and at most 1", self.weight_share)
        if self.connections is not None:
            check_count("connections", self.connections, 1, "connections")
        self._check_per_market()
        self._check_where()

    def _check_what(self) -> None:
        """Symbols, markets and tables: what to record."""
        if self.listing is not None and not isinstance(self.listing, Universe):
            raise BadValue("listing", "must be a recorder.listings.Universe (the symbols of --all that are ours), "
                           "or None", self.listing)
        if (not isinstance(self.symbols, list | tuple) or (not self.symbols and self.listing is None)
                or not all(isinstance(s, Symbol) for s in self.symbols) or len(set(self.symbols)) != len(self.symbols)):
            raise BadValue("symbols", "must list one or more nova.core.markets.Symbol, each once, for example "
                           "[Symbol.parse('ETH/USDT')]", self.symbols)
        self.symbols = list(self.symbols)
        self.markets = check_subset("markets", self.markets, MARKETS, "markets")  # type: ignore[assignment]
        self.tables = check_subset("tables", self.tables, STREAMS, "tables")

    def _check_per_market(self) -> None:
        """Diff-depth speed and snapshot size of every recorded market."""
        for name, table in (("depth_ms", self.depth_ms), ("snapshot_limit", self.snapshot_limit)):
            if not isinstance(table, dict) or not set(self.markets) <= set(table) or not set(table) <= set(MARKETS):
                raise BadValue(name, f"must map each recorded market ({', '.join(self.markets)}) to a value", table)
        for market in self.markets:
            ms, speeds = self.depth_ms[market], self.DEPTH_SPEEDS_MS[market]
            if isinstance(ms, bool) or ms not in speeds:
                listed = " or ".join(f"{v}ms" for v in speeds)
                raise BadValue(f"depth_ms[{market!r}]", f"must be one of Binance's {market} diff-depth speeds, "
                               f"{listed}", ms, f"{ms}ms" if isinstance(ms, int) else None)
            check_count(f"snapshot_limit[{market!r}]", self.snapshot_limit[market], 1, "levels")

    def _check_where(self) -> None:
        """The endpoint, the recorder's name in the ledger and the live spread's parameters."""
        if self.endpoint not in ("binance", "testnet"):
            try:
                self.endpoint = check_venue_url(self.endpoint)
            except (NovaError, AttributeError):
                raise BadValue("endpoint", "must be 'binance', 'testnet' or a venue base URL like "
                               "http://127.0.0.1:8765", self.endpoint) from None
        if self.recorder_id is not None:
            if not isinstance(self.recorder_id, str) or not self.recorder_id.strip():
                raise BadValue("recorder_id", "must name this recorder in the ledger, or be None for the host "
                               "name", self.recorder_id)
            self.recorder_id = self.recorder_id.strip()
            try:
                file_id(self.recorder_id)
            except BadRecorderId:
                raise BadValue("recorder_id", "must have a letter or digit to name files with, like host-1",
                               self.recorder_id) from None
        if not isinstance(self.spread, SpreadParams):
            raise BadValue("spread", "must be a nova.core.spread.SpreadParams", self.spread)
        if self.spool is not None:
            if not isinstance(self.spool, str) or not self.spool.strip():
                raise BadValue("spool", "must be a local folder", self.spool)
            if not is_object_store(self.data):
                raise BadValue("spool", f"is only for object-store roots (s3://...); {self.data} is a local "
                               "folder, recorded into directly", self.spool)
            if is_object_store(self.spool) or "://" in self.spool:
                raise BadValue("spool", "must be a local folder (journals need a local disk)", self.spool)


@dataclass
class Backoff:
    """Exponential backoff with jitter, capped; reset once a stream is healthy again."""

    base: float
    cap: float
    attempt: int = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.75, 1.25)

    def reset(self) -> None:
        self.attempt = 0


class Recorder:
    def __init__(self, config: RecorderConfig) -> None:
        if not config.symbols and config.listing is None:
            raise NovaError("give at least one symbol to record, for example ETH/USDT")
        self.config = config
        self.sessions: dict[Market, MarketSession] = {}
        self.writer: DatasetWriter | None = None
        self.live: dict[Symbol, SpreadLogic] = {s: SpreadLogic(config.spread) for s in config.symbols}
        self.live_lock = threading.Lock()  # the worker updates live books; the status view reads them
        self.keep_live_books = config.live_spread  # until a view says it shows no depth book (drop_live_books)
        self.intake = Intake(config.queue_bytes)  # what is held for the writer; connections wait when it is full
        self.recovered: list[str] = []
        self.started_ns = 0
        self.fatal: str | None = None
        self.stopped = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nova-writer")
        self._tasks: set[asyncio.Task] = set()
        self._stream_started: dict[tuple[Market, str, str], int] = {}
        self._claims: Claims | None = None
        self.spool: Spool | None = None  # recording to an object store: the local spool, and its uploader
        self.uploader: Uploader | None = None
        self._store_up = True  # an object store answered at start
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._inflight: asyncio.Future | None = None
        self._sources: dict[Market, tuple[str, str]] = {}  # market -> (source identity, where), for the ledger
        self._watches: dict[tuple[Market, str, str], asyncio.Task] = {}  # (market, symbol, stream) -> its watch
        self._handing_over: dict[Market, asyncio.Task | None] = {}
        self._market_locks: dict[Market, asyncio.Lock] = {}
        self._shutdown_after_handover: set[Market] = set()  # a serverShutdown reached a handover's new connection
        self._listing_wake = asyncio.Event()  # --all: read exchangeInfo now (a stream stalled: delisted?)
        self._listing_looked_ns = 0  # when the listing watch last looked (or failed to)
        self._refused: set[Symbol] = set()  # listings another recorder records already: not tried again
        self.notices: list[str] = []  # what the user should hear at the end (a listing left to another recorder)

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Check everything a user can get wrong, then start recording. Raises NovaError before writing."""
        loop = self._loop = asyncio.get_running_loop()
        self.writer = await loop.run_in_executor(self._executor, self._prepare_data_dir)
        for market in self.config.markets:
            session = MarketSession(market, self.config.symbols, {}, self._request_resync, self._server_shutdown,
                                    self.intake)
            session.exchange = self._exchange(market, session)
            session.exchange.nova_budget.share = self.config.weight_share
            self.sessions[market] = session
        try:
            await asyncio.gather(*(self._load_markets(s) for s in self.sessions.values()))
            self._check_symbols()
            self.recovered += await loop.run_in_executor(self._executor, self._recover_and_lock)
        except BaseException:
            await self._close_exchanges()
            raise
        for market, session in self.sessions.items():
            for state in session.states.values():
                state.seq.next_msg = self._history.max_msg(market, state.symbol.dashed) + 1
        await loop.run_in_executor(self._executor, self._close_crashed_runs)
        if self.uploader is not None:  # after the spool's files were counted above: from here they may leave it
            self.uploader.start()
        self.started_ns = time.time_ns()
        for session in self.sessions.values():
            for state in session.states.values():
                self._begin(session, state, self.started_ns, "")
            if self.config.listing is None:  # with --all, the listing watch reads exchangeInfo (more often)
                self._spawn(self._poll_instruments(session))
            self._spawn(self._age_watch(session))
        self._spawn(self._flusher())
        self._spawn(self._watchdog())
        if self.config.listing is not None:
            self._spawn(self._listing_watch())

    def _begin(self, session: MarketSession, state: SymbolState, ts: int, why: str) -> None:
        """Ledger the start of every stream of a symbol on a market (with who records it, from where, with
        what software) and start watching and polling it."""
        market = session.market
        source, where = self._sources[market]
        for stream in self._streams(market):
            session.ledger(state, stream, ts, "start", None, None,
                           f"recording {state.symbol.ccxt_symbol(market)} from {where}{why}",
                           (source, self.recorder_id, self._software))
            key = (market, state.symbol.exchange_id, stream)
            self._stream_started[key] = ts
            if stream == "open_interest":
                self._watches[key] = self._spawn(self._poll_open_interest(session, state))
            elif stream not in POLLED:
                self._watches[key] = self._spawn(self._watch(session, state, stream))

    @functools.cached_property
    def _software(self) -> str:
        return versions()

    def _exchange(self, market: Market, sink: Any) -> RecordingBinance:
        """A ccxt.pro client of one market, pointed at the configured endpoint (one per connection set: a handover
        makes a second one)."""
        options = ccxt_options(market, self.config.depth_ms[market], self.config.connections)
        exchange = RecordingBinance({"options": options, "enableRateLimit": False}, market, sink, self.intake)
        configure(exchange, self.config.endpoint)
        exchange.nova_opened = time.monotonic()
        return exchange

    async def stop(self) -> dict[str, Any]:
        """Stop cleanly: stop the streams, flush everything received, finish every file, close the sessions."""
        if self._stopping:
            await self.stopped.wait()
            return self.summary()
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.intake.drop()  # connections held back by the intake are closed below, not read on
        await self._close_exchanges()  # nothing arrives after this, so the final flush holds everything
        try:
            if self.writer is not None and self.fatal is None:
                ts = time.time_ns()
                for market, session in self.sessions.items():
                    for state in session.states.values():
                        if state.retired:
                            continue  # its stop is ledgered already
                        state.seq.on_stop()
                        for stream in self._streams(market):
                            session.ledger(state, stream, ts, "stop", None, None, "recorder stopped")
                await self._flush(final=True)
                if any(state.events for session in self.sessions.values() for state in session.states.values()):
                    await self._flush(final=True)  # what the last flush ledgered (a malformed message found)
        finally:
            await self._finish_uploads()
            await self._close_exchanges()
            self._executor.shutdown(wait=True)
            self._release_lock()
            self.stopped.set()
        return self.summary()

    async def run(self, stop: asyncio.Event | None = None, duration_s: float | None = None) -> dict[str, Any]:
        """Record until ``stop`` is set, ``duration_s`` has passed, or a fatal error (like a full disk)."""
        await self.start()
        try:
            await self.wait(stop, duration_s)
        finally:
            summary = await self.stop()
        if self.fatal:
            raise NovaError(self.fatal)
        return summary

    async def wait(self, stop: asyncio.Event | None = None, duration_s: float | None = None) -> None:
        """Wait for ``stop``, the end of ``duration_s``, or a fatal error, whichever comes first."""
        waiters = [asyncio.ensure_future(self._fatal_event.wait())]
        if stop is not None:
            waiters.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waiters, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    @property
    def _fatal_event(self) -> asyncio.Event:
        if not hasattr(self, "_fatal_evt"):
            self._fatal_evt = asyncio.Event()
        return self._fatal_evt

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _streams(self, market: Market) -> list[str]:
        """The streams recorded on a market: the chosen ones it has, and always its instruments."""
        chosen = [s for s in STREAMS if s in self.config.tables and not (s in PERP_ONLY and market == "spot")]
        return [*chosen, "instruments"]

    # ---- start-up checks ---------------------------------------------------------------------------------------------
    def _prepare_data_dir(self) -> DatasetWriter:
        dataset = Dataset(self.config.data)
        if not dataset.local:
            return self._prepare_spool(dataset)
        try:
            dataset.check_writable("record into")
        except NotWritable as exc:
            raise NovaError(f"cannot write to the data directory {self.config.data} ({exc.reason}); choose "
                            "a writable --data directory") from None
        return DatasetWriter(dataset, self.config.rotate_s, file_id(self.recorder_id),
                             zstd_level=self.config.zstd_level)

    def _prepare_spool(self, store: Dataset) -> DatasetWriter:
        """An object-store root: record into its local spool (nova.core.spool), uploaded by ``self.uploader``. A
        store that cannot be reached is tolerated only when the spool knows where each stream ended (it has
        uploaded into this root before); a missing bucket or refused credentials never are."""
        spool = Spool(store, self.config.spool)
        try:
            spool.local.check_writable("spool into")
        except NotWritable as exc:
            raise NovaError(f"cannot write to the spool {spool.path} of {self.config.data} ({exc.reason}); choose "
                            "a writable --spool folder") from None
        try:
            store.check_reachable()
            store.check_writable("record into")
        except StoreUnavailable as exc:
            if "refused" in str(exc) or not spool.has_history():
                raise NovaError(f"{exc}; nothing was recorded") from None
            self._store_up, spool.offline = False, True
            self.recovered.append(f"{exc}: recording into the spool {spool.path} meanwhile; its files are uploaded "
                                  "when the store answers")
        except NotWritable as exc:
            raise NovaError(f"cannot write to {self.config.data} ({exc.reason}); check the bucket's permissions "
                            "or choose another --data root") from None
        self.spool = spool
        self.uploader = Uploader(spool, self.config.backoff_base_s, self.config.backoff_cap_s,
                                 streams=set(self._claimed_streams()))
        return DatasetWriter(spool.local, self.config.rotate_s, file_id(self.recorder_id),
                             on_finished=self.uploader.add, zstd_level=self.config.zstd_level)

    @property
    def _history(self) -> Dataset | Spool:
        """Where the root's streams ended (msg numbers, last events and rows): the spool also counts the files
        still waiting in it, and what it uploaded, so a restart while the store is down continues correctly."""
        assert self.writer is not None
        return self.spool if self.spool is not None else self.writer.dataset

    async def _finish_uploads(self) -> None:
        """A clean stop: upload what the spool holds, waiting at most ``upload_wait_s``; what is left (the store
        is down) stays for the next start, and the stop says so (a non-zero exit)."""
        if self.uploader is None or self.spool is None:
            return
        left = await asyncio.get_running_loop().run_in_executor(None, self.uploader.finish,
                                                                self.config.upload_wait_s)
        if left.files and self.fatal is None:
            self.fatal = (f"the object store did not take every file within {self.config.upload_wait_s:g} s "
                          f"({left.failing or 'still uploading'}): {left.files} files ({left.bytes / 1e6:,.1f} MB) "
                          f"stay in the spool {self.spool.path} and the next nova record into {self.config.data} "
                          "uploads them")

    def backlog(self) -> Backlog | None:
        """What waits in the spool for the store (None: a local root, no spool)."""
        return self.uploader.backlog() if self.uploader is not None else None

    @property
    def recorder_id(self) -> str:
        """Who records: in the ledger's provenance, in every file name (nova.core.dataset.file_id) and claim."""
        return self.config.recorder_id or file_id(socket.gethostname())

    def _claimed_streams(self) -> list[tuple[str, str]]:
        return [(market, symbol.dashed) for market in self.config.markets for symbol in self.config.symbols]

    def _recover_and_lock(self) -> list[str]:
        """Claim every stream we record (nova.core.lock: another recorder of one of them is refused; other
        streams of the root stay free for other recorders), then finish what a crash left of those streams
        only: another live recorder's open journals in the same root are not leftovers."""
        assert self.writer is not None
        dataset = self.writer.dataset
        streams = self._claimed_streams()
        loop = self._loop
        assert loop is not None
        try:
            self._claims = self._claim_root.claim(
                streams, file_id(self.recorder_id),
                on_lost=lambda m, s, h: loop.call_soon_threadsafe(self._claim_lost, m, s, h))
        except StreamBusy as exc:
            who = f" by recorder {exc.holder.recorder_id} (pid {exc.holder.pid} on {exc.holder.host})" \
                if exc.holder else ""
            raise NovaError(f"{exc.market} {exc.symbol} is already being recorded into {self.config.data}{who}; "
                            "stop that recorder, leave the symbol out, or record into another --data "
                            "directory") from None
        except NotWritable as exc:
            raise NovaError(f"cannot claim streams in {self.config.data} ({exc.reason}); choose a writable --data "
                            "directory") from None
        return dataset.recover(streams)  # the spool's, when recording to an object store

    @property
    def _claim_root(self) -> Dataset:
        """Where our streams are claimed: the root, or the spool while an object store cannot be reached."""
        assert self.writer is not None
        return self.spool.store if self.spool is not None and self._store_up else self.writer.dataset

    def _claim_lost(self, market: str, symbol: str, holder: Holder | None) -> None:
        """Another recorder took over a claim of ours (an object store's race, nova.core.lock): stop."""
        who = f"recorder {holder.recorder_id} on {holder.host}" if holder else "another recorder"
        self.fatal = (f"recording stopped: {who} took over {market} {symbol} in {self.config.data} (our claim "
                      "went stale); run one recorder per stream")
        self._fatal_event.set()

    def _release_lock(self) -> None:
        """A clean stop leaves no claim behind."""
        if self._claims is not None:
            self._claims.release()
            self._claims = None

    def _close_crashed_runs(self) -> None:
        """Ledger the ``stop`` a killed run could not, for each stream we record (recorder.recovery)."""
        assert self.writer is not None
        for market, session in self.sessions.items():
            for state in session.states.values():
                for ts, stream in missing_stops(self._history, market, state.symbol, self._streams(market)):
                    session.ledger(state, stream, ts, "stop", None, None, CRASH_DETAIL)

    async def _load_markets(self, session: MarketSession) -> None:
        name = MARKET_NAME[session.market]
        backoff = Backoff(self.config.backoff_base_s, 4.0)
        for attempt in range(1, self.config.connect_attempts + 1):
            try:
                await session.exchange.load_markets()
                headers = session.exchange.last_response_headers or {}
                self._sources[session.market] = describe_source(self.config.endpoint, headers.get("Server"))
                return
            except ccxt.BaseError as exc:
                if attempt == self.config.connect_attempts:
                    api = session.exchange.urls["api"]["public" if session.market == "spot" else "fapiPublic"]
                    raise NovaError(f"cannot reach the Binance {name} API at {redact_url(api)} after {attempt} "
                                    f"attempts ({_reason(exc)}); check --venue or your network") from None
                await asyncio.sleep(backoff.next())

    def _check_symbols(self) -> None:
        for market, session in self.sessions.items():
            listed = [s for s, m in session.exchange.markets.items()
                      if (m.get("spot") if market == "spot" else m.get("swap") and m.get("linear"))]
            for sym in self.config.symbols:
                wanted = sym.ccxt_symbol(market)
                if wanted in listed:
                    continue
                if market == "perp" and sym.unified in self.sessions.get("spot", session).exchange.markets:
                    raise NovaError(f"{sym} has no USDT-M perpetual on Binance; record its spot market alone "
                                    "with --markets spot")
                close = difflib.get_close_matches(wanted, listed, n=3, cutoff=0.5)
                hint = f"; closest listed: {', '.join(close)}" if close else ""
                raise NovaError(f"{wanted} is not listed on Binance {MARKET_NAME[market]}{hint}")

    async def _close_exchanges(self) -> None:
        for session in self.sessions.values():
            if session.exchange is not None:
                with contextlib.suppress(Exception):
                    await session.exchange.close()

    # ---- streams ---------------------------------------------------------------------------------------------
    async def _watch(self, session: MarketSession, state: SymbolState, stream: str, exchange: Any = None) -> None:
        """Keep one stream subscribed; a dropped connection is ledgered, backed off and re-established.
        ``exchange``: the client to subscribe on (a handover's new one; default the market's)."""
        exchange, market = exchange or session.exchange, session.market
        symbol = state.symbol.ccxt_symbol(market)
        backoff = Backoff(self.config.backoff_base_s, self.config.backoff_cap_s)
        key = (market, state.symbol.exchange_id, stream)
        while True:
            try:
                if stream == "book":
                    await exchange.watch_order_book(symbol, self.config.snapshot_limit[market])
                elif stream == "bbo":
                    await exchange.watch_bids_asks([symbol])
                elif stream == "trades":
                    await exchange.watch_trades(symbol)
                elif stream == "liquidations":
                    await exchange.watch_liquidations(symbol)
                else:
                    await exchange.watch_mark_price(symbol, {"use1sFreq": True})
                backoff.reset()  # the book's watch resolves once its snapshot is in: healthy again
            except asyncio.CancelledError:
                raise
            except ccxt.NetworkError as exc:
                ts = time.time_ns()
                if stream not in state.down:
                    # The other streams' watches never resolve (their messages bypass ccxt), so "healthy" is
                    # "a message arrived since the last disconnect" (the session then ledgered a reconnect);
                    # without this each later reconnect would wait longer, up to backoff_cap_s.
                    backoff.reset()
                if stream == "book":
                    state.seq.on_disconnect(ts)
                    with self.live_lock:
                        self.live[state.symbol].invalidate(market)
                session.ledger(state, stream, ts, "disconnect", None, None, f"{type(exc).__name__}: "
                               f"{str(exc)[:200]}")
                state.down.setdefault(stream, ts)
                await asyncio.sleep(backoff.next())
                # The watchdog's silence clock restarts with the stream: a reconnect that came late in the
                # stall window was otherwise killed before its first message, forever (seen with funding,
                # one message a second, and a short stall_s).
                self._stream_started[key] = time.time_ns()
            except Exception as exc:
                session.ledger(state, stream, time.time_ns(), "error", None, None,
                               f"{type(exc).__name__}: {str(exc)[:200]}")
                if stream == "book" and getattr(exchange, "nova_successor", False):
                    exchange.nova_settled.add(state.symbol.exchange_id)  # refused: the handover needs not wait
                self._listing_wake.set()  # refused: delisted? (with --all, exchangeInfo is read now)
                await asyncio.sleep(backoff.next())
                self._stream_started[key] = time.time_ns()

    async def _poll_open_interest(self, session: MarketSession, state: SymbolState) -> None:
        """Ask for the open interest every ``oi_every_s``. A failing endpoint is ledgered when it starts failing
        (and when its error changes), retried with backoff up to 5 minutes, and ledgered again when it answers."""
        failures, last_error = 0, ""
        while True:
            delay = self.config.oi_every_s
            try:
                response = await session.exchange.fapiPublicGetOpenInterest({"symbol": state.symbol.exchange_id})
                ts = time.time_ns()
                if session.on_open_interest(state, response, ts) and failures:
                    session.ledger(state, "open_interest", ts, "reconnect", None, None,
                                   f"open interest answered again after {failures} failed requests")
                    failures, last_error = 0, ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                text = f"{type(exc).__name__}: {str(exc)[:200]}"
                if text != last_error:
                    session.ledger(state, "open_interest", time.time_ns(), "error", None, None,
                                   f"open interest request failed: {text}; retrying with backoff")
                    last_error = text
                delay = min(self.config.oi_every_s * 2 ** min(failures, 10), 300.0)
            await asyncio.sleep(delay)

    async def _poll_instruments(self, session: MarketSession) -> None:
        """Check exchangeInfo for changes every ``instruments_every_s`` (the hook records what changed)."""
        while True:
            await asyncio.sleep(self.config.instruments_every_s)
            exchange = session.exchange
            try:
                if session.market == "spot":
                    for exchange_id in session.states:
                        await exchange.publicGetExchangeInfo({"symbol": exchange_id})
                else:
                    await exchange.fapiPublicGetExchangeInfo()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                for state in session.states.values():
                    session.ledger(state, "instruments", time.time_ns(), "error", None, None,
                                   f"exchangeInfo request failed: {type(exc).__name__}: {str(exc)[:200]}")

    # ---- listings that change (--all: recorder.listings) ---------------------------------------------------------
    async def _listing_watch(self) -> None:
        """Read exchangeInfo every ``listing_every_s`` (sooner when a stream stalls: a delisted symbol falls
        silent): start the new listings that are ours, stop the symbols delisted or not trading, each ledgered.
        The same answer records every instruments change (tick, step, status) of the recorded symbols."""
        assert self.config.listing is not None
        while True:
            await _woken(self._listing_wake, self.config.listing_every_s)
            try:
                statuses = {market: await self._listed(session) for market, session in self.sessions.items()}
                found = changes(statuses, self.recording, self.config.listing)
                if found:
                    await self._apply_listing(found)
                self._listing_looked_ns = time.time_ns()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._listing_looked_ns = time.time_ns()  # no answer: the watchdog restarts what is silent
                ts = time.time_ns()
                for session in self.sessions.values():
                    for state in session.states.values():
                        session.ledger(state, "instruments", ts, "error", None, None,
                                       f"exchangeInfo request failed ({type(exc).__name__}: {str(exc)[:200]}); "
                                       "listing changes are picked up when it answers again")

    async def _listed(self, session: MarketSession) -> dict[Symbol, str]:
        """Symbol -> status on one market, from a whole exchangeInfo (through the hook, which records the
        recorded symbols' instruments rows when they changed). An answer that lists nothing is refused: it must
        not stop every symbol."""
        exchange = session.exchange
        response = await (exchange.publicGetExchangeInfo() if session.market == "spot"
                          else exchange.fapiPublicGetExchangeInfo())
        statuses = listed(session.market, response.get("symbols") if isinstance(response, dict) else None)
        if not statuses:
            raise NovaError("exchangeInfo listed no symbol")
        return statuses

    @property
    def recording(self) -> list[Symbol]:
        """The symbols being recorded now (at start, plus listings picked up, minus those stopped)."""
        return list(dict.fromkeys(state.symbol for session in self.sessions.values()
                                  for state in session.states.values() if not state.retired))

    async def _apply_listing(self, found: Changes) -> None:
        for symbol, why in found.stop.items():
            await self._stop_symbol(symbol, why)
        if not found.start:
            return
        for market, session in self.sessions.items():  # ccxt subscribes only to markets it knows
            async with self._market_lock(market):
                await session.exchange.load_markets(reload=True)
        for symbol in found.start:
            if symbol not in self._refused:
                await self._start_symbol(symbol)

    def _market_lock(self, market: Market) -> asyncio.Lock:
        """Held while a market's connections or symbols change (a handover, a listing): one at a time."""
        return self._market_locks.setdefault(market, asyncio.Lock())

    async def _start_symbol(self, symbol: Symbol) -> None:
        """Claim a symbol's streams (finishing what a crashed run left of them), then record it on every market."""
        loop = asyncio.get_running_loop()
        try:
            prepared = await loop.run_in_executor(self._executor, self._claim_more, symbol)
        except StreamBusy as exc:
            who = f"recorder {exc.holder.recorder_id} on {exc.holder.host}" if exc.holder else "another recorder"
            self._refused.add(symbol)
            self.notices.append(f"{symbol} was listed, but {who} records {exc.market} {exc.symbol} into "
                                f"{self.config.data} already; left to it")
            return
        again = any(symbol.exchange_id in session.stopped for session in self.sessions.values())
        why = " (trading again; found by --all)" if again else " (a new listing; found by --all)"
        for market, session in self.sessions.items():
            next_msg, stops = prepared[market]
            async with self._market_lock(market):
                state = session.add(symbol, next_msg)
                for ts, stream in stops:
                    session.ledger(state, stream, ts, "stop", None, None, CRASH_DETAIL)
                self._begin(session, state, time.time_ns(), why)
        with self.live_lock:
            self.live[symbol] = SpreadLogic(self.config.spread)

    def _claim_more(self, symbol: Symbol) -> dict[Market, tuple[int, list[tuple[int, str]]]]:
        """On the writer's thread: claim the symbol's streams not claimed yet in this run, finish their
        crashed journals (never ours: a symbol stopped and started again in this run kept its claim and its
        files), and find where its message numbers go on and which stops a crash left out."""
        assert self._claims is not None and self.writer is not None
        keys = [(market, symbol.dashed) for market in self.sessions]
        fresh = [key for key in keys if key not in self._claims.held]
        self._claims.acquire(fresh)
        if fresh:
            self.recovered += self.writer.dataset.recover(fresh)
        return {market: (self._history.max_msg(market, symbol.dashed) + 1,
                         missing_stops(self._history, market, symbol, self._streams(market))
                         if (market, symbol.dashed) in fresh else [])
                for market in self.sessions}

    async def _stop_symbol(self, symbol: Symbol, why: str) -> None:
        """Stop recording a symbol that stopped trading: its streams are ledgered ``stop`` with the reason and
        unsubscribed; what it received up to here is written at the next flush."""
        for market, session in self.sessions.items():
            state = session.states.get(symbol.exchange_id)
            if state is None or state.retired:
                continue
            async with self._market_lock(market):
                session.retire(state)
                state.seq.on_stop()
                ts = time.time_ns()
                for stream in self._streams(market):
                    task = self._watches.pop((market, symbol.exchange_id, stream), None)
                    if task is not None:
                        task.cancel()
                    session.ledger(state, stream, ts, "stop", None, None,
                                   f"stopped recording {symbol.ccxt_symbol(market)}: {why} (--all)")
                state.down.clear()
                await self._unsubscribe(session, state)
        with self.live_lock:
            self.live.pop(symbol, None)

    async def _unsubscribe(self, session: MarketSession, state: SymbolState) -> None:
        """Tell the exchange to stop sending a symbol's streams (ccxt's un_watch; liquidations by hand, ccxt has
        none). Whatever still arrives is counted as late (MarketSession.late), never a row."""
        exchange, symbol = session.exchange, state.symbol.ccxt_symbol(session.market)
        calls = {"book": lambda: exchange.un_watch_order_book(symbol),
                 "bbo": lambda: exchange.un_watch_bids_asks([symbol]),
                 "trades": lambda: exchange.un_watch_trades(symbol),
                 "funding": lambda: exchange.un_watch_mark_price(symbol, {"use1sFreq": True}),
                 "liquidations": lambda: self._unsubscribe_liquidations(session, state)}
        for stream in self._streams(session.market):
            if stream in calls:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(calls[stream](), UNSUBSCRIBE_WAIT_S)

    async def _unsubscribe_liquidations(self, session: MarketSession, state: SymbolState) -> None:
        client = self._stream_client(session, state, "liquidations")
        if client is None:
            return
        for key in [k for k in client.subscriptions if isinstance(k, str) and k.endswith(
                STREAM_MARKERS["liquidations"] + state.symbol.ccxt_symbol(session.market))]:
            del client.subscriptions[key]
        await client.send({"method": "UNSUBSCRIBE", "params": [f"{state.symbol.stream_id}@forceOrder"],
                           "id": random.randrange(1 << 30)})

    def _request_resync(self, market: Market, symbol: Symbol) -> None:
        session = self.sessions[market]
        state = session.states.get(symbol.exchange_id)
        if state is None or state.retired:
            return  # stopped since (recorder.listings): nothing to resync
        with self.live_lock:
            self.live[symbol].invalidate(market)
        if not state.resyncing and not self._stopping:
            self._spawn(self._resync(session, state))

    async def _resync(self, session: MarketSession, state: SymbolState) -> None:
        """Fetch a fresh snapshot through ccxt (the REST hook hands it to the sequencer)."""
        state.resyncing = True
        backoff = Backoff(self.config.backoff_base_s, self.config.backoff_cap_s)
        market = session.market
        try:
            while True:
                try:
                    await session.exchange.fetch_order_book(state.symbol.ccxt_symbol(market),
                                                            self.config.snapshot_limit[market])
                    return
                except ccxt.BaseError:
                    await asyncio.sleep(backoff.next())  # the hook ledgered the failure
        finally:
            state.resyncing = False

    def _stream_client(self, session: MarketSession, state: SymbolState, stream: str) -> Any:
        marker, symbol = STREAM_MARKERS[stream], state.symbol.ccxt_symbol(session.market)
        for client in list((session.exchange.clients or {}).values()):
            for key in [*client.subscriptions, *client.futures]:
                if isinstance(key, str) and marker in key and key.endswith(symbol):
                    return client
        return None

    def _restart_stream(self, session: MarketSession, state: SymbolState, stream: str, why: str) -> bool:
        """Drop a stream's connection the way ccxt's own keep-alive does, so its watch reconnects."""
        client = self._stream_client(session, state, stream)
        if client is None:
            return False
        client.on_error(ccxt.NetworkError(why))
        return True

    def _server_shutdown(self, market: Market, client: Any, ts: int) -> None:
        """Binance announced a server shutdown on this connection: hand the market over to a new connection
        (make-before-break); if that cannot be started, reconnect now rather than be cut off."""
        session = self.sessions[market]
        if client not in (session.exchange.clients or {}).values():
            # Not the market's connection: one already handed over (going anyway), or the new one of a handover
            # under way, which will be cut too: it gets a handover of its own once it is the market's.
            if self._handing_over.get(market) is not None:
                self._shutdown_after_handover.add(market)
            return
        if self._handing_over.get(market) is not None:
            return  # the market's connections are being replaced (each of them may get the notice)
        if not self._stopping:
            self._handing_over[market] = self._spawn(self._handover(session, "serverShutdown notice"))
            return
        for state in session.states.values():
            for stream in self._streams(market):
                if self._stream_client(session, state, stream) is client:
                    session.ledger(state, stream, ts, "error", None, None,
                                   "serverShutdown notice from the exchange; reconnecting")
                    client.on_error(ccxt.NetworkError("serverShutdown notice"))
                    return

    async def _age_watch(self, session: MarketSession) -> None:
        """Hand the market over to a new connection ``handover_lead_s`` before the exchange's age limit."""
        lead = min(self.config.handover_lead_s, self.config.max_connection_age_s / 2)
        while True:
            opened = getattr(session.exchange, "nova_opened", time.monotonic())
            due = opened + self.config.max_connection_age_s - lead
            await asyncio.sleep(max(0.05, due - time.monotonic()))
            if time.monotonic() >= due and self._handing_over.get(session.market) is None and not self._stopping:
                task = self._handing_over[session.market] = self._spawn(self._handover(
                    session, f"the connection's age limit, {self.config.max_connection_age_s:g} s"))
                await asyncio.gather(task, return_exceptions=True)

    async def _handover(self, session: MarketSession, why: str) -> None:
        async with self._market_lock(session.market):  # not while a listing changes the market's symbols
            await self._hand_over(session, why)

    async def _hand_over(self, session: MarketSession, why: str) -> None:
        """Make-before-break (recorder.handover): a new client subscribes every stream of the market; once its
        books overlap the old connection's by ids, it takes over and the old one is closed. Nothing is lost and
        the books stay valid; the ledger says ``handover``. Without an overlap in HANDOVER_WAIT_S the new client
        is dropped and the old connection is left to its fate (a cut is then a disconnect, resynced as ever)."""
        market, old = session.market, session.exchange
        streams = [s for s in self._streams(market) if s not in POLLED]
        gate = Gate(session, market, streams)
        new = self._exchange(market, gate.successor)
        new.nova_successor = True  # its subscriptions fetch no snapshot: the old connection's book goes on
        new.nova_budget = old.nova_budget  # one IP, one weight budget
        new.set_markets(old.markets, old.currencies)
        old.nova_sink = gate.primary
        states = {sid: state for sid, state in session.states.items() if not state.retired}
        symbols = list(states)
        switched = False
        watches = {(market, sid, stream): self._spawn(self._watch(session, state, stream, new))
                   for sid, state in states.items() for stream in streams}
        try:
            began = time.monotonic()
            cut = False
            down_before = {sid: set(state.down) for sid, state in states.items()}
            settled = new.nova_settled
            while (not gate.ready(symbols, settled) and time.monotonic() - began < HANDOVER_WAIT_S
                   and not self._stopping):
                if any(set(state.down) - down_before[sid] for sid, state in states.items()):
                    cut = True  # the old connection went before the new one overlapped it: a cut like any other
                    break
                await asyncio.sleep(0.02)
            if cut or not gate.ready(symbols, settled):  # the new client is dropped below (finally)
                reason = ("the old connection was cut before the new one overlapped it; reconnecting as after any "
                          "cut") if cut else (f"no overlap with the new connection for "
                                              f"{', '.join(gate.missing(symbols, settled)) or 'every stream'} in "
                                              f"{HANDOVER_WAIT_S:.0f} s; keeping the old connection")
                for state in states.values():
                    session.ledger(state, "book", time.time_ns(), "error", None, None,
                                   f"handover ({why}) abandoned: {reason}")
                if why.startswith("serverShutdown") and not cut:
                    self._reconnect_now(session)
                return
            passed = gate.switch()  # what only the new connection delivered, in order, then it is the market's
            switched = True
            old.nova_sink = Closed()  # the new one keeps the gate until it has moved past the old one's last ids
            new.nova_successor = False
            session.exchange = new
            for key, task in watches.items():
                old_watch = self._watches.get(key)
                if old_watch is not None:
                    old_watch.cancel()
                self._watches[key] = task
            ts = time.time_ns()
            for state in states.values():
                for stream in self._streams(market):
                    session.ledger(state, stream, ts, "handover", None,
                                   state.seq.last_id if stream == "book" else None,
                                   f"handed over to a new connection before a planned cut ({why}); overlapped "
                                   f"by ids, nothing lost ({passed} messages came only on the new one)")
                    state.stats[stream].handovers += 1
            self._handing_over[market] = None  # done: a notice on the new connection starts the next one
            with contextlib.suppress(Exception):
                await old.close()
            began = time.monotonic()
            while not gate.caught_up() and not self._stopping and time.monotonic() - began < (
                    CAUGHT_UP_WAIT_S if market in self._shutdown_after_handover else HANDOVER_WAIT_S):
                await asyncio.sleep(0.05)
            if new.nova_sink is gate.successor:
                new.nova_sink = session  # no check per message any more
            if (market in self._shutdown_after_handover and not self._stopping
                    and self._handing_over.get(market) is None):
                self._shutdown_after_handover.discard(market)  # the new connection had the notice too: go on
                self._handing_over[market] = self._spawn(self._handover(session, "serverShutdown notice"))
                return
        finally:
            if not switched:
                self._shutdown_after_handover.discard(market)  # the new connection is dropped with its notice
            if self._handing_over.get(market) is asyncio.current_task():
                self._handing_over[market] = None
            if not switched and session.exchange is not new:  # cancelled (a stop) or given up: drop the new one
                for task in watches.values():
                    task.cancel()
                old.nova_sink = session
                new.nova_sink = Closed()
                with contextlib.suppress(Exception):
                    await new.close()

    def _reconnect_now(self, session: MarketSession) -> None:
        """Drop every connection of the market the way ccxt's keep-alive does, so its watches reconnect."""
        for client in list((session.exchange.clients or {}).values()):
            client.on_error(ccxt.NetworkError("serverShutdown notice"))

    async def _watchdog(self) -> None:
        """Restart streams that went silent for longer than ``stall_s``."""
        stall_ns = int(self.config.stall_s * 1e9)
        while True:
            await asyncio.sleep(min(1.0, self.config.stall_s / 4))
            if self.intake.holding:
                continue  # the connections wait for the writer (a rotation's encode, say): silent on our side
            now = time.time_ns()
            for market, session in self.sessions.items():
                for state in session.states.values():
                    for stream in self._streams(market):
                        if stream not in _WATCHED_FOR_STALLS or stream in state.down or state.retired:
                            continue  # a stream waiting to reconnect is not stalled, it is down
                        key = (market, state.symbol.exchange_id, stream)
                        last = max(state.stats[stream].last_recv_ns, self._stream_started[key],
                                   self.intake.released_ns)
                        if now - last > stall_ns:
                            if self.config.listing is not None and self._listing_looked_ns < last + stall_ns:
                                # A halted or delisted symbol falls silent: ask exchangeInfo before restarting a
                                # connection that carries other symbols' streams (it would cost them a resync).
                                self._listing_wake.set()
                                continue
                            self._stream_started[key] = now
                            session.ledger(state, stream, now, "error", None, None,
                                           f"stalled: no message for {(now - last) / 1e9:.0f} s; reconnecting")
                            self._restart_stream(session, state, stream, "stalled stream")

    # ---- flushing ----------------------------------------------------------------------------------------------------
    async def _flusher(self) -> None:
        """Flush every ``flush_s``, or as soon as half the intake's bound waits (the writer is then busy all the
        time and the connections read on while it writes: two halves, one filling, one being written)."""
        while True:
            await _woken(self.intake.wake, self.config.flush_s)
            await self._flush()

    async def _flush(self, final: bool = False) -> None:
        if self._inflight is not None:  # a flush cancelled by stop() is still writing: account for it first
            inflight, self._inflight = self._inflight, None
            await self._settle(inflight)
        self._ledger_uploads()
        taken = [t for session in self.sessions.values() for t in session.take()]
        loop = asyncio.get_running_loop()
        self._inflight = loop.run_in_executor(self._executor, self._write, taken, time.time_ns(), final)
        inflight = self._inflight
        inflight.add_done_callback(lambda _: self.intake.written())  # written or failed: the bytes are free
        # A stop() cancelling us must not lose the counts of what was written; a failed write (a full disk)
        # is reported by _settle, not raised here, or the flusher would die without stopping the recording.
        with contextlib.suppress(Exception):
            await asyncio.shield(inflight)
        if self._inflight is inflight:
            self._inflight = None
            await self._settle(inflight)

    def _ledger_uploads(self) -> None:
        """The uploader's changes (uploads failing, the backlog drained) go into every recorded market's ledger."""
        if self.uploader is None:
            return
        for ts, kind, detail in self.uploader.take_notices():
            for session in self.sessions.values():
                for state in session.states.values():
                    state.events.append(event_row(ts_recv=ts, stream=UPLOAD_STREAM, kind=kind, detail=detail))

    async def _settle(self, inflight: asyncio.Future) -> None:
        try:
            results = await inflight
        except Exception as exc:
            self._fail(exc)
            return
        for market, symbol, rows, (malformed, broken) in results:
            session = self.sessions[market]
            state = session.state_of(symbol.exchange_id)
            for table, count in rows.items():
                if table in state.stats:
                    state.stats[table].rows += count
            ts = time.time_ns()
            for detail in malformed:  # one error per malformed message; its rows were written stale
                session.ledger(state, "book", ts, "error", None, None, detail)
            if broken:  # no snapshot has re-anchored the book since the last of them
                state.seq.invalidate(ts)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            where = f"the spool {self.spool.path}" if self.spool is not None else self.config.data
            self.fatal = (f"the disk holding {where} is full: recording stopped; every file already "
                          "written is readable, and the last journals are finished on the next start; free "
                          "some space and run the same command again")
        else:
            self.fatal = f"recording stopped: writing to {self.config.data} failed ({_reason(exc)})"
        self._fatal_event.set()

    def _write(self, taken: list[Taken], now_ns: int, final: bool) -> list[tuple]:
        """On the worker thread: convert every buffer, append it to its file, close what is due."""
        assert self.writer is not None
        results = []
        for t in taken:
            rows: dict[str, int] = {}
            malformed: tuple[list[str], bool] = ([], False)
            if len(t.book):
                batch, positions, levels = book_batch(t.book)
                if positions:
                    malformed = malformed_details(t.book, positions)
                self.writer.write("book", t.market, t.symbol, batch)
                rows["book"] = batch.num_rows
                if self.keep_live_books:
                    self._update_live_book(t.market, t.symbol, levels)
            for table, buffer in t.small().items():
                if buffer:
                    self.writer.write(table, t.market, t.symbol, table_batch(table, buffer))
                    rows[table] = len(buffer)
            results.append((t.market, t.symbol, rows, malformed))
        if final:
            self.writer.close()
        else:
            self.writer.close_due(now_ns)
        return results

    def drop_live_books(self) -> None:
        """No view shows the depth books (the plain log line takes the spread from bookTicker): stop keeping
        them, which saves the worker about 4 µs per 65-level message. The books are marked unusable, so a
        reading never shows a book that stopped moving."""
        with self.live_lock:
            self.keep_live_books = False
            for logic in self.live.values():
                for market in self.sessions:
                    logic.invalidate(market)

    def _update_live_book(self, market: Market, symbol: Symbol, levels: Levels) -> None:
        """Rebuild the live book by the contract's rule, as every reader does (nova.core.book): stale messages
        skipped, the book cleared at a snapshot. Messages between two snapshots go in as one batch."""
        flags = levels.flags
        stale = (flags & STALE) != 0
        offsets = np.concatenate([[0], np.cumsum(levels.per_message)])
        sides = usable(levels.sides, np.repeat(stale, levels.per_message))
        snapshots = np.flatnonzero(((flags & SNAPSHOT) != 0) & ~stale)
        logic = self.live.get(symbol)
        if logic is None:
            return  # a symbol stopped since (recorder.listings)
        with self.live_lock:
            for start, end in itertools.pairwise([0, *snapshots.tolist(), len(flags)]):
                snapshot = start < len(flags) and bool(flags[start] & SNAPSHOT) and not stale[start]
                lo, hi = offsets[start], offsets[end]
                if start < end and (hi > lo or snapshot):
                    logic.on_depth(market, sides[lo:hi], levels.prices[lo:hi], levels.amounts[lo:hi],
                                   last_id=int(levels.last_id[end - 1]), ts_ns=int(levels.ts_recv[end - 1]),
                                   snapshot=snapshot)

    # ---- reporting -------------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts per market, symbol and stream: messages received, rows written, gaps, reconnects, errors."""
        out: dict[str, Any] = {}
        for market, session in self.sessions.items():
            for state in [*session.states.values(), *session.stopped.values()]:
                for stream in self._streams(market):
                    s = state.stats[stream]
                    out[f"{market}/{state.symbol.dashed}/{stream}"] = {
                        "messages": s.messages, "rows": s.rows, "gaps": s.gaps, "reconnects": s.reconnects,
                        "errors": s.errors, "handovers": s.handovers, "last_recv_ns": s.last_recv_ns,
                        "last_event_ns": s.last_event_ms * 1_000_000,
                        "stopped": state.retired}  # a delisted or halted symbol (--all): not expected to move
        return out


async def _woken(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` have passed, then clear it. Not asyncio.wait_for: on Python 3.11 it can
    swallow a cancellation that lands as the event is set (frequent at saturation), and stop() then waited forever
    for the task."""
    timer = asyncio.get_running_loop().call_later(seconds, event.set)
    try:
        await event.wait()
    finally:
        timer.cancel()
    event.clear()


def _reason(exc: BaseException) -> str:
    cause: BaseException | None = exc
    while cause is not None:  # ccxt wraps the socket error; the user needs "Connection refused"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
