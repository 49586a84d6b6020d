"""The study spec shared by ``tune`` and ``tune_loop``: the schedules it searches (each with the
run it needs), the optimizer, and where its report goes."""

from __future__ import annotations

import os
from typing import Any

from lrfind._errors import FieldError
from lrfind._output import counted
from lrfind.engine.optimizer import OptimizerConfig
from lrfind.schedules import SCHEDULES, Schedule, get_schedule


class StudySpec:
    """What a study is, for ``tune``'s config and ``tune_loop``'s alike (``TuneConfig``,
    ``LoopConfig``): the schedules searched, the optimizer, the run's length, where the study lives
    and how it searches. The study's storage, sampler and pruner are made from this alone
    (``opening.open_study``)."""

    model: Any
    dataset: Any
    trials: int
    seed: int
    storage: str | None
    study_name: str | None
    heartbeat: int
    pruner: str
    base_lr: Any
    schedules: tuple[str, ...] | None
    optimizer: str
    momentum: float
    weight_decay: float | None
    epochs: int
    out: str

    def check_out(self) -> None:
        """``out`` names a folder: an empty one would mean the current folder (an unset variable, most often)."""
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out).strip():
            raise FieldError("out", f"out must name the folder for the study and its report, got {self.out!r}")

    @property
    def choices(self) -> list[str]:
        """The schedules searched; the constant baseline is always among them. By default every
        schedule that the run leaves room for (plateau needs three epochs, one-cycle four steps)."""
        chosen = list(self.schedules) if self.schedules else \
            [n for n, s in SCHEDULES.items() if self._no_room(s) is None]
        return ["constant"] + [n for n in dict.fromkeys(chosen) if n != "constant"]

    def check_schedules(self) -> None:
        """Each schedule named exists (an unknown name lists the choices) and has the run it needs;
        an empty list is a mistake (an unset shell variable, say), not a wish for every schedule."""
        if self.schedules is not None and not self.schedules:
            raise FieldError("schedules", "schedules is empty: name the schedules to search (say, cosine,onecycle; "
                             "`lrfind schedules` lists them), or leave it out (None) for every one")
        for name in self.schedules or ():
            too_short = self._no_room(get_schedule(name))
            if too_short is not None:
                raise too_short

    def _no_room(self, schedule: Schedule) -> FieldError | None:
        """Why the run is too short for ``schedule`` (too few epochs, or steps), or None. Its steps
        are known to ``tune_loop`` (``steps_per_epoch``), not to ``tune`` before it reads the data."""
        name = schedule.name
        if self.epochs < schedule.min_epochs:
            return FieldError("epochs", f"epochs {self.epochs} is too few for {name}, which needs "
                              f"{schedule.min_epochs}: {schedule.min_epochs_why}; train more epochs or leave {name} out")
        per_epoch = getattr(self, "steps_per_epoch", None)
        if per_epoch is not None and self.epochs * per_epoch < schedule.min_total:
            return FieldError("schedules", f"{name} needs a run of at least {schedule.min_total} steps, got "
                              f"{counted(self.epochs, 'epoch')} of {per_epoch}; train more steps or leave {name} out")
        return None

    @property
    def optimizer_config(self) -> OptimizerConfig:
        return OptimizerConfig.of(self.optimizer, momentum=self.momentum, weight_decay=self.weight_decay)
