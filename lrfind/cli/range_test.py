"""``lrfind range-test`` and ``lrfind compare``: thin click commands over ``find_lr``'s config and
sweeps (``RangeTestConfig``, which checks each option once, before the data is read) and ``compare``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from lrfind._args import check_threads
from lrfind._errors import FieldError
from lrfind.cli.app import main
from lrfind.cli.options import (PathGiven, UserError, batch_size_option, build_model, creatable_folder,
                                data_options, figure_file, load_augment, load_split, make_folder, option_message,
                                out_of_memory, resolve_device, run_options, verbose_option, Choice, SUGGESTION_METHODS)


@main.command("range-test", epilog="""\b
Examples:
  lrfind range-test --model lenet
  lrfind range-test --model mlp --optimizer adam --num-iter 500 --repeats 3 --out runs/mlp
  lrfind range-test --model examples/own_model.py:SmallCNN --optimizer adamw     # your own model
  lrfind range-test --val-batches 5          # the validation loss after every step: smoother, slower
  lrfind range-test --dataset examples/own_data.py:digits                        # your own data
  LRFIND_DATA_DIR=~/datasets lrfind range-test --device cpu --num-iter 100   # MNIST in ~/datasets/MNIST/raw
""")
@data_options
@batch_size_option(64)
@run_options
@click.option("--start-lr", default=1e-6, show_default=True, type=float, help="First LR of the sweep (> 0).")
@click.option("--end-lr", default=1.0, show_default=True, type=float, help="Last LR of the sweep (> start LR).")
@click.option("--num-iter", default=300, show_default=True, type=click.IntRange(min=2),
              help="Optimizer steps in the sweep; the data is started again if it runs out.")
@click.option("--mode", default="exp", show_default=True, type=Choice(["exp", "linear"]),
              help="Space the LRs on a log (exp) or linear scale.")
@click.option("--repeats", default=None, type=click.IntRange(min=1), metavar="N",
              help="Sweep N times and report the median suggestion and its spread. The sweeps run side by side "
                   "in one pass where the model allows (copies of it, each on batches of its own: on a GPU N "
                   "sweeps cost about one), else one after another with seeds SEED, SEED+1, ... A sweep whose "
                   "loss fell less than 0.3x as far as the deepest is left out. When the rest disagree by more "
                   "than 3x, or fewer than two are left, sweep as many times again with twice --num-iter. "
                   "[default: 3 side by side on a GPU, 1 elsewhere]")
@click.option("--fused/--one-after-another", default=None,
              help="Run the repeats side by side in one pass (an error where they cannot), or one after another. "
                   "[default: side by side where they can]")
@click.option("--val-batches", type=click.IntRange(min=1), default=None, metavar="N",
              help="Record the mean loss over N batches of the held-out validation split after every step, "
                   "instead of the training batch's loss: smoother curves, N forward passes more per step "
                   "(torch-lr-finder's val_loader mode).")
@click.option("--amp", type=Choice(["bf16", "fp16"]), default=None,
              help="Sweep under autocast, as a mixed-precision training runs (fp16 with a gradient scaler); "
                   "the steps then run eagerly, not from a CUDA graph. Default: float32.")
@click.option("--method", default=SUGGESTION_METHODS[0], show_default=True, type=Choice(SUGGESTION_METHODS),
              help="Which suggestion is THE suggested LR (all are printed and saved): smith = a third of the "
                   "LR at the lowest loss (Smith's rule); balanced = geometric mean of steepest and minimum; "
                   "steepest = fastest fall of the smoothed loss; valley = fastai's rule; minimum = a tenth "
                   "of the LR at the lowest loss.")
@click.option("--out", default=Path("lrfind_out"), show_default=True,
              type=PathGiven(file_okay=False), callback=creatable_folder,
              help="Folder for range_test.png, range_test.json and range_test.csv.")
@verbose_option
def range_test(model: str, dataset: str, data_dir: Path | None, augment: str | None, batch_size: int,
               optimizer: str, momentum: float, weight_decay: float | None, max_grad_norm: float | None,
               device: str, seed: int, quiet: bool, threads: int | None, start_lr: float, end_lr: float, num_iter: int,
               mode: str, repeats: int | None, fused: bool | None, val_batches: int | None, amp: str | None,
               method: str, out: Path) -> None:
    """Sweep the LR from START_LR to END_LR while training and suggest a base LR.

    Records the loss of every batch, stops when the loss diverges, and writes the curve, every
    suggestion method's answer and a plot into --out. The model is trained on the training split
    without its last 10,000 images (a sixth of smaller sets), which `lrfind tune` keeps for validation.
    """
    if not start_lr > 0:                       # before torch is imported: a typo is told at once
        raise UserError(f"--start-lr {start_lr}: must be positive")
    if not end_lr > start_lr:
        raise UserError(f"--end-lr {end_lr}: must be larger than --start-lr {start_lr}")
    if fused and (val_batches is not None or amp):
        raise UserError(f"--fused: with {'--val-batches' if val_batches is not None else '--amp'} the sweeps run "
                        f"one after another; leave --fused out")
    try:
        check_threads(threads)
    except ValueError as e:
        raise UserError(option_message(e)) from None
    import torch

    from lrfind._imports import short_name
    from lrfind.data.images import DataSizeError, check_batch_fits, data_line
    from lrfind.data.losses import is_regression, task_loss
    from lrfind.engine.optimizer import OptimizerConfig
    from lrfind.rangetest.config import RangeTestConfig
    from lrfind.rangetest.runner import range_test as sweeps_of
    from lrfind.rangetest.sweep import Sweep

    try:    # find_lr's config, checked once, before the data is read (the validation loader joins it later)
        opt = OptimizerConfig.of(optimizer, momentum=momentum, weight_decay=weight_decay)
        config = RangeTestConfig(sweep=Sweep(start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, mode=mode),
                                 optimizer=opt, loss_fn=task_loss, max_grad_norm=max_grad_norm, amp=amp,
                                 val_batches=val_batches, repeats=repeats, fused=fused, seed=seed, method=method,
                                 progress=not quiet, warn=False, threads=threads)   # the summary prints the warnings
    except ValueError as e:
        raise UserError(option_message(e)) from None
    dev = resolve_device(device)
    train, val = load_split(dataset, data_dir, dev).holdout(10_000)
    try:
        check_batch_fits(batch_size, train, val)
    except DataSizeError as e:
        raise UserError(option_message(e)) from None
    net = build_model(model, seed, train)
    loader = train.loader(batch_size, seed=seed, augment=load_augment(augment, train))
    val_loader = None
    if val_batches is not None:
        val_loader = val.loader(batch_size, shuffle=False, drop_last=False)
        if val_batches > len(val_loader):
            raise UserError(f"--val-batches {val_batches}: the validation split has {len(val):,} examples, "
                            f"{len(val_loader)} batches of {batch_size}; give at most {len(val_loader)}")
    make_folder(out)
    try:
        result = sweeps_of(net, loader, replace(config, val_loader=val_loader) if val_loader else config)
    except FieldError as e:               # --fused where the sweeps cannot run side by side
        raise UserError(option_message(e)) from None
    except torch.cuda.OutOfMemoryError as e:
        raise out_of_memory(e, batch_size) from None
    except KeyboardInterrupt:
        click.echo(f"interrupted: nothing was written to {out}", err=True)
        raise SystemExit(130) from None
    result.config.update(model=model, dataset=dataset, augment=augment, train_examples=len(train),
                         input_shape=list(train.images.shape[1:]), classes=train.classes, batch_size=batch_size,
                         optimizer=optimizer, val_batches=val_batches,
                         momentum=momentum if optimizer == "sgd" else None, weight_decay=opt.weight_decay,
                         device=str(dev))
    clipped = f", clipped at {max_grad_norm:g}" if max_grad_norm is not None else ""
    result.plot(path=out / "range_test.png", title=f"{short_name(model)} on {short_name(dataset)}, {optimizer}"
                f"{clipped}, batch {batch_size}: "
                f"suggested LR {result.suggested_lr:.3g}" if result.suggested_lr else None)
    result.to_json(out / "range_test.json")
    result.to_csv(out / "range_test.csv")
    click.echo(data_line(dataset, len(train), train.images.shape[1:], train.classes, augment,
                         tokens=not train.images.is_floating_point(), regression=is_regression(train.labels)))
    click.echo(result.summary())
    click.echo(f"wrote {out / 'range_test.png'}, range_test.json, range_test.csv")


@main.command("compare", epilog="""\b
Examples:
  lrfind range-test --optimizer sgd --out runs/sgd
  lrfind range-test --optimizer adam --out runs/adam
  lrfind compare runs/sgd runs/adam --out optimizers.png
  lrfind compare runs/wd0/range_test.json runs/wd1e-4/range_test.json""")
@click.argument("runs", nargs=-1, required=True, type=PathGiven(exists=True))
@click.option("--out", default=Path("range_tests.png"), show_default=True,
              type=PathGiven(dir_okay=False), callback=figure_file,
              help="Figure file for the curves laid over each other (PNG; .pdf or .svg by their extension).")
@verbose_option
def compare_command(runs: tuple[Path, ...], out: Path) -> None:
    """Lay several range tests over each other and tabulate them.

    Each RUN is the --out folder of an `lrfind range-test` run, or a range-test .json or .csv file.
    Sweep once for each value of what you are choosing (optimizer, batch size, weight decay,
    model) and compare: the table gives each suggestion, where each loss falls, how low it got,
    and what the runs' settings differ in; the plot shows the curves. Smith chooses weight decay
    so: the value whose loss falls lowest (on LeNet the lowest loss tracked the validation
    accuracy; the loss that fell furthest in LR did not).
    """
    from lrfind.rangetest.comparison import compare

    try:
        comparison = compare(list(runs))
    except ValueError as e:
        raise UserError(str(e)) from None
    click.echo(comparison.table())
    comparison.plot(path=out)
    click.echo(f"wrote {out}")
