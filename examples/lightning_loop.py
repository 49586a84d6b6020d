"""A Lightning module: its base LR from find_lr, its decay from tune_loop, each trial a Trainer run.

    pip install lightning
    LRFIND_DATA_DIR=~/data python examples/lightning_loop.py runs/lightning --trials 8 --subset 5000

find_lr sweeps the module as Lightning trains it (its training_step and the optimizer of its
configure_optimizers). Each trial of tune_loop then builds the module and a Trainer: the module's
configure_optimizers returns `trial.lightning(optimizer)` (the trial's scheduler, stepped after
every optimizer step), and `trial.lightning_callback("val_acc", loss="val_loss")` reports the
logged validation metrics after every epoch, where Optuna may stop the trial. At the end the best
schedule trains once more, at its own length, through `best.lightning(...)`.
"""

from __future__ import annotations

import argparse
import logging

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lrfind


class LitNet(L.LightningModule):
    """LeNet; ``configure`` turns its optimizer into what configure_optimizers returns (a trial's
    schedule, or the tuned one). Without it, plain SGD (what find_lr sweeps)."""

    def __init__(self, configure=None, optimizer=None) -> None:
        super().__init__()
        self.net = lrfind.get_model("lenet", seed=0)
        self.configure, self.make_optimizer = configure, optimizer

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        if self.make_optimizer is None:
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)
        optimizer = self.make_optimizer(self.parameters())
        return self.configure(optimizer) if self.configure else optimizer


def loaders(subset: int, batch_size: int = 64):
    """5/6 of the first SUBSET training images train, 1/6 validate; the test set."""
    train, test = lrfind.load_dataset("mnist", "train"), lrfind.load_dataset("mnist", "test")
    n_val = subset // 6
    x, y = train.images[:subset], train.labels[:subset]
    fit = DataLoader(TensorDataset(x[n_val:], y[n_val:]), batch_size=batch_size, shuffle=True, drop_last=True)
    val = DataLoader(TensorDataset(x[:n_val], y[:n_val]), batch_size=512)
    return fit, val, DataLoader(TensorDataset(test.images, test.labels), batch_size=512)


def trainer(epochs: int, callbacks=()) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, callbacks=list(callbacks), logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="folder for the study and its report")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subset", type=int, default=5000, help="training images used (a sixth validates)")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)   # not "GPU available: ..." every trial
    torch.manual_seed(0)
    train_loader, val_loader, test_loader = loaders(args.subset)

    found = lrfind.find_lr(LitNet(), train_loader, repeats=3, seed=0, progress=False)
    print(found.summary())

    def train(trial) -> float:
        torch.manual_seed(trial.seed)
        model = LitNet(configure=trial.lightning, optimizer=trial.optimizer)
        trainer(trial.epochs, [trial.lightning_callback("val_acc", loss="val_loss")]).fit(
            model, train_loader, val_loader)
        return trial.scores[-1]

    result = lrfind.tune_loop(train, base_lr=found, epochs=args.epochs, steps_per_epoch=len(train_loader),
                              metric="accuracy", trials=args.trials, out=args.out, final_seeds=0)
    print(result.summary())

    best = result.best
    epochs = 2 * args.epochs             # the real run, longer than the trials: the schedule stretches
    model = LitNet(configure=lambda opt: best.lightning(opt, epochs=epochs, steps_per_epoch=len(train_loader)),
                   optimizer=best.optimizer)
    run = trainer(epochs)
    run.fit(model, train_loader)
    accuracy = run.validate(model, test_loader, verbose=False)[0]["val_acc"]
    print(f"{best}: {100 * accuracy:.2f}% test after {epochs} epochs")


if __name__ == "__main__":
    main()
