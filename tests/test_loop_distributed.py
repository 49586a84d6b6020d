"""tune_loop inside a distributed training: two CPU processes (gloo) train every trial together as
one DDP model; process 0 keeps the study and the other follows its trials, scores and verdicts."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.distributed as dist
from torch import nn

from conftest import in_gloo_group, run_processes

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")

WORLD = 2


def _study(rank: int, init: str, out: str) -> None:
    in_gloo_group(rank, WORLD, init, out, lambda: _study_report(rank, out))


def _study_report(rank: int, out: str) -> dict:
    """In each process: a study of 8 trials of 3 epochs (4 DDP steps each), and 2 new seeds at the end."""
    import lrfind

    runs = []

    def train(trial):
        torch.manual_seed(trial.seed)
        model = nn.parallel.DistributedDataParallel(nn.Linear(5, 2))
        optimizer = trial.optimizer(model.parameters())
        scheduler = trial.scheduler(optimizer)
        g = torch.Generator().manual_seed(100 * trial.seed + rank)          # each process its own shard
        lrs = []
        run = {"number": trial.number, "schedule": trial.schedule, "params": trial.params, "lrs": lrs,
               "scores": trial.scores}
        runs.append(run)
        for epoch in range(trial.epochs):
            for _ in range(trial.steps_per_epoch):
                x = torch.randn(8, 5, generator=g)
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x), (x[:, 0] > 0).long()).backward()   # gradients all-reduced
                optimizer.step()
                scheduler.step()
            # what each process scores: process 1's differs, process 0's counts
            good = trial.number < 5          # not the schedule: which ones TPE samples differs by Optuna version
            bonus = {"warmup": 0.02, "plateau": 0.03}.get(trial.schedule, 0.0)
            score = (0.9 if good else 0.1) + 0.01 * epoch + bonus + 0.05 * rank
            losses = 1.0 + epoch                     # worse and worse: a plateau cuts its LR
            trial.report(score, loss=losses)
            lrs.append(optimizer.param_groups[0]["lr"])          # after report, which steps a plateau
        run["ended"] = "complete"
        return trial.scores[-1]

    groups = len(dist.distributed_c10d._world.pg_map)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = lrfind.tune_loop(train, base_lr=0.1, epochs=3, steps_per_epoch=4, metric="accuracy",
                                  trials=8, schedules=("warmup", "plateau"), same_seed=False, final_seeds=2,
                                  out=out + ".study", progress=False)
    return {"runs": runs, "groups_left": len(dist.distributed_c10d._world.pg_map) - groups, "result": {
        "trials": len(result.study.trials), "best": result.best.schedule, "summary": result.summary(),
        "states": [t.state.name for t in result.study.trials],
        "values": [t.user_attrs.get("val_acc") for t in result.study.trials]}}


def test_every_process_runs_every_trial_and_process_0_keeps_the_study(tmp_path) -> None:
    run_processes(_study, (f"file://{tmp_path / 'init'}", str(tmp_path / "out")), WORLD)
    first, second = (json.loads((tmp_path / f"out.{r}").read_text()) for r in range(WORLD))
    assert first["result"]["trials"] == 8 and first["result"]["best"] == "plateau"
    assert second["result"] == first["result"]                    # every process returns the study's result
    assert first["groups_left"] == second["groups_left"] == 0      # tune_loop's own gloo group is let go
    # the same runs in the same order, the search's and 2 new seeds each of the best and the
    # constant, with the same LRs, scores (process 0's, not process 1's 0.05 higher) and ends
    assert len(first["runs"]) == 8 + 2 * 2 and first["runs"] == second["runs"]
    states = first["result"]["states"]
    assert "PRUNED" in states and "COMPLETE" in states
    for run, state, values in zip(first["runs"], states, first["result"]["values"]):
        assert ("ended" in run) == (state == "COMPLETE") and values == run["scores"]
        assert len(run["scores"]) == (3 if state == "COMPLETE" else 2)      # pruned after epoch 2 in both
    plateau = [run for run in first["runs"][:8] if run["schedule"] == "plateau"]
    assert plateau and any(run["lrs"][-1] < run["lrs"][0] for run in plateau)      # cut in both processes


def _failing(rank: int, init: str, out: str) -> None:
    in_gloo_group(rank, WORLD, init, out, lambda: _failing_report(rank, out))


def _failing_report(rank: int, out: str) -> list[str]:
    """A study process 0 refuses before any trial (no base LR), then one whose function raises in
    every process at its second trial: each process says how its tune_loop ended (the error's
    first 100 characters)."""
    import lrfind

    ends = []
    for base_lr, fail_at in ((None, None), (0.1, 1)):
        def train(trial):
            if trial.number == fail_at:
                raise RuntimeError(f"a bug in process {rank}")
            for epoch in range(trial.epochs):
                trial.report(0.5)
            return 0.5

        try:
            result = lrfind.tune_loop(train, base_lr=base_lr, epochs=2, steps_per_epoch=2, metric="accuracy",
                                      trials=3, final_seeds=0, out=f"{out}.study{fail_at}", progress=False)
            ends.append(f"returned {result.best.schedule}")
        except Exception as e:
            ends.append(f"{type(e).__name__}: {e}"[:100])
    return ends


def test_a_study_that_fails_in_process_0_or_in_every_process_ends_everywhere(tmp_path) -> None:
    run_processes(_failing, (f"file://{tmp_path / 'init'}", str(tmp_path / "out")), WORLD, seconds=120)
    first, second = (json.loads((tmp_path / f"out.{r}").read_text()) for r in range(WORLD))
    assert first[0].startswith("ValueError: study 'lrfind-loop-train' is new")
    assert second[0].startswith("RuntimeError: process 0's tune_loop failed (ValueError: study")
    assert first[1] == "RuntimeError: a bug in process 0" and second[1] == "RuntimeError: a bug in process 1"


@pytest.mark.filterwarnings("ignore:train returned a score without calling trial.report")
def test_under_torchrun_without_a_process_group_a_warning_says_to_make_one(tmp_path, monkeypatch) -> None:
    import lrfind

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.warns(UserWarning, match=r"one of 2 processes \(WORLD_SIZE\), but no process group is initialised"):
        lrfind.tune_loop(lambda trial: 0.5, base_lr=0.1, epochs=1, steps_per_epoch=8, metric="accuracy", trials=1,
                         final_seeds=0, out=str(tmp_path), progress=False)
