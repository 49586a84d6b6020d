"""Several range tests side by side: the seeds' tip "smaller batch sizes are better suited to
smaller learning rates", measured.

    LRFIND_DATA_DIR=~/data python examples/compare_sweeps.py [NUM_ITER]

Sweeps LeNet on MNIST at batch sizes 32, 128 and 512 (the median of 3 sweeps each, all at one
pace: NUM_ITER steps, 600 by default, with no slower second sweeps, whose extra steps alone would
lower their losses; the model is put back after every sweep, so one model serves all), prints
lrfind.compare's table and writes compare_batch_sizes.png. The same works for weight decay,
momentum or optimizers: change what the dict's sweeps differ in.
"""

from __future__ import annotations

import sys

import torch

import lrfind
from lrfind import find_lr, get_model, load_dataset


def main() -> None:
    num_iter = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train, _ = load_dataset("mnist", "train", device=device).holdout(10_000)
    model = get_model("lenet", seed=0).to(device)
    sweeps = {f"batch {size}": find_lr(model, train.loader(size, seed=0), num_iter=num_iter, repeats=3, seed=0,
                                       slow_down=False, progress=False, warn=False)
              for size in (32, 128, 512)}
    comparison = lrfind.compare(sweeps)
    print(comparison.table())
    comparison.plot(path="compare_batch_sizes.png", title="LeNet on MNIST, SGD: range tests at three batch sizes")
    print("wrote compare_batch_sizes.png")


if __name__ == "__main__":
    main()
