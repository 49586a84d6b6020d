"""``tune_loop`` inside a distributed training (torchrun; DDP, FSDP): every process runs every
trial together, process 0 alone keeps the study.

Run independently, each process would ask the study for a trial of its own, and their training
collectives would pair up different trials. Instead process 0 asks, and before each run of the
user's function tells the others which trial it is; at each ``report`` it tells them its score,
loss and verdict (pruned, diverged, an error), so that every process stops a trial at the same
epoch. When the study ends, every process gets its result. Each message is a broadcast from
process 0: a collective every process reaches at the same point of the same trial.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from lrfind._errors import warn_at_users_line


@dataclass
class Ended:
    """What process 0 sends instead of a trial when the study ends: its result (with an in-memory
    copy of the study), or why it failed."""

    result: Any = None
    error: str | None = None


class Peers:
    """The processes of the default process group, process 0 speaking for the study. Its messages
    go through ``group``: a gloo group of the same processes, so that they stay on the host (no GPU
    synchronisation, and no need for each NCCL process to have set its own CUDA device); None: the
    default group."""

    def __init__(self, rank: int, size: int, group: Any = None) -> None:
        self.rank, self.size, self.group = rank, size, group

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        """Let the gloo group go, all processes together (each ``tune_loop`` makes one): where
        every process knows the study ended (not after an error in a run, where some may wait in
        the training's collectives). Left to the end, or let go by one process while another still
        held it, it made torch 2.4's ``destroy_process_group`` hang now and then."""
        import torch.distributed as dist

        if self.group is not None:
            dist.barrier(group=self.group)
            dist.destroy_process_group(self.group)
            self.group = None

    def share(self, value: Any = None) -> Any:
        """Process 0's ``value``, in every process: a collective, which all of them must call."""
        import torch.distributed as dist

        box = [value if self.leader else None]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]


def default_group() -> Peers | None:
    """The processes of an initialised default process group of more than one, else None. Started
    by torchrun (``WORLD_SIZE`` above 1) without one, a warning: a framework that makes its group
    only when training starts (Lightning, Hugging Face) would leave each process a study of its own."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        try:
            group = dist.new_group(backend="gloo")       # a collective: every process calls tune_loop
        except (RuntimeError, ValueError):               # a build without gloo
            group = None
        return Peers(dist.get_rank(), dist.get_world_size(), group)
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        warn_at_users_line(f"tune_loop runs in one of {os.environ['WORLD_SIZE']} processes (WORLD_SIZE), but no "
                           "process group is initialised yet, so each process would run a study of its own: call "
                           "torch.distributed.init_process_group() before tune_loop (Lightning and Hugging Face's "
                           "Trainer use a group that exists)")
    return None
