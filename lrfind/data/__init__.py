"""Data: the built-in data sets (read from IDX files, kept whole on the device), the user's own,
augmentation on the device, and the loss that fits the labels.

The names a user's code imports: ``load_dataset``, ``read_idx``, ``ImageData``, ``DeviceLoader``
and the errors ``DataNotFoundError`` (files missing: say where they are) and ``CorruptDataError``.
"""

from lrfind.data.builtin import CorruptDataError, DataNotFoundError, load_dataset, read_idx
from lrfind.data.images import DeviceLoader, ImageData

__all__ = ["CorruptDataError", "DataNotFoundError", "DeviceLoader", "ImageData", "load_dataset", "read_idx"]
