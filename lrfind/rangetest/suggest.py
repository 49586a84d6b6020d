"""Suggesting a learning rate from a range-test curve: pure functions of ``(lrs, losses)``.

Every method takes the raw per-batch losses (NaN/Inf allowed; they are ignored) and returns a
``Suggestion``: the LR, or ``None`` with the reason when the curve gives no clear answer: too few
finite losses, a loss that does not fall clearly (against the batches' noise, and against how far
it swings above its start on the way to its minimum), or an LR where the smoothed loss lies clearly
above where the sweep started (a spike).

All methods work on ``smooth()``, a centred Gaussian average in step index. Unlike the
exponential moving average the peers use, it does not lag: an EMA shifts the curve towards higher
LRs by about ``1/(1-beta)`` steps, which is why their steepest-slope pick sits at the cliff's edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from lrfind._args import unknown


MIN_LOSSES = 10          # finite losses a curve needs (before any NaN/Inf) for a suggestion


@dataclass(frozen=True)
class Suggestion:
    """A suggested LR (``None`` when the curve gives no clear answer), its index and why."""

    lr: float | None
    index: int | None
    reason: str


def smooth(losses: np.ndarray, width: float | None = None) -> np.ndarray:
    """Centred Gaussian smoothing (standard deviation ``width`` steps) that skips NaN/Inf.

    The default width is 2% of the curve's length (at least 1.5 steps). Near the ends the kernel is
    cut and renormalised rather than padded, so the ends are not pulled towards made-up values.
    """
    y = np.asarray(losses, dtype=np.float64)
    n = y.size
    if n == 0:
        return y.copy()
    width = _width(n) if width is None else float(width)
    finite = np.isfinite(y)
    kernel = _kernel(width)
    values = np.convolve(np.where(finite, y, 0.0), kernel, mode="same") if n >= kernel.size else None
    if values is None:  # short curve: compute directly
        idx = np.arange(n)
        w = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / width) ** 2) * finite[None, :]
        num, den = w @ np.where(finite, y, 0.0), w.sum(1)
    else:
        num, den = values, np.convolve(finite.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[den < 1e-12] = np.nan
    return out


def _width(n: int) -> float:
    """``smooth``'s default width for a curve of ``n`` steps: 2% of them, at least 1.5."""
    return max(1.5, 0.02 * n)


def _kernel(width: float) -> np.ndarray:
    """``smooth``'s Gaussian weights (standard deviation ``width`` steps), cut at 3 widths."""
    half = int(np.ceil(3 * width))
    return np.exp(-0.5 * (np.arange(-half, half + 1) / width) ** 2)


def _start_steps(n: int) -> int:
    """How many of ``n`` steps set the start level: the first 5% (at least 3)."""
    return max(3, n // 20)


def start_level(smoothed: np.ndarray) -> float:
    """Where the smoothed loss starts: its mean over the first 5% of the steps (at least 3)."""
    return float(np.nanmean(smoothed[: _start_steps(smoothed.size)]))


def _noise(raw: np.ndarray, smoothed: np.ndarray) -> float:
    """Robust standard deviation of the losses around their smoothed curve (1.4826 x median |deviation|)."""
    return 1.4826 * float(np.nanmedian(np.abs(raw - smoothed)))


def _smoothed_noise(raw: np.ndarray, smoothed: np.ndarray) -> float:
    """The standard deviation of one point of the smoothed curve that the losses' noise (``_noise``)
    leaves: the noise times the root of the sum of the squared (normalised) kernel weights, about
    0.4 of it for 100 steps and 0.27 for 200."""
    kernel = _kernel(_width(raw.size))
    return _noise(raw, smoothed) * float(np.sqrt(np.sum(kernel ** 2)) / np.sum(kernel))


def _swing(smoothed: np.ndarray, low: int, start: float) -> tuple[float, int]:
    """How far the smoothed loss climbs above its start level on the way to its minimum (index
    ``low``), after the first 5% of the steps that set that level; and where (0 and ``low`` when
    it never does)."""
    first = _start_steps(smoothed.size)
    if low <= first:
        return 0.0, low
    top = first + int(np.nanargmax(smoothed[first:low]))
    return max(0.0, float(smoothed[top]) - start), top


def _not_finite(value: float) -> str:
    return "NaN" if np.isnan(value) else f"{'+' if value > 0 else '-'}Inf"


def _too_few(lrs: np.ndarray, losses: np.ndarray, cut: int | None) -> str:
    """Why fewer than ``MIN_LOSSES`` finite losses give no suggestion, and what to do: ``cut``
    is the step of the first NaN/Inf (None: the sweep was that short). A loss that is NaN/Inf
    from the first step is not the sweep's doing: its LRs have barely moved the weights, if at all."""
    if cut is None:
        return f"only {losses.size} finite losses; run more iterations (num_iter {MIN_LOSSES} or more)"
    value = _not_finite(float(losses[cut]))
    if cut == 0:
        return (f"no finite loss: the loss was {value} from the first step on (LR {lrs[0]:.3g}), before the "
                f"sweep's LRs could matter, so more iterations cannot help. It comes from the inputs or from the "
                f"model's output at its initial weights: look for NaN/Inf in a batch (torch.isfinite(x).all()), "
                f"then in model(x) and in the loss on it (a bad initialisation, weights loaded with NaN, a loss "
                f"given targets it cannot take: a label out of range, the log of 0)")
    return (f"only {cut} finite losses: the loss became {value} at step {cut + 1} (LR {lrs[cut]:.3g}), and more "
            f"iterations would stop there too. Look for NaN/Inf in the batches (one bad batch is enough) and in "
            f"the model's output; if the loss rose over those {cut} steps, lower start_lr ({lrs[0]:.3g})")


def _prepare(lrs, losses) -> tuple[np.ndarray, np.ndarray, np.ndarray, Suggestion | None]:
    """Common checks; returns (lrs, raw, smoothed, verdict) where verdict is set when unclear."""
    lrs = np.asarray(lrs, dtype=np.float64)
    raw = np.asarray(losses, dtype=np.float64)
    if lrs.shape != raw.shape:
        raise ValueError(f"lrs and losses must have the same length, got {lrs.size} and {raw.size}")
    finite = np.isfinite(raw)
    # Everything after the first non-finite loss belongs to the divergence: leave it out.
    blown, cut = None, None                     # the LR and the step of the first NaN/Inf
    swept, recorded = lrs, raw
    if not finite.all():
        cut = int(np.argmin(finite))
        blown = float(lrs[cut])
        lrs, raw = lrs[:cut], raw[:cut]
    if raw.size < MIN_LOSSES:
        return lrs, raw, smooth(raw), Suggestion(None, None, _too_few(swept, recorded, cut))
    sm = smooth(raw)
    low = int(np.nanargmin(sm))
    start = start_level(sm)
    drop = start - float(sm[low])
    noise = _noise(raw, sm)
    if low <= raw.size // 20:
        return lrs, raw, sm, Suggestion(None, None, "the loss rises from the start: lower start_lr")
    if drop <= max(2.0 * noise, 0.01 * abs(start), 1e-12):
        why = (f"drop {drop:.3g} against noise {noise:.3g}" if 2.0 * noise >= 0.01 * abs(start) else
               f"drop {drop:.3g}, under 1% of the starting loss {start:.3g}")
        rise = _rise(lrs, sm, noise, blown)
        if rise is None:
            return lrs, raw, sm, Suggestion(None, None, f"the loss does not fall clearly ({why}): raise end_lr or "
                                                        "num_iter")
        return lrs, raw, sm, Suggestion(
            None, None, f"the loss does not fall clearly ({why}) before it rises from LR {rise:.3g}: a model that "
                        f"has learned already, say (to train it on, start at about a tenth of that, {rise / 10:.2g}), "
                        f"or a sweep too short to see it learn (raise num_iter)")
    # A curve that wanders (a loss spike, a model memorising a few batches of random labels) may dip
    # below its start by more than the batches' noise: its swings above the start tell how far it
    # wanders, and a fall is clear only when it goes twice as far.
    swing, top = _swing(sm, low, start)
    if drop <= 2.0 * swing:
        return lrs, raw, sm, Suggestion(
            None, None, f"the loss does not fall clearly: its smoothed minimum, {sm[low]:.3g} at LR {lrs[low]:.3g}, "
                        f"lies {drop:.3g} below where it started ({start:.3g}), but on the way it climbed {swing:.3g} "
                        f"above that, to {sm[top]:.3g} at LR {lrs[top]:.3g}: it swings about as far as it falls. A "
                        f"model that cannot learn from its batches sweeps so (labels unrelated to the inputs, say): "
                        f"check the data, or sweep again with more steps (num_iter) or repeats to see whether the "
                        f"fall holds")
    return lrs, raw, sm, None


def _held(lrs: np.ndarray, raw: np.ndarray, sm: np.ndarray, found: Suggestion) -> Suggestion:
    """``found``, or no suggestion where its LR sits clearly above where the sweep started: past the
    steps that set the start level, its smoothed loss above that level by more than twice the
    smoothed curve's noise and more than a tenth of the curve's fall (a curve that falls far may
    wander that little above its start on the flat before it). The loss rose at that LR (a spike),
    so it is no LR to train at, whatever the minimum beyond it says."""
    if found.lr is None or found.index < _start_steps(sm.size):
        return found
    start, noise = start_level(sm), _smoothed_noise(raw, sm)
    low = int(np.nanargmin(sm))
    level = float(sm[found.index])
    if level <= start + max(2.0 * noise, 0.1 * (start - float(sm[low]))):
        return found
    return Suggestion(None, None, f"its LR, {found.lr:.3g}, sits on a rise of the loss: the smoothed loss there, "
                                  f"{level:.3g}, is above where the sweep started ({start:.3g}; the smoothed "
                                  f"curve's noise is {noise:.2g}), on the way to its minimum at LR {lrs[low]:.3g}. "
                                  f"Sweep again with more steps (num_iter) or repeats to see whether the fall holds")


def _rise(lrs: np.ndarray, smoothed: np.ndarray, noise: float, blown: float | None) -> float | None:
    """Where a loss that never fell clearly rises: the first LR whose smoothed loss is 3 noise
    widths above its lowest so far (or the first NaN/Inf); None if it stays flat to the end.

    A model trained already (fine-tuning) sweeps so: flat, then up. On a LeNet trained for one
    epoch, a tenth of this LR (SGD 0.012, Adam 0.0017) trained a further epoch as well as the best
    of a grid (SGD: 98.10% at 0.01 against 98.19% at 0.003; Adam: 98.26% at 0.001, 98.15% at
    0.003), where a tenth of the divergence stop (0.022, 0.0086) was too high for Adam (97.7%;
    ``experiments/rise_quality.py``)."""
    best = np.minimum.accumulate(smoothed)
    above = np.flatnonzero(smoothed > best + 3.0 * max(noise, 1e-12))
    if above.size:
        return float(lrs[above[0]])
    return blown


def fall(losses) -> float | None:
    """How far the smoothed loss falls: its mean over the first 5% of the steps less its minimum
    (before any NaN/Inf). ``None`` where no method would suggest an LR: fewer than 10 finite
    losses, a loss that rises from the start, or one that does not fall clearly above its noise
    or further than it swings above its start.

    Sweeps of one setup that differ only in their seed fall about as far; one that falls much less
    broke down before it could learn (a loss spike where the LR climbs fastest), and its minimum
    then marks that breakdown, not the cliff (``result.shallow_sweeps``).
    """
    raw = np.asarray(losses, dtype=np.float64)
    _, raw, sm, verdict = _prepare(np.arange(1.0, raw.size + 1), raw)     # the step index stands in for the LR
    if verdict is not None:
        return None
    return start_level(sm) - float(np.nanmin(sm))


def _descent_region(sm: np.ndarray) -> tuple[int, int]:
    """Indices ``[lo, hi]`` of the falling part: from where the smoothed loss starts to fall to its minimum."""
    hi = int(np.nanargmin(sm))
    start = start_level(sm)
    threshold = start - 0.05 * (start - sm[hi])
    below = np.nonzero(sm[: hi + 1] < threshold)[0]
    lo = int(below[0]) if below.size else 0
    return lo, hi


def rise_not_reached(lrs, losses) -> bool:
    """Whether the sweep ended before the loss turned up: the smoothed minimum lies in the last 5% of
    the steps, the curve does not rise after it, and it does not break off in NaN/Inf (that is a
    cliff). Where the loss stops falling then lies at or beyond the last LR, unmeasured."""
    lrs, raw, sm, verdict = _prepare(lrs, losses)
    if verdict is not None or raw.size < np.asarray(losses).size:
        return False
    n = sm.size
    low = int(np.nanargmin(sm))
    return low >= n - max(3, n // 20) and float(sm[-1] - sm[low]) <= max(2.0 * _noise(raw, sm), 1e-12)


def caveats(lrs, losses) -> list[str]:
    """What a reader of the suggestions should know that the LRs alone do not say (empty when nothing)."""
    if not rise_not_reached(lrs, losses):
        return []
    last = float(np.asarray(lrs, dtype=np.float64)[-1])
    return [f"the loss had not turned up by the sweep's last LR ({last:.3g}): where it stops falling lies "
            f"beyond, so smith, balanced and minimum may be too low; raise end_lr (--end-lr) to "
            f"{10 * last:.3g}, say, and run again"]


def falling_range(lrs, losses) -> tuple[float, float] | None:
    """The LR range over which the smoothed loss falls: from the first 5% of the drop to the minimum."""
    lrs, raw, sm, verdict = _prepare(lrs, losses)
    if verdict is not None:
        return None
    lo, hi = _descent_region(sm)
    return float(lrs[lo]), float(lrs[hi])


def steepest(lrs, losses) -> Suggestion:
    """The LR where the smoothed loss falls fastest per unit of log-LR."""
    lrs, raw, sm, verdict = _prepare(lrs, losses)
    if verdict is not None:
        return verdict
    lo, hi = _descent_region(sm)
    grad = np.gradient(sm, np.log(lrs)) if np.all(lrs > 0) else np.gradient(sm)
    i = lo + int(np.nanargmin(grad[lo: hi + 1]))
    return _held(lrs, raw, sm, Suggestion(float(lrs[i]), i, "steepest descent of the smoothed loss in log-LR"))


def _below_minimum(lrs, losses, divisor: float, reason: str) -> Suggestion:
    """The LR at the minimum of the smoothed loss divided by ``divisor``."""
    lrs, raw, sm, verdict = _prepare(lrs, losses)
    if verdict is not None:
        return verdict
    i = int(np.nanargmin(sm))
    target = lrs[i] / divisor
    j = int(np.argmin(np.abs(np.log(lrs) - np.log(target)))) if np.all(lrs > 0) else i
    return _held(lrs, raw, sm, Suggestion(float(target), j, reason))


def minimum(lrs, losses) -> Suggestion:
    """One tenth of the LR at the minimum of the smoothed loss (fastai's ``minimum``)."""
    return _below_minimum(lrs, losses, 10.0, "a tenth of the LR at the smoothed loss's minimum")


def smith(lrs, losses) -> Suggestion:
    """lrfind's default: a third of the LR at the minimum of the smoothed loss, Smith's rule for
    cyclical LRs (the highest usable LR is where the loss stops falling; the base LR a third of it).

    Trained for 3 epochs at a grid of LRs (LeNet and an MLP, SGD and Adam, constant and cosine;
    the README's table) it beat ``balanced`` in 7 of 8 setups, by up to 1.9 pp of validation
    accuracy (``balanced`` is up to 10x lower for the MLP and for Adam); it lost 0.4 pp for LeNet
    with SGD at a constant LR, where it leaves about 3x of margin below the cliff."""
    return _below_minimum(lrs, losses, 3.0, "a third of the LR at the smoothed loss's minimum (Smith's rule)")


def valley(lrs, losses) -> Suggestion:
    """fastai's ``valley``: the longest descending run of the smoothed loss, two thirds of the way down.

    Uses the longest decreasing subsequence of the smoothed curve up to its minimum; the pick lies
    at half of its first third past the start, where the loss is still falling steadily but far
    from the cliff.
    """
    lrs, raw, sm, verdict = _prepare(lrs, losses)
    if verdict is not None:
        return verdict
    hi = int(np.nanargmin(sm))
    y = sm[: hi + 1]
    n = y.size
    lds = np.ones(n, dtype=np.int64)       # length of the longest decreasing run ending at i
    for i in range(1, n):
        earlier = y[:i] > y[i]
        if earlier.any():
            lds[i] = lds[:i][earlier].max() + 1
    end = int(np.argmax(lds))
    start = end - int(lds[end]) + 1
    third = (end - start) / 3
    i = start + int(third) + int(third / 2)
    return _held(lrs, raw, sm, Suggestion(float(lrs[i]), i, "in the longest valley of the smoothed loss"))


def balanced(lrs, losses) -> Suggestion:
    """The geometric mean of ``steepest`` and ``minimum`` (lrfind's default before ``smith``).

    ``steepest`` (lag-free) sits inside the descent, sometimes near the cliff's upper edge;
    ``minimum`` (a tenth of the LR at the lowest loss) is a safe margin below the cliff. Their
    geometric mean is the best LR for LeNet with SGD, and safe but low for the MLP and for Adam.
    """
    a, b = steepest(lrs, losses), minimum(lrs, losses)
    if a.lr is None or b.lr is None:
        return a if a.lr is None else b
    lr = float(np.sqrt(a.lr * b.lr))
    lrs, raw, sm, _ = _prepare(lrs, losses)
    grid = lrs[: max(a.index, b.index) + 1]
    i = int(np.argmin(np.abs(np.log(grid) - np.log(lr)))) if np.all(grid > 0) else a.index
    return _held(lrs, raw, sm, Suggestion(lr, i, "geometric mean of the steepest-descent and minimum/10 suggestions"))


METHODS: dict[str, Callable[[np.ndarray, np.ndarray], Suggestion]] = {
    "smith": smith,
    "balanced": balanced,
    "steepest": steepest,
    "valley": valley,
    "minimum": minimum,
}
DEFAULT_METHOD = "smith"


def suggest_all(lrs, losses) -> dict[str, Suggestion]:
    """Every method's suggestion, keyed by method name."""
    return {name: fn(lrs, losses) for name, fn in METHODS.items()}


def get_method(name: str) -> Callable[[np.ndarray, np.ndarray], Suggestion]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(unknown("suggestion method", name, METHODS)) from None
