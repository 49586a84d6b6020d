"""Durations as people type them: ``600``, ``90s``, ``10m``, ``1h30m``, ``2.5h``; and back."""

from __future__ import annotations

import math
import re

from lrfind._errors import FieldError

_PATTERN = re.compile(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s?)?")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a plain number is seconds; ``h``, ``m`` and ``s`` parts add up."""
    match = _PATTERN.fullmatch(text.strip().lower().replace(" ", ""))
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration: give seconds (600) or hours, minutes and seconds "
                         "(90s, 10m, 1h30m)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if not (math.isfinite(total) and total > 0):
        raise ValueError(f"{text!r} is not a positive duration")
    return total


def timeout_seconds(value: float | str | None) -> float | None:
    """A ``timeout`` option in seconds: None, a positive number, or a duration as text ("10m")."""
    if isinstance(value, str):
        try:
            value = parse_duration(value)
        except ValueError as e:
            raise FieldError("timeout", f"timeout {e}") from None
    if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                  and math.isfinite(value) and value > 0):
        raise FieldError("timeout", f"timeout must be a positive number of seconds or a duration like '10m', got {value!r}")
    return value


def duration_text(seconds: float) -> str:
    """``600`` -> ``10m``, ``5400`` -> ``1h30m``, ``42.5`` -> ``42.5s`` (whole seconds from a minute on)."""
    if seconds < 60:
        return f"{seconds:.3g}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{v}{unit}" for v, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if v) or "0s"
