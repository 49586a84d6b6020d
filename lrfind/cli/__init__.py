"""The ``lrfind`` command line: one module per command, each registering on ``app.main``."""

from lrfind.cli import range_test, schedules, tune  # noqa: F401  (each registers its commands on main)
from lrfind.cli.app import entry, main

__all__ = ["entry", "main"]
