"""How an engine runs its K trials, chosen once, on the first batch, before it trains.

The forward of every trial runs in one of three ways: ``looped`` (trial after trial: on a CPU,
K plain kernels beat vmap's batched ones), ``vmapped`` (one ``vmap`` over the model), or
``folded`` (the trials folded into the channels, ``engine.folded``: no copies around each
convolution). Convolution weights may be stored channels-last (NHWC), which CPUs run faster.
``ModeRequest`` is what the caller asked (None leaves a choice to the engine); ``first_guess``
is the device's default; ``choose`` checks the guess on the first batch, on copies, and falls
back (folded -> vmapped -> looped; channels-last -> the usual layout) where the model cannot take
it, saying why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from lrfind._errors import message
from lrfind.models import ModelError

log = logging.getLogger(__name__)

FORWARDS = ("looped", "vmapped", "folded")


@dataclass(frozen=True)
class Mode:
    """How the engine runs its trials: ``forward`` (one of ``FORWARDS``) and whether its
    convolution weights are stored channels-last."""

    forward: str
    channels_last: bool

    def __post_init__(self) -> None:
        if self.forward not in FORWARDS:
            raise ValueError(f"forward must be one of {', '.join(FORWARDS)}, got {self.forward!r}")

    @property
    def vectorized(self) -> bool:
        return self.forward != "looped"


@dataclass(frozen=True)
class ModeRequest:
    """What the caller asked of the mode. ``vectorize``: True or False forces vmap on or off (True
    lets vmap's error through); None: on for CUDA devices, and off for a model vmap cannot batch.
    ``fold``: fold vectorized trials into the channels where the model allows. ``channels_last``:
    True forces it (a model that cannot take it is an error), False keeps the usual layout, None:
    on for CPU devices where the model takes it."""

    vectorize: bool | None = None
    fold: bool = True
    channels_last: bool | None = None

    def first_guess(self, device: torch.device, *, convolutions: bool, foldable: bool) -> Mode:
        """The mode to try first: the device's defaults and what was asked."""
        vectorize = device.type == "cuda" if self.vectorize is None else self.vectorize
        forward = ("folded" if self.fold and foldable else "vmapped") if vectorize else "looped"
        channels_last = (device.type == "cpu" if self.channels_last is None else self.channels_last) and convolutions
        return Mode(forward, channels_last)


class Trials(Protocol):
    """What ``choose`` needs of an engine: one training step tried on copies in a mode, and how its
    folded forward compares with the trials' own on a batch."""

    trials: int

    def step_fails(self, x: torch.Tensor, y: torch.Tensor, mode: Mode) -> Exception | None: ...

    def folded_disagreement(self, x: torch.Tensor) -> tuple[str | None, bool]: ...

    def unfolded_operations(self) -> list[str]: ...


def choose(trials: Trials, request: ModeRequest, guess: Mode, x: torch.Tensor, y: torch.Tensor) -> Mode:
    """The mode the engine trains in: ``guess``, checked on the batch ``(x, y)``, each fallback said."""
    mode = guess
    if mode.channels_last:
        mode = _layout(trials, request, mode, x, y)
    if mode.forward == "folded":
        mode = _fold(trials, mode, x, y)
        if mode.forward == "folded":
            return mode                      # its step just ran on copies
    if mode.forward == "vmapped" and request.vectorize is None:
        e = trials.step_fails(x, y, mode)
        if e is not None:                    # a .item() or a branch on a value in the forward, an operator vmap lacks
            log.warning("the model cannot be batched with vmap (%s: %s); its %d trials train one after another "
                        "(slower on a GPU)", type(e).__name__, message(e), trials.trials)
            mode = replace(mode, forward="looped")
    return mode


def _layout(trials: Trials, request: ModeRequest, mode: Mode, x: torch.Tensor, y: torch.Tensor) -> Mode:
    """The usual layout if the model's step fails on channels-last activations (most often
    ``x.view(n, -1)`` after a convolution): only slower, so said at the info level. Asked for
    (``channels_last=True``), that is the user's error to fix."""
    e = trials.step_fails(x, y, mode)
    if e is None:
        return mode
    if request.channels_last:
        raise ModelError(f"the model's step fails with channels-last convolution weights ({type(e).__name__}: "
                         f"{message(e)}): flatten with .flatten(1) or .reshape instead of .view in its forward, "
                         "or leave channels_last (--channels-last) to its default, which keeps the usual layout "
                         "for such a model") from e
    log.info("the model's step fails with channels-last convolution weights (%s: %s); they keep the usual layout",
             type(e).__name__, message(e))
    return replace(mode, channels_last=False)


def _fold(trials: Trials, mode: Mode, x: torch.Tensor, y: torch.Tensor) -> Mode:
    """Vmapped whole if the folded forward fails, or differs on this batch from every trial's own
    forward; then one training step on copies must run."""
    reason, differ = trials.folded_disagreement(x)
    if reason is None:
        e = trials.step_fails(x, y, mode)
        reason = None if e is None else f"{type(e).__name__}: {message(e)}"
    if reason is not None:
        (log.warning if differ else log.info)("the trials' forward is vmapped whole, not folded: %s", reason)
        return replace(mode, forward="vmapped")
    nodes = trials.unfolded_operations()
    k = trials.trials
    log.info("%s folded into the channels%s", f"the {k} trials run" if k > 1 else "the trial runs",
             f"; {len(nodes)} operation(s) without a rule run under vmap: {', '.join(nodes[:8])}"
             f"{', ...' if len(nodes) > 8 else ''}" if nodes else "")
    return mode
