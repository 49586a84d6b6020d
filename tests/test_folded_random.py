"""Random CNNs, written as source and traced as users' models are: the trials folded into the
channels compute what the trials compute one by one (as vmap does), for whatever mix of the folded
rules (and the operators that fall back to vmap between them) a model strings together.

The hand-written cases of test_folded.py show each rule; these find the combinations no one wrote
down. 6,000 seeds were run once by hand (2026-11-25) without a difference (the first 1,500: 1,299
models compared, and 201 with batch norm's cumulative average, which vmap refuses in training and
the folded forward with it). The test keeps 120 of them, in float64 so that a difference of layout cannot hide
inside float32's rounding (2.4 s on the 2-core CPU).
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from lrfind.engine.folded import FoldedForward

pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop")


class _Writer:
    """A model's ``__init__`` and ``forward`` lines, and one trial's activation shape (C, H, W)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.init, self.body = rng, [], []
        self.c, self.h, self.w = rng.choice([1, 2, 3]), rng.choice([8, 9, 12]), rng.choice([8, 10, 12])
        self.input = (self.c, self.h, self.w)
        self.permuted = False        # strides that torch's view(n, -1) refuses

    def module(self, expr: str) -> str:
        self.init.append(f"self.m{len(self.init)} = {expr}")
        return f"self.m{len(self.init) - 1}"

    def line(self, *lines: str) -> None:
        self.body.extend(lines)

    def source(self) -> str:
        return ("class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                + "".join(f"        {s}\n" for s in self.init)
                + "    def forward(self, x):\n" + "".join(f"        {s}\n" for s in self.body))


def _layer(m: _Writer, op: str) -> None:
    """One layer of kind ``op`` where the shape admits it (else none)."""
    rng, c, h, w = m.rng, m.c, m.h, m.w
    if op == "conv":
        out, k = rng.choice([4, 6, 8]), rng.choice([1, 3])
        m.line(f"h = {m.module(f'nn.Conv2d({c}, {out}, {k}, padding={k // 2}, bias={rng.random() < 0.5})')}(h)")
        m.c = out
    elif op == "grouped" and c % 2 == 0:
        m.line(f"h = {m.module(f'nn.Conv2d({c}, {c}, 3, padding=1, groups={rng.choice([2, c])})')}(h)")
    elif op == "depthwise":
        m.line(f"h = {m.module(f'nn.Conv2d({c}, {2 * c}, 3, padding=2, dilation=2, groups={c}, bias=False)')}(h)")
        m.c = 2 * c
    elif op == "strided" and h >= 4 and w >= 4:
        m.line(f"h = {m.module(f'nn.Conv2d({c}, {c}, 3, stride=2, padding=1)')}(h)")
        m.h, m.w = (h + 1) // 2, (w + 1) // 2
    elif op == "reflect":                        # no rule: under vmap
        conv = f'nn.Conv2d({c}, {c}, 3, padding=1, padding_mode="reflect")'
        m.line(f"h = {m.module(conv)}(h)")
    elif op == "residual":
        m.line(f"h = h + {m.module(f'nn.Conv2d({c}, {c}, 3, padding=1)')}(h) * 0.5")
    elif op == "batch-norm":
        affine, track = rng.random() < 0.8, rng.random() < 0.8
        m.line(f"h = {m.module(f'nn.BatchNorm2d({c}, affine={affine}, track_running_stats={track})')}(h)")
    elif op == "batch-norm-cumulative":         # its factor, 1 / batches seen, is a number read from a tensor
        m.line(f"h = {m.module(f'nn.BatchNorm2d({c}, momentum=None)')}(h)")
    elif op == "group-norm" and c % 2 == 0:
        m.line(f"h = {m.module(f'nn.GroupNorm(2, {c})')}(h)")
    elif op == "layer-norm-channels-last":
        m.line(f"h = {m.module(f'nn.LayerNorm({c})')}(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)")
        m.permuted = True
    elif op == "activation":
        act = rng.choice(["nn.ReLU()", "nn.GELU()", "nn.Tanh()", "nn.SiLU()", "nn.LeakyReLU(0.1)", "nn.Hardswish()",
                          "nn.ReLU(inplace=True)", "nn.Dropout(0.0)", "nn.Dropout2d(0.0)"])
        m.line(*(["h = h - 0.25"] if "inplace" in act else []), f"h = {m.module(act)}(h)")
    elif op == "function":
        m.line(f"h = {rng.choice(['F.relu', 'torch.sigmoid', 'F.gelu', 'torch.tanh', 'F.elu'])}(h)",)
    elif op == "method":
        m.line(f"h = h.{rng.choice(['relu', 'tanh', 'sigmoid', 'abs'])}()")
    elif op == "arithmetic":
        m.line(rng.choice(["h = 2 - h", "h = h / 3", "h = h - 0.1", "h = torch.add(h, h.tanh())",
                           "h = torch.mul(h, 0.5)", "h = h / (1 + h.abs())"]))
    elif op == "in-place":                       # on a tensor of its own: an operator before may keep h for its backward
        m.line("h = h - 0.25", rng.choice(["h.mul_(1.5)", "h.add_(h)", "h.clamp_(-2, 2)", "h.relu_()"]))
    elif op == "pool" and h >= 4 and w >= 4:
        m.line(f"h = {rng.choice(['F.max_pool2d', 'F.avg_pool2d'])}(h, 2)")
        m.h, m.w = h // 2, w // 2
    elif op == "adaptive" and h >= 3 and w >= 3:
        m.line(f"h = {rng.choice(['F.adaptive_avg_pool2d', 'F.adaptive_max_pool2d'])}(h, (3, 3))")
        m.h = m.w = 3
    elif op == "scale":
        view = rng.choice([f"({c}, 1, 1)", f"(1, {c}, 1, 1)"])
        m.line(f"h = h * {m.module(f'nn.Parameter(torch.linspace(0.5, 1.5, {c}))')}.view{view}")
    elif op == "gain":
        m.line(f"h = h * {m.module('nn.Parameter(torch.tensor([1.3]))')}")
    elif op == "excite":
        m.line(f"h = h * torch.sigmoid({m.module(f'nn.Conv2d({c}, {c}, 1)')}(h.mean((2, 3), keepdim=True)))")
    elif op == "reduce":
        m.line(rng.choice(["h = h - torch.amax(h, (2, 3), keepdim=True)", "h = h * h.sum(-1, keepdim=True)",
                           "h = h * torch.sigmoid(torch.sum(h, 1, keepdim=True))"]))
    elif op == "expand" and w > 1:
        m.line(f"h = h + h.mean(-1, keepdim=True).expand(-1, -1, -1, {w})")
    elif op == "concatenate":
        m.line("h = torch.cat([h, h * 2], 1)")
        m.c = 2 * c
    elif op == "concatenate-width":
        m.line("h = torch.cat([h, h.flip(-1)], -1)")
        m.w = 2 * w
    elif op == "chunk" and c % 2 == 0:
        m.line("a, b = h.chunk(2, dim=1)", "h = a * torch.sigmoid(b)")
        m.c = c // 2
    elif op == "split" and c >= 3:
        m.line(f"a, b = torch.split(h, [1, {c - 1}], 1)", "h = torch.cat([b, a * 2], 1)")
    elif op == "slice" and c > 2:
        m.line("h = h[:, 1:]")
        m.c = c - 1
    elif op == "slice-height" and h > 3:
        m.line("h = h[:, :, 1:, :]")
        m.h, m.permuted = h - 1, True
    elif op == "channels-last":
        m.line("h = F.gelu(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)")
        m.permuted = True
    elif op == "transpose" and h == w:
        m.line("h = h.transpose(2, 3)")
        m.permuted = True
    elif op == "shuffle" and c % 2 == 0:
        m.line(f"h = h.view(h.size(0), 2, {c // 2}, {h}, {w}).transpose(1, 2).contiguous().view(h.size(0), -1, {h}, {w})")


LAYERS = ("conv", "grouped", "depthwise", "strided", "reflect", "residual", "batch-norm", "batch-norm-cumulative",
          "group-norm",
          "layer-norm-channels-last", "activation", "function", "method", "arithmetic", "in-place", "pool",
          "adaptive", "scale", "gain", "excite", "reduce", "expand", "concatenate", "concatenate-width", "chunk",
          "split", "slice", "slice-height", "channels-last", "transpose", "shuffle")


def random_model(seed: int) -> tuple[str, tuple[int, int, int]]:
    """A CNN's source: a convolution, 2 to 7 random layers, a flatten or a global pooling, linear
    layers (with a residual, a concatenation or a reshape among them, now and then)."""
    rng = random.Random(seed)
    m = _Writer(rng)
    out = rng.choice([4, 6, 8])
    m.line(f"h = {m.module(f'nn.Conv2d({m.c}, {out}, 3, padding=1, bias={rng.random() < 0.7})')}(x)")
    m.c = out
    for _ in range(rng.randint(2, 7)):
        _layer(m, rng.choice(LAYERS))
    view = "reshape" if m.permuted else "view"
    end = rng.choice(["h = h.flatten(1)", f"h = h.{view}(h.size(0), -1)", "h = h.mean((2, 3))", "nn.Flatten()"])
    m.line(f"h = {m.module(end)}(h)" if end.startswith("nn.") else end)
    features = m.c if "mean" in end else m.c * m.h * m.w
    m.line(f"h = {m.module(f'nn.Linear({features}, 12)')}(h)")
    if rng.random() < 0.5:
        m.line("h = F.relu(h)")
    if rng.random() < 0.3:
        m.line(f"h = h + {m.module('nn.Linear(12, 12)')}(h)")
    if rng.random() < 0.3:
        m.line(rng.choice(["h = torch.cat([h[:, :6], h[:, 6:] * 2], 1)", "h = h.view(-1, 3, 4).tanh().reshape(h.size(0), 12)",
                           "h = F.dropout(h, 0.0)", "h = h * torch.sigmoid(h).sum(1, keepdim=True)"]))
    m.line(f"return {m.module('nn.Linear(12, 5)')}(h)")
    return m.source(), m.input


def _looped(base: nn.Module, p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
    """The trials one after another: what folding and vmap both stand in for."""
    k = len(next(iter(p.values())))
    return torch.stack([functional_call(base, ({n: v[i] for n, v in p.items()}, {n: v[i] for n, v in b.items()}), (x,))
                        for i in range(k)])


def _outputs_and_gradients(forward, base, p, b, x) -> tuple[torch.Tensor, tuple]:
    out = forward(base, p, b, x)
    return out, torch.autograd.grad(out.square().sum(), list(p.values()), allow_unused=True)


def _folded(base, p, b, x) -> torch.Tensor:
    return FoldedForward(base)(p, b, x)


def _vmapped(base, p, b, x) -> torch.Tensor:
    return vmap(lambda pp, bb, xx: functional_call(base, (pp, bb), (xx,)), in_dims=(0, 0, None))(p, b, x)


@pytest.mark.parametrize("seed", range(120))
def test_a_random_cnn_folded_computes_what_its_trials_compute_alone(seed: int) -> None:
    """Outputs, gradients and buffers (batch norm's statistics) as the trials' own forward passes
    give them, in training and in evaluation. Where the folded forward raises, vmap must raise too
    (batch norm's cumulative average, ``momentum=None``, reads a number: the engine then loops the
    trials)."""
    source, shape = random_model(seed)
    scope = {"nn": nn, "F": F, "torch": torch}
    exec(source, scope)
    torch.manual_seed(seed)
    models = [scope["Net"]().double() for _ in range(3)]
    p, b = stack_module_state(models)
    b = {name: v + torch.rand_like(v) if "running" in name else v for name, v in b.items()}
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(6, *shape, dtype=torch.float64)
    for training in (True, False):
        base.train(training)
        p = {name: v.detach().requires_grad_(True) for name, v in p.items()}
        ours, theirs = {n: v.clone() for n, v in b.items()}, {n: v.clone() for n, v in b.items()}
        want, want_grads = _outputs_and_gradients(_looped, base, p, theirs, x)
        try:
            got, got_grads = _outputs_and_gradients(_folded, base, p, ours, x)
        except Exception:
            with pytest.raises(Exception):
                _vmapped(base, p, {n: v.clone() for n, v in b.items()}, x)
            continue
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=lambda m: f"{m}\n{source}")
        for name in b:
            torch.testing.assert_close(ours[name], theirs[name], rtol=1e-10, atol=1e-10,
                                       msg=lambda m: f"{name}: {m}\n{source}")
        # A bias that batch norm or a subtracted maximum cancels has a gradient of 0 up to rounding,
        # ~1e-10 here: against the model's largest gradient, not its own size
        scale = max(float(g.abs().max()) for g in want_grads if g is not None and g.numel())
        for name, ours_grad, their_grad in zip(p, got_grads, want_grads):
            torch.testing.assert_close(ours_grad, their_grad, rtol=1e-9, atol=1e-10 + 1e-9 * scale,
                                       msg=lambda m: f"{name}: {m}\n{source}")
