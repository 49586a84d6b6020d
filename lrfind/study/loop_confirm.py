"""``tune_loop``'s last step: the best schedule and the constant LR run again with seeds the search
did not use, so that the verdict does not rest on one draw."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import optuna

from lrfind import _threads
from lrfind._output import progress_bar
from lrfind.study import workers as _workers
from lrfind.study import final as _final
from lrfind.study import report
from lrfind.study import trials as _study
from lrfind.study.loop_config import LoopConfig
from lrfind.study.loop_trial import LoopTrial, TrialDiverged, Unstudied


def confirm(study: optuna.Study, cfg: LoopConfig, train: Callable) -> dict[str, Any]:
    """The search compared schedules at one seed. Run the best schedule and the best constant LR
    again, ``final_seeds`` times each with seeds the search did not use (seed r of both the same),
    so that the verdict does not rest on one draw: a run whose score is NaN or infinite diverged,
    and is named and left out of the means and of the gain (``best.paired_gain``: the difference
    seed by seed, its mean and standard error). Stored as the study's ``final``, kept while its best
    trial stays the best."""
    picked = _final.picked(study)
    if not picked or not cfg.final_seeds:
        return {}
    stored = report.final_of(study, picked["best"], seeds=cfg.final_seeds)
    if stored:
        return stored                               # a resumed study whose best is the same
    # the workers still running trials share the cores; those waiting for this one use none
    _threads.apply(cfg.threads, lambda: _workers.workers_here(study), "the runs with new seeds")
    total, base_lr = cfg.epochs * cfg.steps_per_epoch, float(study.user_attrs["base_lr"])
    seeds = [cfg.seed + 1 + r for r in range(cfg.final_seeds)]
    out: dict[str, Any] = {}
    bar = progress_bar(total=len(picked) * len(seeds), desc="best and constant with new seeds", unit="run",
                       leave=False, disable=not cfg.progress, dynamic_ncols=True)
    with bar:
        for label, t in picked.items():
            spec = _final.replayed(t, cfg, total, cfg.steps_per_epoch, cfg.max_peak)
            scores = []
            for seed in seeds:
                handed = LoopTrial(Unstudied(t.number), dataclasses.replace(spec, seed=seed), cfg, base_lr)
                try:
                    value = train(handed)
                except TrialDiverged:
                    value = None                    # its NaN is the last score reported
                scores.append(handed.result(value))
                bar.update(1)
            finite = [v for v in scores if math.isfinite(v)]
            out[label] = {"trial": t.number, "schedule": spec.schedule, "params": _study.jsonable(spec.params),
                          "lr": base_lr * spec.lr_scale, "seeds": seeds, "score_per_seed": scores,
                          "score": sum(finite) / len(finite) if finite else None,
                          "diverged": [s for s, v in zip(seeds, scores) if not math.isfinite(v)]}
    out["setup"] = {"kind": "seeds", "seeds": len(seeds), "metric": cfg.metric}
    out = _final.compared(study, out, "score")
    study.set_user_attr("final", out)
    return out
