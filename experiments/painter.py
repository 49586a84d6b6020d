"""Figures beside the training: does drawing them slow the loop that feeds the device?

    python -m experiments.painter                # on a GPU: an engine epoch, K=6 trials (stage 3's size)
    python -m experiments.painter --k 50         # the search's size
    python -m experiments.painter --emulate      # any machine: a loop that waits 0.5 ms per step

The report's four figures of a 50-trial study are drawn while a training loop runs: in a thread of
the same process (lrfind's way before), and in the child process of ``lrfind.study.painter`` (its way
beside a GPU now). A loop whose steps give the GIL up (a CUDA-graph replay, a wait for the GPU)
gets it back from a drawing thread only when the thread's 5 ms slice ends. Prints the loop's time
alone and beside each, and when loop and figures were both done. Without CUDA (or with
``--emulate``) the loop is ``time.sleep(0.0005)`` per step, the GPU's share of a small step.

The study is the tuner's real search loop with made-up accuracies (as in ``experiments/storage.py``)
and a made-up range-test curve: what is drawn, not what was trained, is what costs here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import Timer  # noqa: E402
from experiments.storage import instant_training  # noqa: E402

from lrfind.study import opening as _opening
from lrfind.study import storage as _storage
from lrfind.study import report
from lrfind.study import tune_search  # noqa: E402
from lrfind.study.tune_config import TuneConfig  # noqa: E402
from lrfind.study.painter import Painter  # noqa: E402


def fifty_trial_study(out: Path, trials: int = 50, epochs: int = 3):
    """An in-memory snapshot of a study as the tuner leaves it after its search."""
    cfg = TuneConfig(trials=trials, epochs=epochs, parallel=trials, base_lr=0.035, device="cpu",
                     out=str(out), progress=False, final=False)
    study = _opening.open_study(cfg, out)
    study.set_user_attr("steps", epochs * 391)
    study.set_user_attr("steps_per_epoch", 391)
    study.set_user_attr("base_lr", 0.035)
    lrs = np.geomspace(1e-6, 1, 300)
    loss = 2.3 - 2.1 / (1 + np.exp(-3 * (np.log10(lrs) + 3))) + 40 * np.maximum(lrs - 0.15, 0)
    study.set_user_attr("range_test", {"lrs": lrs.tolist(), "smoothed": loss.tolist(), "suggested_lr": 0.035,
                                       "falling_range": [0.0005, 0.15], "stop_reason": "diverged"})
    with instant_training():
        tune_search.search(study, cfg, None, None, 0.035, 3.0, epochs * 391, 391, trials,
                           single=_storage.single_process(_storage.default_storage(out)))
    return report.snapshot(study)


def emulated_loop(steps: int = 1000, wait: float = 0.0005):
    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            time.sleep(wait)
        return time.perf_counter() - start
    return run


def engine_epoch(k: int, device: torch.device, epochs: int):
    """One epoch of K LeNet trials in the engine, from its CUDA graph (warmed up and captured); the
    engine has steps for ``epochs`` such epochs and a warm-up."""
    from lrfind import load_dataset
    from lrfind.engine.trials import FusedTrials, TrialSpec

    train, _ = load_dataset("mnist", "train", device=device).holdout(10_000)
    loader = train.loader(128, seed=0)
    engine = FusedTrials("lenet", [TrialSpec("cosine", {"min_factor": 0.01}, seed=i) for i in range(k)],
                         base_lr=0.05, total_steps=(epochs + 1) * len(loader), steps_per_epoch=len(loader),
                         device=device)
    for i, (x, y) in enumerate(loader):
        engine.step(x, y)
        if i == 10:
            break

    def run() -> float:
        with Timer(device) as t:
            for x, y in loader:
                engine.step(x, y)
        return t.seconds
    return run


def beside(painter: Painter | None, loop, study, out: Path) -> dict:
    start = time.perf_counter()
    figures = painter.submit(report.draw_figures, study, out) if painter else None
    loop_seconds = loop()
    drawn = len(figures.result()) if figures else 0
    return {"loop_seconds": loop_seconds, "all_done_seconds": time.perf_counter() - start, "figures": drawn}


def compare(k: int = 6, emulate: bool = False, repeats: int = 3) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() and not emulate else "cpu")
    loop = engine_epoch(k, device, epochs=3 * repeats) if device.type == "cuda" else emulated_loop()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        study = fifty_trial_study(out / "study")
        report.draw_figures(study, out / "warm")                # matplotlib imported, fonts cached
        results: dict = {"loop": f"engine epoch, K={k}, CUDA graph" if device.type == "cuda"
                         else "1000 steps of time.sleep(0.0005)", "device": str(device)}
        with Painter(process=False) as thread, Painter(process=True) as process:
            process.submit(int, "0").result()                   # the child has imported everything
            for label, painter in (("alone", None), ("thread", thread), ("process", process)):
                runs = [beside(painter, loop, study, out / label) for _ in range(repeats)]
                results[label] = {key: sorted(r[key] for r in runs)[len(runs) // 2] for key in runs[0]}
    alone = results["alone"]["loop_seconds"]
    for label in ("thread", "process"):
        results[label]["loop_slowdown"] = results[label]["loop_seconds"] / alone
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=6, help="trials side by side in the engine's epoch (GPU)")
    parser.add_argument("--emulate", action="store_true", help="the sleeping loop even where CUDA is")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = compare(args.k, args.emulate, args.repeats)
    print(f"loop: {results['loop']} (median of {args.repeats})")
    print(f"alone                       {results['alone']['loop_seconds']:6.2f} s")
    for label, words in (("thread", "figures in a thread "), ("process", "figures in a process")):
        r = results[label]
        print(f"beside the {words}  {r['loop_seconds']:6.2f} s ({r['loop_slowdown']:.2f}x); "
              f"loop and {r['figures']} figures done after {r['all_done_seconds']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
