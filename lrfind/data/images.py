"""A data set kept whole on one device as two tensors, and its batches drawn there: ``ImageData``,
``DeviceLoader``; and how people are told what a run trained on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from lrfind._errors import FieldError

NUM_CLASSES = 10                 # of every built-in data set


class DataSizeError(FieldError):
    """A batch larger than the training split that is left (a small data set of the user's)."""


def check_batch_fits(batch_size: int, train: "ImageData", val: "ImageData") -> None:
    """Raise DataSizeError unless the training split left after validation holds a batch."""
    if len(train) < batch_size:
        raise DataSizeError("batch_size", f"batch_size {batch_size} is more than the {len(train)} training examples left after "
                            f"{len(val)} for validation: lower it")


def data_line(name: str, train: int, shape, classes: int, augment: str | None = None, val: int | None = None,
              tokens: bool = False, regression: bool = False) -> str:
    """What a range test or the trials trained on: "data: mnist, 50,000 training and 10,000 validation
    examples of 1x28x28, 10 classes" (``regression``: "1 regression target")."""
    counts = f"{train:,} training" + (f" and {val:,} validation" if val is not None else "")
    labels = f"{classes} regression target{'s' if classes != 1 else ''}" if regression else f"{classes} classes"
    return (f"data: {name}, {counts} examples of {shape_text(shape, tokens)}, {labels}"
            + (f", augmented with {augment}" if augment else ""))


def shape_text(shape, tokens: bool = False) -> str:
    """An example's shape as people say it: "1x28x28" for an image, "20 features" for a row, "64
    token ids" for integer inputs (``tokens``)."""
    shape = list(shape)
    if tokens:
        return "x".join(map(str, shape)) + " token ids"
    return "x".join(map(str, shape)) if len(shape) > 1 else f"{shape[0]} features"


@dataclass
class ImageData:
    """A whole image classification data set as two tensors on one device.

    ``images`` is float32 ``(N, 1, 28, 28)`` for the built-in sets (any ``(N, ...)`` for the user's own),
    already normalised; ``labels`` is int64 ``(N,)``, or for the user's regression data float32
    ``(N, k)`` targets, ``classes`` then being ``k``, the outputs the model must give.
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str = ""
    classes: int = NUM_CLASSES        # labels are 0 .. classes-1

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int) -> "ImageData":
        """The first ``n`` examples (all of them when ``n`` is larger than the set)."""
        if n <= 0:
            raise ValueError(f"subset size must be positive, got {n}")
        return ImageData(self.images[:n], self.labels[:n], self.name, self.classes)

    def split(self, n_val: int) -> tuple["ImageData", "ImageData"]:
        """Carve the last ``n_val`` examples off as a validation set: ``(train, val)``.

        The split is by position, not random, so every run and every trial scores on the same
        images.
        """
        if not 0 < n_val < len(self):
            raise ValueError(f"validation size must be between 1 and {len(self) - 1}, got {n_val}")
        cut = len(self) - n_val
        return (ImageData(self.images[:cut], self.labels[:cut], self.name, self.classes),
                ImageData(self.images[cut:], self.labels[cut:], f"{self.name} (val)", self.classes))

    def holdout(self, n_val: int = 10_000) -> tuple["ImageData", "ImageData"]:
        """``split`` with the validation size capped at a sixth of the set, for small subsets."""
        return self.split(max(1, min(n_val, len(self) // 6)))

    def loader(self, batch_size: int, *, shuffle: bool = True, drop_last: bool = True,
               seed: int | None = None, augment: Callable | None = None) -> "DeviceLoader":
        return DeviceLoader(self.images, self.labels, batch_size, shuffle=shuffle,
                            drop_last=drop_last, seed=seed, augment=augment)


class DeviceLoader:
    """Shuffled batches drawn from tensors that already live on the device.

    Each pass draws one permutation on the device and slices it; no host work per batch, no
    host-device synchronisation. Iterating again starts a new epoch with a new permutation.
    ``augment(images, generator)`` (see ``lrfind.data.augment``) transforms each batch with the
    loader's generator.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 shuffle: bool = True, drop_last: bool = True, seed: int | None = None,
                 augment: Callable | None = None) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if len(labels) < batch_size and drop_last:
            raise ValueError(f"batch_size {batch_size} is larger than the data set ({len(labels)} examples)")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment = augment
        self.generator = torch.Generator(device=images.device)
        self.generator.manual_seed(seed if seed is not None else int(torch.randint(2**31, ()).item()))

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def permutation(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n, device=self.device)
        return torch.randperm(n, device=self.device, generator=self.generator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.permutation()
        b = self.batch_size
        for i in range(len(self)):
            idx = order[i * b:(i + 1) * b]
            x = self.images[idx]
            yield (self.augment(x, self.generator) if self.augment else x), self.labels[idx]
