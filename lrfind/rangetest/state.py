"""Snapshot and exact restore of everything a range test disturbs, kept in host memory.

The range test trains the user's model with absurd learning rates. Afterwards the model must be
exactly as it was: every parameter and buffer (non-persistent ones too), every ``.grad``, each
module's train/eval flag, the optimizer's state and hyper-parameters, and the RNG streams
(Python, NumPy, torch CPU and CUDA) so that the user's next run is the one it would have been.
Nothing is written to disk.

Frozen parameters (``requires_grad=False`` and no ``.grad``: the base of a LoRA fine-tune, a
frozen backbone) are not copied: no optimizer step touches them, and copying a large frozen base
to host memory and back would cost more than the rest of the snapshot together.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


def _to_cpu(obj: Any) -> Any:
    """Deep copy of a (nested) state, with every tensor cloned to host memory."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


@dataclass
class Snapshot:
    tensors: list[torch.Tensor]               # the live parameters and buffers, in order
    saved: list[torch.Tensor]                 # their values, on the host
    grads: list[torch.Tensor | None]          # their .grad values, on the host (None: no grad)
    training: list[tuple[nn.Module, bool]]
    optimizer_state: dict | None
    python_rng: Any
    numpy_rng: Any
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] | None


def take(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> Snapshot:
    """Record the state of ``model``, ``optimizer`` and the RNGs."""
    tensors = [p for p in model.parameters() if p.requires_grad or p.grad is not None] + list(model.buffers())
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return Snapshot(
        tensors=tensors,
        saved=[t.detach().to("cpu", copy=True) for t in tensors],
        grads=[None if t.grad is None else t.grad.detach().to("cpu", copy=True) for t in tensors],
        training=[(m, m.training) for m in model.modules()],
        optimizer_state=_to_cpu(optimizer.state_dict()) if optimizer is not None else None,
        python_rng=random.getstate(),
        numpy_rng=np.random.get_state(),
        torch_rng=torch.get_rng_state(),
        cuda_rng=cuda_rng,
    )


@dataclass
class Streams:
    """The RNG streams a sweep draws from: Python's, NumPy's, torch's (CPU and CUDA), and a loader's
    own generator (None: it has none)."""

    python: Any
    numpy: Any
    torch: torch.Tensor
    cuda: list[torch.Tensor] | None
    loader: torch.Tensor | None


def take_streams(generator: torch.Generator | None) -> Streams:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return Streams(random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda,
                   generator.get_state() if generator is not None else None)


def restore_streams(streams: Streams, generator: torch.Generator | None) -> None:
    random.setstate(streams.python)
    np.random.set_state(streams.numpy)
    torch.set_rng_state(streams.torch)
    if streams.cuda is not None:
        torch.cuda.set_rng_state_all(streams.cuda)
    if generator is not None and streams.loader is not None:
        generator.set_state(streams.loader)


def seed_streams(seed: int, generator: torch.Generator | None) -> None:
    """Every stream a sweep draws from, seeded with ``seed``: its batch order, augmentation, dropout."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if generator is not None:
        generator.manual_seed(seed)


def loader_generator(loader: Any) -> torch.Generator | None:
    """The generator that shuffles ``loader``'s batches, if it has its own."""
    generator = getattr(loader, "generator", None)
    return generator if isinstance(generator, torch.Generator) else None


def restore(snapshot: Snapshot, optimizer: torch.optim.Optimizer | None) -> None:
    """Put everything recorded by ``take`` back, bit for bit, in place (tensor identities kept)."""
    with torch.no_grad():
        for t, saved, grad in zip(snapshot.tensors, snapshot.saved, snapshot.grads):
            t.copy_(saved)
            if grad is None:
                t.grad = None
            elif t.grad is None:
                t.grad = grad.to(t.device)
            else:
                t.grad.copy_(grad)
    for module, flag in snapshot.training:
        module.training = flag
    if optimizer is not None and snapshot.optimizer_state is not None:
        optimizer.state.clear()   # state added during the sweep (e.g. momentum buffers) goes too
        optimizer.load_state_dict(snapshot.optimizer_state)
    random.setstate(snapshot.python_rng)
    np.random.set_state(snapshot.numpy_rng)
    torch.set_rng_state(snapshot.torch_rng)
    if snapshot.cuda_rng is not None:
        torch.cuda.set_rng_state_all(snapshot.cuda_rng)
