"""load_best: a study's best schedule in a training run of the user's own, at any length."""

from __future__ import annotations

import json
import warnings

import numpy as np
import optuna
import pytest
import torch

from lrfind import SCHEDULES, get_schedule, load_best, tune
from lrfind.engine.optimizer import OptimizerConfig
from lrfind.study.best import BestFileError, TunedSchedule

QUICK = dict(epochs=2, batch_size=64, train_subset=256, device="cpu", progress=False, base_lr=0.05, seed=0)


def lrs_of(scheduler, optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_the_best_of_a_study_rebuilds_its_trial_and_its_stage_3_run(mnist_root, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LRFIND_DATA_DIR", str(mnist_root))
    result = tune(trials=3, parallel=3, out=str(tmp_path), final_seeds=1, **QUICK)
    data = json.loads((tmp_path / "best.json").read_text())
    best = load_best(tmp_path)
    assert best.schedule == data["schedule"] and best.lr == pytest.approx(data["lr"]) and best.epochs == 2
    assert best.test_acc == pytest.approx(data["final"]["best"]["test_acc"])
    per_epoch = result.study.user_attrs["steps_per_epoch"]
    assert best.params(epochs=2, steps_per_epoch=per_epoch) == data["params"]             # the trial's own run
    final_per_epoch = data["final"]["setup"]["steps"] // 2
    assert best.params(epochs=2, steps_per_epoch=final_per_epoch) == data["final"]["best"]["params"]   # stage 3's

    model = torch.nn.Linear(3, 2)
    optimizer = best.optimizer(model.parameters())
    assert type(optimizer) is torch.optim.SGD and optimizer.param_groups[0]["lr"] == pytest.approx(data["lr"])
    total = 2 * per_epoch
    got = lrs_of(best.scheduler(optimizer, epochs=2, steps_per_epoch=per_epoch), optimizer, total)
    want = data["lr"] * get_schedule(data["schedule"]).factor(np.arange(total), total, **data["params"])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert load_best(tmp_path / "best.json") == best == result.best
    written = (tmp_path / "best_schedule.py").read_text()          # the same schedule, for stage 3's run
    assert written.endswith(best.snippet(epochs=2, steps_per_epoch=final_per_epoch))

    from lrfind.study import report

    result.study.set_user_attr("steps_per_epoch", None)           # a study stored before lrfind kept it
    assert report.best_json(result.study)["steps_per_epoch"] == per_epoch and result.best == best

    # the same from the command line, for a run of the user's
    from click.testing import CliRunner
    from lrfind.cli import main

    shown = CliRunner().invoke(main, ["show", "--out", str(tmp_path), "--epochs", "6", "--steps-per-epoch", "50"])
    assert shown.exit_code == 0, shown.output
    code = (tmp_path / "best_schedule_6x50.py").read_text()
    assert f"best_schedule.py is for 2 epochs of {final_per_epoch} steps; for your own run: lrfind show" in shown.output
    assert f"for 6 epochs of 50 steps (tuned on 2 of {per_epoch})" in shown.output and code.split("\n", 1)[1] in shown.output
    assert best.snippet(epochs=6, steps_per_epoch=50) in code and "300 steps in all" in code
    assert (tmp_path / "best_schedule_6x50.png").stat().st_size > 1000
    for args, message in [(["--epochs", "6"], "--epochs and --steps-per-epoch go together"),
                          (["--epochs", "1", "--steps-per-epoch", "1"], "needs a run of at least")]:
        bad = CliRunner().invoke(main, ["show", "--out", str(tmp_path), *args])
        assert bad.exit_code == 2 and message in bad.output and "best:" not in bad.output


def test_whole_epoch_periods_keep_their_share_of_a_longer_run() -> None:
    tuned = TunedSchedule("step", 0.1, {"schedule": "step", "step.use_warmup": False, "step.step_epochs": 1,
                                        "step.gamma": 0.5}, OptimizerConfig(), epochs=3, steps_per_epoch=100)
    assert tuned.params(epochs=3, steps_per_epoch=100)["step_size"] == 100
    assert tuned.params(epochs=3, steps_per_epoch=7)["step_size"] == 7            # whole epochs of another size
    assert tuned.params(epochs=30, steps_per_epoch=100)["step_size"] == 1000      # a third of the run, as tuned
    assert tuned.params(epochs=1, steps_per_epoch=300)["step_size"] == 100        # under 2 epochs: a fraction
    # tuned on one epoch (a fraction of it), after a warmup of 5%: whole epochs of a longer run, warmup kept
    short = TunedSchedule("cosine_restarts", 0.1, {
        "schedule": "cosine_restarts", "cosine_restarts.use_warmup": True, "cosine_restarts.warmup_frac": 0.05,
        "cosine_restarts.T_0_frac": 0.25, "cosine_restarts.T_mult": 1, "cosine_restarts.min_factor": 0.01},
        OptimizerConfig(), epochs=1, steps_per_epoch=400)
    assert short.params(epochs=1, steps_per_epoch=400) == {"T_0": 95, "T_mult": 1, "min_factor": 0.01,
                                                          "warmup": 20, "warmup_start": 0.1}
    longer = short.params(epochs=8, steps_per_epoch=400)
    assert longer["warmup"] == 160 and longer["T_0"] == 800                      # 2 of the 7 epochs after warmup


def test_a_best_file_from_before_cycle_momentum_rebuilds_the_one_cycle_it_tuned() -> None:
    """best.json of a study stored before one-cycle's search space asked whether to cycle the momentum."""
    tuned = TunedSchedule("onecycle", 0.1, {
        "schedule": "onecycle", "onecycle.pct_start": 0.3, "onecycle.anneal_strategy": "cos",
        "onecycle.div_factor": 10.0, "onecycle.final_div_factor": 100.0}, OptimizerConfig(), epochs=3,
        steps_per_epoch=100)
    assert tuned.params(epochs=10, steps_per_epoch=100)["cycle_momentum"] is False
    optimizer = tuned.optimizer([torch.zeros(1, requires_grad=True)])
    scheduler = tuned.scheduler(optimizer, epochs=10, steps_per_epoch=100)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["momentum"] == 0.9                          # the optimizer's own, kept
    assert "cycle_momentum=False" in tuned.snippet(epochs=10, steps_per_epoch=100)


def test_every_schedule_rebuilds_at_other_lengths_without_warnings() -> None:
    for name in SCHEDULES:                   # a new entry is covered the day it is added
        schedule = get_schedule(name)
        for seed, (tuned_epochs, tuned_per_epoch) in enumerate([(3, 50), (1, 60), (5, 20)] * 3):
            trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
            trial.suggest_categorical("schedule", [name])
            own = schedule.suggest(trial, tuned_epochs * tuned_per_epoch, tuned_per_epoch)
            tuned = TunedSchedule(name, 0.1, dict(trial.params), OptimizerConfig("adamw", weight_decay=0.01),
                                  epochs=tuned_epochs, steps_per_epoch=tuned_per_epoch)
            assert tuned.params(epochs=tuned_epochs, steps_per_epoch=tuned_per_epoch) == own
            for epochs, per_epoch in ((3, 50), (1, 40), (2, 10), (40, 391)):
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    params = tuned.params(epochs=epochs, steps_per_epoch=per_epoch)
                    optimizer = tuned.optimizer([torch.zeros(1, requires_grad=True)])
                    tuned.scheduler(optimizer, epochs=epochs, steps_per_epoch=per_epoch)
                assert schedule.validate(epochs * per_epoch, **params)
            lrs = tuned.lrs(epochs=7, steps_per_epoch=30)
            assert lrs.shape == (210,) and np.all(np.isfinite(lrs)) and lrs.max() <= 0.1 * (1 + 1e-9)
        assert "AdamW" in tuned.snippet(epochs=40, steps_per_epoch=391)


def test_an_optimizer_at_another_lr_is_warned_about() -> None:
    tuned = TunedSchedule("constant", 0.05, {"schedule": "constant", "constant.use_warmup": False},
                          OptimizerConfig(), epochs=3, steps_per_epoch=10)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.warns(UserWarning, match="the optimizer's LR is 0.1, the tuned peak LR 0.05") as said:
        tuned.scheduler(optimizer, epochs=2, steps_per_epoch=10)
    assert said[0].filename == __file__                                       # the user's line, not lrfind's
    with pytest.warns(UserWarning, match="the optimizer's LR is 0.1") as said:
        tuned.lightning(optimizer, epochs=2, steps_per_epoch=10)
    assert said[0].filename == __file__
    with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
        tuned.params(epochs=0, steps_per_epoch=10)
    assert tuned.params(epochs=np.int64(2), steps_per_epoch=np.int32(10)) == tuned.params(epochs=2, steps_per_epoch=10)


def test_lightning_gets_a_scheduler_stepped_after_every_optimizer_step() -> None:
    """Lightning steps a scheduler once an epoch unless told "interval": "step"; plateau steps on a
    logged metric after each epoch. (Tried with lightning 2.6.6's Trainer: the LR of every step equal
    to ``best.lrs``; here without Lightning, which is not a dependency.)"""
    choices = {"schedule": "onecycle", "onecycle.pct_start": 0.3, "onecycle.anneal_strategy": "cos",
               "onecycle.div_factor": 10.0, "onecycle.final_div_factor": 100.0, "onecycle.cycle_momentum": False}
    tuned = TunedSchedule("onecycle", 0.1, choices, OptimizerConfig(), epochs=3, steps_per_epoch=100)
    optimizer = tuned.optimizer([torch.zeros(1, requires_grad=True)])
    config = tuned.lightning(optimizer, epochs=2, steps_per_epoch=25)
    assert config["optimizer"] is optimizer
    scheduler = config["lr_scheduler"].pop("scheduler")
    assert config["lr_scheduler"] == {"interval": "step", "frequency": 1}
    np.testing.assert_allclose(lrs_of(scheduler, optimizer, 50), tuned.lrs(epochs=2, steps_per_epoch=25), rtol=1e-12)

    plateau = TunedSchedule("plateau", 0.1, {"schedule": "plateau", "plateau.factor": 0.5, "plateau.patience": 1,
                                             "plateau.threshold": 1e-3},
                            OptimizerConfig(), epochs=4, steps_per_epoch=100)
    config = plateau.lightning(plateau.optimizer([torch.zeros(1, requires_grad=True)]), epochs=5,
                               steps_per_epoch=40, monitor="val/loss")["lr_scheduler"]
    assert isinstance(config["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (config["interval"], config["monitor"]) == ("epoch", "val/loss")


@pytest.mark.parametrize("content, message", [
    (None, "no file"), ("not json", "is not a best.json of lrfind"), ('{"study": "x", "trials": 0}', "holds no best"),
    ('{"schedule": "cosine", "lr": 0.1, "setup": {}}', "written by an older lrfind"),
])
def test_a_bad_best_file_is_one_clear_error(tmp_path, content, message) -> None:
    if content is not None:
        (tmp_path / "best.json").write_text(content)
    with pytest.raises(BestFileError, match=message):
        load_best(tmp_path)
