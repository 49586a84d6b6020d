"""``RangeTestResult``: the data a range test produces, its export and import, and its plot."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from lrfind.rangetest import suggest as _suggest
from lrfind._args import check_positive
from lrfind._files import write_whole
from lrfind.plots.canvas import png
from lrfind.rangetest.plot import plot_range_test
from lrfind.rangetest.sweep import Sweep


class RangeTestWarning(UserWarning):
    """A range test's result that needs a second look (``RangeTestResult.warnings`` says why)."""


def _median(lrs: list[float]) -> float:
    """The median LR, on the log scale (for an even count, the geometric mean of the middle two)."""
    return float(np.exp(np.median(np.log(lrs))))


def median_index(seed_lrs: list[float | None]) -> int:
    """The repeat whose suggestion lies closest to the median one (on the log scale); 0 when none
    found one. Its curve is the one a repeated range test shows."""
    found = [(i, lr) for i, lr in enumerate(seed_lrs) if lr is not None]
    if not found:
        return 0
    middle = math.log(_median([lr for _, lr in found]))
    return min(found, key=lambda item: abs(math.log(item[1]) - middle))[0]


# A repeat whose loss fell less than this share of the deepest repeat's fall is too shallow to count.
# Sweeps that broke down fall far less than the deepest, every other sweep much more than this share
# (experiments/range_test_spread.py; the benchmarks page has the figures).
SHALLOW = 0.3


def shallow_sweeps(seed_losses: list[np.ndarray]) -> list[int]:
    """The repeats whose smoothed loss fell less than ``SHALLOW`` times as far as the deepest one's.

    Most often such a sweep broke down before it could learn (a loss spike where the LR climbs
    fastest, after which the net stays at chance): its minimum marks the breakdown, not the cliff,
    and its suggestion is a tenth of the others'. A sweep that merely learned slowly can be as
    shallow; its minimum then says little either way. Both are left out of the median."""
    return _shallow_of([_suggest.fall(x) for x in seed_losses])


def _shallow_of(falls: list[float | None]) -> list[int]:
    """``shallow_sweeps`` from the repeats' falls (``suggest.fall``)."""
    deepest = max((f for f in falls if f is not None), default=None)
    if deepest is None or deepest <= 0:
        return []
    return [i for i, f in enumerate(falls) if f is not None and f < SHALLOW * deepest]


def describe_sweeps(seed_lrs: list[float | None], shallow: list[int] = (), digits: int = 3) -> str:
    """The repeats' suggestions for a reader, "0.046, 0.0066 shallow, none"."""
    return ", ".join(("none" if lr is None else f"{lr:.{digits}g}") + (" shallow" if i in shallow else "")
                     for i, lr in enumerate(seed_lrs))


def _num(x: float) -> float | None:
    """A float for JSON: NaN and Inf become null."""
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class RangeTestResult:
    """One range test: the LRs swept, the loss of every batch, and what they suggest.

    ``lrs`` are the LRs of the parameter group with the largest LR (the others kept their ratio to
    it, listed in ``group_ratios``). ``losses`` are the raw per-batch losses (NaN/Inf kept, as
    recorded); ``smoothed`` is the lag-free smoothing the suggestions use. ``suggested_lr`` is the
    suggestion of ``method`` (the median over seeds when the test was repeated), or ``None`` when
    the curve gives no clear answer; ``reason`` then says why.

    A repeated test keeps every seed's losses in ``seed_losses`` (in the order of ``seed_lrs``);
    ``lrs`` and ``losses`` are then the curve of the repeat whose suggestion is the median
    (``curve_index``), so the curve shown agrees with the LR suggested. One range test can land far
    from the others: on MNIST a LeNet's sweep now and then breaks down where its loss falls fastest
    (2 sweeps in 24 suggested 0.006 where the others suggested 0.042 to 0.069). ``seed_falls``
    says how far each repeat's smoothed loss fell; ``shallow`` lists those left out of the median
    for falling too little (``shallow_sweeps``).
    """

    lrs: np.ndarray
    losses: np.ndarray
    stop_reason: str = "completed"
    num_iter: int = 0
    method: str = _suggest.DEFAULT_METHOD
    config: dict[str, Any] = field(default_factory=dict)
    group_ratios: list[float] = field(default_factory=lambda: [1.0])
    seed_lrs: list[float | None] = field(default_factory=list)   # the suggestion of each repeat
    seed_losses: list[np.ndarray] = field(default_factory=list)  # the raw losses of each repeat (none: one run)
    curve_index: int = 0                                         # the repeat whose curve ``losses`` is

    def __post_init__(self) -> None:
        self.lrs = np.asarray(self.lrs, dtype=np.float64)
        self.losses = np.asarray(self.losses, dtype=np.float64)
        self.smoothed = _suggest.smooth(self.losses)
        _suggest.get_method(self.method)        # an unknown name lists the choices
        self.suggestions = _suggest.suggest_all(self.lrs, self.losses)
        if not self.seed_lrs:
            self.seed_lrs = [self.suggestions[self.method].lr]
        self.seed_losses = [np.asarray(x, dtype=np.float64) for x in self.seed_losses]
        # how far each repeat's loss fell, and the repeats too shallow to count: once, like the
        # suggestions (none for one sweep, or curves that do not match the suggestions one to one)
        kept = len(self.seed_losses) > 1 and len(self.seed_losses) == len(self.seed_lrs)
        self.seed_falls = [_suggest.fall(x) for x in self.seed_losses] if kept else []
        self.shallow: list[int] = _shallow_of(self.seed_falls)

    # -- the answer ----------------------------------------------------------------------------
    def _counted(self) -> list[float | None]:
        """The suggestions of the repeats that count: all but the shallow ones."""
        shallow = set(self.shallow)
        return [lr for i, lr in enumerate(self.seed_lrs) if i not in shallow]

    def _found(self) -> list[float]:
        """The suggestions of the repeats that count, where they found one."""
        return [lr for lr in self._counted() if lr is not None]

    @property
    def suggested_lr(self) -> float | None:
        found = self._found()
        if not found or 2 * len(found) < len(self._counted()):
            return None   # most repeats found no clear answer
        # three significant digits: the curve cannot say more, and people type LRs that way
        return float(f"{_median(found):.3g}")

    @property
    def reason(self) -> str:
        s = self.suggestions[self.method]
        if self.suggested_lr is None and s.lr is not None:
            return "most repeats gave no clear answer"
        if len(self.seed_lrs) > 1:
            over = "sweeps" if self.config.get("fused") else "seeds"      # side by side: each on its own batches
            return f"median over {len(self._counted())} {over} of: {s.reason}"
        return s.reason

    @property
    def spread(self) -> tuple[float, float] | None:
        """Lowest and highest suggestion over the repeats (seeds) that count, the shallow ones left
        out; ``None`` if none was found."""
        found = self._found()
        return (min(found), max(found)) if found else None

    @property
    def falling_range(self) -> tuple[float, float] | None:
        """The LR range where the smoothed loss falls, from its start to the minimum."""
        return _suggest.falling_range(self.lrs, self.losses)

    @property
    def repeats_disagree(self) -> bool:
        """Whether the repeats disagree: the suggestions of those that count span more than 3x (one
        sweep, or more, landed far off), or shallow ones were left out and fewer than two remain to
        agree."""
        spread = self.spread
        return len(self.seed_lrs) > 1 and (spread is not None and spread[1] > 3 * spread[0]
                                           or bool(self.shallow) and len(self._found()) < 2)

    @property
    def warnings(self) -> list[str]:
        """What to check before using the result, as ``find_lr`` warns it: no suggestion (with
        ``reason``), the sweep ended before the loss turned up, or the repeats disagree by more
        than 3x. Empty when nothing."""
        if self.suggested_lr is not None:
            return self.caveats
        pick = ("; result.plot() shows the curve to pick one from"
                if np.isfinite(self.losses).sum() >= _suggest.MIN_LOSSES else "")
        return [f"no LR suggested: {self.reason}{pick}", *self.caveats]

    @property
    def caveats(self) -> list[str]:
        """``warnings`` but for the missing suggestion (which ``summary`` and the plot's title say)."""
        found = _suggest.caveats(self.lrs, self.losses)
        spread = self.spread
        if self.repeats_disagree:
            median = self.suggested_lr
            counted = len(self._counted())
            what = (f"the {counted} repeats' suggestions span {spread[0]:.3g} to {spread[1]:.3g}, "
                    f"{spread[1] / spread[0]:.1f}x: one sweep can land far from the others"
                    if spread is not None and spread[1] > 3 * spread[0] else
                    f"{len(self.shallow)} of the {len(self.seed_lrs)} repeats' losses fell too little to count "
                    "(most often: they broke down before they could learn), which leaves fewer than two to agree")
            found.append(what + "; " + (f"the median, {median:.3g}, is the suggestion; more repeats, or a slower sweep "
                                       "(twice num_iter), make it surer" if median is not None else
                                       "more repeats, or a slower sweep (twice num_iter), tell which is the odd one"))
        return found

    def other_curves(self) -> list[tuple[np.ndarray, np.ndarray, bool]]:
        """``(lrs, smoothed losses, shallow)`` of every repeat but the one in ``losses``, for the plot."""
        shallow = set(self.shallow)
        others = [(raw, i in shallow) for i, raw in enumerate(self.seed_losses) if i != self.curve_index]
        lrs = self.lrs
        if any(raw.size > lrs.size for raw, _ in others):   # a repeat went on after the shown one stopped
            lrs = Sweep(**{f.name: self.config[f.name] for f in fields(Sweep) if f.name in self.config}).lrs()
        return [(lrs[: raw.size], _suggest.smooth(raw), down) for raw, down in others]

    def shallow_text(self) -> str:
        """Which repeats were left out of the median, and why ("" when none)."""
        shallow = self.shallow
        if not shallow:
            return ""
        seeds = self.config.get("seeds") or [None] * len(self.seed_lrs)
        which = ", ".join((f"seed {seeds[i]}" if seeds[i] is not None else f"repeat {i + 1}")
                          + (f" ({self.seed_lrs[i]:.3g})" if self.seed_lrs[i] is not None else "") for i in shallow)
        falls = self.seed_falls
        return (f"left out of the median: {which}, whose loss fell {', '.join(f'{falls[i]:.2g}' for i in shallow)} where "
                f"the deepest sweep's fell {max(f for f in falls if f is not None):.2g}: too little for "
                f"{'its' if len(shallow) == 1 else 'their'} minimum to mark the cliff (most often a sweep that broke "
                "down before it could learn)")

    @property
    def stop_lr(self) -> float | None:
        return float(self.lrs[-1]) if self.lrs.size else None

    def summary(self) -> str:
        """A few lines for a terminal."""
        lines = []
        lr = self.suggested_lr
        lines.append(f"suggested LR: {lr:.3g} ({self.method}: {self.reason})" if lr is not None
                     else f"suggested LR: none ({self.reason})")
        lines += [f"warning: {w}" for w in self.caveats]
        if self.config.get("how"):
            lines.append(f"sweeps: {self.config['how']}")
        if len(self.seed_lrs) > 1 and self.spread is not None:
            seeds = self.config.get("seeds") or []
            median = "the median" if len(self._counted()) % 2 else "the one nearest the median"
            if self.config.get("fused"):          # side by side, the sweeps differ by their batches, not seeds
                shown = f" (the curve is sweep {self.curve_index + 1}'s, {median})" if self.seed_losses else ""
                over = "sweeps"
            else:
                shown = f" (the curve is seed {seeds[self.curve_index]}'s, {median})" if self.seed_losses and \
                    self.curve_index < len(seeds) and seeds[self.curve_index] is not None else ""
                over = "seeds"
            lines.append(f"spread over {len(self._counted())} {over}: {self.spread[0]:.3g} .. {self.spread[1]:.3g}"
                         f"{shown}")
        if self.shallow:
            lines.append(self.shallow_text())
        faster = self.config.get("faster_sweeps")
        if faster:
            lrs = describe_sweeps(faster["seed_lrs"], faster.get("shallow") or [])
            lines.append(f"the first {len(faster['seed_lrs'])} sweeps, {faster['num_iter']} steps each, disagreed "
                         f"({lrs}): these are as many at half the pace, {self.num_iter} steps each")
        others = ", ".join(f"{k} {v.lr:.3g}" for k, v in self.suggestions.items()
                           if k != self.method and v.lr is not None)
        if others:
            lines.append(f"other methods: {others}")
        fr = self.falling_range
        if fr is not None:
            lines.append(f"loss falls from LR {fr[0]:.3g} to {fr[1]:.3g}")
        where = f"after {self.lrs.size} of {self.num_iter} iterations at LR {self.stop_lr:.3g}" \
            if self.stop_lr is not None else "before the first iteration"
        lines.append(f"stopped: {self.stop_reason}, {where}")
        return "\n".join(lines)

    # -- export and import ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "suggested_lr": self.suggested_lr,
            "method": self.method,
            "reason": self.reason,
            "warnings": self.warnings,
            "suggestions": {k: {"lr": v.lr, "reason": v.reason} for k, v in self.suggestions.items()},
            "seed_lrs": self.seed_lrs,
            "shallow": self.shallow,
            "curve_index": self.curve_index,
            "seed_losses": [[_num(x) for x in losses] for losses in self.seed_losses],
            "spread": list(self.spread) if self.spread else None,
            "falling_range": list(self.falling_range) if self.falling_range else None,
            "stop_reason": self.stop_reason,
            "stop_lr": self.stop_lr,
            "num_iter": self.num_iter,
            "group_ratios": self.group_ratios,
            "config": self.config,
            "lrs": [float(x) for x in self.lrs],
            "losses": [_num(x) for x in self.losses],
            "smoothed": [_num(x) for x in self.smoothed],
        }

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        return write_whole(path, json.dumps(self.to_dict(), indent=2))

    def to_csv(self, path: str | Path) -> Path:
        """One row per iteration: ``iteration, lr, loss, smoothed`` (empty cell for NaN)."""
        text = io.StringIO(newline="")
        w = csv.writer(text)
        w.writerow(["iteration", "lr", "loss", "smoothed"])
        for i, (lr, loss, sm) in enumerate(zip(self.lrs, self.losses, self.smoothed)):
            w.writerow([i, repr(float(lr)), "" if _num(loss) is None else repr(float(loss)),
                        "" if _num(sm) is None else repr(float(sm))])
        return write_whole(path, text.getvalue())

    @classmethod
    def from_json(cls, path: str | Path) -> "RangeTestResult":
        try:
            d = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not a range-test JSON file: it is not JSON ({e}); cut short?") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path} is not a range-test JSON file: it holds a {type(d).__name__}, not an object")
        try:
            return cls(lrs=d["lrs"], losses=[np.nan if x is None else x for x in d["losses"]],
                       stop_reason=d.get("stop_reason", "completed"), num_iter=d.get("num_iter", len(d["lrs"])),
                       method=d.get("method", _suggest.DEFAULT_METHOD), config=d.get("config", {}),
                       group_ratios=d.get("group_ratios", [1.0]), seed_lrs=d.get("seed_lrs", []),
                       seed_losses=[[np.nan if x is None else x for x in losses] for losses in d.get("seed_losses", [])],
                       curve_index=d.get("curve_index", 0))
        except KeyError as e:
            raise ValueError(f"{path} is not a range-test JSON file: no {e} field") from None

    @classmethod
    def from_csv(cls, path: str | Path) -> "RangeTestResult":
        with Path(path).open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        if not {"lr", "loss"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path} is not a range-test CSV file: it needs columns lr and loss")
        if not rows:
            raise ValueError(f"{path} holds no iterations, only its header")
        cut = next((i for i, r in enumerate(rows) if None in r.values()), None)     # fewer cells than the header
        if cut is not None:
            raise ValueError(f"{path} is not a whole range-test CSV file: its row {cut + 1} is cut short")
        try:
            lrs = [float(r["lr"]) for r in rows]
            losses = [float(r["loss"]) if r["loss"] else np.nan for r in rows]
        except (TypeError, ValueError) as e:          # a cell that is not a number, a row cut short
            raise ValueError(f"{path} is not a range-test CSV file: {e}") from None
        return cls(lrs=lrs, losses=losses, num_iter=len(rows))

    @classmethod
    def load(cls, path: str | Path) -> "RangeTestResult":
        """Read a result written by ``to_json`` or ``to_csv`` (chosen by the file's extension)."""
        suffix = Path(path).suffix.lower()
        if suffix == ".json":
            return cls.from_json(path)
        if suffix == ".csv":
            return cls.from_csv(path)
        raise ValueError(f"cannot tell the format of {path}: use a .json or .csv file")

    def apply(self, optimizer, lr: float | None = None) -> float:
        """Set ``optimizer``'s LR to the suggestion (or to ``lr``) and return it: the group that had
        the largest LR in the sweep gets it, the others keep their ratio to it (``group_ratios``),
        as they did in the sweep. Build a scheduler after this: it starts from the LRs it finds.

        A Lightning module instead of an optimizer gets it in the attribute its
        ``configure_optimizers`` reads, ``lr`` or ``learning_rate`` (or that key of its ``hparams``),
        as Lightning's own LR finder sets it."""
        lr = self.suggested_lr if lr is None else lr
        if lr is None:
            raise ValueError(f"no suggested LR to apply ({self.reason}); look at the plot and pass lr=")
        check_positive("lr", lr)
        if not hasattr(optimizer, "param_groups"):
            from lrfind.rangetest.lightning import is_lightning, set_lightning_lr  # torch: not for reading results

            if is_lightning(optimizer):
                set_lightning_lr(optimizer, float(lr))
                return float(lr)
        groups = optimizer.param_groups
        if len(groups) != len(self.group_ratios):
            raise ValueError(f"the optimizer has {len(groups)} parameter group(s), the range test swept "
                             f"{len(self.group_ratios)}: apply the result to the optimizer it swept, or one built alike")
        for group, ratio in zip(groups, self.group_ratios):
            group["lr"] = lr * ratio
        return float(lr)

    def __repr__(self) -> str:
        """One line, not the arrays: a notebook or a REPL shows this (and, in a notebook, the plot)."""
        lr = (f"{self.suggested_lr:.3g} ({self.method})" if self.suggested_lr is not None
              else f"none ({self.reason})")
        repeats = f", median of {len(self.seed_lrs)} sweeps" if len(self.seed_lrs) > 1 else ""
        warned = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return (f"<RangeTestResult: suggested LR {lr}{repeats}; {self.lrs.size} of {self.num_iter} iterations, "
                f"{self.stop_reason}{warned}; .summary() and .plot() say more>")

    def _repr_png_(self) -> bytes:
        """The plot, for Jupyter: a result left as a cell's value is drawn (no pyplot involved)."""
        return png(lambda ax: self.plot(ax=ax))

    # -- plot ----------------------------------------------------------------------------------
    def plot(self, ax=None, *, path: str | Path | None = None, title: str | None = None):
        """Draw the curve and the suggestions; return the Axes. With ``path``, also save the figure
        (``plot("lr.png")`` does the same).

        Never calls ``plt.show()``.
        """
        return plot_range_test(self, ax=ax, path=path, title=title)
