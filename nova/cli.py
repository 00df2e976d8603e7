"""The ``nova`` command line: a thin typer layer over the library; every command has a Python twin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
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
    fault: Annotated[list[str] | None, typer.Option(
        help="Inject a fault, KIND[=ARG]:MARKET@WHEN, e.g. gap:spot@every20s, close:perp@30s, abort:all@1m, "
        "stall=5:spot@every1m, snapshot-delay=3:perp@every1m, snapshot-fail=2:spot@45s, shutdown:all@2m. "
        "Repeatable.")] = None,
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
            source: Any = CaptureSource(spot_files, perp_files, speed=_speed(speed), autostart=autostart)
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


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
