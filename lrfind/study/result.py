"""What a study of ``tune`` or ``tune_loop`` returns (``TuneResult``), and what Ctrl-C during one
raises (``TuneInterrupted``), saying what was kept and how to go on."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import optuna

from lrfind.study import report
from lrfind.study import trials as _study
from lrfind.study.best import TunedSchedule, from_study


@dataclass
class TuneResult:
    """What ``tune`` found: the study, the base LR, and the final scores (empty with final=False)."""

    study: optuna.Study
    base_lr: float
    out: Path
    final: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)     # wall time of each stage of this run
    files: list[Path] = field(default_factory=list)              # the report written into ``out``

    def summary(self) -> str:
        """The report ``lrfind show`` prints: the best trials, then the verdict against the constant LR."""
        return f"{report.top_table(self.study)}\n\n{report.verdict(self.study)}"

    def __repr__(self) -> str:
        """One line, not the study and the scores: a notebook or a REPL shows this."""
        best = self.best
        return (f"<TuneResult: study {self.study.study_name!r}, base LR {self.base_lr:.3g}, best: "
                f"{best if best is not None else 'none yet'}; .summary() says more, the report is in {self.out}>")

    def _repr_png_(self) -> bytes | None:
        """For Jupyter, a result left as a cell's value: the figure of the top trials' LR curves
        beside the range test that this run wrote (``lr_curves.png``); None where it wrote none."""
        drawn = next((f for f in self.files if f.name == "lr_curves.png" and f.is_file()), None)
        return drawn.read_bytes() if drawn is not None else None

    @property
    def best(self) -> TunedSchedule | None:
        """The best schedule, for a training run of any length (``load_best``); None if no trial completed."""
        return from_study(self.study)


class TuneInterrupted(RuntimeError):
    """Ctrl-C during the study: finished trials are kept, unfinished ones marked; run again to go on."""


@contextlib.contextmanager
def interrupted_says(text: str) -> Iterator[None]:
    """Ctrl-C inside becomes a ``TuneInterrupted`` that says what is kept and how to go on."""
    try:
        yield
    except KeyboardInterrupt:
        raise TuneInterrupted(f"interrupted {text}") from None


def interrupted_text(study: optuna.Study, trials: int, again: str) -> str:
    """What Ctrl-C kept, and how to go on (``again``: "run the same command again")."""
    n, _, _ = _study.counts(study)
    return f"interrupted: {n} of {trials} trials finished and stored; {again} to go on"


__all__ = ["TuneResult", "TuneInterrupted"]
