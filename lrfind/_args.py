"""Keyword arguments a function does not take: each named, with the one the user probably meant."""

from __future__ import annotations

import difflib
from typing import Iterable


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
    aliases = aliases or {}

    def named(name: str) -> str:
        meant = aliases.get(name) or next(iter(difflib.get_close_matches(name, candidates, n=1)), None)
        return f"{name} (did you mean {meant}?)" if meant else name

    raise TypeError(f"{function} got unknown argument(s): {', '.join(map(named, unknown))}. {takes}")
