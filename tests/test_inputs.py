"""Input checks live in the library, types in the CLI, and faults in one registry.

- ``RecorderConfig``, ``SpreadParams`` and ``Replay`` refuse every bad parameter with a ``NovaError`` (``BadValue``)
  naming it as a Python caller wrote it;
- ``nova`` prints the very same sentence after the option it came from (``error: --flush: flush_s must ...``):
  one line on stderr, no traceback, a non-zero exit, nothing written under ``--data``;
- typer's option types accept every documented spelling (``--speed max``, ``--spot-depth 1000ms``, ``--markets
  SPOT``: choices, durations, ``max`` and symbols are case-insensitive) and refuse the rest in one line;
- every fault of ``nova.venue.faults.FAULTS`` is reachable from the control API and from a ``--fault`` spec,
  and both arm the venue the same way.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import typer

from nova import cli
from nova.core.errors import NovaError
from nova.core.markets import Symbol
from nova.core.spread import SpreadParams
from nova.core.units import BadValue, check_speed
from nova.venue import malformed as bad
from nova.venue.faults import FAULTS, KIND_OF, KINDS, FaultSpec, apply_fault, unknown_fault
from recorder.recorder import RecorderConfig
from replay import Replay
from tests.helpers import ENV, ETH, NOVA

# ---- the library's checks: (keyword arguments, the parameter named, the CLI arguments giving the same value) ---------

RECORD_CASES: list[tuple[dict[str, Any], str, list[str] | None]] = [
    ({"flush_s": 0}, "flush_s", ["--flush", "0"]),
    ({"flush_s": math.inf}, "flush_s", None),
    ({"rotate_s": 0.5}, "rotate_s", ["--rotate", "500ms"]),
    ({"stall_s": 0.0}, "stall_s", ["--stall", "0s"]),
    ({"oi_every_s": 0.0}, "oi_every_s", ["--oi-every", "0"]),
    ({"instruments_every_s": math.nan}, "instruments_every_s", None),
    ({"depth_ms": {"spot": 10, "perp": 0}}, "depth_ms['spot']", ["--spot-depth", "10ms"]),
    ({"depth_ms": {"spot": 100, "perp": 1000}}, "depth_ms['perp']", ["--perp-depth", "1s"]),
    ({"depth_ms": {"spot": 100}}, "depth_ms", None),
    ({"tables": ("book", "quotes")}, "tables", ["--tables", "book,quotes"]),
    ({"tables": ("book", "book")}, "tables", ["--tables", "book,book"]),
    ({"tables": ()}, "tables", ["--tables", ","]),
    ({"markets": ()}, "markets", None),
    ({"markets": ("spot", "spot")}, "markets", None),
    ({"markets": ("spot", "futures")}, "markets", None),
    ({"markets": "spot"}, "markets", None),
    ({"symbols": []}, "symbols", None),
    ({"symbols": ["ETH/USDT"]}, "symbols", None),
    ({"symbols": [ETH, ETH]}, "symbols", None),
    ({"endpoint": "ftp://example.com"}, "endpoint", ["--venue", "ftp://example.com"]),
    ({"endpoint": ""}, "endpoint", ["--venue", ""]),
    ({"recorder_id": "  "}, "recorder_id", ["--recorder-id", "  "]),
    ({"snapshot_limit": {"spot": 0, "perp": 1000}}, "snapshot_limit['spot']", None),
    ({"connect_attempts": 0}, "connect_attempts", None),
    ({"connect_attempts": 1.5}, "connect_attempts", None),
    ({"backoff_base_s": -1.0}, "backoff_base_s", None),
    ({"backoff_cap_s": 0.1}, "backoff_cap_s", None),
    ({"spread": {"fee_spot_bps": 1}}, "spread", None),
]
SPREAD_CASES: list[tuple[dict[str, Any], str, list[str] | None]] = [
    ({"fee_spot_bps": -1.0}, "fee_spot_bps", ["--fee-spot", "-1"]),
    ({"fee_perp_bps": math.nan}, "fee_perp_bps", ["--fee-perp", "nan"]),
    ({"fee_perp_bps": math.inf}, "fee_perp_bps", ["--fee-perp", "inf"]),
    ({"size": -0.5}, "size", None),
    ({"stale_ms": -1.0}, "stale_ms", None),
    ({"threshold_bps": math.inf}, "threshold_bps", None),
    ({"fee_spot_bps": "10"}, "fee_spot_bps", None),
]
REPLAY_CASES: list[tuple[dict[str, Any], str, list[str] | None]] = [
    ({"fee_spot": -1.0}, "fee_spot", ["--fee-spot", "-1"]),
    ({"fee_perp": math.inf}, "fee_perp", ["--fee-perp", "inf"]),
    ({"size": -2.0}, "size", ["--size", "-2"]),
    ({"threshold": math.nan}, "threshold", ["--threshold", "nan"]),
    ({"stale_ms": -5.0}, "stale_ms", ["--stale-ms", "-5"]),
    ({"clock": "wall"}, "clock", None),
]


def record_refusal(kwargs: dict[str, Any]) -> BadValue:
    kwargs = {"symbols": [ETH], **kwargs}
    with pytest.raises(BadValue) as caught:
        RecorderConfig(**kwargs)
    return caught.value


def spread_refusal(kwargs: dict[str, Any]) -> BadValue:
    with pytest.raises(BadValue) as caught:
        SpreadParams(**kwargs)
    return caught.value


def replay_refusal(kwargs: dict[str, Any], data: Path) -> BadValue:
    with pytest.raises(BadValue) as caught:
        Replay(str(data), **kwargs)  # refused before the data is looked at
    return caught.value


def speed_refusal(speed: Any) -> BadValue:
    with pytest.raises(BadValue) as caught:
        check_speed(speed)
    return caught.value


def _says(exc: BadValue, parameter: str) -> None:
    assert isinstance(exc, NovaError) and isinstance(exc, ValueError)
    assert exc.parameter == parameter
    sentence = str(exc)
    assert sentence.startswith(f"{parameter} must ") and ", not " in sentence and "\n" not in sentence


@pytest.mark.parametrize(("kwargs", "parameter"), [(k, p) for k, p, _ in RECORD_CASES],
                         ids=[p for _, p, _ in RECORD_CASES])
def test_recorder_config_names_the_bad_parameter(kwargs: dict[str, Any], parameter: str) -> None:
    _says(record_refusal(kwargs), parameter)


@pytest.mark.parametrize(("kwargs", "parameter"), [(k, p) for k, p, _ in SPREAD_CASES],
                         ids=[p for _, p, _ in SPREAD_CASES])
def test_spread_params_name_the_bad_parameter(kwargs: dict[str, Any], parameter: str) -> None:
    _says(spread_refusal(kwargs), parameter)


@pytest.mark.parametrize(("kwargs", "parameter"), [(k, p) for k, p, _ in REPLAY_CASES],
                         ids=[p for _, p, _ in REPLAY_CASES])
def test_replay_names_the_bad_parameter_as_its_caller_wrote_it(kwargs: dict[str, Any], parameter: str,
                                                               tmp_path: Path) -> None:
    _says(replay_refusal(kwargs, tmp_path / "nothing-here"), parameter)
    assert not (tmp_path / "nothing-here").exists()


@pytest.mark.parametrize("speed", [0, -3, math.inf, math.nan, "fast"])
def test_speed_is_positive_or_none(speed: Any) -> None:
    _says(speed_refusal(speed), "speed")
    assert check_speed(None) is None and check_speed(0.5) == 0.5


def test_good_configurations_pass_and_are_normalised() -> None:
    config = RecorderConfig(symbols=[ETH], markets=["perp"], tables=["book", "funding"], endpoint="http://h:1/x/",
                            depth_ms={"perp": 500}, snapshot_limit={"perp": 5}, recorder_id=" lab-1 ")
    assert (config.markets, config.tables, config.endpoint, config.recorder_id) == (
        ("perp",), ("book", "funding"), "http://h:1/x", "lab-1")
    assert RecorderConfig(symbols=[ETH], endpoint="testnet", rotate_s=1).endpoint == "testnet"
    assert SpreadParams(threshold_bps=-20.0).threshold_bps == -20.0  # accepting a loss is a choice


# ---- the CLI says the same sentence ----------------------------------------------------------------------------------

def _cli_cases() -> list[tuple[str, list[str], str]]:
    """(label, nova arguments but --data, the library's sentence) for every case with a CLI twin."""
    cases = []
    for kwargs, parameter, args in RECORD_CASES:
        if args is not None:
            cases.append((f"record {parameter} {args[-1]!r}", ["record", "ETH/USDT", *args],
                          f"{cli.RECORD_OPTIONS[parameter]}: {record_refusal(kwargs)}"))
    for kwargs, parameter, args in SPREAD_CASES:
        if args is not None:
            cases.append((f"record {parameter} {args[-1]}", ["record", "ETH/USDT", *args],
                          f"{cli.RECORD_OPTIONS[parameter]}: {spread_refusal(kwargs)}"))
    for kwargs, parameter, args in REPLAY_CASES:
        if args is not None:
            replay = replay_refusal(kwargs, Path("/nonexistent/nova"))
            cases.append((f"replay {parameter} {args[-1]}", ["replay", *args],
                          f"{cli.REPLAY_OPTIONS[parameter]}: {replay}"))
    for speed in ("0", "-3", "inf"):
        refusal = speed_refusal(float(speed))
        cases.append((f"replay speed {speed}", ["replay", "--speed", speed], f"--speed: {refusal}"))
    return cases


CLI_CASES = _cli_cases()


def run_all(argvs: list[list[str]], width: int = 8) -> list[subprocess.CompletedProcess]:
    """Run ``nova`` with each argument list, ``width`` at a time (each one imports ccxt or numba once)."""
    done: list[subprocess.CompletedProcess] = []
    for i in range(0, len(argvs), width):
        procs = [(argv, subprocess.Popen([*NOVA, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, env=ENV)) for argv in argvs[i:i + width]]
        for argv, proc in procs:
            out, err = proc.communicate(timeout=120)
            done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return done


def one_line(done: subprocess.CompletedProcess) -> str:
    """The refusal a user sees: exactly one line on stderr, starting with ``error:``, and a non-zero exit."""
    assert done.returncode not in (0, None), (done.args, done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and not done.stdout.strip(), done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, subprocess.CompletedProcess]]]:
    base = tmp_path_factory.mktemp("inputs")
    datas = {label: base / f"data-{i}" for i, (label, _, _) in enumerate(CLI_CASES)}
    done = run_all([[*args, "--data", str(datas[label])] for label, args, _ in CLI_CASES])
    yield {label: (datas[label], proc) for (label, _, _), proc in zip(CLI_CASES, done, strict=True)}


@pytest.mark.slow  # the fixture runs every case as a nova subprocess (~20 s)
@pytest.mark.parametrize(("label", "sentence"), [(label, sentence) for label, _, sentence in CLI_CASES],
                         ids=[label for label, _, _ in CLI_CASES])
def test_the_cli_says_the_library_sentence(cli_runs: dict, label: str, sentence: str) -> None:
    data, done = cli_runs[label]
    assert one_line(done) == f"error: {sentence}"
    assert done.returncode == 2
    assert not data.exists(), "nothing is written under --data"


def test_typed_options_refuse_in_one_line(tmp_path: Path) -> None:
    capture = tmp_path / "capture.gz"
    capture.write_text("")
    cases = {
        ("record", "ETH/USDT", "--markets", "spt"): "error: --markets: 'spt' is not one of 'both', 'spot', 'perp'.",
        ("record", "ETH USDT"): "error: SYMBOL: 'ETH USDT' is not a symbol",
        ("record", "ETH/USDT", "--flush", "soon"): "error: --flush: 'soon' is not a duration",
        ("record", "ETH/USDT", "--spot-depth", "0.5ms"): "error: --spot-depth: '0.5ms' is not a whole number of milli",
        ("record", "ETH/USDT", "--fee-spot", "cheap"): "error: --fee-spot: 'cheap' is not a number",
        ("record",): "error: give at least one symbol to record",
        ("record", "ETH/USDT", "--bogus"): "error: No such option: --bogus",
        ("replay", "--clock", "exchange"): "error: --clock: 'exchange' is not one of 'recv', 'event'.",
        ("replay", "--speed", "fast"): "error: --speed: 'fast' is not a speed",
        ("replay", "--date", "2026-02-30"): "error: --date: '2026-02-30' is not a date",
        ("replay", "--symbol", "ETH USDT"): "error: --symbol: 'ETH USDT' is not a symbol",
        ("sql", "--limit", "0", "SELECT 1"): "error: --limit: 0 is out of range; use 1 or more",
        ("sql", "--limit", "x", "SELECT 1"): "error: --limit: 'x' is not a whole number",
        ("sql", "--format", "xml", "SELECT 1"): "error: --format: 'xml' is not one of",
        ("compact", "--zstd-level", "0"): "error: --zstd-level: 0 is out of range; use 1 to 22",
        ("ls", "--date", "yesterday"): "error: --date: 'yesterday' is not a date",
        ("venue", "--port", "-1"): "error: --port: -1 is out of range; use 0 to 65535",
        ("venue", "--capture-spot", f"{capture},{tmp_path / 'gone.gz'}"): "error: --capture-spot: capture file",
        ("venue", "--capture-spot", str(capture), "--speed", "0"): "error: --speed: speed must be a positive number",
        ("venue", "--fault", "gap=1:spot@1s"): "error: --fault: 'gap=1:spot@1s': gap takes no argument",
        ("venue", "--fault", "stall=x:spot@1s"): "error: --fault: 'stall=x:spot@1s': the argument of stall must be",
        ("venue", "--spot-ping", "often"): "error: --spot-ping: 'often' is not a duration",
        ("recrd",): "error: No such command 'recrd'.",
    }
    data = tmp_path / "data"
    argvs = [[*args, "--data", str(data)] if args[0] not in ("venue", "recrd") else list(args) for args in cases]
    for (args, start), done in zip(cases.items(), run_all(argvs), strict=True):
        assert one_line(done).startswith(start), (args, done.stderr)
        assert done.returncode == 2, args
    assert not data.exists()


# ---- typed options accept every documented spelling ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("15m", 900.0), ("1h30m", 5400.0), ("500ms", 0.5),
                                               ("2d", 172800.0), ("45", 45.0), ("1H30M", 5400.0), (" 8h ", 28800.0)])
def test_durations(text: str, seconds: float) -> None:
    assert cli.DURATION(text) == seconds
    assert cli.POSITIVE_DURATION(text) == seconds


@pytest.mark.parametrize(("text", "speed"), [("1", 1.0), ("10", 10.0), ("0.5", 0.5), ("max", None), ("MAX", None),
                                             (" max ", None), ("2.5", 2.5)])
def test_speeds(text: str, speed: float | None) -> None:
    assert cli.SPEED(text) == speed


@pytest.mark.parametrize(("text", "ms"), [("100ms", 100), ("1000ms", 1000), ("1s", 1000), ("0ms", 0), ("0", 0),
                                          ("250", 250), ("500MS", 500)])
def test_depth_speeds(text: str, ms: int) -> None:
    assert cli.DEPTH_MS(text) == ms


@pytest.mark.parametrize("text", ["ETH/USDT", "eth/usdt", "ETHUSDT", "ETH-USDT", "eth_usdt", "ETH/USDT:USDT"])
def test_symbol_spellings(text: str) -> None:
    assert cli.SYMBOL(text) == ETH
    assert cli.SYMBOLS(f"{text},BTC/USDT,{text}") == (ETH, Symbol("BTC", "USDT"))


def test_dates_and_lists() -> None:
    assert cli.DATE(" 2026-11-24 ") == "2026-11-24"
    assert cli.NAMES("book, bbo,,trades") == ("book", "bbo", "trades")
    for parser, text in ((cli.DATE, "2026-02-30"), (cli.DATE, "24.11.2026"), (cli.SPEED, "fast"),
                         (cli.SPEED, "0"), (cli.DURATION, "-1s"), (cli.POSITIVE_DURATION, "0"),
                         (cli.DEPTH_MS, "fast"), (cli.SYMBOL, "ETH USDT")):
        with pytest.raises(typer.BadParameter):
            parser(text)


def test_the_cli_choices_are_the_librarys() -> None:
    from nova.analysis.output import FORMATS
    from replay.timespan import CLOCKS

    assert tuple(c.value for c in cli.Clock) == CLOCKS
    assert tuple(f.value for f in cli.SqlFormat) == FORMATS
    assert {m.value: m.markets for m in cli.MarketChoice} == {"both": ("spot", "perp"), "spot": ("spot",),
                                                              "perp": ("perp",)}
    options = {**cli.RECORD_OPTIONS, **cli.REPLAY_OPTIONS}
    assert {p for _, p, args in RECORD_CASES + SPREAD_CASES + REPLAY_CASES if args} <= set(options)


@pytest.mark.slow  # a nova subprocess per spelling (~5 s)
def test_typed_options_accept_documented_spellings(tmp_path: Path) -> None:
    """Each run gets past every option (case-insensitive choices included) and stops only where it must."""
    empty = tmp_path / "empty"
    empty.mkdir()
    data = str(tmp_path / "never")
    argvs = {  # the arguments -> what stops the run, after every option was accepted
        ("record", "ETH/USDT,btc-usdt", "ETHUSDT", "--markets", "SPOT", "--spot-depth", "1000ms", "--perp-depth",
         "0", "--flush", "500ms", "--rotate", "1h", "--stall", "1m30s", "--oi-every", "5s", "--fee-spot", "0",
         "--recorder-id", " ", "--data", data): "error: --recorder-id: recorder_id must",
        ("record", "ETH/USDT", "--markets", "Perp", "--perp-depth", "250", "--duration", "1h30m", "--recorder-id",
         "", "--data", data): "error: --recorder-id: recorder_id must",
        ("replay", "--speed", "max", "--clock", "EVENT", "--date", "2026-11-24", "--until", "2026-11-25",
         "--symbol", "eth_usdt", "--fee-spot", "0", "--data", str(empty)): "error: nothing is recorded under",
        ("replay", "--speed", "0.5", "--data", str(empty)): "error: nothing is recorded under",
        ("replay", "--speed", "10", "--clock", "recv", "--data", str(empty)): "error: nothing is recorded under",
        ("sql", "--format", "JSON", "--limit", "1", "--data", str(empty), "SELECT 42"): f"error: {empty} holds no",
        ("ls", "--date", "2026-11-24", "--symbol", "eth-usdt", "--data", str(empty)):
            "error: nothing is recorded in " + f"{empty} for date 2026-11-24 and symbol ETH-USDT",
    }
    for (args, start), done in zip(argvs.items(), run_all([list(a) for a in argvs]), strict=True):
        assert one_line(done).startswith(start), (args, done.stderr)
    assert not (tmp_path / "never").exists()


# ---- one fault registry ----------------------------------------------------------------------------------------------

CONTROL_TWINS: dict[str, dict[str, str]] = {  # each command-line kind, fired on perp, and the control request twin
    "gap": {"fault": "drop", "symbol": "ETHUSDT"},
    "close": {"fault": "close"},
    "abort": {"fault": "close", "abort": "1"},
    "stall": {"fault": "stall", "seconds": "5"},
    "snapshot-delay": {"fault": "snapshot", "delay": "3"},
    "snapshot-fail": {"fault": "snapshot", "fail": "1"},
    "shutdown": {"fault": "shutdown"},
    "malformed": {"fault": "malformed", "kind": next(iter(bad.KINDS))},  # a bare malformed starts the cycle
    "oi-fail": {"fault": "openinterest", "fail": "1"},
    "oi-delay": {"fault": "openinterest", "delay": "3"},
    "oi-malformed": {"fault": "openinterest", "malformed": next(iter(bad.OPEN_INTEREST_KINDS))},
}


def test_the_registry_is_the_one_list() -> None:
    assert set(CONTROL_TWINS) == set(KIND_OF) == set(KINDS), "a new kind needs a control twin in this test"
    assert {twin["fault"] for twin in CONTROL_TWINS.values()} == set(FAULTS), "every fault has a command-line kind"
    for fault in FAULTS.values():
        assert fault.kinds and all(KIND_OF[k.name][0] is fault for k in fault.kinds)
    assert all(f"{name}" in unknown_fault("x") for name in FAULTS)


def armed(venue: Any) -> dict[str, Any]:
    """What the venue holds ready to go wrong, and how many clients it still has."""
    return {"drop": sorted(venue._drop_next), "malformed": {k: list(v) for k, v in venue._malformed.items() if v},
            "stalled": {m: s["stalled"] for m, s in venue.status()["markets"].items()},
            "snapshot": (dict(venue._snapshot_delay), dict(venue._snapshot_fail)),
            "open_interest": (list(venue._oi_delay), list(venue._oi_fail), list(venue._oi_malformed)),
            "connections": len(venue.connections)}


async def _connected(venue: Any, http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(venue.url.replace("http", "ws") + "/fstream/public/ws/ethusdt@depth@100ms")
    for _ in range(100):
        if venue.connections:
            break
        await asyncio.sleep(0.01)
    return ws


async def _settled(venue: Any, closing: bool) -> dict[str, Any]:
    """The armed state, once the connections are closed (after a shutdown's grace) if the fault closes them."""
    for _ in range(100 if closing else 0):
        if not venue.connections:
            break
        await asyncio.sleep(0.02)
    return armed(venue)


@pytest.mark.parametrize("kind", list(KIND_OF))
async def test_every_kind_is_reachable_from_both_and_arms_the_same(make_venue: Any, kind: str) -> None:
    by_spec, by_api = await make_venue(shutdown_grace_s=0.05), await make_venue(shutdown_grace_s=0.05)
    twin = dict(CONTROL_TWINS[kind])
    name = twin.pop("fault")
    spec = FaultSpec.parse(f"{kind}:perp@every1s")
    assert spec.fault is FAULTS[name]
    async with aiohttp.ClientSession() as http:
        clients = [await _connected(by_spec, http), await _connected(by_api, http)]
        await apply_fault(by_spec, spec)
        async with http.post(f"{by_api.url}/_venue/fault/{name}", params={"market": "perp", **twin}) as r:
            assert r.status == 200, await r.text()
            assert await r.json()
        closing = name in ("close", "shutdown")
        assert await _settled(by_spec, closing) == await _settled(by_api, closing)
        for ws in clients:
            await ws.close()


async def test_control_api_refusals_keep_their_replies(make_venue: Any) -> None:
    venue = await make_venue()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{venue.url}/_venue/fault/bogus") as r:
            assert r.status == 404
            assert (await r.json())["error"] == unknown_fault("bogus")
        for name, query, says in (("stall", {}, "market must be spot or perp"),
                                  ("stall", {"market": "spot", "seconds": "x"}, "seconds must be a number"),
                                  ("snapshot", {"market": "spot", "fail": "1.5"}, "fail must be a whole number"),
                                  ("openinterest", {"market": "spot", "fail": "1"}, "openInterest is a USDT-M")):
            async with http.post(f"{venue.url}/_venue/fault/{name}", params=query) as r:
                assert r.status == 400 and says in (await r.json())["error"], (name, query)
    assert armed(venue)["snapshot"] == ({"spot": [], "perp": []}, {"spot": [], "perp": []}), "nothing was armed"
