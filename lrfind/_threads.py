"""How many CPU threads lrfind's work takes (torch's intra-op threads), so that processes that
share a machine do not fight over its cores.

torch starts every process with a thread for each physical core of the machine. Two processes
that both do so ask for twice the cores there are, and OpenMP's threads, which spin while they
wait for one another, then burn the cores the other process needs: two workers of one study then
take several times the wall time, and several times the CPU time, of the same work with one
thread each. So lrfind decides:

- ``threads`` given (``--threads N``): N threads.
- Otherwise, where the user chose already, lrfind leaves torch's count alone: ``OMP_NUM_THREADS``
  or ``MKL_NUM_THREADS`` in the environment, or ``torch.set_num_threads`` called with another
  count than torch's default or than lrfind's own last one (``users_setting``).
- Otherwise each process takes its share of the physical cores it may run on (its CPU affinity:
  ``taskset``, a container's cpuset), divided by the live workers of its study on this host that
  are running trials (a worker waiting for the others uses no core), at least 1 and never more
  than the cores.

A study's workers decide again before each batch of trials and every few seconds while it runs
(``Keeper``): workers join and leave. What lrfind sets it puts back when its call returns
(``restored``), unless the user changed it meanwhile. ``-v`` logs each choice.

torch's default count is the machine's physical cores; lrfind counts them from Linux's topology
files. Where it cannot (another system), the count torch had when lrfind first looked stands in
for the default. ``bench/threads.py`` measures two workers with and without the shares.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import torch

from lrfind._args import check_threads

log = logging.getLogger(__name__)

ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")     # torch takes its count from these when set
EVERY = 5.0                                               # seconds between a running batch's looks
_CPUS = Path("/sys/devices/system/cpu")

_ours: int | None = None        # the count lrfind set last and has not put back yet
_found: int | None = None       # torch's count when lrfind first looked (where the topology is unknown)
_said: str | None = None        # the last choice logged


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads (None: torch's count is left as it is), and why, for ``-v``."""

    threads: int | None
    why: str


def decide(cores: int, workers: int = 1, threads: int | None = None, users: str | None = None) -> ThreadChoice:
    """The threads for lrfind's work: ``threads`` where given; None (left alone) where ``users``
    says how the user set them; else the share of ``cores`` of each of ``workers`` processes that
    share them (this one included), at least 1."""
    if threads is not None:
        check_threads(threads)
        return ThreadChoice(int(threads), f"as asked (threads={threads})")
    if users is not None:
        return ThreadChoice(None, f"left as {users} set them")
    cores, workers = max(1, cores), max(1, workers)
    share = max(1, cores // workers)
    if workers == 1:
        return ThreadChoice(share, f"the {_cores(cores)} this process may use; --threads N sets another count")
    return ThreadChoice(share, f"{_cores(cores)} shared by {workers} workers of the study on this host; "
                               "--threads N sets another count")


def users_setting(current: int, environ: Mapping[str, str], default: int | None, ours: int | None) -> str | None:
    """How the user set torch's threads (for ``decide``), or None where they did not: a variable
    of ``ENVIRONMENT``; or ``torch.set_num_threads``, seen as a ``current`` count other than the one
    lrfind set last (``ours``), or, before lrfind set any, other than torch's ``default``. (A count
    the user set equal to either cannot be told apart, and is taken as not set: lrfind's choice
    replaces it.)"""
    for name in ENVIRONMENT:
        if environ.get(name, "").strip():
            return f"{name}={environ[name].strip()}"
    expected = ours if ours is not None else default
    if expected is not None and current != expected:
        return f"torch.set_num_threads({current})"
    return None


def usable_cores(cpus: Iterable[int] | None = None) -> int:
    """The physical cores among ``cpus`` (default: those this process may run on, its affinity):
    two hyper-threads of one core count once, as torch counts them. Where the topology cannot be
    read, every CPU counts."""
    if cpus is None:
        try:
            cpus = os.sched_getaffinity(0)
        except (AttributeError, OSError):        # not Linux
            cpus = range(os.cpu_count() or 1)
    cpus = sorted(cpus)
    return _physical(cpus) or max(1, len(cpus))


def torch_default() -> int | None:
    """The count torch starts with where no variable sets it: the machine's physical cores (all of
    them, whatever the affinity, as torch counts); None where the topology cannot be read, and then
    the count lrfind found when it first looked stands in."""
    return _physical(_online())


def _online() -> list[int]:
    """The machine's online CPUs (Linux's list, as "0-3,6"), else 0 to ``os.cpu_count()``."""
    try:
        text = (_CPUS / "online").read_text().strip()
        return [cpu for part in text.split(",") if part
                for first, _, last in [part.partition("-")] for cpu in range(int(first), int(last or first) + 1)]
    except (OSError, ValueError):
        return list(range(os.cpu_count() or 1))


def _physical(cpus: Iterable[int]) -> int | None:
    """Distinct cores (sets of hyper-thread siblings) among ``cpus``, from Linux's topology files."""
    return _siblings(_CPUS, tuple(cpus))


@functools.lru_cache(maxsize=8)          # read once: a study's workers decide again every few seconds
def _siblings(root: Path, cpus: tuple[int, ...]) -> int | None:
    cores = set()
    try:
        for cpu in cpus:
            cores.add((root / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text().strip())
    except OSError:
        return None
    return len(cores) or None


def apply(threads: int | None = None, workers: int | Callable[[], int] = 1, what: str = "lrfind's work") -> int:
    """Decide (``decide``) and set torch's threads for ``what``; the count in effect. ``workers``:
    the processes sharing the cores, or a function that counts them (called only where needed)."""
    global _ours, _found
    current = torch.get_num_threads()
    if _found is None:
        _found = current
    users = None
    if threads is None:
        default = torch_default() or _found
        users = users_setting(current, os.environ, default, _ours)
    if threads is None and users is None and callable(workers):
        workers = workers()
    choice = decide(usable_cores(), workers if isinstance(workers, int) else 1, threads, users)
    if choice.threads is not None:
        if choice.threads != current:
            torch.set_num_threads(choice.threads)
        _ours = choice.threads
    _say(choice.threads or current, what, choice.why)
    return choice.threads or current


def _say(count: int, what: str, why: str) -> None:
    """The choice at INFO (``-v``), once until it changes."""
    global _said
    text = f"{count} CPU thread{'s' if count != 1 else ''} for {what}: {why}"
    if text != _said:
        log.info("%s", text)
        _said = text


def _cores(n: int) -> str:
    return f"{n} core{'s' if n != 1 else ''}"


@contextlib.contextmanager
def restored() -> Iterator[None]:
    """torch's threads as they were before, once the lrfind work inside is done (unless the user
    set them inside: then theirs stay)."""
    global _ours, _said
    before, saved = torch.get_num_threads(), _ours
    try:
        yield
    finally:
        if _ours is not None and _ours != before and torch.get_num_threads() == _ours:
            torch.set_num_threads(before)
        _ours = saved
        if saved is None:            # the next call of lrfind's says its choice again
            _said = None


class Keeper:
    """The threads of one worker of a study, decided again as workers come and go: ``apply`` before
    each batch of trials, ``tick`` after each step (it looks again every ``EVERY`` seconds)."""

    def __init__(self, threads: int | None, workers: Callable[[], int], what: str = "the trials",
                 every: float = EVERY) -> None:
        self.threads, self.workers, self.what, self.every = threads, workers, what, every
        self._at = -float("inf")

    def apply(self) -> int:
        self._at = time.monotonic()
        return apply(self.threads, self.workers, self.what)

    def tick(self) -> None:
        if self.threads is None and time.monotonic() - self._at >= self.every:
            self.apply()
