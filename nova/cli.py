"""The ``nova`` command line: a thin typer layer over the library; every command has a Python twin.

Two kinds of refusal, one look. Option *types* are typer's: choices are Enums, numbers carry ``min``/``max``,
and the human quantities (durations, speeds, depth speeds, dates, symbols, capture files, faults) have
``parser=`` functions built on ``nova.core.units`` and ``nova.core.markets``. Value *rules* are the library's:
``RecorderConfig``, ``SpreadParams`` and ``Replay`` check themselves and raise ``BadValue`` naming the Python
parameter; the CLI prints that sentence after the option it came from. Either way the user reads one line on
stderr, ``error: --speed: ...``, and a non-zero exit (2 for bad input), never click's usage box.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from nova.core.errors import NovaError
from nova.core.markets import Symbol
from nova.core.secrets import redact
from nova.core.units import BadValue, check_positive, check_speed, parse_date, parse_duration, parse_speed, shown

T = TypeVar("T")
err = Console(stderr=True, highlight=False)


# ---- errors: one line, whatever refused the input ---------------------------------------------------------------

def _reason(exc: typer.BadParameter) -> str:
    """What is wrong with an option's value, in words that quote it (typer's own texts often do not)."""
    cause = exc.__cause__
    errors = cause.errors() if hasattr(cause, "errors") else []  # typer validates through pydantic
    if errors:
        kind, value = errors[0].get("type"), errors[0].get("input")
        if kind in ("less_than_equal", "greater_than_equal", "less_than", "greater_than"):
            low, high = getattr(exc.param, "min", None), getattr(exc.param, "max", None)
            span = f"{low} to {high}" if low is not None and high is not None else \
                f"{low} or more" if low is not None else f"at most {high}"
            return f"{value} is out of range; use {span}"
        if kind in ("int_parsing", "int_from_float"):
            return f"'{value}' is not a whole number"
        if kind == "float_parsing":
            return f"'{value}' is not a number"
    return str(exc.message).removeprefix("Value error, ")


def usage_sentence(exc: typer.TyperException) -> str:
    """One line for a usage error: ``--speed: 'fast' is not a speed; ...`` for a bad value, the parser's
    message and where to look for the rest (a missing argument, an unknown option or command)."""
    param = getattr(exc, "param", None)
    if isinstance(exc, typer.BadParameter) and param is not None and type(exc).__name__ != "MissingParameter":
        where = param.opts[0] if param.param_type_name == "option" else (param.metavar or param.name.upper())
        return f"{where}: {_reason(exc)}"
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    return f"{message.rstrip('.')} (see '{ctx.command_path} -h')" if ctx is not None else message


class OneLineErrors(TyperGroup):
    """Typer's command group, but a usage error prints one line like every other refusal of the CLI
    (``error: --markets: 'spt' is not one of 'both', 'spot', 'perp'.``) instead of click's usage box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
                err.print(f"[bold red]error:[/] {escape(usage_sentence(exc))}", soft_wrap=True)
            code = getattr(exc, "exit_code", 2)
        except typer.Abort:
            err.print("Aborted.")
            code = 1
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="nova",
    cls=OneLineErrors,
    help="Record Binance spot and USDT-M perpetual order books losslessly, and replay them through the "
    "spot-perp spread logic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# ---- option types -------------------------------------------------------------------------------------------------

DATA_HELP = ("A local folder, or an object store as s3://BUCKET/PREFIX (credentials, region and endpoint from "
             "the AWS_* variables).")


class BookChoice(StrEnum):
    """``nova replay --book``: which book kernel rebuilds the books (both give the same readings)."""

    auto = "auto"
    sorted = "sorted"


class Listed(tuple):
    """The items of a comma-separated option value (a tuple subclass: typer passes it as one value, where a
    ``tuple[...]`` annotation would make it expect several words)."""


class Symbols(Listed):
    """Symbols written comma-separated (``ETH/USDT,BTC/USDT``), duplicates dropped."""


def _parser(parse: Callable[[str], T]) -> Callable[[Any], T]:
    """A typer ``parser=`` from a function that raises ValueError: its message becomes the error's text."""

    def convert(value: Any) -> T:
        if not isinstance(value, str):  # a default that is already a value
            return value
        try:
            return parse(value)
        except ValueError as exc:  # BadValue included: the library's own sentence
            raise typer.BadParameter(str(exc)) from None

    return convert


def _positive_duration(text: str) -> float:
    return check_positive("duration", parse_duration(text), "seconds")


def _depth_ms(text: str) -> int:
    """A diff-depth speed in whole milliseconds: ``100ms``, ``1s``, or a bare number of milliseconds."""
    raw = text.strip().lower()
    try:
        ms = float(raw)
    except ValueError:
        ms = parse_duration(raw) * 1000
    if not ms.is_integer():
        raise ValueError(f"'{text}' is not a whole number of milliseconds; write it like 100ms")
    return int(ms)


def _symbols(text: str) -> Symbols:
    """Comma-separated symbols in any spelling ``Symbol.parse`` accepts, duplicates dropped."""
    return Symbols(dict.fromkeys(Symbol.parse(part) for part in text.split(",") if part.strip()))


def _names(text: str) -> Listed:
    return Listed(part.strip() for part in text.split(",") if part.strip())


def _capture_files(text: str) -> Listed:
    """Comma-separated capture files, each of which must exist."""
    paths = Listed(Path(part) for part in text.split(",") if part)
    for path in paths:
        if not path.is_file():
            raise ValueError(f"capture file {path} does not exist; give the path of a raw Binance capture")
    return paths


def _fault(text: str) -> Any:
    from nova.venue.faults import FaultSpec  # the venue (aiohttp) only for the command that serves it

    return FaultSpec.parse(text)


class Shard(tuple):
    """``--shard I/N``: (I, N), a tuple subclass so that typer takes it as one value."""


def _shard(text: str) -> Shard:
    from recorder.fleet import parse_shard  # light: no ccxt until a worker starts

    return Shard(parse_shard(text))


DURATION = _parser(parse_duration)
SHARD = _parser(_shard)
POSITIVE_DURATION = _parser(_positive_duration)
SPEED = _parser(lambda text: check_speed(parse_speed(text)))
DEPTH_MS = _parser(_depth_ms)
DATE = _parser(parse_date)
SYMBOL = _parser(Symbol.parse)
SYMBOLS = _parser(_symbols)
NAMES = _parser(_names)
CAPTURE_FILES = _parser(_capture_files)
FAULT = _parser(_fault)


class MarketChoice(StrEnum):
    """``--markets``: which markets of each symbol to record."""

    both = "both"
    spot = "spot"
    perp = "perp"

    @property
    def markets(self) -> tuple[str, ...]:
        return ("spot", "perp") if self is MarketChoice.both else (self.value,)


class Clock(StrEnum):
    """``--clock``: replay.timespan.CLOCKS."""

    recv = "recv"
    event = "event"


class SqlFormat(StrEnum):
    """``nova sql --format``: nova.analysis.output.FORMATS."""

    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


# ---- the library's refusals ---------------------------------------------------------------------------------------

RECORD_OPTIONS = {"symbols": "SYMBOL", "endpoint": "--venue", "markets": "--markets", "tables": "--tables",
                  "flush_s": "--flush", "rotate_s": "--rotate", "stall_s": "--stall",
                  "listing_every_s": "--listing-every", "depth_ms['spot']": "--spot-depth",
                  "depth_ms['perp']": "--perp-depth", "oi_every_s": "--oi-every",
                  "recorder_id": "--recorder-id", "fee_spot_bps": "--fee-spot", "fee_perp_bps": "--fee-perp",
                  "spool": "--spool", "upload_wait_s": "--upload-wait",
                  "max_connection_age_s": "--max-connection-age"}
"""RecorderConfig's (and its SpreadParams') fields, by the ``nova record`` option that fills them."""
REPLAY_OPTIONS = {"clock": "--clock", "speed": "--speed", "size": "--size", "fee_spot": "--fee-spot",
                  "fee_perp": "--fee-perp", "threshold": "--threshold", "stale_ms": "--stale-ms"}
"""Replay's parameters, by the ``nova replay`` option that fills them."""


def _library(options: Mapping[str, str], call: Callable[[], T]) -> T:
    """Run a library call; a refusal is one sentence, led by the option the refused parameter came from."""
    try:
        return call()
    except BadValue as exc:
        option = options.get(exc.parameter)
        raise fail(f"{option}: {exc}" if option else str(exc)) from None
    except NovaError as exc:
        raise fail(str(exc)) from None


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"nova {version('nova-recorder')}")
        except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
            print("nova (not installed)")
        raise typer.Exit(0)


@app.callback()
def _root(
    _: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                    help="Print Nova's version and exit.")] = False,
) -> None:
    """Record Binance spot and USDT-M perpetual order books losslessly, and replay them through the
    spot-perp spread logic. Start with `nova demo`, or `nova venue` and `nova record ETH/USDT --venue URL`.
    """


def out_console(**kwargs: Any) -> Console:
    """Standard output for tables: the terminal's width, or wide enough that piped tables stay readable."""
    console = Console(**kwargs)
    return console if console.is_terminal else Console(width=200, **kwargs)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one sentence saying what is wrong and what to do, and return the Exit to raise."""
    # one line, however narrow the terminal; the message is text, never markup ("[...]" in it stays); a URL's
    # credentials never reach the terminal (nova.core.secrets)
    err.print(f"[bold red]error:[/] {escape(redact(message))}", soft_wrap=True)
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


def _dashed(symbol: Symbol | None) -> str | None:
    """The dataset's spelling (ETH-USDT) of an optional ``--symbol``."""
    return symbol.dashed if symbol is not None else None


def _flat(groups: Sequence[Listed] | None) -> list[Any]:
    """The items of a repeatable comma-separated option, in order."""
    return [item for group in groups or [] for item in group]


def _config_defaults(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
    """``--config FILE``: its values become the command's defaults (nova.config_file), before the other options
    are read, so a flag on the command line wins and every value goes through its flag's parser."""
    if value is not None and not ctx.resilient_parsing:
        from nova.config_file import ConfigError, load

        try:
            ctx.default_map = {**(ctx.default_map or {}), **load(ctx, value, _reason)}
        except ConfigError as exc:
            raise fail(str(exc)) from None
    return value


@app.command()
def venue(
    port: Annotated[int, typer.Option(min=0, max=65535,
                                      help="TCP port; 0 picks a free one. The URL is the first line printed.")]
    = 8765,
    host: Annotated[str, typer.Option(help="Interface to bind. Keep 127.0.0.1 unless you mean to expose it.")]
    = "127.0.0.1",
    symbols: Annotated[Symbols, typer.Option(parser=SYMBOLS, metavar="SYMBOL[,SYMBOL...]",
                                             help="Comma-separated symbols listed on both spot and USDT-M.")]
    = "ETH/USDT",
    spot_only: Annotated[Symbols, typer.Option(parser=SYMBOLS, metavar="SYMBOL[,SYMBOL...]",
                                               help="Comma-separated symbols listed on spot only (no perpetual).")]
    = "",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic market; the same seed gives the same feed.")]
    = 1,
    rate: Annotated[float, typer.Option(help="Multiply the synthetic message rates (10 = a busy day x10).")]
    = 1.0,
    capture_spot: Annotated[list[Listed] | None, typer.Option(
        parser=CAPTURE_FILES, metavar="FILE[,FILE...]",
        help="Play this raw spot capture instead of the synthetic market (repeat the flag, or separate with "
        "commas, for consecutive files).")] = None,
    capture_perp: Annotated[list[Listed] | None, typer.Option(parser=CAPTURE_FILES, metavar="FILE[,FILE...]",
                                                              help="Play this raw USDT-M capture.")] = None,
    speed: Annotated[float | None, typer.Option(parser=SPEED, metavar="SPEED",
                                                help="Capture playback speed: 1 = as recorded, 10 = ten times "
                                                "faster, max = as fast as clients read.")] = "1",
    autostart: Annotated[bool, typer.Option(help="Start capture playback at once instead of waiting for a depth "
                                            "subscriber on every captured market.")] = False,
    preload: Annotated[bool, typer.Option(help="Read the whole capture into memory before playing, so a max-speed "
                                          "playback is limited by its clients, not by parsing the file.")]
    = False,
    fault: Annotated[list[Any] | None, typer.Option(
        parser=FAULT, metavar="KIND[=ARG]:MARKET@WHEN",
        help="Inject a fault, KIND[=ARG]:MARKET@WHEN, e.g. gap:spot@every20s, close:perp@30s, abort:all@1m, "
        "stall=5:spot@every1m, snapshot-delay=3:perp@every1m, snapshot-fail=2:spot@45s, shutdown:all@2m, "
        "malformed=nan/bookTicker:perp@every10s, malformed=nan/forceOrder:perp@every10s, oi-fail=2:perp@30s, "
        "oi-delay=3:perp@every1m, oi-malformed=nan:perp@every20s (kinds in the README). Repeatable.")] = None,
    spot_ping: Annotated[float, typer.Option(parser=DURATION, metavar="DURATION",
                                             help="Server ping interval on spot connections.")] = "20s",
    perp_ping: Annotated[float, typer.Option(parser=DURATION, metavar="DURATION",
                                             help="Server ping interval on USDT-M connections.")] = "3m",
    spot_pong_timeout: Annotated[float, typer.Option(parser=DURATION, metavar="DURATION",
                                                     help="Close a spot connection after this long without a "
                                                     "pong.")] = "1m",
    perp_pong_timeout: Annotated[float, typer.Option(parser=DURATION, metavar="DURATION",
                                                     help="Close a USDT-M connection after this long without a "
                                                     "pong.")] = "10m",
    spot_weight_limit: Annotated[int, typer.Option(min=0, help="REST request weight a client IP may use per "
                                                   "--weight-window on spot before 429s (0: no limit).")] = 6000,
    perp_weight_limit: Annotated[int, typer.Option(min=0, help="The same on USDT-M.")] = 2400,
    weight_window: Annotated[float, typer.Option(parser=POSITIVE_DURATION, metavar="DURATION",
                                                 help="The window request weight is counted in.")] \
    = "1m",  # type: ignore[assignment]
    ban: Annotated[float, typer.Option(parser=POSITIVE_DURATION, metavar="DURATION",
                                       help="How long a client that keeps sending after a 429 is banned (418).")]
    = "2m",  # type: ignore[assignment]
    tls: Annotated[bool, typer.Option(help="Serve https:// and wss:// with a self-signed certificate; its path is "
                                      "printed so a client can trust it.")] = False,
    max_connection_age: Annotated[float, typer.Option(parser=POSITIVE_DURATION, metavar="DURATION",
                                                      help="Close every WebSocket connection this long after it "
                                                      "opened, as Binance does at 24 hours (e.g. 30s to test a "
                                                      "recorder's handover).")]
    = "24h",  # type: ignore[assignment]
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log connections and faults.")] = False,
) -> None:
    """Serve a simulated Binance (spot + USDT-M market data) on 127.0.0.1, for ccxt and `nova record`.

    It answers exchangeInfo, depth snapshots, openInterest, tickers, klines, trades, avgPrice and premiumIndex
    over REST and diff and partial depth, bookTicker, trade, aggTrade, ticker, miniTicker, kline, markPrice and
    forceOrder streams over WebSocket (also on Binance's root paths /ws and /stream), with Binance's update-id
    rules, pings, limits and error replies (a stream it cannot produce is refused), and names what it serves in
    every response's Server header. Point a recorder at it with
    `nova record ETH/USDT --venue URL`. The control API under URL/_venue (book, status, pause, resume,
    fault/drop|close|stall|snapshot|shutdown|malformed|openinterest, limits) is documented in the README.
    REST requests cost Binance's weights against Binance's per-IP limits (429 with Retry-After, then 418).
    """
    from nova.venue import CaptureSource, SyntheticSource, Venue, VenueConfig
    from nova.venue.faults import run_schedule

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    from nova.venue.ratelimit import RateLimits

    config = VenueConfig(host=host, port=port, ping_interval_s={"spot": spot_ping, "perp": perp_ping},
                         pong_timeout_s={"spot": spot_pong_timeout, "perp": perp_pong_timeout},
                         limits=RateLimits({"spot": spot_weight_limit, "perp": perp_weight_limit}, weight_window,
                                           ban_s=ban), tls=tls, max_connection_age_s=max_connection_age)
    specs = list(fault or [])
    if rate <= 0:
        raise fail(f"--rate must be positive, not {rate}")
    spot_files, perp_files = _flat(capture_spot), _flat(capture_perp)

    async def main(stop: asyncio.Event) -> int:
        if spot_files or perp_files:
            source: Any = CaptureSource(spot_files, perp_files, speed=speed, autostart=autostart, preload=preload)
            what = source.description + " at " + ("max speed" if speed is None else f"{shown(speed)}x")
        else:
            source = SyntheticSource(list(symbols), seed=seed, rate=rate, spot_only=list(spot_only))
            what = source.description
        server = Venue(source, config)
        try:
            url = await server.start()
        except OSError as exc:
            raise NovaError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port "
                            "(0 picks a free one)") from None
        print(url, flush=True)
        listed = ", ".join(f"{i.market} {i.symbol.ccxt_symbol(i.market)}" for i in source.instruments)
        err.print(f"Simulated Binance venue at [bold]{url}[/] ({what}): {listed}.")
        if server.cert_path is not None:
            print(f"certificate {server.cert_path}", flush=True)
            err.print(f"Its self-signed TLS certificate is {server.cert_path}: trust it in the client "
                      f"(e.g. SSL_CERT_FILE={server.cert_path}).")
        err.print(f"Record from it with: nova record {source.instruments[0].symbol.unified} --venue {url}")
        if server.control_token:  # bound beyond 127.0.0.1: the control API (/_venue/*) is not open to all
            err.print(f"Control API token: {server.control_token} (header 'Authorization: Bearer TOKEN').")
        err.print("Ctrl-C stops it.")
        faults = asyncio.get_running_loop().create_task(run_schedule(server, specs)) if specs else None
        await stop.wait()
        if faults:
            faults.cancel()
        await server.stop()
        return 0

    raise typer.Exit(run_async(main))


@app.command()
def serve(
    date: Annotated[str, typer.Option(parser=DATE, metavar="YYYY-MM-DD", help="The (first) UTC date to play.")],
    data: Annotated[str, typer.Option(envvar="NOVA_DATA", metavar="DATA",
                                      help="Data root holding the recording. " + DATA_HELP)] = "data",
    until: Annotated[str | None, typer.Option(parser=DATE, metavar="YYYY-MM-DD",
                                              help="Last date to play (inclusive).")] = None,
    start: Annotated[str | None, typer.Option(help="Start at HH:MM[:SS] on --date (UTC), a full ISO time or ns; the "
                                              "books are rebuilt from the last snapshot before it.")] = None,
    end: Annotated[str | None, typer.Option(help="Stop at HH:MM[:SS] on the last date (UTC), a full ISO time or "
                                            "ns.")] = None,
    symbols: Annotated[Symbols, typer.Option(parser=SYMBOLS, metavar="SYMBOL",
                                             help="The symbol to play (needed when the date holds several).")]
    = "",  # type: ignore[assignment]
    speed: Annotated[float | None, typer.Option(parser=SPEED, metavar="SPEED",
                                                help="1 = the recorded pace, 10 = ten times faster, max = as fast "
                                                "as clients read.")] = "1",  # type: ignore[assignment]
    port: Annotated[int, typer.Option(min=0, max=65535,
                                      help="TCP port; 0 picks a free one. The URL is the first line printed.")]
    = 8765,
    host: Annotated[str, typer.Option(help="Interface to bind. Beyond 127.0.0.1 the control API (/_venue/*) needs "
                                      "a token.")] = "127.0.0.1",
    autostart: Annotated[bool, typer.Option(help="Start playing at once instead of waiting for a depth subscriber "
                                            "on both markets (or 3 s after a one-market or quotes-only client "
                                            "subscribed).")] = False,
    control_token: Annotated[str | None, typer.Option(help="The control API's token (default: generated and "
                                                      "printed when --host is not 127.0.0.1).")] = None,
    tls: Annotated[bool, typer.Option(help="Serve https:// and wss:// with a generated self-signed certificate, "
                                      "whose path is printed so a client can trust it.")] = False,
    snapshot_hold: Annotated[float, typer.Option(min=0.0, help="After a recorded break, how long (s) playback "
                                                 "waits for a client to fetch the recorded resync snapshot.")] = 10.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log connections.")] = False,
) -> None:
    """Play a recorded dataset through Binance's protocol, so any Binance client (ccxt, your bot) runs on history.

    REST exchangeInfo and depth (the book at the playhead; after a recorded break the recorded resync snapshot),
    WebSocket diff-depth re-made from the book rows with their recorded ids, bookTicker, trade, markPrice and
    forceOrder from their tables, paced by receive time. Control: GET URL/_venue/status (the playhead), POST
    URL/_venue/seek?t=ISO, URL/_venue/pause, URL/_venue/resume.

    Examples: `nova serve --date 2026-11-24 --port 0`, `nova serve --data s3://bucket/nova --date 2026-11-24
    --start 10:00 --end 11:30 --speed 10`, `nova serve --date 2026-11-24 --tls --autostart --speed max`.
    """
    from nova.venue import Venue, VenueConfig
    from nova.venue.recorded import DatasetSource

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")

    async def main(stop: asyncio.Event) -> int:
        source = DatasetSource(data, date, until=until, start=start, end=end, symbols=list(symbols) or None,
                               speed=speed, autostart=autostart, snapshot_hold_s=snapshot_hold)
        server = Venue(source, VenueConfig(host=host, port=port, tls=tls), control_token=control_token)
        try:
            url = await server.start()
        except OSError as exc:
            raise NovaError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port "
                            "(0 picks a free one)") from None
        print(url, flush=True)
        pace = "max speed" if speed is None else f"{shown(speed)}x"
        err.print(f"Serving {source.description} at [bold]{url}[/] ({pace}; "
                  f"{'playing now' if autostart else 'starts when a client subscribes to depth on both markets'}).")
        derived = source.derived_instruments
        err.print("exchangeInfo: " + (f"derived from the recorded prices for {', '.join(derived)} (no instruments "
                                      "table)" if derived else "the recorded instruments") + ".")
        if server.cert_path is not None:
            print(f"certificate {server.cert_path}", flush=True)
            err.print(f"Its self-signed TLS certificate is {server.cert_path}: trust it in the client (for example "
                      "SSL_CERT_FILE for aiohttp-based clients).")
        if server.control_token:
            err.print(f"Control API token: {server.control_token} (header 'Authorization: Bearer TOKEN').")
        err.print("Ctrl-C stops it.")
        await stop.wait()
        await server.stop()
        return 0

    raise typer.Exit(run_async(main))


def _record_config(symbols: list[Symbol], data: str | Path, venue: str | None, testnet: bool, **fields: Any) -> Any:
    """The RecorderConfig the options describe; what it refuses is one sentence naming the option."""
    if venue and testnet:
        raise fail("--venue and --testnet exclude each other; pick one endpoint")
    fees = {"fee_spot_bps": fields.pop("fee_spot"), "fee_perp_bps": fields.pop("fee_perp")}
    # Only now the heavy imports (ccxt, numba): a typo in an option is answered at once.
    from nova.core.spread import SpreadParams
    from recorder.recorder import RecorderConfig

    return _library(RECORD_OPTIONS, lambda: RecorderConfig(
        symbols=list(dict.fromkeys(symbols)), data=str(data),
        endpoint=venue if venue is not None else "testnet" if testnet else "binance",
        spread=SpreadParams(**fees), **fields))


async def _metrics_server(metrics: tuple[int, str] | None, config: Any, summary: Callable[[], dict],
                         backlog: Callable[[], tuple[int, int] | None]) -> Any:
    """``--metrics-port``: the server of recorder.metrics over ``summary``, started (None without the option)."""
    if metrics is None:
        return None
    from nova.core.spool import default_spool_base
    from nova.core.stores import is_object_store
    from recorder.metrics import MetricsServer, Probe

    local = str(config.spool or default_spool_base()) if is_object_store(config.data) else config.data
    server = MetricsServer(Probe(summary, config.stall_s, local, backlog), *metrics)
    url = await server.start()
    err.print(f"Metrics on {url}/metrics, health on {url}/health")
    return server


async def _record(config: Any, stop: asyncio.Event, duration_s: float | None, quiet: bool,
                  metrics: tuple[int, str] | None = None) -> int:

    from recorder.recorder import Recorder
    from recorder.status import StatusView

    if quiet:
        config.live_spread = False  # nobody looks at the live spread: do not keep live books
    recorder = Recorder(config)

    def backlog() -> tuple[int, int] | None:
        if recorder.uploader is None:
            return 0, 0  # a local root: nothing ever waits to be uploaded
        waiting = recorder.uploader.backlog()
        return waiting.files, waiting.bytes

    await recorder.start()
    try:
        server = await _metrics_server(metrics, config, recorder.summary, backlog)
    except NovaError:
        await recorder.stop()
        raise
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
        if server is not None:
            await server.stop()
        summary = await recorder.stop()
    for notice in recorder.notices:
        err.print(f"[bold yellow]warning:[/] {notice}", soft_wrap=True)
    if recorder.fatal:
        raise NovaError(recorder.fatal)
    if not quiet:
        _print_summary(out, config.data, summary)
    return 0


async def _record_many(config: Any, stop: asyncio.Event, duration_s: float | None, quiet: bool, every: bool,
                       quote: str | None, shard: tuple[int, int] | None, workers: int,
                       metrics: tuple[int, str] | None = None) -> int:
    """``--all``, ``--shard`` and ``--workers`` (recorder.fleet) around ``_record``."""
    from recorder import fleet
    from recorder.listings import Universe

    if every:
        config.symbols = await fleet.listed_symbols(config.endpoint, config.markets, quote)
        if not config.symbols:
            where = f" quoted in {quote.upper()}" if quote else ""
            raise NovaError(f"no symbol{where} is listed and trading on every recorded market; check --quote "
                            "and --markets")
        config.listing = Universe(quote, shard)  # new listings are picked up by the same rule while it runs
    if shard is not None:
        listed = len(config.symbols)
        config.symbols = fleet.shard(config.symbols, *shard)
        if not config.symbols:
            raise NovaError(f"shard {shard[0]}/{shard[1]} of the {listed} symbols is empty; use fewer shards")
    if workers == 1:
        return await _record(config, stop, duration_s, quiet, metrics)
    parts = fleet.split(config.symbols, workers, shard[1] if shard else 1)
    empty = sum(1 for p in parts if not p)
    if empty and every:  # each worker owns its hash slice of the listings to come: all of them start
        count = len(config.symbols)
        err.print(f"{count} symbol{'s' if count != 1 else ''} leave{'s' if count == 1 else ''} {empty} of the "
                  f"{workers} workers without a symbol for now; they record the new listings that fall to them")
    elif empty:
        parts = [p for p in parts if p]
        err.print(f"{len(config.symbols)} symbols fill {len(parts)} of the {workers} workers; starting {len(parts)}")
    return await _record_fleet(fleet.Fleet(config, parts), config, stop, duration_s, quiet, metrics)


async def _record_fleet(workers: Any, config: Any, stop: asyncio.Event, duration_s: float | None, quiet: bool,
                        metrics: tuple[int, str] | None = None) -> int:
    from rich.live import Live

    from recorder.status import FleetView

    data = config.data
    out = out_console()
    server = await _metrics_server(metrics, config, workers.summary, lambda: None)  # before the workers start
    workers.start()
    try:
        await workers.wait_started()
        view = FleetView(workers, out, data)
        shown_notices = 0

        def tick() -> None:
            nonlocal shown_notices
            for notice in workers.notices[shown_notices:]:
                err.print(f"[bold yellow]warning:[/] {notice}", soft_wrap=True)
            shown_notices = len(workers.notices)
            if not quiet and not out.is_terminal:
                out.print(view.log_line(), soft_wrap=True, highlight=False)

        if not quiet and out.is_terminal:
            with Live(view.render(), console=out, refresh_per_second=2, transient=False) as live:

                def redraw() -> None:
                    tick()
                    live.update(view.render())

                await workers.run(stop, duration_s, redraw, 0.5)
        else:
            await workers.run(stop, duration_s, tick, 10.0)
    finally:
        if server is not None:
            await server.stop()
        await workers.stop()
    for notice in workers.notices[shown_notices:]:
        err.print(f"[bold yellow]warning:[/] {notice}", soft_wrap=True)
    if not quiet:
        _print_summary(out, data, workers.summary())
    failed = workers.failed
    if failed:
        raise NovaError(f"{len(failed)} of {len(workers.workers)} workers did not finish cleanly (worker "
                        f"{failed[0].index + 1}: {failed[0].failure}); what they recorded is on disk")
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
    symbols: Annotated[list[Symbols] | None, typer.Argument(parser=SYMBOLS, metavar="SYMBOL",
                                                           help="Symbols to record, like ETH/USDT: its Binance "
                                                           "spot market and its USDT-M perpetual "
                                                           "(ETH/USDT:USDT). Or --all.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Record every symbol listed and trading on every recorded "
                                        "market (exchangeInfo): with both markets, each symbol that has a spot "
                                        "market and a USDT-M perpetual.")] = False,
    quote: Annotated[str | None, typer.Option(metavar="ASSET", help="With --all: only the symbols quoted in this "
                                              "asset, like USDT.")] = None,
    shard: Annotated[Shard | None, typer.Option(parser=SHARD, metavar="I/N",
                                                          help="Record shard I of N (from 1) of the symbols: a "
                                                          "stable split by a hash of each name, so N machines "
                                                          "cover the list without talking.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Record in this many processes on this machine, each "
                                         "a part of the symbols, under one status and one Ctrl-C.")] = 1,
    data: Annotated[str, typer.Option(envvar="NOVA_DATA", metavar="DATA",
                                      help="Data root; recordings go under DATA/{table}/. " + DATA_HELP)] = "data",
    venue: Annotated[str | None, typer.Option(help="Record from a Binance-compatible server at this base URL "
                                              "(the URL `nova venue` prints) instead of Binance.")] = None,
    testnet: Annotated[bool, typer.Option(help="Record from Binance's testnet (ccxt's sandbox URLs).")] = False,
    markets: Annotated[MarketChoice, typer.Option(case_sensitive=False, help="both, spot or perp.")]
    = MarketChoice.both,
    tables: Annotated[Listed, typer.Option(parser=NAMES, metavar="TABLE[,TABLE...]",
                                           help="Comma-separated tables to record: book, bbo, trades, funding, "
                                           "liquidations, open_interest (exchangeInfo, as table instruments, "
                                           "always).")]
    = "book,bbo,trades,funding,liquidations,open_interest",
    duration: Annotated[float | None, typer.Option(parser=POSITIVE_DURATION, metavar="DURATION",
                                                   help="Stop after this long (30s, 15m, 8h); default: until "
                                                   "Ctrl-C or SIGTERM.")] = None,
    flush: Annotated[float, typer.Option(parser=DURATION, metavar="DURATION",
                                         help="How often buffered rows go to disk; kill -9 loses at most this.")]
    = "1s",
    rotate: Annotated[float, typer.Option(parser=DURATION, metavar="DURATION",
                                          help="Start a new file this often (and always at UTC midnight).")]
    = "15m",
    stall: Annotated[float, typer.Option(parser=DURATION, metavar="DURATION",
                                         help="Reconnect a stream that sends nothing for this long.")] = "30s",
    spot_depth: Annotated[int, typer.Option(parser=DEPTH_MS, metavar="SPEED",
                                            help="Spot diff-depth speed: 100ms or 1000ms.")] = "100ms",
    perp_depth: Annotated[int, typer.Option(parser=DEPTH_MS, metavar="SPEED",
                                            help="USDT-M diff-depth speed: 0ms (every update), 100ms, 250ms or "
                                            "500ms.")] = "0ms",
    fee_spot: Annotated[float, typer.Option(help="Spot taker fee in bps, for the live spread.")] = 10.0,
    fee_perp: Annotated[float, typer.Option(help="Perp taker fee in bps, for the live spread.")] = 5.0,
    oi_every: Annotated[float, typer.Option(parser=DURATION, metavar="DURATION",
                                            help="Poll the perpetual's open interest this often.")] = "10s",
    recorder_id: Annotated[str | None, typer.Option(help="Name this recorder in the ledger's provenance and in "
                                                    "its file names (default: the host name).")] = None,
    spool: Annotated[str | None, typer.Option(metavar="DIR",
                                              help="With an s3:// --data: the local folder where open files are "
                                              "journalled and finished files wait for their upload (a folder "
                                              "BUCKET/PREFIX inside it). Default: ~/.cache/nova/spool "
                                              "($XDG_CACHE_HOME/nova/spool), or ./nova-spool without a home.")]
    = None,
    upload_wait: Annotated[float, typer.Option(parser=POSITIVE_DURATION, metavar="DURATION",
                                               help="With an s3:// --data: how long a stop waits for the last "
                                               "uploads before leaving them to the next start.")] = "60s",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live status and no summary.")] = False,
    max_connection_age: Annotated[float, typer.Option(parser=POSITIVE_DURATION, metavar="DURATION",
                                                      help="The exchange closes a connection this long after it "
                                                      "opened (Binance: 24h); the recorder hands each market over "
                                                      "to a new connection before that, losing nothing.")]
    = "24h",  # type: ignore[assignment]
    metrics_port: Annotated[int | None, typer.Option(min=0, max=65535, metavar="PORT",
                                                     help="Serve Prometheus metrics on http://HOST:PORT/metrics "
                                                     "and a health check on /health (200 while every book "
                                                     "stream is live, 503 with the reasons).")] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface the metrics listen on.")] = "0.0.0.0",
    listing_every: Annotated[float | None, typer.Option(
        parser=POSITIVE_DURATION, metavar="DURATION",
        help="With --all: read exchangeInfo this often (default 5m) and start the new listings, stop the "
        "symbols delisted or halted (each ledgered); tick and step changes are recorded as they come.")] = None,
    config: Annotated[Path | None, typer.Option(metavar="FILE", is_eager=True, callback=_config_defaults,
                                                help="Read options from this TOML file (keys: the long options "
                                                "without dashes, e.g. symbols = [\"ETH/USDT\"], flush = \"1s\"); "
                                                "options given on the command line win.")] = None,
) -> None:
    """Record every order-book update of Binance spot and USDT-M perpetual markets to Parquet.

    Each symbol is recorded on both markets side by side: every diff-depth message and REST snapshot
    (table book), bookTicker (bbo), trades and, for the perpetual, markPrice@1s (funding), liquidations
    (forceOrder) and open interest (polled), plus exchangeInfo (instruments), with a ledger of gaps, resyncs
    and reconnects (events) whose start rows say where the data came from. Files appear under DATA as they
    are completed; Ctrl-C or SIGTERM flushes everything, gives back the recorder's claims and exits 0.

    Into an object store (--data s3://BUCKET/PREFIX), files are journalled in a local spool (--spool) and
    each finished file is uploaded under its final name, with retries; a store that is slow or down never
    stops the recording (the status shows the backlog, the ledger when uploads fail and recover). A stop
    uploads the rest, or, if the store is still down after --upload-wait, exits 1 leaving them in the spool
    for the next start.

    Examples: `nova record ETH/USDT`, `nova record ETH/USDT BTC/USDT --duration 8h`,
    `nova record ETH/USDT --venue http://127.0.0.1:8765 --duration 30s`,
    `nova record ETH/USDT --data s3://my-bucket/nova --spool /var/spool/nova`,
    `nova record --all --quote USDT --workers 4 --shard 1/3 --recorder-id box-1` (one of three machines),
    `nova record --config recorder.toml --duration 1h` (a fleet's settings in a file; the flag wins).
    """
    chosen = _flat(symbols)
    if every and chosen:
        raise fail("give symbols or --all, not both")
    if not every and not chosen:
        raise fail("give at least one symbol to record, like ETH/USDT, or --all for every listed symbol")
    if quote is not None and not every:
        raise fail("--quote filters the symbols of --all; add --all or drop --quote")
    if listing_every is not None and not every:
        raise fail("--listing-every is how often --all looks for listing changes; add --all or drop --listing-every")
    config = _record_config(chosen or [Symbol("BTC", "USDT")], data, venue, testnet, markets=markets.markets,
                            tables=tables, flush_s=flush, rotate_s=rotate, stall_s=stall,
                            depth_ms={"spot": spot_depth, "perp": perp_depth}, oi_every_s=oi_every,
                            recorder_id=recorder_id, fee_spot=fee_spot, fee_perp=fee_perp, spool=spool,
                            upload_wait_s=upload_wait, max_connection_age_s=max_connection_age,
                            handover_lead_s=min(600.0, max_connection_age / 4),
                            **({} if listing_every is None else {"listing_every_s": listing_every}))
    metrics = (metrics_port, metrics_host) if metrics_port is not None else None
    raise typer.Exit(run_async(lambda stop: _record_many(config, stop, duration, quiet, every, quote, shard,
                                                         workers, metrics)))


@app.command()
def replay(
    date: Annotated[str | None, typer.Option(parser=DATE, metavar="YYYY-MM-DD",
                                             help="UTC date to replay, YYYY-MM-DD; default: the last recorded "
                                             "date of the symbol.")] = None,
    symbol: Annotated[Symbol | None, typer.Option(parser=SYMBOL, metavar="SYMBOL",
                                                  help="Symbol recorded on both markets, like ETH/USDT (the "
                                                  "default).")] = None,
    until: Annotated[str | None, typer.Option(parser=DATE, metavar="YYYY-MM-DD",
                                              help="Last date (inclusive) of a range of dates starting at "
                                              "--date.")] = None,
    symbols: Annotated[str | None, typer.Option(metavar="SYMBOLS|all",
                                                help="Replay many symbols: comma-separated (ETH/USDT,BTC/USDT) or "
                                                "all; every (symbol, date) is a piece of its own, run in parallel "
                                                "with --workers.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Pieces replayed at once, each in its own process (or Dask "
                                         "workers for --scheduler local).")] = 1,
    scheduler: Annotated[str | None, typer.Option(metavar="ADDRESS",
                                                  help="Run the pieces on the Dask cluster at ADDRESS (tcp://HOST:"
                                                  "8786), or 'local' for a local Dask cluster of --workers "
                                                  "processes; needs nova-recorder[dask].")] = None,
    start: Annotated[str | None, typer.Option(help="Start of a window: HH:MM[:SS] on --date (UTC), or a full "
                                              "ISO time.")] = None,
    end: Annotated[str | None, typer.Option(help="End of the window (exclusive): HH:MM[:SS] on the last date "
                                            "(UTC), or a full ISO time.")] = None,
    data: Annotated[str, typer.Option(envvar="NOVA_DATA", metavar="DATA",
                                      help="Data root holding the recording. " + DATA_HELP)] = "data",
    clock: Annotated[Clock, typer.Option(case_sensitive=False,
                                         help="recv: order and pace by our receive time; event: by exchange "
                                         "time (receive time where a row has none).")] = Clock.recv,
    speed: Annotated[float | None, typer.Option(parser=SPEED, metavar="SPEED",
                                                help="1 = the recorded pace, 10 = ten times faster, 0.5 = half, "
                                                "max = as fast as the machine goes.")] = "max",
    size: Annotated[float, typer.Option(help="Also compute the spread of this size (base units) walked through "
                                        "both books (size-aware columns).")] = 0.0,
    fee_spot: Annotated[float, typer.Option(help="Spot taker fee in bps.")] = 10.0,
    fee_perp: Annotated[float, typer.Option(help="Perp taker fee in bps.")] = 5.0,
    threshold: Annotated[float, typer.Option(help="An opportunity is a valid reading whose net open_bps is above "
                                             "this (bps).")] = 0.0,
    stale_ms: Annotated[float, typer.Option(help="Flag a reading whose legs updated further apart than this "
                                            "(ms).")] = 1000.0,
    out: Annotated[Path | None, typer.Option(help="Write the spread series to this one local Parquet file "
                                             "instead of the dataset's spread table.")] = None,
    skip_bad: Annotated[bool, typer.Option(help="Replay without files that cannot be read (the summary names "
                                           "them) instead of stopping.")] = False,
    replace: Annotated[bool, typer.Option(help="Let a window replay replace a stored series of the spread table "
                                          "that covers more of the day.")] = False,
    book: Annotated[BookChoice, typer.Option(case_sensitive=False,
                                             help="auto: books indexed by price tick where the recorded instruments "
                                             "give the tick (same readings, ~5x faster books), else sorted; "
                                             "sorted: always the sorted book (for comparisons).")]
    = BookChoice.auto,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
) -> None:
    """Replay a recorded day (or range) of spot and perp books through the spread logic the recorder shows.

    Every recorded table of both markets is merged by receive time (or exchange time with --clock event),
    both books are rebuilt by the contract's rule, and nova.core.spread computes a reading whenever a top of book
    changes. The series goes to the dataset as table spread (DATA/spread/.../market=spot-perp/symbol=.../
    date=.../replay.parquet, replacing an earlier replay of that date) or to --out; a summary follows.

    With --symbols (or --workers/--scheduler) every (symbol, date) of the range is replayed as a piece of its
    own, in parallel, each exactly as replaying it alone (books carry across midnight); one progress bar over the
    pieces and one table with a row per symbol and date follow.

    Examples: `nova replay --date 2026-11-24`, `nova replay --date 2026-11-24 --start 14:00 --end 15:00
    --speed 1`, `nova replay --date 2026-11-23 --until 2026-11-24 --size 5 --out spread.parquet`,
    `nova replay --symbols all --date 2026-11-01 --until 2026-11-30 --workers 2`,
    `nova replay --symbols ETH/USDT,BTC/USDT --date 2026-11-24 --scheduler tcp://10.0.0.5:8786`.
    """
    if symbols is not None or workers > 1 or scheduler is not None:
        batch = {"--symbol": symbol is not None, "--start": start is not None, "--end": end is not None,
                 "--out": out is not None, "--speed": speed is not None}
        refused = [name for name, given in batch.items() if given]
        if refused:
            raise fail(f"{refused[0]} applies to one symbol's range, not to a batch of pieces (--symbols, "
                       "--workers, --scheduler); replay that range on its own, or leave it out")
        raise typer.Exit(_replay_pieces(data, symbols or (symbol.unified if symbol else "ETH/USDT"), date, until,
                                        workers, scheduler, quiet, size=size, fee_spot=fee_spot,
                                        fee_perp=fee_perp, threshold=threshold, stale_ms=stale_ms,
                                        clock=clock.value, skip_bad=skip_bad, replace=replace))
    symbol = symbol or Symbol.parse("ETH/USDT")
    if out is not None and re.match(r"[A-Za-z][A-Za-z0-9+.-]*:/", str(out)):
        raise fail(f"--out writes a local file, not an object-store URL ({out}); leave --out out to store the "
                   "series in the dataset's spread table (on the store too)")
    if out is not None and (out.suffix != ".parquet" or not out.parent.is_dir()):
        raise fail(f"--out {out} must be a .parquet file in an existing directory")
    from replay import Replay
    from replay.console import ProgressBar, summary_table
    from replay.kernel import kernels_cached

    write: bool | str = str(out) if out else True
    session = _library(REPLAY_OPTIONS, lambda: Replay(
        str(data), symbol.unified, date, until, start, end, clock=clock.value, size=size, fee_spot=fee_spot,
        fee_perp=fee_perp, threshold=threshold, stale_ms=stale_ms, skip_bad=skip_bad, book=book.value))
    _library(REPLAY_OPTIONS, lambda: session.check_output(write, replace))  # before any work: a read-only
    # archive, a window over a stored day
    for warning in session.warnings:
        err.print(f"[bold yellow]warning:[/] {warning}", soft_wrap=True)
    if not kernels_cached():
        err.print("Compiling the replay loop for this machine (first run only: about 10 to 40 s; it is cached "
                  "for the next runs) ...", soft_wrap=True)

    async def main(stop: asyncio.Event) -> int:
        with ProgressBar(err, f"replay {session.span.symbol}", enabled=not quiet and err.is_terminal) as bar:
            summary = await asyncio.to_thread(session.run, speed, write=write, replace=replace,
                                              progress=bar.update, stop=stop.is_set)
        if not quiet:
            out_console().print(summary_table(summary))
        return 0

    raise typer.Exit(run_async(main))


def _replay_pieces(data: str, symbols: str, date: str | None, until: str | None, workers: int,
                   scheduler: str | None, quiet: bool, **options: Any) -> int:
    """``nova replay --symbols``: plan the pieces (bad input fails before any work), run them with a progress
    bar, print the table; exit 1 when a piece failed (each failure's sentence on stderr)."""
    from replay.console import PiecesBar, pieces_table
    from replay.kernel import kernels_cached
    from replay.pieces import PieceOptions, check_workers, plan, run_pieces

    _library(REPLAY_OPTIONS | {"workers": "--workers"}, lambda: check_workers(workers))
    opts = _library(REPLAY_OPTIONS, lambda: PieceOptions(**options))  # checks the knobs as Replay does
    batch = _library({}, lambda: plan(data, symbols, date, until))
    for note in batch.notes:
        err.print(f"[bold yellow]note:[/] {note}", soft_wrap=True)
    if not kernels_cached():
        err.print("Compiling the replay loop for this machine (first run only: about 10 to 40 s; it is cached "
                  "for the next runs) ...", soft_wrap=True)

    async def main(stop: asyncio.Event) -> int:
        where = f"on {scheduler}" if scheduler else f"with {workers} worker{'s' * (workers != 1)}"
        title = f"replay {len(batch.pieces)} pieces ({len(batch.symbols)} symbols) {where}"
        with PiecesBar(err, title, len(batch.pieces), enabled=not quiet and err.is_terminal) as bar:
            results = await asyncio.to_thread(lambda: run_pieces(
                data, batch.pieces, opts, workers=workers, scheduler=scheduler, on_done=bar.update,
                stop=stop.is_set))
        if not quiet:
            out_console().print(pieces_table(results, f"nova replay: {len(results)} pieces"))
        failed = [r for r in results if not r.ok]
        for r in failed:
            err.print(f"[bold red]error:[/] {r.symbol} {r.date}: {escape(r.error or '')}", soft_wrap=True)
        return 1 if failed else 0

    return run_async(main)


class ScanBy(StrEnum):
    """``nova scan --by``: replay.scan's groupings."""

    day = "day"
    symbol = "symbol"


class ScanSort(StrEnum):
    """``nova scan --sort``: replay.scan.SORT_KEYS."""

    minutes_above = "minutes_above"
    best_net_open_bps = "best_net_open_bps"
    basis_mean_bps = "basis_mean_bps"
    funding_bps = "funding_bps"
    valid_minutes = "valid_minutes"


@app.command()
def scan(
    symbols: Annotated[str, typer.Option(metavar="SYMBOLS|all", help="Comma-separated symbols (ETH/USDT,BTC/USDT) "
                                         "or all.")] = "all",
    date: Annotated[str | None, typer.Option(parser=DATE, metavar="YYYY-MM-DD",
                                             help="First date; default: each symbol's last recorded date.")] = None,
    until: Annotated[str | None, typer.Option(parser=DATE, metavar="YYYY-MM-DD",
                                              help="Last date (inclusive); default: --date.")] = None,
    threshold: Annotated[float, typer.Option(help="Count the time net open_bps is above this (bps).")] = 0.0,
    fee_spot: Annotated[float, typer.Option(help="Spot taker fee in bps.")] = 10.0,
    fee_perp: Annotated[float, typer.Option(help="Perp taker fee in bps.")] = 5.0,
    stale_ms: Annotated[float, typer.Option(help="Readings whose legs updated further apart than this (ms) never "
                                            "count as an entry.")] = 1000.0,
    by: Annotated[ScanBy, typer.Option(case_sensitive=False, help="day: a row per symbol and date; symbol: a row "
                                       "per symbol over the range.")] = ScanBy.day,
    sort: Annotated[ScanSort, typer.Option(case_sensitive=False, help="The column to rank by, best "
                                           "first.")] = ScanSort.minutes_above,
    format: Annotated[SqlFormat | None, typer.Option("--format", case_sensitive=False,
                                                     help="table, csv, json (JSON lines) or parquet; default: "
                                                     "what --output's extension says, else table.")] = None,
    output: Annotated[Path | None, typer.Option(help="Write the ranking to this file instead of stdout.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown by the table format.")] = 50,
    refresh: Annotated[bool, typer.Option(help="Replay every piece again, even those with a stored series.")]
    = False,
    workers: Annotated[int, typer.Option(min=1, help="Pieces replayed at once (those without a stored "
                                         "series).")] = 1,
    scheduler: Annotated[str | None, typer.Option(metavar="ADDRESS", help="Replay missing pieces on this Dask "
                                                  "cluster (tcp://HOST:8786, or local).")] = None,
    data: Annotated[str, typer.Option(envvar="NOVA_DATA", metavar="DATA",
                                      help="Data root holding the recording. " + DATA_HELP)] = "data",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no notes.")] = False,
) -> None:
    """Rank symbols and days by what a basis trade would have earned: minutes with net open_bps above
    --threshold, the best net entry, mean and p5/p95 basis over valid time, funding collected, valid time.

    Reads the spread tables; pieces without a stored full-day series are replayed first (in parallel with
    --workers or --scheduler). Only watched time counts: invalid books and unrecorded hours never do.

    Examples: `nova scan --date 2026-11-01 --until 2026-11-30 --threshold 5`,
    `nova scan --symbols ETH/USDT,BTC/USDT --by symbol --format csv --output ranking.csv`,
    `nova scan --fee-spot 7.5 --fee-perp 4.5 --sort best_net_open_bps`.
    """
    from nova.analysis.output import check_output, choose_format, export_arrow
    from replay.console import PiecesBar
    from replay.scan import scan as run_scan

    if output is not None:
        _guard(lambda: check_output(output, data))
    fmt = _guard(lambda: choose_format(format.value if format is not None else None, output))
    if fmt == "parquet" and output is None:
        raise fail("--format parquet needs --output FILE.parquet")

    async def main(stop: asyncio.Event) -> int:
        with PiecesBar(err, "replaying pieces without a stored series", 0,
                       enabled=not quiet and err.is_terminal) as bar:
            result = await asyncio.to_thread(lambda: run_scan(
                data, symbols, date, until, fee_spot=fee_spot, fee_perp=fee_perp, threshold=threshold,
                stale_ms=stale_ms, by=by.value, sort=sort.value, refresh=refresh, workers=workers,
                scheduler=scheduler, on_done=bar.update, stop=stop.is_set))
        for note in result.notes if not quiet else ():
            err.print(f"[bold yellow]note:[/] {escape(note)}", soft_wrap=True)
        export_arrow(result.table, fmt, output, limit, out_console())
        return 0

    raise typer.Exit(run_async(main))


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="Where the recording goes: its own folder, so that simulated data "
                                       "never mixes with real recordings (NOVA_DATA is not used here).")]
    = Path("demo-data"),
    duration: Annotated[float, typer.Option(parser=POSITIVE_DURATION, metavar="DURATION",
                                            help="How long to record.")] = "20s",
    seed: Annotated[int, typer.Option(help="Seed of the simulated market.")] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live status.")] = False,
) -> None:
    """Start the built-in simulated Binance venue, record ETH/USDT from it, and say what to run next.

    Everything runs on 127.0.0.1: no exchange access is needed. The recording goes to ./demo-data (not the
    default data root, where real recordings belong); the commands printed at the end look there.
    """
    from nova.venue import SyntheticSource, Venue

    async def main(stop: asyncio.Event) -> int:
        async with Venue(SyntheticSource([Symbol("ETH", "USDT")], seed=seed)) as server:
            err.print(f"Simulated Binance venue at {server.url}; recording ETH/USDT spot and perp for "
                      f"{shown(duration)} s.")
            config = _record_config([Symbol("ETH", "USDT")], data, server.url, False, fee_spot=10.0, fee_perp=5.0)
            code = await _record(config, stop, duration, quiet)
        day = time.strftime("%Y-%m-%d", time.gmtime())
        where = str(data) if " " not in str(data) else f'"{data}"'
        err.print(f"Done: the recording is under {data}/, partition date={day}. Next:", soft_wrap=True)
        for line in (f"nova ls --data {where}", f"nova replay --data {where}",
                     f'nova sql --data {where} "SELECT market, count(*) AS rows FROM book GROUP BY market"',
                     f"nova check --data {where}"):
            err.print(f"  {line}", soft_wrap=True, markup=False)
        return code

    raise typer.Exit(run_async(main))


def _guard(action: Callable[[], Any]) -> Any:
    """Run a synchronous command body, turning NovaError into one sentence and exit code 2."""
    try:
        return action()
    except NovaError as exc:
        raise fail(str(exc)) from None


@app.command()
def sql(
    query: Annotated[str | None, typer.Argument(help="The SQL to run (read-only), e.g. \"SELECT count(*) FROM book\".")]
    = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the SQL from this file instead.")] = None,
    data: Annotated[str, typer.Option(envvar="NOVA_DATA", metavar="DATA",
                                      help="The recording to query. " + DATA_HELP)] = "data",
    format: Annotated[SqlFormat | None, typer.Option(
        "--format", case_sensitive=False,
        help="table, csv, json (JSON lines) or parquet. Default: what the extension of --output says "
        "(.txt, .csv, .json/.jsonl/.ndjson, .parquet), else table.")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Write the result to this file instead of stdout (needed for parquet); it appears only once complete.")]
    = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown by the table format; the caption counts them all.")]
    = 50,
) -> None:
    """Query the recording with DuckDB: a view per table (book, bbo, trades, ..., spread) and macros.

    Views carry the partition columns exchange, market, symbol, date; timestamps are TIMESTAMPTZ in microseconds.

    Macros: top_of_book(mkt, sym, t0, t1, step), book_at(mkt, sym, t, n), basis(sym, t0, t1, step) (README).

    The session is read-only. Example: nova sql "SELECT market, count(*) FROM book GROUP BY market".
    """
    import os

    from nova.analysis.output import check_output, choose_format, export

    if (query is None) == (file is None):
        raise fail("give the SQL either as an argument or with --file, not both and not neither")
    if output is not None:
        _guard(lambda: check_output(output, data))
    fmt = _guard(lambda: choose_format(format.value if format is not None else None, output))
    rows = limit
    if fmt == "parquet" and output is None:
        raise fail("--format parquet needs --output FILE.parquet")
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = "does not exist" if isinstance(exc, FileNotFoundError) else \
                f"cannot be read as UTF-8 text ({getattr(exc, 'strerror', None) or exc})"
            raise fail(f"the SQL file {file} {reason}") from None
    else:
        text = str(query)
    try:
        wrote = _guard(lambda: export(data, text, fmt, output, rows, out_console()))
    except BrokenPipeError:  # the reader (head, less) has what it wanted; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    if not wrote:
        err.print("done (the statement returned no rows)")


@app.command()
def check(
    data: Annotated[str, typer.Option(envvar="NOVA_DATA", metavar="DATA",
                                      help="The recording to check. " + DATA_HELP)] = "data",
    date: Annotated[str | None, typer.Option(parser=DATE, metavar="YYYY-MM-DD",
                                             help="Only this day (YYYY-MM-DD).")] = None,
    symbol: Annotated[Symbol | None, typer.Option(parser=SYMBOL, metavar="SYMBOL",
                                                  help="Only this symbol (ETH/USDT, ETHUSDT, ETH-USDT).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON lines.")] = False,
) -> None:
    """Verify a recording per table, market, symbol and day: files read, no crash leftovers, every break
    of the update-id chain explained by the ledger, no crossed book while valid, one source per day. Each row
    says how much of the day was watched (the market's book valid, from the ledger). Exits 1 when something
    is wrong. Works on a read-only copy.

    Examples: `nova check`, `nova check --date 2026-11-24 --symbol ETHUSDT --json`.
    """
    import json

    from rich.table import Table

    from nova.analysis.check import check as run_check

    day, dashed = date, _dashed(symbol)
    reports = _guard(lambda: run_check(data, day, dashed))
    if json_out:
        for r in reports:
            print(json.dumps(r.as_dict()))
    else:
        view = Table(title=f"nova check {data}")
        for col in ("table", "market", "symbol", "date", "files", "rows", "messages", "watched", "breaks",
                    "explained", "crossed", "verdict"):
            view.add_column(col, justify="left" if col in ("table", "market", "symbol", "date", "verdict")
                            else "right")
        for r in reports:
            view.add_row(r.table, r.market, r.symbol, r.date, str(r.files), f"{r.rows:,}", f"{r.messages:,}",
                         _hms(r.watched_s), str(r.breaks), str(r.explained), str(r.crossed),
                         "[green]ok[/]" if r.ok else "[bold red]PROBLEM[/]")
        out_console().print(view)
        for r in reports:
            for problem in r.problems:
                err.print(f"[red]{r.table} {r.market} {r.symbol} {r.date}:[/] {problem}", soft_wrap=True)
    raise typer.Exit(0 if all(r.ok for r in reports) else 1)


@app.command()
def compact(
    data: Annotated[str, typer.Option(envvar="NOVA_DATA", metavar="DATA",
                                      help="The recording to compact. " + DATA_HELP)] = "data",
    date: Annotated[str | None, typer.Option(parser=DATE, metavar="YYYY-MM-DD",
                                             help="Only this finished day (YYYY-MM-DD); default: all of them.")]
    = None,
    zstd_level: Annotated[int | None, typer.Option(min=1, max=22,
                                                   help="zstd level of the merged files (default 9; 19 makes "
                                                   "the book ~4% smaller for ~20x the CPU: BENCHMARKS.md).")]
    = None,
) -> None:
    """Merge the rotated files of each finished day into one file per partition, atomically.

    Readers see either the old files or the merged one, never both; an interrupted run leaves the dataset
    consistent. Today's partitions (UTC) are left alone.
    """
    from rich.table import Table

    from nova.analysis.compact import compact as run_compact

    day = date
    today = time.strftime("%Y-%m-%d", time.gmtime())
    results = _guard(lambda: run_compact(data, day, today, zstd_level))
    if not any(r.files_before > r.files_after for r in results):
        skipped = [r for r in results if r.skipped and r.skipped != "already one file"]
        err.print(f"nothing to compact in {data}" + (f" for {day}" if day else "") + ": "
                  + ("every finished day is already one file per partition" if results and not skipped else
                     "no finished day (before today, UTC) is recorded" if not results else
                     f"{len(skipped)} partition(s) skipped ({skipped[0].skipped})"), soft_wrap=True)
        if not skipped:
            raise typer.Exit(0)
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


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _ns_text(ns: int | None) -> str:
    import datetime as dt

    if ns is None:
        return "-"
    return dt.datetime.fromtimestamp(ns // 10**9, dt.UTC).strftime("%H:%M:%S")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@app.command(name="ls")
def ls_command(
    data: Annotated[str, typer.Option(envvar="NOVA_DATA", metavar="DATA",
                                      help="The data root to list. " + DATA_HELP)] = "data",
    date: Annotated[str | None, typer.Option(parser=DATE, metavar="YYYY-MM-DD",
                                             help="Only this day (YYYY-MM-DD).")] = None,
    symbol: Annotated[Symbol | None, typer.Option(parser=SYMBOL, metavar="SYMBOL",
                                                  help="Only this symbol (ETH/USDT, ETHUSDT, ETH-USDT).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line, with every table's "
                                                          "files, rows, bytes and times.")] = False,
) -> None:
    """What a data root holds, per exchange, market, symbol and day.

    Shows the tables, rows, bytes, first and last receive time, the watched time (how long the market's book
    was valid, from the ledger: a day can span 24 h and hold an hour-long hole between two runs), ledgered
    gaps, and where the data came from (sources, recorder ids). A day recorded from more than one source is
    flagged: it is not one market. Reads footers and the ledger only; works on a read-only copy.

    Examples: `nova ls`, `nova ls --data /srv/nova --date 2026-11-24 --symbol ETHUSDT`, `nova ls --json`.
    """
    import json

    from rich.table import Table

    from nova.analysis.ls import listing
    from nova.core.dataset import Dataset

    day, dashed = date, _dashed(symbol)
    days = _guard(lambda: listing(Dataset(data), day, dashed))
    if json_out:
        for d in days:
            print(json.dumps(d.as_dict()))
        raise typer.Exit(0)
    view = Table(title=f"nova ls {data}")
    for col in ("exchange", "market", "symbol", "date", "tables", "rows", "bytes", "first", "last", "watched",
                "gaps", "sources", "recorders"):
        view.add_column(col, justify="right" if col in ("rows", "bytes", "watched", "gaps") else "left")
    for d in days:
        sources = "\n".join(d.sources) or "-"
        if d.mixed_sources:
            sources = f"[bold red]MIXED:[/] {sources}"
        view.add_row(d.exchange, d.market, d.symbol, d.date, " ".join(d.tables), f"{d.rows:,}", _size(d.bytes),
                     _ns_text(d.first_ns), _ns_text(d.last_ns), _hms(d.watched_s), str(d.gaps), sources,
                     ", ".join(d.recorders) or "-")
    out_console().print(view)
    for d in days:
        if d.mixed_sources:
            err.print(f"[yellow]warning:[/] {d.market} {d.symbol} {d.date} mixes recordings from "
                      f"{len(d.sources)} sources: it is not one market (nova check flags it)", soft_wrap=True)
        for t, facts in d.tables.items():
            for path in facts.unreadable:
                err.print(f"[red]{t} {d.market} {d.symbol} {d.date}:[/] {path} does not read (nova check "
                          "tells more)", soft_wrap=True)


@app.command()
def recover(
    data: Annotated[str, typer.Option(envvar="NOVA_DATA", metavar="DATA",
                                      help="The data root a recorder crashed on. " + DATA_HELP)] = "data",
) -> None:
    """Finish what a killed recorder left, without starting a recorder.

    Turns its hidden journals into their Parquet files, deletes half-written temporaries, and ledgers the
    `stop` each killed run lacks (at its last recorded row), so the ledger says when the market stopped being
    watched. The next `nova record` on the directory does the same; this is for archives that will not be
    recorded into again. Streams a live recorder is recording are skipped (it recovers them itself).

    Example: `nova recover --data /srv/nova`.
    """
    from recorder.recovery import recover_root

    done = _guard(lambda: recover_root(str(data)))
    for line in done:
        if line.startswith("skipped "):  # a stream a live recorder claims
            err.print(f"[yellow]skipped:[/] {line.removeprefix('skipped ')}", soft_wrap=True)
        else:
            err.print(f"[green]recovered:[/] {line}", soft_wrap=True)
    if not done:
        err.print(f"nothing to recover in {data}: no journals, temporaries or unfinished runs")


@app.command(name="merge")
def merge_command(
    sources: Annotated[list[str], typer.Argument(metavar="SRC...", help="The recordings to merge (data roots of "
                                                 "recorders of the same venue and symbols). " + DATA_HELP)],
    into: Annotated[str, typer.Option("--into", metavar="DST", help="Where the merged recording goes (a new "
                                      "root, or one an earlier merge wrote). " + DATA_HELP)],
    date: Annotated[str | None, typer.Option(parser=DATE, metavar="YYYY-MM-DD", help="Only write this day.")]
    = None,
    symbol: Annotated[Symbol | None, typer.Option(parser=SYMBOL, metavar="SYMBOL",
                                                  help="Only this symbol (ETH/USDT, ETHUSDT, ETH-USDT).")] = None,
    prefer: Annotated[str | None, typer.Option(metavar="SRC", help="Where two sources hold the same message "
                                               "with different content, this one wins (default: refuse).")]
    = None,
) -> None:
    """Merge redundant recordings of the same streams into one, by exchange ids: a break remains only where
    every source missed the same messages.

    Books by U/u (stale recomputed on the merged chain, one snapshot per covered stretch), bbo by update id,
    trades by trade id, funding, liquidations and open interest by event time; one ledger saying which source
    covered which interval. Idempotent; the output is a plain recording (replay, sql, check work on it).

    Examples: `nova merge /srv/a /srv/b --into /srv/merged`, `nova merge a b --into m --date 2026-11-24
    --symbol ETHUSDT --prefer a`.
    """
    from nova.analysis.merge import merge

    results = _guard(lambda: merge(sources, into, date, _dashed(symbol), prefer))
    written = [r for r in results if r.written]
    for r in results:
        what = "written" if r.written else "unchanged"
        brought = ", ".join(f"{n:,} from {src}" for src, n in r.rows_in.items())
        err.print(f"{r.table} {r.market} {r.symbol} {r.date}: {r.rows:,} rows {what}"
                  + (f" ({brought})" if brought else ""), soft_wrap=True, markup=False)
    err.print(f"merged {len(sources)} recording(s) into {into}: {len(written)} partition(s) written, "
              f"{len(results) - len(written)} unchanged", soft_wrap=True, markup=False)


# ---- nova export: derived tables for models ---------------------------------------------------------------------

export_app = typer.Typer(name="export", cls=OneLineErrors, no_args_is_help=True,
                         context_settings={"help_option_names": ["-h", "--help"]},
                         help="Derive tables for models from a recording (written into the dataset).")
app.add_typer(export_app)
EXPORT_OPTIONS = {"levels": "--levels", "every": "--every", "markets": "--market"}
"""replay.snapshots' parameters, by the ``nova export snapshots`` option that fills them."""


def _every(text: str) -> str:
    """A grid interval as typed: checked to be a positive duration here, resolved by replay.snapshots (which
    also holds it to whole milliseconds that divide a day, and names it as typed)."""
    _positive_duration(text)
    return text


EVERY = _parser(_every)


@export_app.command(name="snapshots")
def export_snapshots_command(
    symbol: Annotated[Symbol | None, typer.Option(parser=SYMBOL, metavar="SYMBOL",
                                                  help="Recorded symbol, like ETH/USDT (the default).")] = None,
    date: Annotated[str | None, typer.Option(parser=DATE, metavar="YYYY-MM-DD",
                                             help="UTC date to export; default: the last recorded date of the "
                                             "symbol.")] = None,
    until: Annotated[str | None, typer.Option(parser=DATE, metavar="YYYY-MM-DD",
                                              help="Last date (inclusive) of a range of dates starting at "
                                              "--date.")] = None,
    levels: Annotated[int, typer.Option(min=1, max=1000, help="Levels a side in each snapshot.")] = 25,
    every: Annotated[str, typer.Option(parser=EVERY, metavar="DURATION",
                                       help="The grid's interval from midnight UTC: 100ms, 250ms, 1s, 1m (whole "
                                       "milliseconds that divide a day).")] = "100ms",
    market: Annotated[MarketChoice, typer.Option(case_sensitive=False,
                                                 help="Which market's book; both: each its own partition.")]
    = MarketChoice.both,
    data: Annotated[str, typer.Option(envvar="NOVA_DATA", metavar="DATA",
                                      help="Data root holding the recording, where the snapshots go too. "
                                      + DATA_HELP)] = "data",
    skip_bad: Annotated[bool, typer.Option(help="Export without files that cannot be read (the summary names "
                                           "them) instead of stopping.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
) -> None:
    """Write the top --levels of each book every --every as the dataset's table snapshots.

    One row per instant of the grid (aligned to midnight UTC): ts, the receive time (ts_recv) and last_id of the
    last book message in effect, valid and reason (the validity rule: not valid before the first snapshot, or
    after a gap, disconnect or the end of a run until the next snapshot), shape, then bid0_price, bid0_amount,
    ask0_price, ask0_amount, ... (null beyond the book's depth and where not valid). An instant sees every
    message received by then, as book_at in nova sql. Each market and date is its own partition
    (DATA/snapshots/exchange=binance/market=.../symbol=.../date=.../snapshot_25_100ms.parquet); exporting the
    same shape again replaces it, other shapes stay.

    Examples: `nova export snapshots --symbol ETH/USDT --date 2026-11-24`, `nova export snapshots --date
    2026-11-24 --until 2026-11-30 --levels 5 --every 1s --market perp`.
    """
    from replay.console import ProgressBar
    from replay.kernel import kernels_cached
    from replay.snapshots import SnapshotExport

    markets = None if market is MarketChoice.both else market.value
    name = symbol.unified if symbol is not None else "ETH/USDT"
    job = _library(EXPORT_OPTIONS, lambda: SnapshotExport(str(data), name, date, until, levels=levels,
                                                          every=every, markets=markets, skip_bad=skip_bad))
    for note in job.notes:
        err.print(f"[bold yellow]note:[/] {note}", soft_wrap=True)
    if not kernels_cached():
        err.print("Compiling the replay loop for this machine (first run only: about 10 to 40 s; it is cached "
                  "for the next runs) ...", soft_wrap=True)

    async def main(stop: asyncio.Event) -> int:
        with ProgressBar(err, f"export {job.symbol} {job.shape}", enabled=not quiet and err.is_terminal) as bar:
            summary = await asyncio.to_thread(job.run, bar.update, stop.is_set)
        if not quiet:
            out = out_console(highlight=False)
            out.print(f"{summary.symbol} {summary.shape}: {summary.rows:,} rows ({summary.valid_rows:,} valid) in "
                      f"{len(summary.files)} files, {summary.book_rows:,} book rows replayed in "
                      f"{summary.wall_s:.1f} s", soft_wrap=True, markup=False)
            for f in summary.files:
                out.print(f"  {f.market} {f.date}: {f.rows:,} rows, {f.valid_rows:,} valid  {f.path}",
                          soft_wrap=True, markup=False)
            for note in summary.notes[len(job.notes):]:
                err.print(f"[bold yellow]note:[/] {note}", soft_wrap=True)
        return 0

    raise typer.Exit(run_async(main))


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
