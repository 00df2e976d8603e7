"""`nova replay` as a user runs it (a subprocess): the output it writes, and one sentence for every bad input.

Runs side by side (each `nova` process pays the import of numba and pyarrow once) on the crafted dataset
across UTC midnight from tests/test_replay_oracle.py.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import AFTER, BEFORE, ENV, NOVA, assert_one_sentence, spawn, stop, write_midnight_dataset

SPREAD = Path("spread/exchange=binance/market=spot-perp/symbol=ETH-USDT")


def comparable(table: pa.Table) -> list[dict]:
    """Rows with NaN as None, so that two reads of the same readings compare equal."""
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
            for row in table.to_pylist()]


def replay_args(data: Path, *extra: str) -> list[str]:
    return [*NOVA, "replay", "--data", str(data), *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, subprocess.Popen]]]:
    base = tmp_path_factory.mktemp("replay-cli")
    good = base / "good"
    write_midnight_dataset(good)
    written = base / "written"  # the runs that succeed write into copies; bad input must leave ``good`` alone
    shutil.copytree(good, written)
    written_sorted = base / "written-sorted"
    shutil.copytree(good, written_sorted)
    corrupt, corrupt_skipped = base / "corrupt", base / "corrupt-skipped"
    shutil.copytree(good, corrupt)
    victim = sorted((corrupt / "book").rglob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # a torn file: no footer
    shutil.copytree(corrupt, corrupt_skipped)
    empty = base / "empty"
    empty.mkdir()
    cases: dict[str, tuple[Path, list[str]]] = {
        "range": (written, ["--date", BEFORE, "--until", AFTER, "--size", "2"]),
        "sorted book": (written_sorted, ["--date", BEFORE, "--until", AFTER, "--size", "2", "--book", "sorted"]),
        "window to a file": (good, ["--date", BEFORE, "--start", "23:59:50", "--end", "23:59:55", "--speed", "20",
                                    "--out", str(base / "window.parquet")]),
        "skip bad": (corrupt_skipped, ["--date", BEFORE, "--until", AFTER, "--skip-bad"]),
        "no data that day": (good, ["--date", "2026-11-20"]),
        "unknown symbol": (good, ["--symbol", "BTC/USDT"]),
        "nothing recorded": (empty, ["--date", BEFORE]),
        "end before start": (good, ["--date", BEFORE, "--start", "10:00", "--end", "09:30"]),
        "until before date": (good, ["--date", AFTER, "--until", BEFORE]),
        "not a date": (good, ["--date", "2026-13-01"]),
        "corrupt file": (corrupt, ["--date", BEFORE]),
        "speed word": (good, ["--date", BEFORE, "--speed", "fast"]),
        "speed zero": (good, ["--date", BEFORE, "--speed", "0"]),
        "speed negative": (good, ["--date", BEFORE, "--speed", "-3"]),
        "clock": (good, ["--date", BEFORE, "--clock", "exchange"]),
    }
    procs = {label: (data, spawn(replay_args(data, *extra))) for label, (data, extra) in cases.items()}
    try:
        for _, proc in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        yield procs
    finally:
        for _, proc in procs.values():
            stop(proc)


def finished(runs: dict, label: str) -> tuple[Path, int, str, str]:
    data, proc = runs[label]
    out, err = proc.communicate(timeout=60)
    return data, proc.returncode, out, err


def test_replay_writes_the_spread_table_of_every_date_and_a_summary(runs: dict) -> None:
    data, code, out, err = finished(runs, "range")
    assert code == 0, err
    for label in ("time span", "events", "readings", "gaps crossed", "invalid time", "basis", "best open",
                  "opportunities", "achieved speed", "events/s"):
        assert label in out, label
    files = sorted((data / SPREAD).rglob("*.parquet"))
    assert [f.parent.name for f in files] == [f"date={BEFORE}", f"date={AFTER}"]
    assert all(f.name == "replay.parquet" for f in files)
    table = pq.read_table(files[0])
    assert "open_bps_size" in table.column_names and table.num_rows > 100  # --size 2 adds the size columns


def test_replaying_again_replaces_the_earlier_output(runs: dict) -> None:
    data, code, _, err = finished(runs, "range")
    assert code == 0, err
    before = {p: pq.read_table(p) for p in sorted((data / SPREAD).rglob("*.parquet"))}
    again = subprocess.run(replay_args(data, "--date", BEFORE, "--until", AFTER, "--size", "2", "-q"),
                           capture_output=True, text=True, env=ENV, timeout=120)
    assert again.returncode == 0 and not again.stdout.strip(), again.stderr
    after = sorted((data / SPREAD).rglob("*.parquet"))
    assert after == list(before)  # still one file per date, none added
    for path in after:
        assert comparable(pq.read_table(path)) == comparable(before[path])
    assert not [p for p in (data / SPREAD).rglob("*") if p.name.startswith(".")], "no temporary file is left"


def test_both_books_write_the_same_spread_tables(runs: dict) -> None:
    auto, code, out, err = finished(runs, "range")
    assert code == 0, err
    # the midnight dataset records no instruments: auto says it keeps the sorted book, for each market
    assert "sorted book instead of the price-indexed one" in " ".join(out.split())
    chosen, code, _, err = finished(runs, "sorted book")
    assert code == 0, err
    files = sorted(p.relative_to(auto) for p in (auto / SPREAD).rglob("*.parquet"))
    assert files and files == sorted(p.relative_to(chosen) for p in (chosen / SPREAD).rglob("*.parquet"))
    for path in files:
        assert comparable(pq.read_table(auto / path)) == comparable(pq.read_table(chosen / path))


def test_a_window_goes_to_one_file(runs: dict) -> None:
    data, code, out, err = finished(runs, "window to a file")
    assert code == 0, err
    path = data.parent / "window.parquet"
    table = pq.read_table(path)
    ts = table.column("ts").cast("int64").to_pylist()
    assert table.num_rows > 50 and max(ts) - min(ts) <= 5 * 10**9
    assert "pacing lateness" in out and "window.parquet" in out


def test_skip_bad_replays_without_the_unreadable_file_and_says_so(runs: dict) -> None:
    _, code, out, err = finished(runs, "skip bad")
    assert code == 0, err
    assert "skipped files" in out and ".parquet" in out.split("skipped files", 1)[1]


@pytest.mark.parametrize(("label", "says"), [
    ("no data that day", ["2026-11-20", f"{BEFORE}, {AFTER}"]),
    ("unknown symbol", ["BTC/USDT", "recorded symbols: ETH/USDT"]),
    ("nothing recorded", ["nothing is recorded"]),
    ("end before start", ["--end", "--start"]),
    ("until before date", ["--until", BEFORE]),
    ("not a date", ["--date", "2026-13-01"]),
    ("corrupt file", ["cannot read", ".parquet", "--skip-bad"]),
    ("speed word", ["--speed", "fast"]),
    ("speed zero", ["--speed", "not 0"]),
    ("speed negative", ["--speed", "-3"]),
    ("clock", ["--clock", "exchange"]),
])
def test_bad_input_gets_one_sentence_and_writes_nothing(runs: dict, label: str, says: list[str]) -> None:
    data, code, out, err = finished(runs, label)
    assert code not in (None, 0), (label, code)
    sentence = assert_one_sentence(err)
    for word in says:
        assert word in sentence, (label, word, sentence)
    assert not out.strip(), out
    assert not (data / "spread").exists()


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"date": BEFORE, "start": "25:99"}, "--start 25:99"),
    ({"date": BEFORE, "end": "2026-11-27T00:00"}, "outside"),
    ({"date": BEFORE, "fee_spot": math.nan}, "fee_spot must"),  # named as the caller wrote it
    ({"date": BEFORE, "clock": "wall"}, "clock must be recv"),
    ({"symbol": "not a symbol"}, "not a symbol"),
])
def test_the_python_api_refuses_bad_input_with_the_same_sentences(runs: dict, kwargs: dict, says: str) -> None:
    from nova.core.errors import NovaError
    from replay import Replay

    data, _ = runs["no data that day"]  # the untouched dataset
    with pytest.raises(NovaError, match=re.escape(says)):
        Replay(str(data), **kwargs)
    with pytest.raises(NovaError, match="speed"):
        next(Replay(str(data), date=BEFORE).readings(speed=0))
