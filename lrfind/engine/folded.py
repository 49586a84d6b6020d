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

from typing import Any, Callable

import torch
from torch import fx, nn
from torch.func import functional_call, vmap
from torch.utils import _pytree as pytree

from lrfind.engine.folded_rules import FUNCTIONS, FUNCTIONS_BY_NAME, METHODS, MODULES, RESHAPES_IN_PLACE, method
from lrfind.engine.layouts import TRIAL, Folded, NotFoldable, Stacked

__all__ = ["FoldedForward", "NotFoldable", "Folded", "Stacked"]


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
                if not isinstance(out, (torch.Tensor, *TRIAL)):
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
            return v.by_trial().movedim(1, 0)
        if isinstance(v, Stacked):
            return v.t
        return v.expand(self.k, *v.shape)

    def folded(self, v: Any) -> Folded:
        """A (B, C, ...) value folded; from the stacked layout this copies."""
        if isinstance(v, Folded):
            return v
        if isinstance(v, Stacked):
            return Folded.joined(v.t.movedim(0, 1))
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
            rule = MODULES.get(type(module))
            out = rule(self, module, node.target, *args, **kwargs) if rule else NotImplemented
            if out is NotImplemented:
                out = self.vmapped(node.name, lambda pb, *a, **kw: functional_call(module, pb, a, kw), args, kwargs,
                                   self.own(module, node.target), in_place=getattr(module, "inplace", False))
            return out
        if node.op == "call_function":
            fn = node.target
            rule = FUNCTIONS.get(fn) or FUNCTIONS_BY_NAME.get((getattr(fn, "__module__", None),
                                                                 getattr(fn, "__name__", None)))
        else:                                    # call_method
            fn, rule = method(node.target), METHODS.get(node.target)
        out = rule(self, *args, **kwargs) if rule else NotImplemented
        if out is NotImplemented:
            if node.op == "call_method" and node.target in RESHAPES_IN_PLACE and isinstance(args[0], TRIAL):
                raise NotFoldable(f"the model changes an activation's shape in place (.{node.target}())")
            in_place = getattr(node.target, "__name__", node.target).endswith("_") or kwargs.get("inplace") is True
            out = self.vmapped(node.name, lambda pb, *a, **kw: fn(*a, **kw), args, kwargs, ({}, {}), in_place=in_place)
        return out

    def attribute(self, target: str) -> Any:
        trials = self.weight("", target)         # a parameter or buffer, (K, ...)
        if trials is not None:
            return Stacked(trials)
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
        at = [i for i, v in enumerate(leaves) if isinstance(v, TRIAL)]
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
