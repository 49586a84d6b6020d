"""What users would otherwise run: a sequential Optuna loop, one trial at a time, torch.optim, the
torch scheduler, a torchvision-style DataLoader (per-sample PIL transforms, 4 workers).

It searches the same space (lrfind's schedule registry, constant baseline first) at the same base LR,
epochs and batch size, scores on the same validation split, and retrains its best trial on the whole
training set as lrfind's final stage does: once per seed (3 by default, lrfind's ``final_seeds``),
tested each time, so that both sides' test accuracy is a mean over as many retrains.
"""

from __future__ import annotations

import time

import optuna
import torch

from bench.common import TorchvisionStyleMNIST, loader, sync
from lrfind import SCHEDULES, get_model, get_schedule


def _evaluate(model, data, device) -> tuple[float, float]:
    model.eval()
    loss = correct = n = 0
    with torch.no_grad():
        for x, y in data:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x)
            loss += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    model.train()
    return loss / n, correct / n


def train_one(name, params, base_lr, epochs, train, val, device, trial=None, seed=0):
    model = get_model("lenet", seed=seed).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9)
    schedule = get_schedule(name)
    total = epochs * len(train)
    sched = schedule.build(opt, total, **params)
    acc = 0.0
    for epoch in range(epochs):
        for x, y in train:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if not schedule.needs_metric:
                sched.step()
        loss, acc = _evaluate(model, val, device)
        if schedule.needs_metric:
            sched.step(loss)
        if trial is not None:
            trial.report(acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
    return model, acc


def sequential_study(trials: int, epochs: int, batch_size: int, base_lr: float, device, workers: int = 4,
                     seed: int = 0, retrain_seeds: int = 3, train_size: int | None = None) -> dict:
    """``trials`` trials one after another; the best retrained ``retrain_seeds`` times. Split as
    lrfind's tuner splits: the last 10,000 training images (at most a sixth) validate, the first
    ``train_size`` of the rest train (``lrfind tune --train-subset``; None: all), and the best
    retrains on both together."""
    n = len(TorchvisionStyleMNIST("train"))
    cut = n - min(10_000, n // 6)
    train_size = cut if train_size is None else min(train_size, cut)
    train = loader("train", batch_size, workers, indices=range(train_size))
    val = loader("train", 1000, workers, indices=range(cut, n), shuffle=False)
    per_epoch = len(train)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    study.enqueue_trial({"schedule": "constant", "constant.use_warmup": False})

    def objective(trial):
        name = trial.suggest_categorical("schedule", list(SCHEDULES))
        params = get_schedule(name).suggest(trial, epochs * per_epoch, per_epoch)
        trial.set_user_attr("schedule", name)
        trial.set_user_attr("params", params)
        return train_one(name, params, base_lr, epochs, train, val, device, trial, seed + trial.number)[1]

    sync(device)
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    sync(device)
    seconds = time.perf_counter() - start
    epochs_run = sum(len(t.intermediate_values) for t in study.trials)
    best = study.best_trial
    full = loader("train", batch_size, workers, indices=[*range(train_size), *range(cut, n)])
    test = loader("test", 1000, workers, shuffle=False)
    name = best.user_attrs["schedule"]
    params = get_schedule(name).suggest(optuna.trial.FixedTrial(best.params), epochs * len(full), len(full))
    accs = []
    retrain_start = time.perf_counter()
    for r in range(retrain_seeds):
        model, _ = train_one(name, params, base_lr, epochs, full, test, device, seed=seed + r)
        accs.append(_evaluate(model, test, device)[1])
    return {"seconds": seconds, "trials": trials, "trial_epochs": epochs_run,
            "seconds_per_trial_epoch": seconds / max(1, epochs_run), "best_schedule": name,
            "best_val_acc": best.value, "best_test_acc": sum(accs) / len(accs), "best_test_acc_per_seed": accs,
            "retrain_seconds": time.perf_counter() - retrain_start}
