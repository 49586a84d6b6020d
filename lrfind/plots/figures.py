"""The schedules' figures: LR factor curves side by side, and one schedule over runs of different
lengths. Both are drawn from arrays the caller computed (``lrfind schedules plot``,
``TunedSchedule.plot``), so this module knows no schedule.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from lrfind.plots.canvas import new_axes, save


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


__all__ = ["plot_schedules", "plot_runs"]
