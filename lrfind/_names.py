"""Names of the built-in models and data sets, so that the command line can offer them (and
answer ``--help`` or a wrong option) without importing torch. tests/test_cli.py keeps them equal
to the registries in ``models.py``, ``data.py`` and ``augment.py``."""

MODEL_NAMES = ("lenet", "mlp")
DATASET_NAMES = ("mnist", "fashion-mnist")
AUGMENT_NAMES = ("flip-crop", "crop")
