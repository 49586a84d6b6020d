"""The range test's figures: one sweep's loss against the LR with every suggestion marked, and
several sweeps laid over each other (``compare``).

They read a result's curves, suggestions and verdict (the ``Sweeps`` protocol, which
``RangeTestResult`` meets; ``result.py`` imports this module for its ``plot``) and draw on
``lrfind.plots``' canvas.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

import numpy as np

from lrfind.plots.canvas import save, target
from lrfind.rangetest.suggest import Suggestion, start_level

if TYPE_CHECKING:
    from matplotlib.axes import Axes

METHOD_COLOURS = {"smith": "tab:red", "balanced": "tab:brown", "steepest": "tab:orange", "valley": "tab:green",
                  "minimum": "tab:purple"}


class Sweeps(Protocol):
    """What the range test's figures read of a result (``RangeTestResult``'s fields and properties)."""
    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    config: dict[str, Any]
    method: str
    suggestions: dict[str, Suggestion]
    seed_lrs: list[float | None]
    shallow: list[int]

    @property
    def suggested_lr(self) -> float | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def stop_reason(self) -> str: ...
    @property
    def falling_range(self) -> tuple[float, float] | None: ...
    @property
    def spread(self) -> tuple[float, float] | None: ...
    @property
    def caveats(self) -> list[str]: ...
    def other_curves(self) -> list[tuple[np.ndarray, np.ndarray, bool]]: ...


def loss_limits(raw: np.ndarray, smoothed: np.ndarray, others: list[np.ndarray] = ()) -> tuple[float, float] | None:
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


def plot_range_test(result: Sweeps, ax: "Axes | None" = None, *, path: str | Path | None = None,
                    title: str | None = None) -> "Axes":
    """Loss against LR (log scale when the sweep was exponential), with every suggestion marked."""
    fig, ax, path = target(ax, path, "plot")
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
        ax.plot([s.lr], [sm[s.index]], "o", ms=9 if main else 6, color=METHOD_COLOURS.get(name, "black"),
                label=f"{name}: {s.lr:.2g}" + (" (suggested)" if main else ""), zorder=3)
    if result.suggested_lr is not None:
        ax.axvline(result.suggested_lr, color="tab:red", ls="--", lw=1)
    spread, counted = result.spread, len(result.seed_lrs) - len(result.shallow)
    if spread is not None and counted > 1:
        ax.axvspan(*spread, color="tab:red", alpha=0.08, label=f"spread over {counted} seeds")
    if result.config.get("mode", "exp") == "exp":
        ax.set_xscale("log")
    limits = loss_limits(raw, sm, [o for _, o, _ in others])
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation loss" if result.config.get("validation_loss") else "training loss")
    _title(ax, result, title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="lower left")
    if result.caveats:                               # the missing suggestion's reason is the title already
        ax.text(0.99, 0.98, "\n".join(textwrap.fill(f"warning: {w}", 60) for w in result.caveats),
                transform=ax.transAxes, ha="right", va="top", fontsize=7, color="tab:red",
                bbox=dict(boxstyle="round", facecolor="white", edgecolor="tab:red", alpha=0.9))
    if path is not None:
        save(ax.figure if fig is None else fig, path)
    return ax


def _title(ax, result: Sweeps, title: str | None) -> None:
    """``title``, else the verdict and why the sweep stopped; a missing suggestion's reason, often
    long, wrapped in a smaller font."""
    verdict = (f"suggested LR {result.suggested_lr:.3g}" if result.suggested_lr is not None
               else f"no clear suggestion: {result.reason}")
    found = result.suggested_lr is not None
    ax.set_title(title or textwrap.fill(f"LR range test: {verdict}", 90 if found else 110)
                 + f"\nstopped: {result.stop_reason}", fontsize=10 if found else 8)


def plot_comparison(results: Mapping[str, Sweeps], ax: "Axes | None" = None, *,
                    path: str | Path | None = None, title: str | None = None) -> "Axes":
    """Several range tests over each other: each one's loss per batch (faint) and smoothed loss,
    its suggestion marked; the y-limits show every descent and the start of every blow-up."""
    fig, ax, path = target(ax, path, "plot")
    limits = []
    for i, (label, r) in enumerate(results.items()):
        colour = f"C{i % 10}"
        ax.plot(r.lrs, r.losses, color=colour, alpha=0.2, lw=0.7)
        lr = r.suggested_lr
        ax.plot(r.lrs, r.smoothed, color=colour, lw=2, label=f"{label}: " + (f"{lr:.2g}" if lr is not None else "none"))
        if lr is not None:
            j = int(np.argmin(np.abs(np.log(r.lrs) - np.log(lr)))) if np.all(r.lrs > 0) else 0
            ax.plot([lr], [r.smoothed[j]], "o", ms=8, color=colour, mec="white", zorder=3)
        limits.append(loss_limits(r.losses, r.smoothed))
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


__all__ = ["Sweeps", "plot_range_test", "plot_comparison", "loss_limits", "METHOD_COLOURS"]
