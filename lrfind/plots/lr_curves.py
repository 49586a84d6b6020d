"""The study's LR figure: the top trials' LR at every step, beside the range test that set the base LR.

Drawn from an ``LRCurves`` record (``lrfind.study.figures.lr_curves`` computes the curves from the
schedules), on one LR axis shared by both panels: where each schedule's LR runs against where the
range test's loss fell.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrfind.plots.canvas import new_axes, save
from lrfind.plots.records import LRCurve, LRCurves, RangeTestCurve
from lrfind.plots.study import schedule_colour


def plot_top_lr_curves(data: LRCurves, *, path: str | Path):
    """Left: the range test, loss against LR. Right: the LR of the top trials at every step, same LR axis."""
    from matplotlib.ticker import LogLocator

    if not data.curves:
        raise ValueError("no complete trial")
    rt, base_lr, total, per_epoch = data.range_test, data.base_lr, data.steps, data.steps_per_epoch
    fig, axes = new_axes(path, ncols=2 if rt else 1, figsize=(11, 4.8) if rt else (8, 4.8), layout=None)
    fig.subplots_adjust(left=0.08 if rt else 0.11, right=0.98, bottom=0.11, top=0.93, wspace=0.08)
    right = axes[0, -1]
    if rt:
        _range_test_panel(axes[0, 0], rt, base_lr)
        right.sharey(axes[0, 0])
        right.tick_params(labelleft=False)        # the left panel labels the shared LR axis
    else:
        right.set_ylabel("learning rate")
    steps = np.arange(total)
    seen: list[str] = []
    for rank, curve in enumerate(data.curves):
        # each schedule in its colour of the other figures; a second trial of one dashed, a third dotted
        style = ("-", "--", ":", "-.")[seen.count(curve.schedule) % 4]
        seen.append(curve.schedule)
        right.plot(steps, curve.lrs, lw=2.2 if rank == 0 else 1.3, ls=style,
                   color=schedule_colour(curve.schedule, data.schedules), label=_label(curve), zorder=10 - rank)
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
    ranked_by = " by validation loss" if data.metric == "loss" else ""
    shown = "validation accuracy" if data.curves[0].val_acc is not None else "validation loss"
    right.set_title(f"LR of the top {len(data.curves)} trials{ranked_by} ({shown})", fontsize=10)
    right.legend(fontsize=8, loc="lower left")
    right.grid(True, alpha=0.25, which="both")
    save(fig, path)
    return fig


def _range_test_panel(ax, rt: RangeTestCurve, base_lr: float) -> None:
    """The range test's smoothed loss against the LR (on the y axis, shared with the curves), the
    range where it fell, and the base LR."""
    sm = np.asarray(rt.smoothed, dtype=float)
    ax.plot(sm, rt.lrs, color="tab:blue")
    start, low = np.nanmax(sm[: max(3, len(sm) // 20)]), np.nanmin(sm)
    pad = 0.05 * (start - low + 1e-12)
    ax.set_xlim(low - pad, start + 3 * pad)     # the descent, not the blow-up at its end
    if rt.falling_range:
        ax.axhspan(*rt.falling_range, color="tab:green", alpha=0.1, label="loss falls")
    ax.axhline(base_lr, color="tab:red", ls="--", lw=1, label=f"base LR {base_lr:.3g}")
    ax.set_xlabel("range-test loss (smoothed)")
    ax.set_yscale("log")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, alpha=0.25, which="both")


def _label(curve: LRCurve) -> str:
    """The legend entry: trial, schedule, and its validation accuracy, or its loss where there is
    none (regression targets)."""
    momentum = " (momentum cycled)" if curve.momentum_cycled else ""
    score = f"{100 * curve.val_acc:.2f}%" if curve.val_acc is not None else f"loss {curve.val_loss:.4g}"
    return f"#{curve.number} {curve.schedule}{momentum}: {score}"


__all__ = ["plot_top_lr_curves"]
