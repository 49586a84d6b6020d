"""Opening the study of ``tune`` or ``tune_loop`` in its storage: create it, or resume it safely.

A study remembers the setup that shaped its search space (model, data, epochs, schedules, ...) in
its user attributes; opening it again with another setup is refused before anything is written.
Its base LR, and the range test it came from, are stored with it too.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from lrfind.study import retries as _retries
from lrfind.study.pruner import PRUNERS
from lrfind.study.sampler import SeededByTrial
from lrfind.study.spec import StudySpec
from lrfind.study.storage import StudyError, connect, default_storage, describe
from lrfind.study.trials import METRICS, jsonable

if TYPE_CHECKING:
    from lrfind.rangetest.result import RangeTestResult


# Setup fields added after studies were stored without them, and the value those studies had: a
# study stored before lrfind searched the constant's LR ran its constant at the base LR.
SETUP_DEFAULTS = {"metric": "accuracy", "search_constant_lr": False}

# Setup entries that a config leaves as None take the stored study's value, and a new study's here:
# each trial of a new study starts from weights of its own seed (see TuneConfig.same_init), and a
# new study searches the constant's LR (TuneConfig.search_constant_lr).
AS_STORED = {"same_init": False, "search_constant_lr": True}


def open_study(cfg: StudySpec, out: Path) -> optuna.Study:
    """Create or resume the study; refuse one that exists with another setup, before any write."""
    if cfg.storage is None:
        out.mkdir(parents=True, exist_ok=True)
    url = cfg.storage or default_storage(out)
    name = cfg.study_name or f"lrfind-{cfg.model}-{cfg.dataset}"
    storage = connect(url, cfg.heartbeat, on_stale=_retries.retry_stale)
    setup = jsonable(cfg.setup())
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        study_id = None
    if study_id is not None:
        stored = storage.get_study_user_attrs(study_id).get("lrfind_setup")
        if stored is None and storage.get_all_trials(study_id, deepcopy=False):
            raise StudyError(f"study {name!r} in {describe(url)} was not made by lrfind; use another --study-name")
        if stored is not None:
            stored = _as_now(stored)
            setup = _left_as(setup, stored)
        if stored is not None and stored != setup:
            diff = ", ".join(_differs(k, stored.get(k), setup.get(k))
                             for k in sorted(set(stored) | set(setup)) if stored.get(k) != setup.get(k))
            raise StudyError(f"study {name!r} in {describe(url)} exists with another setup ({diff}); "
                             "use the same options to resume it, or another --study-name")
        stored_lr = storage.get_study_user_attrs(study_id).get("base_lr")
        if cfg.base_lr is not None and stored_lr is not None and cfg.base_lr != stored_lr:
            raise StudyError(f"study {name!r} in {describe(url)} runs at base LR {stored_lr:.6g}, not --base-lr "
                             f"{cfg.base_lr:.6g}; leave --base-lr out (in Python: base_lr=None) to resume it, "
                             "or use another --study-name")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(storage=storage, study_name=name, direction=METRICS[cfg.scoring][1],
                                    sampler=SeededByTrial(cfg.seed, n_startup_trials=min(10, max(2, cfg.trials // 5))),
                                    pruner=PRUNERS[cfg.pruner](cfg.epochs), load_if_exists=True)
    if study.user_attrs.get("lrfind_setup") is None:   # new (another worker may be creating it too)
        study.set_user_attr("lrfind_setup", _left_as(setup, AS_STORED))
    return study


def _differs(key: str, there: Any, here: Any) -> str:
    """How a setup's entry differs: "epochs 2 there, 3 here"; for two lists (the schedules) only
    what one has and the other lacks, "schedules plateau here only"."""
    if isinstance(there, list) and isinstance(here, list) and set(map(repr, there)) != set(map(repr, here)):
        sides = [(side, [x for x in a if x not in b]) for side, a, b in (("there", there, here), ("here", here, there))]
        return ", ".join(f"{key} {', '.join(map(str, only))} {side} only" for side, only in sides if only)
    return f"{key} {there!r} there, {here!r} here"


def _as_now(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored setup as it would be stored now: what studies from before an option meant
    (``SETUP_DEFAULTS``); and val_size 10,000, once the default and a cap at a sixth of the set,
    which is what None (the default) means now."""
    stored = {**SETUP_DEFAULTS, **stored}
    if stored.get("val_size") == 10_000:
        stored["val_size"] = None
    return stored


def _left_as(setup: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """``setup`` with the ``AS_STORED`` entries it leaves as None taken from ``source``."""
    return {k: source.get(k, AS_STORED[k]) if k in AS_STORED and v is None else v for k, v in setup.items()}


def stored_setup(study: optuna.Study, key: str) -> Any:
    """An entry of the setup the study was made with (``SETUP_DEFAULTS``' for a study stored before it)."""
    return _as_now(study.user_attrs["lrfind_setup"])[key]


def stored_base_lr(study: optuna.Study) -> float | None:
    return study.user_attrs.get("base_lr")


def store_base_lr(study: optuna.Study, base_lr: float, range_test: "RangeTestResult | None" = None) -> None:
    """The study's base LR, where it came from, and the range test it came from (its curve, every
    sweep's suggestion, its warnings: for the report and ``lr_curves.png``)."""
    study.set_user_attr("base_lr", float(base_lr))
    study.set_user_attr("base_lr_source", "given" if range_test is None else "range test")
    if range_test is not None:
        study.set_user_attr("range_test", {
            "lrs": range_test.lrs.tolist(),
            "smoothed": [x if math.isfinite(x) else None for x in range_test.smoothed.tolist()],
            "suggested_lr": range_test.suggested_lr, "falling_range": range_test.falling_range,
            "stop_reason": range_test.stop_reason, "seed_lrs": range_test.seed_lrs, "shallow": range_test.shallow,
            "num_iter": range_test.num_iter, "faster_sweeps": range_test.config.get("faster_sweeps"),
            "how": range_test.config.get("how"), "sized": range_test.config.get("sized"),
            "warnings": range_test.warnings})
