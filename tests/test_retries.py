"""A trial cut short runs again as the same run (its own seed), the rerun says so, and a
configuration that keeps killing its run is given up after a few tries on every storage."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time

import optuna
import pytest

from lrfind import tune_loop
from lrfind.study.storage import connect

NAME = "lrfind-loop-train"
FIELDS = dict(base_lr=0.1, epochs=1, steps_per_epoch=8, metric="accuracy", final_seeds=0, progress=False,
              same_seed=False, seed=10)


def drawn(trials) -> list[str]:
    """The configurations with a number drawn at random (a float: a repeat is no choice of the
    sampler's), each as one string. A schedule without one, the plain constant say, may be chosen again."""
    return [json.dumps(t.params, sort_keys=True) for t in trials
            if any(isinstance(v, float) for v in t.params.values())]


def load(out) -> optuna.Study:
    return optuna.load_study(study_name=NAME, storage=connect(str(out / "study.log"), create=False))


def train(trial):
    """Records each trial's number and seed in $RAN; with $HANG, hangs in trial 2 (until killed)."""
    with open(os.environ["RAN"], "a") as f:
        f.write(json.dumps([trial.number, trial.seed]) + "\n")
    if trial.number == 2 and os.environ.get("HANG"):
        time.sleep(600)
    trial.report(0.5 + 0.01 * trial.number)
    return trial.scores[-1]


def _hanging_worker(out: str, ran: str) -> None:
    os.environ.update(RAN=ran, HANG="1")
    tune_loop(train, trials=4, out=out, **FIELDS)


def test_a_trial_whose_worker_was_killed_runs_again_with_its_own_seed_and_the_rerun_says_so(
        tmp_path, caplog, monkeypatch) -> None:
    ran = tmp_path / "ran.jsonl"
    worker = multiprocessing.get_context("spawn").Process(target=_hanging_worker, args=(str(tmp_path), str(ran)))
    worker.start()
    for _ in range(1200):                                  # until trial 2 has started
        assert worker.is_alive(), "the worker stopped before trial 2"
        if ran.is_file() and any(json.loads(line)[0] == 2 for line in ran.read_text().splitlines()):
            break
        time.sleep(0.1)
    os.kill(worker.pid, signal.SIGKILL)
    worker.join()
    killed_seed = dict(json.loads(line) for line in ran.read_text().splitlines())[2]
    monkeypatch.setenv("RAN", str(ran))
    with caplog.at_level("WARNING", logger="lrfind"):
        tune_loop(train, trials=4, out=str(tmp_path), **FIELDS)
    assert "1 interrupted trial (2) runs again from the start, with its seed" in caplog.text
    study = load(tmp_path)
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 2)
    assert study.trials[2].state == optuna.trial.TrialState.FAIL and retry.params == study.trials[2].params
    seeds = dict(json.loads(line) for line in ran.read_text().splitlines())
    assert seeds[retry.number] == killed_seed == FIELDS["seed"] + 2        # the same run, not another seed


def test_a_configuration_that_keeps_failing_is_given_up_after_three_retries(tmp_path, caplog) -> None:
    doomed, tries = [], []

    def train(trial):
        config = (trial.schedule, repr(sorted(trial.params.items())))
        if trial.number == 1 or config in doomed:       # trial 1's configuration fails however often it runs
            doomed.append(config)
            tries.append(trial.number)
            raise MemoryError("this configuration does not fit")
        trial.report(0.5)
        return 0.5

    for _ in range(4):                      # the first run and three retries, each cut short by the error
        with pytest.raises(MemoryError):
            tune_loop(train, trials=3, out=str(tmp_path), **FIELDS)
    with caplog.at_level("WARNING", logger="lrfind"):
        tune_loop(train, trials=3, out=str(tmp_path), **FIELDS)     # trial 1 is not run again: the study ends
    assert len(tries) == 4 and "trial 1 (" in caplog.text and "was cut short 4 times; it is not run again" in caplog.text
    study = load(tmp_path)
    assert study.user_attrs["given_up"] == [1]
    from lrfind.study import report

    assert "given up: trial 1 (" in report.verdict(study) and "cut short 4 times each" in report.verdict(study)
    assert json.loads((tmp_path / "best.json").read_text())["given_up"] == [1]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 3


def test_a_study_resumed_in_a_new_run_does_not_draw_its_first_trials_again(tmp_path) -> None:
    def train(trial):
        trial.report(0.5)
        return 0.5

    for _ in range(5):       # a run that stops after one trial (timeout), resumed: each draws at random (startup)
        tune_loop(train, trials=30, timeout=0.01, out=str(tmp_path), **FIELDS)
    configs = drawn(load(tmp_path).trials)
    assert len(load(tmp_path).trials) >= 5 and len(set(configs)) == len(configs), configs


def test_one_worker_draws_the_same_study_from_the_same_seed(tmp_path) -> None:
    def train(trial):
        trial.report(0.5 + 0.01 * len(trial.params))
        return trial.scores[-1]

    studies = []
    for run in ("a", "b"):
        tune_loop(train, trials=6, out=str(tmp_path / run), **FIELDS)
        studies.append([t.params for t in load(tmp_path / run).trials])
    assert studies[0] == studies[1]
