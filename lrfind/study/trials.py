"""The study of ``tune`` in its storage: open or resume it safely, ask, count and record trials.

A study remembers the setup that shaped its search space (model, data, epochs, schedules, ...) in
its user attributes; opening it again with another setup is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from lrfind._errors import first_line
from lrfind.study.storage import StudyError, claim_lock, connect, default_storage, describe
from lrfind.schedules import get_schedule
from lrfind.study.spec import StudySpec

if TYPE_CHECKING:
    from lrfind.rangetest.result import RangeTestResult
    from lrfind.engine.trials import TrialRecord

log = logging.getLogger(__name__)
WORKER = f"{socket.gethostname()}:{os.getpid()}"   # who ran a trial, in its user_attrs

# A trial whose LR will still fall by more than this factor before its run ends has not annealed:
# its validation score says little yet about where it will end, so the median rule waits.
STILL_FALLING = 2.0
# A trial cut short this many times (its worker killed, an error) is not run again.
MAX_RETRIES = 3


class AnnealedFirst(optuna.pruners.BasePruner):
    """``inner``'s verdict, on trials whose LR has annealed: a trial whose schedule will still cut
    its LR by more than ``STILL_FALLING`` times before the end is not pruned yet. Without this, the
    median rule judges a warmup-stable-decay, a late multistep or a one-cycle before its decay, at
    its worst: in a 50-trial CPU study run without pruning, the median after 2 of 3 epochs would
    have pruned the trial that finished best and 3 of the top 6 (rank correlation between the two
    epochs 0.51); with this rule it prunes 14 trials instead of 25, none of the top 8. With Adam:
    the best and 4 of the top 8 (0.30), and 12 instead of 27 (``bench/pruning_replay.py``)."""

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.inner.prune(study, trial) and not lr_still_falling(study, trial)


def lr_still_falling(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Whether the trial's LR, where it last reported, is more than ``STILL_FALLING`` times its LR
    at the end of the run (the schedule and run length the study recorded; a metric-driven
    schedule as if it made no further cut). False where any of that is missing."""
    total, per_epoch = study.user_attrs.get("steps"), study.user_attrs.get("steps_per_epoch")
    name, params, epoch = trial.user_attrs.get("schedule"), trial.user_attrs.get("params"), trial.last_step
    if None in (total, per_epoch, name, params, epoch):
        return False
    done = min(total, (epoch + 1) * per_epoch)                 # steps trained when it reported
    now, end = get_schedule(name).factor(np.array([done - 1, total - 1]), total, metrics=[], **params)
    return bool(now > STILL_FALLING * end)


# Each takes the number of epochs a trial trains. The median rule judges a trial from its second
# report on when there are three epochs or more: schedules that climb to a high peak (one-cycle,
# cyclic, warmup) are at their worst after the first epoch, and they are the ones that win at 3.
# It judges only trials that have annealed (``AnnealedFirst``).
PRUNERS: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    "median": lambda epochs: AnnealedFirst(optuna.pruners.MedianPruner(n_startup_trials=5,
                                                                       n_warmup_steps=1 if epochs >= 3 else 0)),
    "hyperband": lambda epochs: optuna.pruners.HyperbandPruner(min_resource=1),
    "none": lambda epochs: optuna.pruners.NopPruner(),
}
CONSTANT = {"schedule": "constant", "constant.use_warmup": False}
# Setup fields added after studies were stored without them, and the value those studies had.
SETUP_DEFAULTS = {"metric": "accuracy"}
# Setup entries that a config leaves as None take the stored study's value, and a new study's here:
# each trial of a new study starts from weights of its own seed (see TuneConfig.same_init).
AS_STORED = {"same_init": False}
# What trials are scored on: the record's per-epoch list, and which way is better.
METRICS = {"accuracy": ("val_acc", "maximize"), "loss": ("val_loss", "minimize")}


def objective(rec: "TrialRecord", metric: str) -> float:
    """A trial's score after its latest epoch: validation accuracy or loss."""
    return getattr(rec, METRICS[metric][0])[-1]


def metric_of(study: optuna.Study) -> str:
    """The study's metric: ``loss`` for a study that minimises, else accuracy (every older study)."""
    return "loss" if study.direction == optuna.study.StudyDirection.MINIMIZE else "accuracy"


def sign(study: optuna.Study) -> float:
    """+1 when a higher score is better (accuracy), -1 when lower is (loss): ``sign * (a - b) > 0``
    says a beat b."""
    return -1.0 if metric_of(study) == "loss" else 1.0


def val_acc(t: FrozenTrial, study: optuna.Study | None = None) -> float | None:
    """A trial's validation accuracy after its last epoch, whatever the study's metric (its value in
    a study scored on accuracy, when the per-epoch record is missing)."""
    accs = t.user_attrs.get("val_acc")
    if accs:
        return accs[-1]
    return t.value if study is not None and metric_of(study) == "accuracy" else None


def val_loss(t: FrozenTrial) -> float | None:
    """A trial's validation loss after its last epoch (None before its first)."""
    losses = t.user_attrs.get("val_loss")
    return losses[-1] if losses else None


def ranked(study: optuna.Study, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Best first by the study's metric; trials without a value (pruned, failed) by their last
    report, after those with one."""
    key, better = METRICS[metric_of(study)][0], sign(study)

    def score(t: FrozenTrial) -> tuple[int, float]:
        if t.value is not None:
            return 1, better * t.value
        last = (t.user_attrs.get(key) or [None])[-1]
        return 0, better * last if last is not None and math.isfinite(last) else -math.inf
    return sorted(trials, key=score, reverse=True)


def _engine(study: optuna.Study):
    """The SQLAlchemy engine under the study's (cached) RDB storage, or None."""
    storage = study._storage
    return getattr(getattr(storage, "_backend", storage), "engine", None)


def _journal_file(study: optuna.Study) -> Path | None:
    """The file of the study's journal storage, or None for another storage."""
    path = getattr(getattr(study._storage, "_backend", None), "_file_path", None)
    return Path(path) if isinstance(path, str) else None


@contextlib.contextmanager
def claim(study: optuna.Study) -> Iterator[None]:
    """Serialise "count the trials, then ask for more" across workers, so that no study overshoots.

    PostgreSQL: an advisory lock keyed by the study. A journal file: a lock on a file beside it
    (its workers share one machine). SQLite: ``run_lock`` already makes the process alone. Other
    databases: no lock (a few extra trials are possible when workers race).
    """
    journal = _journal_file(study)
    if journal is not None:
        with claim_lock(journal):
            yield
        return
    engine = _engine(study)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    import sqlalchemy

    key = zlib.crc32(f"lrfind:{study.study_name}".encode())
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})


class Heartbeat:
    """Record a heartbeat for the given trials now and every ``interval`` seconds, in a thread."""

    def __init__(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        storage = study._storage
        self.interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self.storage, self.ids = storage, [t._trial_id for t in trials]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        for trial_id in self.ids:
            try:
                self.storage.record_heartbeat(trial_id)
            except Exception as e:  # a lost connection must not kill training; the next beat retries
                log.warning("heartbeat for trial id %s failed: %s", trial_id, first_line(e))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat()

    def __enter__(self) -> "Heartbeat":
        if self.interval:
            self._beat()
            self._thread = threading.Thread(target=self._run, name="lrfind-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class SeededByTrial(optuna.samplers.BaseSampler):
    """Optuna's multivariate TPE, its random numbers drawn afresh for each trial from the study's
    seed and the trial's number. One seed for the sampler would make two workers that start
    together (or a study resumed in a new process) draw the same random first trials again; trial
    numbers are unique in a study, so no two trials share a draw, and a study run by one worker
    is as reproducible as before."""

    def __init__(self, seed: int | None, n_startup_trials: int) -> None:
        self.seed, self.n_startup_trials = seed, n_startup_trials
        self._tpe = self._for(None)

    def _for(self, number: int | None) -> optuna.samplers.TPESampler:
        seed = self.seed if self.seed is None or number is None else int(
            np.random.SeedSequence([self.seed, number]).generate_state(1)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed,
                                              n_startup_trials=self.n_startup_trials)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe = self._for(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()


def _differs(key: str, there: Any, here: Any) -> str:
    """How a setup's entry differs: "epochs 2 there, 3 here"; for two lists (the schedules) only
    what one has and the other lacks, "schedules plateau here only"."""
    if isinstance(there, list) and isinstance(here, list) and set(map(repr, there)) != set(map(repr, here)):
        sides = [(side, [x for x in a if x not in b]) for side, a, b in (("there", there, here), ("here", here, there))]
        return ", ".join(f"{key} {', '.join(map(str, only))} {side} only" for side, only in sides if only)
    return f"{key} {there!r} there, {here!r} here"


def open_study(cfg: StudySpec, out: Path) -> optuna.Study:
    """Create or resume the study; refuse one that exists with another setup, before any write."""
    if cfg.storage is None:
        out.mkdir(parents=True, exist_ok=True)
    url = cfg.storage or default_storage(out)
    name = cfg.study_name or f"lrfind-{cfg.model}-{cfg.dataset}"
    storage = connect(url, cfg.heartbeat, on_stale=retry_stale)
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
    """An entry of the setup the study was made with."""
    return study.user_attrs["lrfind_setup"][key]


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
            "warnings": range_test.warnings})


def is_finished(t: FrozenTrial) -> bool:
    """Finished trials count towards the requested number: complete, pruned, or failed on NaN."""
    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and t.user_attrs.get("failure") == "nan")


def finished(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if is_finished(t)]


def prepare(study: optuna.Study, single: bool) -> None:
    """Before asking (under ``claim``): fail and requeue trials whose worker is gone; enqueue the
    constant baseline once. ``single``: the storage is a SQLite file that ``run_lock`` holds."""
    stale: list[FrozenTrial] = []
    if single:
        # run_lock makes this process the only one on the file: a "running" trial was cut off.
        stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    elif _journal_file(study) is not None:
        # its workers share this machine: a "running" trial whose process is gone was cut off
        stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                 if not _worker_alive(t.user_attrs.get("worker"))]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optuna.storages.fail_stale_trials(study)    # heartbeats: failed, and requeued by retry_stale
        stale = _never_beaten(study)
    for t in stale:
        _fail_and_requeue(study, t, "stale")
    _say_retried(stale, "their workers stopped")
    given_up = set(study.user_attrs.get("given_up", []))
    if not any(t.user_attrs.get("baseline") and (is_finished(t) or t.state in (TrialState.WAITING, TrialState.RUNNING)
                                                 or original_number(t) in given_up)
               for t in study.get_trials(deepcopy=False)):
        study.enqueue_trial(CONSTANT, user_attrs={"baseline": True})


def _say_retried(trials: Sequence[FrozenTrial | int], why: str) -> None:
    """One line for the trials found cut short: they run again, each with its own seed."""
    if trials:
        numbers = sorted(t if isinstance(t, int) else t.number for t in trials)
        log.warning("%d interrupted trial%s (%s) run%s again from the start, with %s seed%s: %s",
                    len(numbers), "s" if len(numbers) != 1 else "", ", ".join(map(str, numbers)),
                    "" if len(numbers) != 1 else "s", "their" if len(numbers) != 1 else "its",
                    "s" if len(numbers) != 1 else "", why)


def _worker_alive(worker: str | None) -> bool:
    """Whether the process that ran a trial (its ``worker`` attribute, ``host:pid``) still runs. A
    process on another machine (a journal on a shared disk) is taken to; a trial without one was
    asked by a process that died before it could say (it says so under ``claim``)."""
    if not worker or worker == WORKER:       # this process's own: none of its trials runs between batches
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    return _process_exists(int(pid))


def _process_exists(pid: int) -> bool:
    """Whether a process of this machine runs with this id."""
    if os.name == "nt":              # there os.kill(pid, 0) would end the process: ask Windows
        return _windows_process_exists(pid)
    try:
        os.kill(pid, 0)                       # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:                   # another user's process
        return True
    return True


def _windows_process_exists(pid: int) -> bool:
    """``OpenProcess`` fails for an id no process has (and for another user's, which does exist);
    a process that has ended but whose handle is still held reports an exit code other than
    STILL_ACTIVE."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)     # type: ignore[attr-defined]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    handle = kernel32.OpenProcess(0x1000, False, pid)              # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5                        # ERROR_ACCESS_DENIED: it exists
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259                                   # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _fail_and_requeue(study: optuna.Study, t: FrozenTrial, reason: str) -> None:
    """Fail a running trial whose worker is gone (it does not count as finished) and queue a copy."""
    study._storage.set_trial_user_attr(t._trial_id, "interrupted", reason)
    study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    requeue(study, t)


def _never_beaten(study: optuna.Study) -> list[FrozenTrial]:
    """Running trials without a single heartbeat. Called under ``claim``: a live worker records its
    first beat before it lets the lock go, so such a trial's worker died between ask and beat."""
    engine = _engine(study)
    if engine is None or engine.dialect.name != "postgresql":
        return []
    import sqlalchemy

    query = sqlalchemy.text("SELECT t.number FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
                            "WHERE t.study_id = :sid AND t.state = 'RUNNING' AND h.trial_id IS NULL")
    with engine.connect() as conn:
        numbers = {row[0] for row in conn.execute(query, {"sid": study._study_id})}
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number in numbers]


def original_number(trial: FrozenTrial | optuna.Trial) -> int:
    """The number of the trial that ``trial`` retries (its own when it retries none): a retry runs
    with that trial's seed, so that it is the same run as the one cut short."""
    return trial.user_attrs.get("retry_of", trial.number)


def requeue(study: optuna.Study, trial: FrozenTrial | optuna.Trial, counted: bool = True) -> None:
    """Put a copy of a trial that did not finish back in the queue (same parameters, same role, same
    seed), unless it was cut short ``MAX_RETRIES`` times already: a configuration that kills its
    worker (out of memory, say) is given up then, and the study records it (``given_up``).
    ``counted=False``: the user stopped it (Ctrl-C), which is no fault of the configuration's."""
    retries = trial.user_attrs.get("retries", 0) + counted
    number = original_number(trial)
    if retries > MAX_RETRIES:
        log.warning("trial %d (%s) was cut short %d times; it is not run again (the study goes on with other "
                    "trials)", number, trial.user_attrs.get("schedule", "?"), retries)
        study.set_user_attr("given_up", sorted({*study.user_attrs.get("given_up", []), number}))
        return
    attrs = {"baseline": True} if trial.user_attrs.get("baseline") else {}
    study.enqueue_trial(trial.params, user_attrs={**attrs, "retry_of": number, "retries": retries})


def retry_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna's callback for a trial failed for its silent heartbeat (an RDB storage): requeued as
    on every other storage."""
    _say_retried([trial], "its worker stopped beating")
    requeue(study, trial)


def abandon(study: optuna.Study, trial: optuna.Trial, error: BaseException) -> None:
    """A trial cut short by an exception (Ctrl-C, an error): failed, and a copy queued for whoever
    goes on. It does not count as finished."""
    trial.set_user_attr("interrupted", type(error).__name__)
    study.tell(trial, state=TrialState.FAIL)
    requeue(study, trial, counted=not isinstance(error, KeyboardInterrupt))


def interrupted_text(study: optuna.Study, trials: int, again: str) -> str:
    """What Ctrl-C kept, and how to go on (``again``: "run the same command again")."""
    n, _, _ = counts(study)
    return f"interrupted: {n} of {trials} trials finished and stored; {again} to go on"


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``. lrfind records heartbeats itself (``Heartbeat``), so Optuna's warning that
    heartbeats are meant for ``Study.optimize`` does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


class _Snapshot:
    """The study as read once, for a pruner that judges a whole batch: ``Trial.should_prune`` reads
    every trial from the storage again for each trial it judges (40 ms a call on SQLite)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._trials = study.get_trials(deepcopy=False)

    def get_trials(self, deepcopy: bool = False, states=None) -> list[FrozenTrial]:
        return [t for t in self._trials if states is None or t.state in states]

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


def should_prune(study: optuna.Study, trials: list[optuna.Trial]) -> list[bool]:
    """The pruner's verdict on each trial of a batch that has just reported. Pruners that only
    read the study's trials (median, percentile, none) judge all of them from one read."""
    judge = study.pruner.inner if isinstance(study.pruner, AnnealedFirst) else study.pruner
    if not isinstance(judge, (optuna.pruners.PercentilePruner, optuna.pruners.NopPruner)):
        return [t.should_prune() for t in trials]
    snapshot = _Snapshot(study)
    frozen = {t.number: t for t in snapshot.trials}
    return [study.pruner.prune(snapshot, frozen[t.number]) for t in trials]


def counts(study: optuna.Study) -> tuple[int, int, int]:
    """(finished runs, finished twins, running) trials. A twin (``is_twin``) does not count as a run."""
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if is_finished(t)]
    twins = sum(map(is_twin, finished))
    return len(finished) - twins, twins, sum(t.state == TrialState.RUNNING for t in trials)


def tell(study: optuna.Study, trial: optuna.Trial, rec: "TrialRecord", metric: str = "accuracy") -> None:
    """Store a trial's history and tell Optuna how it ended, scored by ``metric``."""
    trial.set_user_attr("val_acc", rec.val_acc)
    trial.set_user_attr("val_loss", rec.val_loss)
    trial.set_user_attr("train_loss", rec.train_loss)
    trial.set_user_attr("epochs_run", max(len(rec.val_loss), len(rec.val_acc)))   # regression: no accuracy
    if rec.status == "complete":
        study.tell(trial, objective(rec, metric))
    elif rec.status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        trial.set_user_attr("failure", "nan")
        trial.set_user_attr("failed_at_step", rec.failed_at)
        study.tell(trial, state=TrialState.FAIL)


def twin_of(study: optuna.Study, trial: optuna.Trial,
            complete: Sequence[FrozenTrial | optuna.Trial] | None = None) -> FrozenTrial | optuna.Trial | None:
    """A complete trial that made the same choices (Optuna's samplers repeat a good one), found in
    ``complete`` (the study's complete trials, read once for a batch; or the batch's trials before
    it) or else in the study."""
    if complete is None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return next((t for t in complete if t.params == trial.params), None)


def is_twin(trial: FrozenTrial) -> bool:
    """Whether the trial repeated an earlier one's choices from the same weights, and took its
    score without running (``tell_twin``)."""
    return "duplicate_of" in trial.user_attrs


def tell_twin(study: optuna.Study, trial: optuna.Trial, twin: FrozenTrial) -> None:
    """Score ``trial`` as its finished ``twin`` ended, without running it: the same schedule from the
    same weights on the same batches is the same run (complete with its score, pruned, or failed on
    NaN). Twins do not count towards the trials asked for."""
    for key in ("val_acc", "val_loss", "train_loss", "epochs_run", "failure", "failed_at_step"):
        if key in twin.user_attrs:
            trial.set_user_attr(key, twin.user_attrs[key])
    trial.set_user_attr("duplicate_of", twin.number)
    for epoch, value in sorted(twin.intermediate_values.items()):    # its curve, for optuna-dashboard too
        trial.report(value, epoch)
    if twin.state == TrialState.COMPLETE:
        study.tell(trial, twin.value)
    else:
        study.tell(trial, state=twin.state)


def best(study: optuna.Study, where: Callable[[FrozenTrial], bool] = lambda t: True) -> FrozenTrial | None:
    """The complete trial with the best score, by the study's metric (of those ``where`` accepts)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if where(t)]
    return ranked(study, done)[0] if done else None


def constant_baseline(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial of the plain constant LR (no warmup, at the base LR): the baseline
    every schedule is judged against. A constant LR after a warmup is a schedule like the others."""
    # a run too short for a warmup (fewer than 4 steps) is never asked whether to warm up
    return best(study, where=lambda t: t.params.get("schedule") == "constant"
                and not t.params.get("constant.use_warmup", False) and set(t.params) <= set(CONSTANT))


def peak_lr(study: optuna.Study, trial: FrozenTrial) -> float:
    """The highest LR of a trial's schedule: the base LR, times its peak scale if it warms up."""
    return study.user_attrs.get("base_lr", float("nan")) * trial.user_attrs.get("peak_scale", 1.0)


def jsonable(value: Any) -> Any:
    """Plain Python for JSON and Optuna attributes: numpy scalars and tuples converted."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
