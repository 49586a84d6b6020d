"""Several range tests side by side: another optimizer, batch size, weight decay or model.

Smith's "disciplined approach" (arXiv:1803.09820) chooses weight decay, batch size and momentum
with the range test itself: sweep once for each value and lay the curves over each other; the
value whose loss falls lowest, and keeps falling up to the highest LR, is the one to train with.
``compare`` draws those curves in one plot and tabulates what each sweep says. Measured on
LeNet (``experiments/weight_decay_compare.py``): the lowest losses ranked four weight decays as their
validation accuracies did (but for two that tie); the value whose loss kept falling furthest
trained 0.5 pp worse than none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrfind.plots.canvas import png
from lrfind.rangetest.plot import plot_comparison
from lrfind.rangetest.result import RangeTestResult

RESULT_FILE = "range_test.json"             # what `lrfind range-test --out DIR` writes, among others


def _load(item: RangeTestResult | str | Path) -> RangeTestResult:
    if isinstance(item, RangeTestResult):
        return item
    if not isinstance(item, (str, Path)):
        raise TypeError(f"compare takes RangeTestResults or paths to them, got {type(item).__name__}")
    path = Path(item)
    if path.is_dir():
        if not (path / RESULT_FILE).is_file():
            raise ValueError(f"{path} holds no {RESULT_FILE}: give the --out folder of an `lrfind range-test` run, "
                             f"or a .json or .csv file that RangeTestResult.to_json/to_csv wrote")
        path = path / RESULT_FILE
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        return RangeTestResult.load(path)
    except ValueError as e:                 # a file of another kind: say which one
        raise ValueError(str(e) if str(path) in str(e) else f"{path}: {e}") from None


def _label(item: object, number: int) -> str:
    if isinstance(item, (str, Path)):
        path = Path(item)
        return path.name if path.is_dir() else path.stem
    return f"run {number}"


@dataclass
class Comparison:
    """Range tests by label, in the order given: ``table()`` (also ``str()``), ``plot()``."""

    results: dict[str, RangeTestResult]

    def lowest(self) -> dict[str, tuple[float, float] | None]:
        """Each sweep's lowest smoothed loss and the LR where it was reached (None: no finite loss)."""
        out: dict[str, tuple[float, float] | None] = {}
        for label, r in self.results.items():
            finite = np.isfinite(r.smoothed)
            if not finite.any():
                out[label] = None
                continue
            i = int(np.nanargmin(np.where(finite, r.smoothed, np.nan)))
            out[label] = float(r.smoothed[i]), float(r.lrs[i])
        return out

    def differences(self) -> dict[str, list]:
        """The settings the sweeps differ in (their configs' plain values: optimizer, batch size,
        weight decay, ...), each with every sweep's value in order (None: not recorded, or not
        there: an Adam's momentum). A setting only some sweeps recorded, the same in all of them,
        is no difference."""
        keys = dict.fromkeys(k for r in self.results.values() for k in r.config)
        out = {}
        for key in keys:
            values = [r.config.get(key) for r in self.results.values()]
            plain = all(v is None or isinstance(v, (bool, int, float, str)) for v in values)
            if plain and len({v for v in values if v is not None}) > 1:
                out[key] = values
        return out

    def table(self) -> str:
        lowest = self.lowest()
        width = max(8, *(len(label) for label in self.results))
        rows = [f"{'run':<{width}}  {'suggested':>9}  {'loss falls over LRs':<19}  {'lowest loss':<22}  stopped",]
        for label, r in self.results.items():
            lr = f"{r.suggested_lr:.3g}" if r.suggested_lr is not None else "none"
            fr = f"{r.falling_range[0]:.2g} to {r.falling_range[1]:.2g}" if r.falling_range else "-"
            low = f"{lowest[label][0]:.4g} at LR {lowest[label][1]:.2g}" if lowest[label] else "-"
            rows.append(f"{label:<{width}}  {lr:>9}  {fr:<19}  {low:<22}  {r.stop_reason}")
        reached = {k: v for k, v in lowest.items() if v is not None}
        if len(reached) > 1:
            best = min(reached, key=lambda k: reached[k][0])
            rows.append(f"lowest loss: {best} ({reached[best][0]:.4g} at LR {reached[best][1]:.2g})")
        falling = {k: r.falling_range[1] for k, r in self.results.items() if r.falling_range}
        if len(falling) > 1:
            far = max(falling, key=falling.get)
            rows.append(f"loss keeps falling to the highest LR: {far} (up to {falling[far]:.2g})")
        differ = self.differences()
        if differ:
            rows.append("they differ in: " + "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in differ.items()))
        if "num_iter" in differ:
            rows.append("note: the runs swept at different paces (num_iter); a slower sweep takes more steps to "
                        "each LR and reaches a lower loss for that alone: sweep them at one pace")
        kinds = {bool(r.config.get("validation_loss")) for r in self.results.values()}
        if len(kinds) > 1:
            rows.append("note: some sweeps recorded the validation loss, the others the training loss; their levels "
                        "do not compare")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        parts = ", ".join(f"{k} {r.suggested_lr:.3g}" if r.suggested_lr is not None else f"{k} none"
                          for k, r in self.results.items())
        return f"<Comparison of {len(self.results)} range tests: suggested {parts}; .table() and .plot() say more>"

    def plot(self, ax=None, *, path: str | Path | None = None, title: str | None = None):
        """Every sweep's smoothed loss against the LR, its suggestion marked; written to ``path``
        (``plot("sweeps.png")`` does the same)."""
        differ = self.differences()
        title = title or (f"{len(self.results)} range tests differing in {', '.join(differ)} (dots: suggested LRs)"
                          if differ else None)
        return plot_comparison(self.results, ax, path=path, title=title)

    def _repr_png_(self) -> bytes:
        """The plot, for Jupyter: a comparison left as a cell's value is drawn."""
        return png(lambda ax: self.plot(ax))


def compare(results: Mapping[str, RangeTestResult | str | Path] | Sequence[RangeTestResult | str | Path]) -> Comparison:
    """Range tests side by side, to choose what the sweeps differed in (optimizer, batch size,
    weight decay, model): ``compare({"wd 0": r0, "wd 1e-4": r1}).plot(path="wd.png")``.

    Each item is a ``RangeTestResult``, a JSON or CSV file that one wrote, or the ``--out`` folder
    of an ``lrfind range-test`` run; labels are the mapping's keys, else the folders' or files'
    names. The table says what each sweep suggests, where its loss falls, how low it got, and
    which sweep reached the lowest loss and which kept falling to the highest LR: Smith's two
    signs of the better setting, of which the first was the better guide on LeNet (see the
    module's note). Compare losses of one kind (training losses of one data set) swept at one pace.
    """
    if isinstance(results, Mapping):
        labelled = [(str(k), v) for k, v in results.items()]
    elif isinstance(results, Sequence) and not isinstance(results, (str, bytes)):
        labelled = [(_label(item, i + 1), item) for i, item in enumerate(results)]
    else:
        raise TypeError(f"compare takes a dict of label -> result or a list of results, got {type(results).__name__}")
    if len(labelled) < 2:
        raise ValueError(f"compare needs two or more range tests, got {len(labelled)}")
    labels = [label for label, _ in labelled]
    if len(set(labels)) < len(labels):
        labels = [str(item) if isinstance(item, (str, Path)) else f"run {i + 1}"
                  for i, (_, item) in enumerate(labelled)]
    return Comparison({label: _load(item) for label, (_, item) in zip(labels, labelled)})
