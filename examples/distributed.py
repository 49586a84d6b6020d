"""A range test of one model trained in several processes: DDP, or FSDP2's fully_shard.

    LRFIND_DATA_DIR=../shared/data torchrun --nproc-per-node 2 examples/distributed.py [ddp|fsdp]

Every process calls find_lr on its own shard of MNIST (a DistributedSampler); the losses are
averaged across the processes at every divergence check, so all of them record the same curve,
stop together and suggest the same LR. Runs on GPUs (NCCL, one per process) or on the CPU (gloo).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lrfind import OptimizerConfig, find_lr, get_model, load_dataset


def main() -> None:
    kind = sys.argv[1] if len(sys.argv) > 1 else "ddp"
    if kind not in ("ddp", "fsdp"):
        sys.exit(f"usage: torchrun --nproc-per-node N examples/distributed.py [ddp|fsdp], got {kind!r}")
    if "RANK" not in os.environ:
        sys.exit("run this under torchrun: torchrun --nproc-per-node 2 examples/distributed.py " + kind)
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)

    train, _ = load_dataset("mnist", "train").holdout(10_000)
    dataset = TensorDataset(train.images.cpu(), train.labels.cpu())
    loader = DataLoader(dataset, batch_size=64, sampler=DistributedSampler(dataset, seed=0))
    model = get_model("lenet", seed=0).to(device)          # the same initial weights in every process
    if kind == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    else:
        from torch.distributed.fsdp import fully_shard
        model = fully_shard(model)

    result = find_lr(model, loader, optimizer=OptimizerConfig("sgd", momentum=0.9), num_iter=300, seed=0)
    if rank == 0:
        print(f"{kind} in {dist.get_world_size()} processes:")
        print(result.summary())
        result.plot(path=f"distributed_{kind}_range_test.png")
        print(f"wrote distributed_{kind}_range_test.png")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
