"""Every registered schedule: its pure factor equals torch's scheduler step by step."""

from __future__ import annotations

import re

import numpy as np
import optuna
import pytest
import torch

from lrfind import SCHEDULES, get_schedule

BASE_LR = 0.05
TOTAL, PER_EPOCH = 300, 100     # three "epochs" of 100 steps


def torch_lrs(name: str, params: dict, total: int, metrics=None, groups: int = 1) -> np.ndarray:
    """The LR of every optimizer step under torch's scheduler from ``build``; shape (total, groups)."""
    schedule = get_schedule(name)
    ps = [torch.nn.Parameter(torch.zeros(1)) for _ in range(groups)]
    opt = torch.optim.SGD([{"params": [p], "lr": BASE_LR / (i + 1)} for i, p in enumerate(ps)], lr=BASE_LR,
                          momentum=0.9)
    return run_scheduler(schedule, opt, schedule.build(opt, total, **params), params, total, metrics)


def run_scheduler(schedule, opt, sched, params: dict, total: int, metrics) -> np.ndarray:
    """Step ``sched`` as a training loop would (metric-driven ones once per interval); LRs per step."""
    out = []
    for step in range(total):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        if not schedule.needs_metric:
            sched.step()
        elif (step + 1) % params["interval"] == 0:
            sched.step(metrics[(step + 1) // params["interval"] - 1])
    return np.array(out)


def sampled_params(name: str, seed: int, total: int = TOTAL, per_epoch: int = PER_EPOCH) -> dict:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return get_schedule(name).suggest(study.ask(), total, per_epoch)


def metric_history(n: int, seed: int) -> list[float]:
    """A validation loss that improves, then stalls and wobbles, so that plateau reductions happen."""
    rng = np.random.default_rng(seed)
    return list(np.maximum(1.0 / (1 + np.arange(n)), 0.4) + rng.uniform(0, 0.02, n))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_factor_matches_torch_scheduler(name: str, seed: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = sampled_params(name, seed)
    metrics = metric_history(TOTAL, seed)
    if get_schedule(name).needs_metric:   # short reports so that several reductions happen
        params["interval"] = 10
    expected = BASE_LR * get_schedule(name).factor(np.arange(TOTAL), TOTAL, metrics=metrics, **params)
    got = torch_lrs(name, params, TOTAL, metrics)[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12 * BASE_LR, err_msg=f"{name} {params}")


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_example_parameters_match_torch_with_two_groups(name: str) -> None:
    schedule = get_schedule(name)
    params = schedule.example(TOTAL, PER_EPOCH)
    metrics = metric_history(TOTAL, 0)
    factor = schedule.factor(np.arange(TOTAL), TOTAL, metrics=metrics, **params)
    got = torch_lrs(name, params, TOTAL, metrics, groups=2)
    np.testing.assert_allclose(got[:, 0], BASE_LR * factor, rtol=1e-6, atol=1e-12)
    if name not in ("cosine", "cosine_restarts", "plateau", "cyclic"):   # absolute floors follow group 0
        np.testing.assert_allclose(got[:, 1], BASE_LR / 2 * factor, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", sorted(n for n, s in SCHEDULES.items() if s.warmup_allowed))
def test_warmup_in_front_of_any_entry(name: str) -> None:
    schedule = get_schedule(name)
    params = {**schedule.example(TOTAL, PER_EPOCH), "warmup": 30, "warmup_start": 0.2}
    factor = schedule.factor(np.arange(TOTAL), TOTAL, **params)
    assert factor[0] == pytest.approx(0.2) and factor[30] == pytest.approx(schedule.factor([0], TOTAL - 30,
                                                                           **schedule.example(TOTAL, PER_EPOCH))[0])
    np.testing.assert_allclose(torch_lrs(name, params, TOTAL)[:, 0], BASE_LR * factor, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_snippet_recreates_the_scheduler(name: str) -> None:
    schedule = get_schedule(name)
    params = sampled_params(name, 1)
    code = schedule.snippet(BASE_LR, TOTAL, steps_per_epoch=PER_EPOCH, **params)
    scope = {"model": torch.nn.Linear(2, 1)}
    exec(code, scope)
    metrics = metric_history(TOTAL, 1)
    lrs = run_scheduler(schedule, scope["optimizer"], scope["scheduler"], params, TOTAL, metrics)[:, 0]
    # literals carry 12 significant digits; gamma**300 turns that into about 1e-10
    np.testing.assert_allclose(lrs, torch_lrs(name, params, TOTAL, metrics)[:, 0], rtol=1e-9)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("min_factor", [0.0, 0.02])
def test_wsd_snippet_recreates_every_shape_with_and_without_a_floor(shape: str, min_factor: float) -> None:
    """wsd's snippet writes its own arithmetic (torch has no class for it), so each of its forms is checked."""
    params = {"decay_steps": 90, "decay_shape": shape, "min_factor": min_factor, "warmup": 20}
    code = get_schedule("wsd").snippet(BASE_LR, TOTAL, **params)
    scope = {"model": torch.nn.Linear(2, 1)}
    exec(code, scope)
    lrs = run_scheduler(get_schedule("wsd"), scope["optimizer"], scope["scheduler"], params, TOTAL, None)[:, 0]
    factor = get_schedule("wsd").factor(np.arange(TOTAL), TOTAL, **params)
    np.testing.assert_allclose(lrs, BASE_LR * factor, rtol=1e-9, atol=1e-15)
    assert np.all(factor[20:TOTAL - 90] == 1.0)                 # held at the base LR until the decay
    assert min_factor < factor[-1] < min_factor + 0.02 and np.all(np.diff(factor[TOTAL - 90:]) < 0)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_factor_accepts_torch_tensors(name: str) -> None:
    schedule = get_schedule(name)
    params = schedule.example(TOTAL, PER_EPOCH)
    steps = torch.arange(TOTAL)
    out = schedule.factor(steps, TOTAL, metrics=metric_history(TOTAL, 0), **params)
    assert isinstance(out, torch.Tensor) and out.shape == (TOTAL,) and out.dtype == torch.float64
    np.testing.assert_array_equal(out.numpy(), schedule.factor(np.arange(TOTAL), TOTAL,
                                                               metrics=metric_history(TOTAL, 0), **params))


def test_factor_in_torch_is_float32_on_a_device_without_float64(without_float64) -> None:
    out = get_schedule("cosine").factor(torch.arange(TOTAL), TOTAL)
    assert out.dtype == torch.float32 and out[0] == 1.0


def test_every_entry_has_a_description_and_documented_params() -> None:
    for name, schedule in SCHEDULES.items():
        assert schedule.description and schedule.torch_name, name
        assert all(p.doc for p in schedule.all_params), name


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="choose from constant, step"):
        get_schedule("cosinus")


@pytest.mark.parametrize("name, meant", [
    ("cosinus", "cosine"), ("CosineAnnealingLR", "cosine"), ("ReduceLROnPlateau", "plateau"), ("one-cycle", "onecycle"),
    ("MultiplicativeLR", "exponential (a constant factor per step)"), ("SGDR", "cosine_restarts"),
    ("Inverse-Time", "inverse_time"),
])
def test_an_unknown_name_says_which_entry_it_probably_meant(name: str, meant: str) -> None:
    """torch's class names and common spellings lead to the entry; the study stores only these."""
    with pytest.raises(ValueError, match=rf"unknown schedule '{name}' \(did you mean {re.escape(meant)}\?\); choose"):
        get_schedule(name)


@pytest.mark.parametrize("name, params, message", [
    ("step", {"step_size": 10, "gamma": 0.0}, "step: gamma must be in (0, 1), got 0.0"),
    ("step", {"step_size": 10, "gamma": -2}, "gamma must be in (0, 1), got -2"),
    ("step", {"step_size": 0, "gamma": 0.5}, "step_size must be an integer in [1, 300), got 0"),
    ("multistep", {"milestones": [200, 100], "gamma": 0.5}, "milestones must be a non-empty, strictly increasing"),
    ("cosine", {"warmup": 400}, "warmup must be an integer number of steps in [0, 299)"),
    ("warmup", {"warmup": 300}, "warmup must be an integer in [1, 300)"),
    ("exponential", {}, "missing parameter(s) gamma"),
    ("exponential", {"gamma": 0.9, "gama": 1}, "unknown parameter(s) gama; it takes gamma"),
    ("onecycle", {"pct_start": 1.5}, "pct_start must be in (0, 1)"),
    ("cyclic", {"step_size_up": 10, "step_size_down": 10, "mode": "sine"}, "mode must be"),
])
def test_invalid_parameters_name_parameter_and_value(name: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        get_schedule(name).factor(np.arange(10), TOTAL, **params)
    assert message in str(err.value)
    with pytest.raises(ValueError):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        get_schedule(name).build(opt, TOTAL, **params)


CYCLING = sorted(n for n, s in SCHEDULES.items() if "cycle_momentum" in {p.name for p in s.params})


def torch_momenta(name: str, params: dict, optimizer: str) -> np.ndarray:
    """The momentum (Adam's beta1) torch's scheduler from ``build`` sets before every step."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=BASE_LR, momentum=0.5) if optimizer == "sgd" else torch.optim.Adam([p], lr=BASE_LR)
    sched = get_schedule(name).build(opt, TOTAL, **params)
    out = []
    for _ in range(TOTAL):
        group = opt.param_groups[0]
        out.append(group["momentum"] if optimizer == "sgd" else group["betas"][0])
        opt.step()
        sched.step()
    return np.array(out)


def test_one_cycle_and_cyclic_are_the_schedules_that_can_cycle_the_momentum() -> None:
    assert CYCLING == ["cyclic", "onecycle"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", CYCLING)
def test_cycled_momentum_matches_torch_scheduler(name: str, seed: int, optimizer: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params = {**sampled_params(name, seed), "cycle_momentum": True, "base_momentum": 0.8 - 0.05 * seed}
    expected = get_schedule(name).momentum(np.arange(TOTAL), TOTAL, **params)
    np.testing.assert_allclose(torch_momenta(name, params, optimizer), expected, rtol=1e-12, err_msg=str(params))
    assert expected.min() >= params["base_momentum"] - 1e-12 and expected.max() <= 0.95


@pytest.mark.parametrize("name", CYCLING)
def test_momentum_not_cycled_is_none_and_left_to_the_optimizer(name: str) -> None:
    params = sampled_params(name, 0) | {"cycle_momentum": False}
    assert get_schedule(name).momentum(np.arange(TOTAL), TOTAL, **params) is None
    assert np.all(torch_momenta(name, params, "sgd") == 0.5)
    assert get_schedule("cosine").momentum(np.arange(TOTAL), TOTAL) is None


def test_the_search_space_tries_both_ways() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assert {sampled_params("onecycle", s)["cycle_momentum"] for s in range(12)} == {False, True}


@pytest.mark.parametrize("name", CYCLING)
def test_snippet_recreates_the_cycled_momentum(name: str) -> None:
    params = {**sampled_params(name, 2), "cycle_momentum": True}
    code = get_schedule(name).snippet(BASE_LR, TOTAL, steps_per_epoch=PER_EPOCH, **params)
    assert "cycle_momentum=True" in code and "in place of the optimizer's 0.9" in code
    scope = {"model": torch.nn.Linear(2, 1)}
    exec(code, scope)
    momenta = []
    for _ in range(TOTAL):
        momenta.append(scope["optimizer"].param_groups[0]["momentum"])
        scope["optimizer"].step()
        scope["scheduler"].step()
    np.testing.assert_allclose(momenta, get_schedule(name).momentum(np.arange(TOTAL), TOTAL, **params), rtol=1e-9)


@pytest.mark.parametrize("params, message", [
    ({"cycle_momentum": "yes"}, "onecycle: cycle_momentum must be True or False, got 'yes'"),
    ({"cycle_momentum": True, "max_momentum": 1.0}, "max_momentum must be in [0, 1), got 1.0"),
    ({"cycle_momentum": True, "base_momentum": 0.99}, "base_momentum must be in [0, max_momentum=0.95], got 0.99"),
])
def test_invalid_momentum_parameters_say_which_and_why(params: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        get_schedule("onecycle").momentum(np.arange(10), TOTAL, **params)
    assert message in str(err.value)


def test_cycling_the_momentum_of_an_optimizer_without_one_is_refused_clearly() -> None:
    opt = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="cycle_momentum=True cycles the optimizer's momentum .* Adagrad has neither"):
        get_schedule("cyclic").build(opt, TOTAL, step_size_up=10, step_size_down=10, cycle_momentum=True)
    get_schedule("cyclic").build(opt, TOTAL, step_size_up=10, step_size_down=10)      # without: fine


def test_stored_choices_from_before_cycle_momentum_replay_as_they_ran() -> None:
    """A study stored before the search space gained cycle_momentum: its trials did not cycle it."""
    from lrfind.schedules import stored_choices

    old = {"schedule": "onecycle", "onecycle.pct_start": 0.3, "onecycle.anneal_strategy": "cos",
           "onecycle.div_factor": 10.0, "onecycle.final_div_factor": 100.0}
    with pytest.raises(ValueError):
        get_schedule("onecycle").suggest(optuna.trial.FixedTrial(old), TOTAL, PER_EPOCH)
    params = get_schedule("onecycle").suggest(optuna.trial.FixedTrial(stored_choices(old)), TOTAL, PER_EPOCH)
    assert params["cycle_momentum"] is False
    assert stored_choices({**old, "onecycle.cycle_momentum": True})["onecycle.cycle_momentum"] is True


def test_plateau_needs_metrics() -> None:
    with pytest.raises(ValueError, match="metrics"):
        get_schedule("plateau").factor(np.arange(10), 10, interval=2)


def test_step_every_two_epochs_is_in_the_search_space() -> None:
    seen = {sampled_params("step", s)["step_size"] for s in range(20)}
    assert seen == {PER_EPOCH, 2 * PER_EPOCH}


@pytest.mark.parametrize("total, per_epoch", [(2, 1), (7, 7), (50, 10), (300, 100), (2811, 937)])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_search_space_always_gives_valid_parameters(name: str, total: int, per_epoch: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    schedule = get_schedule(name)
    if total < schedule.min_total:
        with pytest.raises(ValueError, match=f"at least {schedule.min_total} steps"):
            schedule.suggest(study.ask(), total, per_epoch)
        return
    for _ in range(40):
        params = schedule.suggest(study.ask(), total, per_epoch)   # validates, raises if invalid
        factor = schedule.factor(np.arange(total), total, metrics=metric_history(total, 0), **params)
        assert np.all(np.isfinite(factor)) and np.all(factor > 0) and np.all(factor <= 1 + 1e-12)


@pytest.mark.parametrize("name", [n for n in sorted(SCHEDULES) if SCHEDULES[n].min_epochs > 1])
def test_a_schedule_is_the_constant_lr_over_fewer_epochs_than_it_needs_and_not_over_as_many(name: str) -> None:
    """What ``min_epochs`` claims, from the schedule's own LR function: over one epoch fewer, every
    sampled trial keeps the base LR whatever its metric does; over that many, some do not."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    schedule = get_schedule(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    changed = []
    for epochs in (schedule.min_epochs - 1, schedule.min_epochs):
        total = epochs * PER_EPOCH
        factors = [schedule.factor(np.arange(total), total, metrics=metrics, **schedule.suggest(study.ask(), total,
                                                                                                PER_EPOCH))
                   for metrics in ([1.0] * epochs, list(range(epochs, 0, -1)), list(range(1, epochs + 1)))
                   for _ in range(10)]
        changed.append(any(np.any(f != 1.0) for f in factors))
    assert changed == [False, True] and schedule.min_epochs_why


@pytest.mark.parametrize("epochs", [3, 4, 6])
def test_every_sampled_plateau_trial_can_lower_the_lr_before_the_run_ends(epochs: int) -> None:
    """A patience that the run's reports cannot exhaust would make the trial the constant LR again."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    total, schedule = epochs * PER_EPOCH, get_schedule("plateau")
    for _ in range(30):
        params = schedule.suggest(study.ask(), total, PER_EPOCH)
        stalled = [1.0] * epochs                          # no report after the first improves
        assert np.any(schedule.factor(np.arange(total), total, metrics=stalled, **params) < 1), params


def test_schedules_that_climb_say_so() -> None:
    assert get_schedule("onecycle").warms_up({}) and get_schedule("warmup").warms_up({})
    assert not get_schedule("cosine").warms_up({"warmup": 0})
    assert get_schedule("cosine").warms_up({"warmup": 10})


def test_every_schedule_has_a_colour_of_its_own_in_the_figures() -> None:
    """The study figures tell schedules apart by colour alone: no two share one, nor a shade of one."""
    from matplotlib.colors import to_rgb

    from lrfind.plots.study import schedule_colour

    def _colour(name: str) -> str:                    # the registry's order, as the study figures pass it
        return schedule_colour(name, tuple(SCHEDULES))

    colours = [np.array(to_rgb(_colour(name))) for name in SCHEDULES]
    closest = min(np.abs(a - b).sum() for i, a in enumerate(colours) for b in colours[i + 1:])
    assert closest > 0.3 and _colour("retired_schedule") == "0.5"       # tab20, which it replaced: 0.15
