"""Choosing the device from a user's word for it; float32 without TF32 for a comparison."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from lrfind._args import unknown
from lrfind._errors import FieldError
from lrfind._names import DEVICE_NAMES, ONE_GPU

NO_FLOAT64 = {"mps"}        # device types without double-precision tensors


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU; ``cuda:N``: the N-th GPU (as numbered after
    ``CUDA_VISIBLE_DEVICES``). Asking for a GPU where there is none is an error."""
    one = ONE_GPU.fullmatch(name) if isinstance(name, str) else None
    if name not in DEVICE_NAMES and one is None:
        raise FieldError("device", unknown("device", name, (*DEVICE_NAMES, "cuda:N"), aliases={"gpu": "cuda"}))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device(name)
    if not torch.cuda.is_available():
        raise FieldError("device", f"device {name!r} is not available here; use 'cpu' or 'auto'")
    count = torch.cuda.device_count()
    if one is not None and int(one[1]) >= count:
        gpus = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise FieldError("device", f"device {name!r} is not here: this machine has {count} GPU{'s' if count > 1 else ''} "
                         f"({gpus}, numbered after CUDA_VISIBLE_DEVICES)")
    return torch.device(name)


def on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """``device`` made the current GPU (for a GPU; nothing for another device): torch's calls that
    take no device (memory statistics, synchronisation, a CUDA graph's capturing stream) then mean it."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def exact_dtype(device: torch.device) -> torch.dtype:
    """The dtype for step counts and bias corrections on ``device``: float64, as torch's optimizers
    compute them on the host, except on Apple's MPS, which has no float64 (torch's own optimizers
    count steps in float32 there)."""
    return torch.float32 if torch.device(device).type in NO_FLOAT64 else torch.float64


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Float32 convolutions and matrix products without TF32 (which cuDNN uses by default on
    Ampere and newer GPUs), so that two ways of computing the same thing agree to float32's
    rounding rather than TF32's 1e-3. Through torch's newer ``fp32_precision`` settings where they
    exist (torch 2.9 and later): reading the older ``allow_tf32`` flags after a user set the newer
    ones raises."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "conv"):
        conv = conv.conv
        before = matmul.fp32_precision, conv.fp32_precision
        matmul.fp32_precision = conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.fp32_precision = before
        return
    before = conv.allow_tf32, matmul.allow_tf32
    conv.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        conv.allow_tf32, matmul.allow_tf32 = before
