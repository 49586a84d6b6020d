"""find_lr on one model trained across processes (DistributedDataParallel, FullyShardedDataParallel,
fully_shard): two CPU processes (gloo) sweep together, stop together, and record the curve of one
process training on both processes' batches."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from conftest import fully_shard, fully_shard_is_public, in_gloo_group, run_processes
from lrfind import OptimizerConfig, find_lr

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")

WORLD = 2
SWEEP = dict(optimizer=OptimizerConfig("sgd", momentum=0.9), num_iter=40, end_lr=0.5, repeats=2, seed=0,
             progress=False)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))


def _batches(rank: int, n: int = 40) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(100 + rank)                   # each process its own shard
    w = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    out = []
    for _ in range(n):
        x = torch.randn(16, 10, generator=g)
        out.append((x, (x @ w).argmax(1)))
    return out


def _wrap(kind: str, net: nn.Module) -> nn.Module:
    if kind == "ddp":
        return nn.parallel.DistributedDataParallel(net)
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel
        return FullyShardedDataParallel(net, device_id=torch.device("cpu"))
    return fully_shard()(net)


def _values(model: nn.Module) -> list[torch.Tensor]:
    return [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for p in model.parameters()]


def _sweeps(rank: int, kind: str, init: str, out: str) -> None:
    in_gloo_group(rank, WORLD, init, out, lambda: _sweep_report(rank, kind))


def _sweep_report(rank: int, kind: str) -> dict:
    """In each process: a plain sweep, a clipped one, one in fp16, and one whose loss blows up in process 1
    alone."""
    model = _wrap(kind, _net())
    before = _values(model)
    steps = iter(range(10_000))

    def jumps(m, batch):
        # The gradient is the true one; the recorded loss of the second process alone jumps by
        # 100 from step 12 on: on its own it would stop there and the first would wait.
        loss = nn.functional.cross_entropy(m(batch[0]), batch[1])
        return loss + 100.0 if rank == 1 and next(steps) >= 12 else loss

    report = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, extra in (("plain", {}), ("clipped", {"max_grad_norm": 0.3}), ("fp16", {"amp": "fp16"}),
                            ("jump", {"step_fn": jumps})):
            result = find_lr(model, _batches(rank), **SWEEP, **extra)
            report[name] = {"losses": [float(x) for x in result.losses], "stop": result.stop_reason,
                            "lr": result.suggested_lr, "seed_lrs": result.seed_lrs,
                            "graph": result.config["cuda_graph"]}
        if kind == "fsdp1":                        # FSDP clips a model wrapped at its root only
            from torch.distributed.fsdp import FullyShardedDataParallel
            inner = nn.Sequential(FullyShardedDataParallel(nn.Linear(10, 3), device_id=torch.device("cpu")))
            try:
                find_lr(inner, _batches(rank), max_grad_norm=1.0, num_iter=5, progress=False)
            except ValueError as e:
                report["nested_error"] = str(e)
    report["restored"] = all(torch.equal(a, b) for a, b in zip(before, _values(model)))
    return report


def _run(tmp_path, kind: str) -> list[dict]:
    run_processes(_sweeps, (kind, f"file://{tmp_path / 'init'}", str(tmp_path / "out")), WORLD)
    return [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(WORLD)]


def _one_process(**extra) -> list[float]:
    """The same sweep by one process on both processes' batches side by side: what the gradients
    reduced across the two processes amount to (equal batch sizes: the mean of their means). Its
    repeats one after another, as a distributed model's always run."""
    both = [(torch.cat([x0, x1]), torch.cat([y0, y1])) for (x0, y0), (x1, y1) in zip(_batches(0), _batches(1))]
    return [float(x) for x in find_lr(_net(), both, **SWEEP, warn=False, fused=False, **extra).losses]


OLD_FSDP2 = pytest.mark.skipif(not fully_shard_is_public(),
                               reason="this torch's fully_shard (before 2.6) runs on CUDA only")


@pytest.mark.parametrize("kind", ["ddp", "fsdp1", pytest.param("fsdp2", marks=OLD_FSDP2)])
def test_processes_sweep_as_one_model_and_stop_together(tmp_path, kind: str) -> None:
    first, second = _run(tmp_path, kind)
    assert first["restored"] and second["restored"]
    for name in ("plain", "clipped", "fp16", "jump"):
        assert first[name] == second[name], name         # the same curve, stop and suggestion everywhere
        assert not first[name]["graph"]
    # the curve of one model on both processes' batches, clipped by the norm over all the shards
    for name, extra, rtol in (("plain", {}, 2e-4), ("clipped", {"max_grad_norm": 0.3}, 2e-4),
                              ("fp16", {"amp": "fp16"}, 2e-3)):         # fp16: a gradient scaler per kind
        np.testing.assert_allclose(first[name]["losses"], _one_process(**extra), rtol=rtol, err_msg=name)
    assert first["plain"]["losses"] != first["clipped"]["losses"]       # the norm of 0.3 binds
    jump = first["jump"]
    assert jump["stop"] == "diverged" and len(jump["losses"]) < 40
    assert jump["losses"][12] - jump["losses"][11] > 40                  # the mean of +100 and +0
    if kind == "fsdp1":
        assert "wrap the whole model" in first["nested_error"]
