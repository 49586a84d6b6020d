"""What one ``find_lr`` call sweeps with: ``RangeTestConfig``, its arguments checked and their
defaults filled in once, where the call comes in. Nothing here needs the model or the loader."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import torch

from lrfind._args import check_threads
from lrfind._errors import FieldError
from lrfind.engine.optimizer import OptimizerConfig
from lrfind.engine.update import check_max_grad_norm
from lrfind.rangetest.batches import StepFn, check_loader, one_shot
from lrfind.rangetest.suggest import DEFAULT_METHOD, get_method
from lrfind.rangetest.sweep import Sweep

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class RangeTestConfig:
    """``find_lr``'s arguments but the model and the loader, as given (the optimizer, ``loss_fn``
    and ``step_fn`` are resolved against the model later, for every set of sweeps), checked as the
    config is made: a wrong value raises a ``FieldError`` that names it. A ``val_loader`` that one
    pass uses up (an iterator) is read once here, for every repeat and a slower sweep."""

    sweep: Sweep = field(default_factory=Sweep)
    optimizer: torch.optim.Optimizer | OptimizerConfig | None = None
    loss_fn: Callable | None = None
    step_fn: StepFn | None = None
    accumulation_steps: int = 1
    max_grad_norm: float | None = None
    amp: str | None = None
    val_loader: Iterable | None = None
    val_batches: int | None = None
    repeats: int | None = 1
    fused: bool | None = None
    seed: int | None = None
    method: str = DEFAULT_METHOD
    progress: bool = True
    cuda_graph: bool | None = None
    slow_down: bool = True
    warn: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.val_loader is not None:
            check_loader(self.val_loader, "val_loader")
        if self.val_batches is not None and not (isinstance(self.val_batches, int) and self.val_batches >= 1):
            raise FieldError("val_batches", f"val_batches must be a positive integer or None (all of val_loader), "
                                            f"got {self.val_batches!r}")
        if not (isinstance(self.accumulation_steps, int) and self.accumulation_steps >= 1):
            raise FieldError("accumulation_steps", f"accumulation_steps must be a positive integer, "
                                                   f"got {self.accumulation_steps!r}")
        check_max_grad_norm(self.max_grad_norm)
        check_threads(self.threads)
        if self.amp not in (None, *AMP_DTYPES):
            raise FieldError("amp", f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        if not (self.repeats is None or (isinstance(self.repeats, int) and not isinstance(self.repeats, bool)
                                         and self.repeats >= 1)):
            raise FieldError("repeats", f"repeats must be a positive integer or None (3 side by side on a GPU where "
                                        f"they can run so, else 1), got {self.repeats!r}")
        if self.fused not in (None, True, False):
            raise FieldError("fused", f"fused must be None (side by side where the repeats can run so), True or "
                                      f"False, got {self.fused!r}")
        get_method(self.method)                     # an unknown name lists the choices
        if self.val_loader is not None and one_shot(self.val_loader):
            object.__setattr__(self, "val_loader", list(itertools.islice(self.val_loader, self.val_batches)))

    @property
    def seeds(self) -> list[int | None]:
        """Every repeat's seed: ``seed, seed+1, ...``; without a seed, none for a single sweep and
        ``0, 1, ...`` for several."""
        if self.seed is not None:
            return [self.seed + r for r in range(self.repeats)]
        return [None] if self.repeats == 1 else list(range(self.repeats))

    @property
    def eager_only(self) -> str:
        """Why the sweep must step through a torch optimizer ("" if lrfind's own step can do it)."""
        if self.step_fn is not None or self.accumulation_steps > 1 or self.amp or self.val_loader is not None:
            return "a step_fn, accumulation_steps, amp or val_loader is given"
        return ""

    def with_repeats(self, repeats: int) -> RangeTestConfig:
        return replace(self, repeats=repeats)

    def slower(self) -> RangeTestConfig:
        """The same sweeps at half the pace (twice ``num_iter``), which neither slow down again nor warn."""
        return replace(self, sweep=replace(self.sweep, num_iter=2 * self.sweep.num_iter), slow_down=False,
                       warn=False)
