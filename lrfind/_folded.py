"""K trials' forward pass with the trials folded into the channels: one (B, K*C, H, W) activation.

vmap batches a convolution over K trials by folding them into its channels (a grouped convolution
on (B, K*C, H, W)), but hands every other operator the trials on the batch axis, (K*B, C, H, W).
Between a convolution and its pooling it therefore copies the whole activation twice: to add the
bias with the trials in front, and to make that contiguous for the pooling. Backward copies the
gradients back the same way. At K=50 and batch 128 LeNet's first activation is 138 MB, so these
copies move about 1.2 GB a step (counted from the operators vmap runs, not measured on a GPU).

Here the activations stay folded from one layer to the next. Pooling, activations, dropout, batch
norm and a scale per channel work channel by channel, so they run on the folded tensor as it is
(group norm too, with K times the groups), and so do slices, splits and concatenations of
channels. A convolution of folded input is a grouped one (K times its own groups), bias included.
A flatten turns the folded tensor into a (K, B, features) view without a copy, and linear layers
are then batched matmuls.

The model's forward is traced with ``torch.fx`` and run node by node. An operator without a rule
here runs under vmap on (K, ...) tensors, as the whole model would, so every traceable model gives
the same outputs as ``vmap(model)``; one fx cannot trace (a branch on a tensor's value) is not
folded at all (``NotFoldable``).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree


class NotFoldable(Exception):
    """The model's forward cannot be run folded: the engine vmaps it whole."""


@dataclass(frozen=True)
class Folded:
    """Every trial's (B, C, *spatial) activation, folded: (B, K*C, *spatial), trial k's channels at
    [k*C, (k+1)*C)."""

    t: torch.Tensor
    c: int


@dataclass(frozen=True)
class Stacked:
    """Every trial's value on a leading trials axis: (K, *shape), of any strides."""

    t: torch.Tensor


_Trial = (Folded, Stacked)


class FoldedForward:
    """``forward(p, b, x) -> (K, B, ...)``: the outputs of the K trials whose parameters and buffers
    are the (K, ...) tensors ``p`` and ``b``, on the shared batch ``x``; as
    ``vmap(functional_call(base, ...), in_dims=(0, 0, None))`` computes them.

    ``base`` is read at every call, so its ``train()``/``eval()`` mode counts; its own tensors are
    never used (it may live on the meta device)."""

    def __init__(self, base: nn.Module) -> None:
        try:
            self.graph = fx.symbolic_trace(base).graph
        except Exception as e:                   # fx says TraceError, NotImplementedError, TypeError, ...
            raise NotFoldable(f"torch.fx cannot trace the model ({type(e).__name__}: {e})") from e
        inputs = [n for n in self.graph.nodes if n.op == "placeholder"]
        if not inputs or any(not n.args for n in inputs[1:]):
            raise NotFoldable("the model's forward takes other than one input")
        self.base = base
        self.vmapped: list[str] = []             # the last call's nodes run under vmap (no rule, trial values)

    def __call__(self, p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        run = _Run(self.base, p, b)
        self.vmapped = run.vmapped_nodes
        env: dict[fx.Node, Any] = {}
        for node in self.graph.nodes:
            if node.op == "output":
                out = fx.node.map_arg(node.args[0], env.__getitem__)
                if not isinstance(out, (torch.Tensor, *_Trial)):
                    raise NotFoldable(f"the model returns {type(out).__name__}, not a tensor")
                return run.stacked(out)
            if node.op == "placeholder":
                env[node] = x if not env else node.args[0]
            else:
                env[node] = run.node(node, env)
        raise NotFoldable("the traced forward has no output")


class _Run:
    """One call's values: the trials' parameters and buffers, and the layout rules."""

    def __init__(self, base: nn.Module, p: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
        self.base, self.p, self.b = base, p, b
        self.k = len(next(iter(p.values())))
        self.vmapped_nodes: list[str] = []

    # -- layouts -------------------------------------------------------------------------------
    def stacked(self, v: Any) -> torch.Tensor:
        """(K, *shape) of a trial value; a shared tensor is expanded (no copy)."""
        if isinstance(v, Folded):
            return v.t.unflatten(1, (self.k, v.c)).movedim(1, 0)
        if isinstance(v, Stacked):
            return v.t
        return v.expand(self.k, *v.shape)

    def folded(self, v: Any) -> Folded:
        """A (B, C, ...) value folded; from the stacked layout this copies."""
        if isinstance(v, Folded):
            return v
        if isinstance(v, Stacked):
            return Folded(v.t.movedim(0, 1).flatten(1, 2), v.t.shape[2])
        return Folded(v.repeat(1, self.k, *[1] * (v.dim() - 2)), v.shape[1])

    @staticmethod
    def shape(v: Any) -> tuple[int, ...]:
        """One trial's shape."""
        if isinstance(v, Folded):
            return (v.t.shape[0], v.c, *v.t.shape[2:])
        return tuple(v.t.shape[1:]) if isinstance(v, Stacked) else tuple(v.shape)

    def weight(self, module: str, name: str) -> torch.Tensor | None:
        full = f"{module}.{name}" if module else name
        return self.p.get(full, self.b.get(full))

    # -- nodes ---------------------------------------------------------------------------------
    def node(self, node: fx.Node, env: dict) -> Any:
        args = fx.node.map_arg(node.args, env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
        if node.op == "get_attr":
            return self.attribute(node.target)
        if node.op == "call_module":
            module = self.base.get_submodule(node.target)
            rule = _MODULES.get(type(module))
            out = rule(self, module, node.target, *args, **kwargs) if rule else NotImplemented
            if out is NotImplemented:
                out = self.vmapped(node.name, lambda pb, *a, **kw: functional_call(module, pb, a, kw), args, kwargs,
                                   self.own(module, node.target), in_place=getattr(module, "inplace", False))
            return out
        if node.op == "call_function":
            fn = node.target
            rule = _FUNCTIONS.get(fn) or _FUNCTIONS_BY_NAME.get((getattr(fn, "__module__", None),
                                                                 getattr(fn, "__name__", None)))
        else:                                    # call_method
            fn, rule = _method(node.target), _METHODS.get(node.target)
        out = rule(self, *args, **kwargs) if rule else NotImplemented
        if out is NotImplemented:
            if node.op == "call_method" and node.target in _RESHAPES_IN_PLACE and isinstance(args[0], _Trial):
                raise NotFoldable(f"the model changes an activation's shape in place (.{node.target}())")
            in_place = getattr(node.target, "__name__", node.target).endswith("_") or kwargs.get("inplace") is True
            out = self.vmapped(node.name, lambda pb, *a, **kw: fn(*a, **kw), args, kwargs, ({}, {}), in_place=in_place)
        return out

    def attribute(self, target: str) -> Any:
        if target in self.p:
            return Stacked(self.p[target])
        if target in self.b:
            return Stacked(self.b[target])
        value = self.base
        for part in target.split("."):
            value = getattr(value, part)
        if isinstance(value, torch.Tensor):      # a plain tensor attribute: on the engine's meta copy
            raise NotFoldable(f"the model reads a tensor attribute, {target}, that is no parameter or buffer")
        return value

    def own(self, module: nn.Module, target: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """A submodule's (K, ...) parameters and buffers (frozen parameters are among the buffers)."""
        names = [n for n, _ in module.named_parameters()] + [n for n, _ in module.named_buffers()]
        full = {n: f"{target}.{n}" for n in names}
        return ({n: self.p[f] for n, f in full.items() if f in self.p},
                {n: self.b[f] for n, f in full.items() if f not in self.p and f in self.b})

    def vmapped(self, name: str, fn: Callable[..., Any], args: tuple, kwargs: dict,
                own: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]], in_place: bool = False) -> Any:
        """``fn(own, *args, **kwargs)`` of every trial, under vmap on the stacked layout; without
        anything per trial, once. The trial values are made contiguous, as vmap(model) would see
        them, unless ``fn`` writes into them (``x.relu_()``): then the write must reach them."""
        leaves, spec = pytree.tree_flatten((args, kwargs))
        at = [i for i, v in enumerate(leaves) if isinstance(v, _Trial)]
        if not at and not own[0] and not own[1]:
            a, kw = pytree.tree_unflatten(leaves, spec)
            return fn(own, *a, **kw)
        self.vmapped_nodes.append(name)
        trial = [self.stacked(leaves[i]) if in_place else self.stacked(leaves[i]).contiguous() for i in at]
        result: list = []                        # the output's structure and its other leaves (None, ints)

        def call(pb, *values):
            filled = list(leaves)
            for i, v in zip(at, values):
                filled[i] = v
            a, kw = pytree.tree_unflatten(filled, spec)
            out, out_spec = pytree.tree_flatten(fn(pb, *a, **kw))
            result[:] = [out, out_spec]
            return tuple(v for v in out if isinstance(v, torch.Tensor))   # vmap returns tensors only

        tensors = iter(vmap(call, randomness="different")(own, *trial))
        out, out_spec = result
        return pytree.tree_unflatten([Stacked(next(tensors)) if isinstance(v, torch.Tensor) else v for v in out],
                                     out_spec)


_RESHAPES_IN_PLACE = {"transpose_", "t_", "squeeze_", "unsqueeze_", "resize_", "resize_as_", "as_strided_",
                      "swapdims_", "swapaxes_", "set_"}


def _method(name: str) -> Callable[..., Any]:
    return lambda self, *a, **kw: getattr(self, name)(*a, **kw)


# -- rules: each returns the node's value, or NotImplemented to run it under vmap ---------------------
def _conv(run: _Run, m: nn.Module, target: str, x: Any) -> Any:
    dims = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}[type(m)]
    if m.padding_mode != "zeros" or len(run.shape(x)) != dims + 2 or run.shape(x)[1] != m.in_channels:
        return NotImplemented
    w, bias = run.weight(target, "weight"), run.weight(target, "bias")
    out = w.shape[1]
    if w.stride(2) == 1 and dims > 1:            # channels-last weights stay channels-last
        w = w.movedim(2, -1).reshape(run.k * out, *w.shape[3:], w.shape[2]).movedim(-1, 1)
    else:
        w = w.reshape(run.k * out, *w.shape[2:])
    bias = None if bias is None else bias.reshape(-1)
    conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    if isinstance(x, torch.Tensor) and m.groups == 1:    # every trial's on the same input: no groups
        return Folded(conv(x, w, bias, m.stride, m.padding, m.dilation, 1), out)
    return Folded(conv(run.folded(x).t, w, bias, m.stride, m.padding, m.dilation, run.k * m.groups), out)


def _batch_norm(run: _Run, m: nn.Module, target: str, x: Any) -> Any:
    dims = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}[type(m)]
    if not isinstance(x, Folded) or x.t.dim() not in dims or x.c != m.num_features:
        return NotImplemented
    if m.training and m.track_running_stats and m.momentum is None:
        return NotImplemented                    # a cumulative average: its factor is a host number
    stats = [run.weight(target, n) for n in ("running_mean", "running_var")]
    if any(s is not None and not s.is_contiguous() for s in stats):
        return NotImplemented                    # updated in place: they must be views
    mean, var = (None if s is None else s.view(-1) for s in stats)
    affine = [run.weight(target, n) for n in ("weight", "bias")]
    weight, bias = (None if a is None else a.reshape(-1) for a in affine)
    if m.training and m.track_running_stats:
        run.weight(target, "num_batches_tracked").add_(1)
    use_batch = m.training or (mean is None and var is None)
    keep = not m.training or m.track_running_stats
    return Folded(F.batch_norm(x.t, mean if keep else None, var if keep else None, weight, bias, use_batch,
                               m.momentum or 0.0, m.eps), x.c)


def _group_norm(run: _Run, m: nn.GroupNorm, target: str, x: Any) -> Any:
    """Trial k's G groups of C/G channels are groups k*G to (k+1)*G - 1 of the folded channels."""
    if not isinstance(x, Folded) or x.c != m.num_channels:
        return NotImplemented
    affine = [run.weight(target, n) for n in ("weight", "bias")]
    weight, bias = (None if a is None else a.reshape(-1) for a in affine)
    return Folded(F.group_norm(x.t, run.k * m.num_groups, weight, bias, m.eps), x.c)


def _linear(run: _Run, m: nn.Module, target: str, x: Any) -> Any:
    w, bias = run.weight(target, "weight"), run.weight(target, "bias")
    if run.shape(x)[-1:] != (m.in_features,):
        return NotImplemented
    out = w.shape[1]
    if isinstance(x, torch.Tensor):              # shared input: one matmul for every trial
        y = F.linear(x, w.reshape(run.k * out, -1), None if bias is None else bias.reshape(-1))
        return Stacked(y.unflatten(-1, (run.k, out)).movedim(-2, 0))
    if isinstance(x, Folded) and x.t.dim() == 2:          # after a global pooling by mean((2, 3))
        x = Stacked(run.stacked(x))
    if isinstance(x, Stacked) and x.t.dim() == 3:
        wt = w.transpose(1, 2)
        return Stacked(torch.bmm(x.t, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), x.t, wt))
    return NotImplemented


def _per_element(run: _Run, fn: Callable[..., Any], elementwise: bool, x: Any, *args: Any, **kwargs: Any) -> Any:
    """An operator that treats every channel alone (pooling), or every element (``elementwise``)."""
    if any(isinstance(a, (torch.Tensor, *_Trial)) for a in pytree.tree_leaves((args, kwargs))):
        return NotImplemented
    if isinstance(x, Folded):
        out = fn(x.t, *args, **kwargs)
        return tuple(Folded(o, x.c) for o in out) if isinstance(out, tuple) else Folded(out, x.c)
    if isinstance(x, Stacked) and elementwise:
        return Stacked(fn(x.t, *args, **kwargs))
    return NotImplemented


_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
                        nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Identity,
                        nn.Dropout)
_CHANNEL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_ELEMENTWISE_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu,
                          F.mish, torch.tanh, F.tanh, torch.sigmoid, F.sigmoid, F.hardtanh, F.hardswish,
                          F.hardsigmoid, F.softplus, F.dropout)
_CHANNEL_FUNCTIONS = (F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                      F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
                      F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.dropout1d, F.dropout2d, F.dropout3d)
_ELEMENTWISE_METHODS = ("relu", "sigmoid", "tanh", "exp", "neg", "abs", "sqrt", "detach", "clone", "float", "half",
                        "bfloat16")


def _module_per_element(run: _Run, m: nn.Module, target: str, x: Any, *args: Any, **kwargs: Any) -> Any:
    return _per_element(run, m, isinstance(m, _ELEMENTWISE_MODULES), x, *args, **kwargs)


def _function_per_element(fn: Callable[..., Any], elementwise: bool) -> Callable[..., Any]:
    return lambda run, x, *args, **kwargs: _per_element(run, fn, elementwise, x, *args, **kwargs)


def _flatten(run: _Run, x: Any, start_dim: int = 0, end_dim: int = -1) -> Any:
    n = len(run.shape(x))
    start, end = start_dim % n, end_dim % n
    if isinstance(x, torch.Tensor):
        return x.flatten(start, end)
    if isinstance(x, Stacked):
        return Stacked(x.t.flatten(start + 1, end + 1))
    if start == 1 and end == n - 1:              # (B, K*C, ...) -> (K, B, C*...): a view
        return Stacked(run.stacked(x).flatten(2))
    if start >= 2:
        return Folded(x.t.flatten(start, end), x.c)
    return NotImplemented


def _flatten_module(run: _Run, m: nn.Flatten, target: str, x: Any) -> Any:
    return _flatten(run, x, m.start_dim, m.end_dim)


def _reshape(run: _Run, x: Any, *shape: Any) -> Any:
    """A trial's reshape. Of a folded activation that keeps its batch axis: still folded, for each
    sample's K blocks of a trial's elements stay K blocks (``x.view(n, g, c // g, h, w)``)."""
    if not isinstance(x, _Trial):
        return NotImplemented
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if not all(isinstance(s, int) for s in shape):
        return NotImplemented
    own = run.shape(x)
    if isinstance(x, Folded) and len(shape) >= 2 and shape[0] in (own[0], -1):
        per_sample = x.t[0].numel() // run.k
        rest = list(shape[1:])
        if rest.count(-1) == 1:
            known = math.prod(n for n in rest if n != -1)
            rest[rest.index(-1)] = per_sample // known if known and per_sample % known == 0 else -1
        if -1 not in rest and math.prod(rest) == per_sample:
            if len(rest) == 1:
                return _flatten(run, x, 1, -1)    # x.view(x.size(0), -1) after a convolution
            return Folded(x.t.reshape(own[0], run.k * rest[0], *rest[1:]), rest[0])
    return Stacked(run.stacked(x).reshape(run.k, *shape))


def _permuted(run: _Run, x: Folded, order: list[int]) -> Any:
    """A trial's axes in ``order`` (its batch axis first), folded again: a copy where the channel
    axis moves."""
    if order == list(range(len(order))):
        return x
    if order[1] == 1:                            # the channels stay: only the other axes move
        return Folded(x.t.permute(order), x.c)
    moved = x.t.unflatten(1, (run.k, x.c)).permute(0, 1, *[i + 1 for i in order[1:]])
    return Folded(moved.flatten(1, 2), moved.shape[2])


def _transpose(run: _Run, x: Any, dim0: int, dim1: int) -> Any:
    if not isinstance(x, Folded) or not isinstance(dim0, int) or not isinstance(dim1, int):
        return NotImplemented
    n = x.t.dim()
    order = list(range(n))
    order[dim0 % n], order[dim1 % n] = order[dim1 % n], order[dim0 % n]
    return _permuted(run, x, order) if order[0] == 0 else NotImplemented


def _permute(run: _Run, x: Any, *dims: Any) -> Any:
    dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    if not isinstance(x, Folded) or len(dims) != x.t.dim() or not all(isinstance(d, int) for d in dims):
        return NotImplemented
    order = [d % x.t.dim() for d in dims]
    return _permuted(run, x, order) if order[0] == 0 else NotImplemented


def _binary(op: Callable[..., Any]) -> Callable[..., Any]:
    def rule(run: _Run, a: Any, b: Any, **kwargs: Any) -> Any:
        if kwargs:
            return NotImplemented
        if isinstance(b, (int, float)) and isinstance(a, _Trial):
            return type(a)(op(a.t, b), a.c) if isinstance(a, Folded) else Stacked(op(a.t, b))
        if isinstance(a, (int, float)) and isinstance(b, _Trial):
            return type(b)(op(a, b.t), b.c) if isinstance(b, Folded) else Stacked(op(a, b.t))
        if not (isinstance(a, _Trial) and isinstance(b, _Trial)):
            return NotImplemented
        if isinstance(a, Folded) and isinstance(b, Folded) and a.c == b.c and a.t.dim() == b.t.dim():
            return Folded(op(a.t, b.t), a.c)     # a residual connection, a squeeze-and-excitation's scale
        if isinstance(a, Folded) and (t := _per_channel(run, a, b)) is not None:
            return Folded(op(a.t, t), a.c)       # a scale or shift per channel
        if isinstance(b, Folded) and (t := _per_channel(run, b, a)) is not None:
            return Folded(op(t, b.t), b.c)
        if len(run.shape(a)) != len(run.shape(b)):
            return NotImplemented                # broadcasting would align the trials axis wrongly
        return Stacked(op(run.stacked(a), run.stacked(b)))
    return rule


def _per_channel(run: _Run, x: Folded, v: Any) -> torch.Tensor | None:
    """A trial value that broadcasts against a folded activation without mixing its batch, a
    parameter of shape (C, 1, 1) say, as the folded (1, K*C, ...) tensor; None for any other."""
    shape = run.shape(v)
    if not isinstance(v, Stacked) or len(shape) > x.t.dim():
        return None
    shape = (1,) * (x.t.dim() - len(shape)) + tuple(shape)
    if shape[0] != 1 or shape[1] not in (1, x.c):
        return None
    rest = shape[2:]
    return v.t.reshape(run.k, shape[1], *rest).expand(run.k, x.c, *rest).reshape(1, run.k * x.c, *rest)


def _cat(run: _Run, tensors: Any, dim: int = 0) -> Any:
    if not tensors or not all(isinstance(v, _Trial) for v in tensors):
        return NotImplemented
    n = len(run.shape(tensors[0]))
    if any(len(run.shape(v)) != n for v in tensors):
        return NotImplemented
    dim %= n
    if dim == 1 and all(isinstance(v, Folded) for v in tensors):     # channels: a dense block's
        parts = [v.t.unflatten(1, (run.k, v.c)) for v in tensors]
        return Folded(torch.cat(parts, 2).flatten(1, 2), sum(v.c for v in tensors))
    if dim >= 2 and all(isinstance(v, Folded) and v.c == tensors[0].c for v in tensors):
        return Folded(torch.cat([v.t for v in tensors], dim), tensors[0].c)
    return Stacked(torch.cat([run.stacked(v) for v in tensors], dim + 1))


def _getattr(run: _Run, x: Any, name: str) -> Any:
    if not isinstance(x, _Trial):
        return NotImplemented
    if name == "shape":
        return torch.Size(run.shape(x))
    if name == "ndim":
        return len(run.shape(x))
    if name in ("dtype", "device", "is_cuda", "requires_grad"):
        return getattr(x.t, name)
    raise NotFoldable(f"the model reads .{name} of an activation")


def _reduce(name: str) -> Callable[..., Any]:
    """``x.mean((2, 3))`` and the like over a folded activation's spatial axes: still folded."""
    def rule(run: _Run, x: Any, dim: Any = None, keepdim: bool = False, **kwargs: Any) -> Any:
        if not isinstance(x, Folded) or dim is None or kwargs:
            return NotImplemented
        dims = [d % x.t.dim() for d in ((dim,) if isinstance(dim, int) else dim)]
        if min(dims) < 2:
            return NotImplemented
        return Folded(getattr(x.t, name)(dims, keepdim=keepdim), x.c)
    return rule


def _stochastic_depth(run: _Run, x: Any, p: float, mode: str, training: bool = True) -> Any:
    """torchvision's stochastic depth (EfficientNet, ConvNeXt): each trial draws its own rows (or
    its own one draw, ``mode="batch"``). Under vmap it fails: its noise is an unbatched tensor."""
    if not isinstance(x, _Trial) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0 or mode not in ("row", "batch"):
        return NotImplemented                    # torchvision's own error, through vmap
    if not training or p == 0.0:
        return x
    survival, rows = 1.0 - p, run.shape(x)[0] if mode == "row" else 1
    trials = run.stacked(x)                      # (K, B, ...): a view
    noise = torch.empty((run.k, rows, *[1] * (trials.dim() - 2)), dtype=trials.dtype, device=trials.device)
    noise.bernoulli_(survival)
    if survival > 0.0:
        noise.div_(survival)
    if isinstance(x, Stacked):
        return Stacked(trials * noise)
    return Folded((x.t.unflatten(1, (run.k, x.c)) * noise.movedim(0, 1)).flatten(1, 2), x.c)


def _getitem(run: _Run, x: Any, index: Any) -> Any:
    """An item of a tuple, list or dict (of trial values or not); ``h[:, :8]`` or ``h[..., 1:]``
    of a folded activation, by slices that keep the whole batch. Other indexing goes to vmap."""
    if isinstance(x, (tuple, list, dict, torch.Size)):
        return x[index]
    if not isinstance(x, Folded):
        return NotImplemented
    index = index if isinstance(index, tuple) else (index,)
    if index and index[0] is Ellipsis:                     # h[..., a:b]: the last axes
        index = (slice(None),) * (x.t.dim() - len(index) + 1) + index[1:]
    if index and index[-1] is Ellipsis:
        index = index[:-1]
    whole = slice(None)
    if not index or index[0] != whole or len(index) > x.t.dim() or not all(isinstance(i, slice) for i in index):
        return NotImplemented
    if len(index) == 1 or index[1] == whole:
        return Folded(x.t[index], x.c)
    channels = x.t.unflatten(1, (run.k, x.c))[(whole, whole, *index[1:])]
    return Folded(channels.flatten(1, 2), channels.shape[2])


def _expand(run: _Run, x: Any, *sizes: Any) -> Any:
    """``h.expand(-1, -1, -1, 26)``: per trial, as each trial's activation would be expanded."""
    sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
    if not isinstance(x, _Trial) or not all(isinstance(n, int) for n in sizes) or len(sizes) != len(run.shape(x)):
        return NotImplemented
    if isinstance(x, Stacked):
        return Stacked(x.t.expand(run.k, *sizes))
    if sizes[0] not in (-1, x.t.shape[0]) or sizes[1] not in (-1, x.c):
        return NotImplemented
    return Folded(x.t.expand(-1, -1, *sizes[2:]), x.c)


def _split(name: str) -> Callable[..., Any]:
    """``h.chunk(2, 1)``, ``torch.split(h, 8, dim=1)``: each part of a folded activation folded."""
    def rule(run: _Run, x: Any, size: Any, dim: int = 0) -> Any:
        if not isinstance(x, Folded):
            return NotImplemented
        dim %= x.t.dim()
        if dim >= 2:
            return tuple(Folded(t, x.c) for t in getattr(x.t, name)(size, dim))
        if dim == 0:
            return NotImplemented
        parts = getattr(x.t.unflatten(1, (run.k, x.c)), name)(size, 2)
        return tuple(Folded(t.flatten(1, 2), t.shape[2]) for t in parts)
    return rule


def _in_place(name: str) -> Callable[..., Any]:
    """An elementwise method that writes into its tensor (``h.relu_()``, ``h.add_(g)``), applied to
    the folded or stacked tensor itself, so that the nodes reading ``h`` afterwards see it."""
    def rule(run: _Run, x: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(x, _Trial) or any(isinstance(a, (torch.Tensor, *_Trial)) for a in pytree.tree_leaves(kwargs)):
            return NotImplemented
        if all(isinstance(a, (int, float, bool)) for a in args):
            getattr(x.t, name)(*args, **kwargs)
            return x
        if len(args) != 1:
            return NotImplemented
        other = args[0]
        if isinstance(x, Folded):
            same = isinstance(other, Folded) and other.c == x.c and other.t.shape == x.t.shape
            t = other.t if same else _per_channel(run, x, other)
        else:
            t = run.stacked(other) if isinstance(other, _Trial) and len(run.shape(other)) == len(run.shape(x)) else None
        if t is None:
            return NotImplemented
        getattr(x.t, name)(t, **kwargs)
        return x
    return rule


def _size(run: _Run, x: Any, dim: int | None = None) -> Any:
    shape = torch.Size(run.shape(x))
    return shape if dim is None else shape[dim]


def _contiguous(run: _Run, x: Any, *args: Any, **kwargs: Any) -> Any:
    return Folded(x.t.contiguous(), x.c) if isinstance(x, Folded) else x


_MODULES: dict[type, Callable[..., Any]] = {
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Conv3d: _conv,
    nn.BatchNorm1d: _batch_norm, nn.BatchNorm2d: _batch_norm, nn.BatchNorm3d: _batch_norm,
    nn.GroupNorm: _group_norm, nn.Linear: _linear, nn.Flatten: _flatten_module,
    **{t: _module_per_element for t in _ELEMENTWISE_MODULES + _CHANNEL_MODULES},
}
_FUNCTIONS: dict[Any, Callable[..., Any]] = {
    **{f: _function_per_element(f, True) for f in _ELEMENTWISE_FUNCTIONS},
    **{f: _function_per_element(f, False) for f in _CHANNEL_FUNCTIONS},
    torch.chunk: _split("chunk"), torch.split: _split("split"), torch.transpose: _transpose,
    torch.permute: _permute,
    torch.mean: _reduce("mean"), torch.sum: _reduce("sum"), torch.amax: _reduce("amax"),
    torch.flatten: _flatten, torch.reshape: _reshape, torch.cat: _cat, getattr: _getattr, operator.getitem: _getitem,
    operator.add: _binary(operator.add), operator.sub: _binary(operator.sub), operator.mul: _binary(operator.mul),
    operator.truediv: _binary(operator.truediv), torch.add: _binary(torch.add), torch.mul: _binary(torch.mul),
}
# functions of packages lrfind does not import on its way (torchvision's), by module and name
_FUNCTIONS_BY_NAME: dict[tuple[str, str], Callable[..., Any]] = {
    ("torchvision.ops.stochastic_depth", "stochastic_depth"): _stochastic_depth,
}
_METHODS: dict[str, Callable[..., Any]] = {
    "chunk": _split("chunk"), "split": _split("split"), "expand": _expand, "transpose": _transpose,
    "permute": _permute,
    "mean": _reduce("mean"), "sum": _reduce("sum"), "amax": _reduce("amax"),
    "flatten": _flatten, "view": _reshape, "reshape": _reshape, "size": _size, "contiguous": _contiguous,
    "dim": lambda run, x: len(run.shape(x)), "ndimension": lambda run, x: len(run.shape(x)),
    **{name: _function_per_element(_method(name), True) for name in _ELEMENTWISE_METHODS},
    **{name: _in_place(name) for name in ("relu_", "sigmoid_", "tanh_", "neg_", "abs_", "exp_", "sqrt_", "add_",
                                          "sub_", "mul_", "div_", "pow_", "clamp_", "clamp_min_", "clamp_max_")},
}
