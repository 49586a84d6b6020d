"""The trial engine: K trials of one model trained side by side on one device.

A LeNet step uses about 1% of an H100; the rest of the time goes to Python and kernel launches.
So the K trials of a batch are one model with stacked weights (``torch.func.stack_module_state``),
run forward through ``vmap(functional_call)`` and backward in one ``autograd.grad`` on the same
batches in the same order (common random numbers: a fairer comparison of schedules), each trial
with its own LR at every step, taken from its schedule's pure ``factor``. (On a CPU the forward
runs trial after trial instead: vmap's batched kernels are slower there than K plain ones.) The
optimizer update is written on the stacked tensors with torch's own formulas, so that a fused
trial equals the same trial trained alone with ``torch.optim`` and the scheduler from ``build()``
(a test holds them equal).

No host synchronisation happens inside an epoch: losses, divergence flags and LRs stay on the
device; the host reads them once per epoch, when it validates, reports and drops trials.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from lrfind.data.images import ImageData
from lrfind.engine.fused import FusedTrials
from lrfind.engine.optimizer import OptimizerConfig
from lrfind.engine.records import TrialRecord, TrialSpec


def run_trials(model: str | Callable[[], nn.Module], specs: list[TrialSpec], train: ImageData,
               val: ImageData | None, *, epochs: int, batch_size: int, base_lr: float,
               optimizer: OptimizerConfig = OptimizerConfig(), seed: int = 0, same_init: bool = False,
               on_epoch: Callable[[int, list[TrialRecord], list[int]], set[int]] | None = None,
               progress=None, score_on: ImageData | None = None, amp: str | None = None,
               augment: Callable | None = None, channels_last: bool | None = None,
               max_grad_norm: float | None = None, fold: bool = True,
               on_step: Callable[[], None] | None = None) -> list[TrialRecord]:
    """Train ``specs`` side by side for ``epochs`` epochs and return their records.

    ``on_epoch(epoch, records, running)`` is called after each epoch's validation, the last one
    included, with the record indices still running; the indices it returns are pruned and leave
    the batch (after the last epoch none is: those trials are complete). Without ``val``,
    metric-driven schedules follow the epoch's training loss. ``progress`` is a tqdm bar advanced
    once per step. With ``score_on``, the trials that finish are scored on it once at the end.
    ``amp="bf16"``: forward and backward under bfloat16 autocast. ``augment``: see ``lrfind.data.augment``
    (training batches only). ``channels_last``, ``fold``: see ``FusedTrials``. ``max_grad_norm``: each
    trial's gradient clipped to that total norm before every step, as ``clip_grad_norm_`` does.
    ``on_step()`` is called after every step (``tune`` looks there whether other workers joined).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    loader = train.loader(batch_size, seed=seed, augment=augment)
    per_epoch = len(loader)
    engine = FusedTrials(model, specs, base_lr=base_lr, total_steps=epochs * per_epoch,
                         steps_per_epoch=per_epoch, optimizer=optimizer, device=train.images.device,
                         same_init=same_init, amp=amp, channels_last=channels_last, max_grad_norm=max_grad_norm,
                         fold=fold)
    for epoch in range(epochs):
        for x, y in loader:
            engine.step(x, y)
            if progress is not None:
                progress.update(1)
            if on_step is not None:
                on_step()
        engine.end_epoch(val, per_epoch)
        running = [k for k in engine.running if engine.records[k].status == "running"]
        pruned = set(on_epoch(epoch, engine.records, running)) if on_epoch else set()
        if epoch == epochs - 1:
            pruned = set()              # a trial that ran all its epochs is complete, not pruned
        for k in pruned:
            engine.records[k].status = "pruned"
        engine.keep([engine.records[k].status == "running" for k in engine.running])
        if not engine.running:
            if progress is not None:
                progress.update((epochs - epoch - 1) * per_epoch)
            break
    finished = [k for k in engine.running if engine.records[k].status == "running"]
    if score_on is not None and finished:
        engine.keep([k in finished for k in engine.running])
        loss, acc = engine.evaluate(score_on)
        for row, k in enumerate(engine.running):
            engine.records[k].test_loss = float(loss[row])
            engine.records[k].test_acc = None if acc is None else float(acc[row])
    for rec in engine.records:
        if rec.status == "running":
            rec.status = "complete"
    return engine.records
