"""K trials' weights in one (K, P) tensor, a row each: the model sees its parameters as views into
it, and the optimizer updates every tensor of every trial in a handful of kernels."""

from __future__ import annotations

import math

import torch
from torch import nn

ROW_ALIGN_BYTES = 128           # where each trial's weights, and each of its tensors, start (see padded)


class Rows:
    """The layout of the (K, P) weights: each parameter's shape, in order, and those stored
    channels-last (convolution weights, (K, out, in, h, w), kept as (out, h, w, in))."""

    def __init__(self, shapes: dict[str, torch.Size], channels_last: set[str]) -> None:
        self.shapes, self.channels_last = shapes, channels_last

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """The (K, *shape) parameters as views of the (K, P) weights. A channels-last weight is seen
        as (out, in, h, w): a view with channels-last strides."""
        sizes = [math.prod(shape) for shape in self.shapes.values()]
        views = {}
        parts = flat.split([padded(n, flat.dtype) for n in sizes], dim=1)
        for (name, shape), n, part in zip(self.shapes.items(), sizes, parts):
            part = part[:, :n]
            if name in self.channels_last:
                out, inp, h, w = shape
                views[name] = part.view(len(flat), out, h, w, inp).permute(0, 1, 4, 2, 3)
            else:
                views[name] = part.view(len(flat), *shape)
        return views

    def flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """(K, P) weights holding the (K, *shape) ``params`` in the layout ``views`` reads, each
        tensor's part padded with zeros to a multiple of ``ROW_ALIGN_BYTES`` (see ``padded``)."""
        parts = [(v.permute(0, 1, 3, 4, 2) if name in self.channels_last else v).detach().reshape(len(v), -1)
                 for name, v in params.items()]
        return torch.cat([nn.functional.pad(part, (0, padded(part.shape[1], part.dtype) - part.shape[1]))
                          for part in parts], 1)

    def row_views(self, row: torch.Tensor) -> dict[str, torch.Tensor]:
        """One trial's parameters as views of its row of the weights (``views`` of a single row)."""
        return {name: v.squeeze(0) for name, v in self.views(row.unsqueeze(0)).items()}


def padded(n: int, dtype: torch.dtype) -> int:
    """``n`` elements rounded up to a whole number of ``ROW_ALIGN_BYTES``.

    Trained one after another, each trial's tensors reach the kernels as views into its row of the
    stacked ones. A row of 267 float32 weights put the second trial's at a 4-byte boundary, and on
    channels-last images cuDNN's batch norm on the H100 then failed ("misaligned address"; the CUDA
    context is lost for the whole process). Padded rows start every tensor where a fresh
    allocation would (and the same step ran with them).
    """
    per = max(1, ROW_ALIGN_BYTES // dtype.itemsize)
    return -(-n // per) * per


def aligned_rows(stacked: torch.Tensor) -> torch.Tensor:
    """The (K, *shape) ``stacked`` copied into padded rows (see ``padded``), seen as (K, *shape)."""
    rows = stacked.reshape(len(stacked), -1)
    n = rows.shape[1]
    out = torch.zeros(len(stacked), padded(n, stacked.dtype), dtype=stacked.dtype, device=stacked.device)
    out[:, :n] = rows
    return out[:, :n].view(stacked.shape)
