"""Two `lrfind tune` workers of one study on one machine: CPU threads shared out, or all cores each.

    python -m bench.threads                         # from the repository root
    python bench/threads.py --trials 8 --parallel 2 --train-subset 2000 --repeats 3

Runs, one after the other, with the same small study:

- one worker alone, all the study's trials (the reference);
- two workers on one journal (the same --out), lrfind's default threads: each takes its share of
  the cores, divided among the study's workers running on this host;
- two workers with `--threads` equal to all the cores each: what every process took before, and
  what torch's default gives, so that their threads contend for the cores;
- with --one-thread-alone, one worker alone with `--threads 1` too.

Each worker is `python -m lrfind tune` as a user starts it, without OMP_NUM_THREADS or
MKL_NUM_THREADS. Measured per worker: wall time from its start to its exit, and CPU time (user
and system, from os.wait4). Prints both and the ratios; writes them with the machine, torch's
version and the command to --json (bench/threads_cpu.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def all_cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tune_command(args: argparse.Namespace, out: Path, threads: int | None) -> list[str]:
    command = [sys.executable, "-m", "lrfind", "tune", "--trials", str(args.trials), "--parallel", str(args.parallel),
               "--epochs", str(args.epochs), "--train-subset", str(args.train_subset), "--device", "cpu",
               "--no-final", "--base-lr", "0.05", "-q", "--out", str(out)]
    return command + (["--threads", str(threads)] if threads is not None else [])


def run_workers(commands: list[list[str]]) -> dict:
    """Start the commands together; each one's wall and CPU seconds, and the whole run's wall time."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env["CUDA_VISIBLE_DEVICES"] = ""
    start = time.perf_counter()
    procs = {}
    for i, command in enumerate(commands):
        log = tempfile.TemporaryFile(mode="w+")
        procs[subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).pid] = (i, log)
    workers: list[dict] = [{} for _ in commands]
    while len([w for w in workers if w]) < len(commands):
        pid, status, usage = os.wait4(-1, 0)            # whichever ends first, with its own resource usage
        if pid not in procs:
            continue
        i, log = procs[pid]
        log.seek(0)
        output = log.read()
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise SystemExit(f"worker {i} exited with {code}:\n{output[-3000:]}")
        trials = re.search(r"trials ([\d.]+) s", output)
        workers[i] = {"wall_s": round(time.perf_counter() - start, 2),
                      "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                      "trials_stage_s": float(trials[1]) if trials else None,
                      "threads": re.findall(r"lrfind\._threads: (.*)", output)}
    for _, log in procs.values():
        log.close()
    return {"wall_s": max(w["wall_s"] for w in workers), "cpu_s": round(sum(w["cpu_s"] for w in workers), 2),
            "workers": workers}


def case(args: argparse.Namespace, workers: int, threads: int | None) -> dict:
    """One run of a fresh study by ``workers`` workers."""
    out = Path(tempfile.mkdtemp(prefix="lrfind-threads-"))
    try:
        command = tune_command(args, out, threads)
        if args.verbose:                                   # their thread choices, in the results
            command = command[:3] + ["-v"] + command[3:]
        load = os.getloadavg()[0]                        # how busy the machine was already
        return {**run_workers([command] * workers), "load_average_before": load}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def median_run(runs: list[dict]) -> dict:
    """The median run by wall time, with every run's wall time."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    return {**ordered[(len(ordered) - 1) // 2], "repeats_wall_s": [r["wall_s"] for r in runs],
            "repeats_cpu_s": [r["cpu_s"] for r in runs],
            "repeats_load_average_before": [round(r["load_average_before"], 2) for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=16, help="trials of the study, in all")
    ap.add_argument("--parallel", type=int, default=4, help="trials each worker trains side by side")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each case, in turn; the median run by wall time is kept")
    ap.add_argument("--one-thread-alone", action="store_true",
                    help="also one worker alone with --threads 1 (beside other busy processes, say)")
    ap.add_argument("--note", default="", help="a note stored with the results (what else ran, say)")
    ap.add_argument("--no-verbose", dest="verbose", action="store_false",
                    help="workers without -v (by default their thread choices are kept)")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "threads_cpu.json")
    args = ap.parse_args()

    import torch

    cores, load = all_cores(), os.getloadavg()
    cases = {"one worker alone": (1, None), "two workers, default threads": (2, None),
             f"two workers, --threads {cores} (all cores)": (2, cores)}
    if args.one_thread_alone and cores > 1:
        cases["one worker alone, --threads 1"] = (1, 1)
    runs: dict[str, list[dict]] = {name: [] for name in cases}
    for repeat in range(args.repeats):                  # the cases in turn: a change of load meets each
        for name, (workers, threads) in cases.items():
            r = case(args, workers, threads)
            runs[name].append(r)
            each = "; ".join(f"worker {i}: wall {w['wall_s']:.1f} s, CPU {w['cpu_s']:.1f} s"
                             for i, w in enumerate(r["workers"]))
            print(f"{name:<40} wall {r['wall_s']:7.1f} s   CPU {r['cpu_s']:7.1f} s   ({each})", flush=True)
    results = {name: median_run(rs) for name, rs in runs.items()}
    if args.repeats > 1:
        for name, r in results.items():
            print(f"{name:<40} wall {r['wall_s']:7.1f} s   CPU {r['cpu_s']:7.1f} s   (median of {args.repeats})")
    alone, default, contending = list(results.values())[:3]
    ratios = {"two workers default / one alone, wall": round(default["wall_s"] / alone["wall_s"], 2),
              "two workers all cores / default, wall": round(contending["wall_s"] / default["wall_s"], 2),
              "two workers all cores / default, CPU": round(contending["cpu_s"] / default["cpu_s"], 2)}
    if "one worker alone, --threads 1" in results:
        ratios["one alone, --threads 1 / default, wall"] = round(
            results["one worker alone, --threads 1"]["wall_s"] / alone["wall_s"], 2)
    for name, ratio in ratios.items():
        print(f"{name:<40} {ratio:.2f}x")
    record = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": {"cpu": cpu_model(), "cores": cores, "load_average_at_start": load},
              "torch": torch.__version__, "python": platform.python_version(), "note": args.note,
              "command": "python " + " ".join(tune_command(args, Path("OUT"), None)[1:]) + " [--threads N]",
              "trials": args.trials, "parallel": args.parallel, "epochs": args.epochs,
              "train_subset": args.train_subset, "repeats": args.repeats, "cases": results, "ratios": ratios}
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
