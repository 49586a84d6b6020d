"""The study figures drawn from its trials' scores: the optimisation history, the validation accuracy
and loss after every epoch, and the parameter importances.

They draw records (``lrfind.plots.records``), not the study: ``lrfind.study.figures`` reads those
out of a stored study, so ``lrfind show`` draws the same figures from any machine. Every figure is
written to ``path`` and returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lrfind.plots.canvas import new_axes, save
from lrfind.plots.records import Importances, StudyPoints, TrialPoints

# tab10, then six more hues: tab20's light twins put plateau beside warmup in two pinks
SCHEDULE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                    "#17becf", "#000000", "#ffd700", "#1f2a80", "#00897b", "#a0004f", "#7fbf00"]


def schedule_colour(name: str, schedules: tuple[str, ...]) -> str:
    """One colour per schedule, the same in every figure: its place in ``schedules`` (the registry's
    order); grey for a schedule not in it (one a stored study ran that lrfind no longer has)."""
    return SCHEDULE_COLOURS[schedules.index(name) % len(SCHEDULE_COLOURS)] if name in schedules else "0.5"


def plot_history(data: StudyPoints, *, path: str | Path):
    """The optimisation history: every trial's validation accuracy in the order it was asked,
    coloured by schedule (hollow: pruned, at its last epoch), and the best so far. Trials below
    the axis (diverged ones, at chance level) sit on its floor as downward triangles. A study of
    regression targets, which have no accuracy, shows the validation loss (lower is better)."""
    trials = [t for t in data.trials if t.val_acc]
    higher = bool(trials)
    if higher:
        values = np.array([100 * t.val_acc[-1] for t in trials])
        limit = _accuracy_floor(values)
    else:
        trials = [t for t in data.trials if t.val_loss and np.isfinite(t.val_loss[-1])]
        if not trials:
            raise ValueError("no trial reported a validation score")
        values = np.array([t.val_loss[-1] for t in trials])
        low, high = float(values.min()), float(np.percentile(values, 90))
        limit = high + 0.1 * (high - low + 1e-9)
    off = _off_axis(values, limit, higher=higher)
    fig, axes = new_axes(path, figsize=(8.5, 5))
    ax = axes[0, 0]
    names = [t.schedule for t in trials]
    edges = [schedule_colour(name, data.schedules) for name in names]
    faces = [e if t.complete else "none" for t, e in zip(trials, edges)]
    x = np.array([t.number for t in trials])
    if (~off).any():              # one scatter, not one per trial (see ``_mark_off_axis``)
        ax.scatter(x[~off], values[~off], s=28, zorder=3, marker="o", clip_on=False,
                   facecolors=[f for f, o in zip(faces, off) if not o],
                   edgecolors=[e for e, o in zip(edges, off) if not o])
    _mark_off_axis(ax, x, values, limit, higher=higher, edges=edges, faces=faces)
    _schedule_legend(ax, names, data.schedules)
    done = sorted((t.number, v) for t, v in zip(trials, values) if t.complete)
    if done:
        numbers, scores = zip(*done)
        best = np.maximum.accumulate(scores) if higher else np.minimum.accumulate(scores)
        ax.step(numbers, best, where="post", color="black", lw=1.2, label="best so far")
    if higher:
        return _accuracy_axes(fig, ax, path, limit, top=max(values), xlabel="trial",
                              title="optimisation history (hollow: pruned; \u25bc: below the axis)")
    ax.set_ylim(low - 0.05 * (limit - low + 1e-9), limit)
    return _finish(fig, ax, path, xlabel="trial", ylabel=data.loss_label,
                   title="optimisation history (hollow: pruned; \u25b2: above the axis; lower is better)")


def _schedule_legend(ax, names: list[str], schedules: tuple[str, ...]) -> None:
    """The legend's entries: one per schedule, in order of appearance (the points are one scatter)."""
    from matplotlib.lines import Line2D

    for name in dict.fromkeys(names):
        ax.add_line(Line2D([], [], ls="none", marker="o", ms=6, color=schedule_colour(name, schedules), label=name))


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


def plot_importances(data: Importances, *, path: str | Path):
    """Parameter importances as bars, most important on top. The 12 most important parameters are
    shown; those below 0.005 only counted (a conditional parameter seen in one trial tells nothing)."""
    importances = dict(data.values)
    if not importances:
        raise ValueError("no parameter is shared by all complete trials")
    shown = [n for n in importances if importances[n] >= 0.005][:12] or list(importances)[:1]
    names, rest = shown[::-1], len(importances) - len(shown)
    fig, axes = new_axes(path, figsize=(8, 1.6 + 0.45 * len(names)))
    ax = axes[0, 0]
    ax.barh(names, [importances[n] for n in names], height=0.6, color="tab:blue")
    for y, name in enumerate(names):
        ax.text(importances[name], y, f" {importances[name]:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"importance for validation {data.metric} ({data.evaluator})")
    left_out = f"\n({rest} more parameter{'s' if rest != 1 else ''} below 0.005 not shown)" if rest else ""
    ax.set_title(f"parameter importances over {data.complete} complete trials{left_out}", fontsize=10)
    ax.grid(True, axis="x", alpha=0.25)
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


def _record(t: TrialPoints, key: str) -> tuple[float, ...]:
    return t.val_acc if key == "val_acc" else t.val_loss


def _per_epoch_lines(ax, data: StudyPoints, key: str, scale: float = 1.0) -> _Points:
    """One line per trial of its ``key`` record (val_acc, val_loss) after every epoch, coloured by
    schedule (dotted: pruned); returns every point drawn."""
    from matplotlib.ticker import MaxNLocator

    seen, values, points = set(), [], _Points()
    for t in data.trials:
        record = _record(t, key)
        if not record:
            continue
        colour = schedule_colour(t.schedule, data.schedules)
        style = {"COMPLETE": "-", "PRUNED": ":"}.get(t.state, "--")
        ax.plot(np.arange(1, len(record) + 1), scale * np.asarray(record, dtype=float), style, marker="o", ms=3,
                lw=1.2, color=colour, alpha=0.85, label=None if t.schedule in seen else t.schedule)
        seen.add(t.schedule)
        values.extend(record)
        points.epochs.extend(range(1, len(record) + 1))
        points.edges.extend([colour] * len(record))
        points.faces.extend([colour if t.complete else "none"] * len(record))
    if not values:
        raise ValueError(f"no trial reported a {key.replace('_', ' ')}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    points.values = scale * np.asarray(values, dtype=float)
    return points


def plot_val_acc(data: StudyPoints, *, path: str | Path):
    """Validation accuracy after every epoch, one line per trial, coloured by schedule. Accuracies
    below the axis (diverged trials, at chance level) sit on its floor as downward triangles, as in
    the history."""
    fig, axes = new_axes(path, figsize=(8, 5))
    ax = axes[0, 0]
    points = _per_epoch_lines(ax, data, "val_acc", 100.0)
    pct, floor = points.values, _accuracy_floor(points.values)
    _mark_off_axis(ax, points.epochs, pct, floor, higher=True, edges=points.edges, faces=points.faces)
    return _accuracy_axes(fig, ax, path, floor, top=np.percentile(pct, 99.5), xlabel="epoch",
                          title="every trial (dotted: pruned; \u25bc: below the axis)")


def plot_val_loss(data: StudyPoints, *, path: str | Path):
    """Validation loss after every epoch, one line per trial, coloured by schedule (studies scored on
    it). Losses above the axis sit on its ceiling as upward triangles, as in the history."""
    fig, axes = new_axes(path, figsize=(8, 5))
    ax = axes[0, 0]
    points = _per_epoch_lines(ax, data, "val_loss")
    losses = points.values
    finite = losses[np.isfinite(losses)]
    if finite.size:           # the good trials, not a diverged one's loss of 2.3 or worse
        low, high = float(finite.min()), float(np.percentile(finite, 90))
        ceiling = high + 0.05 * (high - low + 1e-9)
        ax.set_ylim(low - 0.05 * (high - low + 1e-9), ceiling)
        _mark_off_axis(ax, points.epochs, losses, ceiling, higher=False, edges=points.edges, faces=points.faces)
    return _finish(fig, ax, path, xlabel="epoch", ylabel=data.loss_label,
                   title="every trial (dotted: pruned; \u25b2: above the axis; lower is better)")


__all__ = ["SCHEDULE_COLOURS", "schedule_colour", "plot_history", "plot_importances", "plot_val_acc", "plot_val_loss"]
