"""Registry of LR decay schedules.

Each entry of ``SCHEDULES`` gives the same schedule three ways: an Optuna search space
(``suggest``), a pure vectorised multiplier (``factor``) for the fused trial engine, and torch's own
scheduler (``build``) plus the Python that recreates it (``snippet``). Parameters are in optimizer
steps. ``get_schedule(name)`` fetches one and lists the choices when the name is unknown.
"""

from __future__ import annotations

from typing import Any

from lrfind._args import unknown
from lrfind.schedules._base import WARMUP_PARAMS, Param, Replay, Schedule, params_text
from lrfind.schedules._cyclic import Cyclic, OneCycle, Plateau, Warmup, WarmRestarts, WarmupExp
from lrfind.schedules._decay import (Constant, Cosine, Exponential, InverseSqrt, InverseTime, Linear, MultiStep,
    Polynomial, StableDecay, Step)

SCHEDULES: dict[str, Schedule] = {s.name: s for s in (
    Constant(), Step(), MultiStep(), Exponential(), InverseTime(), InverseSqrt(), Linear(), Polynomial(), Cosine(),
    WarmRestarts(), OneCycle(), Cyclic(), Plateau(), Warmup(), WarmupExp(), StableDecay(),
)}


# torch's scheduler classes, and other names people give these schedules, for the entry that is them
OTHER_NAMES = {s.torch_name: s.name for s in SCHEDULES.values()
               if s.torch_name not in ("LambdaLR", "LinearLR")} | {
    "MultiplicativeLR": "exponential (a constant factor per step)",
    "LambdaLR": "inverse_time, inverse_sqrt, warmup_exp or wsd",
    "SequentialLR": "warmup= of any entry marked +warmup", "time_based": "inverse_time", "sgdr": "cosine_restarts",
    "warm_restarts": "cosine_restarts", "clr": "cyclic", "triangular": "cyclic", "reduce_on_plateau": "plateau",
    "one_cycle": "onecycle", "poly": "polynomial", "cosine_annealing": "cosine", "none": "constant",
    "noam": "inverse_sqrt (with warmup=)", "rsqrt": "inverse_sqrt", "invsqrt": "inverse_sqrt",
    "warmup_stable_decay": "wsd", "trapezoid": "wsd", "get_wsd_schedule": "wsd",
}


def stored_choices(choices: dict[str, Any]) -> dict[str, Any]:
    """A stored trial's Optuna choices, with those the search spaces gained since (one-cycle's
    ``cycle_momentum``, say) set to what the trial ran with: for ``FixedTrial`` and ``Replay``."""
    added = {s.key(k): v for s in SCHEDULES.values() for k, v in s.added_choices.items()}
    return {**added, **choices}


def get_schedule(name: str) -> Schedule:
    """The schedule called ``name``; an unknown name raises ValueError naming the entry probably
    meant (torch's class names lead to theirs) and listing the choices."""
    try:
        return SCHEDULES[name]
    except (KeyError, TypeError):
        raise ValueError(unknown("schedule", name, SCHEDULES, aliases=OTHER_NAMES)) from None


__all__ = ["SCHEDULES", "Schedule", "Param", "Replay", "WARMUP_PARAMS", "get_schedule", "params_text", "stored_choices"]
