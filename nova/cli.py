"""The ``nova`` command line: a thin typer layer over the library; every command has a Python twin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from nova.errors import NovaError
from nova.markets import parse_symbols
from nova.units import parse_duration

app = typer.Typer(
    name="nova",
    help="Record Binance spot and USDT-M perpetual order books losslessly, and replay them through the "
    "spot-perp spread logic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)


@app.callback()
def _root() -> None:
    """Record Binance spot and USDT-M perpetual order books losslessly, and replay them through the
    spot-perp spread logic. Start with `nova demo`, or `nova venue` and `nova record ETH/USDT --venue URL`.
    """


def out_console(**kwargs: Any) -> Console:
    """Standard output for tables: the terminal's width, or wide enough that piped tables stay readable."""
    console = Console(**kwargs)
    return console if console.is_terminal else Console(width=200, **kwargs)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one sentence saying what is wrong and what to do, and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, however narrow the terminal
    return typer.Exit(code)


def run_async(main: Callable[[asyncio.Event], Coroutine[Any, Any, int]]) -> int:
    """Run ``main(stop)`` on a fresh loop; SIGINT and SIGTERM set ``stop`` so it can shut down cleanly."""

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    try:
        return asyncio.run(runner())
    except NovaError as exc:
        raise fail(str(exc), 1) from None


def _speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise fail(f"--speed must be a positive number or 'max', not '{text}'")
    return value


def _split_paths(values: list[Path] | None) -> list[Path]:
    out: list[Path] = []
    for value in values or []:
        for part in str(value).split(","):
            if part:
                path = Path(part)
                if not path.is_file():
                    raise fail(f"capture file {path} does not exist; give the path of a raw Binance capture")
                out.append(path)
    return out


@app.command()
def venue(
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one. The URL is the first line printed.")]
    = 8765,
    host: Annotated[str, typer.Option(help="Interface to bind. Keep 127.0.0.1 unless you mean to expose it.")]
    = "127.0.0.1",
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols listed on both spot and USDT-M.")]
    = "ETH/USDT",
    spot_only: Annotated[str, typer.Option(help="Comma-separated symbols listed on spot only (no perpetual).")]
    = "",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic market; the same seed gives the same feed.")]
    = 1,
    rate: Annotated[float, typer.Option(help="Multiply the synthetic message rates (10 = a busy day x10).")]
    = 1.0,
    capture_spot: Annotated[list[Path] | None, typer.Option(
        help="Play this raw spot capture instead of the synthetic market (repeat the flag, or separate with "
        "commas, for consecutive files).")] = None,
    capture_perp: Annotated[list[Path] | None, typer.Option(help="Play this raw USDT-M capture.")] = None,
    speed: Annotated[str, typer.Option(help="Capture playback speed: 1 = as recorded, 10 = ten times faster, "
                                       "max = as fast as clients read.")] = "1",
    autostart: Annotated[bool, typer.Option(help="Start capture playback at once instead of waiting for a depth "
                                            "subscriber on every captured market.")] = False,
    preload: Annotated[bool, typer.Option(help="Read the whole capture into memory before playing, so a max-speed "
                                          "playback is limited by its clients, not by parsing the file.")]
    = False,
    fault: Annotated[list[str] | None, typer.Option(
        help="Inject a fault, KIND[=ARG]:MARKET@WHEN, e.g. gap:spot@every20s, close:perp@30s, abort:all@1m, "
        "stall=5:spot@every1m, snapshot-delay=3:perp@every1m, snapshot-fail=2:spot@45s, shutdown:all@2m, "
        "malformed=nan/bookTicker:perp@every10s (kinds in the README). Repeatable.")] = None,
    spot_ping: Annotated[str, typer.Option(help="Server ping interval on spot connections.")] = "20s",
    perp_ping: Annotated[str, typer.Option(help="Server ping interval on USDT-M connections.")] = "3m",
    spot_pong_timeout: Annotated[str, typer.Option(help="Close a spot connection after this long without a "
                                                   "pong.")] = "1m",
    perp_pong_timeout: Annotated[str, typer.Option(help="Close a USDT-M connection after this long without a "
                                                   "pong.")] = "10m",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log connections and faults.")] = False,
) -> None:
    """Serve a simulated Binance (spot + USDT-M market data) on 127.0.0.1, for ccxt and `nova record`.

    It answers exchangeInfo and depth snapshots over REST and diff-depth, bookTicker, trade, aggTrade and
    markPrice streams over WebSocket, with Binance's update-id rules, pings and error replies. Point a
    recorder at it with `nova record ETH/USDT --venue URL`. The control API under URL/_venue (book, status,
    pause, resume, fault/drop|close|stall|snapshot|shutdown) is documented in the README.
    """
    from nova.venue import CaptureSource, SyntheticSource, Venue, VenueConfig
    from nova.venue.faults import FaultSpec, run_schedule

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        config = VenueConfig(
            host=host, port=port,
            ping_interval_s={"spot": parse_duration(spot_ping), "perp": parse_duration(perp_ping)},
            pong_timeout_s={"spot": parse_duration(spot_pong_timeout), "perp": parse_duration(perp_pong_timeout)},
        )
        specs = [FaultSpec.parse(f) for f in fault or []]
        syms = parse_symbols(symbols)
        spot_syms = parse_symbols(spot_only) if spot_only else []
    except ValueError as exc:
        raise fail(str(exc)) from None
    if rate <= 0:
        raise fail(f"--rate must be positive, not {rate}")
    spot_files, perp_files = _split_paths(capture_spot), _split_paths(capture_perp)

    async def main(stop: asyncio.Event) -> int:
        if spot_files or perp_files:
            source: Any = CaptureSource(spot_files, perp_files, speed=_speed(speed), autostart=autostart,
                                        preload=preload)
            what = "capture playback at " + ("max speed" if _speed(speed) is None else f"{speed}x")
        else:
            source = SyntheticSource(syms, seed=seed, rate=rate, spot_only=spot_syms)
            what = f"synthetic market, seed {seed}, rate x{rate:g}"
        server = Venue(source, config)
        try:
            url = await server.start()
        except OSError as exc:
            raise NovaError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port "
                            "(0 picks a free one)") from None
        print(url, flush=True)
        listed = ", ".join(f"{i.market} {i.symbol.ccxt_symbol(i.market)}" for i in source.instruments)
        err.print(f"Simulated Binance venue at [bold]{url}[/] ({what}): {listed}.")
        err.print(f"Record from it with: nova record {source.instruments[0].symbol.unified} --venue {url}")
        err.print("Ctrl-C stops it.")
        faults = asyncio.get_running_loop().create_task(run_schedule(server, specs)) if specs else None
        await stop.wait()
        if faults:
            faults.cancel()
        await server.stop()
        return 0

    raise typer.Exit(run_async(main))


DEPTH_SPEEDS = {"spot": (100, 1000), "perp": (0, 100, 250, 500)}


def _duration(option: str, text: str | None, allow_zero: bool = False) -> float | None:
    if text is None:
        return None
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise fail(f"{option}: {exc}") from None
    if value <= 0 and not allow_zero:
        raise fail(f"{option} must be longer than zero, not '{text}'")
    return value


def _depth_speed(market: str, text: str) -> int:
    ms = round((_duration(f"--{market}-depth", text, allow_zero=True) or 0.0) * 1000)
    if ms not in DEPTH_SPEEDS[market]:
        choices = ", ".join(f"{v}ms" for v in DEPTH_SPEEDS[market])
        raise fail(f"--{market}-depth {text} is not a Binance {market} diff-depth speed; use one of {choices}")
    return ms


def _record_config(symbols: list[str], data: Path, venue: str | None, testnet: bool, markets: str, tables: str,
                   flush: str, rotate: str, stall: str, spot_depth: str, perp_depth: str, fee_spot: float,
                   fee_perp: float) -> Any:
    from nova.markets import Symbol
    from recorder.endpoints import check_venue_url
    from recorder.session import STREAMS

    try:
        syms = []
        for text in symbols:
            for part in text.split(","):
                if part.strip() and Symbol.parse(part) not in syms:
                    syms.append(Symbol.parse(part))
    except ValueError as exc:
        raise fail(str(exc)) from None
    if not syms:
        raise fail("give at least one symbol to record, for example: nova record ETH/USDT")
    if venue and testnet:
        raise fail("--venue and --testnet exclude each other; pick one endpoint")
    try:
        endpoint = check_venue_url(venue) if venue else ("testnet" if testnet else "binance")
    except NovaError as exc:
        raise fail(str(exc)) from None
    chosen = {"both": ("spot", "perp"), "spot": ("spot",), "perp": ("perp",)}.get(markets.lower())
    if chosen is None:
        raise fail(f"--markets {markets} is not one of both, spot, perp")
    wanted = tuple(t.strip() for t in tables.split(",") if t.strip())
    unknown = [t for t in wanted if t not in STREAMS]
    if unknown or not wanted:
        raise fail(f"--tables {tables}: choose from {', '.join(STREAMS)} (comma-separated)")
    if fee_spot < 0 or fee_perp < 0:
        raise fail("fees are in basis points and cannot be negative")
    flush_s, rotate_s, stall_s = (_duration("--flush", flush) or 1.0, _duration("--rotate", rotate) or 900.0,
                                  _duration("--stall", stall) or 30.0)
    depth_ms = {"spot": _depth_speed("spot", spot_depth), "perp": _depth_speed("perp", perp_depth)}
    # Only now the heavy imports (ccxt, numba): a typo in an option is answered at once.
    from nova.spread import SpreadParams
    from recorder.recorder import RecorderConfig

    return RecorderConfig(
        symbols=syms, data=str(data), endpoint=endpoint, markets=chosen, tables=wanted,  # type: ignore[arg-type]
        flush_s=flush_s, rotate_s=rotate_s, stall_s=stall_s, depth_ms=depth_ms,
        spread=SpreadParams(fee_spot_bps=fee_spot, fee_perp_bps=fee_perp))


async def _record(config: Any, stop: asyncio.Event, duration_s: float | None, quiet: bool) -> int:

    from recorder.recorder import Recorder
    from recorder.status import StatusView

    if quiet:
        config.live_spread = False  # nobody looks at the live spread: do not keep live books
    recorder = Recorder(config)
    await recorder.start()
    out = out_console()
    for line in recorder.recovered:
        err.print(f"[yellow]recovered:[/] {line}")
    view = None
    if not quiet:
        view = asyncio.get_running_loop().create_task(StatusView(recorder, out, live=out.is_terminal).run())
    try:
        await recorder.wait(stop, duration_s)
    finally:
        if view is not None:
            view.cancel()
        summary = await recorder.stop()
    if recorder.fatal:
        raise NovaError(recorder.fatal)
    if not quiet:
        _print_summary(out, config.data, summary)
    return 0


def _print_summary(out: Any, data: str, summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"recorded into {data}")
    for col in ("stream", "messages", "rows", "gaps", "reconnects", "errors"):
        table.add_column(col, justify="left" if col == "stream" else "right")
    for key, c in summary.items():
        table.add_row(key, f"{c['messages']:,}", f"{c['rows']:,}", str(c["gaps"]), str(c["reconnects"]),
                      str(c["errors"]))
    out.print(table)


@app.command()
def record(
    symbols: Annotated[list[str], typer.Argument(help="Symbols to record, like ETH/USDT: its Binance spot market "
                                                 "and its USDT-M perpetual (ETH/USDT:USDT).")],
    data: Annotated[Path, typer.Option(envvar="NOVA_DATA", help="Data root; recordings go under DATA/{table}/.")]
    = Path("data"),
    venue: Annotated[str | None, typer.Option(help="Record from a Binance-compatible server at this base URL "
                                              "(the URL `nova venue` prints) instead of Binance.")] = None,
    testnet: Annotated[bool, typer.Option(help="Record from Binance's testnet (ccxt's sandbox URLs).")] = False,
    markets: Annotated[str, typer.Option(help="both, spot or perp.")] = "both",
    tables: Annotated[str, typer.Option(help="Comma-separated tables to record: book, bbo, trades, funding.")]
    = "book,bbo,trades,funding",
    duration: Annotated[str | None, typer.Option(help="Stop after this long (30s, 15m, 8h); default: until "
                                                 "Ctrl-C or SIGTERM.")] = None,
    flush: Annotated[str, typer.Option(help="How often buffered rows go to disk; kill -9 loses at most this.")]
    = "1s",
    rotate: Annotated[str, typer.Option(help="Start a new file this often (and always at UTC midnight).")] = "15m",
    stall: Annotated[str, typer.Option(help="Reconnect a stream that sends nothing for this long.")] = "30s",
    spot_depth: Annotated[str, typer.Option(help="Spot diff-depth speed: 100ms or 1000ms.")] = "100ms",
    perp_depth: Annotated[str, typer.Option(help="USDT-M diff-depth speed: 0ms (every update), 100ms, 250ms or "
                                            "500ms.")] = "0ms",
    fee_spot: Annotated[float, typer.Option(help="Spot taker fee in bps, for the live spread.")] = 10.0,
    fee_perp: Annotated[float, typer.Option(help="Perp taker fee in bps, for the live spread.")] = 5.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live status and no summary.")] = False,
) -> None:
    """Record every order-book update of Binance spot and USDT-M perpetual markets to Parquet.

    Each symbol is recorded on both markets side by side: every diff-depth message and REST snapshot
    (table book), bookTicker (bbo), trades and, for the perpetual, markPrice@1s (funding), with a ledger of
    gaps, resyncs and reconnects (events). Files appear under DATA as they are completed; Ctrl-C or SIGTERM
    flushes everything and exits 0.

    Examples: `nova record ETH/USDT`, `nova record ETH/USDT BTC/USDT --duration 8h`,
    `nova record ETH/USDT --venue http://127.0.0.1:8765 --duration 30s`.
    """
    duration_s = _duration("--duration", duration)
    config = _record_config(symbols, data, venue, testnet, markets, tables, flush, rotate, stall, spot_depth,
                            perp_depth, fee_spot, fee_perp)
    raise typer.Exit(run_async(lambda stop: _record(config, stop, duration_s, quiet)))


@app.command()
def replay(
    date: Annotated[str | None, typer.Option(help="UTC date to replay, YYYY-MM-DD; default: the last recorded "
                                             "date of the symbol.")] = None,
    symbol: Annotated[str, typer.Option(help="Symbol recorded on both markets, like ETH/USDT.")] = "ETH/USDT",
    until: Annotated[str | None, typer.Option(help="Last date (inclusive) of a range of dates starting at "
                                              "--date.")] = None,
    start: Annotated[str | None, typer.Option(help="Start of a window: HH:MM[:SS] on --date (UTC), or a full "
                                              "ISO time.")] = None,
    end: Annotated[str | None, typer.Option(help="End of the window (exclusive): HH:MM[:SS] on the last date "
                                            "(UTC), or a full ISO time.")] = None,
    data: Annotated[Path, typer.Option(envvar="NOVA_DATA", help="Data root holding the recording.")]
    = Path("data"),
    clock: Annotated[str, typer.Option(help="recv: order and pace by our receive time; event: by exchange "
                                       "time (receive time where a row has none).")] = "recv",
    speed: Annotated[str, typer.Option(help="1 = the recorded pace, 10 = ten times faster, 0.5 = half, max = as "
                                       "fast as the machine goes.")] = "max",
    size: Annotated[float, typer.Option(help="Also compute the spread of this size (base units) walked through "
                                        "both books (size-aware columns).")] = 0.0,
    fee_spot: Annotated[float, typer.Option(help="Spot taker fee in bps.")] = 10.0,
    fee_perp: Annotated[float, typer.Option(help="Perp taker fee in bps.")] = 5.0,
    threshold: Annotated[float, typer.Option(help="An opportunity is a valid reading whose net open_bps is above "
                                             "this (bps).")] = 0.0,
    stale_ms: Annotated[float, typer.Option(help="Flag a reading whose legs updated further apart than this "
                                            "(ms).")] = 1000.0,
    out: Annotated[Path | None, typer.Option(help="Write the spread series to this one Parquet file instead of "
                                             "the dataset's spread table.")] = None,
    skip_bad: Annotated[bool, typer.Option(help="Replay without files that cannot be read (the summary names "
                                           "them) instead of stopping.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
) -> None:
    """Replay a recorded day (or range) of spot and perp books through the spread logic the recorder shows.

    Every recorded table of both markets is merged by receive time (or exchange time with --clock event),
    both books are rebuilt by the contract's rule, and nova.spread computes a reading whenever a top of book
    changes. The series goes to the dataset as table spread (DATA/spread/.../market=spot-perp/symbol=.../
    date=.../replay.parquet, replacing an earlier replay of that date) or to --out; a summary follows.

    Examples: `nova replay --date 2026-11-24`, `nova replay --date 2026-11-24 --start 14:00 --end 15:00
    --speed 1`, `nova replay --date 2026-11-23 --until 2026-11-24 --size 5 --out spread.parquet`.
    """
    paced = _speed(speed)
    for option, value in (("--fee-spot", fee_spot), ("--fee-perp", fee_perp), ("--size", size),
                          ("--stale-ms", stale_ms)):
        if not value >= 0 or value == float("inf"):
            raise fail(f"{option} must be a finite number that is not negative, not {value}")
    if out is not None and (out.suffix != ".parquet" or not out.parent.is_dir()):
        raise fail(f"--out {out} must be a .parquet file in an existing directory")
    from replay import Replay
    from replay.console import ProgressBar, summary_table

    try:
        session = Replay(str(data), symbol, date, until, start, end, clock=clock, size=size, fee_spot=fee_spot,
                         fee_perp=fee_perp, threshold=threshold, stale_ms=stale_ms, skip_bad=skip_bad)
    except NovaError as exc:
        raise fail(str(exc)) from None

    async def main(stop: asyncio.Event) -> int:
        with ProgressBar(err, f"replay {session.span.symbol}", enabled=not quiet and err.is_terminal) as bar:
            summary = await asyncio.to_thread(session.run, paced, write=str(out) if out else True,
                                              progress=bar.update, stop=stop.is_set)
        if not quiet:
            out_console().print(summary_table(summary))
        return 0

    raise typer.Exit(run_async(main))


@app.command()
def demo(
    data: Annotated[Path, typer.Option(envvar="NOVA_DATA", help="Where the recording goes.")] = Path("data"),
    duration: Annotated[str, typer.Option(help="How long to record.")] = "20s",
    seed: Annotated[int, typer.Option(help="Seed of the simulated market.")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live status.")] = False,
) -> None:
    """Start the built-in simulated Binance venue, record ETH/USDT from it, and say where the data is.

    Everything runs on 127.0.0.1: no exchange access is needed. Afterwards, replay or query the recording
    with the commands printed at the end.
    """
    from nova.markets import Symbol
    from nova.venue import SyntheticSource, Venue

    duration_s = _duration("--duration", duration)

    async def main(stop: asyncio.Event) -> int:
        async with Venue(SyntheticSource([Symbol("ETH", "USDT")], seed=seed)) as server:
            err.print(f"Simulated Binance venue at {server.url}; recording ETH/USDT spot and perp for {duration}.")
            config = _record_config(["ETH/USDT"], data, server.url, False, "both", "book,bbo,trades,funding", "1s",
                                    "15m", "30s", "100ms", "0ms", 10.0, 5.0)
            code = await _record(config, stop, duration_s, quiet)
        day = time.strftime("%Y-%m-%d", time.gmtime())
        err.print(f"Done: the recording is under {data}/ (book, bbo, trades, funding, events), partition "
                  f"date={day}.")
        return code

    raise typer.Exit(run_async(main))


def _guard(action: Callable[[], Any]) -> Any:
    """Run a synchronous command body, turning NovaError into one sentence and exit code 2."""
    try:
        return action()
    except NovaError as exc:
        raise fail(str(exc)) from None


def _display_table(table: Any, title: str | None = None, limit: int = 50) -> Any:
    """A rich table of an Arrow table's first ``limit`` rows, timestamps and all shown as text."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from rich.table import Table

    view = Table(title=title, caption=f"{table.num_rows:,} rows" + (f", first {limit} shown"
                                                                  if table.num_rows > limit else ""))
    head = table.slice(0, limit)
    columns = []
    for name, column in zip(head.column_names, head.columns, strict=True):
        numeric = pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
        view.add_column(name, justify="right" if numeric else "left")
        columns.append(pc.cast(column, pa.string()).to_pylist() if not pa.types.is_dictionary(column.type)
                       else pc.cast(pc.cast(column, column.type.value_type), pa.string()).to_pylist())
    for row in zip(*columns, strict=True):
        view.add_row(*("NULL" if v is None else v for v in row))
    return view


@app.command()
def sql(
    query: Annotated[str | None, typer.Argument(help="The SQL to run (read-only), e.g. \"SELECT count(*) FROM book\".")]
    = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the SQL from this file instead.")] = None,
    data: Annotated[Path, typer.Option(envvar="NOVA_DATA", help="The recording to query.")] = Path("data"),
    format: Annotated[str, typer.Option("--format", help="table (default), csv, json or parquet.")] = "table",
    output: Annotated[Path | None, typer.Option(help="Write the result here (needed for parquet).")] = None,
    limit: Annotated[int, typer.Option(help="Rows shown by the table format.")] = 50,
) -> None:
    """Query the recording with DuckDB: views book, bbo, trades, funding, events, spread and macros.

    Views carry the partition columns exchange, market, symbol, date. Macros: top_of_book(mkt, sym, t0, t1,
    step), book_at(mkt, sym, t, n) and basis(sym, t0, t1, step); see the README's "Analyse" section. The
    session is read-only. Example: nova sql "SELECT market, count(*) FROM book GROUP BY market".
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from rich.console import Console

    from analysis.sql import run as run_sql

    if (query is None) == (file is None):
        raise fail("give the SQL either as an argument or with --file, not both and not neither")
    if format not in ("table", "csv", "json", "parquet"):
        raise fail(f"--format {format} is not one of table, csv, json, parquet")
    if format == "parquet" and output is None:
        raise fail("--format parquet needs --output FILE.parquet")
    if file is not None and not file.is_file():
        raise fail(f"the SQL file {file} does not exist")
    text = file.read_text() if file is not None else str(query)
    result = _guard(lambda: run_sql(data, text))
    if result is None:
        err.print("done (the statement returned no rows)")
        return
    if format == "table":
        console = Console(file=open(output, "w"), width=200) if output else out_console()  # noqa: SIM115
        console.print(_display_table(result, limit=limit))
    elif format == "parquet":
        pq.write_table(result, output)
    elif format == "csv":
        import io

        buf = io.BytesIO()
        pacsv.write_csv(result, buf)
        _emit(buf.getvalue().decode(), output)
    else:
        import json

        rows = _display_rows(result)
        _emit("\n".join(json.dumps(r, default=str) for r in rows) + "\n", output)


def _display_rows(table: Any) -> list[dict]:
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            columns[name] = pc.cast(column, pa.string()).to_pylist()
        else:
            columns[name] = column.to_pylist()
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


@app.command()
def check(
    data: Annotated[Path, typer.Option(envvar="NOVA_DATA", help="The recording to check.")] = Path("data"),
    date: Annotated[str | None, typer.Option(help="Only this day (YYYY-MM-DD).")] = None,
    symbol: Annotated[str | None, typer.Option(help="Only this symbol (ETH/USDT).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON lines.")] = False,
) -> None:
    """Verify a recording per table, market, symbol and day: files read, no crash leftovers, every break
    of the update-id chain explained by the ledger, no crossed book. Exits 1 when something is wrong."""
    import json

    from rich.table import Table

    from analysis.check import check as run_check

    reports = _guard(lambda: run_check(data, date, symbol))
    if json_out:
        for r in reports:
            print(json.dumps(r.as_dict()))
    else:
        view = Table(title=f"nova check {data}")
        for col in ("table", "market", "symbol", "date", "files", "rows", "messages", "hours", "breaks",
                    "explained", "crossed", "verdict"):
            view.add_column(col, justify="left" if col in ("table", "market", "symbol", "date", "verdict")
                            else "right")
        for r in reports:
            d = r.as_dict()
            view.add_row(r.table, r.market, r.symbol, r.date, str(r.files), f"{r.rows:,}", f"{r.messages:,}",
                         f"{d['hours_covered']:.2f}", str(r.breaks), str(r.explained), str(r.crossed),
                         "[green]ok[/]" if r.ok else "[bold red]PROBLEM[/]")
        out_console().print(view)
        for r in reports:
            for problem in r.problems:
                err.print(f"[red]{r.table} {r.market} {r.symbol} {r.date}:[/] {problem}", soft_wrap=True)
    raise typer.Exit(0 if all(r.ok for r in reports) else 1)


@app.command()
def compact(
    data: Annotated[Path, typer.Option(envvar="NOVA_DATA", help="The recording to compact.")] = Path("data"),
    date: Annotated[str | None, typer.Option(help="Only this finished day (YYYY-MM-DD); default: all of them.")]
    = None,
    zstd_level: Annotated[int | None, typer.Option(help="zstd level of the merged files (default 9; 19 is "
                                                   "smallest and about 15x slower).")] = None,
) -> None:
    """Merge the rotated files of each finished day into one file per partition, atomically.

    Readers see either the old files or the merged one, never both; an interrupted run leaves the dataset
    consistent. Today's partitions (UTC) are left alone.
    """
    from rich.table import Table

    from analysis.compact import compact as run_compact

    today = time.strftime("%Y-%m-%d", time.gmtime())
    results = _guard(lambda: run_compact(data, date, today, zstd_level))
    view = Table(title=f"nova compact {data}")
    for col in ("table", "partition", "files", "bytes before", "bytes after", "rows", "note"):
        view.add_column(col, justify="left" if col in ("table", "partition", "note") else "right")
    for r in results:
        view.add_row(r.table, r.partition, f"{r.files_before} -> {r.files_after}", f"{r.bytes_before:,}",
                     f"{r.bytes_after:,}", f"{r.rows:,}", r.skipped)
    before, after = sum(r.bytes_before for r in results), sum(r.bytes_after for r in results)
    view.caption = (f"{sum(r.files_before for r in results)} files, {before:,} bytes -> "
                    f"{sum(r.files_after for r in results)} files, {after:,} bytes")
    out_console().print(view)


def main() -> None:
    """The console entry point: an unexpected failure is one line too (NOVA_DEBUG=1 shows the traceback)."""
    import os

    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        if os.environ.get("NOVA_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] nova stopped on an unexpected {type(exc).__name__}: {str(exc)[:300]}; "
                  "run again with NOVA_DEBUG=1 to see where, and please report it", soft_wrap=True)
        raise SystemExit(3) from None


if __name__ == "__main__":  # pragma: no cover
    main()
