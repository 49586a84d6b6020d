"""Trials folded into the channels compute what vmap computes: outputs, gradients and buffers."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from lrfind.engine import folded as _folded
from lrfind.engine import folded_rules as _folded_rules
from lrfind.engine.folded import FoldedForward, NotFoldable
from lrfind.data.images import ImageData
from lrfind.models import MLP, LeNet
from lrfind.engine.trials import FusedTrials, TrialSpec


class BatchNormNet(nn.Module):
    """examples/own_data.py's kind of CNN: convolutions with batch norm, global pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))

    def forward(self, x):
        return self.features(x)


class Residual(nn.Module):
    """A skip connection, a parameter of its own, a channel concatenation and ``x.view(n, -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 8).view(8, 1, 1))
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        h = F.relu(self.c0(x))
        h = (h + self.c2(F.relu(self.c1(h))) * 0.5) * self.scale
        h = F.max_pool2d(h, 2)
        h = torch.cat([h, h * 2], 1)[:, :8]
        return self.fc(h.view(h.size(0), -1))


class GroupNormNet(nn.Module):
    """Group norm, a shift per channel broadcast from (C,), and one per trial from a scalar."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8)
        self.shift, self.gain = nn.Parameter(torch.linspace(-1, 1, 8)), nn.Parameter(torch.tensor([1.5]))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        h = self.norm(self.conv(x)) + self.shift.view(8, 1, 1)
        return self.fc(F.adaptive_avg_pool2d(F.silu(h * self.gain), 1).flatten(1))


class Sequence1d(nn.Module):
    """Grouped 1-d convolutions and batch norm over (B, C, L)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv1d(2, 6, 5, groups=2), nn.BatchNorm1d(6), nn.Linear(6, 3)

    def forward(self, x):
        h = self.bn(self.conv(x)).relu()
        return self.fc(F.adaptive_max_pool1d(h, 1).squeeze(-1) + h.mean(2) + torch.amax(h, -1, keepdim=True)[..., 0])


class Dense(nn.Module):
    """A dense block's concatenation of channels, then batch norm over them."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1, self.bn, self.fc = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 10)

    def forward(self, x):
        h = self.c0(x)
        h = F.relu(self.bn(torch.cat([h, self.c1(h)], 1)))
        return self.fc(F.adaptive_avg_pool2d(torch.cat([h, h], -1), 1).flatten(1))


class Attention(nn.Module):
    """A module that returns (tensor, None): nn.MultiheadAttention without its weights."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.attend, self.fc = nn.Embedding(20, 8), nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 5)

    def forward(self, t):
        h = self.embed(t)
        h, _ = self.attend(h, h, h, need_weights=False)
        return self.fc(h.mean(1))


class InPlace(nn.Module):
    """Writes into its activations: with a rule (relu_, mul_), and without one (lerp_, under vmap)."""

    def __init__(self, reshape: bool = False) -> None:
        super().__init__()
        self.conv, self.fc, self.reshape = nn.Conv2d(1, 4, 3), nn.Linear(4 * 13 * 13, 10), reshape
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, 4).view(4, 1, 1))

    def forward(self, x):
        h = self.conv(x)
        h.mul_(2.0)
        h.add_(h)
        h.mul_(self.gain)
        h.relu_()
        h = F.max_pool2d(h, 2)
        h.lerp_(h.detach() * 0.5, 0.25)
        if self.reshape:
            h.transpose_(2, 3)
        F.relu(h, inplace=True)
        return self.fc(h.flatten(1))


class Parts(nn.Module):
    """A CSP net's kind of block: split the channels, work on one part, slice and join them again."""

    def __init__(self) -> None:
        super().__init__()
        self.c0, self.c1, self.fc = nn.Conv2d(1, 8, 3), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(7 * 12 * 12, 10)

    def forward(self, x):
        a, b = self.c0(x).chunk(2, dim=1)
        c, d = torch.split(F.relu(self.c1(b)), [1, 3], 1)
        h = torch.cat([a[:, 1:], c, d.mean(-1, keepdim=True).expand(-1, -1, -1, 26)], 1)
        return self.fc(F.max_pool2d(h, 2)[..., :12, :12].flatten(1))


class Excite(nn.Module):
    """EfficientNet's parts: a squeeze-and-excitation scale and torchvision's stochastic depth."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        from torchvision.ops import StochasticDepth

        self.conv, self.squeeze, self.drop = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 1), StochasticDepth(p, "row")
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        h = self.conv(x)
        h = h + self.drop(h * torch.sigmoid(self.squeeze(F.adaptive_avg_pool2d(h, 1))))
        return self.fc(h.mean((2, 3)))


class Shuffle(nn.Module):
    """ShuffleNet's channel shuffle (a view into groups, a transpose, a view back), and axes moved
    to channels-last and back around an elementwise step."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 6, 3, groups=1), nn.Linear(6 * 13 * 13, 10)

    def forward(self, x):
        h = self.conv(x)
        n, c, height, width = h.size()
        h = h.view(n, 2, c // 2, height, width).transpose(1, 2).contiguous().view(n, -1, height, width)
        h = F.gelu(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        h = torch.transpose(h, 2, 3)
        return self.fc(F.max_pool2d(h, 2).reshape(n, -1))


class Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.fc = nn.Embedding(20, 8), nn.Linear(8, 5)

    def forward(self, t):
        return self.fc(self.embed(t).mean(1))


class Dropouts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.drop2d, self.drop, self.fc = nn.Conv2d(1, 4, 3), nn.Dropout2d(0.3), nn.Dropout(0.2), nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(self.drop(self.drop2d(F.gelu(self.conv(x))).flatten(1)))


class Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


# vmap's fallback for operators without a batching rule (lerp_, attention's) warns of its speed
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop")

IMAGES, RGB = torch.randn(16, 1, 28, 28), torch.randn(16, 3, 16, 16)
CASES = {  # model, input, the nodes expected to run under vmap (no rule for them)
    "lenet": (LeNet, IMAGES, []),
    "mlp": (MLP, IMAGES, []),
    "batch-norm": (BatchNormNet, RGB, []),
    "residual": (Residual, RGB, []),
    "group-norm": (GroupNormNet, RGB, []),
    "conv1d": (Sequence1d, torch.randn(16, 2, 12), ["squeeze", "getitem"]),
    "tokens": (Tokens, torch.randint(0, 20, (16, 7)), ["embed", "mean"]),
    "dense": (Dense, IMAGES, []),
    "in-place": (InPlace, IMAGES, ["lerp_"]),
    "parts": (Parts, IMAGES, []),
    "excite": (lambda: Excite(p=0.0), IMAGES, []),
    "shuffle": (Shuffle, IMAGES, []),
    "attention": (Attention, torch.randint(0, 20, (16, 7)), ["embed", "attend", "mean"]),
    "dropout": (Dropouts, IMAGES, []),
}


def stacked(make, k: int = 3):
    torch.manual_seed(0)
    models = [make() for _ in range(k)]
    p, b = stack_module_state(models)
    for name in b:                       # batch norm statistics that are not the initial ones
        if "running" in name:
            b[name] = b[name] + torch.rand_like(b[name])
    return p, b, copy.deepcopy(models[0]).to("meta")


def vmapped(base, p, b, x):
    return vmap(lambda pp, bb, xx: functional_call(base, (pp, bb), (xx,)), in_dims=(0, 0, None),
                randomness="different")(p, b, x)


@pytest.mark.parametrize("case, training", [(case, training) for case in CASES for training in (True, False)
                                            if not (case == "dropout" and training)])   # other masks: below
def test_folded_outputs_gradients_and_buffers_equal_vmaps(case: str, training: bool) -> None:
    make, x, under_vmap = CASES[case]
    p, b, base = stacked(make)
    # In float64: the same sums added in another order (the CPU's threads do not keep one order
    # from run to run either) differ by ~1e-12, not float32's ~1e-4 of a gradient that cancels.
    p, b = ({n: v.detach().double() if v.is_floating_point() else v for n, v in d.items()} for d in (p, b))
    x = x.double() if x.is_floating_point() else x
    base.train(training)
    folded = FoldedForward(base)
    p = {name: v.requires_grad_(training) for name, v in p.items()}
    ours, theirs = {n: v.clone() for n, v in b.items()}, {n: v.clone() for n, v in b.items()}
    got, want = folded(p, ours, x), vmapped(base, p, theirs, x)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert folded.vmapped == under_vmap
    for name in b:                       # running statistics updated alike (in training), in place
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-10, atol=1e-10)
    if training and any("running" in name for name in b):
        assert not torch.equal(ours[next(n for n in b if "running_mean" in n)], b[next(n for n in b if "running_mean" in n)])
    if not training:                     # the engine evaluates without gradients (and attention
        return                           # in eval mode takes a fast path that has none)
    weights = list(p.values())
    ours_grads = torch.autograd.grad(got.square().sum(), weights)
    their_grads = torch.autograd.grad(want.square().sum(), weights)
    # a gradient near 0 that sums terms of hundreds: against the largest gradient, not its own size
    scale = max(float(g.abs().max()) for g in their_grads)
    for ours_grad, their_grad in zip(ours_grads, their_grads):
        torch.testing.assert_close(ours_grad, their_grad, rtol=1e-9, atol=1e-10 + 1e-10 * scale)


def test_lenets_activations_stay_folded_from_convolution_to_flatten(monkeypatch) -> None:
    """The point of folding: no copy of an activation between LeNet's layers (vmap makes four
    forward, and as many backward)."""
    copies = []
    fold = _folded._Run.folded

    def counting(run, v):
        if not isinstance(v, _folded.Folded):
            copies.append(type(v).__name__)
        return fold(run, v)

    monkeypatch.setattr(_folded._Run, "folded", counting)
    p, b, base = stacked(LeNet, k=4)
    assert FoldedForward(base)(p, b, IMAGES).shape == (4, 16, 10) and copies == []


def test_dropout_in_training_draws_each_trial_its_own_masks() -> None:
    torch.manual_seed(0)
    same = Dropouts()
    p, b = stack_module_state([same, same, same])
    folded = FoldedForward(copy.deepcopy(same).to("meta").train())
    out = folded(p, b, IMAGES)
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[1], out[2])
    folded.base.eval()
    out = folded(p, b, IMAGES)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_stochastic_depth_drops_each_trials_own_rows_which_vmap_cannot() -> None:
    torch.manual_seed(0)
    same = Excite(p=0.5)
    p, b = stack_module_state([same] * 4)
    folded = FoldedForward(copy.deepcopy(same).to("meta").train())
    out = folded(p, b, IMAGES)
    assert folded.vmapped == []
    kept = out.unsqueeze(1) == out.unsqueeze(0)                      # (K, K, B, classes)
    assert not kept.all(-1).all(-1).fill_diagonal_(False).any()       # no two trials drew alike
    with pytest.raises(RuntimeError, match="randomness"):
        vmapped(folded.base, p, b, IMAGES)


def test_a_model_fx_cannot_trace_is_not_foldable() -> None:
    with pytest.raises(NotFoldable, match="torch.fx cannot trace the model"):
        FoldedForward(Branches().to("meta"))


def test_an_activation_reshaped_in_place_is_not_foldable() -> None:
    p, b, base = stacked(lambda: InPlace(reshape=True))
    with pytest.raises(NotFoldable, match=r"changes an activation's shape in place \(.transpose_\(\)\)"):
        FoldedForward(base)(p, b, IMAGES)


def engines(make, **options):
    specs = [TrialSpec("constant", {}, seed=1), TrialSpec("cosine", {}, seed=2)]
    return [FusedTrials(make, specs, base_lr=0.05, total_steps=6, steps_per_epoch=3, vectorize=True, fold=fold,
                        **options) for fold in (True, False)]


@pytest.mark.parametrize("make", [LeNet, BatchNormNet], ids=["lenet", "batch-norm"])
def test_an_engine_trains_folded_as_it_trains_vmapped(make) -> None:
    x = IMAGES if make is LeNet else RGB
    folded, whole = engines(make)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        y = torch.randint(0, 10, (16,), generator=g)
        folded.step(x, y)
        whole.step(x, y)
    assert folded.mode.forward == "folded" and whole.mode.forward == "vmapped"
    # four SGD steps through batch norm over 16 images amplify the float rounding of another order
    torch.testing.assert_close(folded.flat, whole.flat, rtol=1e-3, atol=2e-4)
    for name in folded.buffers:
        torch.testing.assert_close(folded.buffers[name], whole.buffers[name], rtol=1e-3, atol=2e-4)
    val = ImageData(x[:10], torch.arange(10))           # validation in eval mode, folded too
    for ours, theirs in zip(folded.evaluate(val), whole.evaluate(val)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-4)
    assert folded.mode.forward == "folded" and folded.base.training


def test_the_log_says_the_trials_run_folded_and_what_runs_under_vmap(caplog) -> None:
    engine, _ = engines(Tokens)
    with caplog.at_level(logging.INFO, logger="lrfind"):
        engine.step(torch.randint(0, 20, (16, 7)), torch.randint(0, 5, (16,)))
    assert "the 2 trials run folded into the channels; 2 operation(s) without a rule run under vmap: embed, mean" \
        in caplog.text


def test_an_untraceable_model_is_vmapped_whole(caplog) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)) * (2 if x.sum() > 0 else 1)     # vmap runs it; fx cannot trace it

    with caplog.at_level(logging.INFO, logger="lrfind"):
        engine, _ = engines(Net)
    assert engine.guess.forward == "vmapped" and "vmapped whole: torch.fx cannot trace" in caplog.text


def test_folded_outputs_that_differ_from_vmaps_fall_back_with_a_warning(monkeypatch, caplog) -> None:
    monkeypatch.setitem(_folded_rules.FUNCTIONS, F.relu, lambda run, x, **kw: _folded.Folded(x.t * 0.5, x.c)
                        if isinstance(x, _folded.Folded) else NotImplemented)      # a wrong rule
    engine, reference = engines(LeNet)
    y = torch.randint(0, 10, (16,))
    with caplog.at_level(logging.WARNING, logger="lrfind"):
        engine.step(IMAGES, y)
    reference.step(IMAGES, y)
    assert engine.mode.forward == "vmapped" and "outputs differ from the trials' own" in caplog.text
    torch.testing.assert_close(engine.flat, reference.flat)              # the step ran vmapped whole


def tf32_settings() -> tuple:
    """Convolutions' and matrix products' float32 precision, by torch's newer settings where they exist."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        return torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_the_first_step_compares_in_float32_without_tf32(monkeypatch) -> None:
    """cuDNN's TF32 (on by default) rounds to 1e-3, differently for the folded and the lone shapes."""
    seen = []
    real = FoldedForward.__call__

    def spy(self, *args):
        if not self.base.training:                       # the comparison (eval mode)
            seen.append(tf32_settings())
        return real(self, *args)

    monkeypatch.setattr(FoldedForward, "__call__", spy)
    before = tf32_settings()
    engine, _ = engines(LeNet)
    engine.step(IMAGES, torch.randint(0, 10, (16,)))
    assert seen == [("ieee", "ieee") if isinstance(before[0], str) else (False, False)]
    assert tf32_settings() == before and engine.mode.forward == "folded"


@pytest.mark.parametrize("api", ["legacy", "new"])
def test_the_float32_comparison_leaves_a_users_tf32_settings_as_they_were(api: str) -> None:
    from lrfind._device import exact_float32

    if api == "new" and not hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        pytest.skip("torch before 2.9 has only the allow_tf32 flags")
    saved = tf32_settings()
    try:
        if api == "new":       # after these, reading the allow_tf32 flags raises
            torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "tf32"
        else:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        before = tf32_settings()
        with exact_float32():
            pass
        assert tf32_settings() == before
    finally:
        if isinstance(saved[0], str):
            torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved
        else:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
