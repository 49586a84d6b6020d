"""Built-in data sets, read from IDX files and kept whole on the device.

MNIST and Fashion-MNIST are small (47 MB of uint8 for the MNIST training set), so lrfind loads a
data set once, moves it to the device, normalises it there and draws batches by indexing with a
device permutation. That removes the DataLoader, its worker processes and every per-batch host
copy, which dominate the step time of a model as small as LeNet.

Files are looked for in torchvision's layout, ``<root>/MNIST/raw/train-images-idx3-ubyte[.gz]``,
with the root taken from the ``root`` argument, else ``$LRFIND_DATA_DIR``, else ``~/.cache/lrfind``.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lrfind._args import OWN_FUNCTION, unknown
from lrfind._errors import first_line
from lrfind._imports import is_import_path
from lrfind.data.images import ImageData
from lrfind.data.user import GIVEN_PREFIX, describe, load_function, load_user_dataset

log = logging.getLogger(__name__)

DATA_DIR_ENV = "LRFIND_DATA_DIR"


@dataclass(frozen=True)
class _Spec:
    folder: str            # torchvision's class name, the folder under <root>
    tv_class: str          # torchvision.datasets class used for download
    mean: float            # per-pixel mean and std of the training images, after /255
    std: float


_SPECS = {
    "mnist": _Spec("MNIST", "MNIST", 0.1307, 0.3081),
    "fashion-mnist": _Spec("FashionMNIST", "FashionMNIST", 0.2860, 0.3530),
}
DATASETS = tuple(sorted(_SPECS))

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_IDX_DTYPES = {0x08: np.uint8}   # the only element type MNIST-style files use


class DataNotFoundError(FileNotFoundError):
    """The data set files are missing and could not be downloaded."""


class CorruptDataError(ValueError):
    """A data file exists but is not a valid IDX file of the expected shape."""


_CACHE = Path("~/.cache/lrfind").expanduser()


def default_root() -> Path:
    """The data root: ``$LRFIND_DATA_DIR`` if set, else ``~/.cache/lrfind``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else _CACHE


def _spec(name: str) -> _Spec:
    try:
        return _SPECS[name.lower()]
    except KeyError:
        raise ValueError(unknown("data set", name, DATASETS, then=OWN_FUNCTION)) from None


def check_dataset(name: str) -> None:
    """Raise a ValueError that lists the choices unless ``name`` is a built-in data set, or the user's own
    function, which is imported (not called)."""
    if is_user_dataset(name):
        if name.startswith(GIVEN_PREFIX):
            describe(name)                     # data given as a value: still held by this process?
        else:
            load_function(name)
    else:
        _spec(name)


def is_user_dataset(name: str) -> bool:
    """Whether ``name`` names the user's own data set (``module:function``) rather than a built-in one."""
    return name.lower() not in _SPECS and is_import_path(name)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into a numpy array, checking magic and size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataNotFoundError(f"no file {path}") from None
    except (OSError, EOFError) as e:  # gzip raises these for truncated or non-gzip files
        raise CorruptDataError(f"cannot read {path}: {e}; delete it and fetch a fresh copy") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise CorruptDataError(f"{path} is not an IDX file (magic bytes {raw[:4].hex() or 'missing'}); "
                               "delete it and fetch a fresh copy")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataError(f"{path} is truncated inside its header; delete it and fetch a fresh copy")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise CorruptDataError(f"{path} holds {len(raw)} bytes but its header {shape} needs {expected}; "
                               "the file is truncated or corrupt: delete it and fetch a fresh copy")
    return np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=header).reshape(shape)


def _find(raw_dir: Path, stem: str) -> Path | None:
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _try_download(spec: _Spec, root: Path) -> None:
    """Download through torchvision; after a failure, the folders it made (and what they hold, a
    partial file) are removed again: a failed run leaves the user's --data-dir as it was."""
    import torchvision.datasets as tvd

    made = next((d for d in (root / spec.folder, root / spec.folder / "raw") if not d.exists()), None)
    log.info("downloading %s into %s through torchvision", spec.folder, root)
    try:
        getattr(tvd, spec.tv_class)(str(root), download=True)
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


def _locate(name: str, split: str, root: Path, download: bool) -> tuple[Path, Path]:
    spec = _spec(name)
    raw_dir = root / spec.folder / "raw"
    stems = _FILES[split]
    found = [_find(raw_dir, s) for s in stems]
    if all(found):
        return found[0], found[1]
    reason = "download disabled"
    if download and not root.is_dir() and root != _CACHE:
        # A --data-dir that does not exist is more likely a typo than a wish to download there.
        reason = "the folder does not exist"
    elif download:
        try:
            _try_download(spec, root)
        except Exception as e:  # no network, mirror down, disk full: all end in the same advice
            reason = f"download through torchvision failed ({first_line(e).rstrip(':')}; no network?)"
        found = [_find(raw_dir, s) for s in stems]
        if all(found):
            return found[0], found[1]
    missing = ", ".join(s for s, f in zip(stems, found) if f is None)
    raise DataNotFoundError(
        f"{spec.folder} {split} files missing in {raw_dir}: {missing} (.gz or not; {reason}). "
        f"Point lrfind at a folder that holds {spec.folder}/raw/ with --data-dir DIR "
        f"or ${DATA_DIR_ENV}=DIR."
    )


def load_dataset(name: str = "mnist", split: str = "train", *, root: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", download: bool = True) -> ImageData:
    """Load a built-in data set onto ``device``, normalised with the training set's mean and std,
    or the user's own named ``module:function`` or ``file.py:function`` (see ``lrfind.data.user``).

    Raises ``DataNotFoundError`` naming the missing files and the folder looked in when they are
    absent and cannot be downloaded, and ``CorruptDataError`` for a truncated or malformed file.
    """
    if split not in _FILES:
        raise ValueError(f"unknown split {split!r}; choose from train, test")
    if is_user_dataset(name):
        return load_user_dataset(name, split, device)
    spec = _spec(name)
    root = Path(root).expanduser() if root is not None else default_root()
    img_path, lbl_path = _locate(name, split, root, download)
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise CorruptDataError(f"{img_path} / {lbl_path}: expected images (N, H, W) and labels (N,), "
                               f"got {images.shape} and {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise CorruptDataError(f"{img_path} holds {images.shape[0]} images but {lbl_path} "
                               f"{labels.shape[0]} labels")
    if labels.size and labels.max() >= 10:
        raise CorruptDataError(f"{lbl_path} holds label {labels.max()}, outside 0..9")
    # One host-to-device copy of uint8, then normalise on the device.
    x = torch.from_numpy(images.copy()).to(device)
    x = x.unsqueeze(1).float().div_(255.0).sub_(spec.mean).div_(spec.std)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    return ImageData(x, y, name.lower())


