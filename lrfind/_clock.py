"""The process's clock: seconds since it started, for ``lrfind tune``'s time line and ``-v``'s stamps."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

STAMPED = "%(since)6.2f s %(name)s: %(message)s"


def process_seconds() -> float | None:
    """Seconds since this process started (Linux), so that start-up and imports are counted too."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return float(Path("/proc/uptime").read_text().split()[0]) - started
    except (OSError, ValueError, IndexError):
        return None


def process_start() -> float:
    """When this process started, as a ``time.time()``; now where that cannot be known."""
    return time.time() - (process_seconds() or 0.0)


class SinceStart(logging.Formatter):
    """Log records stamped with the seconds since ``start`` (``since``): the process's start, or
    for the figure process its parent's, so that both processes' lines share one clock."""

    def __init__(self, fmt: str = STAMPED, start: float | None = None) -> None:
        super().__init__(fmt)
        self.start = process_start() if start is None else start

    def format(self, record: logging.LogRecord) -> str:
        record.since = record.created - self.start
        return super().format(record)


_handler: logging.Handler | None = None      # the one configure_logging installed


def configure_logging(level: int, start: float | None = None) -> None:
    """The root logger at ``level``: verbose (INFO and below) with its lines stamped
    (``SinceStart``), else as ``name: message``. A second call replaces what the first installed
    (``lrfind -v`` before the command, then ``-v`` after it); a root logger that the program running
    lrfind configured is left as it is."""
    global _handler
    root = logging.getLogger()
    if _handler is not None and _handler in root.handlers:
        root.removeHandler(_handler)
    elif root.handlers:
        return
    _handler = logging.StreamHandler()
    _handler.setFormatter(SinceStart(start=start) if level <= logging.INFO else logging.Formatter("%(name)s: %(message)s"))
    root.addHandler(_handler)
    root.setLevel(level)
