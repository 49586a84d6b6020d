"""The LR range test (Smith, arXiv:1506.01186): ``find_lr(model, loader)``.

The LR grows from ``start_lr`` to ``end_lr`` over ``num_iter`` optimizer steps while the model
trains; the loss of every batch is recorded. The sweep stops early when the loss diverges. The
model, its optimizer and the RNGs are put back exactly as they were afterwards, also when the
sweep raises. Here: the call, its arguments checked into a ``RangeTestConfig`` (config.py); the
sweeps are runner.py's, the optimizer and the step they take plan.py's and steps.py's.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

import torch
from torch import nn

from lrfind._args import check_names
from lrfind.engine.optimizer import OptimizerConfig
from lrfind.rangetest.batches import StepFn, check_loader
from lrfind.rangetest.config import RangeTestConfig
from lrfind.rangetest.result import RangeTestResult
from lrfind.rangetest.runner import range_test
from lrfind.rangetest.suggest import DEFAULT_METHOD
from lrfind.rangetest.sweep import Sweep


def find_lr(model: nn.Module, loader: Iterable, *, optimizer: torch.optim.Optimizer | OptimizerConfig | None = None,
            loss_fn: Callable | None = None, step_fn: StepFn | None = None, sweep: Sweep | None = None,
            accumulation_steps: int = 1, max_grad_norm: float | None = None, amp: str | None = None,
            val_loader: Iterable | None = None, val_batches: int | None = None, repeats: int | None = None,
            fused: bool | None = None, seed: int | None = None, method: str = DEFAULT_METHOD,
            progress: bool = True, cuda_graph: bool | None = None,
            slow_down: bool = True, warn: bool = True, threads: int | None = None,
            **sweep_fields: Any) -> RangeTestResult:
    """Run an LR range test on ``model`` with batches from ``loader`` and suggest a base LR.

    Parameters
    ----------
    model: any ``nn.Module``, on the device the test should run on.
    loader: any iterable of batches (a DataLoader, a list, lrfind's ``DeviceLoader``); started
        again when it runs out before ``num_iter``.
    optimizer: a ``torch.optim`` optimizer: its parameter groups keep their LR ratios (one
        multiplier is swept). Or an ``OptimizerConfig`` ("sgd", "adam" or "adamw" with their
        hyper-parameters): the same update without creating a torch optimizer, which imports
        ``torch._dynamo`` (1-2 s, longer than a GPU's whole sweep). Default: SGD with momentum 0.9.
    loss_fn: applied as ``loss_fn(model(x), y)`` to ``(x, y)`` batches. Default: cross-entropy.
        Without it, a dict batch (a Hugging Face ``BatchEncoding`` too) is a Hugging Face model's:
        its items are the model's keyword arguments and the loss is ``model(**batch).loss``, which
        the model computes when the batch holds its ``labels``.
    step_fn: ``step_fn(model, batch) -> scalar loss`` for batches of any other layout (dicts,
        several inputs); batches arrive already moved to the model's device. A Lightning module
        (a ``LightningModule``) is swept by default as Lightning trains it: its ``training_step``
        (unless a ``loss_fn`` is given) and the optimizer of its ``configure_optimizers()`` (unless
        an ``optimizer`` is given).
    sweep: a ``Sweep``; or give its fields directly: ``start_lr`` (1e-6), ``end_lr`` (1.0),
        ``num_iter`` (100), ``mode`` ("exp" or "linear"), ``diverge_factor`` (5.0), ...
    accumulation_steps: batches whose gradients add up to one optimizer step.
    max_grad_norm: clip the gradients' total norm to this before every step
        (``torch.nn.utils.clip_grad_norm_``), as your training does: without the clipping your
        training has, the sweep's loss may blow up at a lower LR than your run's. None: no clipping.
    amp: None, "bf16" or "fp16" (fp16 uses a gradient scaler). method: the suggestion reported as
        ``suggested_lr``; every method's is in ``suggestions``.
    val_loader, val_batches: record the mean loss over (the first ``val_batches`` of)
        ``val_loader`` after every step instead of the training loss. Slower; smoother curves.
    repeats, seed, fused: the median of ``repeats`` sweeps and their spread (every sweep's losses
        in ``seed_losses``); one sweep can land far from the others. Default ``repeats=None``: 3 on
        a GPU where they can run side by side, else 1 (the result's ``config["how"]`` says why). Side
        by side (``fused=None``, where they can; ``True`` raises where they cannot; ``False``: one
        after another), they are copies of the model trained in one pass of lrfind's trial engine,
        each reading the loader in the order seed ``seed + r`` gives (a list is dealt out in turn):
        on a GPU 3 cost about one. They can with ``(inputs, targets)`` batches, the default step, one
        parameter group of a fresh SGD/Adam/AdamW or an ``OptimizerConfig``, and one process (see
        the docs' "Several sweeps in one pass"). A repeat whose loss fell less than 0.3x as far as
        the deepest one's is left out of the median (``result.shallow``).
    slow_down: when the repeats that count span more than 3x, or fewer than two are left to agree,
        sweep ``repeats`` times again with twice ``num_iter`` (half the pace) and take those;
        ``result.config["faster_sweeps"]`` keeps the first ones' suggestions. A sweep that climbs too
        fast breaks down now and then; a slower one suggests a lower LR, so it runs only then.
    cuda_graph: replay each step (forward, backward, update) from a CUDA graph, much faster for
        small models. Default: where it applies (a CUDA model, the default step on ``(x, y)``
        batches, an ``OptimizerConfig`` or a fresh SGD/Adam/AdamW); a step that cannot be captured
        then runs eagerly, with a warning. ``True`` raises instead, ``False`` never captures.
    threads: the CPU threads the sweeps take (``torch.set_num_threads``), put back afterwards.
        Default: the physical cores this process may use, unless ``OMP_NUM_THREADS``,
        ``MKL_NUM_THREADS`` or your own ``torch.set_num_threads`` chose already.

    A model trained across processes (``DistributedDataParallel``, ``FullyShardedDataParallel``,
    ``fully_shard``): call ``find_lr`` in every process, each with its own batches (a
    ``DistributedSampler``); the losses are averaged across the processes at every divergence
    check, so all record the same curve, stop at the same step and suggest the same LR. It steps
    through a torch optimizer (one is made from an ``OptimizerConfig``), never from a CUDA graph;
    clipping and fp16's gradient scaler agree across the shards.

    The model, buffers, gradients, optimizer and RNG states are restored afterwards, bit for bit,
    also when an exception is raised. Nothing is written to disk. A result that needs a second look
    (no suggestion: ``result.reason`` says why; the loss had not turned up by ``end_lr``; repeats
    that disagree) warns with a ``RangeTestWarning``, one for each of ``result.warnings``
    (``warn=False``: no warning, for callers that show them themselves).
    """
    check_loader(loader)
    config = RangeTestConfig(
        sweep=_sweep(sweep, sweep_fields), optimizer=optimizer, loss_fn=loss_fn, step_fn=step_fn,
        accumulation_steps=accumulation_steps, max_grad_norm=max_grad_norm, amp=amp, val_loader=val_loader,
        val_batches=val_batches, repeats=repeats, fused=fused, seed=seed, method=method, progress=progress,
        cuda_graph=cuda_graph, slow_down=slow_down, warn=warn, threads=threads)
    return range_test(model, loader, config)


# what the peers call find_lr's arguments (torch-lr-finder, fastai, Lightning), for users who come from them
_PEER_NAMES = {"criterion": "loss_fn", "num_it": "num_iter", "num_training": "num_iter", "min_lr": "start_lr",
               "max_lr": "end_lr", "step_mode": "mode", "diverge_th": "diverge_factor",
               "early_stop_threshold": "diverge_factor", "smooth_f": "ema_beta (= 1 - smooth_f)",
               "suggest_funcs": "method", "train_loader": "loader (the second positional argument)"}


def _sweep(sweep: Sweep | None, sweep_fields: dict[str, Any]) -> Sweep:
    """The ``Sweep`` given, or the one its fields (given to ``find_lr`` directly) make."""
    check_names("find_lr", sweep_fields, Sweep.__dataclass_fields__, aliases=_PEER_NAMES,
                others=inspect.signature(find_lr).parameters,
                takes=f"Besides its own (optimizer, loss_fn, step_fn, ...), it takes the Sweep fields "
                      f"{', '.join(Sweep.__dataclass_fields__)}")
    if sweep is not None and sweep_fields:
        raise TypeError(f"give either sweep=Sweep(...) or its fields, not both (got {sorted(sweep_fields)})")
    return sweep or Sweep(**sweep_fields)
