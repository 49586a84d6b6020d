"""An Optuna journal file read whole before anything is written to it, and mended without losing an
intact record.

Optuna's journal is one JSON record per line, appended. Optuna skips a bad *last* line when it
reads, so a stray line at the end (an editor's, a disk's, another program's) goes unnoticed until the
next write lands after it: from then on the file cannot be read at all. lrfind therefore checks
every complete line before it opens a journal (``check``), refuses a damaged one with the line's
number, and leaves the mending to ``repair`` (``lrfind repair``), which keeps a copy of the file
as it was, keeps every intact record and says what was kept and what was lost.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from lrfind._files import fsync_folder, write_whole

log = logging.getLogger(__name__)

# Optuna's journal operations (optuna.storages.journal's JournalOperation) that lrfind's repair reads
CREATE_STUDY, CREATE_TRIAL = 0, 4
_STUDY_OPS, _TRIAL_OPS = {1, 2, 3}, {5, 6, 7, 8, 9}


class JournalError(ValueError):
    """A journal file that cannot be read whole; nothing was written to it."""


def _is_record(line: bytes) -> bool:
    """A complete line (with its newline) that Optuna can replay: a JSON object with an op code."""
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("op_code"), int)


def _lines(path: Path) -> tuple[list[bytes], bytes]:
    """The file's complete lines, and what follows the last newline (a write cut short, or one in
    progress: neither is judged here)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(keepends=True), data[end:]


def damaged_lines(path: Path) -> list[int]:
    """The numbers (from 1) of the file's complete lines that are not Optuna journal records."""
    lines, _ = _lines(path)
    return [i for i, line in enumerate(lines, start=1) if not _is_record(line)]


def repair_command(path: Path) -> str:
    """The command that repairs ``path``: by its folder for the default ``OUT/study.log``."""
    return f"lrfind repair {path.parent}" if path.name == "study.log" else f"lrfind repair --storage {path}"


def check(path: Path) -> None:
    """Raise ``JournalError`` if a complete line of the journal is not an Optuna record, naming the
    first such line and how to mend the file."""
    if not path.is_file():
        return
    bad = damaged_lines(path)
    if not bad:
        return
    lines, _ = _lines(path)
    first = lines[bad[0] - 1].rstrip(b"\r\n")
    if len(bad) == len(lines):                       # not one record: another file, not a damaged journal
        raise JournalError(f"{path} is not an Optuna journal file (line 1: {_preview(lines[0])!r}); give the "
                           "study's journal file, or a new path for a new study")
    preview = _preview(first)
    more = f" (and {len(bad) - 1} more: line{'s' if len(bad) > 2 else ''} {_numbers(bad[1:])})" if len(bad) > 1 else ""
    raise JournalError(
        f"journal file {path}: line {bad[0]} of {len(lines)} is not an Optuna journal record ({preview!r}){more}; "
        f"lrfind wrote nothing to the file. To keep every intact record and go on, run: {repair_command(path)} "
        "(it keeps a copy of the file as it is now)")


def _preview(line: bytes) -> str:
    line = line.rstrip(b"\r\n")
    return line[:60].decode("utf-8", "replace") + ("..." if len(line) > 60 else "")


def _numbers(numbers: list[int], shown: int = 8) -> str:
    text = ", ".join(map(str, numbers[:shown]))
    return text + (f", ... ({len(numbers)} in all)" if len(numbers) > shown else "")


def backup_path(path: Path, why: str) -> Path:
    """A free name beside ``path`` for a copy of it as it was: ``study.log.cut-20261207-201500``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, n = path.with_name(f"{path.name}.{why}-{stamp}"), 1
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}.{why}-{stamp}-{n}"), n + 1
    return candidate


def _backup(path: Path, why: str) -> Path:
    copy = backup_path(path, why)
    shutil.copy2(path, copy)
    with open(copy, "rb") as f:
        os.fsync(f.fileno())
    fsync_folder(copy.parent)
    return copy


def mend_cut_last_line(path: Path) -> None:
    """A crash in the middle of a write can leave the journal's last line without its newline.
    Optuna skips such a line when reading, but the next write would be appended to it and make both
    unreadable: drop it, after a copy of the file as it was. Called where no other process can be
    writing (``_storage.run_lock``)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    lines, tail = _lines(path)
    if not tail:
        return
    check(path)                                   # nothing is written to a file with a damaged line
    copy = _backup(path, "cut")
    with path.open("rb+") as f:
        f.truncate(sum(map(len, lines)))
        f.flush()
        os.fsync(f.fileno())
    log.warning("%s: the last line was cut short (%d bytes, a crash while writing?): dropped that one record and "
                "kept the %d before it; trials it left unfinished run again. The file as it was: %s",
                path, len(tail), len(lines), copy.name)


@dataclass
class Repair:
    """What ``repair`` did to a journal file."""

    path: Path
    backup: Path | None = None
    kept: int = 0                                   # records kept
    foreign: list[int] = field(default_factory=list)    # lines that were never records: removed, nothing lost
    lost: list[int] = field(default_factory=list)       # lines that were records, damaged: lost
    cut: int = 0                                     # bytes of a last line cut short, dropped
    placeholders: int = 0                            # trials whose creation record was lost, stood in for
    studies: dict[str, tuple[int, int]] = field(default_factory=dict)   # name: (finished, unfinished) trials

    @property
    def changed(self) -> bool:
        return bool(self.foreign or self.lost or self.cut)

    def summary(self) -> str:
        if not self.changed:
            return f"{self.path}: every line is an intact record ({self.kept}); nothing to repair"
        parts = [f"repaired {self.path}: kept {self.kept} records"]
        if self.foreign:
            parts.append(f"removed {len(self.foreign)} line(s) that were not records (line {_numbers(self.foreign)}): "
                         "nothing lost")
        if self.lost:
            parts.append(f"dropped {len(self.lost)} damaged record(s) (line {_numbers(self.lost)}): lost")
        if self.cut:
            parts.append(f"dropped a last line cut short ({self.cut} bytes): lost")
        lines = ["; ".join(parts)]
        for name, (done, open_) in self.studies.items():
            lines.append(f"study {name!r}: {done} finished trial{'s' if done != 1 else ''} kept"
                         + (f"; {open_} left unfinished, which run again when the study resumes" if open_ else ""))
        if self.backup is not None:
            lines.append(f"the file as it was: {self.backup}")
        return "\n".join(lines)


def _mended(lines: list[bytes]) -> tuple[list[bytes], int]:
    """The records in order, with a stand-in creation record wherever a trial's own was lost (a later
    record names a trial that was never created): Optuna numbers trials by the order of their
    creation records, so one lost would hand every later trial's records to the one before it. A
    stand-in trial has no worker, so a resumed study fails it and runs its parameters again."""
    out: list[bytes] = []
    created, study_of_last, started = 0, None, None
    placeholders = 0
    for line in lines:
        record = json.loads(line)
        op = record["op_code"]
        trial_id = record.get("trial_id")
        if op in _TRIAL_OPS and isinstance(trial_id, int) and trial_id >= created and study_of_last is not None:
            for _ in range(trial_id - created + 1):       # started when the trial created before it was
                out.append(json.dumps({"op_code": CREATE_TRIAL, "worker_id": "lrfind-repair",
                                       "study_id": study_of_last, "datetime_start": started},
                                      separators=(",", ":")).encode() + b"\n")
                created += 1
                placeholders += 1
        if op == CREATE_TRIAL:
            created += 1
            study_of_last, started = record.get("study_id"), record.get("datetime_start")
        elif op == CREATE_STUDY and study_of_last is None:
            study_of_last = 0
        out.append(line)
    return out, placeholders


def repair(path: Path) -> Repair:
    """Keep every intact record of a journal file, drop the rest, and say what was kept and lost.
    The mended records are replayed by Optuna before they replace the file, and the file as it was
    is copied beside it first. The caller holds the file alone (no worker runs)."""
    path = Path(path)
    if not path.is_file():
        raise JournalError(f"no journal file at {path}; give the folder the study wrote (its study.log) or "
                           "--storage PATH")
    lines, tail = _lines(path)
    result = Repair(path, cut=len(tail))
    records = []
    for number, line in enumerate(lines, start=1):
        if _is_record(line):
            records.append(line)
        elif b'"op_code"' in line:
            result.lost.append(number)
        else:
            result.foreign.append(number)
    records, result.placeholders = _mended(records)
    result.kept = len(records) - result.placeholders
    if not result.changed:
        result.studies = _trial_counts(path)
        return result
    mended = write_whole(path.with_name(f".{path.name}.repaired"), b"".join(records))
    try:
        result.studies = _trial_counts(mended)      # Optuna reads the mended file whole, or nothing changes
    except Exception as e:
        mended.unlink()
        raise JournalError(f"journal file {path}: its intact records do not replay as a study ({e}); the file is "
                           "left as it was") from None
    result.backup = _backup(path, "damaged")
    os.replace(mended, path)
    fsync_folder(path.parent)
    return result


def _trial_counts(path: Path) -> dict[str, tuple[int, int]]:
    """Each study's (finished, unfinished) trials, as Optuna reads the journal file."""
    storage = JournalStorage(JournalFileBackend(str(path)))
    counts = {}
    for study in storage.get_all_studies():
        trials = storage.get_all_trials(study._study_id, deepcopy=False)
        counts[study.study_name] = (sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials),
                                    sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials))
    return counts
