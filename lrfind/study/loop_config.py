"""``LoopConfig``: what a study of ``tune_loop`` is made of, checked as it is made."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

from lrfind._args import check_threads
from lrfind._errors import FieldError
from lrfind._args import check_positive, unknown
from lrfind._duration import timeout_seconds
from lrfind.study import pruner as _pruner
from lrfind.study import trials as _study
from lrfind.study.spec import StudySpec


@dataclass(frozen=True)
class LoopConfig(StudySpec):
    """What a ``tune_loop`` study is made of; the fields that shape its search are stored with it."""

    train: str                                   # the training function's name (module:function)
    base_lr: float | None                        # None: the stored study's
    epochs: int
    steps_per_epoch: int
    metric: str                                  # "accuracy" (a fraction, higher is better) or "loss"
    trials: int = 30
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float | None = None
    schedules: tuple[str, ...] | None = None
    max_peak: float = 3.0
    pruner: str = "median"
    storage: str | None = None
    study_name: str | None = None
    out: str = "lrfind_out"
    seed: int = 0
    timeout: float | str | None = None
    heartbeat: int = 10
    progress: bool = True
    threads: int | None = None                   # CPU threads; None: lrfind's choice (TuneConfig.threads)
    same_seed: bool = True                       # trial.seed: the same for every trial, or seed + trial number
    final_seeds: int = 3                         # after the search: best and constant run again with new seeds
    search_constant_lr: bool | None = None       # the constant's LR searched too (0.2x-2x the base LR): see TuneConfig

    def __post_init__(self) -> None:
        for name in ("epochs", "steps_per_epoch", "trials", "heartbeat", "final_seeds"):
            value = getattr(self, name)
            least = 0 if name == "final_seeds" else 1
            if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least):
                kind = "an integer >= 0" if least == 0 else "a positive integer"
                raise FieldError(name, f"{name} must be {kind}, got {value!r}")
        if self.base_lr is not None:
            check_positive("base_lr", self.base_lr, then=" (find_lr(...).suggested_lr is one)")
        if self.metric not in _study.METRICS:
            raise FieldError("metric", f"metric must be 'accuracy' (a fraction in [0, 1], higher is better) or 'loss' (lower is "
                             f"better), got {self.metric!r}")
        check_positive("max_peak", self.max_peak, least=1)
        if self.search_constant_lr not in (None, True, False):
            raise FieldError("search_constant_lr", "search_constant_lr must be True, False or None (the stored study's; "
                             f"True for a new one), got {self.search_constant_lr!r}")
        if self.pruner not in _pruner.PRUNERS:
            raise ValueError(unknown("pruner", self.pruner, _pruner.PRUNERS))
        object.__setattr__(self, "timeout", timeout_seconds(self.timeout))
        check_threads(self.threads)
        self.check_schedules()
        self.check_out()
        self.optimizer_config                                # checks the optimizer's name and settings

    @property
    def scoring(self) -> str:
        return self.metric

    @property
    def same_init(self) -> bool:                 # what ``space.trial_spec`` and ``search.search_trials`` read
        return self.same_seed

    def setup(self) -> dict[str, Any]:
        setup = {"model": self.train, "dataset": None, "loop": True, "epochs": self.epochs,
                 "steps_per_epoch": self.steps_per_epoch, "batch_size": None, "optimizer": self.optimizer,
                 "momentum": self.momentum, "max_peak": self.max_peak, "schedules": self.choices,
                 "metric": self.metric, "same_seed": self.same_seed, "search_constant_lr": self.search_constant_lr}
        if self.optimizer_config.weight_decay:
            setup["weight_decay"] = self.optimizer_config.weight_decay
        return setup


__all__ = ["LoopConfig"]
