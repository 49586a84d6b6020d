"""Several workers on one study: who runs a trial, one at a time counting and asking (``claim``),
heartbeats while a batch trains, and before asking, the trials of workers that are gone found and
queued again (``prepare``)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState

from lrfind._errors import first_line
from lrfind.study import retries as _retries
from lrfind.study import trials as _study
from lrfind.study.storage import claim_lock

log = logging.getLogger(__name__)
WORKER = f"{socket.gethostname()}:{os.getpid()}"   # who ran a trial, in its user_attrs


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


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``. lrfind records heartbeats itself (``Heartbeat``), so Optuna's warning that
    heartbeats are meant for ``Study.optimize`` does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


def prepare(study: optuna.Study, single: bool, baselines: dict[float, dict[str, Any]] | None = None) -> None:
    """Before asking (under ``claim``): fail and requeue trials whose worker is gone; enqueue each
    constant baseline once (``baselines``: their choices by LR scale, ``trials.baselines``; by
    default the constant at the base LR). ``single``: the storage is a SQLite file that ``run_lock``
    holds."""
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
            optuna.storages.fail_stale_trials(study)    # heartbeats: failed, and requeued by retries.retry_stale
        stale = _never_beaten(study)
    for t in stale:
        _retries.fail_and_requeue(study, t, "stale")
    _retries.say_retried(stale, "their workers stopped")
    given_up = set(study.user_attrs.get("given_up", []))
    queued = {_study.baseline_scale(t) for t in study.get_trials(deepcopy=False)
              if _study.is_finished(t) or t.state in (TrialState.WAITING, TrialState.RUNNING)
              or _retries.original_number(t) in given_up}
    for scale, choices in (baselines or {1.0: _study.CONSTANT}).items():
        if scale not in queued:
            # the base LR's keeps the mark of studies stored before lrfind searched the constant's LR
            study.enqueue_trial(choices, user_attrs={"baseline": True if scale == 1.0 else scale})


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


def workers_here(study: optuna.Study) -> int:
    """The workers of the study that share this host's cores now: this one, and every other live
    process of this host that runs a trial of it (its ``worker`` attribute). A worker that waits for
    the others, or for the lock, uses no core and is not counted."""
    host = socket.gethostname()
    others = set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if not worker or worker == WORKER or worker in others:
            continue
        there, _, pid = worker.rpartition(":")
        if there == host and pid.isdigit() and _process_exists(int(pid)):
            others.add(worker)
    return 1 + len(others)


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
