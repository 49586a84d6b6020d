"""Stage 2's loop, shared by ``tune`` and ``tune_loop``: ask a batch of trials, score those that
repeat an earlier run without running them (with one set of initial weights), run the rest, until
the study has its trials or the ``--timeout`` has passed; several workers may share the study."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Iterator

import optuna
from lrfind import _threads
from lrfind.study import retries as _retries
from lrfind.study import trials as _study
from lrfind.study import workers as _workers
from lrfind._duration import duration_text
from lrfind._output import progress_bar
from lrfind.engine.trials import TrialSpec

log = logging.getLogger(__name__)
now = time.monotonic          # the --timeout clock


def search_trials(study: optuna.Study, cfg: Any, describe: Callable[[optuna.Trial], TrialSpec],
                  run: Callable[[list[optuna.Trial], list[TrialSpec], Any], int | None], parallel: int, *,
                  single: bool, deadline: float | None = None, threads: _threads.Keeper | None = None) -> None:
    """Ask, run and tell batches of trials until ``cfg.trials`` have run (with ``cfg.same_init``, a
    trial that repeats a finished one, or another of its batch, is its twin, scored as it without
    running: twins do not count, and at most ``cfg.trials`` of them are taken), or until ``deadline`` (of ``now()``)
    has passed after a batch (Optuna's ``timeout``: a running batch is not cut short, and every run
    trains at least one). ``describe(trial)`` samples an asked trial's schedule (``asked_spec``);
    ``run(asked, specs, bar)`` trains and tells a batch, ticks ``bar`` per trial, and may return a
    smaller batch size to go on with. ``tune`` and ``tune_loop`` both search this way.

    Each trial is described as soon as it is asked, before the next is asked: Optuna 4.0's grouped
    multivariate TPE samples a trial from the search space the sampler inferred at its latest ask,
    and raises where another worker's trials changed that space in between.

    Several workers may share the study: counting and asking happen under ``workers.claim``, so
    together they never start more trials than are missing; a worker with nothing left to start
    waits while others finish (or until their silent trials are failed and requeued).
    """
    bar = progress_bar(total=cfg.trials, desc="trials", unit="trial", disable=not cfg.progress, dynamic_ncols=True)
    try:
        while True:
            with contextlib.ExitStack() as running:
                with _workers.claim(study):
                    _workers.prepare(study, single, _study.baselines(cfg.trials, cfg.search_constant_lr,
                                                                     study.user_attrs.get("max_peak", 1.0)))
                    runs, twins, in_flight = _study.counts(study)
                    missing = cfg.trials - runs - in_flight if twins < cfg.trials else 0
                    asked, specs = _ask(study, describe, min(parallel, missing))
                    running.enter_context(_workers.Heartbeat(study, asked))   # first beat before the lock goes
                bar.n = min(runs, cfg.trials)
                bar.set_postfix_str(_progress_text(study, deadline), refresh=False)
                bar.refresh()
                if asked:
                    if threads is not None:        # the study's workers on this host share its cores
                        threads.apply()
                    held: list[tuple[optuna.Trial, int]] = []
                    if cfg.same_init:         # from the same weights, a repeat of a trial is the same run
                        asked, specs, held = _untwinned(study, asked, specs)
                    with _told_after(study, held):
                        if asked:
                            parallel = run(asked, specs, bar) or parallel
                elif runs >= cfg.trials or twins >= cfg.trials:
                    if runs < cfg.trials:
                        log.warning("stopped after %d runs of %d: the sampler asked %d times for schedules already "
                                    "run; the search space is exhausted at this seed", runs, cfg.trials, twins)
                    if study.user_attrs.get("stopped_by_timeout"):      # an earlier run's, now made up
                        study.set_user_attr("stopped_by_timeout", None)
                    return
                else:
                    bar.set_postfix_str(f"{in_flight} running elsewhere")
                    time.sleep(min(cfg.heartbeat, 1.0))       # then look again: they may end any moment
            if deadline is not None and now() >= deadline:
                n, twins, _ = _study.counts(study)
                if n < cfg.trials and twins < cfg.trials:
                    study.set_user_attr("stopped_by_timeout", {"timeout": cfg.timeout, "finished": n,
                                                               "trials": cfg.trials})
                    log.info("--timeout %s passed: %d of %d trials finished; the search ends here",
                             duration_text(cfg.timeout), n, cfg.trials)
                    return
    finally:
        bar.close()


def _ask(study: optuna.Study, describe: Callable[[optuna.Trial], TrialSpec],
         n: int) -> tuple[list[optuna.Trial], list[TrialSpec]]:
    """``n`` trials asked and described one after the other; on an error, those asked are abandoned."""
    asked: list[optuna.Trial] = []
    try:
        specs = []
        for _ in range(n):
            asked.append(_workers.ask(study))
            asked[-1].set_user_attr("worker", _workers.WORKER)
            specs.append(describe(asked[-1]))
        return asked, specs
    except BaseException as e:
        for trial in asked:
            _retries.abandon(study, trial, e)
        raise


def _progress_text(study: optuna.Study, deadline: float | None) -> str:
    """The trials bar's postfix: the best trial so far, and the time --timeout leaves."""
    best = _study.best(study)
    parts = [f"best: trial {best.number}, {best.user_attrs.get('schedule')}"] if best is not None else []
    if deadline is not None:
        parts.append(f"--timeout: {duration_text(max(0.0, deadline - now()))} left")
    return "; ".join(parts)


def _untwinned(study: optuna.Study, asked: list[optuna.Trial], specs: list[TrialSpec]
               ) -> tuple[list[optuna.Trial], list[TrialSpec], list[tuple[optuna.Trial, int]]]:
    """The trials of a batch left to run, once those that repeat a finished trial are scored as it;
    and those held back as repeats of another trial of the batch, with its number (a study's random
    first batch may draw the constant, whose only choice is its warmup, several times)."""
    left: list[tuple[optuna.Trial, TrialSpec]] = []
    held, complete = [], study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    for trial, spec in zip(asked, specs):
        twin = _study.twin_of(study, trial, complete)
        first = _study.twin_of(study, trial, [t for t, _ in left]) if twin is None else None
        if twin is not None:
            _study.tell_twin(study, trial, twin)
        elif first is not None:
            held.append((trial, first.number))
        else:
            left.append((trial, spec))
    return [t for t, _ in left], [s for _, s in left], held


@contextlib.contextmanager
def _told_after(study: optuna.Study, held: list[tuple[optuna.Trial, int]]) -> Iterator[None]:
    """Score the ``held`` repeats as the trials they repeat ended, once the batch has run; a repeat of
    a trial that did not finish (cut short, or run again after an out-of-memory error) is queued
    again with it, and all of them are when the batch raises."""
    try:
        yield
    except BaseException as e:
        with _workers.claim(study):
            for trial, _ in held:
                _retries.abandon(study, trial, e)
        raise
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)} if held else {}
    for trial, number in held:
        twin = by_number[number]
        if _study.is_finished(twin):
            _study.tell_twin(study, twin=twin, trial=trial)
        else:
            _retries.abandon(study, trial, RuntimeError(f"trial {number}, which it repeats, did not finish"))
