"""Files written whole or not at all: a reader (``load_best``, ``lrfind show``, another worker of
the study) never finds half of one, whatever stops the writer (Ctrl-C in the middle of a figure,
a killed process, two workers writing the same report)."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


def write_whole(path: str | Path, data: str | bytes) -> Path:
    """``data`` (text as UTF-8) into ``path``: written to a file beside it, flushed to the disk,
    then renamed over it (an atomic replace on POSIX and Windows), and the rename flushed too: after
    a power cut the file is the old one or the new one, never empty. The new file gets the
    permissions a plain ``open(path, "w")`` would give it."""
    if not str(path).strip() or not Path(path).name:
        raise ValueError(f"no file name to write to: {str(path)!r}")
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    part = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:                      # no such folder, no permission: named by the path asked for
        raise type(e)(e.errno, e.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
        fsync_folder(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(part)
        raise
    return path


def fsync_folder(folder: str | Path) -> None:
    """Flush a folder's entries (a rename, a new file) to the disk. Windows cannot open a folder
    for this, and needs it not: its rename is flushed with the file."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
