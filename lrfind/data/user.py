"""The user's own data set, named like a model: ``--dataset path/to/file.py:function``.

The function (or ``package.module:function``, or the function itself in ``tune(dataset=...)``)
takes no arguments and returns the training set, or ``(train, test)``; ``tune(dataset=...)`` also
takes what it would return, as it is (stored as ``given:`` and a hash of the tensors). Each part is either

- a map-style ``torch.utils.data.Dataset`` whose items are ``(image tensor, integer label)``, such
  as a torchvision data set with ``transform=ToTensor()``, or
- a pair ``(images, labels)`` of tensors or numpy arrays, one row per example.

A DataLoader stands for its Dataset: lrfind draws its own batches.

lrfind reads it once into two tensors and keeps them on the device, as it does with MNIST, so the
whole set must fit in the device's memory. Float images are used as given (normalise them as your
own training would); uint8 images are pixels: ``(N, H, W)`` and ``(N, H, W, C)``, as numpy keeps
them, become ``(N, C, H, W)``, scaled to [0, 1] and standardised with the training set's mean and
std per channel, as the built-in data sets are; other integer inputs are token ids (kept as int64,
for a model that embeds them). The classes are
``0 .. C-1`` with ``C`` the largest label + 1; float labels are regression targets, ``(N, k)``
(``(N,)`` becomes ``(N, 1)``), trained and scored with the mean squared error (``losses``).
Without a test set, the last sixth of the training set (at most 10,000 examples) is held out as
one: trials never see it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from lrfind._errors import message
from lrfind._imports import a, callable_name, load_callable
from lrfind.data.images import ImageData

log = logging.getLogger(__name__)

TEST_HOLDOUT = 10_000          # examples held out as the test set when the function gives none
READ_BATCH = 1_000             # items collated at a time when a Dataset is read into tensors


class DataSetError(ValueError):
    field = "dataset"
    """A data set named by the user cannot be loaded or is not image classification data."""


class _Splits(NamedTuple):
    train: tuple[torch.Tensor, torch.Tensor]      # on the host, checked and converted
    test: tuple[torch.Tensor, torch.Tensor]
    classes: int


def dataset_name(function: Callable[[], Any]) -> str:
    """``module:qualname`` of a top-level function, by which ``load_dataset`` finds it again."""
    return callable_name(function, "dataset", DataSetError)


def load_function(name: str) -> Callable[[], Any]:
    """The function that ``name`` points to, not called yet."""
    return load_callable(name, "dataset", DataSetError)


GIVEN_PREFIX = "given:"
_GIVEN: dict[str, _Splits] = {}          # data given as a value to tune(dataset=...), by its name


def given_name(value: Any) -> str:
    """Read data given as a value (``tune(dataset=(x, y))``, a Dataset, ``(train, test)``, ...) and
    return the name it is stored under: ``given:`` and a hash of its tensors, so that the same data
    given again, in this process or the next, names the same study (and resumes it)."""
    splits = _splits("given", value)
    digest = hashlib.sha1()
    for t in (*splits.train, *splits.test):            # every byte: 0.6 GB of CIFAR-10 floats in about 1 s
        digest.update(f"{tuple(t.shape)} {t.dtype}".encode())
        digest.update(memoryview(t.contiguous().numpy()).cast("B"))
    name = GIVEN_PREFIX + digest.hexdigest()[:16]
    _GIVEN.setdefault(name, splits)
    return name


def _splits_of(name: str) -> _Splits:
    if name.startswith(GIVEN_PREFIX):
        try:
            return _GIVEN[name]
        except KeyError:
            raise DataSetError(f"dataset {name}: data given as a value lives in the process it was given to; "
                               "give it again (tune(dataset=...)), or name a function that returns it") from None
    return _read(name, load_function(name))


def load_user_dataset(name: str, split: str, device: str | torch.device = "cpu") -> ImageData:
    """One split of the user's data set on ``device``. The function runs once for both splits and
    every study of the process, again only when it was redefined or its file edited."""
    splits = _splits_of(name)
    x, y = splits.train if split == "train" else splits.test
    try:
        return ImageData(x.to(device), y.to(device), name, classes=splits.classes)
    except torch.cuda.OutOfMemoryError:
        raise DataSetError(f"dataset {name}: its {split} set ({x.numel() * 4 / 2**30:.1f} GiB as float32) does not "
                           f"fit in the memory of {device}; lrfind keeps the whole set on the device, so give it "
                           "a smaller one") from None


def describe(name: str) -> dict[str, Any]:
    """What a study stores of the user's data set, so that a resume notices that it changed."""
    splits = _splits_of(name)
    return {"train_examples": len(splits.train[1]), "test_examples": len(splits.test[1]),
            "shape": list(splits.train[0].shape[1:]), "classes": splits.classes}


@functools.lru_cache(maxsize=2)
def _read(name: str, function: Callable[[], Any]) -> _Splits:
    try:
        value = function()
    except Exception as e:
        hint = "; it must take no arguments" if isinstance(e, TypeError) else ""
        raise DataSetError(f"dataset {name}: calling it failed ({type(e).__name__}: {e}){hint}") from e
    return _splits(name, value)


def _splits(name: str, value: Any) -> _Splits:
    """Checked training and test tensors on the host from what the user's function returned (or gave)."""
    train, test = _parts(name, value)
    x, y = _tensors(name, "training", train)
    if test is None:
        n_test = max(1, min(TEST_HOLDOUT, len(y) // 6))
        if len(y) - n_test < 2:
            raise DataSetError(f"dataset {name}: its training set holds {len(y)} examples, too few to hold a test "
                               "set out of it; give more, or return (train, test)")
        log.info("dataset %s gave no test set: its last %d training examples are held out as one", name, n_test)
        x, y, tx, ty = x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]
    else:
        tx, ty = _tensors(name, "test", test)
        if tx.shape[1:] != x.shape[1:]:
            raise DataSetError(f"dataset {name}: its test images are {_shape(tx)} but its training images "
                               f"{_shape(x)}")
    if y.is_floating_point() != ty.is_floating_point() or y.shape[1:] != ty.shape[1:]:
        raise DataSetError(f"dataset {name}: its test labels are {_label_kind(ty)} but its training labels "
                           f"{_label_kind(y)}")
    if y.is_floating_point():                    # regression: the model returns one value per target
        classes = y.shape[1]
    else:
        classes = int(max(y.max(), ty.max())) + 1
        if classes < 2:
            raise DataSetError(f"dataset {name}: every label is 0; a classifier needs at least two classes")
        if int(min(y.min(), ty.min())) > 0:
            log.warning("dataset %s: no label is 0, so its classes are 0 .. %d and the model must return %d "
                        "scores; labels counted from 1 should be shifted to start at 0", name, classes - 1, classes)
    if x.dtype == torch.uint8:
        x, tx = _standardise(_channels_first(name, x), _channels_first(name, tx))
    return _Splits((x, y), (tx, ty), classes)


def _label_kind(y: torch.Tensor) -> str:
    return f"{y.shape[1]} float regression target(s)" if y.is_floating_point() else "integer class indices"


def _parts(name: str, value: Any) -> tuple[Any, Any]:
    """(train, test or None) from what the function returned."""
    value = _unloaded(value)
    if isinstance(value, dict) and "train" in value:
        return value["train"], value.get("test")
    if isinstance(value, (tuple, list)) and len(value) == 2:
        if _is_pair(value):
            return value, None                       # (images, labels)
        if all(_is_part(_unloaded(v)) for v in value):
            return _unloaded(value[0]), _unloaded(value[1])     # (train, test)
    if _is_dataset(value):                           # a list of (image, label) items is one too
        return value, None                           # one Dataset
    raise DataSetError(f"dataset {name}: it returned {_kind(value)}; return a Dataset of (image, label) items, "
                       "a pair (images, labels) of tensors, or (train, test) of either")


def _tensors(name: str, split: str, part: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if _is_pair(part):                    # numpy arrays copied: they may be read-only, torch tensors may not
        try:
            x, y = (torch.from_numpy(np.array(v)) if isinstance(v, (np.ndarray, list)) else v for v in part)
        except TypeError as e:            # an array of strings or objects
            raise DataSetError(f"dataset {name}: its {split} images or labels are not numbers ({e})") from None
    elif _is_dataset(part):
        x, y = _read_dataset(name, split, part)
    else:
        raise DataSetError(f"dataset {name}: its {split} set is {_kind(part)}; give a Dataset of (image, label) "
                           "items or a pair (images, labels) of tensors")
    return _checked(name, split, x.detach().cpu(), y.detach().cpu())


def _read_dataset(name: str, split: str, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A map-style Dataset read in order into (images, labels), with a progress bar on long reads."""
    from lrfind._output import progress_bar

    n = len(data)
    if n == 0:
        raise DataSetError(f"dataset {name}: its {split} set is empty")
    item = data[0]
    if not (isinstance(item, (tuple, list)) and len(item) == 2 and _is_array(item[0])
            and isinstance(item[1], (int, float, np.integer, np.floating, torch.Tensor))):
        shown = (f"({', '.join(_kind(v) for v in item)})" if isinstance(item, (tuple, list)) else _kind(item))
        pil = isinstance(item, (tuple, list)) and type(item[0]).__module__.startswith("PIL")
        hint = "; add transform=ToTensor()" if pil else ""
        raise DataSetError(f"dataset {name}: its {split} set's items must be (image tensor, integer label), "
                           f"item 0 is {shown}{hint}")
    first = torch.as_tensor(item[0])
    need = n * first.numel() * 4            # bytes as float32
    free = _host_bytes_free()
    if free is not None and need > free:
        raise DataSetError(f"dataset {name}: its {split} set's {n:,} items of {'x'.join(map(str, first.shape))} "
                           f"take {need / 2**30:.1f} GiB as float32, more than the {free / 2**30:.1f} GiB of "
                           "available memory; lrfind keeps a data set whole on the device: give a subset (torch.utils.data."
                           "Subset) or smaller images")
    xs, ys = [], []
    failure = None
    chunks = progress_bar(_chunks(data, n), total=-(-n // READ_BATCH), desc=f"reading {split} set", unit="batch",
                          leave=False, disable=n < 10 * READ_BATCH)
    try:
        for items in chunks:
            x, y = torch.utils.data.default_collate(items)
            xs.append(torch.as_tensor(x))
            ys.append(torch.as_tensor(y))
    except Exception as e:
        failure = f"{type(e).__name__}: {message(e)}"
    finally:
        chunks.close()
    if failure is not None:
        raise DataSetError(f"dataset {name}: reading its {split} set failed after {len(xs) * READ_BATCH} items "
                           f"({failure}); every item must be an image of the same shape and a label")
    return torch.cat(xs), torch.cat(ys)


def _host_bytes_free() -> int | None:
    """Memory available to a new allocation now (Linux's MemAvailable: free pages and the page cache
    that can be dropped), or None where it cannot be asked: then nothing is refused."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _chunks(data: Any, n: int):
    """Lists of READ_BATCH items, in order, read in this process. Forked readers were tried: 1.5x
    faster on 2 cores, but a child forked after torch ran its thread pool can deadlock in it."""
    for lo in range(0, n, READ_BATCH):
        yield [data[i] for i in range(lo, min(n, lo + READ_BATCH))]


def _checked(name: str, split: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    where = f"dataset {name}: its {split}"
    if x.ndim < 2 or len(x) == 0:
        raise DataSetError(f"{where} images have shape {tuple(x.shape)}; give one row per example, (N, ...)")
    if not (y.ndim == 1 or y.ndim == 2 and y.is_floating_point()) or len(y) != len(x):
        raise DataSetError(f"{where} labels have shape {tuple(y.shape)}, expected ({len(x)},): one per image "
                           f"(float regression targets: ({len(x)},) or ({len(x)}, k))")
    if y.is_floating_point():                          # regression targets, (N,) or (N, k)
        if not bool(torch.isfinite(y).all()):
            raise DataSetError(f"{where} targets (float labels) hold NaN or infinite values")
        y = y.float().unsqueeze(1) if y.ndim == 1 else y.float()
    elif y.is_complex() or y.dtype == torch.bool:
        raise DataSetError(f"{where} labels are {y.dtype}; give integer class indices 0 .. C-1, or float "
                           "regression targets")
    elif int(y.min()) < 0:
        raise DataSetError(f"{where} labels include {int(y.min())}; give class indices 0 .. C-1")
    y = y if y.is_floating_point() else y.long()
    if x.dtype == torch.uint8:
        return x, y
    if x.dtype in (torch.int16, torch.int32, torch.int64):      # token ids, for a model that embeds them
        if int(x.min()) < 0:
            raise DataSetError(f"{where} inputs are integers (token ids) and include {int(x.min())}; "
                               "give ids >= 0, or float inputs")
        return x.long(), y
    if not x.is_floating_point():
        raise DataSetError(f"{where} images are {x.dtype}; give float images (or uint8 pixels)")
    if not bool(torch.isfinite(x).all()):
        raise DataSetError(f"{where} images hold NaN or infinite values")
    return x.float(), y


def _channels_first(name: str, x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as numpy and PIL keep them, (N, H, W) or (N, H, W, C), as torch's (N, C, H, W)."""
    if x.ndim == 3:
        return x.unsqueeze(1)
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] > 4:     # 1-4 channels last, more rows
        log.info("dataset %s: uint8 images %s taken as (N, H, W, C) and moved to (N, C, H, W)",
                 name, tuple(x.shape))
        return x.permute(0, 3, 1, 2).contiguous()
    return x


def _standardise(x: torch.Tensor, tx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 pixels to floats with the training set's mean 0 and std 1 (per channel for N, C, H, W)."""
    x, tx = x.float().div_(255), tx.float().div_(255)
    dims = [0, 2, 3] if x.ndim == 4 else list(range(x.ndim))
    std, mean = torch.std_mean(x, dim=dims, keepdim=True)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))        # a constant channel is only centred
    return (x - mean) / std, (tx - mean) / std


def _unloaded(value: Any) -> Any:
    """A DataLoader's Dataset: lrfind draws its own batches, so the loader's batching and order do not matter."""
    from torch.utils.data import DataLoader

    return value.dataset if isinstance(value, DataLoader) else value


def _is_part(value: Any) -> bool:
    """A training or test set: a Dataset, or an (images, labels) pair."""
    return _is_dataset(value) or _is_pair(value)


def _is_pair(value: Any) -> bool:
    """(images, labels): arrays, the labels possibly a list (torchvision's ``targets`` are one)."""
    return (isinstance(value, (tuple, list)) and len(value) == 2 and _is_array(value[0])
            and (_is_array(value[1]) or (isinstance(value[1], list) and len(value[1]) == len(value[0]))))


def _is_dataset(value: Any) -> bool:
    """Map-style: items by index and a length (a torch Dataset, or a list of (image, label) pairs)."""
    return (hasattr(value, "__getitem__") and hasattr(value, "__len__")
            and not isinstance(value, (str, bytes, dict, tuple)) and not _is_array(value))


def _is_array(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def _shape(x: torch.Tensor) -> str:
    return "x".join(map(str, x.shape[1:]))


def _kind(value: Any) -> str:
    shape = f" of shape {tuple(value.shape)}" if _is_array(value) else ""
    return a(type(value).__name__) + shape
