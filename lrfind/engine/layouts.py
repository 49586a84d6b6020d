"""The two layouts in which K trials' activations travel through the folded forward: folded into
the channels (``Folded``: (B, K*C, ...)) or stacked on a leading axis (``Stacked``: (K, ...)); and
what a folding rule needs of the forward that calls it (``Run``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Run(Protocol):
    """What a rule needs of the forward call it runs in (``folded.FoldedForward``'s): the number of
    trials, the trials' weights, and the conversions between layouts."""

    k: int

    def stacked(self, v: Any) -> torch.Tensor: ...

    def folded(self, v: Any) -> "Folded": ...

    def shape(self, v: Any) -> tuple[int, ...]: ...

    def weight(self, module: str, name: str) -> torch.Tensor | None: ...


class NotFoldable(Exception):
    """The model's forward cannot be run folded: the engine vmaps it whole."""


@dataclass(frozen=True)
class Folded:
    """Every trial's (B, C, *spatial) activation, folded: (B, K*C, *spatial), trial k's channels at
    [k*C, (k+1)*C)."""

    t: torch.Tensor
    c: int

    def by_trial(self) -> torch.Tensor:
        """(B, K, C, *spatial): a view with the trials on an axis of their own."""
        return self.t.unflatten(1, (-1, self.c))

    @staticmethod
    def joined(t: torch.Tensor) -> Folded:
        """A (B, K, C, *spatial) tensor folded again (``by_trial``'s inverse)."""
        return Folded(t.flatten(1, 2), t.shape[2])


@dataclass(frozen=True)
class Stacked:
    """Every trial's value on a leading trials axis: (K, *shape), of any strides."""

    t: torch.Tensor


TRIAL = (Folded, Stacked)

# in-place methods that change an activation's shape, not its values: not foldable
