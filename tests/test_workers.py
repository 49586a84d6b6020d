"""Several processes on one machine sharing a journal-file study (one per GPU, say): together
they run exactly the trials asked for, the constant baseline once, and a trial whose process died
runs again."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import optuna
import pytest

from lrfind import tune_loop
from lrfind.study import storage as _storage
from lrfind.study import trials as _study
from lrfind.study import workers as _workers
from lrfind.study.loop_trial import Unstudied

TRIALS = 10


def _worker(out: str, barrier, ran_file: str, flock: bool = True) -> None:
    """One worker: the same tune_loop call as every other, its own runs written down (without
    ``flock``, locked as on a system that has none: Windows)."""
    if not flock:
        _storage.fcntl = None
    ran = []

    def train(trial):
        again = isinstance(trial._trial, Unstudied)                         # a run with a new seed
        ran.append([trial.number, again])
        time.sleep(1.5 if again else 0.2)        # long enough for the workers to overlap (they look every second)
        for epoch in range(trial.epochs):
            trial.report(0.5 + 0.01 * trial.number + 0.01 * epoch)
        return trial.scores[-1]

    barrier.wait()
    result = tune_loop(train, base_lr=0.1, epochs=2, steps_per_epoch=8, metric="accuracy", trials=TRIALS,
                       final_seeds=1, same_seed=False, out=out, progress=False)
    with open(ran_file, "w") as f:
        json.dump({"ran": ran, "final": result.final}, f)


@pytest.mark.parametrize("flock", [True, False], ids=["flock", "no-flock"])
def test_workers_on_one_journal_share_the_trials_without_overshooting(tmp_path, flock) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_worker, args=(str(tmp_path), barrier, str(tmp_path / f"ran{w}.json"), flock))
               for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    reports = [json.loads((tmp_path / f"ran{w}.json").read_text()) for w in range(2)]
    ran = [r["ran"] for r in reports]
    study = optuna.load_study(study_name="lrfind-loop-train", storage=_storage.connect(str(tmp_path / "study.log"),
                                                                                       create=False))
    finished = _study.finished(study)
    searched = [[n for n, again in r if not again] for r in ran]
    assert len(finished) == TRIALS and sorted(searched[0] + searched[1]) == sorted(t.number for t in finished)
    assert searched[0] and searched[1] and not set(searched[0]) & set(searched[1])   # both worked, never together
    assert sorted(_study.baseline_scale(t) for t in study.trials if t.user_attrs.get("baseline")) == [0.5, 1.0]
    # each worker's sampler draws for its own trial numbers: no configuration is run twice
    configs = [json.dumps(t.params, sort_keys=True) for t in finished if any(isinstance(v, float) for v in t.params.values())]
    assert len(set(configs)) == len(configs), configs
    # the best and the constant with a new seed: run by one worker, its results reported by both
    again = [n for r in ran for n, repeat in r if repeat]
    final = reports[0]["final"]
    assert len(again) == (1 if final["best"]["trial"] == final["constant"]["trial"] else 2)
    assert reports[1]["final"] == final


@pytest.mark.filterwarnings("ignore:train returned a score without calling trial.report")
def test_a_trial_whose_process_died_runs_again_and_a_live_ones_is_left_alone(tmp_path) -> None:
    tune_loop(lambda trial: 0.5, base_lr=0.1, epochs=1, steps_per_epoch=8, metric="accuracy", trials=1,
              final_seeds=0, out=str(tmp_path), progress=False)
    study = optuna.load_study(study_name="lrfind-loop-<lambda>", storage=_storage.connect(str(tmp_path / "study.log"),
                                                                                          create=False))
    import socket

    dead, alive = study.ask(), study.ask()
    dead.set_user_attr("worker", f"{socket.gethostname()}:{2 ** 22 + 7}")     # above any pid Linux hands out
    alive.set_user_attr("worker", f"{socket.gethostname()}:{os.getppid()}")   # a process that runs
    with _workers.claim(study):
        _workers.prepare(study, single=False)
    states = {t.number: t.state for t in study.trials}
    assert states[dead.number] == optuna.trial.TrialState.FAIL
    assert states[alive.number] == optuna.trial.TrialState.RUNNING
    assert study.trials[dead.number].user_attrs["interrupted"] == "stale"
    assert any(t.state == optuna.trial.TrialState.WAITING for t in study.trials)     # its copy, queued again
