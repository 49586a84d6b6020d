"""The report of a study: a table of the top trials, the verdict against the constant LR, and files.

Everything here reads the stored study (trial attributes and the study's user attributes), so
``lrfind show`` prints the same report from any machine that reaches the storage.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import _study
from .schedules import get_schedule

log = logging.getLogger(__name__)


def _params_text(params: dict[str, Any], limit: int = 60) -> str:
    """``name=value`` pairs, short; the warmup pair only where there is a warmup."""
    def short(v):
        if isinstance(v, float):
            return f"{v:.3g}"
        if isinstance(v, list):
            return ",".join(short(x) for x in v)
        return str(v)
    shown = {k: v for k, v in params.items() if params.get("warmup") or k not in ("warmup", "warmup_start")}
    text = " ".join(f"{k}={short(v)}" for k, v in shown.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status(t: FrozenTrial) -> str:
    epochs = t.user_attrs.get("epochs_run", 0)
    if t.state == TrialState.COMPLETE:
        return f"{epochs} epochs"
    if t.state == TrialState.PRUNED:
        return f"pruned after {epochs}"
    if t.user_attrs.get("failure") == "nan":
        return f"failed: NaN at step {t.user_attrs.get('failed_at_step')}"
    if "interrupted" in t.user_attrs:
        return "interrupted"
    return t.state.name.lower()


def top_table(study: optuna.Study, n: int = 10) -> str:
    """The ``n`` best finished trials, then a count of the rest by state."""
    trials = [t for t in study.get_trials(deepcopy=False) if _study.is_finished(t)]
    scored = sorted(trials, key=lambda t: -(t.value if t.value is not None else
                                             (t.user_attrs.get("val_acc") or [-1])[-1]))
    base_lr = study.user_attrs.get("base_lr", float("nan"))
    rows = [f"{'#':>4}  {'schedule':<16} {'val acc':>8}  {'peak LR':>8}  {'run':<22} parameters"]
    for t in scored[:n]:
        acc = t.value if t.value is not None else (t.user_attrs.get("val_acc") or [float("nan")])[-1]
        peak = base_lr * t.user_attrs.get("peak_scale", 1.0)
        rows.append(f"{t.number:>4}  {t.user_attrs.get('schedule', '?'):<16} {100 * acc:>7.2f}%  {peak:>8.3g}  "
                    f"{_status(t):<22} {_params_text(t.user_attrs.get('params', {}))}")
    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    rows.append(f"{len(trials)} finished trials: {counts[TrialState.COMPLETE]} complete, "
                f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed")
    return "\n".join(rows)


def verdict(study: optuna.Study) -> str:
    """Does decay help? The best schedule against the constant LR, in validation and test accuracy."""
    best, constant = _study.best(study), _study.best(study, schedule="constant")
    if best is None:
        return "no trial completed"
    base_lr = study.user_attrs.get("base_lr", float("nan"))
    lines = [f"base LR {base_lr:.3g} ({study.user_attrs.get('base_lr_source', '?')})"]
    name = best.user_attrs.get("schedule")
    peak = base_lr * best.user_attrs.get("peak_scale", 1.0)
    lines.append(f"best: trial {best.number}, {name} peaking at LR {peak:.3g}, "
                 f"{_params_text(best.user_attrs.get('params', {}), 200)}")
    if constant is None:
        lines.append(f"validation accuracy {100 * best.value:.2f}% (the constant baseline did not complete)")
    elif name == "constant":
        lines.append(f"no decay beat the constant LR: {100 * best.value:.2f}% validation accuracy")
    else:
        lines.append(f"validation accuracy {100 * best.value:.2f}% vs constant {100 * constant.value:.2f}% "
                     f"({100 * (best.value - constant.value):+.2f} pp)")
    final = study.user_attrs.get("final") or {}
    if final.get("best", {}).get("test_acc") is not None:
        b, c = final["best"], final.get("constant", {})
        n = final["setup"].get("seeds", 1)
        text = (f"test accuracy (retrained on {final['setup']['train_images']} images, mean of {n} seeds): "
                f"{100 * b['test_acc']:.2f}%")
        if c.get("test_acc") is not None and c.get("trial") != b.get("trial"):
            text += f" vs constant {100 * c['test_acc']:.2f}% ({100 * (b['test_acc'] - c['test_acc']):+.2f} pp"
            pairs = list(zip(b.get("test_acc_per_seed", []), c.get("test_acc_per_seed", [])))
            text += (f"; per seed {', '.join(f'{100 * (x - y):+.2f}' for x, y in pairs)})" if len(pairs) > 1 else ")")
        lines.append(text)
    return "\n".join(lines)


def best_json(study: optuna.Study) -> dict[str, Any]:
    best = _study.best(study)
    final = study.user_attrs.get("final") or {}
    out: dict[str, Any] = {"study": study.study_name, "base_lr": study.user_attrs.get("base_lr"),
                           "base_lr_source": study.user_attrs.get("base_lr_source"),
                           "setup": study.user_attrs.get("lrfind_setup"), "trials": len(_study.finished(study))}
    if best is not None:
        scale = best.user_attrs.get("peak_scale", 1.0)
        out.update(schedule=best.user_attrs.get("schedule"), params=best.user_attrs.get("params"),
                   peak_scale=scale, lr=out["base_lr"] * scale, trial=best.number, val_acc=best.value,
                   val_acc_per_epoch=best.user_attrs.get("val_acc"))
    constant = _study.best(study, schedule="constant")
    if constant is not None:
        out["constant"] = {"trial": constant.number, "val_acc": constant.value}
    if final:
        out["final"] = final
    if study.user_attrs.get("seconds"):
        out["seconds"] = study.user_attrs["seconds"]                 # stage wall times of the last run
    if study.user_attrs.get("peak_gpu_bytes"):
        out["peak_gpu_bytes"] = study.user_attrs["peak_gpu_bytes"]   # of the last run of this study
    return out


def snippet(study: optuna.Study) -> str | None:
    """Python that builds the winning optimizer and torch scheduler for the stored setup."""
    best = _study.best(study)
    if best is None:
        return None
    setup = study.user_attrs.get("lrfind_setup", {})
    final = (study.user_attrs.get("final") or {}).get("best", {})
    params = final.get("params") or best.user_attrs["params"]
    lr = study.user_attrs["base_lr"] * best.user_attrs.get("peak_scale", 1.0)   # the schedule's peak
    # the retrained run's steps if there was one, else the search's own
    total = (study.user_attrs.get("final") or {}).get("setup", {}).get("steps") or study.user_attrs["steps"]
    schedule = get_schedule(best.user_attrs["schedule"])
    header = (f"# lrfind study {study.study_name!r}: best schedule {schedule.name} (trial {best.number}, "
              f"validation accuracy {100 * best.value:.2f}%)\n"
              f"# for {setup.get('model')} on {setup.get('dataset')}, batch {setup.get('batch_size')}, "
              f"{setup.get('epochs')} epochs = {total} steps; rescale step counts for other runs.\n")
    return header + schedule.snippet(lr, total, optimizer=setup.get("optimizer", "sgd"),
                                     momentum=setup.get("momentum", 0.9), **params)


def write(study: optuna.Study, out: Path, *, parallel: bool = True) -> list[Path]:
    """best.json, best_schedule.py and the figures, into ``out``.

    The figures take seconds each to lay out and encode; with ``parallel`` (and where processes
    can be forked) each is drawn in its own process from an in-memory copy of the study.
    """
    from . import plots

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "best.json"]
    (out / "best.json").write_text(json.dumps(best_json(study), indent=2))
    code = snippet(study)
    if code:
        (out / "best_schedule.py").write_text(code)
        written.append(out / "best_schedule.py")
    figures = [(out / "history.png", plots.plot_history), (out / "lr_curves.png", plots.plot_top_lr_curves),
               (out / "val_acc.png", plots.plot_val_acc), (out / "importances.png", plots.plot_importances)]
    for path, _ in figures:
        path.unlink(missing_ok=True)          # what exists afterwards was drawn now
    if not (parallel and _draw_in_processes(_in_memory(study), figures)):
        for path, draw in figures:
            _draw(draw, study, path)
    return written + [path for path, _ in figures if path.exists()]


def _draw(draw, study: optuna.Study, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            draw(study, path=path)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:  # too few trials for the figure
            log.info("skipped %s: %s", path.name, e)


def _in_memory(study: optuna.Study) -> optuna.Study:
    """A copy of the study that needs no storage connection (a forked child must not share one)."""
    copy = optuna.create_study(direction=study.direction, study_name=study.study_name)
    copy.add_trials(study.get_trials(deepcopy=False))
    for key, value in study.user_attrs.items():
        copy.set_user_attr(key, value)
    return copy


def _draw_in_processes(study: optuna.Study, figures: list, timeout: float = 60.0) -> bool:
    """Draw each figure in a forked process; False (nothing left running) where that is not possible."""
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    ctx = multiprocessing.get_context("fork")
    import matplotlib.backends.backend_agg  # noqa: F401  imported once here, not in every child
    import optuna.visualization.matplotlib  # noqa: F401
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # "multi-threaded, fork() may deadlock"
        procs = [ctx.Process(target=_draw, args=(draw, study, path), daemon=True) for path, draw in figures]
        for proc in procs:
            proc.start()
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    if any(proc.is_alive() or proc.exitcode for proc in procs):   # a hung or crashed child: draw here
        for proc in procs:
            proc.kill()
        log.info("drawing the figures in parallel failed; drawing them one by one")
        return False
    return True


__all__ = ["top_table", "verdict", "best_json", "snippet", "write"]
