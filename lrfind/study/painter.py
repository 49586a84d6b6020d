"""Figures drawn beside the training without slowing it down.

A figure costs a few hundred milliseconds of matplotlib, all of it Python. Drawn in a thread of the
training process it holds the GIL in 5 ms slices, and a training loop that gives the GIL up at
every step (a CUDA-graph replay does, and so does a wait for the GPU) gets it back only when a
slice ends: while the figures are drawn, each step takes at least 5 ms and the GPU idles between
steps. ``experiments/painter.py`` measures it.

``Painter(process=True)`` draws in a child Python process instead (``lrfind.study.painter.serve``),
started at once so that its imports (matplotlib, Optuna, torch) overlap the work before the first
figure. Jobs are a module-level function and its arguments, pickled through a pipe; the result
or the exception comes back pickled, into a ``Future``. A job that cannot be pickled here or
loaded there, and every job once the child could not start or has died, is drawn in a thread
instead, so a figure is never lost to the mechanism. ``Painter(process=False)`` is the thread
alone: where the training keeps every core busy (on a CPU), a second process would only compete
with it for them.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from lrfind._clock import configure_logging, process_start

log = logging.getLogger(__name__)

_Job = tuple[Future, Callable[..., Any], tuple, dict]


class Painter:
    """``submit(fn, *args, **kwargs) -> Future``, like an executor with one worker; leaving the
    ``with`` block waits for every job and stops the child."""

    def __init__(self, process: bool) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="lrfind-figures")
        self._lock = threading.Lock()
        self._pending: dict[int, _Job] = {}       # sent to the child, no answer yet
        self._futures: list[Future] = []
        self._count = 0
        self._outbox: queue.Queue[tuple[int, bytes] | None] = queue.Queue()
        self._child = _start_child() if process else None
        if self._child is not None:
            # A writer thread, because a job larger than the pipe's buffer would block the caller
            # until the child finishes the figure it is drawing.
            threading.Thread(target=self._send, name="lrfind-figures-send", daemon=True).start()
            self._receiver = threading.Thread(target=self._receive, name="lrfind-figures-receive", daemon=True)
            self._receiver.start()

    @property
    def in_process(self) -> bool:
        """Whether jobs go to the child (False once it has died)."""
        return self._child is not None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        with self._lock:
            self._futures.append(future)
            if self._child is not None:
                try:
                    payload = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as e:           # a lambda, an open file: draw it here instead
                    log.debug("drawing %s in a thread: %s", getattr(fn, "__name__", fn), e)
                else:
                    number, self._count = self._count, self._count + 1
                    self._pending[number] = (future, fn, args, kwargs)
                    self._outbox.put((number, payload))
                    return future
        self._in_thread((future, fn, args, kwargs))
        return future

    def _in_thread(self, job: _Job) -> None:
        future, fn, args, kwargs = job

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as e:
                future.set_exception(e)

        self._thread.submit(run)

    def _send(self) -> None:
        child = self._child
        while (item := self._outbox.get()) is not None:
            try:
                pickle.dump(item, child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                child.stdin.flush()
            except (OSError, ValueError):        # the child is gone; _receive redoes its jobs
                return

    def _receive(self) -> None:
        child = self._child
        while True:
            try:
                number, ok, value = pickle.load(child.stdout)
            except Exception:                    # EOF (the child exited or died), or an answer
                break                            # this process cannot read: done with the child
            with self._lock:
                job = self._pending.pop(number)
            if ok is None:
                log.debug("drawing %s in a thread: the figure process cannot load it (%s)", job[1], value)
                self._in_thread(job)
            elif ok:
                job[0].set_result(value)
            else:
                job[0].set_exception(value)
        with self._lock:
            self._child, orphans = None, list(self._pending.values())
            self._pending.clear()
        code = child.poll()
        child.kill()                             # (still running if its answer was unreadable)
        child.wait()
        for pipe in (child.stdin, child.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        if orphans:
            log.warning("the figure process stopped (exit code %s); drawing %d figure(s) here", code, len(orphans))
        for job in orphans:
            self._in_thread(job)

    def close(self) -> None:
        """Wait for every job, then stop the child (it holds nothing worth a graceful exit, and one
        still importing would keep an early error waiting) and the thread."""
        concurrent.futures.wait(list(self._futures))
        child = self._child
        self._outbox.put(None)
        if child is not None:
            child.kill()
            self._receiver.join()                # it reaps the child
        self._thread.shutdown(wait=True)

    def __enter__(self) -> Painter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_child() -> subprocess.Popen | None:
    """``serve()`` in a new interpreter that imports this very lrfind (wherever it was found)."""
    if not sys.executable:
        return None
    root = str(Path(__file__).resolve().parents[1])
    # lrfind's folder goes first only while lrfind itself is imported (it may be a source checkout
    # the parent found on its own sys.path); it is then removed, so it shadows nothing later.
    level = logging.getLogger("lrfind").getEffectiveLevel()
    code = (f"import sys; sys.path.insert(0, {root!r}); import lrfind.study.painter as p; "
            f"sys.path.remove({root!r}); p.serve({level}, {process_start()!r})")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}   # it draws; torch needs no thread pool there
    try:
        return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    except OSError as e:
        log.info("figures drawn in a thread: no process could be started (%s)", e)
        return None


def serve(level: int = logging.WARNING, start: float | None = None) -> None:
    """The child's loop: read a job from stdin, run it, write ``(number, ok, value)`` to stdout,
    until stdin closes. Anything the job prints goes to stderr; verbose, its log lines are stamped
    with the seconds since ``start``, the parent's start (``-v``'s clock)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle; EOF stops us
    jobs = sys.stdin.buffer
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    configure_logging(level, start)
    start = time.perf_counter()
    _warm_up()
    log.info("figure process: ready after %.2f s", time.perf_counter() - start)

    while True:
        try:
            number, payload = pickle.load(jobs)
        except EOFError:
            return
        try:
            fn, args, kwargs = pickle.loads(payload)
        except Exception as e:                   # not importable here (a function of a script's
            answer = pickle.dumps((number, None, repr(e)))   # __main__, say): the parent runs it
        else:
            try:
                start = time.perf_counter()
                answer = pickle.dumps((number, True, fn(*args, **kwargs)), protocol=pickle.HIGHEST_PROTOCOL)
                log.info("figure process: %s took %.2f s", getattr(fn, "__name__", fn), time.perf_counter() - start)
            except Exception as e:
                answer = pickle.dumps((number, False, _portable(e)), protocol=pickle.HIGHEST_PROTOCOL)
        answers.write(answer)
        answers.flush()


def _warm_up() -> None:
    """Import what the figures need and draw a blank one (fonts, the Agg canvas) while the parent
    has not asked for anything yet."""
    import importlib
    import io

    from matplotlib.figure import Figure

    for module in ("figures", "report"):
        importlib.import_module(f"{__package__}.{module}")

    fig = Figure(figsize=(2, 2))
    ax = fig.subplots()
    ax.plot([1, 2], [1, 2], label="x")
    ax.set_yscale("log")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png")


def _portable(error: Exception) -> Exception:
    """The error itself when it survives pickling, else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
