"""Suggestions on synthetic curves whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from lrfind.rangetest.suggest import (METHODS, caveats, fall, falling_range, minimum, rise_not_reached, smith,
    smooth, start_level, steepest, suggest_all)

LRS = np.geomspace(1e-6, 1.0, 300)


def clean_curve(inflection: float = 1e-2, floor_lr: float = 0.2) -> np.ndarray:
    """Loss 2.3 falling as a logistic in log10(lr) centred on ``inflection``, blowing up past ``floor_lr``."""
    x = np.log10(LRS)
    fall = 2.0 / (1 + np.exp(-(x - np.log10(inflection)) * 4))
    blow = np.where(LRS > floor_lr, 30 * (np.log10(LRS / floor_lr)) ** 2, 0.0)
    return 2.3 - fall + blow


def test_steepest_finds_the_inflection_of_a_clean_curve() -> None:
    s = steepest(LRS, clean_curve(1e-2))
    assert s.lr == pytest.approx(1e-2, rel=0.15)


def test_steepest_moves_with_the_curve() -> None:
    assert steepest(LRS, clean_curve(1e-4, floor_lr=0.01)).lr == pytest.approx(1e-4, rel=0.15)


def test_minimum_is_a_tenth_and_smith_a_third_of_the_lowest_smoothed_point() -> None:
    losses = clean_curve(1e-2)
    lowest = LRS[np.nanargmin(smooth(losses))]
    assert minimum(LRS, losses).lr == pytest.approx(lowest / 10)
    found = smith(LRS, losses)
    assert found.lr == pytest.approx(lowest / 3) and LRS[found.index] == pytest.approx(lowest / 3, rel=0.03)


def test_noisy_curve_keeps_the_suggestion_close() -> None:
    rng = np.random.default_rng(0)
    noisy = clean_curve(1e-2) + rng.normal(0, 0.08, LRS.size)
    assert steepest(LRS, noisy).lr == pytest.approx(1e-2, rel=0.5)
    assert all(s.lr is not None for s in suggest_all(LRS, noisy).values())


def test_balanced_is_the_geometric_mean_of_minimum_and_steepest() -> None:
    found = suggest_all(LRS, clean_curve(1e-2))
    assert found["balanced"].lr == pytest.approx(np.sqrt(found["minimum"].lr * found["steepest"].lr))


def test_flat_curve_gives_none_with_a_reason() -> None:
    rng = np.random.default_rng(1)
    flat = 2.3 + rng.normal(0, 0.05, LRS.size)
    for name, s in suggest_all(LRS, flat).items():
        assert s.lr is None, name
        assert "does not fall" in s.reason or "rises" in s.reason


def test_a_smooth_fall_too_small_to_matter_says_which_bound_it_missed() -> None:
    """Under 1% of the starting loss: no LR, and the reason names that bound, not the tiny noise."""
    shallow = 2.3 - 0.005 * (2.3 - clean_curve(1e-2, floor_lr=2.0))      # falls 0.01, no noise
    reason = smith(LRS, shallow).reason
    assert smith(LRS, shallow).lr is None and "under 1% of the starting loss" in reason, reason
    rng = np.random.default_rng(1)
    reason = smith(LRS, 2.3 + rng.normal(0, 0.05, LRS.size)).reason
    assert "against noise" in reason, reason


def test_a_flat_curve_that_then_rises_says_where_and_what_to_start_at() -> None:
    """A model trained already sweeps flat, then up: no suggestion, but the LR where it rises."""
    rng = np.random.default_rng(2)
    flat_then_up = 0.08 + rng.normal(0, 0.03, LRS.size) + np.where(LRS > 0.05, 3 * np.log10(LRS / 0.05) ** 2, 0.0)
    found = smith(LRS, flat_then_up)
    assert found.lr is None and "before it rises from LR" in found.reason and "a tenth of that" in found.reason
    rise = float(found.reason.split("rises from LR ")[1].split(":")[0])
    assert 0.05 < rise < 0.3
    blown = 0.08 + rng.normal(0, 0.03, LRS.size)                       # flat, then NaN
    blown[250:] = np.nan
    assert f"rises from LR {LRS[250]:.3g}" in smith(LRS, blown).reason
    assert "raise end_lr or num_iter" in smith(LRS, 0.08 + rng.normal(0, 0.03, LRS.size)).reason   # flat to the end


def test_curve_that_diverges_from_the_start_gives_none() -> None:
    rising = np.linspace(1.0, 50.0, LRS.size)
    s = steepest(LRS, rising)
    assert s.lr is None and "rises from the start" in s.reason


def test_nan_tail_is_ignored() -> None:
    losses = clean_curve(1e-2)
    losses[250:] = np.nan
    with_nan = steepest(LRS, losses)
    assert with_nan.lr == pytest.approx(1e-2, rel=0.15)


def test_all_nan_gives_none() -> None:
    s = steepest(LRS, np.full(LRS.size, np.nan))
    assert s.lr is None and "finite" in s.reason


def test_negative_losses_give_the_same_suggestion() -> None:
    losses = clean_curve(1e-2)
    for name in METHODS:
        assert METHODS[name](LRS, losses - 10.0).lr == pytest.approx(METHODS[name](LRS, losses).lr), name


def test_smooth_does_not_lag() -> None:
    # A ramp through zero: a centred smoother keeps it in place, an EMA would shift it right.
    ramp = np.linspace(-1, 1, 201)
    assert smooth(ramp)[100] == pytest.approx(0.0, abs=1e-9)


def test_falling_range_brackets_the_descent() -> None:
    lo, hi = falling_range(LRS, clean_curve(1e-2))
    assert lo < 1e-2 < hi <= 0.3


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        steepest(LRS, np.ones(5))


def test_a_curve_that_has_not_turned_up_by_the_last_lr_gets_a_caveat() -> None:
    rng = np.random.default_rng(2)
    for falling in (clean_curve(0.3, floor_lr=10.0), clean_curve(0.3, floor_lr=10.0) + rng.normal(0, 0.05, LRS.size)):
        assert rise_not_reached(LRS, falling)
        (text,) = caveats(LRS, falling)
        assert "had not turned up by the sweep's last LR (1)" in text and "end_lr" in text and "to 10" in text


def _cliff_in_the_last_steps() -> np.ndarray:
    losses = clean_curve(0.1, floor_lr=10.0)
    losses[-8:] += np.linspace(0.5, 4.0, 8)       # the divergence stop's last few steps
    return losses


def _nan_after_the_fall() -> np.ndarray:
    losses = clean_curve(0.3, floor_lr=10.0)
    losses[-5:] = np.nan                          # falling, then blown up: that is the cliff
    return losses


@pytest.mark.parametrize("losses", [clean_curve(1e-2), _cliff_in_the_last_steps(), _nan_after_the_fall(),
                                    2.3 + np.random.default_rng(1).normal(0, 0.05, LRS.size)],
                         ids=["cliff", "rise in the last steps", "nan after the fall", "flat"])
def test_a_curve_that_turns_up_or_gives_no_answer_gets_no_caveat(losses) -> None:
    assert not rise_not_reached(LRS, losses) and caveats(LRS, losses) == []


def spiky_curve(seed: int = 0, noise: float = 0.1, spike: float = 0.14, dip: float = 0.5) -> np.ndarray:
    """A sweep of a small CNN on a fixed set of random images with random labels, as users saw it:
    the loss wanders about 3.5, rises to a spike at LR 0.063, dips at 0.19 and blows up past 0.25.
    The dip is the curve's minimum, and a third of its LR lands on the spike."""
    x = np.log10(LRS)
    bump = lambda at, height, width: height * np.exp(-0.5 * ((x - np.log10(at)) / width) ** 2)  # noqa: E731
    rng = np.random.default_rng(seed)
    return (3.5 + rng.normal(0, noise, LRS.size) + bump(0.063, spike, 0.12) - bump(0.19, dip, 0.1)
            + np.where(LRS > 0.25, 15 * np.log10(LRS / 0.25) ** 2, 0.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_suggestion_on_a_spike_above_the_start_is_none_and_says_why(seed) -> None:
    """Smith's LR, a third of the minimum's (0.19), sat on the spike, where the smoothed loss is
    above where the sweep started: it was suggested (0.063) with no word of it."""
    losses = spiky_curve(seed)
    sm = smooth(losses)
    found = smith(LRS, losses)
    assert found.lr is None, found
    assert "sits on a rise of the loss" in found.reason and "above where the sweep started" in found.reason
    level = float(found.reason.split("the smoothed loss there, ")[1].split(",")[0])
    assert level > start_level(sm) > float(np.nanmin(sm)) + 0.2              # the spike, above a clear fall
    assert steepest(LRS, losses).lr is not None          # the fall after the spike still has its steepest point


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_curve_that_swings_above_its_start_about_as_far_as_it_falls_gives_none(seed) -> None:
    """Less noise, a shallower dip: the smoothed minimum lies below the start by more than twice the
    batches' noise (it was suggested, 0.063 or 0.059), but the spike before it rose above the start
    more than half as far. Every method says so, and no falling range is claimed."""
    losses = spiky_curve(seed, noise=0.05, spike=0.15, dip=0.25)
    for name, found in suggest_all(LRS, losses).items():
        assert found.lr is None and "swings about as far as it falls" in found.reason, (name, found)
    assert falling_range(LRS, losses) is None and fall(losses) is None
    reason = smith(LRS, losses).reason
    assert "at LR 0.0" in reason and "check the data" in reason and "repeats" in reason, reason


def test_a_loss_that_is_nan_from_the_first_step_names_the_likely_causes() -> None:
    """More iterations cannot help a loss that was NaN before the LR could matter: the reason says
    where to look instead (and what the loss was)."""
    for value, said in ((np.nan, "NaN"), (np.inf, "+Inf")):
        losses = np.full(LRS.size, value)
        for name, found in suggest_all(LRS, losses).items():
            assert found.lr is None and "run more iterations" not in found.reason, (name, found.reason)
            assert f"the loss was {said} from the first step on (LR 1e-06)" in found.reason, found.reason
            assert "more iterations cannot help" in found.reason and "inputs" in found.reason
            assert "initial weights" in found.reason and "targets" in found.reason


def test_a_loss_that_turns_nan_after_a_few_steps_says_where_and_what_to_check() -> None:
    losses = clean_curve(1e-2)
    losses[4:] = np.nan
    reason = smith(LRS, losses).reason
    assert reason.startswith(f"only 4 finite losses: the loss became NaN at step 5 (LR {LRS[4]:.3g})"), reason
    assert "run more iterations" not in reason and "batches" in reason and "start_lr" in reason
    assert "run more iterations" in smith(LRS[:6], clean_curve(1e-2)[:6]).reason      # a sweep that short: yes
