"""find_lr on a DistributedDataParallel model: two CPU processes (gloo) sweep together and stop together."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lrfind import OptimizerConfig, find_lr

WORLD = 2


def _batches(rank: int, n: int = 40) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(100 + rank)                   # each process its own shard
    w = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    out = []
    for _ in range(n):
        x = torch.randn(16, 10, generator=g)
        out.append((x, (x @ w).argmax(1)))
    return out


def _sweep(rank: int, init: str, out: str, jump_at: int | None) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3)))
        before = [p.detach().clone() for p in model.parameters()]
        steps = iter(range(10_000))

        def step_fn(m, batch):
            # The gradient is the true one; the recorded loss of the second process alone jumps by
            # 100 from step `jump_at` on: on its own it would stop there and the first would wait.
            loss = nn.functional.cross_entropy(m(batch[0]), batch[1])
            return loss + 100.0 if rank == 1 and jump_at is not None and next(steps) >= jump_at else loss

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = find_lr(model, _batches(rank), optimizer=OptimizerConfig("sgd", momentum=0.9), num_iter=40,
                             end_lr=0.5, repeats=2, seed=0, step_fn=step_fn if jump_at is not None else None,
                             progress=False)
        restored = all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"losses": [float(x) for x in result.losses], "stop": result.stop_reason,
                       "lr": result.suggested_lr, "seed_lrs": result.seed_lrs, "restored": restored,
                       "graph": result.config["cuda_graph"]}, f)
    finally:
        dist.destroy_process_group()


def _run(tmp_path, jump_at: int | None) -> list[dict]:
    context = mp.start_processes(_sweep, args=(f"file://{tmp_path / 'init'}", str(tmp_path / "out"), jump_at),
                                 nprocs=WORLD, join=False, start_method="spawn")
    for _ in range(120):                             # a deadlock fails the test instead of hanging CI
        if context.join(timeout=1):
            break
    else:
        for process in context.processes:
            process.kill()
        pytest.fail("the processes did not finish in 120 s: deadlocked")
    return [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(WORLD)]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_every_process_records_the_same_curve_and_suggests_the_same_lr(tmp_path) -> None:
    first, second = _run(tmp_path, jump_at=None)
    assert first["losses"] == second["losses"] and first["lr"] == second["lr"] and first["seed_lrs"] == second["seed_lrs"]
    assert first["restored"] and second["restored"] and not first["graph"]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_a_loss_that_blows_up_in_one_process_stops_all_of_them_together(tmp_path) -> None:
    first, second = _run(tmp_path, jump_at=12)
    assert first["stop"] == second["stop"] == "diverged"
    assert len(first["losses"]) == len(second["losses"]) < 40 and first["losses"] == second["losses"]
    assert first["losses"][12] - first["losses"][11] > 40                      # the mean of +100 and +0
