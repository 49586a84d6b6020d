"""A study's journal file that something else damaged: refused with the line's number and nothing
written, mended by ``lrfind repair`` with every intact record kept and a copy of the file as it was,
and a resumed study that ends with exactly the trials asked for."""

from __future__ import annotations

import json

import optuna
import pytest
from click.testing import CliRunner

from lrfind import tune_loop
from lrfind.study.storage import StudyError, connect
from lrfind.cli import main

NAME = "lrfind-loop-train"


def train(trial) -> float:
    for epoch in range(trial.epochs):
        trial.report(0.5 + 0.01 * (trial.number % 7) + 0.01 * epoch)
    return trial.scores[-1]


def study(out, trials: int, **fields) -> None:
    tune_loop(train, base_lr=0.1, epochs=1, steps_per_epoch=8, metric="accuracy", trials=trials, final_seeds=0,
              out=str(out), progress=False, **fields)


def load(out) -> optuna.Study:
    return optuna.load_study(study_name=NAME, storage=connect(str(out / "study.log"), create=False))


def finished(out) -> list[optuna.trial.FrozenTrial]:
    return [t for t in load(out).trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_a_damaged_line_is_refused_with_its_number_and_nothing_is_written(tmp_path) -> None:
    study(tmp_path, trials=3)
    journal = tmp_path / "study.log"
    lines = len(journal.read_bytes().splitlines())
    damaged = journal.read_bytes() + b"this is not a journal line\n"      # a stray line, newline and all
    journal.write_bytes(damaged)
    with pytest.raises(StudyError, match=rf"line {lines + 1} of {lines + 1} is not an Optuna journal record "
                                         rf".*lrfind repair {tmp_path}"):
        study(tmp_path, trials=4)
    assert journal.read_bytes() == damaged                       # not one byte appended after it
    result = CliRunner().invoke(main, ["show", str(tmp_path)])
    assert result.exit_code == 1 and f"line {lines + 1} of" in result.output and "Traceback" not in result.output
    assert journal.read_bytes() == damaged


def test_repair_keeps_every_record_drops_a_stray_line_and_the_study_resumes(tmp_path) -> None:
    study(tmp_path, trials=3)
    journal = tmp_path / "study.log"
    whole = journal.read_bytes()
    lines = whole.splitlines(keepends=True)
    damaged = b"".join(lines[:5]) + b"\x00\x00 garbage from a disk\n" + b"".join(lines[5:])
    journal.write_bytes(damaged)
    result = CliRunner().invoke(main, ["repair", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "removed 1 line(s) that were not records (line 6): nothing lost" in result.output
    assert f"kept {len(lines)} records" in result.output and "3 finished trials kept" in result.output
    assert journal.read_bytes() == whole
    backups = list(tmp_path.glob("study.log.damaged-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == damaged
    study(tmp_path, trials=5)                                     # resumes: two more, none lost
    assert len(finished(tmp_path)) == 5


def test_damaged_trial_records_are_lost_alone_and_an_unfinished_trial_runs_again(tmp_path) -> None:
    study(tmp_path, trials=4)
    journal = tmp_path / "study.log"
    before = {t.number: t.params for t in load(tmp_path).trials}
    lines = journal.read_bytes().splitlines(keepends=True)
    records = [json.loads(line) for line in lines]
    created = [i for i, r in enumerate(records) if r["op_code"] == 4][1]        # trial 1's creation record
    ended = next(i for i, r in enumerate(records)                               # trial 2's "complete" record
                 if r["op_code"] == 6 and r.get("trial_id") == 2 and r.get("state") == 1)
    for i in (created, ended):                                                  # each half overwritten
        lines[i] = lines[i][: len(lines[i]) // 2] + b"\n"
    journal.write_bytes(b"".join(lines))
    with pytest.raises(StudyError, match=f"line {created + 1} of .* \\(and 1 more: line {ended + 1}\\)"):
        study(tmp_path, trials=4)
    result = CliRunner().invoke(main, ["repair", "--storage", str(journal)])
    assert result.exit_code == 0, result.output
    assert f"dropped 2 damaged record(s) (line {created + 1}, {ended + 1}): lost" in result.output
    assert "3 finished trials kept; 1 left unfinished, which run again when the study resumes" in result.output
    # trial 1 lost its creation record only: a stand-in keeps it, and every later trial, under its own number
    assert {t.number: t.params for t in load(tmp_path).trials} == before
    study(tmp_path, trials=4)                                     # trial 2 runs again; 4 finished in all
    trials = load(tmp_path).trials
    assert len(finished(tmp_path)) == 4 and trials[2].state == optuna.trial.TrialState.FAIL
    assert [t.params for t in trials if t.user_attrs.get("retry_of") == 2] == [before[2]]


def test_a_journal_cut_short_keeps_a_copy_and_says_what_was_dropped(tmp_path, caplog) -> None:
    study(tmp_path, trials=2)
    journal = tmp_path / "study.log"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code":5,"worker_id":"x","trial_id":1,"par')
    with caplog.at_level("WARNING", logger="lrfind"):
        study(tmp_path, trials=3)
    assert "last line was cut short (46 bytes" in caplog.text and "dropped that one record" in caplog.text
    copies = list(tmp_path.glob("study.log.cut-*"))
    assert len(copies) == 1 and copies[0].read_bytes().endswith(b'"par') and copies[0].name in caplog.text
    assert len(finished(tmp_path)) == 3


def test_an_empty_journal_is_said_before_a_new_study_starts_in_it(tmp_path, caplog) -> None:
    (tmp_path / "study.log").write_bytes(b"")
    with caplog.at_level("WARNING", logger="lrfind"):
        study(tmp_path, trials=2)
    assert "is empty (0 bytes): it holds no trials to resume" in caplog.text
    result = CliRunner().invoke(main, ["show", "--storage", str(tmp_path / "other.log")])
    (tmp_path / "empty.log").write_bytes(b"")
    result = CliRunner().invoke(main, ["show", "--storage", str(tmp_path / "empty.log")])
    assert result.exit_code == 1 and "the file is empty" in result.output


def test_repair_of_an_intact_journal_changes_nothing(tmp_path) -> None:
    study(tmp_path, trials=2)
    whole = (tmp_path / "study.log").read_bytes()
    result = CliRunner().invoke(main, ["repair", "--out", str(tmp_path)])
    assert result.exit_code == 0 and "nothing to repair" in result.output
    assert (tmp_path / "study.log").read_bytes() == whole and not list(tmp_path.glob("study.log.*-*"))
    result = CliRunner().invoke(main, ["repair", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "no study in" in result.output
