"""Registry of LR decay schedules.

Each entry of ``SCHEDULES`` gives the same schedule three ways: an Optuna search space
(``suggest``), a pure vectorised multiplier (``factor``) for the fused trial engine, and torch's own
scheduler (``build``) plus the Python that recreates it (``snippet``). Parameters are in optimizer
steps. ``get_schedule(name)`` fetches one and lists the choices when the name is unknown.
"""

from __future__ import annotations

from ._base import WARMUP_PARAMS, Param, Replay, Schedule
from ._cyclic import Cyclic, OneCycle, Plateau, Warmup, WarmRestarts, WarmupExp
from ._decay import Constant, Cosine, Exponential, InverseTime, Linear, MultiStep, Polynomial, Step

SCHEDULES: dict[str, Schedule] = {s.name: s for s in (
    Constant(), Step(), MultiStep(), Exponential(), InverseTime(), Linear(), Polynomial(), Cosine(),
    WarmRestarts(), OneCycle(), Cyclic(), Plateau(), Warmup(), WarmupExp(),
)}


def get_schedule(name: str) -> Schedule:
    """The schedule called ``name``; an unknown name raises ValueError listing the choices."""
    try:
        return SCHEDULES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}") from None


__all__ = ["SCHEDULES", "Schedule", "Param", "Replay", "WARMUP_PARAMS", "get_schedule"]
