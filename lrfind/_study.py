"""Optuna storage for ``tune``: open or resume a study safely, count and record trials.

A study remembers the setup that shaped its search space (model, data, epochs, schedules, ...) in
its user attributes; opening it again with another setup is refused before anything is written.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from .train import TrialRecord
    from .tuner import TuneConfig

log = logging.getLogger(__name__)

PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
    "none": optuna.pruners.NopPruner,
}
CONSTANT = {"schedule": "constant", "constant.use_warmup": False}


class StudyError(ValueError):
    """The storage cannot be opened, or the study exists with another setup."""


def describe(url: str) -> str:
    """The URL without its password, with host and database named."""
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
        if u.drivername.startswith("sqlite"):
            return f"SQLite file {u.database}"
        return f"{u.render_as_string(hide_password=True)} (host {u.host or 'localhost'}, database {u.database})"
    except Exception:  # not even a URL: show it as given
        return repr(url)


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def connect(url: str) -> optuna.storages.RDBStorage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.storages.RDBStorage(url)
    except Exception as e:   # SQLAlchemy's errors for bad URLs, refused connections, missing databases
        raise StudyError(f"cannot open storage {describe(url)}: {_first_line(e)}") from None


def open_study(cfg: "TuneConfig", out: Path) -> optuna.Study:
    """Create or resume the study; refuse one that exists with another setup, before any write."""
    if cfg.storage is None:
        out.mkdir(parents=True, exist_ok=True)
    url = cfg.storage or default_storage(out)
    name = cfg.study_name or f"lrfind-{cfg.model}-{cfg.dataset}"
    storage = connect(url)
    setup = jsonable(cfg.setup())
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        study_id = None
    if study_id is not None:
        stored = storage.get_study_user_attrs(study_id).get("lrfind_setup")
        if stored is None:
            raise StudyError(f"study {name!r} in {describe(url)} was not made by lrfind; use another --study-name")
        if stored != setup:
            diff = ", ".join(f"{k} {stored.get(k)!r} there, {setup.get(k)!r} here"
                             for k in sorted(set(stored) | set(setup)) if stored.get(k) != setup.get(k))
            raise StudyError(f"study {name!r} in {describe(url)} exists with another setup ({diff}); "
                             "use the same options to resume it, or another --study-name")
        stored_lr = storage.get_study_user_attrs(study_id).get("base_lr")
        if cfg.base_lr is not None and stored_lr is not None and cfg.base_lr != stored_lr:
            raise StudyError(f"study {name!r} in {describe(url)} runs at base LR {stored_lr:.6g}, not --base-lr "
                             f"{cfg.base_lr:.6g}; leave --base-lr out to resume it, or use another --study-name")
    sampler = optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=cfg.seed,
                                         n_startup_trials=min(10, max(2, cfg.trials // 5)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                    pruner=PRUNERS[cfg.pruner](), load_if_exists=True)
    if study_id is None:
        study.set_user_attr("lrfind_setup", setup)
        study.set_user_attr("storage", describe(url))
    return study


def stored_base_lr(study: optuna.Study) -> float | None:
    return study.user_attrs.get("base_lr")


def is_finished(t: FrozenTrial) -> bool:
    """Finished trials count towards the requested number: complete, pruned, or failed on NaN."""
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and t.user_attrs.get("failure") == "nan")


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if is_finished(t)]


def prepare_resume(study: optuna.Study, cfg: "TuneConfig") -> None:
    """Before asking: the constant baseline first, then the trials an interruption cut short."""
    trials = study.get_trials(deepcopy=False)
    if study.user_attrs.get("storage", "").startswith("SQLite"):
        # One process per SQLite file: a trial still "running" was cut off by a killed process.
        for t in trials:
            if t.state == TrialState.RUNNING:
                study._storage.set_trial_user_attr(t._trial_id, "interrupted", "stale")
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        trials = study.get_trials(deepcopy=False)
    has_constant = any(t.params.get("schedule") == "constant" and (is_finished(t) or t.state in
                       (TrialState.WAITING, TrialState.RUNNING)) for t in trials)
    if not has_constant:
        study.enqueue_trial(CONSTANT)
    requeued = set(study.user_attrs.get("requeued", []))
    redo = [t for t in trials if t.state == TrialState.FAIL and "interrupted" in t.user_attrs
            and t.number not in requeued and t.params.get("schedule") != "constant"]
    for t in redo:
        study.enqueue_trial(t.params)
    if redo:
        study.set_user_attr("requeued", sorted(requeued | {t.number for t in redo}))
        log.info("rerunning %d interrupted trial(s)", len(redo))


def tell(study: optuna.Study, trial: optuna.Trial, rec: "TrialRecord") -> None:
    """Store a trial's history and tell Optuna how it ended."""
    trial.set_user_attr("val_acc", rec.val_acc)
    trial.set_user_attr("val_loss", rec.val_loss)
    trial.set_user_attr("train_loss", rec.train_loss)
    trial.set_user_attr("epochs_run", len(rec.val_acc))
    if rec.status == "complete":
        study.tell(trial, rec.val_acc[-1])
    elif rec.status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("failure", "nan")
        trial.set_user_attr("failed_at_step", rec.failed_at)
        study.tell(trial, state=TrialState.FAIL)


def best(study: optuna.Study, schedule: str | None = None) -> FrozenTrial | None:
    """The complete trial with the highest validation accuracy (of one schedule, if given)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if schedule is None or t.user_attrs.get("schedule") == schedule]
    return max(done, key=lambda t: t.value) if done else None


def jsonable(value: Any) -> Any:
    """Plain Python for JSON and Optuna attributes: numpy scalars and tuples converted."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
