"""The schedule a study found, for a training run of your own: ``load_best("lrfind_out")``.

A study's trials choose their schedule's parameters relative to the run (fractions of it, final
factors, whole epochs), so its best trial's choices give the same LR curve, stretched, over a run
of any length: ``load_best(out).scheduler(optimizer, epochs=30, steps_per_epoch=len(loader))``.
``best_schedule.py`` is the same schedule written out for the study's own run length.
"""

from __future__ import annotations

import json
import math
import numbers
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from lrfind._errors import warn_at_users_line
from lrfind._output import counted
from lrfind.engine.optimizer import OptimizerConfig
from lrfind.schedules import Replay, get_schedule, stored_choices
from lrfind.study import trials as _study


class BestFileError(ValueError):
    """A best.json that cannot be read, or one written before it kept the trial's choices."""


@dataclass(frozen=True)
class TunedSchedule:
    """The best trial of a study: its schedule, peak LR, optimizer, and the choices that rescale.

    ``lr`` is the schedule's highest LR (the base LR times ``peak_scale``): the optimizer's LR, which
    the scheduler multiplies by at most 1. ``epochs`` is the run the trials were tuned on.
    """

    schedule: str
    lr: float
    choices: dict[str, Any]            # the trial's Optuna parameters
    optimizer_config: OptimizerConfig
    epochs: int                        # the tuned run: epochs x steps_per_epoch optimizer steps
    steps_per_epoch: int
    study: str = ""
    val_acc: float | None = None       # None for regression targets
    test_acc: float | None = None      # stage 3's mean, when it tested this trial
    val_loss: float | None = None
    max_grad_norm: float | None = None  # the study clipped every gradient's norm to this

    def params(self, *, epochs: int, steps_per_epoch: int) -> dict[str, Any]:
        """The schedule's parameters, in optimizer steps, for a run of ``epochs`` x ``steps_per_epoch``."""
        for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
            if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        epochs, steps_per_epoch = int(epochs), int(steps_per_epoch)      # numpy's integers too
        schedule = get_schedule(self.schedule)
        total = epochs * steps_per_epoch
        if total < max(schedule.min_total, 2):
            raise ValueError(f"{self.schedule} needs a run of at least {max(schedule.min_total, 2)} steps, "
                             f"got {epochs} x {steps_per_epoch}")
        tuned_total = self.epochs * self.steps_per_epoch
        choices = stored_choices(self.choices)
        tuned = schedule.suggest(optuna.trial.FixedTrial(choices), tuned_total, self.steps_per_epoch)
        inner = tuned_total - (tuned.get("warmup", 0) if schedule.warmup_allowed else 0)   # periods count after it
        replay = Replay(choices, steps=inner, epochs=inner // self.steps_per_epoch,
                        steps_per_epoch=self.steps_per_epoch)
        return schedule.suggest(replay, total, steps_per_epoch)

    def optimizer(self, params, lr: float | None = None) -> torch.optim.Optimizer:
        """The tuned ``torch.optim`` optimizer over ``params``, at the tuned peak LR (or ``lr``)."""
        return self.optimizer_config.torch_optimizer(params, lr=self.lr if lr is None else lr)

    def scheduler(self, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int):
        """torch's own scheduler for a run of ``epochs`` x ``steps_per_epoch`` optimizer steps: call
        ``scheduler.step()`` after every ``optimizer.step()`` (plateau: ``scheduler.step(val_loss)``
        after every epoch). It multiplies the optimizer's LR: build that with ``self.optimizer`` or at
        ``lr=self.lr``; a warning says when its largest LR is not the tuned one."""
        return self._scheduler(optimizer, epochs, steps_per_epoch)

    def _scheduler(self, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int):
        """``scheduler``, warning at the line that called the public method that called this."""
        params = self.params(epochs=epochs, steps_per_epoch=steps_per_epoch)
        check_optimizer_lr(optimizer, self.lr)
        return get_schedule(self.schedule).build(optimizer, epochs * steps_per_epoch, **params)

    def lightning(self, optimizer: torch.optim.Optimizer, *, epochs: int, steps_per_epoch: int,
                  monitor: str = "val_loss") -> dict[str, Any]:
        """What a LightningModule's ``configure_optimizers()`` returns to train with this schedule:
        the optimizer, and the scheduler stepped after every optimizer step (``"interval": "step"``;
        Lightning's default, once an epoch, would hold a per-step schedule nearly still). A plateau
        schedule steps after every epoch on the logged metric ``monitor`` instead. ::

            def configure_optimizers(self):
                best = lrfind.load_best("lrfind_out")
                optimizer = best.optimizer(self.parameters())
                epochs = self.trainer.max_epochs      # estimated_stepping_batches: the run's optimizer steps
                return best.lightning(optimizer, epochs=epochs,
                                      steps_per_epoch=self.trainer.estimated_stepping_batches // epochs)
        """
        from lrfind.rangetest.lightning import scheduler_config

        scheduler = self._scheduler(optimizer, epochs, steps_per_epoch)
        return scheduler_config(optimizer, scheduler,
                                monitor=monitor if get_schedule(self.schedule).needs_metric else None)

    def snippet(self, *, epochs: int, steps_per_epoch: int) -> str:
        """Python that builds the optimizer and torch scheduler for that run, without lrfind."""
        cfg = self.optimizer_config
        return get_schedule(self.schedule).snippet(
            self.lr, epochs * steps_per_epoch, optimizer=cfg.name, momentum=cfg.momentum,
            weight_decay=cfg.weight_decay, steps_per_epoch=steps_per_epoch, max_grad_norm=self.max_grad_norm,
            **self.params(epochs=epochs, steps_per_epoch=steps_per_epoch))

    def lrs(self, *, epochs: int, steps_per_epoch: int):
        """The LR at every optimizer step of that run (numpy); plateau's as if the loss kept improving."""
        import numpy as np

        total = epochs * steps_per_epoch
        params = self.params(epochs=epochs, steps_per_epoch=steps_per_epoch)
        schedule = get_schedule(self.schedule)
        improving = 0.9 ** np.arange(total // params["interval"] + 1) if schedule.needs_metric else None
        return self.lr * schedule.factor(np.arange(total), total, metrics=improving, **params)

    def plot(self, *, epochs: int, steps_per_epoch: int, path: str | Path | None = None):
        """The LR over the tuned run beside the LR over yours (``epochs`` x ``steps_per_epoch``)."""
        from lrfind.plots.figures import plot_runs

        runs = {f"tuned: {self.epochs} x {self.steps_per_epoch} steps":
                (self.lrs(epochs=self.epochs, steps_per_epoch=self.steps_per_epoch), self.steps_per_epoch),
                f"your run: {epochs} x {steps_per_epoch} steps":
                (self.lrs(epochs=epochs, steps_per_epoch=steps_per_epoch), steps_per_epoch)}
        note = " (drawn as if the loss kept improving)" if get_schedule(self.schedule).needs_metric else ""
        return plot_runs(runs, title=f"{self.schedule} peaking at LR {self.lr:.3g}{note}", path=path)

    def __str__(self) -> str:
        score = (f", {100 * self.val_acc:.2f}% validation" if self.val_acc is not None else
                 f", validation loss {self.val_loss:.4g}" if self.val_loss is not None else "")
        score += f", {100 * self.test_acc:.2f}% test" if self.test_acc is not None else ""
        clipped = f", gradients clipped to norm {self.max_grad_norm:g}" if self.max_grad_norm is not None else ""
        return (f"{self.schedule} peaking at LR {self.lr:.3g} ({self.optimizer_config.name}{clipped}; "
                f"tuned on {counted(self.epochs, 'epoch')}{score})")


def check_optimizer_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Warn, at the user's line, when the optimizer's largest LR is not the tuned peak LR that a
    scheduler multiplies."""
    top = max(g["lr"] for g in optimizer.param_groups)
    if not math.isclose(top, lr, rel_tol=0.01):
        warn_at_users_line(f"the optimizer's LR is {top:.3g}, the tuned peak LR {lr:.3g}: the scheduler "
                           f"multiplies the optimizer's LR; create it with lr={lr:.3g} (or .optimizer(...))")


def load_best(path: str | Path) -> TunedSchedule:
    """The best schedule of a study, from its ``best.json`` (or the folder holding it: ``--out``)."""
    path = Path(path)
    file = path / "best.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        hint = " (it holds a range test only)" if (file.parent / "range_test.json").is_file() else ""
        raise BestFileError(f"no file {file}{hint}: give the --out folder of `lrfind tune`, or its best.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BestFileError(f"{file} is not a best.json of lrfind ({e})") from None
    return from_best_json(data, file)


def from_best_json(data: Any, source: Path | str = "best.json") -> TunedSchedule:
    """The best schedule from the contents of a best.json (``best_json`` of a study)."""
    if not isinstance(data, dict) or "schedule" not in data:
        raise BestFileError(f"{source} holds no best schedule (no trial of the study completed, or it is not "
                            "lrfind's best.json)")
    if "choices" not in data or data.get("steps_per_epoch") is None:
        where = Path(source).parent if str(source).endswith(".json") else source
        raise BestFileError(f"{source} was written by an older lrfind, without the trial's choices: "
                            f"`lrfind show --out {where}` writes it again")
    setup = data.get("setup") or {}
    config = OptimizerConfig.of(setup.get("optimizer", "sgd"), momentum=setup.get("momentum", 0.9),
                                weight_decay=setup.get("weight_decay", 0.0))
    test = ((data.get("final") or {}).get("best") or {}).get("test_acc")
    return TunedSchedule(schedule=data["schedule"], lr=float(data["lr"]), choices=data["choices"],
                         optimizer_config=config, epochs=int(setup["epochs"]),
                         steps_per_epoch=int(data["steps_per_epoch"]), study=data.get("study", ""),
                         val_acc=data.get("val_acc"), test_acc=test, val_loss=data.get("val_loss"),
                         max_grad_norm=setup.get("max_grad_norm"))


def from_study(study: optuna.Study) -> TunedSchedule | None:
    """The best schedule of a stored study (what its best.json says); None if no trial completed."""
    data = best_json(study)
    return from_best_json(data, study.study_name) if "schedule" in data else None


# -- best.json: what a study found, written by the report, read by load_best and lrfind show --------------
def final_of(study: optuna.Study, best: FrozenTrial | None, seeds: int | None = None) -> dict[str, Any]:
    """Stage 3's stored results, if they are the current best trial's: trials added later by a run
    without stage 3 (``--no-final``, a worker of a shared study) may have found a better one. With
    ``seeds``, only results of that many seeds: what a rerun or another worker may take as its own."""
    final = study.user_attrs.get("final") or {}
    if best is None or final.get("best", {}).get("trial") != best.number:
        return {}
    if seeds is not None and final.get("setup", {}).get("seeds") != seeds:
        return {}
    return final


def chance_limit(classes: int | None) -> float | None:
    """The accuracy at or below which a retrain counts as diverged: within 1.5 times chance
    (1/classes), and at most 5 points above it (two classes: 55%, not 75%). None without classes."""
    if not classes or classes < 2:
        return None
    return min(1.5 / classes, 1 / classes + 0.05)


def diverged(loss: float | None, acc: float | None, limit: float | None) -> bool:
    """Whether a retrain diverged: no finite loss (it ended on NaN or inf), or an accuracy at chance
    (``limit``: ``chance_limit``)."""
    return loss is None or not math.isfinite(loss) or (acc is not None and limit is not None and acc <= limit)


def _finite(x: Any) -> bool:
    return isinstance(x, numbers.Real) and math.isfinite(x)


def diverged_seeds(side: dict[str, Any], key: str) -> list[int]:
    """The seeds of one side of the final comparison (``final["best"]`` or ``["constant"]``) whose
    run diverged: those it names (``diverged``), and any without a finite score for ``key``."""
    seeds = side.get("seeds") or []
    scores = side.get(key + "_per_seed") or []
    named = set(side.get("diverged") or ())
    if len(scores) == len(seeds):       # results stored before lrfind named them kept finite scores only
        named |= {s for s, x in zip(seeds, scores) if not _finite(x)}
    return sorted(named)


def paired_gain(final: dict[str, Any], key: str, better: float) -> dict[str, Any] | None:
    """What the final runs say about decay: the best schedule minus the constant, seed by seed
    (seed r of both starts from the same weights), over the seeds where neither diverged; their
    mean and its standard error (the spread of the differences over the square root of their
    number; none from fewer than two). ``key``: the score compared (``test_acc``, ``test_loss``,
    tune_loop's ``score``); ``better``: +1 where a higher score is better, -1 where lower is.

    The rule for the verdict: a gain is clear when the mean is at least twice its standard error
    away from zero (``"decay helps"``, or ``"constant better"`` below zero); nearer, ``"no clear
    gain"``; with one pair, ``"no estimate"`` of the noise; with none, ``"no pair"``. None where
    the constant was the best trial itself, or a side has no scores.
    """
    b, c = final.get("best") or {}, final.get("constant") or {}
    if not b or not c or b.get("trial") == c.get("trial") or b.get(key) is None and c.get(key) is None:
        return None
    xs, ys = b.get(key + "_per_seed") or [], c.get(key + "_per_seed") or []
    seeds = b.get("seeds") if len(b.get("seeds") or []) == len(xs) else list(range(len(xs)))
    out = {"best": diverged_seeds(b, key), "constant": diverged_seeds(c, key)}
    left = set(out["best"]) | set(out["constant"])
    differences = [x - y for s, x, y in zip(seeds, xs, ys) if s not in left and _finite(x) and _finite(y)]
    n = len(differences)
    mean = sum(differences) / n if n else None
    se = statistics.stdev(differences) / math.sqrt(n) if n >= 2 else None
    if se is not None and se <= 1e-12 * max(map(abs, differences)):
        se = 0.0                                 # equal differences: no spread, not rounding's
    if n == 0:
        says = "no pair"
    elif se is None:
        says = "no estimate"
    elif abs(mean) < 2 * se or mean == 0:
        says = "no clear gain"
    else:
        says = "decay helps" if better * mean > 0 else "constant better"
    return {"metric": key, "difference": mean, "se": se, "pairs": n, "per_seed": differences, "verdict": says,
            "diverged": out}


def best_json(study: optuna.Study) -> dict[str, Any]:
    """What best.json holds: the best schedule and its scores, the constant's, stage 3's results."""
    best = _study.best(study)
    final = final_of(study, best)
    out: dict[str, Any] = {"study": study.study_name, "base_lr": study.user_attrs.get("base_lr"),
                           "base_lr_source": study.user_attrs.get("base_lr_source"),
                           "setup": study.user_attrs.get("lrfind_setup"), "trials": len(_study.finished(study))}
    if study.user_attrs.get("data"):
        out["data"] = study.user_attrs["data"]                       # what the trials trained on
    if study.user_attrs.get("stopped_by_timeout"):
        out["stopped_by_timeout"] = study.user_attrs["stopped_by_timeout"]
    if study.user_attrs.get("given_up"):
        out["given_up"] = study.user_attrs["given_up"]          # trials cut short too often, not run again   # fewer trials than asked for
    if best is not None:
        out.update(schedule=best.user_attrs.get("schedule"), params=best.user_attrs.get("params"),
                   peak_scale=best.user_attrs.get("peak_scale", 1.0), lr=_study.peak_lr(study, best),
                   trial=best.number, val_acc=_study.val_acc(best, study),
                   val_loss=_study.val_loss(best), metric=_study.metric_of(study),
                   choices=best.params, steps_per_epoch=_steps_per_epoch(study),  # for load_best
                   val_acc_per_epoch=best.user_attrs.get("val_acc"))
    constant = _study.constant_baseline(study)
    if constant is not None:
        out["constant"] = {"trial": constant.number, "val_acc": _study.val_acc(constant, study),
                           "val_loss": _study.val_loss(constant), "lr": _study.peak_lr(study, constant)}
    if final:
        gain = paired_gain(final, final_key(study, final), _study.sign(study))
        out["final"] = {**final, "gain": gain} if gain is not None else final
    if study.user_attrs.get("seconds"):
        out["seconds"] = study.user_attrs["seconds"]                 # stage wall times of the last run
    if study.user_attrs.get("peak_gpu_bytes"):
        out["peak_gpu_bytes"] = study.user_attrs["peak_gpu_bytes"]   # of the last run of this study
    return out


def final_key(study: optuna.Study, final: dict[str, Any]) -> str:
    """The score the final runs are judged on: tune_loop's own (``score``), else test accuracy, or
    test loss in a study scored on the loss."""
    if final.get("setup", {}).get("kind") == "seeds":
        return "score"
    return "test_loss" if _study.metric_of(study) == "loss" else "test_acc"


def _steps_per_epoch(study: optuna.Study) -> int | None:
    """The search's steps per epoch (studies stored before lrfind kept it: its steps over its epochs)."""
    attrs = study.user_attrs
    epochs = (attrs.get("lrfind_setup") or {}).get("epochs")
    return attrs.get("steps_per_epoch") or (attrs["steps"] // epochs if "steps" in attrs and epochs else None)


__all__ = ["TunedSchedule", "load_best", "BestFileError"]
