"""The contract every decay schedule follows, and the linear warmup any of them can be put behind.

A schedule is the LR multiplier ``factor(step)`` applied to a base LR, with ``step`` counting
optimizer steps from 0 (the LR used by the first ``optimizer.step()`` is ``base_lr * factor(0)``).
Each entry gives that multiplier twice: as a pure vectorised function for the fused trial engine,
and as torch's own scheduler (``build``) for users; a test holds the two equal at every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from lrfind._device import exact_dtype

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One parameter of a schedule: its name, what it means and its valid range, its default."""

    name: str
    doc: str
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


WARMUP_PARAMS = (
    Param("warmup", "steps of linear warmup before the schedule starts, 0 <= warmup < total", 0),
    Param("warmup_start", "LR factor at the first warmup step, 0 < warmup_start <= 1", 0.1),
)


def momentum_params(base: float, top: float) -> tuple[Param, ...]:
    """The parameters of a schedule that may cycle the momentum (Adam's beta1) against the LR, as
    torch's ``OneCycleLR`` and ``CyclicLR`` do; torch's own defaults for ``base`` and ``top``. Such
    schedules climb on their own and take no warmup in front (``momentum`` counts from step 0)."""
    return (Param("cycle_momentum", "cycle the momentum (Adam's beta1) against the LR, replacing the optimizer's: "
                                    "True or False", False),
            Param("base_momentum", "the momentum where the LR peaks, 0 <= base_momentum <= max_momentum", base),
            Param("max_momentum", "the momentum where the LR is lowest, max_momentum < 1", top))


def in_use(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that shape the schedule, for people to read: the warmup's only where there is
    a warmup, the momentum's only where it is cycled."""
    idle = set()
    if not params.get("warmup"):
        idle |= {"warmup", "warmup_start"}
    if not params.get("cycle_momentum"):
        idle |= {"base_momentum", "max_momentum"}
    return {k: v for k, v in params.items() if k not in idle}


def params_text(params: dict[str, Any], sep: str = " ") -> str:
    """``name=value`` pairs of the parameters in use (``in_use``), short: floats to 3 digits, lists
    as ``100,200``. For people; ``fmt`` writes exact literals for code."""
    def short(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}"
        if isinstance(value, list):
            return ",".join(short(v) for v in value)
        return str(value)
    return sep.join(f"{k}={short(v)}" for k, v in in_use(params).items())


def check_momentum(schedule: str, p: dict[str, Any]) -> None:
    """``momentum_params``' rules."""
    require(isinstance(p["cycle_momentum"], (bool, np.bool_)), schedule, "cycle_momentum", p["cycle_momentum"],
            "True or False")
    base, top = p["base_momentum"], p["max_momentum"]
    require(0 <= top < 1, schedule, "max_momentum", top, "in [0, 1)")
    require(0 <= base <= top, schedule, "base_momentum", base, f"in [0, max_momentum={top}]")


def require(ok: bool, schedule: str, name: str, value: Any, rule: str) -> None:
    """Raise the one ValueError a bad parameter gets: which schedule, which parameter, its value, the rule."""
    if not ok:
        raise ValueError(f"{schedule}: {name} must be {rule}, got {value!r}")


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def fmt(value: Any) -> str:
    """A literal for generated code: ints as ints, floats to 12 significant digits (exact to 1e-12)."""
    if isinstance(value, (bool, str)):
        return repr(value)
    if is_int(value):
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return f"{float(value):.12g}"


class Schedule:
    """Base class: subclasses set ``name``, ``torch_name``, ``description``, ``params`` and implement
    ``_suggest``, ``_check``, ``_factor``, ``_build`` and ``_code``; this class adds the warmup,
    validation, the generated snippet and the torch/numpy plumbing once for all of them."""

    name: ClassVar[str]
    torch_name: ClassVar[str]           # the torch scheduler ``build`` returns
    description: ClassVar[str]
    params: ClassVar[tuple[Param, ...]]
    warmup_allowed: ClassVar[bool] = True
    needs_metric: ClassVar[bool] = False    # stepped with a validation metric (plateau)
    starts_low: ClassVar[bool] = False      # climbs to its peak (one-cycle, cyclic, warmup)
    min_total: ClassVar[int] = 2            # the shortest run the schedule makes sense for
    min_epochs: ClassVar[int] = 1           # ... and the fewest epochs, for which ``min_epochs_why`` says why
    min_epochs_why: ClassVar[str] = ""
    # choices its search space gained after studies were stored, with the value that gives those
    # studies' trials again (``stored_choices``)
    added_choices: ClassVar[dict[str, Any]] = {}

    # -- what subclasses implement -------------------------------------------------------------
    def _suggest(self, trial, total: int, steps_per_epoch: int) -> dict[str, Any]:
        raise NotImplementedError

    def _check(self, total: int, p: dict[str, Any]) -> None:
        raise NotImplementedError

    def _factor(self, steps: np.ndarray, total: int, p: dict[str, Any], metrics) -> np.ndarray:
        raise NotImplementedError

    def _build(self, optimizer, total: int, p: dict[str, Any]):
        raise NotImplementedError

    def _momentum(self, steps: np.ndarray, total: int, p: dict[str, Any]) -> np.ndarray:
        """The momentum at each step, for schedules with ``momentum_params`` that cycle it."""
        raise NotImplementedError

    def _code(self, total: int, p: dict[str, Any], base_lr: float) -> tuple[str, list[str]]:
        """The constructor call as Python source (floors as literal LRs), and what it imports."""
        raise NotImplementedError

    def example(self, total: int, steps_per_epoch: int) -> dict[str, Any]:
        """Parameters that show the shape of the schedule in a plot."""
        raise NotImplementedError

    # -- the public contract ---------------------------------------------------------------------
    @property
    def all_params(self) -> tuple[Param, ...]:
        return self.params + (WARMUP_PARAMS if self.warmup_allowed else ())

    def warms_up(self, params: dict[str, Any]) -> bool:
        """Does the LR start low and climb to its peak? Such schedules tolerate a peak above the
        base LR that the range test found for a constant LR (one-cycle's "super-convergence")."""
        return self.starts_low or bool(params.get("warmup"))

    def key(self, name: str) -> str:
        """The Optuna parameter name: prefixed, so that schedules never share a distribution."""
        return f"{self.name}.{name}"

    def suggest(self, trial, total: int, steps_per_epoch: int) -> dict[str, Any]:
        """Sample parameters from ``trial``, in optimizer steps, for a run of ``total`` steps."""
        if total < self.min_total or steps_per_epoch < 1:
            raise ValueError(f"{self.name}: needs a run of at least {self.min_total} steps and steps_per_epoch >= 1, "
                             f"got total={total}, steps_per_epoch={steps_per_epoch}")
        warmup = 0
        if self.warmup_allowed and total >= 4 and trial.suggest_categorical(self.key("use_warmup"), [False, True]):
            frac = trial.suggest_float(self.key("warmup_frac"), 0.01, 0.15)
            warmup = max(1, min(total - 3, round(frac * total)))
        # the schedule proper runs over the steps after the warmup
        params = self._suggest(trial, total - warmup, steps_per_epoch)
        if warmup:
            params["warmup"] = warmup
        return self.validate(total, **params)

    def validate(self, total: int, **params: Any) -> dict[str, Any]:
        """Check the parameters; return them with the defaults filled in. Raises ValueError."""
        require(is_int(total) and total >= 2, self.name, "total", total, "an integer >= 2")
        known = {p.name: p for p in self.all_params}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ValueError(f"{self.name}: unknown parameter(s) {', '.join(unknown)}; "
                             f"it takes {', '.join(known)}")
        missing = [n for n, p in known.items() if p.required and n not in params]
        if missing:
            raise ValueError(f"{self.name}: missing parameter(s) {', '.join(missing)}")
        full = {n: params.get(n, p.default) for n, p in known.items()}
        if self.warmup_allowed:
            w, ws = full["warmup"], full["warmup_start"]
            require(is_int(w) and 0 <= w < total - 1, self.name, "warmup", w,
                    f"an integer number of steps in [0, {total - 1}) (shorter than the run)")
            require(0 < ws <= 1, self.name, "warmup_start", ws, "in (0, 1]")
        w, _, inner = self.split(full)
        self._check(total - w, inner)
        return full

    def split(self, full: dict[str, Any]) -> tuple[int, float, dict[str, Any]]:
        """``(warmup steps, warmup start factor, the schedule's own parameters)``."""
        if not self.warmup_allowed:
            return 0, 1.0, full
        inner = {k: v for k, v in full.items() if k not in ("warmup", "warmup_start")}
        return full["warmup"], full["warmup_start"], inner

    def factor(self, steps, total: int, *, metrics=None, **params: Any):
        """The LR multiplier at each of ``steps`` (array of step indices), numpy or torch in, same out.

        ``metrics``: for schedules that follow a validation metric (``needs_metric``), the values
        reported so far, one every ``interval`` steps.
        """
        as_torch = isinstance(steps, torch.Tensor)
        s = np.asarray(steps.detach().cpu().numpy() if as_torch else steps, dtype=np.int64)
        full = self.validate(total, **params)
        if self.needs_metric and metrics is None:
            raise ValueError(f"{self.name}: follows a validation metric; pass metrics=[...]")
        w, ws, inner = self.split(full)
        out = self._factor(np.maximum(s - w, 0), total - w, inner, metrics)
        if w:
            out = np.where(s < w, ws + (1.0 - ws) * s / w, out)
        out = np.asarray(out, dtype=np.float64)
        return torch.as_tensor(out, dtype=exact_dtype(steps.device), device=steps.device) if as_torch else out

    def momentum(self, steps, total: int, **params: Any) -> np.ndarray | None:
        """The momentum (Adam's beta1) at each of ``steps``, for parameters that cycle it, as torch's
        scheduler sets it before each optimizer step; None where the optimizer keeps its own."""
        full = self.validate(total, **params)
        if not full.get("cycle_momentum"):
            return None
        _, _, inner = self.split(full)
        return np.asarray(self._momentum(np.asarray(steps, dtype=np.int64), total, inner), dtype=np.float64)

    def build(self, optimizer: torch.optim.Optimizer, total: int, **params: Any):
        """torch's own scheduler for this schedule; call ``.step()`` after every optimizer step.

        With warmup, a ``SequentialLR`` of ``LinearLR`` and the schedule.
        """
        full = self.validate(total, **params)
        if full.get("cycle_momentum") and not {"momentum", "betas"} & set(getattr(optimizer, "defaults", {})):
            raise ValueError(f"{self.name} with cycle_momentum=True cycles the optimizer's momentum (Adam's beta1), "
                             f"and {type(optimizer).__name__} has neither: use an optimizer with one (SGD, Adam, "
                             "AdamW, ...) or cycle_momentum=False")
        w, ws, inner = self.split(full)
        if not w:
            return self._build(optimizer, total, inner)
        from torch.optim.lr_scheduler import LinearLR, SequentialLR

        warm = LinearLR(optimizer, start_factor=ws, end_factor=1.0, total_iters=w)
        return SequentialLR(optimizer, [warm, self._build(optimizer, total - w, inner)], milestones=[w])

    def code(self, base_lr: float, total: int, **params: Any) -> tuple[list[str], list[str]]:
        """Python statements that assign the scheduler to ``scheduler``, and what they import."""
        full = self.validate(total, **params)
        w, ws, inner = self.split(full)
        expr, names = self._code(total - w, inner, base_lr)
        if not w:
            return [f"scheduler = {expr}"], names
        return ([f"warmup = LinearLR(optimizer, start_factor={fmt(ws)}, end_factor=1.0, total_iters={w})",
                 f"decay = {expr}",
                 f"scheduler = SequentialLR(optimizer, [warmup, decay], milestones=[{w}])"],
                sorted({*names, "LinearLR", "SequentialLR"}))

    def snippet(self, base_lr: float, total: int, *, optimizer: str = "sgd", momentum: float = 0.9,
                weight_decay: float = 0.0, steps_per_epoch: int | None = None, max_grad_norm: float | None = None,
                **params: Any) -> str:
        """A Python snippet that builds the optimizer and this scheduler for a user's ``model``."""
        statements, names = self.code(base_lr, total, **params)
        classes = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
        if optimizer not in classes:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose from {', '.join(classes)}")
        extra = f", momentum={fmt(momentum)}" if optimizer == "sgd" else ""
        if weight_decay or optimizer == "adamw":      # AdamW's own default is 0.01: always say which
            extra += f", weight_decay={fmt(weight_decay)}"
        lines = ["import math"] if any("math." in line for line in statements) else []
        lines += ["import torch", f"from torch.optim.lr_scheduler import {', '.join(names)}", "",
                  f"optimizer = torch.optim.{classes[optimizer]}(model.parameters(), lr={fmt(base_lr)}{extra})",
                  *statements]
        full = self.validate(total, **params)
        if full.get("cycle_momentum"):
            what = "momentum" if optimizer == "sgd" else "optimizer's beta1"
            mine = f" in place of the optimizer's {fmt(momentum)}" if optimizer == "sgd" else ""
            lines.append(f"# the scheduler cycles the {what} between {fmt(full['base_momentum'])} and "
                         f"{fmt(full['max_momentum'])}{mine}")
        if max_grad_norm is not None:
            lines.append(f"# tuned with clipped gradients: before every optimizer.step(), "
                         f"torch.nn.utils.clip_grad_norm_(model.parameters(), {fmt(max_grad_norm)})")
        if self.needs_metric:
            every = params.get("interval", steps_per_epoch)
            lines.append(f"# after every {every} optimizer steps (an epoch): scheduler.step(validation_loss)")
            lightning = '"monitor": "val_loss"'
        else:
            per_epoch = f", {steps_per_epoch} per epoch" if steps_per_epoch else ""
            lines.append(f"# call scheduler.step() after every optimizer.step(): {total} steps in all{per_epoch}")
            lightning = '"interval": "step"'        # Lightning's default steps it once an epoch
        lines.append(f'# in Lightning: return {{"optimizer": optimizer, "lr_scheduler": {{"scheduler": scheduler, '
                     f'{lightning}}}}}')
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"<schedule {self.name}: {self.torch_name}>"


def period(trial, key: str, total: int, steps_per_epoch: int, low: float = 0.1, high: float = 0.9) -> int:
    """Suggest a number of steps: whole epochs when the run has at least two, else a fraction of it.

    So "every 2 epochs" is searchable without knowing the data size in advance.
    """
    epochs = total // steps_per_epoch
    if epochs >= 2:
        return steps_per_epoch * trial.suggest_int(key + "_epochs", 1, epochs - 1)
    return max(1, min(total - 1, round(trial.suggest_float(key + "_frac", low, high) * total)))


class Replay:
    """A trial's choices, answered again to ``Schedule.suggest`` for a run of another length.

    Every choice is relative to the run (fractions, final factors) except ``period``'s whole epochs:
    given the tuned run's steps and epochs after its warmup, a period keeps its share of the run
    ("every epoch of 3" becomes "every 10 epochs of 30"), and becomes a fraction for runs shorter
    than two epochs, and back. A choice outside what a (short) run allows is moved to the nearest
    value it does allow. Asked for the tuned run itself, it answers as ``FixedTrial`` does.
    """

    def __init__(self, choices: dict[str, Any], *, steps: int, epochs: int, steps_per_epoch: int) -> None:
        self.choices, self.steps, self.epochs, self.steps_per_epoch = choices, steps, epochs, steps_per_epoch

    def suggest_categorical(self, name: str, choices):
        return self.choices[name]

    def suggest_int(self, name: str, low: int, high: int, **kwargs) -> int:
        if name.endswith("_epochs"):
            stem = name.removesuffix("_epochs")
            share = self.choices[name] / self.epochs if name in self.choices else self.choices[stem + "_frac"]
            value = round(share * (high + 1))             # high + 1: this run's epochs after its warmup
        else:
            value = self.choices[name]
        return max(low, min(high, value))

    def suggest_float(self, name: str, low: float, high: float, **kwargs) -> float:
        stem = name.removesuffix("_frac")
        if name not in self.choices and stem + "_epochs" in self.choices:
            return self.choices[stem + "_epochs"] * self.steps_per_epoch / self.steps
        return max(low, min(high, self.choices[name]))    # a short run allows less (one-cycle's phases)


def cosine(pct: np.ndarray) -> np.ndarray:
    """Half a cosine from 1 (pct 0) down to 0 (pct 1)."""
    return 0.5 * (1.0 + np.cos(math.pi * pct))
