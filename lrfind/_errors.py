"""What an exception says, in one line: for the one-line errors and warnings lrfind writes about
failures in the user's code, torch, a download or a database driver."""

from __future__ import annotations

import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def message(e: BaseException) -> str:
    """The first line of what ``e`` says, '' when it says nothing. A database error wrapped by
    SQLAlchemy speaks through its driver's (``orig``)."""
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else ""


def first_line(e: BaseException) -> str:
    """``message(e)``, or the exception's type name when it says nothing."""
    return message(e) or type(e).__name__


class Explained(Exception):
    """Mixed into an error whose message already says what to do: lrfind does not wrap it again
    with advice of its own (``find_lr``'s "check that the batches fit the model", say)."""


class FieldError(ValueError):
    """A value given for one field (a config's, a function's argument) is wrong. ``field`` names
    it, so that the command line names the option the user typed (``--max-grad-norm``) from the
    error itself, not from its wording. Messages start with the field's name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ExplainedValueError(Explained, ValueError):
    """A ValueError of lrfind's own that already says what to do."""


def warn_at_users_line(text: str, category: type[Warning] = UserWarning) -> None:
    """A warning that points at the user's line that called into lrfind (the first frame outside
    its package: ``find_lr``'s call, ``tune_loop``'s, the train function's or ``configure_optimizers``),
    however deep inside lrfind it is raised. A fixed ``stacklevel`` is right for one call path only."""
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(text, category, stacklevel=level)
