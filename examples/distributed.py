"""A range test of one model trained in several processes: DDP, or FSDP2's fully_shard; then, with
--tune, the decay search over the same distributed training.

    LRFIND_DATA_DIR=~/data torchrun --nproc-per-node 2 examples/distributed.py [ddp|fsdp]
    LRFIND_DATA_DIR=~/data torchrun --nproc-per-node 2 examples/distributed.py ddp --tune 8 --subset 12000

Every process calls find_lr on its own shard of MNIST (a DistributedSampler); the losses are
averaged across the processes at every divergence check, so all of them record the same curve,
stop together and suggest the same LR. With --tune N, every process calls tune_loop too: each
trial is one run of the distributed training in all processes, process 0 keeps the study and
the validation accuracy is reduced across the processes before it is reported. Runs on GPUs
(NCCL, one per process) or on the CPU (gloo).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from lrfind import OptimizerConfig, find_lr, get_model, load_dataset, tune_loop


def wrap(kind: str, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if kind == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.index is not None
                                                         else None)
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:                                      # torch before 2.6: private, and CUDA only
        if device.type != "cuda":
            raise SystemExit(f"fully_shard needs torch 2.6 or newer on the CPU (this is {torch.__version__}): run ddp")
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard(model)


def accuracy(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Validation accuracy over every process's shard: the counts are summed across the processes."""
    model.eval()
    counts = torch.zeros(2, device=device)
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            counts += torch.stack([(model(x).argmax(1) == y).sum(), torch.tensor(len(y), device=device)])
    model.train()
    dist.all_reduce(counts)
    return float(counts[0] / counts[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", nargs="?", default="ddp", choices=["ddp", "fsdp"])
    parser.add_argument("--tune", type=int, default=0, metavar="TRIALS", help="then search the decay (0: do not)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each trial")
    parser.add_argument("--subset", type=int, default=None, help="train on the first N training images")
    args = parser.parse_args()
    if "RANK" not in os.environ:
        parser.exit(2, f"run this under torchrun: torchrun --nproc-per-node 2 examples/distributed.py {args.kind}\n")
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    device = torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)

    train, val = load_dataset("mnist", "train").holdout(10_000)
    n = len(train) if args.subset is None else min(args.subset, len(train))
    dataset = TensorDataset(train.images[:n].cpu(), train.labels[:n].cpu())
    sampler = DistributedSampler(dataset, seed=0)
    loader = DataLoader(dataset, batch_size=64, sampler=sampler)
    model = wrap(args.kind, get_model("lenet", seed=0).to(device), device)    # the same weights everywhere

    result = find_lr(model, loader, optimizer=OptimizerConfig("sgd", momentum=0.9), num_iter=300, seed=0)
    if rank == 0:
        print(f"{args.kind} in {dist.get_world_size()} processes:")
        print(result.summary())
        result.plot(path=f"distributed_{args.kind}_range_test.png")
        print(f"wrote distributed_{args.kind}_range_test.png")

    if args.tune:
        held_out = TensorDataset(val.images.cpu(), val.labels.cpu())
        val_loader = DataLoader(held_out, batch_size=512, sampler=DistributedSampler(held_out, shuffle=False))

        def run(trial) -> float:
            net = wrap(args.kind, get_model("lenet", seed=trial.seed).to(device), device)
            optimizer = trial.optimizer(net.parameters())
            scheduler = trial.scheduler(optimizer)
            for epoch in range(trial.epochs):
                sampler.set_epoch(epoch)
                for x, y in loader:
                    optimizer.zero_grad(set_to_none=True)
                    torch.nn.functional.cross_entropy(net(x.to(device)), y.to(device)).backward()
                    optimizer.step()
                    scheduler.step()
                trial.report(accuracy(net, val_loader, device))     # the same in every process
            return trial.scores[-1]

        study = tune_loop(run, base_lr=result, epochs=args.epochs, steps_per_epoch=len(loader), metric="accuracy",
                          trials=args.tune, final_seeds=0, out=f"distributed_{args.kind}_study")
        if rank == 0:                    # every process has the result (study.best for the real run); one prints it
            print(study.summary())
    dist.barrier()                       # then leave together: a process gone first can hang the other's exit
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
