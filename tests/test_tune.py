"""The study end to end on a small subset of the real MNIST files, on the CPU."""

from __future__ import annotations

import json
import re

import numpy as np
import optuna
import torch
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from conftest import dynamo_modules_after
from lrfind import SCHEDULES, get_schedule, tune
from lrfind.study import pruner as _pruner
from lrfind.study import retries as _retries
from lrfind.study import search as _search_loop
from lrfind.study import storage as _storage
from lrfind.study import trials as _study
from lrfind.study import report
from lrfind.study import tune as tuner
from lrfind.study import tune_config, tune_final, tune_lr, tune_search
from lrfind.study.painter import Painter
from lrfind.cli import main
from lrfind.engine.trials import FusedTrials
from lrfind.study.result import TuneInterrupted
from lrfind.study.tune_config import TuneConfig

QUICK = dict(epochs=2, batch_size=64, train_subset=256, device="cpu", progress=False, base_lr=0.05,
             final=False, seed=0)


def load(out) -> optuna.Study:
    return optuna.load_study(study_name="lrfind-lenet-mnist", storage=_storage.connect(str(out / "study.log"), create=False))


def runs(study: optuna.Study) -> int:
    """Finished trials that ran: a trial that repeats a finished one's choices takes its score instead."""
    return _study.counts(study)[0]


@pytest.fixture
def data_env(mnist_root, monkeypatch):
    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    return mnist_root


@pytest.mark.parametrize("figures_in", ["thread", "process"])     # a CPU's way, and a GPU's
def test_cli_study_end_to_end_with_range_test_and_final(data_env, tmp_path, monkeypatch, figures_in, caplog) -> None:
    from lrfind.rangetest import suggest

    monkeypatch.setattr(suggest, "caveats", lambda lrs, losses: ["the curve needs a second look"])
    painters = []

    class Recorded(Painter):
        def __init__(self, process: bool) -> None:
            assert process is False                       # the CPU's default
            super().__init__(process=figures_in == "process")
            painters.append(self)

    monkeypatch.setattr(tuner, "Painter", Recorded)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "tune", "--trials", "4", "--epochs", "2", "--parallel", "2", "--train-subset", "256", "--batch-size", "64",
        "--val-size", "500", "--device", "cpu", "-q", "--out", str(out), "--range-test-iters", "100",
        "--range-test-repeats", "2"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "finished trials" in result.output and "base LR" in result.output and "test accuracy" in result.output
    study = load(out)
    assert runs(study) == 4
    assert study.trials[0].user_attrs["schedule"] == "constant"
    assert study.user_attrs["base_lr_source"] == "range test"
    assert study.user_attrs["range_test"]["warnings"] == ["the curve needs a second look"]
    seed_lrs = study.user_attrs["range_test"]["seed_lrs"]
    assert len(seed_lrs) == 2 and study.user_attrs["range_test"]["suggested_lr"] == study.user_attrs["base_lr"]
    assert "range test, the median of 2 sweeps' suggestions" in result.output
    swept = json.loads((out / "range_test.json").read_text())
    assert len(swept["seed_losses"]) == 2
    assert {k: swept["config"][k] for k in ("model", "dataset", "batch_size", "train_examples", "optimizer")} == {
        "model": "lenet", "dataset": "mnist", "batch_size": 64, "train_examples": 256, "optimizer": "sgd"}
    assert [r.getMessage() for r in caplog.records if "second look" in r.getMessage()] == [
        "range test: the curve needs a second look"]
    assert "range test warning: the curve needs a second look" in result.output      # in the verdict, too
    best = json.loads((out / "best.json").read_text())
    assert best["base_lr"] == study.user_attrs["base_lr"] and best["schedule"] in [t.user_attrs["schedule"]
                                                                                     for t in study.trials]
    assert 0 <= best["final"]["best"]["test_acc"] <= 1
    assert len(best["final"]["best"]["test_acc_per_seed"]) == 3       # paired retrains, averaged
    json.loads((out / "range_test.json").read_text())
    for name in ("history.png", "lr_curves.png", "val_acc.png", "importances.png", "range_test.png"):
        assert (out / name).stat().st_size > 1000, name
    assert not (out / "val_loss.png").exists()                # drawn for studies scored on the loss
    assert f"{out / 'importances.png'}" in result.output
    assert painters[0]._count == (2 if figures_in == "process" else 0)   # range test and report, by the child
    timing = result.output.split("time:")[1]
    assert all(part in timing for part in ("start-up", "data and storage", "trials", "report and figures"))
    assert set(best["seconds"]) == {"setup", "range_test", "search", "final"}
    import torch

    scope = {"model": torch.nn.Linear(2, 2)}
    exec((out / "best_schedule.py").read_text(), scope)
    assert "scheduler" in scope


def test_resume_runs_only_the_missing_trials(data_env, tmp_path) -> None:
    tune(trials=3, parallel=2, out=str(tmp_path), **QUICK)
    tune(trials=5, parallel=2, out=str(tmp_path), **QUICK)
    study = load(tmp_path)
    assert runs(study) == 5 and len(study.trials) == len(_study.finished(study))
    result = tune(trials=5, parallel=2, out=str(tmp_path), **QUICK)          # nothing left to do
    assert len(load(tmp_path).trials) == len(study.trials)
    text = repr(result)                          # one line in a notebook, not the study and its scores
    assert text.startswith("<TuneResult: study 'lrfind-lenet-mnist', base LR 0.05, best: ") and "\n" not in text


def test_each_trial_of_a_batch_is_sampled_before_the_next_is_asked(data_env, tmp_path, monkeypatch) -> None:
    """Optuna 4.0's grouped multivariate TPE samples a trial from the search space it inferred at
    the sampler's latest ask, and raised ("... not contained in the relative search space") where
    another worker's trials changed that space between a batch's asks and its sampling."""
    calls = []
    real_ask, real_sample = optuna.Study.ask, optuna.samplers.TPESampler.sample_relative

    def ask(self, *args, **kwargs):
        trial = real_ask(self, *args, **kwargs)
        calls.append(("ask", trial.number))
        return trial

    def sample(self, study, trial, search_space):
        calls.append(("sample", trial.number))
        return real_sample(self, study, trial, search_space)

    monkeypatch.setattr(optuna.Study, "ask", ask)
    monkeypatch.setattr(optuna.samplers.TPESampler, "sample_relative", sample)
    tune(trials=6, parallel=3, epochs=1, **{k: v for k, v in QUICK.items() if k != "epochs"}, out=str(tmp_path))
    sampled = [n for kind, n in calls if kind == "sample"]
    assert sampled == [t.number for t in load(tmp_path).trials[1:]]     # all but the constant baseline, enqueued
    for n in sampled:
        latest_ask = [m for kind, m in calls[:calls.index(("sample", n))] if kind == "ask"][-1]
        assert latest_ask == n


def test_interrupted_run_resumes_to_exactly_the_requested_trials(data_env, tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    real_step = FusedTrials.step

    def step_then_ctrl_c(self, x, y):
        calls["n"] += 1
        if calls["n"] == 8 + 3:         # inside the second batch of trials (8 steps a batch)
            raise KeyboardInterrupt
        return real_step(self, x, y)

    monkeypatch.setattr(FusedTrials, "step", step_then_ctrl_c)
    with pytest.raises(TuneInterrupted, match="run the same command again"):
        tune(trials=6, parallel=2, out=str(tmp_path), **QUICK)
    study = load(tmp_path)
    interrupted = [t for t in study.trials if "interrupted" in t.user_attrs]
    # the second batch's trials that ran (one that repeated a finished trial took its score instead)
    assert runs(study) == 2 and 1 <= len(interrupted) <= 2
    assert all(t.state == TrialState.FAIL for t in interrupted)

    monkeypatch.setattr(FusedTrials, "step", real_step)
    tune(trials=6, parallel=2, out=str(tmp_path), **QUICK)
    study = load(tmp_path)
    assert runs(study) == 6
    redone = {json.dumps(t.params, sort_keys=True) for t in study.trials if _study.is_finished(t)}
    assert {json.dumps(t.params, sort_keys=True) for t in interrupted} <= redone   # cut-off trials were rerun


@pytest.mark.parametrize("module, stage, says", [
    (tune_lr, "_range_test",
     "interrupted during the range test (stage 1), which is not stored: run the same command again"),
    (tune_final, "retrain",
     "interrupted during the final retrains (stage 3); the search is stored: run the same command again"),
], ids=["_range_test", "_final"])
def test_ctrl_c_in_the_range_test_or_the_final_retrains_says_what_is_kept(data_env, tmp_path, monkeypatch, module,
                                                                         stage, says) -> None:
    """Not a bare KeyboardInterrupt (on the command line: click's 'Aborted!' and exit 1), and a
    run of the same command then goes on."""
    real = getattr(module, stage)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, stage, ctrl_c)
    fields = {**QUICK, "base_lr": None, "range_test_iters": 30, "range_test_repeats": 1, "final": True,
              "final_seeds": 1}
    with pytest.raises(TuneInterrupted, match=re.escape(says)):
        tune(trials=2, parallel=2, out=str(tmp_path), **fields)
    monkeypatch.setattr(module, stage, real)
    result = tune(trials=2, parallel=2, out=str(tmp_path), **fields)
    assert runs(result.study) == 2 and result.final and result.base_lr > 0


def test_pruned_trials_are_recorded_and_the_study_goes_on(data_env, tmp_path, monkeypatch) -> None:
    # A pruner that stops every trial below 100% after its first epoch.
    monkeypatch.setitem(_pruner.PRUNERS, "median", lambda epochs: optuna.pruners.ThresholdPruner(lower=1.0))
    tune(trials=3, parallel=3, out=str(tmp_path), **QUICK)
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 3
    assert all(t.user_attrs["epochs_run"] == 1 for t in study.trials)


def test_every_epoch_is_reported_and_a_trial_that_ran_them_all_is_complete(data_env, tmp_path, monkeypatch) -> None:
    # A pruner that would stop every trial below 100% after any epoch it is asked about.
    monkeypatch.setitem(_pruner.PRUNERS, "median", lambda epochs: optuna.pruners.ThresholdPruner(lower=1.0))
    tune(trials=2, parallel=2, out=str(tmp_path), **{**QUICK, "epochs": 1})
    ran = [t for t in load(tmp_path).trials if not _study.is_twin(t)]
    assert ran and [t.state for t in ran] == [TrialState.COMPLETE] * len(ran)     # the last epoch is never pruned
    assert all(sorted(t.intermediate_values) == [0] for t in ran)                 # its curve has its one epoch
    assert all(t.intermediate_values[0] == t.value for t in ran)


def test_a_batch_that_runs_out_of_gpu_memory_runs_again_in_halves(data_env, tmp_path, monkeypatch, caplog) -> None:
    sizes = []
    real = tune_search.run_trials

    def small_gpu(model, specs, *args, **kwargs):
        sizes.append(len(specs))
        if len(specs) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, specs, *args, **kwargs)

    monkeypatch.setattr(tune_search, "run_trials", small_gpu)
    result = tune(trials=5, parallel=5, out=str(tmp_path), **QUICK)
    assert sizes == [5, 2, 2, 1]
    assert len(_study.finished(result.study)) == 5 and "they run again, 2 at a time" in caplog.text
    retried = [t for t in result.study.trials if t.user_attrs.get("interrupted") == "OutOfMemoryError"]
    assert len(retried) == 5 and result.study.trials[5].user_attrs["baseline"]     # the constant first again


def test_nan_trials_are_recorded_as_failed_and_the_study_goes_on(data_env, tmp_path) -> None:
    tune(trials=3, parallel=2, out=str(tmp_path), **{**QUICK, "base_lr": 1e6})
    study = load(tmp_path)
    assert len(study.trials) == 3
    assert all(t.state == TrialState.FAIL and t.user_attrs["failure"] == "nan" for t in study.trials)
    result = CliRunner().invoke(main, ["show", "--out", str(tmp_path)])
    assert result.exit_code == 0 and "failed: NaN at step" in result.output and "no trial completed" in result.output


def test_show_prints_the_stored_report(data_env, tmp_path) -> None:
    tune(trials=2, parallel=2, out=str(tmp_path), **QUICK)
    result = CliRunner().invoke(main, ["show", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "constant" in result.output and "2 finished trials" in result.output
    assert CliRunner().invoke(main, ["show", str(tmp_path)]).output == result.output     # the folder as FOLDER
    both = CliRunner().invoke(main, ["show", str(tmp_path), "--out", str(tmp_path / "other")])
    assert both.exit_code == 2 and f"two folders: {tmp_path} and --out {tmp_path / 'other'}; give one" in both.output


def test_a_figure_that_fails_costs_only_itself(data_env, tmp_path, monkeypatch, caplog) -> None:
    from lrfind.study import figures as plots

    def broken(study, *, path):
        raise TypeError("a bug in a figure")

    monkeypatch.setattr(plots, "plot_val_acc", broken)
    result = tune(trials=3, parallel=3, out=str(tmp_path), **QUICK)
    names = {f.name for f in result.files}
    assert "val_acc.png" not in names and {"best.json", "history.png", "lr_curves.png"} <= names
    assert "could not draw val_acc.png (TypeError: a bug in a figure)" in caplog.text
    assert result._repr_png_() == (tmp_path / "lr_curves.png").read_bytes()      # what Jupyter shows
    monkeypatch.setattr(plots, "plot_top_lr_curves", broken)
    assert tune(trials=3, parallel=3, out=str(tmp_path / "again"), **QUICK)._repr_png_() is None   # text only


@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "--trials must be a positive integer, got 0"),
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["--range-test-iters", "1"], "--range-test-iters must be at least 2, got 1"),
    (["--range-test-repeats", "0"], "--range-test-repeats must be a positive integer, got 0"),
    (["--trials", "3", "--parallel", "5"], "--parallel must be between 1 and trials=3, got 5"),
    (["--schedules", "cosine,cosinus"], "unknown schedule 'cosinus' (did you mean cosine?); choose from"),
    (["--epochs", "1", "--schedules", "Plateau"], "--epochs 1 is too few for plateau, which needs 3"),   # any case
    (["--schedules", "CosineAnnealingLR"], "unknown schedule 'CosineAnnealingLR' (did you mean cosine?)"),
    (["--schedules", ""], "--schedules is empty: name the schedules to search"),     # "$UNSET": not all of them
    (["--schedules", " , "], "--schedules is empty: name the schedules to search"),
    (["--base-lr", "-1"], "--base-lr must be a positive finite number, got -1.0"),
    (["--storage", "bogus://nowhere"], "cannot open storage"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number >= 0, got inf"),
    (["--max-grad-norm", "inf"], "--max-grad-norm must be a positive finite number, got inf"),
    (["--model", "nowhere/net.py:make"], "--model nowhere/net.py:make: no file"),
    (["--model", "torch.nn:Identity"], "--model torch.nn:Identity must return 10 class scores per image"),
])
def test_tune_bad_input_is_one_line_exit_2_and_writes_nothing(data_env, tmp_path, args, message) -> None:
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["tune", "--device", "cpu", "-q", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_study_of_your_own_model_resumes_only_with_a_model_of_the_same_size(data_env, tmp_path) -> None:
    net = tmp_path / "net.py"
    layers = "nn.Flatten(), nn.Linear(784, {}), nn.ReLU(), nn.Linear({}, 10)"
    net.write_text(f"from torch import nn\n\ndef make():\n    return nn.Sequential({layers.format(8, 8)})\n")
    args = ["tune", "--trials", "2", "--parallel", "2", "--epochs", "2", "--batch-size", "64", "--train-subset", "256",
            "--base-lr", "0.05", "--no-final", "--device", "cpu", "-q", "--model", f"{net}:make",
            "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    storage = _storage.connect(str(tmp_path / "study.log"))
    study = optuna.load_study(study_name=f"lrfind-{net}:make-mnist", storage=storage)
    assert study.user_attrs["lrfind_setup"]["model_parameters"] == 784 * 8 + 8 + 8 * 10 + 10
    assert len(_study.finished(study)) == 2 and all(t.value > 0.1 for t in _study.finished(study))
    net.write_text(f"from torch import nn\n\ndef make():\n    return nn.Sequential({layers.format(16, 16)})\n")
    result = CliRunner().invoke(main, [*args[:2], "3", *args[3:]])
    assert result.exit_code == 1 and "model_parameters 6370 there, 12730 here" in result.output


class Linear784(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


BUILT: list[int] = []


def counted_model() -> torch.nn.Module:
    BUILT.append(1)
    return Linear784()


def test_a_tune_config_is_a_value_that_runs_none_of_the_users_code() -> None:
    rng = torch.get_rng_state()
    cfg = TuneConfig(model=counted_model, device="cuda:7", augment="flip-crop")
    assert not BUILT and torch.equal(torch.get_rng_state(), rng)       # the factory is named, not called
    assert cfg.model == "test_tune:counted_model" and cfg.device == "cuda:7"


def test_tune_takes_a_model_class_and_stores_it_by_name(data_env, tmp_path) -> None:
    result = tune(model=Linear784, trials=2, parallel=2, out=str(tmp_path), **QUICK)
    assert result.study.user_attrs["lrfind_setup"]["model"] == "test_tune:Linear784"
    assert result.study.study_name == "lrfind-test_tune:Linear784-mnist" and result.study.best_value > 0.1
    with pytest.raises(ValueError, match="a lambda or a function inside a function has no name"):
        TuneConfig(model=lambda: Linear784())


def test_existing_study_with_another_setup_is_refused_untouched(data_env, tmp_path) -> None:
    tune(trials=2, parallel=2, out=str(tmp_path), **QUICK)
    before = len(load(tmp_path).trials)
    result = CliRunner().invoke(main, ["tune", "--trials", "4", "--epochs", "3", "--batch-size", "64",
                                       "--train-subset", "256", "--base-lr", "0.05", "--device", "cpu", "-q",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 1
    # 3 epochs leave room for plateau, 2 did not: the schedules differ too, by that one
    assert "exists with another setup (epochs 2 there, 3 here, schedules plateau here only)" in result.output
    assert len(load(tmp_path).trials) == before


def test_show_without_a_study_is_a_clear_error(tmp_path) -> None:
    result = CliRunner().invoke(main, ["show", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "no study in" in result.output


def test_show_of_a_range_test_folder_prints_its_summary(tmp_path) -> None:
    from lrfind import RangeTestResult

    lrs = np.geomspace(1e-6, 1, 100)
    losses = 2.3 - 1.5 / (1 + np.exp(-6 * (np.log10(lrs) + 2))) + np.where(lrs > 0.1, 30 * np.log10(lrs / 0.1) ** 2, 0)
    RangeTestResult(lrs, losses, num_iter=100).to_json(tmp_path / "range_test.json")
    result = CliRunner().invoke(main, ["show", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("suggested LR: ") and "holds a range test, not a study" in result.output


def test_show_of_a_report_whose_study_is_stored_elsewhere_says_to_pass_its_storage(data_env, tmp_path) -> None:
    out, storage = tmp_path / "out", str(tmp_path / "elsewhere.log")
    tune(trials=2, parallel=2, out=str(out), storage=storage, **QUICK)
    result = CliRunner().invoke(main, ["show", str(out)])
    assert result.exit_code == 2 and f"{out} holds the report of study 'lrfind-lenet-mnist' but not the study" \
        in result.output and "pass the same --storage" in result.output
    assert "2 finished trials" in CliRunner().invoke(main, ["show", str(out), "--storage", storage]).output


def test_config_lists_constant_first_and_once() -> None:
    cfg = TuneConfig(schedules=("cosine", "constant", "step"))
    assert cfg.choices == ["constant", "cosine", "step"]


def seeds_of_runs(study: optuna.Study) -> list[list[int]]:
    """The initial weights' seeds of the trials that trained, batch by batch (a trial that took a
    twin's score trained in none)."""
    batches: dict[int, list[int]] = {}
    for t in study.trials:
        if "batch" in t.user_attrs:
            batches.setdefault(t.user_attrs["batch"], []).append(t.user_attrs["seed"])
    return [batches[b] for b in sorted(batches)]


def test_trials_start_from_a_seed_each_or_the_same_weights_and_a_stored_study_keeps_its_choice(
        data_env, tmp_path) -> None:
    """A new study gives each trial its own seed unless told --same-init; resumed, a study keeps
    what it was made with, and another choice named is refused."""
    tune(trials=3, parallel=3, out=str(tmp_path / "new"), **QUICK)
    new = load(tmp_path / "new")
    assert seeds_of_runs(new) == [[0, 1, 2]] and new.user_attrs["lrfind_setup"]["same_init"] is False
    tune(trials=2, parallel=2, out=str(tmp_path / "same"), same_init=True, **QUICK)
    tune(trials=4, parallel=2, out=str(tmp_path / "same"), **QUICK)              # resumed: the same weights still
    seen = seeds_of_runs(load(tmp_path / "same"))
    assert len(seen) >= 2 and all(set(batch) == {0} for batch in seen)
    args = ["tune", "--trials", "6", "--epochs", "2", "--batch-size", "64", "--train-subset", "256", "--base-lr", "0.05",
            "--no-final", "--device", "cpu", "-q", "--out", str(tmp_path / "same")]
    result = CliRunner().invoke(main, [*args, "--seed-each"])
    assert result.exit_code == 1 and "same_init True there, False here" in result.output
    result = CliRunner().invoke(main, [*args, "--same-init"])
    assert result.exit_code == 0, result.output
    assert set(seeds_of_runs(load(tmp_path / "same"))[-1]) == {0}
    with pytest.raises(ValueError, match="same_init must be True, False or None"):
        TuneConfig(same_init="yes")


@pytest.mark.parametrize("out", ["", "  ", None])
def test_an_empty_out_is_refused_not_taken_for_the_current_folder(out) -> None:
    from lrfind import LoopConfig

    with pytest.raises(ValueError, match="out must name the folder for the study and its report"):
        TuneConfig(out=out)
    with pytest.raises(ValueError, match="out must name the folder for the study and its report"):
        LoopConfig(train=print, base_lr=0.1, epochs=1, steps_per_epoch=1, metric="accuracy", out=out)


@pytest.mark.parametrize("same_init", [True, False], ids=["same-init", "seed-each"])
def test_a_trial_that_repeats_a_finished_one_from_the_same_weights_takes_its_score_without_running(
        data_env, tmp_path, same_init) -> None:
    study = tune(trials=2, parallel=2, out=str(tmp_path), same_init=same_init, **QUICK).study
    for _ in range(2):
        study.enqueue_trial(study.trials[0].params)           # as a sampler that picks the constant again
    again = tune(trials=3, parallel=3, out=str(tmp_path), **QUICK).study
    twins = {t.number: t.user_attrs["duplicate_of"] for t in again.trials if "duplicate_of" in t.user_attrs}
    ran = [len(batch) for batch in seeds_of_runs(again)]
    if same_init:                                  # scored as trial 0, and the study goes on to a third run
        assert twins == {2: 0, 3: 0} and ran == [2, 1] and len(_study.finished(again)) == 5
        assert again.trials[2].value == again.trials[0].value
        assert again.trials[3].user_attrs["val_acc"] == again.trials[0].user_attrs["val_acc"]
        assert "as trial 0 (not rerun)" in report.top_table(again)
    else:                                          # another seed: another run, which counts
        assert twins == {} and ran == [2, 1] and len(_study.finished(again)) == 3     # the other still waits


def test_repeats_within_one_batch_from_the_same_weights_run_once(data_env, tmp_path) -> None:
    """A fresh study's random first batch may draw one schedule (the constant, whose only choice is its warmup)
    several times: with the same weights, the second and later draws wait for the first and take its score."""
    study = tune(trials=1, parallel=1, out=str(tmp_path), same_init=True, **QUICK).study
    cosine = {"schedule": "cosine", "cosine.use_warmup": False, "cosine.min_factor": 0.1}
    for _ in range(2):
        study.enqueue_trial(cosine)
    again = tune(trials=4, parallel=3, out=str(tmp_path), **QUICK).study
    twins = {t.number: t.user_attrs["duplicate_of"] for t in again.trials if "duplicate_of" in t.user_attrs}
    assert twins[2] == 1 and [len(r) for r in seeds_of_runs(again)] == [1, 2, 1]     # trials 1 and 3 ran, not 2
    assert again.trials[2].state == again.trials[1].state and again.trials[2].value == again.trials[1].value
    assert _study.counts(again)[:2] == (4, len(twins))     # (the sampler may draw the constant again)


def test_a_repeat_held_in_its_batch_is_queued_again_when_its_trial_does_not_finish(
        data_env, tmp_path, monkeypatch) -> None:
    """After an out-of-memory error the batch's trials are queued again; the repeat held back for
    one of them goes with it, and is scored as the rerun once that finishes."""
    real = tune_search._run_or_halve
    calls = []

    def out_of_memory_once(study, cfg, asked, *args):
        calls.append([t.number for t in asked])
        if len(calls) > 1:
            return real(study, cfg, asked, *args)
        for trial in asked:                          # what _run_batch does with a batch cut short
            _retries.abandon(study, trial, RuntimeError("CUDA out of memory"))
        return 1

    study = tune(trials=1, parallel=1, out=str(tmp_path), same_init=True, **QUICK).study
    cosine = {"schedule": "cosine", "cosine.use_warmup": False, "cosine.min_factor": 0.1}
    for _ in range(2):
        study.enqueue_trial(cosine)
    monkeypatch.setattr(tune_search, "_run_or_halve", out_of_memory_once)
    again = tune(trials=3, parallel=2, out=str(tmp_path), **QUICK).study
    held = again.trials[2]
    assert calls[0] == [1] and held.state == optuna.trial.TrialState.FAIL and held.user_attrs["interrupted"]
    twins = {t.number: t.user_attrs["duplicate_of"] for t in again.trials if _study.is_twin(t)}
    assert calls[1] == [3] and twins[4] == 3 and again.trials[4].value == again.trials[3].value
    assert _study.counts(again)[0] == 3


def test_a_twin_ends_as_its_trial_ended(tmp_path) -> None:
    """Pruned or failed on NaN, the same run ends the same way."""
    study = optuna.create_study(direction="maximize")
    for state, attrs in ((optuna.trial.TrialState.PRUNED, {"val_acc": [0.5]}),
                         (optuna.trial.TrialState.FAIL, {"failure": "nan", "failed_at_step": 7})):
        first, again = study.ask(), study.ask()
        for key, value in attrs.items():
            first.set_user_attr(key, value)
        study.tell(first, state=state)
        _study.tell_twin(study, again, study.trials[first.number])
        twin = study.trials[again.number]
        assert twin.state == state and _study.is_twin(twin) and _study.is_finished(twin)
        assert all(twin.user_attrs[key] == value for key, value in attrs.items())


def test_a_plateau_best_retrains_on_the_training_part_stepping_on_the_validation_loss(
        data_env, tmp_path, monkeypatch) -> None:
    """Its retrain follows a validation loss, as in the search and in the user's run, not the
    training loss; the constant retrains on the same images, so that the two stay comparable."""
    seen, real_run, real_best = [], tune_final.run_trials, _study.best

    def spy(model, specs, train, val, **kwargs):
        seen.append(([s.schedule for s in specs], len(train), None if val is None else len(val)))
        return real_run(model, specs, train, val, **kwargs)

    def plateau_first(study, where=lambda t: True):        # the plateau trial wins, whatever it scored
        return real_best(study, lambda t: where(t) and t.params["schedule"] == "plateau") or real_best(study, where)

    monkeypatch.setattr(tune_final, "run_trials", spy)
    monkeypatch.setattr(_study, "best", plateau_first)
    result = tune(trials=2, parallel=2, schedules=("plateau",), out=str(tmp_path),    # seed 3: trial 1 draws plateau
                  **{**QUICK, "epochs": 3, "final": True, "final_seeds": 1, "seed": 3})
    assert seen[-1] == (["plateau", "constant"], 256, 500)         # the search's 256 images and its 500 to validate
    assert result.final["setup"]["val_images"] == 500 and result.final["best"]["schedule"] == "plateau"
    assert "retrained on 256 images, plateau stepping on the validation loss of 500 more" in report.verdict(result.study)


def test_a_run_too_short_for_plateau_leaves_it_out_by_default_and_refuses_it_by_name() -> None:
    assert "plateau" in TuneConfig(epochs=3).choices and "plateau" not in TuneConfig(epochs=2).choices
    assert len(TuneConfig(epochs=2).choices) == len(SCHEDULES) - 1
    with pytest.raises(ValueError, match="epochs 2 is too few for plateau, which needs 3: .*leave plateau out"):
        TuneConfig(epochs=2, schedules=("cosine", "plateau"))


def test_resume_with_another_base_lr_is_refused(data_env, tmp_path) -> None:
    tune(trials=2, parallel=2, out=str(tmp_path), **QUICK)
    with pytest.raises(_storage.StudyError, match="runs at base LR 0.05, not --base-lr 0.1"):
        tune(trials=3, parallel=2, out=str(tmp_path), **{**QUICK, "base_lr": 0.1})
    tune(trials=3, parallel=2, out=str(tmp_path), **{**QUICK, "base_lr": None})   # resumes at the stored LR
    assert runs(load(tmp_path)) == 3


def test_missing_data_writes_no_study(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LRFIND_DATA_DIR", str(tmp_path / "nowhere"))
    result = CliRunner().invoke(main, ["tune", "--device", "cpu", "-q", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "train-images-idx3-ubyte" in result.output
    assert not (tmp_path / "o").exists()


def test_warming_schedules_may_peak_above_the_base_lr(data_env, tmp_path) -> None:
    tune(trials=4, parallel=4, out=str(tmp_path), schedules=("onecycle",), max_peak=4.0, **QUICK)
    study = load(tmp_path)
    level = [t.user_attrs["peak_scale"] for t in study.trials
             if t.user_attrs["schedule"] == "constant" and not t.user_attrs["params"].get("warmup")]
    assert level[0] == 1.0                                # the baseline (trial 0) at the base LR ...
    assert all(0.2 <= s <= 2.0 for s in level)            # ... and a plain constant's LR searched around it
    onecycle = [t.user_attrs["peak_scale"] for t in study.trials if t.user_attrs["schedule"] == "onecycle"]
    assert onecycle and all(1.0 <= s <= 4.0 for s in onecycle) and max(onecycle) > 1.0
    from lrfind.study import report

    best = report.best_json(study)
    assert best["lr"] == pytest.approx(0.05 * best["peak_scale"])
    assert f"lr={best['lr']:.12g}" in report.snippet(study)


@pytest.mark.parametrize("make_pruner", [lambda: optuna.pruners.MedianPruner(n_startup_trials=2),
                                         lambda: _pruner.AnnealedFirst(optuna.pruners.MedianPruner(n_startup_trials=2)),
                                         lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=3),
                                         optuna.pruners.NopPruner], ids=["median", "annealed", "hyperband", "none"])
@pytest.mark.parametrize("direction", ["maximize", "minimize"])       # accuracy, loss
def test_batch_pruning_verdicts_equal_optunas_own(make_pruner, direction) -> None:
    pruner = make_pruner()
    study = optuna.create_study(direction=direction, pruner=pruner)
    sign = 1 if direction == "maximize" else -1
    for value in (0.5, 0.7, 0.9):
        trial = study.ask()
        for step in range(3):
            trial.report(sign * (value + 0.01 * step), step)
        study.tell(trial, sign * (value + 0.02))
    batch = [study.ask() for _ in range(6)]
    for i, trial in enumerate(batch):
        trial.report(sign * (0.4 + 0.1 * i), 0)
    expected = [t.should_prune() for t in batch]
    assert _pruner.should_prune(study, batch) == expected
    if isinstance(pruner, (optuna.pruners.MedianPruner, _pruner.AnnealedFirst)):
        assert True in expected and False in expected       # the test tells pruned from kept


def test_sqlite_storage_works_and_an_older_study_db_is_resumed(data_env, tmp_path) -> None:
    db = tmp_path / "study.db"
    tune(trials=2, parallel=2, out=str(tmp_path), storage=f"sqlite:///{db}", **QUICK)
    tune(trials=3, parallel=2, out=str(tmp_path), **QUICK)        # no --storage: the study.db found there
    assert not (tmp_path / "study.log").exists()
    study = optuna.load_study(study_name="lrfind-lenet-mnist", storage=f"sqlite:///{db}")
    assert runs(study) == 3
    result = CliRunner().invoke(main, ["show", "--out", str(tmp_path)])
    assert result.exit_code == 0 and "3 finished trials" in result.output, result.output


@pytest.mark.parametrize("name, content, message", [
    ("study.db", None, "looks like a SQLite file; give it as a URL, sqlite:///"),
    ("notes.log", "these are my notes\nnot a study\n", "is not an Optuna journal file"),
    ("folder", "<dir>", "it is a folder"),
])
def test_a_storage_path_that_is_not_a_journal_is_a_clear_error(tmp_path, name, content, message) -> None:
    path = tmp_path / name
    if content == "<dir>":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(_storage.StudyError, match=message):
        _storage.connect(str(path))
    if content not in (None, "<dir>"):
        assert path.read_text() == content                         # untouched


@pytest.fixture(params=["flock", "no-flock"])
def locks(request, monkeypatch) -> str:
    """Both ways ``_storage`` locks: flock (POSIX), and filelock with Optuna's write lock where the
    system has no flock (Windows), tried here by hiding fcntl."""
    if request.param == "no-flock":
        monkeypatch.setattr(_storage, "fcntl", None)
    return request.param


def test_a_sqlite_file_in_use_by_another_run_is_refused_and_a_journal_is_shared(tmp_path, locks) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with _storage.run_lock(url):
        with pytest.raises(_storage.StudyError, match="in use by another lrfind process; .* use a journal file"):
            with _storage.run_lock(url):
                pass
    with _storage.run_lock(url):          # released: the next run may go on
        pass
    journal = str(tmp_path / "study.log")
    with _storage.run_lock(journal), _storage.run_lock(journal):      # several workers on one machine
        pass


def test_the_claim_lock_lets_one_worker_at_a_time_ask(tmp_path, locks) -> None:
    import threading

    journal, order = tmp_path / "study.log", []

    def other() -> None:
        with _storage.claim_lock(journal):
            order.append("other")

    with _storage.claim_lock(journal):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=0.3)
        order.append("first")
    thread.join(timeout=10)
    assert order == ["first", "other"]


def test_show_with_a_missing_journal_file_is_a_clear_error(tmp_path) -> None:
    result = CliRunner().invoke(main, ["show", "--storage", str(tmp_path / "nope.log")])
    assert result.exit_code == 1 and "no study in" in result.output and "nope.log" in result.output
    assert not (tmp_path / "nope.log").exists()


def test_a_journal_cut_short_by_a_crash_is_mended_and_resumed(data_env, tmp_path, caplog, locks) -> None:
    tune(trials=2, parallel=2, out=str(tmp_path), **QUICK)
    journal = tmp_path / "study.log"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code":5,"worker_id":"x","trial_id":1,"par')   # a write cut in the middle
    with caplog.at_level("WARNING", logger="lrfind"):
        tune(trials=3, parallel=2, out=str(tmp_path), **QUICK)
    assert "last line was cut short" in caplog.text
    assert journal.read_bytes().startswith(whole) and journal.read_bytes().endswith(b"\n")
    assert runs(load(tmp_path)) == 3


@pytest.fixture
def ctrl_c_raises():
    """Python's own Ctrl-C handler, which raises KeyboardInterrupt: a shell starts a command sent to
    the background (`pytest &`) with Ctrl-C ignored, and Python then keeps it ignored."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("where", ["release", "acquire"])
def test_ctrl_c_inside_the_journal_lock_leaves_no_lock_file_and_is_raised_after(tmp_path, monkeypatch, where,
                                                                               ctrl_c_raises) -> None:
    """Optuna's release, interrupted between its rename and its unlink, left the lock file behind
    (the next run waited 30 s for it) under a FileNotFoundError: the lock now finishes, then Ctrl-C."""
    import os
    import signal

    lock = _storage._ShieldedLock(str(tmp_path / "study.log"))
    real_rename, real_open = os.rename, os.open

    def interrupted(real):
        def call(*args, **kwargs):
            signal.raise_signal(signal.SIGINT)        # Ctrl-C arrives here, in the middle of the lock's work
            return real(*args, **kwargs)
        return call

    if where == "acquire":
        monkeypatch.setattr(os, "open", interrupted(real_open))
        with pytest.raises(KeyboardInterrupt):
            lock.acquire()
        monkeypatch.setattr(os, "open", real_open)
        assert os.path.exists(lock._lock_file)            # taken whole, then interrupted: still ours to release
        lock.release()
    else:
        lock.acquire()
        monkeypatch.setattr(os, "rename", interrupted(real_rename))
        with pytest.raises(KeyboardInterrupt):
            lock.release()
    assert os.listdir(tmp_path) == []                       # no lock file, no renamed one
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_write_lock_left_by_a_killed_run_is_removed_by_the_next_run_alone(data_env, tmp_path, caplog) -> None:
    """Optuna would wait 30 s for it, then take it by force; a run that holds the study alone (by
    flock) knows no writer has it."""
    if _storage.fcntl is None:
        pytest.skip("without flock a run cannot tell that it is alone")
    tune(trials=1, parallel=1, out=str(tmp_path), **QUICK)
    (tmp_path / "study.log.lock").touch()                        # a run killed inside a write
    with caplog.at_level("WARNING", logger="lrfind"):
        tune(trials=2, parallel=1, out=str(tmp_path), **QUICK)
    assert "removed the write lock study.log.lock left by a process that stopped while writing" in caplog.text
    assert not (tmp_path / "study.log.lock").exists() and runs(load(tmp_path)) == 2


def test_a_run_too_short_for_a_warmup_still_has_its_constant_baseline(data_env, tmp_path) -> None:
    from lrfind.study import report

    # 256 images at batch 128, one epoch: 2 steps, too few to ask whether to warm up
    result = tune(trials=1, parallel=1, out=str(tmp_path), **{**QUICK, "batch_size": 128, "epochs": 1})
    (trial,) = result.study.trials
    assert trial.params == {"schedule": "constant", "lr_scale": 1.0}           # no warmup asked, the LR still is
    assert _study.constant_baseline(result.study).number == 0
    assert "no schedule beat the constant LR" in report.verdict(result.study)
    assert "did not complete" not in report.verdict(result.study)


def test_a_constant_lr_after_a_warmup_is_judged_against_the_plain_constant() -> None:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    from lrfind.study import report

    study = optuna.create_study(direction="maximize")
    dists = {"schedule": CategoricalDistribution(["constant", "cosine"]),
             "constant.use_warmup": CategoricalDistribution([False, True])}
    plain = {"schedule": "constant", "constant.use_warmup": False}
    warmed = {"schedule": "constant", "constant.use_warmup": True, "constant.warmup": 11}
    for value, params, attrs in [(0.80, plain, {"params": {}}),
                                 (0.90, warmed, {"params": {"warmup": 11, "warmup_start": 0.1}, "peak_scale": 2.0})]:
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={**dists, "constant.warmup": IntDistribution(1, 50)} if "constant.warmup"
            in params else dists, value=value, user_attrs={"schedule": "constant", **attrs}))
    study.set_user_attr("base_lr", 0.01)
    assert _study.constant_baseline(study).number == 0
    text = report.verdict(study)
    assert "constant after a warmup" in text and "90.00% vs constant 80.00% (+10.00 pp)" in text
    assert "best: trial 1, constant after a warmup peaking at LR 0.02, warmup=11 warmup_start=0.1" in text
    assert report.best_json(study)["constant"] == {"trial": 0, "val_acc": 0.80, "val_loss": None, "lr": 0.01}
    study.add_trial(optuna.trial.create_trial(params=plain, distributions=dists, value=0.95,
                                              user_attrs={"schedule": "constant", "params": {}}))
    assert "best: trial 2, constant at LR 0.01\n" in report.verdict(study)        # nothing to list after it


def test_a_missing_database_driver_names_the_package_to_install(monkeypatch) -> None:
    def no_driver(*args, **kwargs):
        raise ImportError("Failed to import DB access module for the specified storage URL.")

    monkeypatch.setattr(optuna.storages, "RDBStorage", no_driver)
    with pytest.raises(_storage.StudyError, match=r"cannot open storage .*host dbhost.*pip install 'lrfind\[postgres\]'"):
        _storage.connect("postgresql://u:secret@dbhost/db")


@pytest.mark.parametrize("epochs, pruned_after_first", [(3, False), (2, True)])
def test_the_median_rule_waits_for_the_second_epoch_when_there_are_three(epochs, pruned_after_first) -> None:
    study = optuna.create_study(direction="maximize", pruner=_pruner.PRUNERS["median"](epochs))
    for value in (0.95, 0.96, 0.97, 0.98, 0.99):
        trial = study.ask()
        trial.report(value, 0)
        trial.report(value, 1)
        study.tell(trial, value)
    climbing = study.ask()                    # a schedule at its peak LR after the first epoch
    climbing.report(0.90, 0)
    assert bool(climbing.should_prune()) is pruned_after_first
    climbing.report(0.91, 1)
    assert climbing.should_prune()            # still the worst after the second: pruned


@pytest.mark.parametrize("schedule, params, judged", [
    ("constant", {}, True),                                               # its LR never falls: judged
    ("warmup", {"warmup": 50}, True),
    ("step", {"step_size": 150, "gamma": 0.3}, True),                     # cut once, before the report
    ("multistep", {"milestones": [150, 250], "gamma": 0.3}, False),       # a cut of 3.3x still to come
    ("wsd", {"decay_steps": 60, "min_factor": 0.01}, False),              # at its peak until the last 60 steps
    ("onecycle", {"pct_start": 0.3}, False),
    ("cosine", {"min_factor": 0.01}, False),
    ("plateau", {"interval": 100}, True),                                 # its next cuts are unknown: judged
])
def test_the_median_rule_waits_for_a_trial_whose_lr_still_has_to_fall(schedule, params, judged) -> None:
    """Three epochs of 100 steps; a trial reports after its second epoch far below the others."""
    study = optuna.create_study(direction="maximize", pruner=_pruner.PRUNERS["median"](3))
    study.set_user_attr("steps", 300)
    study.set_user_attr("steps_per_epoch", 100)
    for value in (0.95, 0.96, 0.97, 0.98, 0.99):
        trial = study.ask()
        trial.set_user_attr("schedule", "constant")
        trial.set_user_attr("params", {})
        trial.report(value, 0)
        trial.report(value, 1)
        study.tell(trial, value)
    trial = study.ask()
    trial.set_user_attr("schedule", schedule)
    trial.set_user_attr("params", get_schedule(schedule).validate(300, **params))
    trial.report(0.80, 0)
    trial.report(0.81, 1)
    assert bool(trial.should_prune()) is judged
    assert _pruner.should_prune(study, [trial]) == [judged]


def test_a_study_does_not_import_torch_dynamo(mnist_root, tmp_path) -> None:
    """Its range test steps from an OptimizerConfig, not a torch.optim optimizer (whose creation
    imports torch._dynamo: 1.4 s on a 2-core CPU). tests/test_gpu.py checks the same on CUDA."""
    assert dynamo_modules_after(f"""
from lrfind import tune
tune(trials=2, epochs=1, parallel=2, batch_size=64, train_subset=512, val_size=200, device="cpu", progress=False,
     data_dir={str(mnist_root)!r}, out={str(tmp_path / "run")!r}, range_test_iters=50, final_seeds=1)
""") == []


def test_weight_decay_is_torchs_default_stored_with_the_study_and_in_the_snippet() -> None:
    """AdamW's own default decay is 0.01: a study without --weight-decay trains with it, and the
    snippet names it, so that the user's AdamW is the one the study tuned."""
    import torch

    adamw = TuneConfig(optimizer="adamw")
    assert adamw.optimizer_config.weight_decay == 0.01 and adamw.setup()["weight_decay"] == 0.01
    assert TuneConfig(optimizer="sgd", weight_decay=5e-4).optimizer_config.weight_decay == 5e-4
    # no decay is left out of the stored setup: studies from before the option still resume
    assert "weight_decay" not in TuneConfig(optimizer="sgd").setup()
    from lrfind import get_schedule

    code = get_schedule("cosine").snippet(0.01, 100, optimizer="adamw", weight_decay=0.0, min_factor=0.0)
    scope = {"model": torch.nn.Linear(2, 1)}
    exec(code, scope)
    assert type(scope["optimizer"]) is torch.optim.AdamW and scope["optimizer"].defaults["weight_decay"] == 0.0
    sgd = get_schedule("cosine").snippet(0.01, 100, optimizer="sgd", weight_decay=5e-4, min_factor=0.0)
    assert "torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)" in sgd


def test_timeout_stops_starting_trials_and_a_run_without_it_goes_on(data_env, tmp_path, monkeypatch) -> None:
    clock = {"now": 0.0}
    monkeypatch.setattr(_search_loop, "now", lambda: clock["now"])
    real_run = tune_search._run_batch

    def batch_takes_a_minute(*args, **kwargs):
        clock["now"] += 60.0
        return real_run(*args, **kwargs)

    monkeypatch.setattr(tune_search, "_run_batch", batch_takes_a_minute)
    # a seed each: every trial asked runs (none repeats a finished one), so each batch takes the minute
    result = tune(trials=6, parallel=2, out=str(tmp_path), timeout="1m30s", same_init=False, **QUICK)
    study = load(tmp_path)
    assert len(_study.finished(study)) == 4          # batches start at 0 s and 60 s; none after 90 s
    assert study.user_attrs["stopped_by_timeout"] == {"timeout": 90.0, "finished": 4, "trials": 6}
    from lrfind.study import report
    assert "search stopped by --timeout 1m30s after 4 of 6 trials: run the same command again" in report.verdict(study)
    assert json.loads((tmp_path / "best.json").read_text())["stopped_by_timeout"]["finished"] == 4
    assert result.study.user_attrs["stopped_by_timeout"]

    tune(trials=6, parallel=2, out=str(tmp_path), **QUICK)              # no timeout: the rest (a seed each, stored)
    study = load(tmp_path)
    assert len(_study.finished(study)) == 6 and not study.user_attrs["stopped_by_timeout"]
    assert "search stopped" not in report.verdict(study)


def test_timeout_still_trains_one_batch_a_run(data_env, tmp_path) -> None:
    tune(trials=4, parallel=2, out=str(tmp_path), timeout=1e-9, **QUICK)
    assert len(_study.finished(load(tmp_path))) == 2


@pytest.mark.parametrize("value, message", [("10 minutes", "--timeout '10 minutes' is not a duration"),
                                            ("0", "--timeout '0' is not a positive duration"),
                                            ("-1m", "is not a duration: give seconds (600)")])
def test_a_bad_timeout_is_one_line_before_anything_is_read(tmp_path, value, message) -> None:
    result = CliRunner().invoke(main, ["tune", "--timeout", value, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_durations_read_as_people_type_them() -> None:
    from lrfind._duration import duration_text, parse_duration

    assert [parse_duration(t) for t in ("600", "90s", "10m", "1h30m", "2.5h", "1m30", " 10 m ")] == \
        [600, 90, 600, 5400, 9000, 90, 600]
    assert [duration_text(s) for s in (600, 5400, 42.5, 90, 3600)] == ["10m", "1h30m", "42.5s", "1m30s", "1h"]
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("ten minutes")


def test_stage_3_of_an_earlier_best_is_not_reported_as_the_new_best(data_env, tmp_path) -> None:
    from lrfind.study import report

    tune(trials=2, parallel=2, out=str(tmp_path), **{**QUICK, "final": True, "final_seeds": 1})
    study = load(tmp_path)
    best = _study.best(study)
    assert report.final_of(study, best)["best"]["trial"] == best.number
    stale = dict(study.user_attrs["final"], best={**study.user_attrs["final"]["best"], "trial": 99,
                                                  "params": {"stale_parameter": 1}})
    study.set_user_attr("final", stale)             # as if trials added with --no-final had beaten it
    text = report.verdict(study)
    assert f"test accuracy: not measured for trial {best.number} (stage 3 retrained trial 99" in text
    assert "retrained on" not in text
    assert "final" not in report.best_json(study)
    assert "stale_parameter" not in (report.snippet(study) or "x")     # the best's own parameters


def test_a_study_scored_on_validation_loss_ranks_prunes_and_reports_by_it(data_env, tmp_path) -> None:
    from lrfind.study import report

    result = tune(trials=4, parallel=4, out=str(tmp_path), metric="loss", **{**QUICK, "final": True, "final_seeds": 1})
    study = load(tmp_path)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and _study.metric_of(study) == "loss"
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all(t.value == t.user_attrs["val_loss"][-1] for t in complete)
    best = _study.best(study)
    assert best.value == min(t.value for t in complete)
    text = report.verdict(study)
    if best.number != _study.constant_baseline(study).number:
        assert "validation loss " in text and " vs constant " in text
    assert "test loss: " in text and result.final["best"]["test_loss"] > 0
    assert report.top_table(study).splitlines()[0].split()[2:4] == ["val", "loss"]
    data = json.loads((tmp_path / "best.json").read_text())
    assert data["metric"] == "loss" and data["val_loss"] == best.value and data["val_acc"] == best.user_attrs["val_acc"][-1]
    assert (tmp_path / "val_loss.png").stat().st_size > 1000 and (tmp_path / "val_acc.png").is_file()
    with pytest.raises(_storage.StudyError, match="metric 'loss' there, 'accuracy' here"):
        tune(trials=5, parallel=4, out=str(tmp_path), **QUICK)
    with pytest.raises(ValueError, match="metric must be 'accuracy' or 'loss', got 'auc'"):
        TuneConfig(metric="auc")


def test_a_study_stored_before_the_metric_option_resumes_as_accuracy(data_env, tmp_path) -> None:
    tune(trials=2, parallel=2, out=str(tmp_path), **QUICK)
    study = load(tmp_path)
    older = {k: v for k, v in study.user_attrs["lrfind_setup"].items() if k != "metric"}
    study.set_user_attr("lrfind_setup", older)
    tune(trials=3, parallel=2, out=str(tmp_path), **QUICK)
    assert runs(load(tmp_path)) == 3


def test_a_study_stored_with_the_old_val_size_default_resumes_and_a_new_one_stores_none(data_env, tmp_path) -> None:
    """10,000 was the default, a cap at a sixth of the set; None (the default) means that now."""
    tune(trials=2, parallel=2, out=str(tmp_path), **QUICK)
    study = load(tmp_path)
    assert study.user_attrs["lrfind_setup"]["val_size"] is None
    study.set_user_attr("lrfind_setup", {**study.user_attrs["lrfind_setup"], "val_size": 10_000})
    tune(trials=3, parallel=2, out=str(tmp_path), **QUICK)
    assert runs(load(tmp_path)) == 3
    with pytest.raises(_storage.StudyError, match="val_size None there, 500 here"):
        tune(trials=4, parallel=2, out=str(tmp_path), val_size=500, **QUICK)


@pytest.mark.parametrize("direction, key, best, constant, expected", [
    ("maximize", "test_acc", [0.99, 0.98], [0.97, 0.975], "no clear gain from decay: +1.25 pp ± 0.75 test accuracy"),
    ("maximize", "test_acc", [0.99, 0.96], [0.97, 0.975], "no clear gain from decay: +0.25 pp ± 1.75"),
    ("maximize", "test_acc", [0.96, 0.97], [0.97, 0.975], "the constant LR did better: -0.75 pp ± 0.25"),
    ("maximize", "test_acc", [0.99, 0.985, 0.98], [0.97, 0.975, 0.965], "decay helps: +1.50 pp ± 0.29 test accuracy"),
    ("maximize", "test_acc", [0.99], [0.97], "decay gains +2.00 pp test accuracy over the constant LR on 1 paired "
                                             "seed: one seed gives no estimate of the noise"),
    ("minimize", "test_loss", [0.10, 0.12], [0.12, 0.13], "decay helps: -0.0150 ± 0.005 test loss"),     # lower
    ("minimize", "test_loss", [0.14, 0.15], [0.12, 0.13], "the constant LR did better: +0.0200 ± 0.0000"),
])
def test_stage_3_ends_with_what_it_says_about_the_pick(direction, key, best, constant, expected) -> None:
    from lrfind.study import report

    study = optuna.create_study(direction=direction)
    pair = {label: {"trial": n, key: sum(v) / len(v), key + "_per_seed": v}
            for label, n, v in (("best", 1, best), ("constant", 0, constant))}
    text = report._conclusion(study, pair["best"], pair["constant"], key)
    assert text.startswith("verdict: ") and expected in text


def test_a_stage_1_that_swept_again_at_half_the_pace_says_so_in_the_report(data_env, tmp_path, monkeypatch) -> None:
    import numpy as np
    from lrfind.rangetest.result import RangeTestResult

    calls = []

    def fake_find_lr(model, loader, *, num_iter, repeats, **kw):     # what find_lr returns after slowing down
        calls.append((num_iter, repeats))
        lrs = np.geomspace(1e-6, 1, 2 * num_iter)
        losses = np.where(np.arange(lrs.size) < 0.8 * lrs.size, np.linspace(2.3, 0.5, lrs.size), 5.0)
        return RangeTestResult(lrs, losses, num_iter=2 * num_iter, seed_lrs=[0.03, 0.035, 0.04],
                               config={"faster_sweeps": {"num_iter": num_iter, "seed_lrs": [0.006, 0.05, 0.06]}})

    monkeypatch.setattr(tune_lr, "find_lr", fake_find_lr)
    result = tune(trials=1, parallel=1, out=str(tmp_path), **{**QUICK, "base_lr": None, "range_test_iters": 100,
                                                              "range_test_repeats": 3})
    assert calls == [(100, 3)]                                      # the median of 3 sweeps, as asked
    assert result.base_lr == 0.035 and result.study.user_attrs["range_test"]["num_iter"] == 200
    assert ("the median of 3 sweeps' suggestions 0.03, 0.035, 0.04 at 200 steps each; at 100 steps they disagreed "
            "(0.006, 0.05, 0.06), so it swept again at half the pace") in result.summary()


def test_the_report_names_the_sweeps_left_out_of_the_median() -> None:
    from lrfind.study import report

    stored = {"seed_lrs": [0.0066, 0.046, 0.066], "shallow": [0], "num_iter": 300}
    assert report._base_lr_source("range test", stored) == (
        "range test, the median of 2 sweeps' suggestions 0.046, 0.066 (1 more fell too little to count and was "
        "left out: 0.0066)")
    slowed = {"seed_lrs": [0.03, 0.035, 0.04], "num_iter": 600,
              "faster_sweeps": {"num_iter": 300, "seed_lrs": [0.006, 0.05, 0.007], "shallow": [0, 2]}}
    assert report._base_lr_source("range test", slowed).endswith(
        "at 600 steps each; at 300 steps they disagreed (0.006 shallow, 0.05, 0.007 shallow), so it swept "
        "again at half the pace")


def test_an_unknown_argument_names_the_field_it_probably_meant_before_anything_is_read(tmp_path) -> None:
    with pytest.raises(TypeError, match=r"tune got unknown argument\(s\): epoch \(did you mean epochs\?\), "
                                        r"n_trials \(did you mean trials\?\)\. .*help\(lrfind.TuneConfig\)"):
        tune(epoch=1, n_trials=3, out=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    import lrfind
    assert lrfind.TuneConfig is tune_config.TuneConfig and "LoopConfig" in dir(lrfind)


def test_a_clipped_study_keeps_its_norm_for_a_resume_and_for_your_own_run(data_env, tmp_path) -> None:
    import lrfind

    tune(trials=2, parallel=2, out=str(tmp_path), max_grad_norm=0.5, **QUICK)
    assert load(tmp_path).user_attrs["lrfind_setup"]["max_grad_norm"] == 0.5
    best = lrfind.load_best(tmp_path)
    assert best.max_grad_norm == 0.5 and "clipped to norm 0.5" in str(best)
    assert "torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)" in best.snippet(epochs=2, steps_per_epoch=4)
    assert "clip_grad_norm_(model.parameters(), 0.5)" in (tmp_path / "best_schedule.py").read_text()
    before = len(load(tmp_path).trials)
    result = CliRunner().invoke(main, ["tune", "--trials", "4", "--epochs", "2", "--batch-size", "64",
                                       "--train-subset", "256", "--base-lr", "0.05", "--device", "cpu", "-q",
                                       "--out", str(tmp_path)])        # the same, unclipped
    assert result.exit_code == 1 and "exists with another setup" in result.output and "max_grad_norm" in result.output
    assert len(load(tmp_path).trials) == before


def test_stage_3_of_the_same_best_is_run_once_and_then_taken_from_the_study(data_env, tmp_path, monkeypatch) -> None:
    """A rerun, or a second worker of the study, takes stage 3's stored results while its best is
    the same and its seeds as many; more seeds retrain."""
    runs = []
    real = tune_final.retrain
    monkeypatch.setattr(tune_final, "retrain", lambda *args: runs.append(1) or real(*args))
    settings = {**QUICK, "final": True, "final_seeds": 1}
    first = tune(trials=2, parallel=2, out=str(tmp_path), **settings)
    again = tune(trials=2, parallel=2, out=str(tmp_path), **settings)
    assert len(runs) == 1 and again.final == first.final
    tune(trials=2, parallel=2, out=str(tmp_path), **{**settings, "final_seeds": 2})
    assert len(runs) == 2


@pytest.mark.filterwarnings("ignore:Some regimes")     # PED-ANOVA on the one-trial parameter; the report hides it too
def test_the_importances_figure_shows_what_matters_and_counts_the_rest(tmp_path, monkeypatch) -> None:
    import optuna.importance

    from lrfind.study.figures import plot_importances

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(30):
        trial = study.ask()
        x = trial.suggest_float("x", 0, 1)
        if i == 0:
            trial.suggest_float("once", 0, 1)               # a conditional parameter of one trial
        study.tell(trial, x)
    # what Optuna 5 says of it (4.9 leaves a parameter of one trial out altogether): the figure's part is
    # to show the one that matters and count the other
    monkeypatch.setattr(optuna.importance, "get_param_importances",
                        lambda study, evaluator: {"x": 0.998, "once": 0.002})
    fig = plot_importances(study, path=tmp_path / "i.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x"]
    assert "(1 more parameter below 0.005 not shown)" in ax.get_title() and (tmp_path / "i.png").is_file()


def test_the_time_line_counts_start_up_and_what_follows_the_stages() -> None:
    from lrfind.cli.tune import _timing

    seconds = {"setup": 0.6, "range_test": 0.6, "search": 4.5, "final": 1.1}
    assert _timing(seconds, started=2.0, total=10.8) == (
        "time: start-up 2.0 s, data and storage 0.6 s, range test 0.6 s, trials 4.5 s, final 1.1 s, "
        "report and figures 2.0 s; 10.8 s since the process started")
    assert _timing(seconds) == "time: data and storage 0.6 s, range test 0.6 s, trials 4.5 s, final 1.1 s"


def test_a_study_runs_with_its_trials_folded_as_on_a_gpu(data_env, tmp_path, monkeypatch, caplog) -> None:
    """The GPU's way on the CPU: trials vectorized, so folded into the channels; pruned trials
    leave the batch, and the final stage retrains folded too."""
    import logging

    real = FusedTrials.__init__

    def vectorized(self, *args, **kwargs):
        real(self, *args, **{**kwargs, "vectorize": True})

    monkeypatch.setattr(FusedTrials, "__init__", vectorized)
    class PruneOdd(optuna.pruners.BasePruner):       # trials 1 and 3 leave the batch after an epoch
        def prune(self, study, trial) -> bool:
            return trial.number % 2 == 1

    monkeypatch.setitem(_pruner.PRUNERS, "median", lambda epochs: PruneOdd())
    with caplog.at_level(logging.INFO, logger="lrfind"):
        result = tune(trials=4, parallel=4, out=str(tmp_path), **{**QUICK, "final": True, "final_seeds": 1})
    assert "the 4 trials run folded into the channels" in caplog.text and "vmapped whole" not in caplog.text
    assert caplog.text.count("folded into the channels") == 2          # the final stage's retrains too
    assert [t.state for t in result.study.trials] == [TrialState.COMPLETE, TrialState.PRUNED] * 2
    assert 0 < result.final["best"]["test_acc"] <= 1
