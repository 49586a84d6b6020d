"""A range test's repeats side by side in one pass (``find_lr(..., repeats=K)``): copies of the
model, each reading the loader as the repeat one after another with its seed reads it, give the
curves those repeats give (a list of batches, which no seed reorders, is dealt out in turn); a
diverging sweep leaves while the others go on; the model and the RNGs are left as they were; and
where the sweeps cannot run side by side, they run one after another and say why."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from torch import nn

from conftest import copies_fit, toy_batches
from lrfind import OptimizerConfig, find_lr


def make_data(n_batches: int = 12, batch: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return toy_batches(n_batches, batch)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    # batch norm: buffers each copy keeps for itself; no dropout, whose draws follow the trial order
    return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 3))


QUIET = dict(progress=False, warn=False, slow_down=False)


def shuffled(data: list, batch: int = 16) -> torch.utils.data.DataLoader:
    x, y = torch.cat([x for x, _ in data]), torch.cat([y for _, y in data])
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True)


@pytest.mark.parametrize("optimizer", [None, OptimizerConfig("adam", weight_decay=1e-4)], ids=["sgd-default", "adam"])
def test_sweeps_side_by_side_are_the_repeats_one_after_another(optimizer) -> None:
    data = make_data(n_batches=40)
    kw = dict(optimizer=optimizer, repeats=3, seed=5, num_iter=30, end_lr=0.1, **QUIET)
    fused = find_lr(make_model(), shuffled(data), **kw)
    alone = find_lr(make_model(), shuffled(data), fused=False, **kw)
    assert fused.config["fused"] is True and alone.config["fused"] is False
    for a, b in zip(fused.seed_losses, alone.seed_losses):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert fused.seed_lrs == pytest.approx(alone.seed_lrs, rel=1e-2)
    assert not np.allclose(fused.seed_losses[0], fused.seed_losses[1])       # each its own batch order


def stream_of(data: list, k: int, repeats: int, steps: int) -> list:
    """The batches sweep ``k`` of ``repeats`` takes from a list read in order: one in ``repeats``."""
    return [data[(i * repeats + k) % len(data)] for i in range(steps)]


@pytest.mark.parametrize("optimizer", [None, OptimizerConfig("adam", weight_decay=1e-4),
                                       "torch-sgd"], ids=["sgd-default", "adam", "torch-sgd"])
def test_a_list_of_batches_is_dealt_to_the_sweeps_in_turn(optimizer, caplog) -> None:
    model, data = make_model(), make_data()
    before = copy.deepcopy(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.5) if optimizer == "torch-sgd" else optimizer
    rng = torch.get_rng_state()
    with caplog.at_level(logging.INFO, logger="lrfind"):
        fused = find_lr(model, data, optimizer=opt, repeats=3, num_iter=30, end_lr=0.1, **QUIET)
    assert fused.config["fused"] is True and fused.config["how"] == "3 side by side in one pass"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())     # the model is not trained
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(fused.seed_losses) == 3
    for k, curve in enumerate(fused.seed_losses):
        alone_model = make_model()
        alone_opt = torch.optim.SGD(alone_model.parameters(), lr=1e-6, momentum=0.5) \
            if optimizer == "torch-sgd" else optimizer
        alone = find_lr(alone_model, stream_of(data, k, 3, 30), optimizer=alone_opt, num_iter=30, end_lr=0.1,
                        fused=False, **QUIET)
        np.testing.assert_allclose(curve, alone.losses, rtol=1e-4, atol=1e-5)
    for k, lr in enumerate(fused.seed_lrs):       # each sweep's suggestion is its own curve's
        assert lr is None or min(fused.lrs[0], 1e-6) <= lr <= 0.1
    assert "spread over 3 sweeps" in fused.summary() and "sweeps: 3 side by side in one pass" in fused.summary()


def test_a_diverging_sweep_leaves_while_the_others_go_on() -> None:
    data = make_data(n_batches=100)
    data[1] = (torch.full_like(data[1][0], float("nan")), data[1][1])     # the second sweep's first batch
    result = find_lr(make_model(), data, repeats=3, num_iter=40, end_lr=0.01, **QUIET)
    lengths = [c.size for c in result.seed_losses]
    assert lengths[1] < 40 and lengths[0] == lengths[2] == 40
    assert np.isfinite(result.seed_losses[0]).all() and np.isfinite(result.seed_losses[2]).all()


def test_the_pass_ends_when_every_sweep_has_diverged() -> None:
    result = find_lr(make_model(), make_data(), repeats=3, num_iter=200, end_lr=1e4, **QUIET)
    assert all(c.size < 200 for c in result.seed_losses) and result.stop_reason != "completed"


def test_the_same_seed_gives_the_same_sweeps_and_another_seed_other_batches() -> None:
    data = make_data(n_batches=64)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.cat([x for x, _ in data]),
                                                                        torch.cat([y for _, y in data])),
                                         batch_size=16, shuffle=True)
    a, b, c = (find_lr(make_model(), loader, repeats=2, seed=s, num_iter=20, **QUIET) for s in (1, 1, 2))
    for x, y in zip(a.seed_losses, b.seed_losses):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.seed_losses[0], c.seed_losses[0])


def test_a_short_last_batch_is_left_out_and_said(caplog) -> None:
    x, y = torch.randn(100, 10), torch.randint(0, 3, (100,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)   # 32, 32, 32, 4
    with caplog.at_level(logging.INFO, logger="lrfind"):
        result = find_lr(make_model(), loader, repeats=3, num_iter=6, **QUIET)
    assert result.config["fused"] and "batch(es) of another size than the first (32 examples) were left out" \
        in caplog.text


def cannot(kind: str):
    """find_lr arguments with which the sweeps cannot run side by side, and the reason said."""
    model = make_model()
    if kind == "groups":
        opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": list(model[1].parameters()) +
                               list(model[3].parameters()), "lr": 0.1}], lr=0.01)
        return model, make_data(), dict(optimizer=opt), "the optimizer has 2 parameter groups"
    if kind == "step_fn":
        return model, make_data(), dict(step_fn=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])), \
            "a step_fn, accumulation_steps, amp or val_loader is given"
    if kind == "dicts":
        return model, [{"x": x, "y": y} for x, y in make_data()], \
            dict(step_fn=None, loss_fn=None), "the batches are not (inputs, targets) tensors but dicts"
    if kind == "short":
        return model, make_data(n_batches=2), {}, "the loader has 2 batches, fewer than the 3 sweeps"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["groups", "step_fn", "short"])
def test_where_they_cannot_run_side_by_side_they_run_one_after_another_and_say_why(kind, caplog) -> None:
    model, data, kw, why = cannot(kind)
    with caplog.at_level(logging.INFO, logger="lrfind"):
        result = find_lr(model, data, repeats=3, num_iter=8, **kw, **QUIET)
    assert result.config["fused"] is False and why in result.config["how"] and why in caplog.text
    assert len(result.seed_losses) == 3
    model, data, kw, why = cannot(kind)
    with pytest.raises(ValueError, match=f"fused.*{why}") as e:
        find_lr(model, data, repeats=3, num_iter=8, fused=True, **kw, **QUIET)
    assert "\n" not in str(e.value)


def test_dict_batches_sweep_one_after_another(caplog) -> None:
    class OnDicts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_model()

        def forward(self, x, y=None):
            out = self.net(x)
            return type("Out", (), {"loss": nn.functional.cross_entropy(out, y)})()

    with caplog.at_level(logging.INFO, logger="lrfind"):
        result = find_lr(OnDicts(), [{"x": x, "y": y} for x, y in make_data()], repeats=2, num_iter=6, **QUIET)
    assert result.config["fused"] is False and "not (inputs, targets) tensors" in result.config["how"]


def test_one_sweep_by_default_off_a_gpu_and_why() -> None:
    result = find_lr(make_model(), make_data(), num_iter=8, **QUIET)
    assert len(result.seed_losses) == 0 and "1 sweep by default: off a GPU" in result.config["how"]
    assert "3 repeats give the median of 3" in result.summary()


@pytest.mark.parametrize("bad, match", [({"repeats": 0}, "repeats must be a positive integer"),
                                        ({"repeats": 1.5}, "repeats must be a positive integer"),
                                        ({"repeats": "3"}, "repeats must be a positive integer"),
                                        ({"repeats": True}, "repeats must be a positive integer"),
                                        ({"fused": "yes"}, "fused must be None")])
def test_bad_repeats_or_fused_is_a_one_line_error(bad, match) -> None:
    with pytest.raises(ValueError, match=match) as e:
        find_lr(make_model(), make_data(), **bad)
    assert "\n" not in str(e.value)


def test_a_one_shot_iterator_feeds_the_sweeps_side_by_side_when_long_enough() -> None:
    result = find_lr(make_model(), iter(make_data(n_batches=30)), repeats=3, num_iter=10, **QUIET)
    assert result.config["fused"] and [c.size for c in result.seed_losses] == [10, 10, 10]


@pytest.mark.parametrize("search_steps, iters, repeats, want", [
    (50 * 3 * 390, None, None, (3, 300, True)),          # a full study: 3 sweeps, and 3 slower ones if they disagree
    (8 * 1 * 39, None, None, (1, 124, False)),           # a quick one: one sweep, 40% of its 312 steps
    (16 * 2 * 94, None, None, (3, 300, False)),          # in between: 3 sweeps, no slower ones
    (16 * 1 * 94, None, None, (3, 200, False)),          # shorter: 3 shorter sweeps
    (8 * 1 * 39, 300, None, (1, 300, False)),            # what the user set is kept
    (8 * 1 * 39, None, 3, (3, 100, False)),
    (8 * 1 * 39, 200, 2, (2, 200, False)),
])
def test_stage_1_takes_a_bounded_share_of_a_short_study(search_steps, iters, repeats, want) -> None:
    from lrfind.study.tune_lr import sweeps_for

    sweeps = sweeps_for(search_steps, iters, repeats)
    assert (sweeps.repeats, sweeps.num_iter, sweeps.slow_down) == want
    if iters is None and repeats is None:
        spent = sweeps.repeats * sweeps.num_iter * (3 if sweeps.slow_down else 1)
        assert spent <= max(0.4 * search_steps, 100)
    assert bool(sweeps.note) != sweeps.slow_down


def test_more_copies_than_fit_in_memory_is_an_error_that_says_how_many_do(monkeypatch) -> None:
    copies_fit(monkeypatch, 2)                  # a GPU whose memory holds two copies of the model
    with pytest.raises(ValueError, match=r"repeats 8: 8 copies of the model side by side do not fit in GPU memory; "
                                         r"at most 2 do: pass that many repeats, or sweep one after another") as e:
        find_lr(make_model(), make_data(), repeats=8, num_iter=8, **QUIET)
    assert "\n" not in str(e.value)
    assert len(find_lr(make_model(), make_data(), repeats=2, num_iter=8, **QUIET).seed_losses) == 2


@pytest.mark.parametrize("vectorize", [False, True], ids=["looped", "vmapped"])
def test_the_engine_trains_each_trial_on_its_own_batch_as_if_alone(vectorize) -> None:
    """The engine's ``own_batches`` (a GPU vmaps it, a CPU loops): trial k's step on batch k is the
    step of the same model trained alone on that batch."""
    from lrfind.engine.fused import FusedTrials
    from lrfind.engine.records import TrialSpec

    data = make_data(n_batches=6)
    k, steps = 2, 3
    lrs = np.full(steps + 1, 0.1)
    engine = FusedTrials(make_model, [TrialSpec("constant", {}, seed=0)] * k, base_lr=1.0, total_steps=steps + 1,
                         steps_per_epoch=steps + 1, optimizer=OptimizerConfig("sgd", momentum=0.9), vectorize=vectorize,
                         own_batches=True, lrs=lrs)
    losses = []
    for i in range(steps):
        batch = data[i * k:(i + 1) * k]
        engine.step(torch.stack([x for x, _ in batch]), torch.stack([y for _, y in batch]))
        losses.append(engine.step_losses.clone())
    assert engine.mode.forward == ("vmapped" if vectorize else "looped")
    for trial in range(k):
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for i in range(steps):
            x, y = data[i * k + trial]
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert losses[i][trial].item() == pytest.approx(loss.item(), rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="a batch per trial in the batch, 2, got 3 inputs"):
        engine.step(torch.stack([x for x, _ in data[:3]]), torch.stack([y for _, y in data[:3]]))


def test_a_study_sweeps_one_after_another_where_its_copies_do_not_fit(monkeypatch, mnist_root, tmp_path) -> None:
    from lrfind import tune

    copies_fit(monkeypatch, 2)                  # a GPU whose memory holds two copies of the model
    result = tune(trials=1, epochs=1, batch_size=64, train_subset=256, val_size=100, device="cpu", progress=False,
                  range_test_iters=30, range_test_repeats=3, final=False, data_dir=str(mnist_root),
                  out=str(tmp_path))
    stage_1 = result.study.user_attrs["range_test"]
    assert len(stage_1["seed_lrs"]) == 3 and stage_1["how"].startswith("3 one after another (fused=False)")


def test_a_short_study_says_how_its_range_test_was_sized(mnist_root, tmp_path) -> None:
    from lrfind import tune

    result = tune(trials=2, epochs=1, batch_size=64, train_subset=256, val_size=100, device="cpu", progress=False,
                  final=False, data_dir=str(mnist_root), out=str(tmp_path))
    assert result.study.user_attrs["range_test"]["num_iter"] == 100
    assert ("base LR {:.3g} (range test; the search takes 8 model steps and stage 1 at most 40% as many: 1 sweep of "
            "100 steps, none again slower if they disagree".format(result.base_lr)) in result.summary()
