"""How a range test's LR moves from its first value to its last, and when it gives up: ``Sweep``."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from lrfind._args import check_positive


@dataclass(frozen=True)
class Sweep:
    """How the LR moves and when the sweep gives up.

    ``diverge_factor``: stop once the smoothed loss exceeds the best smoothed loss by
    ``(diverge_factor - 1) * |best|`` (for positive losses: ``loss > diverge_factor * best``; the
    absolute value keeps the rule right for negative losses), or when a loss is NaN/Inf.
    ``ema_beta``: the divergence detector's exponential smoothing. ``check_every``: steps between
    the divergence checks, each a single host-device synchronisation.
    """

    start_lr: float = 1e-6
    end_lr: float = 1.0
    num_iter: int = 100
    mode: str = "exp"
    diverge_factor: float = 5.0
    ema_beta: float = 0.98
    check_every: int = 10

    def __post_init__(self) -> None:
        for name in ("start_lr", "end_lr", "diverge_factor", "ema_beta"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
        check_positive("start_lr", self.start_lr)
        if not (math.isfinite(self.end_lr) and self.end_lr > self.start_lr):
            raise ValueError(f"end_lr must be larger than start_lr={self.start_lr!r}, got {self.end_lr!r}")
        if not (isinstance(self.num_iter, int) and self.num_iter >= 2):
            raise ValueError(f"num_iter must be an integer >= 2, got {self.num_iter!r}")
        if self.mode not in ("exp", "linear"):
            raise ValueError(f"mode must be 'exp' or 'linear', got {self.mode!r}")
        if not self.diverge_factor > 1:
            raise ValueError(f"diverge_factor must be > 1, got {self.diverge_factor!r}")
        if not 0 <= self.ema_beta < 1:
            raise ValueError(f"ema_beta must be in [0, 1), got {self.ema_beta!r}")
        if not (isinstance(self.check_every, int) and self.check_every >= 1):
            raise ValueError(f"check_every must be a positive integer, got {self.check_every!r}")

    def lrs(self) -> np.ndarray:
        """The LR of every iteration, ``num_iter`` values from ``start_lr`` to ``end_lr``."""
        if self.mode == "exp":
            return np.geomspace(self.start_lr, self.end_lr, self.num_iter)
        return np.linspace(self.start_lr, self.end_lr, self.num_iter)
