"""Registry of the built-in models, all for 1x28x28 inputs and 10 classes, and the user's own.

Wherever a model name is taken (``get_model``, ``--model``, ``tune(model=...)``), a factory of the
user's own can be named instead: ``package.module:function`` or ``path/to/file.py:function`` (as in
uvicorn or gunicorn), a callable that takes no arguments and returns an ``nn.Module``. Each trial,
each worker of a shared study and each resume builds its models from it afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Callable, Iterator

import torch
from torch import nn
import torch.nn.functional as F

from lrfind._args import OWN_FUNCTION, unknown
from lrfind._errors import message
from lrfind._imports import callable_name, is_import_path, load_callable


log = logging.getLogger(__name__)


class ModelError(ValueError):
    field = "model"            # what the command line calls --model
    """A model named by the user cannot be loaded, built, or does not fit the data."""


class LeNet(nn.Module):
    """A small LeNet-style CNN for 28x28 images: conv 1-8-16 (3x3) with 2x2 max-pooling, then fc
    400-128-64-10.

    On 28x28 input the flatten size is 16*5*5 = 400: 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5.

    The ReLU comes after the pooling: relu-then-pool is the same function (both are monotone, so
    max(relu(a), relu(b)) = relu(max(a, b))), with the same gradients, but the ReLU then runs on a
    quarter of the activations. The fused step at 50 trials took 23.5 ms per trial-epoch on an H100
    instead of 24.3 (bf16: 20.7 instead of 21.8), and about 15% less on a CPU.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, kernel_size=3)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3)
        self.pool = nn.MaxPool2d(kernel_size=2)
        self.fc1 = nn.Linear(16 * 5 * 5, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.pool(self.conv1(x)))
        x = F.relu(self.pool(self.conv2(x)))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class MLP(nn.Module):
    """A fully connected net for 28x28 images: 784-256-128-10 with ReLU."""

    def __init__(self, in_features: int = 28 * 28, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 256)
        self.fc2 = nn.Linear(256, 128)
        self.out = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.out(x)


MODELS: dict[str, Callable[..., nn.Module]] = {"lenet": LeNet, "mlp": MLP}


def is_builtin(name: str) -> bool:
    return name.lower() in MODELS


def get_model(name: str, *, seed: int | None = None, **kwargs) -> nn.Module:
    """Build a registered model, or the user's own named ``module:function`` or ``file.py:function``;
    with ``seed``, its initial weights are reproducible."""
    factory = MODELS[name.lower()] if is_builtin(name) else load_factory(name)
    if seed is None:
        return _build(name, factory, kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build(name, factory, kwargs)


def _build(name: str, factory: Callable[..., nn.Module], kwargs: dict) -> nn.Module:
    if is_builtin(name):
        return factory(**kwargs)
    try:
        model = factory(**kwargs)
    except Exception as e:
        raise ModelError(f"model {name}: calling it failed ({type(e).__name__}: {e}); it must take no "
                         "arguments and return an nn.Module") from e
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {name}: it returned a {type(model).__name__}, not an nn.Module")
    return uncompiled(model, name)


def uncompiled(model: nn.Module, name: str) -> nn.Module:
    """The module inside ``torch.compile(module)``, for lrfind's own training step: the trials'
    engine batches the trials' weights (vmap, or folded into the channels) and replays its step from
    a CUDA graph, which a compiled forward would only stand in the way of (fx cannot trace it, and
    its first call compiles for seconds in every trial's process). The module computes the same."""
    inner = getattr(model, "_orig_mod", None)
    if type(model).__name__ != "OptimizedModule" or not isinstance(inner, nn.Module):
        return model
    if name not in _SAID_UNCOMPILED:            # once, not for every trial built
        _SAID_UNCOMPILED.add(name)
        log.info("model %s is compiled (torch.compile); lrfind trains the module inside with its own step "
                 "(trials batched, and replayed from a CUDA graph on a GPU)", name)
    return inner


_SAID_UNCOMPILED: set[str] = set()


def load_factory(name: str) -> Callable[..., nn.Module]:
    """The callable that ``module:function`` or ``path/to/file.py:function`` names."""
    if not is_import_path(name):
        raise ModelError(unknown("model", name, sorted(MODELS), then=OWN_FUNCTION))
    return load_callable(name, "model", ModelError)


def model_name(factory: Callable[..., nn.Module]) -> str:
    """``module:qualname`` of a top-level class or function, by which ``get_model`` finds it again."""
    return callable_name(factory, "model", ModelError)


def check_fits(model: nn.Module, images: torch.Tensor, num_classes: int, name: str, regression: bool = False,
               labels: torch.Tensor | None = None) -> None:
    """Raise a clear ModelError unless ``model`` maps two of ``images`` to ``num_classes`` scores each
    (``regression``: to that many values, one per target; ``labels``, if given, for a hint when
    float targets look like class indices).

    Runs in eval mode without gradients, with the RNG and the model's state left as they were."""
    x = images[:2]
    kind = (" images" if x.ndim > 2 else "-feature examples") if x.is_floating_point() else "-token examples"
    shape = "x".join(map(str, x.shape[1:])) + kind
    was_training = model.training
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            model.eval()
            out = model(x)
    except Exception as e:
        hint = ("; images without a channel axis? give them as (N, 1, H, W)" if x.ndim == 3
                else dtype_hint(model, x, command_line=True))
        raise ModelError(f"model {name} does not take this data set's {shape}: a batch of shape "
                         f"{tuple(x.shape)} raised {type(e).__name__}: {message(e)}{hint}") from None
    finally:
        model.train(was_training)
        model.load_state_dict(state)
    if not (isinstance(out, torch.Tensor) and out.shape == (len(x), num_classes)):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        what = (f"{num_classes} value{'s' if num_classes != 1 else ''} per example (the data set's regression "
                f"target{'s' if num_classes != 1 else ''})" if regression else f"{num_classes} class scores per image")
        raise ModelError(f"model {name} must return {what}: a batch of shape "
                         f"{tuple(x.shape)} gave {got}, expected {(len(x), num_classes)}"
                         f"{_classes_hint(labels) if regression else ''}")


def _classes_hint(labels: torch.Tensor | None) -> str:
    """For float labels that are all whole numbers (classes read from a CSV, say): how to say so."""
    if labels is None or labels.numel() == 0 or labels.ndim > 2 or (labels.ndim == 2 and labels.shape[1] != 1):
        return ""
    values = labels.flatten()
    if not bool(torch.isfinite(values).all()) or not bool((values == values.round()).all()) or values.min() < 0:
        return ""
    low, high = int(values.min()), int(values.max())
    return (f"; float labels are regression targets, and these are all whole numbers ({low} to {high}): if "
            "they are classes, give them as integers (labels.astype(int), or .long())")


def _floats(batch: Any) -> Iterator[torch.Tensor]:
    """The batch's floating-point tensors, first to last."""
    if isinstance(batch, torch.Tensor):
        if batch.is_floating_point():
            yield batch
    elif isinstance(batch, (Mapping, list, tuple)):
        for v in batch.values() if isinstance(batch, Mapping) else batch:
            yield from _floats(v)


def dtype_hint(model: nn.Module | None, batch: Any, *, command_line: bool = False) -> str:
    """Why a model and its first batch may not fit: weights of another float dtype than the
    inputs (a model made ``.half()`` for mixed precision, say); "" when they agree. For
    ``command_line``, whose user gives the model and not the batches, what to do says so."""
    weights = next((p.dtype for p in model.parameters() if p.is_floating_point()), None) if model is not None else None
    inputs = next(_floats(batch[0] if isinstance(batch, (list, tuple)) and batch else batch), None)
    if weights is None or inputs is None or inputs.dtype == weights:
        return ""
    w, x = (str(d).removeprefix("torch.") for d in (weights, inputs.dtype))
    inputs_are = "data" if command_line else "batch's inputs"
    said = f"; the model's weights are {w} and the {inputs_are} {x}: "
    if weights in (torch.float16, torch.bfloat16):
        amp = "fp16" if weights == torch.float16 else "bf16"
        if command_line:
            return said + (f"return the model in {x}, and for mixed precision pass --amp, which computes under "
                           f"autocast as a mixed-precision training does")
        return said + (f"for mixed precision keep the model in float32 and pass amp={amp!r} (--amp {amp}), which "
                       f"computes in {w} under autocast as your training would, or cast the inputs in a step_fn")
    if command_line:
        return said + f"return the model in {x}"
    cast = {torch.float32: "model.float()", torch.float64: "model.double()"}.get(inputs.dtype, f"model.to(torch.{x})")
    return said + f"make them one dtype ({cast}, or the loader's)"


def seeded(factory: Callable[[], nn.Module]) -> Callable[[int], nn.Module]:
    """The user's model factory as one that takes a seed: its weights drawn from that seed, the
    caller's random state left as it was, and a compiled model unwrapped (``uncompiled``)."""
    def make(seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return uncompiled(factory(), getattr(factory, "__name__", "given"))
    return make
