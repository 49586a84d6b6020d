"""Random augmentation of training batches on the device, drawn afresh for every batch.

lrfind keeps a data set whole on the device and draws batches by indexing, so a Dataset's per-item
transforms run once, when it is read. Augmentation that should differ every epoch is applied here
instead, to each training batch where it lies: one pass of a few kernels, no host work. Every
trial of a fused batch sees the same augmented images (common random numbers, as with the batch
order); validation and test images are never augmented.

An augmentation is a function ``(images, generator) -> images`` of the same shape and dtype that
draws its randomness from ``generator`` (the loader's, on the images' device), so that a study is
reproducible from its seed. Built in: ``flip-crop`` (CIFAR's usual recipe) and ``crop`` (shifts
only, for digits and text that must not be mirrored). The user's own is named
``path/to/file.py:function`` or ``module:function``, as a model is.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from lrfind._args import OWN_FUNCTION, unknown
from lrfind._errors import message
from lrfind._imports import is_import_path, load_callable

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class AugmentError(ValueError):
    field = "augment"
    """An augmentation named by the user cannot be loaded or does not keep the images' shape."""


PADDING = 4                # pixels a built-in crop shifts by, at most, in each direction


def random_crop(images: torch.Tensor, generator: torch.Generator, padding: int = PADDING) -> torch.Tensor:
    """Each image shifted by up to ``padding`` pixels in each direction, the border mirrored (as in
    airbench; torchvision's ``RandomCrop(size, padding, padding_mode="reflect")`` per item)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding), mode="reflect")
    offsets = torch.randint(0, 2 * padding + 1, (2, n), device=images.device, generator=generator)
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)            # (N, H)
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)            # (N, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # (N, C, H+2p, W+2p) -> channels last to gather (N, H, W) windows of every channel at once
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Half of the images mirrored left to right."""
    flip = torch.rand(len(images), device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def flip_crop(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return random_flip(random_crop(images, generator), generator)


AUGMENTATIONS: dict[str, Augment] = {"flip-crop": flip_crop, "crop": random_crop}


def get_augment(name: str) -> Augment:
    """A built-in augmentation by name, or the user's own ``module:function`` / ``file.py:function``."""
    if name in AUGMENTATIONS:
        return AUGMENTATIONS[name]
    if not is_import_path(name):
        raise AugmentError(unknown("augmentation", name, AUGMENTATIONS, then=OWN_FUNCTION))
    return load_callable(name, "augment", AugmentError)


def check_augment(augment: Augment, images: torch.Tensor, name: str) -> None:
    """Raise a clear AugmentError unless ``augment`` maps two of ``images`` to images of the same shape."""
    x = images[:2]
    if name in AUGMENTATIONS and not x.is_floating_point():
        raise AugmentError(f"augment {name} shifts and mirrors images; this data set's inputs are {x.dtype} token ids")
    if name in AUGMENTATIONS and x.ndim != 4:
        raise AugmentError(f"augment {name} needs (N, C, H, W) images; this data set's are {tuple(x.shape[1:])}")
    if name in AUGMENTATIONS and min(x.shape[2:]) <= PADDING:
        raise AugmentError(f"augment {name} shifts images by up to {PADDING} pixels with mirrored borders: they must "
                           f"be larger than {PADDING}x{PADDING}; this data set's are {x.shape[2]}x{x.shape[3]}")
    generator = torch.Generator(device=x.device).manual_seed(0)
    try:
        out = augment(x.clone(), generator)
    except Exception as e:
        hint = "; it must take (images, generator)" if isinstance(e, TypeError) else ""
        raise AugmentError(f"augment {name}: a batch of shape {tuple(x.shape)} raised {type(e).__name__}: "
                           f"{message(e)}{hint}") from None
    if not (isinstance(out, torch.Tensor) and out.shape == x.shape and out.dtype == x.dtype):
        got = f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise AugmentError(f"augment {name} must return images of the shape and dtype it was given: "
                           f"{tuple(x.shape)} {x.dtype} gave {got}")
