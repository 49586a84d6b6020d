"""Matplotlib figures. They are returned or written to files; nothing here calls ``plt.show()``.

With ``path`` and no ``ax``, a figure is drawn on a bare ``matplotlib.figure.Figure`` (no pyplot,
no GUI backend, nothing left open). Without ``path``, pyplot makes the figure so that notebooks
display it.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from lrfind._files import write_whole
from lrfind.rangetest.suggest import start_level

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from lrfind.rangetest.result import RangeTestResult

_METHOD_COLOURS = {"smith": "tab:red", "balanced": "tab:brown", "steepest": "tab:orange", "valley": "tab:green",
                   "minimum": "tab:purple"}


def new_axes(path: str | Path | None, *, nrows: int = 1, ncols: int = 1, figsize=(7, 4.5), layout="constrained",
             bare: bool = False):
    """A figure and its axes: a bare Figure when saving to ``path`` (or ``bare``), a pyplot figure
    otherwise. ``layout=None`` leaves the margins to the caller: constrained layout measures every
    tick label, which costs most of a second on log axes spanning many decades."""
    if path is not None or bare:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout=layout)
        axes = fig.subplots(nrows, ncols, squeeze=False)
    else:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout=layout)
    return fig, axes


def _target(ax, path, what: str):
    """``(fig, ax, path)`` for a plot method: a new figure when ``ax`` is None. A file name given
    where the Axes goes (``result.plot("lr.png")``) is taken as ``path``."""
    if isinstance(ax, (str, os.PathLike)):
        if path is not None:
            raise TypeError(f"{what}: got two files, {str(ax)!r} as the Axes and path={str(path)!r}; give one, "
                            f"as path=...")
        ax, path = None, ax
    if ax is None:
        fig, axes = new_axes(path)
        return fig, axes[0, 0], path
    if not callable(getattr(ax, "plot", None)) or not hasattr(ax, "figure"):
        raise TypeError(f"{what}: ax must be a matplotlib Axes (or a file name to write the figure to), "
                        f"not {type(ax).__name__} {ax!r:.60}")
    return None, ax, path


def png(draw: Callable[["Axes"], object]) -> bytes:
    """The PNG of what ``draw(ax)`` draws on a bare figure (no pyplot): for Jupyter's ``_repr_png_``."""
    import io

    figure, axes = new_axes(None, bare=True)
    draw(axes[0, 0])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def save(fig, path: str | Path) -> Path:
    """``fig`` into ``path``, in the format its extension names (PNG without one), written whole."""
    import io

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix[1:].lower() or None, dpi=120)
    return write_whole(path, buffer.getvalue())


def _loss_limits(raw: np.ndarray, smoothed: np.ndarray, others: list[np.ndarray] = ()) -> tuple[float, float] | None:
    """y-limits that show the descent and the start of the blow-up, not the whole explosion (and
    the lowest point of ``others``, the other seeds' smoothed curves)."""
    finite = smoothed[np.isfinite(smoothed)]
    if finite.size == 0:
        return None
    lo = float(min([finite.min()] + [np.nanmin(o) for o in others if np.isfinite(o).any()]))
    start = start_level(finite)
    hi = max(start, lo) + 0.25 * (abs(start - lo) + 1e-12)
    pad = 0.05 * (hi - lo + 1e-12)
    raw_finite = raw[np.isfinite(raw)]
    lo = min(lo, float(np.percentile(raw_finite, 1))) if raw_finite.size else lo
    return lo - pad, hi + pad


def plot_range_test(result: "RangeTestResult", ax: "Axes | None" = None, *, path: str | Path | None = None,
                    title: str | None = None) -> "Axes":
    """Loss against LR (log scale when the sweep was exponential), with every suggestion marked."""
    fig, ax, path = _target(ax, path, "plot")
    lrs, raw, sm = result.lrs, result.losses, result.smoothed
    raw_label = "after each step" if result.config.get("validation_loss") else "loss per batch"
    others = result.other_curves()
    labelled = set()
    for seed_lrs, seed_sm, shallow in others:
        label = "too shallow, left out" if shallow else "other seeds (smoothed)"
        ax.plot(seed_lrs, seed_sm, color="0.55", lw=1, ls=":" if shallow else "-",
                label=None if label in labelled else label)
        labelled.add(label)
    ax.plot(lrs, raw, color="tab:blue", alpha=0.3, lw=0.8, label=raw_label)
    ax.plot(lrs, sm, color="tab:blue", lw=2, label="smoothed (centred, no lag)")
    fr = result.falling_range
    if fr is not None:
        ax.axvspan(fr[0], fr[1], color="tab:green", alpha=0.08, label=f"loss falls: {fr[0]:.2g} to {fr[1]:.2g}")
    for name, s in result.suggestions.items():
        if s.lr is None or s.index is None:
            continue
        main = name == result.method
        ax.plot([s.lr], [sm[s.index]], "o", ms=9 if main else 6, color=_METHOD_COLOURS.get(name, "black"),
                label=f"{name}: {s.lr:.2g}" + (" (suggested)" if main else ""), zorder=3)
    if result.suggested_lr is not None:
        ax.axvline(result.suggested_lr, color="tab:red", ls="--", lw=1)
    spread, counted = result.spread, len(result.seed_lrs) - len(result.shallow)
    if spread is not None and counted > 1:
        ax.axvspan(*spread, color="tab:red", alpha=0.08, label=f"spread over {counted} seeds")
    if result.config.get("mode", "exp") == "exp":
        ax.set_xscale("log")
    limits = _loss_limits(raw, sm, [o for _, o, _ in others])
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation loss" if result.config.get("validation_loss") else "training loss")
    verdict = (f"suggested LR {result.suggested_lr:.3g}" if result.suggested_lr is not None
               else f"no clear suggestion: {result.reason}")
    found = result.suggested_lr is not None          # else a long reason, wrapped in a smaller font
    ax.set_title(title or textwrap.fill(f"LR range test: {verdict}", 90 if found else 110)
                 + f"\nstopped: {result.stop_reason}", fontsize=10 if found else 8)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower left")
    if result.caveats:                               # the missing suggestion's reason is the title already
        ax.text(0.99, 0.98, "\n".join(textwrap.fill(f"warning: {w}", 60) for w in result.caveats),
                transform=ax.transAxes, ha="right", va="top", fontsize=7, color="tab:red",
                bbox=dict(boxstyle="round", facecolor="white", edgecolor="tab:red", alpha=0.9))
    if path is not None:
        save(ax.figure if fig is None else fig, path)
    return ax


def plot_comparison(results: dict[str, "RangeTestResult"], ax: "Axes | None" = None, *,
                    path: str | Path | None = None, title: str | None = None) -> "Axes":
    """Several range tests over each other: each one's loss per batch (faint) and smoothed loss,
    its suggestion marked; the y-limits show every descent and the start of every blow-up."""
    fig, ax, path = _target(ax, path, "plot")
    limits = []
    for i, (label, r) in enumerate(results.items()):
        colour = f"C{i % 10}"
        ax.plot(r.lrs, r.losses, color=colour, alpha=0.2, lw=0.7)
        lr = r.suggested_lr
        ax.plot(r.lrs, r.smoothed, color=colour, lw=2, label=f"{label}: " + (f"{lr:.2g}" if lr is not None else "none"))
        if lr is not None:
            j = int(np.argmin(np.abs(np.log(r.lrs) - np.log(lr)))) if np.all(r.lrs > 0) else 0
            ax.plot([lr], [r.smoothed[j]], "o", ms=8, color=colour, mec="white", zorder=3)
        limits.append(_loss_limits(r.losses, r.smoothed))
    limits = [x for x in limits if x is not None]
    if limits:
        ax.set_ylim(min(lo for lo, _ in limits), max(hi for _, hi in limits))
    if all(r.config.get("mode", "exp") == "exp" for r in results.values()):
        ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    kinds = {bool(r.config.get("validation_loss")) for r in results.values()}
    ax.set_ylabel("validation loss" if kinds == {True} else "training loss" if kinds == {False} else "loss")
    ax.set_title(title or f"{len(results)} range tests (dots: suggested LRs)", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower left", title="suggested LR", title_fontsize=8)
    if path is not None:
        save(ax.figure if fig is None else fig, path)
    return ax


def plot_schedules(curves: dict[str, tuple[np.ndarray, str]], *, path: str | Path | None = None,
                   steps_per_epoch: int | None = None, momenta: dict[str, np.ndarray] | None = None):
    """One small panel per schedule: LR factor against optimizer step.

    ``curves`` maps a schedule name to ``(factors, caption)``; ``momenta`` the schedules that cycle
    the momentum to it at every step, drawn dashed on a right-hand axis. Returns the figure.
    """
    momenta = momenta or {}
    n = len(curves)
    ncols = min(4, n)
    nrows = -(-n // ncols)
    fig, axes = new_axes(path, nrows=nrows, ncols=ncols, figsize=(3.6 * ncols, 2.7 * nrows))
    for ax, (name, (factors, caption)) in zip(axes.flat, curves.items()):
        ax.plot(np.arange(len(factors)), factors, color="tab:blue", lw=1.6)
        if name in momenta:
            twin = ax.twinx()
            twin.plot(np.arange(len(factors)), momenta[name], color="tab:orange", lw=1.1, ls="--")
            twin.set_ylabel("momentum (dashed)", fontsize=7, color="tab:orange")
            twin.tick_params(labelsize=7, colors="tab:orange")
        ax.set_title(name, fontsize=10, fontweight="bold")
        ax.set_xlabel(textwrap.fill(caption, 48) or "(no parameters)", fontsize=7)
        ax.set_ylim(-0.03, 1.08)
        if steps_per_epoch:
            for epoch_end in range(steps_per_epoch, len(factors), steps_per_epoch):
                ax.axvline(epoch_end, color="grey", lw=0.5, ls=":")
        ax.grid(True, alpha=0.25)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.supxlabel("optimizer step (dotted: epoch ends)", fontsize=9)
    fig.supylabel("LR / base LR", fontsize=9)
    if path is not None:
        save(fig, path)
    return fig


def plot_runs(runs: dict[str, tuple[np.ndarray, int]], *, title: str = "", path: str | Path | None = None):
    """One schedule's LR in runs of different lengths, a panel each, against epochs.

    ``runs`` maps a caption to ``(LR per optimizer step, steps per epoch)``. Returns the figure.
    """
    fig, axes = new_axes(path, ncols=len(runs), figsize=(4.2 * len(runs), 3.4))
    top = max(float(np.max(lrs)) for lrs, _ in runs.values())
    for ax, (caption, (lrs, per_epoch)) in zip(axes.flat, runs.items()):
        ax.plot(np.arange(len(lrs)) / per_epoch, lrs, color="tab:blue", lw=1.6)
        ax.set_title(caption, fontsize=9)
        ax.set_ylim(0, 1.08 * top)
        ax.set_xlim(0, len(lrs) / per_epoch)
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(True, alpha=0.25)
        ax.tick_params(labelsize=7)
    axes.flat[0].set_ylabel("learning rate", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        save(fig, path)
    return fig


# -- study figures: read the stored study, so `lrfind show` can draw them from any machine ------------
# tab10, then six more hues: tab20's light twins put plateau beside warmup in two pinks
_SCHEDULE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                     "#17becf", "#000000", "#ffd700", "#1f2a80", "#00897b", "#a0004f", "#7fbf00"]


def _colour(name: str):
    """One colour per schedule, the same in every figure: its place in the registry."""
    from lrfind.schedules import SCHEDULES

    names = list(SCHEDULES)
    return _SCHEDULE_COLOURS[names.index(name) % len(_SCHEDULE_COLOURS)] if name in names else "0.5"


def plot_history(study, *, path):
    """The optimisation history: every trial's validation accuracy in the order it was asked,
    coloured by schedule (hollow: pruned, at its last epoch), and the best so far. Trials below
    the axis (diverged ones, at chance level) sit on its floor as downward triangles. A study of
    regression targets, which have no accuracy, shows the validation loss (lower is better)."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("val_acc")]
    higher = bool(trials)
    if higher:
        values = np.array([100 * t.user_attrs["val_acc"][-1] for t in trials])
        limit = _accuracy_floor(values)
    else:
        trials = [t for t in study.get_trials(deepcopy=False)
                  if t.user_attrs.get("val_loss") and np.isfinite(t.user_attrs["val_loss"][-1])]
        if not trials:
            raise ValueError("no trial reported a validation score")
        values = np.array([t.user_attrs["val_loss"][-1] for t in trials])
        low, high = float(values.min()), float(np.percentile(values, 90))
        limit = high + 0.1 * (high - low + 1e-9)
    off = _off_axis(values, limit, higher=higher)
    fig, axes = new_axes(path, figsize=(8.5, 5))
    ax = axes[0, 0]
    names = [t.user_attrs.get("schedule", "?") for t in trials]
    edges = [_colour(name) for name in names]
    faces = [e if t.state.name == "COMPLETE" else "none" for t, e in zip(trials, edges)]
    x = np.array([t.number for t in trials])
    if (~off).any():              # one scatter, not one per trial (see ``_mark_off_axis``)
        ax.scatter(x[~off], values[~off], s=28, zorder=3, marker="o", clip_on=False,
                   facecolors=[f for f, o in zip(faces, off) if not o],
                   edgecolors=[e for e, o in zip(edges, off) if not o])
    _mark_off_axis(ax, x, values, limit, higher=higher, edges=edges, faces=faces)
    from matplotlib.lines import Line2D

    for name in dict.fromkeys(names):       # the legend: one entry per schedule, in order of appearance
        ax.add_line(Line2D([], [], ls="none", marker="o", ms=6, color=_colour(name), label=name))
    done = sorted((t.number, v) for t, v in zip(trials, values) if t.state.name == "COMPLETE")
    if done:
        numbers, scores = zip(*done)
        best = np.maximum.accumulate(scores) if higher else np.minimum.accumulate(scores)
        ax.step(numbers, best, where="post", color="black", lw=1.2, label="best so far")
    if higher:
        return _accuracy_axes(fig, ax, path, limit, top=max(values), xlabel="trial",
                              title="optimisation history (hollow: pruned; \u25bc: below the axis)")
    ax.set_ylim(low - 0.05 * (limit - low + 1e-9), limit)
    return _finish(fig, ax, path, xlabel="trial", ylabel=_loss_label(study),
                   title="optimisation history (hollow: pruned; \u25b2: above the axis; lower is better)")


def _off_axis(values: np.ndarray, limit: float, *, higher: bool) -> np.ndarray:
    """Which ``values`` lie beyond the axis: below its floor ``limit`` where higher is better (an
    accuracy), above its ceiling where lower is (a loss)."""
    return values < limit if higher else values > limit


def _mark_off_axis(ax, x, values, limit: float, *, higher: bool, edges, faces) -> None:
    """The points of ``values`` beyond the axis (``_off_axis``), drawn on its edge at ``limit`` as
    triangles pointing off it (\u25bc below, \u25b2 above), each with its edge and face colour: a
    trial that scored off the axis still shows, in the history and in the per-epoch figures."""
    values = np.asarray(values, dtype=float)
    off = _off_axis(values, limit, higher=higher)
    if off.any():                # one scatter, not one per trial: 50 artists cost most of a second to draw
        ax.scatter(np.asarray(x)[off], np.full(int(off.sum()), limit), s=28, zorder=3, marker="v" if higher else "^",
                   clip_on=False, facecolors=[f for f, o in zip(faces, off) if o],
                   edgecolors=[e for e, o in zip(edges, off) if o])


def _accuracy_floor(accs_pct) -> float:
    """The lower y-limit of accuracy figures: the good trials, not the diverged ones at 10%."""
    return float(max(np.percentile(accs_pct, 10) - 1, 0))


def _accuracy_axes(fig, ax, path, floor: float, *, top: float, xlabel: str, title: str):
    """Finish a validation-accuracy figure: y from ``floor``; see ``_finish``."""
    ax.set_ylim(floor, min(100.2, top + 0.3))
    return _finish(fig, ax, path, xlabel=xlabel, ylabel="validation accuracy (%)", title=title)


def _finish(fig, ax, path, *, xlabel: str, ylabel: str, title: str):
    """Labels, the legend by schedule beside the axes (never over a point), a grid; save it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(True, alpha=0.25)
    save(fig, path)
    return fig


def _loss_label(study) -> str:
    """What the loss is: lrfind's own for its data (cross-entropy, or mean squared error for
    regression targets); a ``tune_loop`` study's is the user's loss, named as such."""
    if (study.user_attrs.get("lrfind_setup") or {}).get("loop"):
        return "validation loss (your loop's)"
    regression = (study.user_attrs.get("data") or {}).get("regression")
    return f"validation loss ({'mean squared error' if regression else 'cross-entropy'})"


def plot_importances(study, *, path):
    """Optuna's parameter importances over the complete trials, by PED-ANOVA: it needs no model
    fit (fANOVA's random forest and scikit-learn's import cost seconds) and reads which parameter
    values set the top trials apart. The 12 most important parameters are shown; those below 0.005
    only counted (a conditional parameter seen in one trial tells nothing)."""
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    from lrfind.study.trials import metric_of

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 3:
        raise ValueError(f"importances need at least 3 complete trials, got {len(complete)}")
    importances = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    if not importances:
        raise ValueError("no parameter is shared by all complete trials")
    shown = [n for n in importances if importances[n] >= 0.005][:12] or list(importances)[:1]
    names, rest = shown[::-1], len(importances) - len(shown)
    fig, axes = new_axes(path, figsize=(8, 1.6 + 0.45 * len(names)))
    ax = axes[0, 0]
    ax.barh(names, [importances[n] for n in names], height=0.6, color="tab:blue")
    for y, name in enumerate(names):
        ax.text(importances[name], y, f" {importances[name]:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"importance for validation {metric_of(study)} (PED-ANOVA)")
    left_out = f"\n({rest} more parameter{'s' if rest != 1 else ''} below 0.005 not shown)" if rest else ""
    ax.set_title(f"parameter importances over {len(complete)} complete trials{left_out}", fontsize=10)
    ax.grid(True, axis="x", alpha=0.25)
    save(fig, path)
    return fig


def _top(study, n):
    """The ``n`` best complete trials by the study's metric; a twin (a repeat of an earlier trial's
    choices, scored without running) would draw the same curve again."""
    from lrfind.study.trials import is_twin, ranked

    return ranked(study, [t for t in study.get_trials(deepcopy=False)
                          if t.state.name == "COMPLETE" and not is_twin(t)])[:n]


def _score_text(t) -> str:
    """A trial's validation accuracy, or its loss where there is none (regression targets)."""
    from lrfind.study.trials import val_acc, val_loss

    acc = val_acc(t)
    return f"{100 * acc:.2f}%" if acc is not None else f"loss {val_loss(t):.4g}"


def _momentum_text(t) -> str:
    return " (momentum cycled)" if t.user_attrs["params"].get("cycle_momentum") else ""


def plot_top_lr_curves(study, *, path, n: int = 6):
    """Left: the range test, loss against LR. Right: the LR of the top trials at every step, same LR axis."""
    from matplotlib.ticker import LogLocator

    from lrfind.study.trials import metric_of, peak_lr
    from lrfind.schedules import get_schedule

    top = _top(study, n)
    if not top:
        raise ValueError("no complete trial")
    base_lr, total = study.user_attrs["base_lr"], study.user_attrs["steps"]
    per_epoch = study.user_attrs.get("steps_per_epoch")
    rt = study.user_attrs.get("range_test")
    fig, axes = new_axes(path, ncols=2 if rt else 1, figsize=(11, 4.8) if rt else (8, 4.8), layout=None)
    fig.subplots_adjust(left=0.08 if rt else 0.11, right=0.98, bottom=0.11, top=0.93, wspace=0.08)
    right = axes[0, -1]
    if rt:
        left = axes[0, 0]
        sm = np.array([np.nan if v is None else v for v in rt["smoothed"]])
        left.plot(sm, rt["lrs"], color="tab:blue")
        start, low = np.nanmax(sm[: max(3, len(sm) // 20)]), np.nanmin(sm)
        pad = 0.05 * (start - low + 1e-12)
        left.set_xlim(low - pad, start + 3 * pad)     # the descent, not the blow-up at its end
        if rt.get("falling_range"):
            left.axhspan(*rt["falling_range"], color="tab:green", alpha=0.1, label="loss falls")
        left.axhline(base_lr, color="tab:red", ls="--", lw=1, label=f"base LR {base_lr:.3g}")
        left.set_xlabel("range-test loss (smoothed)")
        left.set_yscale("log")
        left.set_ylabel("learning rate")
        left.legend(fontsize=8, loc="lower right")
        left.grid(True, alpha=0.25, which="both")
        right.sharey(left)
        right.tick_params(labelleft=False)        # the left panel labels the shared LR axis
    else:
        right.set_ylabel("learning rate")
    steps = np.arange(total)
    seen: list[str] = []
    for rank, t in enumerate(top):
        schedule = get_schedule(t.user_attrs["schedule"])
        factor = schedule.factor(steps, total, metrics=t.user_attrs.get("val_loss", []), **t.user_attrs["params"])
        # each schedule in its colour of the other figures; a second trial of one dashed, a third dotted
        style = ("-", "--", ":", "-.")[seen.count(schedule.name) % 4]
        seen.append(schedule.name)
        right.plot(steps, peak_lr(study, t) * np.maximum(factor, 1e-12), lw=2.2 if rank == 0 else 1.3, ls=style,
                   color=_colour(schedule.name),
                   label=f"#{t.number} {schedule.name}{_momentum_text(t)}: {_score_text(t)}", zorder=10 - rank)
    right.axhline(base_lr, color="tab:red", ls="--", lw=1, label=f"base LR {base_lr:.3g}")
    if per_epoch:
        for e in range(per_epoch, total, per_epoch):
            right.axvline(e, color="grey", lw=0.6, ls=":")
    right.set_yscale("log")
    right.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))   # (shared with the left panel) a minor tick
    # costs a few ms to make and draw; 2 and 5 in each decade read as well as all eight
    if not rt:
        right.set_ylim(base_lr * 1e-4, base_lr * 2)
    right.set_xlabel("optimizer step (dotted: epochs)")
    ranked_by = " by validation loss" if metric_of(study) == "loss" else ""
    shown = "validation accuracy" if top[0].user_attrs.get("val_acc") else "validation loss"
    right.set_title(f"LR of the top {len(top)} trials{ranked_by} ({shown})", fontsize=10)
    right.legend(fontsize=8, loc="lower left")
    right.grid(True, alpha=0.25, which="both")
    save(fig, path)
    return fig


@dataclass
class _Points:
    """Every point the per-epoch lines drew: its epoch, value, and its trial's colours (edge: the
    schedule's; face: none where the trial was pruned, as in the history)."""
    epochs: list[int] = field(default_factory=list)
    edges: list[str] = field(default_factory=list)
    faces: list[str] = field(default_factory=list)
    values: np.ndarray = field(default_factory=lambda: np.empty(0))


def _per_epoch_lines(ax, study, key: str, scale: float = 1.0) -> _Points:
    """One line per trial of its ``key`` record (val_acc, val_loss) after every epoch, coloured by
    schedule (dotted: pruned); returns every point drawn."""
    from matplotlib.ticker import MaxNLocator

    seen, values, points = set(), [], _Points()
    for t in study.get_trials(deepcopy=False):
        record = t.user_attrs.get(key)
        if not record:
            continue
        name = t.user_attrs.get("schedule", "?")
        style = {"COMPLETE": "-", "PRUNED": ":"}.get(t.state.name, "--")
        ax.plot(np.arange(1, len(record) + 1), scale * np.asarray(record, dtype=float), style, marker="o", ms=3,
                lw=1.2, color=_colour(name), alpha=0.85, label=None if name in seen else name)
        seen.add(name)
        values.extend(record)
        points.epochs.extend(range(1, len(record) + 1))
        points.edges.extend([_colour(name)] * len(record))
        points.faces.extend([_colour(name) if t.state.name == "COMPLETE" else "none"] * len(record))
    if not values:
        raise ValueError(f"no trial reported a {key.replace('_', ' ')}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    points.values = scale * np.asarray(values, dtype=float)
    return points


def plot_val_acc(study, *, path):
    """Validation accuracy after every epoch, one line per trial, coloured by schedule. Accuracies
    below the axis (diverged trials, at chance level) sit on its floor as downward triangles, as in
    the history."""
    fig, axes = new_axes(path, figsize=(8, 5))
    ax = axes[0, 0]
    points = _per_epoch_lines(ax, study, "val_acc", 100.0)
    pct, floor = points.values, _accuracy_floor(points.values)
    _mark_off_axis(ax, points.epochs, pct, floor, higher=True, edges=points.edges, faces=points.faces)
    return _accuracy_axes(fig, ax, path, floor, top=np.percentile(pct, 99.5), xlabel="epoch",
                          title="every trial (dotted: pruned; \u25bc: below the axis)")


def plot_val_loss(study, *, path):
    """Validation loss after every epoch, one line per trial, coloured by schedule (studies scored on
    it). Losses above the axis sit on its ceiling as upward triangles, as in the history."""
    fig, axes = new_axes(path, figsize=(8, 5))
    ax = axes[0, 0]
    points = _per_epoch_lines(ax, study, "val_loss")
    losses = points.values
    finite = losses[np.isfinite(losses)]
    if finite.size:           # the good trials, not a diverged one's loss of 2.3 or worse
        low, high = float(finite.min()), float(np.percentile(finite, 90))
        ceiling = high + 0.05 * (high - low + 1e-9)
        ax.set_ylim(low - 0.05 * (high - low + 1e-9), ceiling)
        _mark_off_axis(ax, points.epochs, losses, ceiling, higher=False, edges=points.edges, faces=points.faces)
    return _finish(fig, ax, path, xlabel="epoch", ylabel=_loss_label(study),
                   title="every trial (dotted: pruned; \u25b2: above the axis; lower is better)")
