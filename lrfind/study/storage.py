"""Where a study lives: an Optuna journal file (the default), SQLite or PostgreSQL.

Names a storage for people (``describe``), finds the default one in an output folder, opens it
with clear errors (``connect``), and keeps a SQLite file to one lrfind process while a journal
file takes several on one machine (``run_lock``, ``claim_lock``).
A storage given as a path is a journal file; one given as ``scheme://...`` is an RDB URL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import FrozenTrial

from lrfind.study import journal as _journal
from lrfind._errors import first_line

try:
    import fcntl
except ImportError:          # Windows: no flock; filelock's exclusive locks stand in (``_run_lock_without_flock``)
    fcntl = None             # type: ignore[assignment]

log = logging.getLogger(__name__)


class StudyError(ValueError):
    """The storage cannot be opened, or the study exists with another setup."""


class StorageArgumentError(StudyError):
    """The storage was named wrongly (a SQLite file given as a path, a folder, a URL no database
    driver knows): the user's mistake in ``--storage``, not a failure of the storage."""


def describe(url: str) -> str:
    """The storage as a person would name it: a journal file's path, or the URL without its password."""
    if is_journal(url):
        return f"journal file {url}"
    try:
        from sqlalchemy.engine import make_url

        u = make_url(url)
        if u.drivername.startswith("sqlite"):
            return f"SQLite file {u.database}"
        return f"{u.render_as_string(hide_password=True)} (host {u.host or 'localhost'}, database {u.database})"
    except Exception:  # not even a URL: show it as given
        return repr(url)


def default_storage(out: Path) -> str:
    """``OUT/study.log``, an Optuna journal file; ``OUT/study.db`` (SQLite) where an older run left one."""
    journal, sqlite = out / "study.log", out / "study.db"
    if sqlite.is_file() and not journal.exists():
        return f"sqlite:///{sqlite.resolve()}"
    return str(journal.resolve())


def find_default_storage(out: Path) -> str | None:
    """The default storage of ``out`` if a study is stored there, else None."""
    url = default_storage(out)
    return url if local_file(url).is_file() else None


def is_journal(url: str) -> bool:
    """A storage given as a file path (no ``scheme://``) is an Optuna journal file."""
    return "://" not in url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def single_process(url: str) -> bool:
    """A SQLite file: one lrfind process at a time, held by ``run_lock``."""
    return is_sqlite(url)


def local_storage(url: str) -> bool:
    """A storage in a local file: a journal or SQLite."""
    return is_journal(url) or is_sqlite(url)


def local_file(url: str) -> Path:
    """The file of a journal or SQLite storage."""
    if is_journal(url):
        return Path(url).expanduser()
    from sqlalchemy.engine import make_url

    return Path(make_url(url).database or "study.db")


SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def connect(url: str, heartbeat: int | None = None, create: bool = True,
            on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> optuna.storages.BaseStorage:
    """Open a storage: a journal file (a path), or an RDB URL. With ``heartbeat`` (seconds) and an
    RDB server, a trial whose worker stops beating for three intervals is failed, and handed to
    ``on_stale`` (which queues it again). ``create=False``: a missing journal file is an error, not
    a new study."""
    if is_journal(url):
        return _open_journal(local_file(url), create)
    if is_sqlite(url) and not create and not local_file(url).is_file():
        raise StudyError(f"no study in {describe(url)}: the file does not exist; check the path")
    try:
        with warnings.catch_warnings():   # Optuna marks heartbeats experimental
            warnings.simplefilter("ignore")
            kwargs: dict[str, Any] = {}
            if heartbeat and not is_sqlite(url):
                new_name = "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
                kwargs = {"heartbeat_interval": int(heartbeat), "grace_period": 3 * int(heartbeat),
                          ("heartbeat_stale_trial_callback" if new_name else "failed_trial_callback"): on_stale}
            return _create_storage(with_driver(url), kwargs)
    except ImportError as e:       # Optuna re-raises a missing driver as a plain ImportError
        raise StudyError(f"cannot open storage {describe(url)}: {first_line(e).rstrip('.')}; install the database's driver, "
                         "e.g. pip install 'lrfind[postgres]' for PostgreSQL") from None
    except Exception as e:   # SQLAlchemy's errors for bad URLs, refused connections, missing databases
        bad_url = type(e).__name__ in ("ArgumentError", "NoSuchModuleError")     # sqlalchemy.exc's, for the URL
        raise (StorageArgumentError if bad_url else StudyError)(
            f"cannot open storage {describe(url)}: {first_line(e)}") from None


# PostgreSQL drivers in the order lrfind takes them for a URL that names none: psycopg (3), which
# lrfind[postgres] installs and SQLAlchemy 2.1 defaults to, then psycopg2, SQLAlchemy 2.0's default.
POSTGRES_DRIVERS = ("psycopg", "psycopg2")


def with_driver(url: str) -> str:
    """``postgresql://...`` with the driver that is installed named in it (``postgresql+psycopg://``):
    the scheme alone means psycopg 3 to SQLAlchemy 2.1 and psycopg2 to 2.0, whichever is missing. A
    URL that names its driver is left as it is."""
    if not url.startswith("postgresql://"):
        return url
    found = next((d for d in POSTGRES_DRIVERS if importlib.util.find_spec(d) is not None), None)
    return url if found is None else f"postgresql+{found}://{url[len('postgresql://'):]}"


def _check_journal_path(path: Path) -> None:
    if path.suffix in SQLITE_SUFFIXES:
        raise StorageArgumentError(f"--storage {path} looks like a SQLite file; give it as a URL, sqlite:///{path}, "
                         "or use a .log path for a journal file")
    if path.is_dir():
        raise StorageArgumentError(f"cannot open storage {describe(str(path))}: it is a folder; give a file path such as "
                         f"{path / 'study.log'}")


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Ctrl-C inside is held back, then raised once the block is done (in the main thread, the
    only one Python interrupts)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:   # None: set outside Python
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            signal.raise_signal(signal.SIGINT)      # now, to the handler there was (KeyboardInterrupt)


class _ShieldedLock(JournalFileOpenLock):
    """Optuna's lock on a journal file's writes, taken and given back whole even under Ctrl-C.
    Interrupted between its steps, Optuna's release leaves the lock file behind (and raises a
    FileNotFoundError over the KeyboardInterrupt): the next run then waits 30 s before it takes the
    lock by force. An interrupted acquire releases, which would take another worker's lock away."""

    def acquire(self) -> bool:
        with _ctrl_c_deferred():
            return super().acquire()

    def release(self) -> None:
        with _ctrl_c_deferred():
            super().release()


def _open_journal(path: Path, create: bool) -> optuna.storages.BaseStorage:
    """Optuna's journal storage on a file: one appended JSON line per operation. It costs far less
    per write than SQLite (no SQL layer; ``experiments/storage.py`` measures both), and needs no
    SQLAlchemy to start."""
    name = describe(str(path))
    _check_journal_path(path)
    if not create and not path.is_file():
        raise StudyError(f"no study in {path}: the file does not exist; check the path, or pass an RDB URL")
    if not create and path.stat().st_size == 0:
        raise StudyError(f"no study in {path}: the file is empty")
    try:
        _journal.check(path)                 # a damaged line is refused before Optuna reads or writes
        path.parent.mkdir(parents=True, exist_ok=True)
        return open_journal_storage(path)
    except _journal.JournalError as e:
        raise StudyError(str(e)) from None
    except OSError as e:
        raise StudyError(f"cannot open storage {name}: {e.strerror or e}") from None
    except Exception as e:   # lines that are not Optuna's journal
        raise StudyError(f"cannot open storage {name}: it is not an Optuna journal file ({first_line(e)})") from None


def open_journal_storage(path: Path) -> JournalStorage:
    """Optuna's journal storage on ``path``, its writes under ``_ShieldedLock``; unchecked."""
    return JournalStorage(JournalFileBackend(str(path), lock_obj=_ShieldedLock(str(path))))


def _mend_alone(path: Path, existed_empty: bool) -> None:
    """What the journal's only process does before the others may join: drop a write lock and a
    last line that a crash left, and say when an existing journal holds nothing."""
    _drop_stale_write_lock(path)
    try:
        _journal.mend_cut_last_line(path)
    except _journal.JournalError as e:
        raise StudyError(str(e)) from None
    if existed_empty:
        log.warning("%s is empty (0 bytes): it holds no trials to resume, and a new study starts in it. If it held "
                    "a study, that study is lost: look for a copy of the file", path)


def _drop_stale_write_lock(path: Path) -> None:
    """Optuna's write lock, a file beside the journal, left by a process killed while it held it:
    the next write would wait 30 s, then take it by force. ``run_lock`` calls this when its process
    is the journal's only one, so that no writer can be holding it."""
    lock = Path(f"{path}.lock")
    try:
        lock.unlink()
    except OSError:          # none (the usual case), or not ours to remove: Optuna's grace period then
        return
    log.warning("%s: removed the write lock %s left by a process that stopped while writing", path, lock.name)


def _create_storage(url: str, kwargs: dict[str, Any], attempts: int = 5) -> optuna.storages.RDBStorage:
    """RDBStorage creates its tables on first use; workers starting together on an empty database
    race on that (PostgreSQL: "duplicate key ... pg_type"). The loser tries again."""
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as e:
            text = str(e)
            if attempt == attempts - 1 or not ("duplicate key" in text or "already exists" in text):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


@contextlib.contextmanager
def run_lock(url: str) -> Iterator[None]:
    """Held for a whole run. A SQLite file serves one lrfind process at a time (several workers need
    PostgreSQL or a journal). A journal file serves several on one machine, each holding a shared
    lock on it; the first one alone mends a last line a crash cut short."""
    if not local_storage(url):
        yield
        return
    if fcntl is None:
        with _run_lock_without_flock(url):
            yield
        return
    if is_journal(url):
        path = local_file(url)         # the journal itself: Optuna locks its writes with a file beside it
        _check_journal_path(path)
    else:
        path = local_file(url).with_suffix(".lock")   # not the database: SQLite locks that one itself
    existed_empty = path.is_file() and path.stat().st_size == 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = path.open("a+")
    except OSError as e:
        raise StudyError(f"cannot open storage {describe(url)}: {e.strerror or e}") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        if not alone and not is_journal(url):
            raise _in_use(url) from None
        try:
            if is_journal(url):
                if alone:
                    _mend_alone(path, existed_empty)
                fcntl.flock(f, fcntl.LOCK_SH)          # from exclusive: the others may join now
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def repair(url: str) -> _journal.Repair:
    """Mend a journal file (``_journal.repair``) while no lrfind process uses it."""
    if not is_journal(url):
        raise StudyError(f"{describe(url)} is a database, not a journal file: a database keeps its own records "
                         "whole, so there is nothing to repair")
    path = local_file(url)
    _check_journal_path(path)
    if not path.is_file():
        raise StudyError(f"no study in {path}: the file does not exist; give the folder the study wrote (its "
                         "study.log) or --storage PATH")
    try:
        if fcntl is None:                 # no flock: under Optuna's write lock, which no writer holds mid-write
            writes = _ShieldedLock(str(path))
            writes.acquire()
            try:
                return _journal.repair(path)
            finally:
                writes.release()
        with path.open("rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StudyError(f"{describe(url)} is in use by an lrfind process; stop it (Ctrl-C keeps its "
                                 "finished trials), then repair the file") from None
            try:
                return _journal.repair(path)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    except _journal.JournalError as e:
        raise StudyError(str(e)) from None


def _in_use(url: str) -> StudyError:
    return StudyError(f"{describe(url)} is in use by another lrfind process; wait for it, or use a journal file "
                      "(the default) or PostgreSQL --storage to run several workers on one study")


@contextlib.contextmanager
def _run_lock_without_flock(url: str) -> Iterator[None]:
    """``run_lock`` where there is no flock (Windows), and so no shared lock: a SQLite file is held
    with filelock's exclusive lock on a file beside it. A journal's workers hold none; the cut last
    line is mended under Optuna's own write lock instead, which no writer holds in the middle of a
    write, whether or not other workers run."""
    from filelock import FileLock, Timeout

    path = local_file(url)
    if is_journal(url):
        _check_journal_path(path)
        if path.is_file():
            writes = _ShieldedLock(str(path))
            writes.acquire()
            try:
                _journal.mend_cut_last_line(path)
            except _journal.JournalError as e:
                raise StudyError(str(e)) from None
            finally:
                writes.release()
        yield
        return
    lock = FileLock(str(path.with_suffix(".lock")))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except Timeout:
        raise _in_use(url) from None
    except OSError as e:
        raise StudyError(f"cannot open storage {describe(url)}: {e.strerror or e}") from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def claim_lock(path: Path) -> Iterator[None]:
    """The journal's workers one at a time (``workers.claim``): an exclusive lock on a file beside it."""
    claim = path.parent / (path.name + ".claim")
    if fcntl is None:
        from filelock import FileLock

        with FileLock(str(claim)):
            yield
        return
    with claim.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
