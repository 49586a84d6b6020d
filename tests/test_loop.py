"""tune_loop: the decay search over a training loop of the user's own."""

from __future__ import annotations

import inspect
import json
import types

import numpy as np
import optuna
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lrfind import get_schedule, load_best, tune_loop
from lrfind.study import storage as _storage
from lrfind.study import report
from lrfind.study.loop_trial import LoopTrial
from lrfind.study.result import TuneInterrupted

EPOCHS, PER_EPOCH = 2, 8
# many tests score a trial by a plain return; the one that checks its warning sees it through pytest.warns
pytestmark = pytest.mark.filterwarnings("ignore:train returned a score without calling trial.report")


def load(out, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_storage.connect(str(out / "study.log"), create=False))


def _blobs(n: int = 256, seed: int = 0) -> TensorDataset:
    """Two Gaussian blobs in 5 dimensions: a linear model learns them in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 5, generator=g) + 1.5 * (2 * y[:, None] - 1)
    return TensorDataset(x, y)


TRAIN, VAL = _blobs(256), _blobs(128, seed=1)


def _accuracy(model: torch.nn.Module) -> float:
    x, y = VAL.tensors
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train_blobs(trial: LoopTrial) -> float:
    """A plain loop: DataLoader, torch optimizer and scheduler, a report per epoch."""
    torch.manual_seed(trial.seed)
    model = torch.nn.Linear(5, 2)
    optimizer = trial.optimizer(model.parameters())
    scheduler = trial.scheduler(optimizer)
    loader = DataLoader(TRAIN, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(trial.seed))
    for _ in range(trial.epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
        x, y = VAL.tensors
        with torch.no_grad():
            val_loss = torch.nn.functional.cross_entropy(model(x), y).item()
        trial.report(_accuracy(model), loss=val_loss)
    return _accuracy(model)


def test_a_study_of_a_plain_loop_reports_resumes_and_loads(tmp_path) -> None:
    calls = []

    def train(trial):
        calls.append(trial.number)
        return train_blobs(trial)

    result = tune_loop(train, base_lr=0.1, epochs=EPOCHS, steps_per_epoch=PER_EPOCH, metric="accuracy", trials=5,
                       final_seeds=0, out=str(tmp_path), progress=False)
    study = result.study
    twins = {t.number: t.user_attrs["duplicate_of"] for t in study.trials if "duplicate_of" in t.user_attrs}
    assert len(calls) == 5 and study.study_name == "lrfind-loop-train"          # twins do not count
    assert calls == [t.number for t in study.trials if t.number not in twins]
    for n, twin in twins.items():            # same choices, same seed: the same run, scored without running
        assert study.trials[n].params == study.trials[twin].params and study.trials[n].value == study.trials[twin].value
        assert study.trials[n].intermediate_values == study.trials[twin].intermediate_values   # its curve too
    assert study.trials[0].params == {"schedule": "constant", "constant.use_warmup": False, "lr_scale": 1.0}  # the baseline
    data = json.loads((tmp_path / "best.json").read_text())
    assert data["trials"] == len(study.trials) and data["setup"]["loop"] and data["base_lr_source"] == "given"
    assert {p.name for p in result.files} >= {"best.json", "best_schedule.py", "history.png", "val_acc.png"}
    code = (tmp_path / "best_schedule.py").read_text()
    assert "for your training loop" in code and f"{EPOCHS * PER_EPOCH} steps in all, {PER_EPOCH} per epoch" in code
    best = load_best(tmp_path)
    assert best == result.best and best.epochs == EPOCHS and best.steps_per_epoch == PER_EPOCH
    assert best.params(epochs=EPOCHS, steps_per_epoch=PER_EPOCH) == data["params"]
    from click.testing import CliRunner

    from lrfind.cli import main

    shown = CliRunner().invoke(main, ["show", "--out", str(tmp_path), "--epochs", "6", "--steps-per-epoch", "8"])
    assert shown.exit_code == 0, shown.output
    assert f"{len(calls)} finished trials" in shown.output and (tmp_path / "best_schedule_6x8.py").is_file()
    if twins:
        assert f"; and {len(twins)} repeat" in shown.output

    before = len(study.trials)
    study.enqueue_trial(study.trials[0].params)              # as a sampler that picks the constant again
    again = tune_loop(train, base_lr=0.1, epochs=EPOCHS, steps_per_epoch=PER_EPOCH, metric="accuracy", trials=7,
                      final_seeds=0, out=str(tmp_path), progress=False)
    assert len(calls) == 7                                                   # only the missing runs ...
    assert again.study.trials[before].user_attrs["duplicate_of"] == 0        # ... and not the twin of trial 0
    assert "as trial 0 (not rerun)" in report.top_table(again.study)
    n = len(again.study.trials)
    assert len(tune_loop(train, base_lr=None, epochs=EPOCHS, steps_per_epoch=PER_EPOCH, metric="accuracy", trials=7,
                         final_seeds=0, out=str(tmp_path), progress=False).study.trials) == n   # at the stored base LR
    with pytest.raises(ValueError, match=r"runs at base LR 0.1, not --base-lr 0.2; leave --base-lr out \(in Python: "
                                         r"base_lr=None\)"):
        tune_loop(train, base_lr=0.2, epochs=EPOCHS, steps_per_epoch=PER_EPOCH, metric="accuracy", out=str(tmp_path))
    with pytest.raises(ValueError, match="is new and needs a base_lr"):
        tune_loop(train, base_lr=None, epochs=EPOCHS, steps_per_epoch=PER_EPOCH, metric="accuracy",
                  out=str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()                                   # nothing made
    with pytest.raises(ValueError, match=r"another setup \(epochs 2 there, 3 here"):
        tune_loop(train, base_lr=0.1, epochs=3, steps_per_epoch=PER_EPOCH, metric="accuracy", out=str(tmp_path))


def test_best_and_constant_run_again_with_new_seeds_for_the_verdict(tmp_path) -> None:
    calls = []

    def train(trial):
        calls.append((trial.number, trial.seed))
        score = (0.80 if trial.schedule == "constant" else 0.85) + 0.01 * trial.seed
        trial.report(score)
        return score

    kw = dict(base_lr=0.1, epochs=1, steps_per_epoch=10, metric="accuracy", trials=3, schedules=("cosine",),
              pruner="none", out=str(tmp_path), progress=False)
    result = tune_loop(train, **kw)
    best = result.study.best_trial
    assert best.user_attrs["schedule"] == "cosine"
    searched = [c for c in calls if c[1] == 0]
    assert calls[len(searched):] == [(best.number, 1), (best.number, 2), (best.number, 3), (0, 1), (0, 2), (0, 3)]
    final = json.loads((tmp_path / "best.json").read_text())["final"]
    assert final == result.final and final["setup"] == {"kind": "seeds", "seeds": 3, "metric": "accuracy"}
    assert final["best"]["score_per_seed"] == pytest.approx([0.86, 0.87, 0.88])
    assert final["constant"]["score"] == pytest.approx(0.82)
    text = report.verdict(result.study)
    assert ("validation accuracy over 3 new seeds (mean): 87.00% vs constant 82.00% (+5.00 pp; per seed +5.00, "
            "+5.00, +5.00)") in text
    assert ("verdict: decay helps: +5.00 pp ± 0.00 validation accuracy over the best constant LR (0.1), the mean ± "
            "standard error of 3 paired seeds (a clear gain: more than twice its standard error)") in text
    gain = json.loads((tmp_path / "best.json").read_text())["final"]["gain"]
    assert gain["difference"] == pytest.approx(0.05) and gain["se"] == pytest.approx(0) and gain["pairs"] == 3
    assert gain["verdict"] == "decay helps" and gain["diverged"] == {"best": [], "constant": []}
    assert text in result.summary() and "   0  constant" in result.summary()
    assert result.best.test_acc is None                    # no test set was seen
    n = len(calls)
    tune_loop(train, **kw)                                 # resumed, same best: nothing runs again
    assert len(calls) == n
    stale = dict(result.study.user_attrs["final"], best={**final["best"], "trial": 99})
    result.study.set_user_attr("final", stale)             # as if a later search without new seeds found another
    assert (f"new seeds: not run for trial {best.number} (they ran for trial 99, the best before it); call tune_loop "
            "again with final_seeds=3") in report.verdict(result.study)

    def lucky(trial):                                      # the schedule led at the search's seed only
        return (0.85 if trial.seed == 0 else 0.70) if trial.schedule != "constant" else 0.80

    text = report.verdict(tune_loop(lucky, **{**kw, "out": str(tmp_path / "lucky")}).study)
    assert "validation accuracy over 3 new seeds (mean): 70.00% vs constant 80.00% (-10.00 pp" in text
    assert "verdict: the constant LR did better: -10.00 pp ± 0.00 validation accuracy" in text


@pytest.mark.parametrize("name", ["onecycle", "cosine_restarts", "plateau"])
def test_the_trial_s_scheduler_follows_its_schedule_step_by_step(tmp_path, name: str) -> None:
    seen: dict[int, tuple[LoopTrial, list[float]]] = {}

    def train(trial):
        model = torch.nn.Linear(1, 1)
        optimizer = trial.optimizer(model.parameters())
        scheduler = trial.scheduler(optimizer)
        plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)   # torch's own class
        assert plateau == (trial.schedule == "plateau")
        lrs = []
        for epoch in range(trial.epochs):
            for _ in range(trial.steps_per_epoch):
                lrs.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                scheduler.step()
            trial.report(0.5 + 0.01 * epoch, loss=1.0)        # a loss that never improves: plateau cuts
        seen[trial.number] = (trial, lrs)
        return 0.5

    tune_loop(train, base_lr=0.1, epochs=4, steps_per_epoch=5, metric="accuracy", trials=3, schedules=(name,),
              pruner="none", final_seeds=0, out=str(tmp_path), progress=False)
    for trial, lrs in seen.values():
        total = trial.total_steps
        metrics = [1.0] * trial.epochs if get_schedule(trial.schedule).needs_metric else None
        want = trial.lr * get_schedule(trial.schedule).factor(np.arange(total), total, metrics=metrics, **trial.params)
        np.testing.assert_allclose(lrs, want, rtol=1e-6, err_msg=repr(trial))
    assert any(t.schedule == name for t, _ in seen.values())
    assert {t.seed for t, _ in seen.values()} == {0}                  # common random numbers by default


def test_the_pruner_stops_trials_that_report_badly_and_a_nan_fails_one(tmp_path) -> None:
    ended = []

    def train(trial):
        assert trial.seed == trial.number                                 # same_seed=False: seed + number
        for epoch in range(trial.epochs):
            score = 0.9 if trial.number < 5 else float("nan") if trial.number == 6 else 0.1
            trial.report(score)
        ended.append(trial.number)
        return 0.9

    # schedules whose LR has no decay still to come, which the median rule judges at any report
    result = tune_loop(train, base_lr=0.1, epochs=3, steps_per_epoch=4, metric="accuracy", trials=8,
                       schedules=("warmup",), same_seed=False, final_seeds=0, out=str(tmp_path), progress=False)
    states = {t.number: t.state for t in result.study.trials}
    assert ended == [0, 1, 2, 3, 4]
    assert states[5] == states[7] == optuna.trial.TrialState.PRUNED
    assert states[6] == optuna.trial.TrialState.FAIL and result.study.trials[6].user_attrs["failure"] == "nan"
    assert len(result.study.trials) == 8                      # a diverged trial counts as finished
    from lrfind.study.report import _status
    assert _status(result.study.trials[6]) == "failed: NaN after epoch 1"    # the loop knows the epoch, not the step


def test_a_trial_whose_decay_is_still_to_come_is_not_pruned_for_scoring_badly_before_it(tmp_path) -> None:
    """wsd holds its LR until its last steps: below every constant trial after 2 of 3 epochs, it is
    still not judged there (the median rule waits for a decay), and runs to its end."""
    def train(trial):
        for _ in range(trial.epochs):
            trial.report(0.9 if trial.schedule == "constant" else 0.1)
        return trial.scores[-1]

    result = tune_loop(train, base_lr=0.1, epochs=3, steps_per_epoch=40, metric="accuracy", trials=12,
                       schedules=("wsd",), same_seed=False, final_seeds=0, out=str(tmp_path), progress=False)
    by_schedule = {}
    for t in result.study.trials:
        by_schedule.setdefault(t.user_attrs["schedule"], set()).add(t.state)
    assert by_schedule["wsd"] == {optuna.trial.TrialState.COMPLETE} and by_schedule["constant"]


def test_a_trial_is_never_pruned_after_its_last_epoch(tmp_path, monkeypatch) -> None:
    from lrfind.study import pruner as _pruner

    monkeypatch.setitem(_pruner.PRUNERS, "median", lambda epochs: optuna.pruners.ThresholdPruner(lower=1.0))
    reports = []

    def train(trial):                   # every score is below the threshold: prunable after any epoch
        for _ in range(trial.epochs):
            reports.append(trial.number)
            trial.report(0.5)
        return 0.5

    for epochs in (1, 2):
        result = tune_loop(train, base_lr=0.1, epochs=epochs, steps_per_epoch=4, metric="accuracy", trials=2,
                           same_seed=False, final_seeds=0, out=str(tmp_path / str(epochs)), progress=False)
        states = [t.state for t in result.study.trials]
        expected = optuna.trial.TrialState.COMPLETE if epochs == 1 else optuna.trial.TrialState.PRUNED
        assert states == [expected] * 2, epochs            # the run was complete: nothing left to save
        assert [sorted(t.intermediate_values) for t in result.study.trials] == [[0]] * 2   # every epoch reported
    assert reports == [0, 1, 0, 1]                         # with 2 epochs, pruned after the first


def test_a_loss_study_minimises_and_a_plain_return_is_enough(tmp_path) -> None:
    """A plain return scores the trial (with a word that per-epoch reports let Optuna prune)."""
    with pytest.warns(UserWarning, match=r"without calling trial.report\(score\) after its epochs: Optuna cannot"):
        result = tune_loop(lambda trial: 1.0 / (1 + trial.number), base_lr=0.01, epochs=2, steps_per_epoch=10,
                           metric="loss", trials=3, schedules=("cosine",), out=str(tmp_path), progress=False,
                           seed=3)                                 # trials 1 and 2 draw cosine, not the constant
    assert [t.user_attrs["epochs_run"] for t in result.study.trials] == [2, 2, 2]     # whole runs, unreported
    assert result.study.direction == optuna.study.StudyDirection.MINIMIZE
    assert result.best is not None and json.loads((tmp_path / "best.json").read_text())["trial"] == 2
    assert result.study.trials[2].user_attrs["val_loss"] == [pytest.approx(1 / 3)]     # for the figures
    from lrfind.study.figures import loss_label

    assert loss_label(result.study) == "validation loss (your loop's)"        # not lrfind's cross-entropy


def test_small_losses_keep_their_digits_in_the_report(tmp_path) -> None:
    """A regression's mean squared error of 0.0003: four decimals would print 0.0001 vs 0.0003."""
    result = tune_loop(lambda trial: 3.1e-4 / (1 + trial.number), base_lr=0.01, epochs=1, steps_per_epoch=10,
                       metric="loss", trials=3, schedules=("cosine",), out=str(tmp_path), progress=False,
                       final_seeds=0, seed=3)                      # trials 1 and 2 draw cosine, not the constant
    text = result.summary()
    assert "validation loss 0.000103 vs constant 0.00031 (-0.000207)" in text
    assert "   2  cosine           0.000103" in text


@pytest.mark.filterwarnings("ignore:trial .* scheduler was stepped")   # loops that never step
def test_mistakes_get_a_clear_error_and_the_trial_runs_again(tmp_path) -> None:
    kw = dict(base_lr=0.1, epochs=EPOCHS, steps_per_epoch=PER_EPOCH, out=str(tmp_path), progress=False)

    def percent(trial):
        trial.report(98.5)

    with pytest.raises(ValueError, match=r"fraction in \[0, 1\], got 98.5: report correct / total"):
        tune_loop(percent, metric="accuracy", trials=2, **kw)
    study = load(tmp_path, "lrfind-loop-percent")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]

    def broken(trial):
        raise RuntimeError("my bug")

    with pytest.raises(RuntimeError, match="my bug"):
        tune_loop(broken, metric="accuracy", trials=2, **kw)

    def quiet(trial):
        return None

    with pytest.raises(ValueError, match="never called trial.report"):
        tune_loop(quiet, metric="accuracy", trials=2, **kw)
    for returned, error, message in [(98.5, ValueError, r"fraction in \[0, 1\], got 98.5: report correct / total"),
                                     ("0.9", TypeError, "must be a number")]:
        with pytest.raises(error, match=message + ".* is stored as failed"):
            tune_loop(lambda trial, r=returned: r, metric="accuracy", trials=2, study_name=f"r{returned}", **kw)
        stored = load(tmp_path, f"r{returned}")
        assert stored.trials[-1].state == optuna.trial.TrialState.FAIL          # not left running

    def plateau_without_loss(trial):
        trial.scheduler(trial.optimizer([torch.zeros(1, requires_grad=True)]))
        trial.report(0.5)

    with pytest.raises(ValueError, match=r"call trial.report\(accuracy, loss=validation_loss\)"):
        _first_plateau(plateau_without_loss, tmp_path / "p")

    for bad, message in [(dict(metric="acc"), "metric must be 'accuracy'"),
                         (dict(metric="loss", base_lr=0.0), "base_lr must be a positive finite number"),
                         (dict(metric="loss", base_lr=True), "base_lr must be a positive finite number, got True"),
                         (dict(metric="loss", max_peak=0.5), "max_peak must be a finite number >= 1, got 0.5"),
                         (dict(metric="loss", epochs=0), "epochs must be a positive integer"),
                         (dict(metric="loss", schedules=("cosinus",)), "cosinus"),
                         (dict(metric="loss", schedules=("plateau",)), "epochs 2 is too few for plateau"),
                         (dict(metric="loss", timeout="soon"), "timeout")]:
        with pytest.raises(ValueError, match=message):
            tune_loop(quiet, **{**kw, **bad})
    with pytest.raises(TypeError, match="train must be a function"):
        tune_loop("train.py", metric="loss", **kw)
    with pytest.raises(TypeError, match=r"unknown argument\(s\): n_trials \(did you mean trials\?\), "
                                        r"epoch_count\. Its other"):
        tune_loop(quiet, metric="loss", n_trials=3, epoch_count=2, **kw)


def _first_plateau(train, out) -> None:
    """Run until a plateau trial (trial 0 is the constant): the error comes from the first one."""
    tune_loop(train, base_lr=0.1, epochs=3, steps_per_epoch=PER_EPOCH, metric="accuracy", trials=3,
              schedules=("plateau",), pruner="none", out=str(out), progress=False)


@pytest.mark.filterwarnings("ignore:trial .* scheduler was stepped")   # loops that never step
def test_an_optimizer_at_another_lr_is_warned_about_and_ctrl_c_keeps_the_study(tmp_path) -> None:
    def train(trial):
        if trial.number == 1:
            raise KeyboardInterrupt
        optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=trial.lr / 10)
        with pytest.warns(UserWarning, match="the optimizer's LR is") as said:
            line = inspect.currentframe().f_lineno + 1
            trial.scheduler(optimizer)
        assert [(w.filename, w.lineno) for w in said if "optimizer's LR" in str(w.message)] == [(__file__, line)]
        return 0.5

    with pytest.raises(TuneInterrupted, match="1 of 3 trials finished and stored"):
        tune_loop(train, base_lr=0.1, epochs=1, steps_per_epoch=4, metric="accuracy", trials=3, out=str(tmp_path),
                  progress=False)
    def confirm_cut(trial):
        if trial.seed != 0:                  # the runs with new seeds after the search
            raise KeyboardInterrupt
        return 0.5

    with pytest.raises(TuneInterrupted, match="during the runs with new seeds: the search is stored"):
        tune_loop(confirm_cut, base_lr=0.1, epochs=1, steps_per_epoch=4, metric="accuracy", trials=2,
                  out=str(tmp_path / "cut"), progress=False)
    study = load(tmp_path, "lrfind-loop-train")
    states = [t.state for t in study.trials]
    assert states[:2] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert states[2] == optuna.trial.TrialState.WAITING and study.trials[2].user_attrs["retry_of"] == 1


def test_a_timeout_stops_starting_trials_and_the_next_call_goes_on(tmp_path, monkeypatch) -> None:
    from lrfind.study import search as _search_loop

    clock = {"now": 0.0}
    monkeypatch.setattr(_search_loop, "now", lambda: clock["now"])

    def train(trial):
        clock["now"] += 40.0                     # each trial takes 40 s
        return 0.5

    kw = dict(base_lr=0.1, epochs=1, steps_per_epoch=4, metric="accuracy", trials=5, out=str(tmp_path),
              final_seeds=0, progress=False)
    first = tune_loop(train, timeout="1m", **kw)
    assert len(first.study.trials) == 2            # the second ended past the minute: no third
    assert json.loads((tmp_path / "best.json").read_text())["stopped_by_timeout"]["finished"] == 2
    tune_loop(train, **kw)
    assert clock["now"] == 200.0                   # 5 runs of 40 s in all (twins take no time, and do not count)
    assert "stopped_by_timeout" not in json.loads((tmp_path / "best.json").read_text())


def test_a_scheduler_stepped_per_epoch_or_past_the_run_is_caught(tmp_path) -> None:
    def per_epoch(trial):                        # a common slip: the scheduler stepped once an epoch
        optimizer = trial.optimizer(torch.nn.Linear(1, 1).parameters())
        scheduler = trial.scheduler(optimizer)
        for _ in range(trial.epochs):
            for _ in range(trial.steps_per_epoch):
                optimizer.step()
            scheduler.step()
        return 0.5

    with pytest.warns(UserWarning, match=r"stepped 2 times, but tune_loop was told of epochs=2 x steps_per_epoch=8 "
                                         r"= 16 optimizer steps") as said:
        line = inspect.currentframe().f_lineno + 1
        tune_loop(per_epoch, base_lr=0.1, epochs=2, steps_per_epoch=8, metric="accuracy", trials=1,
                  out=str(tmp_path / "a"), progress=False)
    # tune_loop's call, however deep in lrfind the check is
    assert [(w.filename, w.lineno) for w in said if "stepped 2 times" in str(w.message)] == [(__file__, line)]

    def too_long(trial):                         # steps_per_epoch given smaller than the loader's length
        optimizer = trial.optimizer(torch.nn.Linear(1, 1).parameters())
        scheduler = trial.scheduler(optimizer)
        for _ in range(trial.total_steps + 5):
            optimizer.step()
            scheduler.step()
        return 0.5

    with pytest.warns(UserWarning, match="trial 0's scheduler was stepped 21 times"), \
            pytest.raises(ValueError, match=r"scheduler was stepped 17 times, but tune_loop was told of epochs=2 x "
                                            r"steps_per_epoch=8 = 16") as caught:     # trial 0: the constant warns
        tune_loop(too_long, base_lr=0.1, epochs=2, steps_per_epoch=8, metric="accuracy", trials=3,
                  schedules=("onecycle",), out=str(tmp_path / "b"), progress=False)   # trial 1: the constant at 0.32x
    assert "Tried to step" in str(caught.value.__cause__)          # torch's own error, kept as the cause


def test_a_run_too_short_for_a_schedule_leaves_it_out_unless_it_is_named(tmp_path) -> None:
    """One-cycle needs 4 steps: by default a 2-step run searches the rest; naming it is an error
    that says what to do."""
    kw = dict(base_lr=0.1, epochs=1, steps_per_epoch=2, metric="accuracy", final_seeds=0, progress=False)
    result = tune_loop(lambda trial: 0.5, trials=2, out=str(tmp_path / "all"), **kw)
    choices = result.study.user_attrs["lrfind_setup"]["schedules"]
    assert "onecycle" not in choices and "plateau" not in choices and "cosine" in choices
    with pytest.raises(ValueError, match=r"onecycle needs a run of at least 4 steps, got 1 epoch of 2; train more "
                                         r"steps or leave onecycle out"):
        tune_loop(lambda trial: 0.5, trials=2, schedules=("cosine", "onecycle"), out=str(tmp_path / "named"), **kw)


def test_twins_do_not_count_but_at_most_trials_of_them_are_taken(tmp_path, caplog) -> None:
    calls = []

    def train(trial):
        calls.append(trial.number)
        return 0.5

    kw = dict(base_lr=0.1, epochs=1, steps_per_epoch=4, metric="accuracy", final_seeds=0, out=str(tmp_path),
              progress=False)
    study = tune_loop(train, trials=1, **kw).study
    for _ in range(5):                                     # a sampler stuck on the constant
        study.enqueue_trial(study.trials[0].params)
    again = tune_loop(train, trials=2, **kw).study
    twins = [t for t in again.trials if "duplicate_of" in t.user_attrs]
    assert calls == [0] and len(twins) == 2                # it stopped asking: no endless loop
    assert "stopped after 1 runs of 2: the sampler asked 2 times for schedules already run" in caplog.text
    from lrfind.study.figures import top_trials

    assert [t.number for t in top_trials(again, 6)] == [0]       # the LR figure draws trial 0's curve once


def test_find_lrs_result_as_the_base_lr_brings_its_curve_and_sweeps_into_the_report(tmp_path) -> None:
    from lrfind import RangeTestResult, find_lr

    torch.manual_seed(0)
    found = find_lr(torch.nn.Linear(5, 2), DataLoader(TRAIN, batch_size=32, shuffle=True), num_iter=60,
                    repeats=3, seed=0, progress=False, warn=False)
    assert found.suggested_lr is not None
    result = tune_loop(train_blobs, base_lr=found, epochs=EPOCHS, steps_per_epoch=PER_EPOCH, metric="accuracy",
                       trials=2, out=str(tmp_path), final_seeds=0, progress=False)
    attrs = result.study.user_attrs
    assert result.base_lr == attrs["base_lr"] == found.suggested_lr and attrs["base_lr_source"] == "range test"
    assert attrs["range_test"]["seed_lrs"] == found.seed_lrs and len(attrs["range_test"]["lrs"]) == found.lrs.size
    assert "range test, the median of 3 sweeps' suggestions" in result.summary()
    assert (tmp_path / "lr_curves.png").stat().st_size > 1000

    unclear = RangeTestResult(np.geomspace(1e-4, 1, 40), np.full(40, 2.0))      # a flat curve: no suggestion
    with pytest.raises(ValueError, match=r"no clear base LR \(the loss rises from the start"):
        tune_loop(train_blobs, base_lr=unclear, epochs=EPOCHS, steps_per_epoch=PER_EPOCH, metric="accuracy",
                  out=str(tmp_path / "unclear"), progress=False)
    assert not (tmp_path / "unclear").exists()              # refused before anything is written


class _StandInTrainer:
    """What the reporting callback reads of Lightning's Trainer, driving a fit as Lightning does: a
    sanity check first, then an epoch of optimizer and scheduler steps and a validation per epoch."""

    def __init__(self, epochs: int, callbacks: list) -> None:
        self.epochs, self.callbacks = epochs, callbacks
        self.sanity_checking, self.callback_metrics = False, {}

    def fit(self, configured: dict, steps: int, validate) -> None:
        optimizer, config = configured["optimizer"], configured.get("lr_scheduler")
        self.state = types.SimpleNamespace(fn="fit")
        self._validate(validate, sanity=True)
        for _ in range(self.epochs):
            for _ in range(steps):
                optimizer.step()
                if config is not None and config["interval"] == "step":
                    config["scheduler"].step()
            self._validate(validate, sanity=False)
        self.state.fn = "validate"                       # trainer.validate(model) after fit: not an epoch
        self._validate(validate, sanity=False)

    def _validate(self, validate, sanity: bool) -> None:
        self.sanity_checking = sanity
        self.callback_metrics = validate()
        for callback in self.callbacks:
            callback.on_validation_end(self, None)


@pytest.fixture
def stand_in_lightning(monkeypatch):
    """A ``lightning`` package with only the ``Callback`` base class: Lightning is not a dependency."""
    import sys

    package, pytorch = types.ModuleType("lightning"), types.ModuleType("lightning.pytorch")
    pytorch.Callback = type("Callback", (), {})
    package.pytorch = pytorch
    monkeypatch.setitem(sys.modules, "lightning", package)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", pytorch)
    return pytorch


def test_a_lightning_run_is_a_trial_through_its_configure_optimizers_and_a_callback(tmp_path,
                                                                                   stand_in_lightning) -> None:
    """trial.lightning gives configure_optimizers the scheduler stepped every step (a plateau trial's
    is stepped by report instead); the callback reports the logged metrics after each validation,
    not the sanity check's, and a pruned trial's TrialPruned comes up through fit."""
    lrs: dict[int, tuple[list[float], np.ndarray | None]] = {}

    def train(trial):
        configured = trial.lightning(trial.optimizer([torch.zeros(1, requires_grad=True)]))
        callback = trial.lightning_callback("val_acc", loss="val_loss")
        assert isinstance(callback, stand_in_lightning.Callback)
        plateau = trial.schedule == "plateau"
        assert ("lr_scheduler" in configured) != plateau
        # the LR after 4 and 8 steps: the schedule's, where it does not follow a metric
        seen, expected = [], None if plateau else trial.lr * get_schedule(trial.schedule).factor(
            np.array([4, 8]), trial.total_steps, **trial.params)
        lrs[trial.number] = seen, expected
        scores = iter([0.5, 0.9, 0.95, 0.97, 0.5] if trial.number < 5 or plateau else [0.5, 0.1, 0.1, 0.1, 0.5])

        def validate() -> dict:                    # the first call: the sanity check
            seen.append(configured["optimizer"].param_groups[0]["lr"])
            return {"val_acc": torch.tensor(next(scores)), "val_loss": torch.tensor(1.0), "train_loss": 0.3}

        _StandInTrainer(trial.epochs, [callback]).fit(configured, trial.steps_per_epoch, validate)
        return trial.scores[-1]

    result = tune_loop(train, base_lr=0.1, epochs=3, steps_per_epoch=4, metric="accuracy", trials=8,
                       schedules=("warmup", "plateau"), same_seed=False, final_seeds=0, out=str(tmp_path),
                       progress=False)
    states = [t.state for t in result.study.trials]
    assert optuna.trial.TrialState.PRUNED in states
    assert {t.user_attrs["schedule"] for t in result.study.trials} >= {"plateau", "warmup"}
    checked = 0
    for t in result.study.trials:
        assert 0.5 not in t.user_attrs["val_acc"]                    # nor the sanity check, nor validate()
        seen, expected = lrs[t.number]
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert len(t.user_attrs["val_acc"]) == 3 and t.value == t.user_attrs["val_acc"][-1]
            if expected is not None and t.user_attrs["schedule"] == "warmup":
                np.testing.assert_allclose(seen[1:3], expected, rtol=1e-9)
                checked += 1
    assert checked


def test_a_lightning_metric_not_logged_says_which_were(tmp_path, stand_in_lightning) -> None:
    def train(trial):
        _StandInTrainer(trial.epochs, [trial.lightning_callback("val_accuracy")]).fit(
            trial.lightning(trial.optimizer([torch.zeros(1, requires_grad=True)])), 2,
            lambda: {"val_acc": 0.9, "val_loss": 0.3})
        return trial.scores[-1]

    with pytest.raises(KeyError, match=r"metrics after validation have no 'val_accuracy' \(there are: val_acc, "
                                       r"val_loss\): self.log\(name, value\) in validation_step"):
        tune_loop(train, base_lr=0.1, epochs=2, steps_per_epoch=2, metric="accuracy", trials=1, final_seeds=0,
                  out=str(tmp_path), progress=False)


@pytest.fixture
def stand_in_transformers(monkeypatch):
    """A ``transformers`` module with only the ``TrainerCallback`` base class: not a dependency."""
    import sys

    module = types.ModuleType("transformers")
    module.TrainerCallback = type("TrainerCallback", (), {})
    monkeypatch.setitem(sys.modules, "transformers", module)
    return module


def _hf_fit(optimizers, callbacks, epochs: int, steps: int, evaluate, strategy: str = "epoch") -> None:
    """Hugging Face's Trainer as the callback sees it: an evaluation before training (the user's
    trainer.evaluate()), train begins, an epoch of optimizer and scheduler steps and an evaluation
    per epoch, train ends, and one more evaluation after it."""
    from types import SimpleNamespace

    optimizer, scheduler = optimizers
    args, state = SimpleNamespace(eval_strategy=strategy), SimpleNamespace(global_step=0)

    def hook(name: str, **kwargs) -> None:
        for callback in callbacks:
            getattr(callback, name)(args, state, None, **kwargs)

    hook("on_evaluate", metrics=evaluate())
    hook("on_train_begin")
    for _ in range(epochs):
        for _ in range(steps):
            optimizer.step()
            scheduler.step()
            state.global_step += 1
        hook("on_evaluate", metrics=evaluate())
    hook("on_train_end")
    hook("on_evaluate", metrics=evaluate())


def test_a_hugging_face_trainer_run_is_a_trial_through_its_optimizers_and_a_callback(
        tmp_path, stand_in_transformers) -> None:
    """The Trainer steps the trial's scheduler after every optimizer step; a plateau trial's LR is
    held there and stepped by report on the evaluation's loss; one report per epoch, an evaluation
    after training not counted."""
    lrs = {}

    def train(trial):
        optimizers = trial.hugging_face(trial.optimizer([torch.zeros(1, requires_grad=True)]))
        callback = trial.hugging_face_callback("eval_accuracy", loss="eval_loss")
        assert isinstance(callback, stand_in_transformers.TrainerCallback)
        seen = lrs.setdefault(trial.number, [])
        losses = iter([1.0, 1.0, 2.0, 3.0, 3.0])         # before training, then worse and worse: a plateau cuts

        def evaluate() -> dict:
            seen.append(optimizers[0].param_groups[0]["lr"])
            return {"eval_accuracy": 0.9, "eval_loss": next(losses), "epoch": 1.0}

        _hf_fit(optimizers, [callback], trial.epochs, trial.steps_per_epoch, evaluate)
        return None

    result = tune_loop(train, base_lr=0.1, epochs=3, steps_per_epoch=4, metric="accuracy", trials=6,
                       schedules=("step", "plateau"), same_seed=False, final_seeds=0, out=str(tmp_path),
                       progress=False)
    kinds = set()
    for t in result.study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE and len(t.user_attrs["val_acc"]) == 3
        schedule, params, lr = t.user_attrs["schedule"], t.user_attrs["params"], lrs[t.number]
        peak = 0.1 * t.user_attrs.get("peak_scale", 1.0)
        if schedule == "plateau":       # held by the Trainer's steps; cut by the reports (patience counts reports)
            cut = [peak * params["factor"] ** n for n in range(4)]
            assert all(any(np.isclose(x, c) for c in cut) for x in lr) and lr[0] == pytest.approx(peak)
        else:
            np.testing.assert_allclose(lr[1:3], peak * get_schedule(schedule).factor(np.array([4, 8]), 12, **params),
                                       rtol=1e-9)
        kinds.add(schedule)
    assert kinds >= {"plateau", "step"}


def test_a_hugging_face_evaluation_not_per_epoch_or_without_the_metric_is_a_clear_error(
        tmp_path, stand_in_transformers) -> None:
    def train(trial, strategy="epoch", metric="eval_accuracy"):
        _hf_fit(trial.hugging_face(trial.optimizer([torch.zeros(1, requires_grad=True)])),
                [trial.hugging_face_callback(metric)], trial.epochs, 2, lambda: {"eval_acc": 0.9, "eval_loss": 0.3},
                strategy=strategy)
        return trial.scores[-1]

    common = dict(base_lr=0.1, epochs=2, steps_per_epoch=2, metric="accuracy", trials=1, final_seeds=0,
                  progress=False)
    with pytest.raises(ValueError, match=r"eval_strategy='steps': pass TrainingArguments\(eval_strategy='epoch'"):
        tune_loop(lambda trial: train(trial, strategy="steps"), out=str(tmp_path / "a"), **common)
    with pytest.raises(KeyError, match=r"evaluation metrics have no 'eval_accuracy' \(there are: eval_acc, "
                                       r"eval_loss\): a compute_metrics that returns it"):
        tune_loop(train, out=str(tmp_path / "b"), **common)


def test_a_second_scheduler_of_one_optimizer_is_an_error_and_two_optimizers_get_one_each(tmp_path) -> None:
    """The second would start from the LR the first one set (and the step count followed the
    second, so the first's steps were reported as none); a GAN's two optimizers may each have one."""
    def twice(trial):
        optimizer = trial.optimizer(torch.nn.Linear(2, 2).parameters())
        trial.scheduler(optimizer)
        trial.scheduler(optimizer)

    with pytest.raises(ValueError, match="asked for a second scheduler of the same optimizer"):
        tune_loop(twice, base_lr=0.1, epochs=1, steps_per_epoch=4, metric="accuracy", trials=1,
                  out=str(tmp_path / "twice"), progress=False, final_seeds=0)

    def two_optimizers(trial):
        pairs = []
        for _ in range(2):
            optimizer = trial.optimizer(torch.nn.Linear(2, 2).parameters())
            pairs.append((optimizer, trial.scheduler(optimizer)))
        for _ in range(trial.total_steps):
            for optimizer, scheduler in pairs:
                optimizer.step()
                scheduler.step()
        return 0.5

    result = tune_loop(two_optimizers, base_lr=0.1, epochs=1, steps_per_epoch=4, metric="accuracy", trials=2,
                       out=str(tmp_path / "two"), progress=False, final_seeds=0)
    assert len(result.study.trials) == 2
