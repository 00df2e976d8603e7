"""The crash matrix (bench/crash_matrix.py) in a short version: SIGKILL the recorder at random moments
(many of them while a file is being finished) and the compactor mid-merge; the dataset must survive."""

from __future__ import annotations

from pathlib import Path

from bench.crash_matrix import FLUSH_S, SLACK_S, run_matrix


def test_recorder_and_compactor_survive_sigkill(tmp_path: Path) -> None:
    report = run_matrix(tmp_path, kills=4, compaction_kills=3, seed=7)
    assert report.recorder_kills == 4
    assert report.unreadable == [], "every visible file reads after every kill"
    assert report.over_budget == [], f"a kill lost more than {FLUSH_S + SLACK_S} s: {report.over_budget}"
    assert report.duplicate_msgs == 0 and report.duplicate_bbo == 0, "a restart never duplicates rows"
    assert report.check_ok and report.check_breaks >= 4, report.notes  # each crash leaves an explained break
    assert report.compaction_consistent, report.notes
