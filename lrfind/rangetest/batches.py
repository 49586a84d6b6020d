"""What a range test's batches are: moved to the model's device, described in errors, and turned
into a loss by the default step ((inputs, targets) pairs through ``loss_fn``; a dict, Hugging
Face's way, through the model's own loss), from any iterable, started again when it runs out."""

from __future__ import annotations

import collections.abc
import contextlib
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from lrfind._errors import Explained, ExplainedValueError
from lrfind.models import dtype_hint

StepFn = Callable[[nn.Module, Any], torch.Tensor]


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with its tensors on ``device``; NumPy arrays become tensors first, as a
    DataLoader's collation makes them."""
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):         # a dict, or Hugging Face's BatchEncoding
        moved = {k: to_device(v, device) for k, v in batch.items()}
        try:
            return type(batch)(moved)
        except Exception:
            return moved
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def describe(batch: Any) -> str:
    if isinstance(batch, torch.Tensor):
        return f"{tuple(batch.shape)} {str(batch.dtype).removeprefix('torch.')}"
    if isinstance(batch, np.ndarray):
        return f"NumPy {batch.shape} {batch.dtype}"
    if isinstance(batch, Mapping):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in batch.items()) + "}"
    if isinstance(batch, (list, tuple)):
        return "(" + ", ".join(describe(v) for v in batch) + ")"
    return type(batch).__name__


def examples(batch: Any) -> int | None:
    """How many examples a batch holds: its first tensor's length (None for a batch without one)."""
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.ndim else None
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    return next((n for n in map(examples, values) if n is not None), None)


def inputs_targets(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, Mapping):              # only with a loss_fn given: without, see loss_in_outputs
        raise TypeError(f"a batch with keys {sorted(batch)} has no (inputs, targets) to apply loss_fn to; "
                        f"without loss_fn, find_lr takes a dict batch's loss from model(**batch) (Hugging Face's "
                        f"way), or pass step_fn=lambda model, batch: <loss>")
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        sequence = isinstance(batch, (tuple, list))
        got = f"a {type(batch).__name__} of {len(batch)}: {describe(batch)}" if sequence else describe(batch)
        say = ("step_fn=lambda model, batch: <loss> for such batches; say, with the inputs and targets first, "
               "step_fn=lambda model, batch: cross_entropy(model(batch[0]), batch[1])" if sequence and len(batch) > 2
               else "step_fn=lambda model, batch: <loss> for other batch layouts")
        raise TypeError(f"find_lr expects batches of (inputs, targets) or dicts, got {got}; pass {say}")
    return batch[0], batch[1]


def loss_in_outputs(model: nn.Module, batch: Mapping) -> torch.Tensor:
    """A dict batch's loss, Hugging Face's way: its items are the model's keyword arguments, and
    the model returns its loss (``outputs.loss``) when the batch holds the targets (``labels``)."""
    try:
        out = model(**batch)
    except TypeError as e:
        if "argument" not in str(e):
            raise
        raise TypeError(f"find_lr gave a dict batch's items to the model as keyword arguments (model(**batch), "
                        f"Hugging Face's way) and the model refused them: {e}. For another layout pass "
                        f"step_fn=lambda model, batch: <loss>, say loss_fn(model(batch['image']), "
                        f"batch['label'])") from e
    loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
    if loss is None:
        raise TypeError(f"the model returned no loss for a batch with keys {sorted(batch)} (find_lr takes a dict "
                        f"batch's loss from model(**batch).loss, Hugging Face's way, which needs the targets in "
                        f"the batch: 'labels'); add them, or pass step_fn=lambda model, batch: <loss>")
    if not (isinstance(loss, torch.Tensor) and loss.ndim == 0):
        raise TypeError(f"the model's outputs hold a loss of {describe(loss)}, not a scalar: pass "
                        f"step_fn=lambda model, batch: <loss> that averages it")
    return loss


def outputs_checked(loss_fn: Callable | None) -> Callable:
    """``loss_fn`` (None: cross-entropy) that first checks that the model gave a tensor (not a
    tuple, a dict, ...) and, for the default cross-entropy, more than one class score."""
    default = loss_fn is None
    loss_fn = loss_fn or nn.functional.cross_entropy

    def loss(out: Any, y: Any) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            if isinstance(out, Mapping) and out:
                say = f"loss_fn(model(x)[{next(iter(out))!r}], y), if that item holds the class scores"
            elif isinstance(out, (tuple, list)):
                say = "loss_fn(model(x)[0], y), if the first item holds the class scores"
            else:
                say = "loss_fn(<the class scores of model(x)>, y)"
            raise TypeError(f"the model returned {describe(out)}, not a tensor of outputs, so the default step "
                            f"cannot compute loss_fn(model(x), y); pass step_fn=lambda model, batch: <loss>, say "
                            f"{say} (x, y = batch)")
        if default and out.ndim >= 2 and out.shape[1] == 1:
            raise ExplainedValueError(
                f"the model returns one value per example ({describe(out)}), and the default loss, cross-entropy "
                f"over its class scores, is 0 for a single class whatever the weights; pass loss_fn=nn.MSELoss() "
                f"for a regression, or nn.BCEWithLogitsLoss() for a yes/no label (float targets)")
        value = loss_fn(out, y)
        if not (isinstance(value, torch.Tensor) and value.ndim == 0):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise TypeError(f"loss_fn returned {shape}, not a scalar loss: give one that averages over the batch "
                            f"(reduction='mean', torch's default)")
        return value
    return loss


def make_default_step(loss_fn: Callable, loss_given: bool) -> StepFn:
    """``loss_fn(model(x), y)`` on ``(x, y)`` batches; a dict batch's own loss (``loss_in_outputs``)
    unless a ``loss_fn`` was given."""
    def step(model: nn.Module, batch: Any) -> torch.Tensor:
        if isinstance(batch, Mapping) and not loss_given:
            return loss_in_outputs(model, batch)
        x, y = inputs_targets(batch)
        return loss_fn(model(x), y)
    return step


def check_loader(loader: Any, name: str = "loader") -> None:
    """A TypeError unless ``loader`` yields batches: a Dataset yields single examples (a sweep of
    unbatched steps, which may even run), and a data module or a number yields nothing."""
    if isinstance(loader, torch.utils.data.Dataset) and not isinstance(loader, torch.utils.data.IterableDataset):
        raise TypeError(f"{name} is a {type(loader).__name__}, a Dataset of single examples; find_lr steps on "
                        f"batches: pass DataLoader(dataset, batch_size=64, shuffle=True) (or list(dataset) if "
                        f"each of its items is a batch already)")
    if not isinstance(loader, collections.abc.Iterable):
        hint = (f"; for a data module pass its {name.replace('loader', 'dataloader')}: "
                f"dm.{'val' if name == 'val_loader' else 'train'}_dataloader()"
                if hasattr(loader, "train_dataloader") else "")
        raise TypeError(f"{name} must be an iterable of batches (a DataLoader, a list of (x, y) pairs), got "
                        f"{type(loader).__name__}{hint}")


def one_shot(loader: Iterable) -> bool:
    """An iterator (a generator, say) is used up by one pass: it cannot be started again. (Asked
    of its type, not by calling ``iter``: a DataLoader's would start its worker processes.)"""
    return isinstance(loader, collections.abc.Iterator)


class Batches:
    """Endless batches from any iterable: starts it again when it runs out, moves them to the device.
    ``per_step``: the batches a step of the sweeps takes (several sweeps side by side take one each)."""

    def __init__(self, loader: Iterable, device: torch.device, per_step: int = 1) -> None:
        self.loader, self.device, self.per_step = loader, device, per_step
        self._it: Iterator | None = None
        self.restarts = self.count = 0
        self.first_size: int | None = None       # examples in the first batch

    def __next__(self) -> Any:
        if self._it is None:
            self._it = iter(self.loader)
        try:
            batch = next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            try:
                batch = next(self._it)
            except StopIteration:
                raise self._empty() from None
            self.restarts += 1
        if not self.count:
            self.first_size = examples(batch)
        self.count += 1
        return to_device(batch, self.device)

    def _empty(self) -> ValueError:
        if not self.count:
            return ValueError(f"the loader yields no batches ({type(self.loader).__name__} {self.loader!r:.80})")
        if one_shot(self.loader):
            if self.per_step > 1:
                return ValueError(f"the loader ran out after {self.count} batches and cannot be started again: it is "
                                  f"a {type(self.loader).__name__}, used up by one pass, and the {self.per_step} "
                                  f"sweeps side by side take {self.per_step} batches a step. Pass something that can "
                                  f"be iterated again (a DataLoader, a list of batches), or num_iter <= "
                                  f"{self.count // self.per_step}, or fewer repeats")
            return ValueError(f"the loader ran out after {self.count} batches and cannot be started again: it is "
                              f"a {type(self.loader).__name__}, used up by one pass. Pass something that can be "
                              f"iterated again (a DataLoader, a list of batches) or num_iter <= {self.count}")
        return ValueError(f"the loader ran out after {self.count} batches and yielded none when started again")


@contextlib.contextmanager
def step_errors(i: int, batch: Any, first_size: int | None = None, model: nn.Module | None = None) -> Iterator[None]:
    """A shape or dtype mismatch surfaces deep inside torch: on the first step, say what to check
    (and the dtypes, if the model's weights and the inputs differ); on a later batch smaller than
    the first (``first_size`` examples), say that a loader's last batch is the likely cause (batch
    norm cannot train on one example)."""
    try:
        yield
    # IndexError: a class label out of range, on a CPU; ValueError: a target of another shape than
    # the output (binary cross-entropy), one example in a batch-norm layer
    except (RuntimeError, IndexError, ValueError) as e:
        n = examples(batch)
        smaller = i and first_size is not None and n is not None and n < first_size
        if isinstance(e, Explained) or (i and not smaller):
            raise
        if not i:
            text = (f"the first training step failed on a batch of {describe(batch)}: {str(e).rstrip('.')}. "
                    f"Check that the loader's batches fit the model{dtype_hint(model, batch)}")
        else:
            text = (f"step {i + 1} failed on a batch of {describe(batch)}, smaller than the first batch's "
                    f"{first_size} examples: {str(e).rstrip('.')}. Most often that is the loader's last batch"
                    f"{' (batch norm cannot train on one example)' if n == 1 else ''}: drop it with "
                    "DataLoader(..., drop_last=True)")
        try:
            said = type(e)(text)        # the same kind (an out-of-memory error stays one)
        except Exception:               # a kind made from other arguments than a message
            said = next(kind(text) for kind in (RuntimeError, IndexError, ValueError) if isinstance(e, kind))
        raise said from e


def start_persistent_workers(loader: Iterable) -> None:
    """A DataLoader with persistent workers draws one random number more on its first ``iter()``
    (its workers' base seed) than on the later ones, which reuse them: its first sweep would then
    take another batch order than the same seed gives any later sweep. Started here, before the
    seeded sweeps (the RNG is restored afterwards), its order follows the seed alone."""
    if (isinstance(loader, torch.utils.data.DataLoader) and loader.persistent_workers and loader.num_workers > 0
            and getattr(loader, "_iterator", False) is None):
        iter(loader)
