"""Your own training loop: the base LR from find_lr, the decay from tune_loop, the result on the test set.

    LRFIND_DATA_DIR=~/data python examples/own_loop.py runs/loop --trials 12 --subset 5000

`lrfind tune` trains its trials in lrfind's own engine. When your training does not fit it (your
DataLoader, a loss of your own: here label smoothing; a model whose forward takes more than a
tensor), `tune_loop` runs the same study over your loop: each trial hands your function its
optimizer and torch scheduler, your function reports the validation accuracy after every epoch
(Optuna stops hopeless trials there), the best schedule and the constant LR run again with three
new seeds, and the report is `lrfind tune`'s (`lrfind show --out OUT`). Run it again and the study
resumes. At the end both are trained once more and scored on the test set.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lrfind
from lrfind.data import DataNotFoundError

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 5 * 5, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def loaders(subset: int, batch_size: int = 64):
    """Plain DataLoaders over MNIST tensors: 5/6 of the subset trains, 1/6 validates; the test set."""
    train = lrfind.load_dataset("mnist", "train")
    test = lrfind.load_dataset("mnist", "test")
    n_val = subset // 6
    x, y = train.images[:subset], train.labels[:subset]
    fit = TensorDataset(x[n_val:], y[n_val:])
    val = TensorDataset(x[:n_val], y[:n_val])
    make = lambda d, shuffle: DataLoader(d, batch_size=batch_size, shuffle=shuffle, drop_last=shuffle)  # noqa: E731
    return make(fit, True), make(val, False), make(TensorDataset(test.images, test.labels), False)


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, y, label_smoothing=0.1)


def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """(accuracy, mean loss) on a loader."""
    model.eval()
    correct, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(DEVICE), y.to(DEVICE)
            out = model(x)
            loss += nn.functional.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            n += len(y)
    model.train()
    return correct / n, loss / n


def fit(model, optimizer, scheduler, train_loader, epochs: int, after_epoch=lambda model: None) -> None:
    """The training loop, the same for the trials and the final runs."""
    for _ in range(epochs):
        for x, y in train_loader:
            x, y = x.to(DEVICE), y.to(DEVICE)
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        after_epoch(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="lrfind_loop_out", help="folder of the study and its report")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=5000, help="MNIST training images used (validation included)")
    args = parser.parse_args()
    torch.manual_seed(0)
    try:
        train_loader, val_loader, test_loader = loaders(args.subset)
    except DataNotFoundError as e:
        raise SystemExit(str(e)) from None

    # 1. the base LR: a range test of the model on the same loader and loss
    found = lrfind.find_lr(SmallCNN().to(DEVICE), train_loader, loss_fn=loss_fn, num_iter=150, progress=False,
                           seed=0)
    base_lr = found.suggested_lr
    if base_lr is None:
        raise SystemExit(f"the range test gave no clear base LR ({found.reason})")
    print(f"base LR {base_lr:.3g} ({found.reason})")

    # 2. the decay: one trial is one run of the loop
    def train(trial: lrfind.LoopTrial) -> float:
        torch.manual_seed(trial.seed)
        model = SmallCNN().to(DEVICE)
        optimizer = trial.optimizer(model.parameters())
        scheduler = trial.scheduler(optimizer)

        def report(model):
            acc, loss = evaluate(model, val_loader)
            trial.report(acc, loss=loss)          # the loss drives reduce-on-plateau

        fit(model, optimizer, scheduler, train_loader, trial.epochs, after_epoch=report)
        return trial.scores[-1]

    result = lrfind.tune_loop(train, base_lr=base_lr, epochs=args.epochs, steps_per_epoch=len(train_loader),
                              metric="accuracy", trials=args.trials, out=args.out)
    best = result.best
    print(result.summary())
    print(f"best schedule: {best}")
    print(f"report in {args.out} (lrfind show --out {args.out})")

    # 3. the test set, once: the best schedule against the constant base LR, same seed
    scores = {}
    for label in ("best", "constant"):
        torch.manual_seed(0)
        model = SmallCNN().to(DEVICE)
        if label == "best":
            optimizer = best.optimizer(model.parameters())
            scheduler = best.scheduler(optimizer, epochs=args.epochs, steps_per_epoch=len(train_loader))
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                plateau, scheduler = scheduler, None
                after = lambda model: plateau.step(evaluate(model, val_loader)[1])  # noqa: E731
            else:
                after = lambda model: None  # noqa: E731
        else:
            optimizer, scheduler, after = best.optimizer(model.parameters(), lr=base_lr), None, lambda model: None
        fit(model, optimizer, scheduler, train_loader, args.epochs, after_epoch=after)
        scores[label] = evaluate(model, test_loader)[0]
    print(f"test accuracy: best schedule {100 * scores['best']:.2f}%, constant LR {100 * scores['constant']:.2f}% "
          f"({100 * (scores['best'] - scores['constant']):+.2f} pp)")


if __name__ == "__main__":
    main()
