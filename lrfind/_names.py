"""Names of the built-in models and data sets, and of the devices, so that the command line can
offer them (and answer ``--help`` or a wrong option) without importing torch. tests/test_cli.py
keeps them equal to the registries in ``models.py``, ``data.py`` and ``augment.py``; ``_device``
resolves the devices named here."""

import re

MODEL_NAMES = ("lenet", "mlp")
DATASET_NAMES = ("mnist", "fashion-mnist")
AUGMENT_NAMES = ("flip-crop", "crop")
DEVICE_NAMES = ("auto", "cpu", "cuda")       # and cuda:N, one GPU of several
ONE_GPU = re.compile(r"cuda:(\d+)")
