"""Arguments the user got wrong: names (keyword arguments, schedule names), each named with the one
probably meant, and numbers that must be positive."""

from __future__ import annotations

import difflib
import math
import numbers
from typing import Any, Iterable

from lrfind._errors import FieldError


def check_names(function: str, given: Iterable[str], accepted: Iterable[str], *, others: Iterable[str] = (),
                aliases: dict[str, str] | None = None, takes: str) -> None:
    """Raise a TypeError naming every name in ``given`` that is not in ``accepted``.

    ``others``: the function's remaining parameters, offered as guesses for a misspelling but not
    accepted here; ``aliases``: names other libraries use for the same thing (``criterion`` ->
    ``loss_fn``); ``takes``: the end of the message, what the function does take.
    """
    accepted = list(accepted)
    unknown = [name for name in given if name not in accepted]
    if not unknown:
        return
    candidates = accepted + list(others)
    named = [name + did_you_mean(name, candidates, aliases) for name in unknown]
    raise TypeError(f"{function} got unknown argument(s): {', '.join(named)}. {takes}")


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def closest(name: str, candidates: Iterable[str], aliases: dict[str, str] | None = None) -> str | None:
    """The name the user probably meant: an alias's (matched without case, ``-`` or ``_``), the
    candidate spelt the same but for those, the closest of those the name begins, one with the same
    letters in another order, or the closest by difflib if close enough (compared the same way);
    None if none is close."""
    candidates = list(candidates)
    by_key = {_key(k): v for k, v in (aliases or {}).items()} | {_key(c): c for c in candidates}
    key = _key(name)
    if key in by_key:
        return by_key[key]
    started = [k for k in by_key if len(key) >= 3 and k.startswith(key)]     # "expo" for exponential
    swapped = [k for k in by_key if sorted(k) == sorted(key)]                # "sdg" for sgd
    close = difflib.get_close_matches(key, started, n=1, cutoff=0) or swapped[:1] or difflib.get_close_matches(
        key, list(by_key), n=1, cutoff=0.75)                                 # not "lenet" for "resnet"
    return by_key[close[0]] if close else None


def did_you_mean(name: Any, candidates: Iterable[str], aliases: dict[str, str] | None = None) -> str:
    """`` (did you mean X?)`` with the name probably meant (``closest``), or "" when none is close."""
    meant = closest(name, candidates, aliases) if isinstance(name, str) else None
    return f" (did you mean {meant}?)" if meant else ""


OWN_FUNCTION = ", or name your own as module:function or path/to/file.py:function"


def unknown(what: str, name: Any, choices: Iterable[str], *, aliases: dict[str, str] | None = None,
            then: str = "") -> str:
    """The message for a name that is none of ``choices``: it says the one probably meant, then the
    choices, then ``then`` (how to name one's own, say)."""
    choices = list(choices)
    return f"unknown {what} {name!r}{did_you_mean(name, choices, aliases)}; choose from {', '.join(choices)}{then}"


def check_positive(name: str, value: Any, *, least: float | None = None, then: str = "") -> None:
    """Raise a ValueError unless ``value`` is a finite real number above 0 (with ``least``: at least
    that), not a bool; the message names ``name`` and the value, then says ``then``."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if number and math.isfinite(value) and (value > 0 if least is None else value >= least):
        return
    kind = "a positive finite number" if least is None else f"a finite number >= {least:g}"
    raise FieldError(name, f"{name} must be {kind}, got {value!r}{then}")


# TuneConfig's counts: positive integers (those of OPTIONAL_COUNTS may be None: their default)
COUNTS = ("trials", "epochs", "batch_size", "val_size", "range_test_iters", "range_test_repeats", "heartbeat",
          "final_seeds")
OPTIONAL_COUNTS = ("val_size", "range_test_iters", "range_test_repeats")


def check_counts(**values: Any) -> None:
    """Raise a ValueError naming the first of ``values`` (TuneConfig's counts) that is not a
    positive integer; ``range_test_iters`` must be at least 2 (a sweep's first LR and its last).
    Imports nothing heavy: the command line checks these before it imports torch."""
    for name, value in values.items():
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1) and not (
                name in OPTIONAL_COUNTS and value is None):
            raise FieldError(name, f"{name} must be a positive integer, got {value!r}")
    if (values.get("range_test_iters") or 2) < 2:
        raise FieldError("range_test_iters", f"range_test_iters must be at least 2, got {values['range_test_iters']!r}")


def check_threads(threads: Any) -> None:
    """Raise a FieldError unless ``threads`` (CPU threads: ``--threads``, ``threads=``) is None (lrfind
    decides) or a positive integer. Imports nothing heavy: the command line checks it before torch."""
    if threads is not None and not (isinstance(threads, numbers.Integral) and not isinstance(threads, bool)
                                    and threads >= 1):
        raise FieldError("threads", f"threads must be a positive integer (CPU threads), got {threads!r}; leave "
                         "it out for lrfind's choice")
