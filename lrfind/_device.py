"""Choosing the device from a user's word for it."""

from __future__ import annotations

import torch

from ._args import unknown

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU. Asking for CUDA where there is none is an error."""
    if name not in DEVICES:
        raise ValueError(unknown("device", name, DEVICES, aliases={"gpu": "cuda"}))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' is not available here; use 'cpu' or 'auto'")
    return torch.device(name)
