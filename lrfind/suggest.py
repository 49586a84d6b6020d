"""Suggesting a learning rate from a range-test curve: pure functions of ``(lrs, losses)``.

Every method takes the raw per-batch losses (NaN/Inf allowed; they are ignored) and returns a
``Suggestion``: the LR, or ``None`` with the reason when the curve gives no clear answer.

All methods work on ``smooth()``, a centred Gaussian average in step index. Unlike the
exponential moving average the peers use, it does not lag: an EMA shifts the curve towards higher
LRs by about ``1/(1-beta)`` steps, which is why their steepest-slope pick sits at the cliff's edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._args import unknown


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
    width = max(1.5, 0.02 * n) if width is None else float(width)
    finite = np.isfinite(y)
    half = int(np.ceil(3 * width))
    offsets = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (offsets / width) ** 2)
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


def start_level(smoothed: np.ndarray) -> float:
    """Where the smoothed loss starts: its mean over the first 5% of the steps (at least 3)."""
    return float(np.nanmean(smoothed[: max(3, smoothed.size // 20)]))


def _noise(raw: np.ndarray, smoothed: np.ndarray) -> float:
    """Robust standard deviation of the losses around their smoothed curve (1.4826 x median |deviation|)."""
    return 1.4826 * float(np.nanmedian(np.abs(raw - smoothed)))


def _prepare(lrs, losses) -> tuple[np.ndarray, np.ndarray, np.ndarray, Suggestion | None]:
    """Common checks; returns (lrs, raw, smoothed, verdict) where verdict is set when unclear."""
    lrs = np.asarray(lrs, dtype=np.float64)
    raw = np.asarray(losses, dtype=np.float64)
    if lrs.shape != raw.shape:
        raise ValueError(f"lrs and losses must have the same length, got {lrs.size} and {raw.size}")
    finite = np.isfinite(raw)
    # Everything after the first non-finite loss belongs to the divergence: leave it out.
    blown = None                                # the LR of the first NaN/Inf
    if not finite.all():
        cut = int(np.argmin(finite))
        blown = float(lrs[cut])
        lrs, raw = lrs[:cut], raw[:cut]
    if raw.size < 10:
        return lrs, raw, smooth(raw), Suggestion(None, None, f"only {raw.size} finite losses; run more iterations")
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
    return lrs, raw, sm, None


def _rise(lrs: np.ndarray, smoothed: np.ndarray, noise: float, blown: float | None) -> float | None:
    """Where a loss that never fell clearly rises: the first LR whose smoothed loss is 3 noise
    widths above its lowest so far (or the first NaN/Inf); None if it stays flat to the end.

    A model trained already (fine-tuning) sweeps so: flat, then up. On a LeNet trained for one
    epoch, a tenth of this LR (SGD 0.012, Adam 0.0017) trained a further epoch as well as the best
    of a grid (SGD: 98.10% at 0.01 against 98.19% at 0.003; Adam: 98.26% at 0.001, 98.15% at
    0.003), where a tenth of the divergence stop (0.022, 0.0086) was too high for Adam (97.7%;
    ``bench/rise_quality.py``)."""
    best = np.minimum.accumulate(smoothed)
    above = np.flatnonzero(smoothed > best + 3.0 * max(noise, 1e-12))
    if above.size:
        return float(lrs[above[0]])
    return blown


def fall(losses) -> float | None:
    """How far the smoothed loss falls: its mean over the first 5% of the steps less its minimum
    (before any NaN/Inf). ``None`` where no method would suggest an LR: fewer than 10 finite
    losses, a loss that rises from the start or does not fall clearly above its noise.

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
    return Suggestion(float(lrs[i]), i, "steepest descent of the smoothed loss in log-LR")


def _below_minimum(lrs, losses, divisor: float, reason: str) -> Suggestion:
    """The LR at the minimum of the smoothed loss divided by ``divisor``."""
    lrs, raw, sm, verdict = _prepare(lrs, losses)
    if verdict is not None:
        return verdict
    i = int(np.nanargmin(sm))
    target = lrs[i] / divisor
    j = int(np.argmin(np.abs(np.log(lrs) - np.log(target)))) if np.all(lrs > 0) else i
    return Suggestion(float(target), j, reason)


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
    return Suggestion(float(lrs[i]), i, "in the longest valley of the smoothed loss")


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
    grid = np.asarray(lrs, dtype=np.float64)[: max(a.index, b.index) + 1]
    i = int(np.argmin(np.abs(np.log(grid) - np.log(lr)))) if np.all(grid > 0) else a.index
    return Suggestion(lr, i, "geometric mean of the steepest-descent and minimum/10 suggestions")


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
