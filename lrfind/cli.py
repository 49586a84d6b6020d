"""The ``lrfind`` command: thin click commands over the library functions."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable

import click

from .data import DATASETS
from .models import MODELS

log = logging.getLogger("lrfind")


class UserError(click.ClickException):
    """A mistake in the command line or its inputs: one line on stderr, exit code 2."""

    exit_code = 2


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return torch.device(name)


def load_split(dataset: str, data_dir: Path | None, device, split: str = "train"):
    """Load a built-in data set, turning a missing or corrupt file into a one-line error."""
    from .data import CorruptDataError, DataNotFoundError, load_dataset

    try:
        return load_dataset(dataset, split, root=data_dir, device=device)
    except (DataNotFoundError, CorruptDataError) as e:
        raise UserError(str(e)) from None


def _options(*decorators: Callable) -> Callable:
    """Stack several click options into one reusable decorator."""
    def wrap(f: Callable) -> Callable:
        return functools.reduce(lambda acc, d: d(acc), reversed(decorators), f)
    return wrap


common_options = _options(
    click.option("--model", default="lenet", show_default=True, type=click.Choice(sorted(MODELS)),
                 help="Built-in model to train."),
    click.option("--dataset", default="mnist", show_default=True, type=click.Choice(DATASETS),
                 help="Built-in data set."),
    click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Folder holding MNIST/raw/ (torchvision's layout). Default: $LRFIND_DATA_DIR, "
                      "else ~/.cache/lrfind."),
    click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
                 help="Examples per optimizer step."),
    click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adam"]),
                 help="Optimizer to use."),
    click.option("--momentum", default=0.9, show_default=True, type=click.FloatRange(0, 1, max_open=True),
                 help="SGD momentum (ignored for Adam)."),
    click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
                 help="Where to train; auto picks CUDA when available."),
    click.option("--seed", default=0, show_default=True, type=int, help="Seed for weights and batch order."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
)


def make_optimizer(name: str, params, lr: float, momentum: float):
    import torch

    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    return torch.optim.Adam(params, lr=lr)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="lrfind")
@click.option("-v", "--verbose", is_flag=True, help="Log what lrfind does.")
def main(verbose: bool) -> None:
    """lrfind: pick the learning rate first, decay second.

    \b
      lrfind range-test --model lenet     suggest a base LR with an LR range test
      lrfind schedules                    list the decay schedules lrfind knows
      lrfind schedules plot --out s.png   draw them
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")


@main.command("range-test", epilog="""\b
Examples:
  lrfind range-test --model lenet
  lrfind range-test --model mlp --optimizer adam --num-iter 500 --repeats 3 --out runs/mlp
  LRFIND_DATA_DIR=../shared/data lrfind range-test --device cpu --num-iter 100
""")
@common_options
@click.option("--start-lr", default=1e-6, show_default=True, type=float, help="First LR of the sweep (> 0).")
@click.option("--end-lr", default=1.0, show_default=True, type=float, help="Last LR of the sweep (> start LR).")
@click.option("--num-iter", default=300, show_default=True, type=click.IntRange(min=2),
              help="Optimizer steps in the sweep; the data is started again if it runs out.")
@click.option("--mode", default="exp", show_default=True, type=click.Choice(["exp", "linear"]),
              help="Space the LRs on a log (exp) or linear scale.")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(min=1),
              help="Repeat with seeds seed, seed+1, ...; report the median suggestion and its spread.")
@click.option("--out", default=Path("lrfind_out"), show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for range_test.png, range_test.json and range_test.csv.")
def range_test(model: str, dataset: str, data_dir: Path | None, batch_size: int, optimizer: str, momentum: float,
               device: str, seed: int, quiet: bool, start_lr: float, end_lr: float, num_iter: int, mode: str,
               repeats: int, out: Path) -> None:
    """Sweep the LR from START_LR to END_LR while training and suggest a base LR.

    Records the loss of every batch, stops when the loss diverges, and writes the curve, every
    suggestion method's answer and a plot into --out. The model is trained on the training split
    without its last 10,000 images (a sixth of smaller sets), which `lrfind tune`
    keeps for validation.
    """
    from .models import get_model
    from .rangetest import Sweep, find_lr

    if not start_lr > 0:
        raise UserError(f"--start-lr {start_lr}: must be positive")
    if not end_lr > start_lr:
        raise UserError(f"--end-lr {end_lr}: must be larger than --start-lr {start_lr}")
    sweep = Sweep(start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, mode=mode)
    dev = resolve_device(device)
    train, _ = load_split(dataset, data_dir, dev).holdout(10_000)
    net = get_model(model, seed=seed).to(dev)
    opt = make_optimizer(optimizer, net.parameters(), start_lr, momentum)
    result = find_lr(net, train.loader(batch_size, seed=seed), optimizer=opt, sweep=sweep, repeats=repeats,
                     seed=seed, progress=not quiet)
    result.config.update(model=model, dataset=dataset, batch_size=batch_size, optimizer=optimizer,
                         momentum=momentum if optimizer == "sgd" else None, device=str(dev))
    out.mkdir(parents=True, exist_ok=True)
    result.plot(path=out / "range_test.png", title=f"{model} on {dataset}, {optimizer}, batch {batch_size}: "
                f"suggested LR {result.suggested_lr:.3g}" if result.suggested_lr else None)
    result.to_json(out / "range_test.json")
    result.to_csv(out / "range_test.csv")
    click.echo(result.summary())
    click.echo(f"wrote {out / 'range_test.png'}, range_test.json, range_test.csv")


if __name__ == "__main__":
    main()
