"""The study's bookkeeping alone: what `lrfind tune` spends in Optuna's storage for 50 trials.

    python -m experiments.storage                    # journal file vs SQLite, 50 trials x 3 epochs, batches of 50
    python -m experiments.storage --parallel 16      # as the CPU runs it

Runs the tuner's real search loop (`tune_search.search`: ask, suggest, attributes, reports, pruning
verdicts, tell) with the training replaced by made-up accuracies, so that only the storage and the
sampler are timed. Any machine; no GPU needed. Prints seconds per storage and the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import tempfile
import time
from pathlib import Path

import optuna  # noqa: E402

from lrfind.study import storage as _storage
from lrfind.study import trials as _study
from lrfind.study import tune as tuner  # noqa: E402
from lrfind.study import tune_search  # noqa: E402
from lrfind.study import workers as _workers  # noqa: E402
from lrfind.study.tune_config import TuneConfig  # noqa: E402
from lrfind.engine.trials import TrialRecord  # noqa: E402


def instant_trials(model, specs, train, val, *, epochs, on_epoch=None, **_):
    """run_trials without training: each trial's accuracy is drawn from its parameters."""
    records = [TrialRecord(s) for s in specs]
    rngs = [random.Random(json.dumps([s.schedule, _study.jsonable(s.params)], sort_keys=True)) for s in specs]
    running = list(range(len(specs)))
    for epoch in range(epochs):
        for k in running:
            acc = 0.9 + 0.09 * rngs[k].random() * (epoch + 1) / epochs
            records[k].val_acc.append(acc)
            records[k].val_loss.append(1 - acc)
            records[k].train_loss.append(1 - acc)
        pruned = set(on_epoch(epoch, records, running)) if on_epoch else set()
        pruned = pruned if epoch < epochs - 1 else set()       # a trial that ran every epoch is complete
        for k in pruned:
            records[k].status = "pruned"
        running = [k for k in running if k not in pruned]
    for k in running:
        records[k].status = "complete"
    return records


@contextlib.contextmanager
def instant_training():
    """The tuner with ``instant_trials`` in place of its training, for as long as the block lasts."""
    real, tune_search.run_trials = tune_search.run_trials, instant_trials
    try:
        yield
    finally:
        tune_search.run_trials = real


def bookkeeping_seconds(storage: str | None, out: Path, trials: int, epochs: int, parallel: int) -> tuple[float, int]:
    """(seconds, storage writes) of a study's search stage with instant training."""
    cfg = TuneConfig(trials=trials, epochs=epochs, parallel=parallel, base_lr=0.05, device="cpu",
                     storage=storage, out=str(out), progress=False, final=False)
    url = storage or _storage.default_storage(out)
    with instant_training(), _storage.run_lock(url):
        study, cfg = tuner.open_settled(cfg, out)
        writes = _count_writes(study)
        start = time.perf_counter()
        tune_search.search(study, cfg, None, None, 0.05, 3.0, epochs * 391, 391, parallel,
                           single=_storage.single_process(url))
        seconds = time.perf_counter() - start
    assert _study.counts(study)[0] == trials              # runs; a repeat of a finished trial takes its score
    return seconds, writes()


def compare(trials: int = 50, epochs: int = 3, parallel: int = 50, repeats: int = 3) -> dict:
    """Median seconds and writes of the bookkeeping on a journal file and on SQLite."""
    results: dict = {}
    for label in ("journal", "sqlite"):
        runs = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                storage = None if label == "journal" else f"sqlite:///{out / 'study.db'}"
                runs.append(bookkeeping_seconds(storage, out, trials, epochs, parallel))
        seconds = sorted(s for s, _ in runs)
        results[label] = {"seconds_median": seconds[len(seconds) // 2], "seconds_min": seconds[0], "writes": runs[0][1]}
    results["sqlite_over_journal"] = results["sqlite"]["seconds_median"] / results["journal"]["seconds_median"]
    return {**results, "trials": trials, "epochs": epochs, "parallel": parallel}


def _count_writes(study: optuna.Study):
    """A counter of the storage's writes from now: journal lines, or SQL commits."""
    engine = _workers._engine(study)
    if engine is None:
        backend = study._storage._backend
        path = Path(backend._file_path)
        before = len(path.read_bytes().splitlines())
        return lambda: len(path.read_bytes().splitlines()) - before
    import sqlalchemy

    commits = [0]
    sqlalchemy.event.listen(engine, "commit", lambda conn: commits.__setitem__(0, commits[0] + 1))
    return lambda: commits[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=50, help="trials per batch (50: one batch, as on the H100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = compare(args.trials, args.epochs, args.parallel, args.repeats)
    for label in ("journal", "sqlite"):
        r = results[label]
        print(f"{label:8s} {r['seconds_median']:6.2f} s (median of {args.repeats}; min {r['seconds_min']:.2f})  "
              f"{r['writes']} writes")
    print(f"{args.trials} trials x {args.epochs} epochs in batches of {args.parallel}: "
          f"the journal file takes {results['sqlite_over_journal']:.1f}x less time than SQLite")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")

if __name__ == "__main__":
    main()
