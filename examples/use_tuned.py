"""From a study to your own training run: the schedule `lrfind tune` found, at your run's length.

    lrfind tune --trials 8 --train-subset 5000 --device cpu --out runs/quick
    LRFIND_DATA_DIR=~/data python examples/use_tuned.py runs/quick 6

Loads runs/quick/best.json and trains LeNet with a plain training loop, through the tuned optimizer
and torch's own scheduler, for 6 epochs (default: as many as the study tuned on). The study chose
the schedule's parameters relative to its run, so they stretch to a longer one: a step every epoch
of 3 becomes a step every 2 epochs of 6, a one-cycle's warmup keeps its share of the run.
"""

from __future__ import annotations

import sys

import torch

from lrfind import get_model, load_best, load_dataset


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python examples/use_tuned.py OUT [EPOCHS]   (OUT: the --out folder of `lrfind tune`)")
    best = load_best(sys.argv[1])
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else best.epochs
    print(f"tuned: {best}")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    train, val = load_dataset("mnist", "train", device=device).holdout(10_000)
    model = get_model("lenet", seed=0).to(device)
    loader = train.loader(128, seed=1)
    optimizer = best.optimizer(model.parameters())
    scheduler = best.scheduler(optimizer, epochs=epochs, steps_per_epoch=len(loader))
    params = best.params(epochs=epochs, steps_per_epoch=len(loader))
    print(f"for {epochs} epoch{'s' if epochs != 1 else ''} of {len(loader)} steps: {best.schedule} {params}")
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    for epoch in range(epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            if not plateau:
                scheduler.step()
        model.eval()
        loss, correct = 0.0, 0
        with torch.no_grad():
            for x, y in val.loader(1000, shuffle=False, drop_last=False):    # every image, the last batch too
                out = model(x)
                loss += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
                correct += int((out.argmax(1) == y).sum())
        if plateau:
            scheduler.step(loss / len(val))            # ReduceLROnPlateau follows the validation loss
        print(f"epoch {epoch + 1}: validation accuracy {100 * correct / len(val):.2f}%, "
              f"LR now {optimizer.param_groups[0]['lr']:.3g}")


if __name__ == "__main__":
    main()
