"""What lrfind writes for people to read: progress bars that suit where they are written, and
counts of things in words ("1 epoch", "3 epochs")."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from tqdm import tqdm

# A redirected log gets a bar's state at most this often (seconds); a terminal redraws it in place.
LOG_INTERVAL = 30.0
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def counted(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: ``counted(1, "epoch") == "1 epoch"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def progress_bar(iterable: Iterable | None = None, **kw: Any) -> "tqdm":
    """``tqdm(iterable, **kw)``, written as suits its stream (``file``, else stderr).

    On a terminal (or in a notebook) the bar redraws itself in place. Where the stream is a file or
    a pipe (``lrfind tune ... 2> log``), a terminal's redrawing would leave carriage returns and
    cursor moves in the log: there the bar writes plain lines of ASCII instead, at most one every
    ``LOG_INTERVAL`` seconds, and its last state when it ends. ``disable=True`` shows nothing, as
    with tqdm.
    """
    from tqdm.auto import tqdm

    stream = kw.get("file") or sys.stderr
    if kw.get("disable") or _in_notebook(tqdm) or _is_terminal(stream):
        return tqdm(iterable, **kw)
    interval = max(LOG_INTERVAL, kw.get("mininterval", 0.0))
    kw.update(file=_PlainLines(stream), ascii=True, dynamic_ncols=False, mininterval=interval,
              maxinterval=max(interval, kw.get("maxinterval", 0.0)))
    return tqdm(iterable, **kw)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):     # no isatty, or closed
        return False


def _in_notebook(bar: type) -> bool:
    """Whether ``bar`` (``tqdm.auto``'s) is drawn as a notebook widget, which writes no text."""
    return any(c.__module__ == "tqdm.notebook" for c in bar.__mro__)


class _PlainLines:
    """A stream for a bar that is not on a terminal: each state of the bar becomes a line of its own,
    without the carriage returns, cursor moves and blank clearing a terminal would redraw with."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._last = None

    def write(self, text: str) -> None:
        for line in re.split(r"[\r\n]", _ESCAPE.sub("", text)):
            line = line.rstrip()
            if line and line != self._last:
                self._stream.write(line + "\n")
                self._last = line

    def flush(self) -> None:
        flush = getattr(self._stream, "flush", None)
        if flush is not None:
            flush()


__all__ = ["counted", "progress_bar"]
