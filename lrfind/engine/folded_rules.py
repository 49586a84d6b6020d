"""The rules of the folded trials' forward (``lrfind.engine.folded``): what each operator does to K
trials' activations folded into the channels (``Folded``) or stacked on a leading axis
(``Stacked``). A rule returns the node's value, or ``NotImplemented`` to run the node under vmap.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import _pytree as pytree

from lrfind.engine.layouts import TRIAL, Folded, NotFoldable, Run, Stacked

RESHAPES_IN_PLACE = {"transpose_", "t_", "squeeze_", "unsqueeze_", "resize_", "resize_as_", "as_strided_",
                     "swapdims_", "swapaxes_", "set_"}


def method(name: str) -> Callable[..., Any]:
    """The method ``name`` as a function of its tensor: ``method("relu")(x) == x.relu()``."""
    return lambda self, *a, **kw: getattr(self, name)(*a, **kw)


# -- rules: each returns the node's value, or NotImplemented to run it under vmap ---------------------
def _conv(run: Run, m: nn.Module, target: str, x: Any) -> Any:
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


def _batch_norm(run: Run, m: nn.Module, target: str, x: Any) -> Any:
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


def _group_norm(run: Run, m: nn.GroupNorm, target: str, x: Any) -> Any:
    """Trial k's G groups of C/G channels are groups k*G to (k+1)*G - 1 of the folded channels."""
    if not isinstance(x, Folded) or x.c != m.num_channels:
        return NotImplemented
    affine = [run.weight(target, n) for n in ("weight", "bias")]
    weight, bias = (None if a is None else a.reshape(-1) for a in affine)
    return Folded(F.group_norm(x.t, run.k * m.num_groups, weight, bias, m.eps), x.c)


def _linear(run: Run, m: nn.Module, target: str, x: Any) -> Any:
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


def _per_element(run: Run, fn: Callable[..., Any], elementwise: bool, x: Any, *args: Any, **kwargs: Any) -> Any:
    """An operator that treats every channel alone (pooling), or every element (``elementwise``)."""
    if any(isinstance(a, (torch.Tensor, *TRIAL)) for a in pytree.tree_leaves((args, kwargs))):
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


def _module_per_element(run: Run, m: nn.Module, target: str, x: Any, *args: Any, **kwargs: Any) -> Any:
    return _per_element(run, m, isinstance(m, _ELEMENTWISE_MODULES), x, *args, **kwargs)


def _function_per_element(fn: Callable[..., Any], elementwise: bool) -> Callable[..., Any]:
    return lambda run, x, *args, **kwargs: _per_element(run, fn, elementwise, x, *args, **kwargs)


def _flatten(run: Run, x: Any, start_dim: int = 0, end_dim: int = -1) -> Any:
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


def _flatten_module(run: Run, m: nn.Flatten, target: str, x: Any) -> Any:
    return _flatten(run, x, m.start_dim, m.end_dim)


def _reshape(run: Run, x: Any, *shape: Any) -> Any:
    """A trial's reshape. Of a folded activation that keeps its batch axis: still folded, for each
    sample's K blocks of a trial's elements stay K blocks (``x.view(n, g, c // g, h, w)``)."""
    if not isinstance(x, TRIAL):
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


def _permuted(run: Run, x: Folded, order: list[int]) -> Any:
    """A trial's axes in ``order`` (its batch axis first), folded again: a copy where the channel
    axis moves."""
    if order == list(range(len(order))):
        return x
    if order[1] == 1:                            # the channels stay: only the other axes move
        return Folded(x.t.permute(order), x.c)
    return Folded.joined(x.by_trial().permute(0, 1, *[i + 1 for i in order[1:]]))


def _transpose(run: Run, x: Any, dim0: int, dim1: int) -> Any:
    if not isinstance(x, Folded) or not isinstance(dim0, int) or not isinstance(dim1, int):
        return NotImplemented
    n = x.t.dim()
    order = list(range(n))
    order[dim0 % n], order[dim1 % n] = order[dim1 % n], order[dim0 % n]
    return _permuted(run, x, order) if order[0] == 0 else NotImplemented


def _permute(run: Run, x: Any, *dims: Any) -> Any:
    dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    if not isinstance(x, Folded) or len(dims) != x.t.dim() or not all(isinstance(d, int) for d in dims):
        return NotImplemented
    order = [d % x.t.dim() for d in dims]
    return _permuted(run, x, order) if order[0] == 0 else NotImplemented


def _binary(op: Callable[..., Any]) -> Callable[..., Any]:
    def rule(run: Run, a: Any, b: Any, **kwargs: Any) -> Any:
        if kwargs:
            return NotImplemented
        if isinstance(b, (int, float)) and isinstance(a, TRIAL):
            return Folded(op(a.t, b), a.c) if isinstance(a, Folded) else Stacked(op(a.t, b))
        if isinstance(a, (int, float)) and isinstance(b, TRIAL):
            return Folded(op(a, b.t), b.c) if isinstance(b, Folded) else Stacked(op(a, b.t))
        if not (isinstance(a, TRIAL) and isinstance(b, TRIAL)):
            return NotImplemented
        if isinstance(a, Folded) and (t := _aligned(run, a, b)) is not None:
            return Folded(op(a.t, t), a.c)
        if isinstance(b, Folded) and (t := _aligned(run, b, a)) is not None:
            return Folded(op(t, b.t), b.c)
        if len(run.shape(a)) != len(run.shape(b)):
            return NotImplemented                # broadcasting would align the trials axis wrongly
        return Stacked(op(run.stacked(a), run.stacked(b)))
    return rule


def _aligned(run: Run, x: Folded, v: Any) -> torch.Tensor | None:
    """The other operand of an elementwise operation with a folded activation, as a tensor that
    broadcasts against it trial for trial: a folded activation of as many channels (a residual
    connection, a squeeze-and-excitation's scale), or a value per channel; None for any other."""
    if isinstance(v, Folded) and v.c == x.c and v.t.dim() == x.t.dim():
        return v.t
    return _per_channel(run, x, v)


def _per_channel(run: Run, x: Folded, v: Any) -> torch.Tensor | None:
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


def _cat(run: Run, tensors: Any, dim: int = 0) -> Any:
    if not tensors or not all(isinstance(v, TRIAL) for v in tensors):
        return NotImplemented
    n = len(run.shape(tensors[0]))
    if any(len(run.shape(v)) != n for v in tensors):
        return NotImplemented
    dim %= n
    if dim == 1 and all(isinstance(v, Folded) for v in tensors):     # channels: a dense block's
        return Folded.joined(torch.cat([v.by_trial() for v in tensors], 2))
    if dim >= 2 and all(isinstance(v, Folded) and v.c == tensors[0].c for v in tensors):
        return Folded(torch.cat([v.t for v in tensors], dim), tensors[0].c)
    return Stacked(torch.cat([run.stacked(v) for v in tensors], dim + 1))


def _getattr(run: Run, x: Any, name: str) -> Any:
    if not isinstance(x, TRIAL):
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
    def rule(run: Run, x: Any, dim: Any = None, keepdim: bool = False, **kwargs: Any) -> Any:
        if not isinstance(x, Folded) or dim is None or kwargs:
            return NotImplemented
        dims = [d % x.t.dim() for d in ((dim,) if isinstance(dim, int) else dim)]
        if min(dims) < 2:
            return NotImplemented
        return Folded(getattr(x.t, name)(dims, keepdim=keepdim), x.c)
    return rule


def _stochastic_depth(run: Run, x: Any, p: float, mode: str, training: bool = True) -> Any:
    """torchvision's stochastic depth (EfficientNet, ConvNeXt): each trial draws its own rows (or
    its own one draw, ``mode="batch"``). Under vmap it fails: its noise is an unbatched tensor."""
    if not isinstance(x, TRIAL) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0 or mode not in ("row", "batch"):
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
    return Folded.joined(x.by_trial() * noise.movedim(0, 1))


def _getitem(run: Run, x: Any, index: Any) -> Any:
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
    return Folded.joined(x.by_trial()[(whole, whole, *index[1:])])


def _expand(run: Run, x: Any, *sizes: Any) -> Any:
    """``h.expand(-1, -1, -1, 26)``: per trial, as each trial's activation would be expanded."""
    sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
    if not isinstance(x, TRIAL) or not all(isinstance(n, int) for n in sizes) or len(sizes) != len(run.shape(x)):
        return NotImplemented
    if isinstance(x, Stacked):
        return Stacked(x.t.expand(run.k, *sizes))
    if sizes[0] not in (-1, x.t.shape[0]) or sizes[1] not in (-1, x.c):
        return NotImplemented
    return Folded(x.t.expand(-1, -1, *sizes[2:]), x.c)


def _split(name: str) -> Callable[..., Any]:
    """``h.chunk(2, 1)``, ``torch.split(h, 8, dim=1)``: each part of a folded activation folded."""
    def rule(run: Run, x: Any, size: Any, dim: int = 0) -> Any:
        if not isinstance(x, Folded):
            return NotImplemented
        dim %= x.t.dim()
        if dim >= 2:
            return tuple(Folded(t, x.c) for t in getattr(x.t, name)(size, dim))
        if dim == 0:
            return NotImplemented
        return tuple(Folded.joined(t) for t in getattr(x.by_trial(), name)(size, 2))
    return rule


def _in_place(name: str) -> Callable[..., Any]:
    """An elementwise method that writes into its tensor (``h.relu_()``, ``h.add_(g)``), applied to
    the folded or stacked tensor itself, so that the nodes reading ``h`` afterwards see it."""
    def rule(run: Run, x: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(x, TRIAL) or any(isinstance(a, (torch.Tensor, *TRIAL)) for a in pytree.tree_leaves(kwargs)):
            return NotImplemented
        if all(isinstance(a, (int, float, bool)) for a in args):
            getattr(x.t, name)(*args, **kwargs)
            return x
        if len(args) != 1:
            return NotImplemented
        other = args[0]
        if isinstance(x, Folded):
            t = _aligned(run, x, other)
        else:
            t = run.stacked(other) if isinstance(other, TRIAL) and len(run.shape(other)) == len(run.shape(x)) else None
        if t is None:
            return NotImplemented
        getattr(x.t, name)(t, **kwargs)
        return x
    return rule


def _size(run: Run, x: Any, dim: int | None = None) -> Any:
    shape = torch.Size(run.shape(x))
    return shape if dim is None else shape[dim]


def _contiguous(run: Run, x: Any, *args: Any, **kwargs: Any) -> Any:
    return Folded(x.t.contiguous(), x.c) if isinstance(x, Folded) else x


MODULES: dict[type, Callable[..., Any]] = {
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Conv3d: _conv,
    nn.BatchNorm1d: _batch_norm, nn.BatchNorm2d: _batch_norm, nn.BatchNorm3d: _batch_norm,
    nn.GroupNorm: _group_norm, nn.Linear: _linear, nn.Flatten: _flatten_module,
    **{t: _module_per_element for t in _ELEMENTWISE_MODULES + _CHANNEL_MODULES},
}
FUNCTIONS: dict[Any, Callable[..., Any]] = {
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
FUNCTIONS_BY_NAME: dict[tuple[str, str], Callable[..., Any]] = {
    ("torchvision.ops.stochastic_depth", "stochastic_depth"): _stochastic_depth,
}
METHODS: dict[str, Callable[..., Any]] = {
    "chunk": _split("chunk"), "split": _split("split"), "expand": _expand, "transpose": _transpose,
    "permute": _permute,
    "mean": _reduce("mean"), "sum": _reduce("sum"), "amax": _reduce("amax"),
    "flatten": _flatten, "view": _reshape, "reshape": _reshape, "size": _size, "contiguous": _contiguous,
    "dim": lambda run, x: len(run.shape(x)), "ndimension": lambda run, x: len(run.shape(x)),
    **{name: _function_per_element(method(name), True) for name in _ELEMENTWISE_METHODS},
    **{name: _in_place(name) for name in ("relu_", "sigmoid_", "tanh_", "neg_", "abs_", "exp_", "sqrt_", "add_",
                                          "sub_", "mul_", "div_", "pow_", "clamp_", "clamp_min_", "clamp_max_")},
}
