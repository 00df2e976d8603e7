"""`nova record --config FILE`: a fleet's settings in TOML, every flag available there, the command line over it.

The recording runs against a `nova venue` subprocess, as a user runs it; a bad file is refused with one sentence
naming the file, the line and the key, before anything is recorded.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from tests.helpers import nova, one_sentence, venue_process


@pytest.fixture(scope="module")
def venue_url() -> Iterator[str]:
    with venue_process() as url:
        yield url


def _tables(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir() and any(p.rglob("*.parquet"))} if root.exists() else set()


def _spot_diff_spacing_ms(root: Path) -> float:
    """The shortest time between two spot diff-depth messages (exchange time): the depth speed subscribed."""
    table = pads.dataset(str(root / "book" / "exchange=binance" / "market=spot"), format="parquet",
                         partitioning="hive").to_table(filter=~pads.field("snapshot"))
    events = sorted(set(table.column("ts_event").cast("int64").to_pylist()))
    assert len(events) >= 2, events
    return min(b - a for a, b in itertools.pairwise(events)) / 1e6


def test_the_file_sets_the_options_and_the_command_line_wins(venue_url: str, tmp_path: Path) -> None:
    config = tmp_path / "recorder.toml"
    config.write_text(f'''# one box of the fleet
symbols = ["ETH/USDT"]
venue = "{venue_url}"
data = "{tmp_path / 'from-file'}"
tables = ["book", "bbo"]
spot-depth = "1000ms"
flush = 1
quiet = true
duration = "20s"
''')
    proc = nova("record", "--config", str(config), "--data", str(tmp_path / "from-flag"), "--duration", "4s")
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "from-file").exists()  # --data on the command line won
    root = tmp_path / "from-flag"
    assert _tables(root) == {"book", "bbo", "events", "instruments"}  # tables from the file
    assert _spot_diff_spacing_ms(root) >= 900  # spot-depth 1000ms from the file (the default is 100ms)
    assert proc.stdout == ""  # quiet from the file: no status, no summary


def test_symbols_all_is_the_all_switch(tmp_path: Path) -> None:
    config = tmp_path / "all.toml"
    config.write_text('symbols = "all"\nquote = "USDT"\nworkers = 2\n')
    # --all with symbols on the command line is refused as always: proof that the file set --all
    assert "not both" in one_sentence(nova("record", "ETH/USDT", "--config", str(config)))


@pytest.mark.parametrize(("content", "says"), [
    ('symbls = ["ETH/USDT"]\n', "line 1: unknown key 'symbls'; did you mean 'symbols'?"),
    ('symbols = ["ETH/USDT"]\nflush = "1x"\n', "line 2: 'flush': '1x' is not a duration"),
    ('symbols = ["ETH/USDT"]\n\nworkers = 0\n', "line 3: 'workers': 0 is out of range; use 1 to 64"),
    ('symbols = ["ETH/USDT"]\nquiet = "yes"\n', "line 2: 'quiet' is a switch; write true or false"),
    ('symbols = ["ETH/USDT!"]\n', "line 1: 'symbols': 'ETH/USDT!' is not a symbol"),
    ('symbols = ["ETH/USDT"]\nmarkets = "spt"\n', "line 2: 'markets': "),
    ('symbols = ["ETH/USDT"\n', "is not valid TOML"),
    ('[spot]\ndepth = "100ms"\n', "line 1: unknown key 'spot'"),
    ('config = "other.toml"\n', "unknown key 'config'"),
])
def test_a_bad_file_is_one_sentence_naming_file_line_and_key(tmp_path: Path, content: str, says: str) -> None:
    config = tmp_path / "recorder.toml"
    config.write_text(content)
    line = one_sentence(nova("record", "--config", str(config), "--data", str(tmp_path / "data")))
    assert str(config) in line and says in line, line
    assert not (tmp_path / "data").exists()


def test_a_missing_file_is_one_sentence(tmp_path: Path) -> None:
    line = one_sentence(nova("record", "--config", str(tmp_path / "nope.toml")))
    assert "nope.toml does not exist" in line
