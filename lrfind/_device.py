"""Choosing the device from a user's word for it; float32 without TF32 for a comparison."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ._args import unknown

DEVICES = ("auto", "cpu", "cuda")
NO_FLOAT64 = {"mps"}        # device types without double-precision tensors


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU. Asking for CUDA where there is none is an error."""
    if name not in DEVICES:
        raise ValueError(unknown("device", name, DEVICES, aliases={"gpu": "cuda"}))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' is not available here; use 'cpu' or 'auto'")
    return torch.device(name)


def exact_dtype(device: torch.device) -> torch.dtype:
    """The dtype for step counts and bias corrections on ``device``: float64, as torch's optimizers
    compute them on the host, except on Apple's MPS, which has no float64 (torch's own optimizers
    count steps in float32 there)."""
    return torch.float32 if torch.device(device).type in NO_FLOAT64 else torch.float64


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Float32 convolutions and matrix products without TF32 (which cuDNN uses by default on
    Ampere and newer GPUs), so that two ways of computing the same thing agree to float32's
    rounding rather than TF32's 1e-3."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
