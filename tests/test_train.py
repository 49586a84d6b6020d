"""The fused trial engine equals torch.optim + torch's schedulers, trial by trial."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import dynamo_modules_after, vmap_imports_dynamo
from lrfind import get_model, get_schedule
from lrfind.data.images import ImageData
from lrfind.models import ModelError
from lrfind.engine.trials import FusedTrials, OptimizerConfig, TrialSpec, run_trials

STEPS, PER_EPOCH, BASE_LR = 12, 4, 0.05


def batches(n: int = STEPS, size: int = 16, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 28, 28, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)]


SPECS = [
    TrialSpec("constant", {}, seed=1),
    TrialSpec("step", {"step_size": 4, "gamma": 0.3, "warmup": 2}, seed=2),
    TrialSpec("onecycle", {"pct_start": 0.3}, seed=3),
    # the momentum (Adam's beta1) cycled against the LR, beside trials that keep the optimizer's
    TrialSpec("onecycle", {"pct_start": 0.4, "cycle_momentum": True}, seed=4),
    TrialSpec("cyclic", {"step_size_up": 3, "step_size_down": 2, "mode": "triangular2", "cycle_momentum": True,
                         "base_momentum": 0.7, "max_momentum": 0.9}, seed=5),
]


def base_lr(opt_cfg: OptimizerConfig) -> float:
    # Adam at SGD's LR is chaotic: float rounding of the gradients (vmap vs. one model) grows to 1e-4.
    return BASE_LR if opt_cfg.name == "sgd" else 1e-3


def train_alone(spec: TrialSpec, opt_cfg: OptimizerConfig, data,
                max_grad_norm: float | None = None) -> tuple[dict, list[float]]:
    """The trial trained alone with torch.optim and torch's scheduler: its weights, and the LR and
    momentum (Adam's beta1) of each step, in ``train_alone.momenta``."""
    model = get_model("lenet", seed=spec.seed)
    opt = opt_cfg.torch_optimizer(model.parameters(), base_lr(opt_cfg))
    sched = get_schedule(spec.schedule).build(opt, STEPS, **spec.params)
    lrs, train_alone.momenta = [], []
    for x, y in data:
        group = opt.param_groups[0]
        lrs.append(group["lr"])
        train_alone.momenta.append(group["momentum"] if "momentum" in group else group["betas"][0])
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        sched.step()
    return model.state_dict(), lrs


@pytest.mark.parametrize("opt_cfg", [
    OptimizerConfig("sgd", momentum=0.9),
    OptimizerConfig("sgd", momentum=0.9, nesterov=True, weight_decay=5e-4),
    OptimizerConfig("sgd", momentum=0.0),
    OptimizerConfig("adam", weight_decay=1e-4),
    OptimizerConfig("adamw", weight_decay=1e-2),
], ids=["sgd-momentum", "sgd-nesterov-wd", "sgd-plain", "adam", "adamw"])
@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "looped"])
def test_fused_trials_equal_torch_optim_one_by_one(opt_cfg: OptimizerConfig, vectorize: bool) -> None:
    data = batches()
    fused = FusedTrials("lenet", SPECS, base_lr=base_lr(opt_cfg), total_steps=STEPS, steps_per_epoch=PER_EPOCH,
                        optimizer=opt_cfg, vectorize=vectorize)
    fused_lrs, fused_momenta = [], []
    for x, y in data:
        fused_lrs.append(fused.current_lrs().tolist())
        fused_momenta.append(fused.momentum_table[:, fused.step_count].tolist())
        fused.step(x, y)
    for k, spec in enumerate(SPECS):
        weights, lrs = train_alone(spec, opt_cfg, data)
        np.testing.assert_allclose(np.array(fused_lrs)[:, k], lrs, rtol=1e-6)
        np.testing.assert_allclose(np.array(fused_momenta)[:, k], train_alone.momenta, rtol=1e-12)
        got = fused.state_dict(k)
        for name, value in weights.items():
            torch.testing.assert_close(got[name], value, atol=1e-5, rtol=1e-5, msg=f"{spec.schedule} {name}")


@pytest.mark.parametrize("opt_cfg", [OptimizerConfig("sgd", momentum=0.9), OptimizerConfig("adamw")],
                         ids=["sgd", "adamw"])
@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "looped"])
def test_clipped_trials_equal_torch_optim_with_clip_grad_norm(opt_cfg: OptimizerConfig, vectorize: bool) -> None:
    """Each trial's gradient is clipped to its own norm: the norm is small enough here to clip every step."""
    data = batches()
    fused = FusedTrials("lenet", SPECS, base_lr=base_lr(opt_cfg), total_steps=STEPS, steps_per_epoch=PER_EPOCH,
                        optimizer=opt_cfg, vectorize=vectorize, max_grad_norm=0.05)
    for x, y in data:
        fused.step(x, y)
    for k, spec in enumerate(SPECS):
        clipped, _ = train_alone(spec, opt_cfg, data, max_grad_norm=0.05)
        unclipped, _ = train_alone(spec, opt_cfg, data)
        got = fused.state_dict(k)
        for name, value in clipped.items():
            torch.testing.assert_close(got[name], value, atol=1e-5, rtol=1e-5, msg=f"{spec.schedule} {name}")
        assert not torch.allclose(got["fc3.weight"], unclipped["fc3.weight"], atol=1e-4)


def test_trials_that_cycle_their_momentum_go_on_equal_to_torch_after_others_leave_the_batch() -> None:
    data = batches()
    fused = FusedTrials("lenet", SPECS, base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH)
    for i, (x, y) in enumerate(data):
        fused.step(x, y)
        if i == PER_EPOCH - 1:
            fused.keep([k not in (0, 3) for k in fused.running])      # a plain and a cycling trial leave
    assert fused.running == [1, 2, 4] and fused.momentum_table.shape == (3, STEPS)
    for k in fused.running:
        weights, _ = train_alone(SPECS[k], OptimizerConfig(), data)
        for name, value in weights.items():
            torch.testing.assert_close(fused.state_dict(k)[name], value, atol=1e-5, rtol=1e-5)


def test_same_init_gives_every_trial_the_first_seed() -> None:
    fused = FusedTrials("lenet", SPECS, base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH,
                        same_init=True)
    assert torch.equal(fused.state_dict(0)["conv1.weight"], fused.state_dict(2)["conv1.weight"])


def test_a_diverging_trial_fails_without_disturbing_the_others() -> None:
    data = batches()
    good = TrialSpec("constant", {}, seed=1)
    bad = TrialSpec("constant", {}, seed=2)
    together = FusedTrials("lenet", [good, bad], base_lr=0.05, total_steps=STEPS, steps_per_epoch=PER_EPOCH)
    together.lr_table[1] = 1e12          # trial 1's LR is absurd: NaN within a few steps
    alone = FusedTrials("lenet", [good], base_lr=0.05, total_steps=STEPS, steps_per_epoch=PER_EPOCH)
    for x, y in data:
        together.step(x, y)
        alone.step(x, y)
    together.end_epoch(None, STEPS)
    assert together.records[1].status == "failed" and 0 <= together.records[1].failed_at < STEPS
    assert together.records[0].status == "running" and len(together.records[0].train_loss) == 1
    for name, value in alone.state_dict(0).items():
        torch.testing.assert_close(together.state_dict(0)[name], value, atol=1e-6, rtol=1e-6)


def test_plateau_trial_follows_its_own_validation_loss() -> None:
    g = torch.Generator().manual_seed(0)
    train = ImageData(torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g))
    val = ImageData(torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g))
    spec = TrialSpec("plateau", {"interval": 4, "factor": 0.5, "patience": 0, "threshold": 0.5}, seed=0)
    records = run_trials("lenet", [spec], train, val, epochs=3, batch_size=16, base_lr=0.01)
    # threshold 0.5: no epoch improves the loss by half, so the LR halves after every report but the first
    expected = get_schedule("plateau").factor(np.arange(12), 12, metrics=records[0].val_loss, **spec.params)
    assert list(expected[[0, 4, 8]]) == [1.0, 1.0, 0.5]
    assert records[0].status == "complete" and len(records[0].val_acc) == 3


def test_pruned_trials_leave_the_batch() -> None:
    g = torch.Generator().manual_seed(0)
    train = ImageData(torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g))
    specs = [TrialSpec("constant", {}, seed=s) for s in range(3)]
    seen = []

    def prune_first(epoch, records, running):
        seen.append(list(running))
        return {0} if epoch == 0 else {1} if epoch == 2 else set()

    records = run_trials("lenet", specs, train, train, epochs=3, batch_size=16, base_lr=0.01, on_epoch=prune_first)
    assert [r.status for r in records] == ["pruned", "complete", "complete"]   # after the last epoch: complete
    assert seen == [[0, 1, 2], [1, 2], [1, 2]]                                  # every epoch is reported
    assert len(records[0].val_acc) == 1 and len(records[1].val_acc) == 3


def test_invalid_schedule_parameters_fail_before_training() -> None:
    with pytest.raises(ValueError, match="gamma"):
        FusedTrials("lenet", [TrialSpec("step", {"step_size": 4, "gamma": 2.0})], base_lr=0.1, total_steps=STEPS,
                    steps_per_epoch=PER_EPOCH)


def test_lr_scale_raises_the_whole_curve() -> None:
    spec = TrialSpec("onecycle", {"pct_start": 0.3}, seed=0)
    plain = FusedTrials("lenet", [spec], base_lr=0.01, total_steps=STEPS, steps_per_epoch=PER_EPOCH)
    scaled = FusedTrials("lenet", [TrialSpec("onecycle", {"pct_start": 0.3}, seed=0, lr_scale=3.0)], base_lr=0.01,
                         total_steps=STEPS, steps_per_epoch=PER_EPOCH)
    torch.testing.assert_close(scaled.lr_table, 3.0 * plain.lr_table)


def test_bf16_autocast_trains_and_keeps_float32_weights() -> None:
    data = batches()
    fp32 = FusedTrials("lenet", SPECS, base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH)
    bf16 = FusedTrials("lenet", SPECS, base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH, amp="bf16")
    for x, y in data:
        fp32.step(x, y)
        bf16.step(x, y)
    for k in range(len(SPECS)):
        a, b = fp32.state_dict(k), bf16.state_dict(k)
        assert all(v.dtype == torch.float32 for v in b.values())
        for name in a:                      # close to float32 training, not equal to it
            assert 0 < (a[name] - b[name]).abs().max() < 0.05, name
    from lrfind import TuneConfig

    with pytest.raises(ValueError, match="amp must be None or 'bf16', got 'fp16'"):    # checked at the edge, once
        TuneConfig(amp="fp16", device="cpu")


def test_looped_and_vectorized_trials_agree_in_training_and_validation() -> None:
    g = torch.Generator().manual_seed(0)
    val = ImageData(torch.randn(48, 1, 28, 28, generator=g), torch.randint(0, 10, (48,), generator=g))
    engines = [FusedTrials("lenet", SPECS, base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH,
                           vectorize=v) for v in (True, False)]
    assert FusedTrials("lenet", SPECS[:1], base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH).vectorize \
        is False                                  # the CPU default
    for x, y in batches():
        for engine in engines:
            engine.step(x, y)
    for engine in engines:
        engine.keep([k != 1 for k in engine.running])     # the looped engine follows the batch as it shrinks
        engine.end_epoch(val, STEPS)
    vmapped, looped = engines
    for k in (0, 2, 3):
        for name, value in vmapped.state_dict(k).items():
            torch.testing.assert_close(looped.state_dict(k)[name], value, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(looped.records[k].val_loss, vmapped.records[k].val_loss, rtol=1e-5)
        np.testing.assert_allclose(looped.records[k].train_loss, vmapped.records[k].train_loss, rtol=1e-5)
        assert looped.records[k].val_acc == vmapped.records[k].val_acc


def test_convolution_weights_are_stored_channels_last_on_a_cpu_and_train_the_same() -> None:
    g = torch.Generator().manual_seed(0)
    val = ImageData(torch.randn(48, 1, 28, 28, generator=g), torch.randint(0, 10, (48,), generator=g))
    engines = [FusedTrials("lenet", SPECS, base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH,
                           channels_last=c) for c in (None, False)]
    fast, usual = engines
    assert fast.guess.channels_last and not usual.guess.channels_last                            # the CPU default
    assert fast.params["conv2.weight"][0].is_contiguous(memory_format=torch.channels_last)
    assert not fast.params["conv2.weight"][0].is_contiguous()
    for name in fast.params:                       # the same weights, stored in two layouts
        assert torch.equal(fast.params[name], usual.params[name])
    for x, y in batches():
        for engine in engines:
            engine.step(x, y)
    for engine in engines:
        engine.keep([k != 1 for k in engine.running])
        engine.end_epoch(val, STEPS)
    for k in (0, 2):
        for name, value in usual.state_dict(k).items():
            torch.testing.assert_close(fast.state_dict(k)[name], value, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(fast.records[k].val_loss, usual.records[k].val_loss, rtol=1e-5)
        model = get_model("lenet")
        model.load_state_dict(fast.state_dict(k))          # a plain model takes the weights as they are
        assert torch.equal(model.conv2.weight, fast.state_dict(k)["conv2.weight"])


class ViewsActivations(torch.nn.Module):
    """A CNN whose forward flattens with ``view``: it cannot take channels-last activations."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 26 * 26, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


def test_a_model_that_views_its_activations_keeps_the_usual_layout(caplog) -> None:
    data = batches(4)
    two = [TrialSpec("constant", {}, seed=1), TrialSpec("cosine", {}, seed=2)]
    engines = [FusedTrials(ViewsActivations, two, base_lr=BASE_LR, total_steps=4, steps_per_epoch=4,
                           channels_last=c) for c in (None, False)]
    with caplog.at_level("INFO", logger="lrfind.engine"):
        for x, y in data:
            for engine in engines:
                engine.step(x, y)
    fallback, usual = engines
    assert not fallback.mode.channels_last and "channels-last convolution weights" in caplog.text
    assert torch.equal(fallback.flat, usual.flat)      # the trial step on copies left no trace
    for state in fallback.state.values():
        assert torch.equal(state, usual.state["momentum"])
    asked = FusedTrials(ViewsActivations, SPECS[:1], base_lr=BASE_LR, total_steps=4, steps_per_epoch=4,
                        channels_last=True)
    with pytest.raises(ModelError, match=r"channels-last convolution weights \(RuntimeError: view size .* instead of "
                                         r"\.view in its forward"):
        asked.step(*data[0])
    assert torch.equal(asked.flat, FusedTrials(ViewsActivations, SPECS[:1], base_lr=BASE_LR, total_steps=4,
                                               steps_per_epoch=4, channels_last=True).flat)   # nothing trained


def test_looped_trials_update_batch_norm_buffers_like_vmap() -> None:
    def bn_model():
        return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                   torch.nn.Flatten(), torch.nn.Linear(4 * 26 * 26, 10))

    specs = [TrialSpec("constant", {}, seed=s) for s in range(2)]
    engines = [FusedTrials(bn_model, specs, base_lr=0.01, total_steps=STEPS, steps_per_epoch=PER_EPOCH, vectorize=v)
               for v in (True, False)]
    for x, y in batches(4):
        for engine in engines:
            engine.step(x, y)
    vmapped, looped = engines
    assert not torch.equal(looped.buffers["1.running_mean"], torch.zeros_like(looped.buffers["1.running_mean"]))
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        torch.testing.assert_close(looped.buffers[name], vmapped.buffers[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "looped"])
def test_a_parameter_the_loss_does_not_use_gets_a_zero_gradient(vectorize: bool) -> None:
    class Spare(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.spare = torch.nn.Linear(784, 10), torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x.flatten(1))

    engine = FusedTrials(Spare, [TrialSpec("constant", {}, seed=s) for s in range(2)], base_lr=0.1, total_steps=STEPS,
                         steps_per_epoch=PER_EPOCH, vectorize=vectorize)
    before = engine.state_dict(0)
    for x, y in batches(2):
        engine.step(x, y)
    after = engine.state_dict(0)
    assert torch.equal(after["spare.weight"], before["spare.weight"])
    assert not torch.equal(after["fc.weight"], before["fc.weight"])


@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "looped"])
def test_dropout_and_batch_norm_train_per_trial_and_validate_in_eval_mode(vectorize: bool) -> None:
    def model():
        return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                   torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(4 * 26 * 26, 10))

    g = torch.Generator().manual_seed(0)
    val = ImageData(torch.randn(40, 1, 28, 28, generator=g), torch.randint(0, 10, (40,), generator=g))
    engine = FusedTrials(model, [TrialSpec("constant", {}, seed=s) for s in range(2)], base_lr=0.01,
                         total_steps=STEPS, steps_per_epoch=PER_EPOCH, vectorize=vectorize)
    for x, y in batches(3):
        engine.step(x, y)
    buffers = {k: v.clone() for k, v in engine.buffers.items()}
    first, again = engine.evaluate(val), engine.evaluate(val)
    np.testing.assert_array_equal(first[0], again[0])                 # no dropout in validation
    for name, value in buffers.items():
        assert torch.equal(engine.buffers[name], value), name          # validation does not touch running stats
    alone = model()
    alone.load_state_dict(engine.state_dict(0))
    alone.eval()
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(alone(val.images), val.labels)
    assert first[0][0] == pytest.approx(float(expected), rel=1e-5)
    assert engine.base.training                                          # back to training


@pytest.mark.parametrize("vectorize", [True, False], ids=["vmap", "looped"])
def test_frozen_parameters_stay_as_they_are_like_torch_optim(vectorize: bool) -> None:
    def model():
        net = get_model("lenet")
        net.conv1.requires_grad_(False)
        return net

    spec = TrialSpec("constant", {}, seed=1)
    engine = FusedTrials(model, [spec], base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH,
                         vectorize=vectorize, optimizer=OptimizerConfig("sgd", momentum=0.9, weight_decay=1e-3))
    torch.manual_seed(1)
    alone = model()
    opt = torch.optim.SGD([q for q in alone.parameters() if q.requires_grad], lr=BASE_LR, momentum=0.9,
                          weight_decay=1e-3)
    before = {k: v.clone() for k, v in alone.state_dict().items()}
    for x, y in batches():
        engine.step(x, y)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(alone(x), y).backward()
        opt.step()
    got = engine.state_dict(0)
    assert torch.equal(got["conv1.weight"], before["conv1.weight"])
    for name, value in alone.state_dict().items():
        torch.testing.assert_close(got[name], value, atol=1e-5, rtol=1e-5, msg=name)


def test_a_model_with_nothing_to_train_is_a_clear_error() -> None:
    def frozen():
        return get_model("lenet").requires_grad_(False)

    with pytest.raises(ValueError, match="no trainable parameters"):
        FusedTrials(frozen, SPECS[:1], base_lr=BASE_LR, total_steps=STEPS, steps_per_epoch=PER_EPOCH)


@pytest.mark.parametrize("vectorize", [True, False])
def test_evaluation_in_batches_changes_no_score(monkeypatch, vectorize) -> None:
    import lrfind.engine.scoring as scoring

    g = torch.Generator().manual_seed(1)
    val = ImageData(torch.randn(300, 1, 28, 28, generator=g), torch.randint(0, 10, (300,), generator=g))
    engine = FusedTrials("lenet", [TrialSpec("constant", {}, seed=s) for s in range(4)], base_lr=0.01,
                         total_steps=STEPS, steps_per_epoch=PER_EPOCH, vectorize=vectorize)
    for x, y in batches(2):
        engine.step(x, y)
    whole = engine.evaluate(val, batch_size=len(val))
    seen = []
    forward = engine._forward
    monkeypatch.setattr(engine, "_forward", lambda p, b, x: seen.append(len(x)) or forward(p, b, x))
    monkeypatch.setattr(scoring, "EVAL_IMAGES_CPU", 100)
    chunked = engine.evaluate(val)
    assert seen == [100, 100, 100]
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-5)
    np.testing.assert_array_equal(chunked[1], whole[1])


def test_an_evaluation_that_runs_out_of_gpu_memory_halves_its_batch_and_keeps_it(monkeypatch) -> None:
    """A model with more activations per image than LeNet's: the default batch does not fit."""
    g = torch.Generator().manual_seed(1)
    val = ImageData(torch.randn(300, 1, 28, 28, generator=g), torch.randint(0, 10, (300,), generator=g))
    engine = FusedTrials("lenet", [TrialSpec("constant", {}, seed=s) for s in range(2)], base_lr=0.01,
                         total_steps=STEPS, steps_per_epoch=PER_EPOCH)
    whole = engine.evaluate(val, batch_size=len(val))
    seen = []
    forward = engine._forward

    def small_memory(p, b, x):
        seen.append(len(x))
        if len(x) > 70:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(p, b, x)

    monkeypatch.setattr(engine, "_forward", small_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    first = engine.evaluate(val, batch_size=512)
    assert seen[:4] == [300, 256, 128, 64] and set(seen[3:]) <= {64, 44}     # 300 = the whole set at once
    np.testing.assert_allclose(first[0], whole[0], rtol=1e-5)
    seen.clear()
    engine.evaluate(val)                                # the next epoch starts at the size that fitted
    assert seen == [64, 64, 64, 64, 44]

    def no_memory(p, b, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(engine, "_forward", no_memory)
    with pytest.raises(torch.cuda.OutOfMemoryError):     # not even one image fits: that is the user's to see
        engine.evaluate(val, batch_size=1)


def test_evaluation_batches_shrink_as_trials_grow_on_a_gpu_and_stay_small_on_a_cpu() -> None:
    from lrfind.engine.scoring import EVAL_IMAGE_TRIALS, EVAL_IMAGES_CPU, eval_batch_size

    cuda = torch.device("cuda")
    assert [eval_batch_size(k, cuda) for k in (1, 50, 200)] == [EVAL_IMAGE_TRIALS, EVAL_IMAGE_TRIALS // 50,
                                                                 EVAL_IMAGE_TRIALS // 200]
    assert eval_batch_size(10_000, cuda) == 64
    assert {eval_batch_size(k, torch.device("cpu")) for k in (1, 8, 50)} == {EVAL_IMAGES_CPU}


def test_training_does_not_import_torch_dynamo() -> None:
    """torch.func.grad would import torch._dynamo: 1-2 s of every study's start-up for nothing the
    engine needs. A fresh interpreter trains both ways without it (the looped way only, where
    torch's own vmap imports it: torch 2.4 does)."""
    vmap_imports_it = vmap_imports_dynamo()
    assert dynamo_modules_after(f"""
import torch
from lrfind.engine.trials import FusedTrials, TrialSpec
from lrfind.data.builtin import ImageData
x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
for vectorize in {(False,) if vmap_imports_it else (True, False)}:
    engine = FusedTrials("lenet", [TrialSpec("cosine", {{}}, seed=i) for i in range(2)], base_lr=0.05,
                         total_steps=4, steps_per_epoch=2, vectorize=vectorize)
    engine.step(x, y)
    engine.end_epoch(ImageData(x, y, "noise"), 1)
""") == []


@pytest.mark.parametrize("opt_cfg", [OptimizerConfig("sgd", momentum=0.9), OptimizerConfig("adam")],
                         ids=["sgd", "adam"])
def test_on_a_device_without_float64_the_engine_makes_no_double_and_trains_alike(opt_cfg, without_float64) -> None:
    """Apple's MPS has no float64: step counts and cycled momenta are float32 there, which moves
    Adam's weights by float32 rounding of its bias corrections, no more."""
    data = batches()

    def trained():
        fused = FusedTrials("lenet", SPECS, base_lr=base_lr(opt_cfg), total_steps=STEPS, steps_per_epoch=PER_EPOCH,
                            optimizer=opt_cfg)
        for x, y in data:
            fused.step(x, y)
        return fused

    with without_float64:
        single = trained()
    assert without_float64.makers == [] and single.momentum_table.dtype == torch.float32
    without_float64.makers.clear()
    with pytest.MonkeyPatch.context() as m:
        m.setattr("lrfind._device.NO_FLOAT64", set())
        double = trained()
    assert double.momentum_table.dtype == torch.float64
    for k in range(len(SPECS)):
        for name, value in double.state_dict(k).items():
            torch.testing.assert_close(single.state_dict(k)[name], value, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("vectorize", [True, False])
def test_an_engine_is_freed_when_its_last_reference_goes(vectorize: bool) -> None:
    """No reference cycle keeps a finished batch's weights, optimizer state (and, on a GPU, its CUDA
    graph) alive until the garbage collector happens to run."""
    import gc
    import weakref

    g = torch.Generator().manual_seed(0)
    val = ImageData(torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g))
    engine = FusedTrials("lenet", SPECS[:3], base_lr=0.05, total_steps=STEPS, steps_per_epoch=STEPS,
                         vectorize=vectorize)
    gc.disable()
    try:
        for x, y in batches():
            engine.step(x, y)
        engine.end_epoch(val, STEPS)
        engine.keep([True, False, True])
        engine.evaluate(val)
        ref = weakref.ref(engine)
        del engine
        assert ref() is None
    finally:
        gc.enable()
