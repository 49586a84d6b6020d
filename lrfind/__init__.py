"""lrfind: pick the learning rate first, decay second.

``find_lr(model, loader)`` runs an LR range test on any model and suggests a base LR;
``tune(...)`` searches the decay schedule with Optuna and ``load_best(out)`` gives it to your own
training run; ``SCHEDULES`` / ``get_schedule`` hold every
decay type as an Optuna search space, a pure LR-multiplier function and a torch scheduler.
Submodules load on first use, so ``import lrfind`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "find_lr": "rangetest.find",
    "OptimizerConfig": "engine.optimizer",
    "Sweep": "rangetest.sweep",
    "RangeTestResult": "rangetest.result",
    "RangeTestWarning": "rangetest.result",
    "compare": "rangetest.comparison",
    "Comparison": "rangetest.comparison",
    "get_model": "models",
    "MODELS": "models",
    "load_dataset": "data",
    "DeviceLoader": "data",
    "SCHEDULES": "schedules",
    "get_schedule": "schedules",
    "tune": "study.tune",
    "TuneConfig": "study.tune_config",
    "tune_loop": "study.loop",
    "LoopConfig": "study.loop_config",
    "LoopTrial": "study.loop_trial",
    "load_best": "study.best",
    "TunedSchedule": "study.best",
    "get_augment": "data.augment",
    "AUGMENTATIONS": "data.augment",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'lrfind' has no attribute {name!r}") from None
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
