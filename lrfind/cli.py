"""The ``lrfind`` command: thin click commands over the library functions."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Callable

import click

from ._args import closest, did_you_mean
from ._clock import configure_logging
from ._names import AUGMENT_NAMES, DATASET_NAMES, DEVICE_NAMES, MODEL_NAMES, ONE_GPU

log = logging.getLogger("lrfind")
# suggest.METHODS' names, written out so that `--help` does not import numpy (a test keeps them equal)
SUGGESTION_METHODS = ["smith", "balanced", "steepest", "valley", "minimum"]


class UserError(click.ClickException):
    """A mistake in the command line or its inputs: one line on stderr, exit code 2 (as click's own
    usage errors)."""

    exit_code = 2


class RunError(click.ClickException):
    """A failure while running a well-formed command (data files missing or corrupt, a study the
    storage refuses or cannot open, out of memory): one line on stderr, exit code 1."""

    exit_code = 1


def _verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        configure_logging(logging.INFO)


# -v after the command as well as before it (lrfind -v tune, lrfind tune -v)
verbose_option = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_verbose,
                              help="Log what lrfind does, each line stamped with the seconds since the start.")


class BuiltinOrOwn(click.ParamType):
    """A built-in model's (data set's) name, or the user's function as module:function or
    path/to/file.py:function (imported later, by the command: `--help` and a wrong option must not
    import torch)."""

    def __init__(self, name: str, builtins: tuple[str, ...], what: str) -> None:
        self.name, self.builtins, self.what = name, builtins, what

    def get_metavar(self, param, ctx=None) -> str:      # click 8.1 passes no ctx
        return f"[{'|'.join(self.builtins)}|MODULE:FUNCTION|FILE.py:FUNCTION]"

    def convert(self, value, param, ctx):
        if value.lower() in self.builtins:
            return value.lower()
        if ":" in value.strip(":"):
            return value
        self.fail(f"{value!r}{did_you_mean(value, self.builtins)} is neither a built-in {self.what} "
                  f"({', '.join(self.builtins)}) nor your own, named as module:function or path/to/file.py:function",
                  param, ctx)


class Choice(click.Choice):
    """click's Choice, without case, and saying which choice a misspelt value probably meant
    (``aliases``: other names for a choice, as ``gpu`` for ``cuda``)."""

    def __init__(self, choices, aliases: dict[str, str] | None = None, others: tuple[str, ...] = ()) -> None:
        super().__init__(choices, case_sensitive=False)
        self.aliases, self.others = aliases or {}, others       # others: forms the error names too

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            meant = closest(str(value), self.choices, self.aliases)
            if meant is None and not self.others:
                raise
            self.fail(f"{value!r} is not one of {', '.join(map(repr, [*self.choices, *self.others]))}"
                      + (f": did you mean {meant}?" if meant else ""), param, ctx)


class DeviceChoice(Choice):
    """auto, cpu, cuda, or cuda:N: one GPU of several."""

    def __init__(self) -> None:
        super().__init__(list(DEVICE_NAMES), {"gpu": "cuda"}, others=("cuda:N",))

    def convert(self, value, param, ctx):
        if isinstance(value, str) and ONE_GPU.fullmatch(value.strip().lower()):
            return value.strip().lower()
        return super().convert(value, param, ctx)

    def get_metavar(self, param, ctx=None) -> str:          # click 8.2 passes ctx; 8.1 does not
        return "[auto|cpu|cuda|cuda:N]"


def schedule_name(typed: str) -> str:
    """A schedule's name as typed in any case (``OneCycle``), as the registry spells it; a name it
    does not know stays as typed, for the error that says which one was meant."""
    from .schedules import SCHEDULES

    name = typed.strip()
    return name.lower() if name.lower() in SCHEDULES else name


def option_message(e: ValueError) -> str:
    """The library speaks of fields (TuneConfig's, the model's); the user typed options."""
    text = str(e)
    for field in ("model", "dataset", "augment", "trials", "epochs", "batch_size", "parallel", "base_lr",
                  "train_subset", "val_size", "range_test_iters", "range_test_repeats", "heartbeat", "max_peak",
                  "final_seeds", "weight_decay", "momentum", "max_grad_norm", "timeout", "schedules"):
        if text.startswith(field + " "):
            return "--" + field.replace("_", "-") + text[len(field):]
    return text


def build_model(name: str, seed: int, data):
    """The model on the data's device, checked to map its images to class scores; a one-line error if not."""
    from .models import ModelError, check_fits, get_model

    try:
        model = get_model(name, seed=seed).to(data.images.device)
        check_fits(model, data.images, data.classes, name, regression=data.labels.is_floating_point(),
                   labels=data.labels)
    except ModelError as e:
        raise UserError(option_message(e)) from None
    return model


def load_augment(name: str | None, data):
    """The augmentation named, checked on the data's images; a one-line error if it does not fit."""
    from .augment import AugmentError, check_augment, get_augment

    if name is None:
        return None
    try:
        augment = get_augment(name)
        check_augment(augment, data.images, name)
    except AugmentError as e:
        raise UserError(option_message(e)) from None
    return augment


def out_of_memory(e: Exception, batch_size: int) -> RunError:
    """CUDA ran out of memory with one model (a range test, or a study already down to one trial at a time)."""
    first = str(e).strip().split(". ")[0] if str(e).strip() else "CUDA out of memory"
    return RunError(f"out of GPU memory with one model at --batch-size {batch_size} ({first}): lower --batch-size "
                     "or use a smaller model; a study keeps its finished trials, so run the same command again")


class PathGiven(click.Path):
    """click's Path (as ``pathlib.Path``), refusing an empty value, which would otherwise mean the
    current folder: most often an unset shell variable (``--out "$RUN"``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(path_type=Path, **kwargs)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; give a path (an unset shell variable?)", param, ctx)
        return super().convert(value, param, ctx)


def creatable_folder(ctx: click.Context, param: click.Parameter, path: Path) -> Path:
    """An --out folder that exists or can be made: one that cannot stops the command as it starts,
    before its work, not after. Nothing is created yet (``make_folder`` does, when the work starts)."""
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise click.BadParameter(f"cannot create the folder {path}: {existing} is a file", ctx, param)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise click.BadParameter(f"cannot create the folder {path}: {existing} is not writable", ctx, param)
    return path


def in_creatable_folder(ctx: click.Context, param: click.Parameter, path: Path) -> Path:
    """An --out file whose folder exists or can be made (see ``creatable_folder``)."""
    creatable_folder(ctx, param, path.parent)
    return path


def figure_file(ctx: click.Context, param: click.Parameter, path: Path) -> Path:
    """An --out figure: its folder can be made, and matplotlib writes the format its extension
    names (PNG without one), checked before the work rather than after."""
    in_creatable_folder(ctx, param, path)
    if path.suffix:
        from matplotlib.backend_bases import FigureCanvasBase

        formats = FigureCanvasBase.get_supported_filetypes()
        if path.suffix[1:].lower() not in formats:
            raise click.BadParameter(f"{path}: matplotlib cannot write {path.suffix} files; use one of "
                                     f"{', '.join('.' + f for f in sorted(formats))}", ctx, param)
    return path


def make_folder(path: Path) -> None:
    """Create the --out folder (its parents too) before the work starts, or say why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"--out {path}: cannot create the folder: {e.strerror or e}") from None


def resolve_device(name: str):
    from ._device import resolve_device as resolve

    try:
        return resolve(name)
    except ValueError as e:
        raise UserError(f"--device {name}: {e}") from None


def load_split(dataset: str, data_dir: Path | None, device, split: str = "train"):
    """Load a data set, turning a missing or corrupt file, or a broken function of the user's, into a
    one-line error."""
    from .data import CorruptDataError, DataNotFoundError, load_dataset
    from .userdata import DataSetError

    try:
        return load_dataset(dataset, split, root=data_dir, device=device)
    except (DataNotFoundError, CorruptDataError) as e:
        raise RunError(str(e)) from None
    except DataSetError as e:
        raise UserError(option_message(e)) from None


def _options(*decorators: Callable) -> Callable:
    """Stack several click options into one reusable decorator."""
    def wrap(f: Callable) -> Callable:
        return functools.reduce(lambda acc, d: d(acc), reversed(decorators), f)
    return wrap


data_options = _options(
    click.option("--model", default="lenet", show_default=True, type=BuiltinOrOwn("model", MODEL_NAMES, "model"),
                 help="Model to train: a built-in one, or your own as module:function or path/to/file.py:function, "
                      "a callable with no arguments that returns an nn.Module mapping the data set's images "
                      "(1x28x28 for the built-in ones) to class scores (10)."),
    click.option("--dataset", default="mnist", show_default=True,
                 type=BuiltinOrOwn("dataset", DATASET_NAMES, "data set"),
                 help="A built-in data set, or your own as module:function or path/to/file.py:function, a "
                      "function with no arguments that returns the training set or (train, test): Datasets of "
                      "(image tensor, label) items or (images, labels) tensor pairs. Integer labels are classes, "
                      "float labels regression targets (mean squared error). It is kept whole on the device."),
    click.option("--data-dir", type=PathGiven(file_okay=False), default=None,
                 help="Folder holding MNIST/raw/ (torchvision's layout) for the built-in data sets. "
                      "Default: $LRFIND_DATA_DIR, else ~/.cache/lrfind."),
    click.option("--augment", default=None, type=BuiltinOrOwn("augment", AUGMENT_NAMES, "augmentation"),
                 help="Augment each training batch on the device, afresh every epoch: flip-crop (mirror half, "
                      "shift up to 4 pixels: CIFAR's recipe), crop (shifts only: digits, text), or your own "
                      "function (images, generator) -> images as module:function or path/to/file.py:function. "
                      "Default: none."),
)
run_options = _options(
    click.option("--optimizer", default="sgd", show_default=True, type=Choice(["sgd", "adam", "adamw"]),
                 help="Optimizer, with torch's semantics."),
    click.option("--momentum", default=0.9, show_default=True, type=click.FloatRange(0, 1, max_open=True),
                 help="SGD momentum (ignored for Adam and AdamW). In tune, one-cycle and cyclic trials that "
                      "cycle the momentum (cycle_momentum) replace it with their own."),
    click.option("--weight-decay", default=None, type=click.FloatRange(min=0),
                 help="Weight decay: L2 in the gradient for SGD and Adam, decoupled for AdamW. "
                      "Default: torch's, 0 (AdamW: 0.01)."),
    click.option("--max-grad-norm", default=None, type=click.FloatRange(min=0, min_open=True), metavar="NORM",
                 help="Clip the gradients' total norm to NORM before every step (torch's clip_grad_norm_), as "
                      "your training does (without it the loss may blow up at a lower LR than in your run). "
                      "Default: no clipping."),
    click.option("--device", default="auto", show_default=True, type=DeviceChoice(),
                 help="Where to train; auto picks CUDA when available, cuda:N the N-th of several GPUs."),
    click.option("--seed", default=0, show_default=True, type=int, help="Seed for weights and batch order."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
)


def batch_size_option(default: int) -> Callable:
    return click.option("--batch-size", default=default, show_default=True, type=click.IntRange(min=1),
                        help="Examples per optimizer step.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="lrfind")
@click.option("-v", "--verbose", is_flag=True, help="Log what lrfind does (also after the command: lrfind tune -v).")
def main(verbose: bool) -> None:
    """lrfind: pick the learning rate first, decay second.

    \b
      lrfind range-test --model lenet     suggest a base LR with an LR range test
      lrfind compare runs/sgd runs/adam   lay range tests over each other: which optimizer,
                                          batch size, weight decay?
      lrfind schedules                    list the decay schedules lrfind knows
      lrfind schedules plot --out s.png   draw them
      lrfind tune --trials 50             search the decay with Optuna
      lrfind tune --model net.py:Net --dataset data.py:load --augment flip-crop
                                          ... on your own model and data
      lrfind show                         report a stored study (or a range test's folder)
      lrfind repair                       mend a study's journal file that lrfind refused

    In Python: find_lr(model, loader) on any model and loader; lrfind.tune(...); and
    lrfind.tune_loop(train, ...) to search the decay over a training loop of your own.
    """
    configure_logging(logging.INFO if verbose else logging.WARNING)    # -v: each line says when


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
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(min=1),
              help="Repeat with seeds seed, seed+1, ...; report the median suggestion and its spread. A sweep "
                   "whose loss fell less than 0.3x as far as the deepest is left out. When the rest disagree by "
                   "more than 3x, or fewer than two are left, sweep as many times again with twice --num-iter.")
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
               device: str, seed: int, quiet: bool, start_lr: float, end_lr: float, num_iter: int, mode: str,
               repeats: int, val_batches: int | None, amp: str | None, method: str, out: Path) -> None:
    """Sweep the LR from START_LR to END_LR while training and suggest a base LR.

    Records the loss of every batch, stops when the loss diverges, and writes the curve, every
    suggestion method's answer and a plot into --out. The model is trained on the training split
    without its last 10,000 images (a sixth of smaller sets), which `lrfind tune`
    keeps for validation.
    """
    if not start_lr > 0:                       # before torch is imported: a typo is told at once
        raise UserError(f"--start-lr {start_lr}: must be positive")
    if not end_lr > start_lr:
        raise UserError(f"--end-lr {end_lr}: must be larger than --start-lr {start_lr}")
    import torch

    from ._imports import short_name
    from ._update import check_max_grad_norm
    from .data import DataSizeError, check_batch_fits, data_line
    from .losses import is_regression, task_loss
    from .optimizer import OptimizerConfig
    from .rangetest import Sweep, find_lr

    sweep = Sweep(start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, mode=mode)
    try:
        opt = OptimizerConfig.of(optimizer, momentum=momentum, weight_decay=weight_decay)
        check_max_grad_norm(max_grad_norm)
    except ValueError as e:                                    # nan or inf
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
        result = find_lr(net, loader, optimizer=opt, sweep=sweep, repeats=repeats, seed=seed, method=method,
                         val_loader=val_loader, val_batches=val_batches, loss_fn=task_loss, max_grad_norm=max_grad_norm,
                         amp=amp,
                         progress=not quiet, warn=False)     # the summary prints them
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
    from .comparison import compare

    try:
        comparison = compare(list(runs))
    except ValueError as e:
        raise UserError(str(e)) from None
    click.echo(comparison.table())
    comparison.plot(path=out)
    click.echo(f"wrote {out}")


def _parse_value(text: str):
    """A --param value: int, float, list of ints (``100,200``), true or false, or a word."""
    if "," in text:
        return [_parse_value(t) for t in text.split(",") if t]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _parse_params(items: tuple[str, ...]) -> dict:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--param {item!r}: write NAME=VALUE, e.g. --param gamma=0.5")
        out[name.strip()] = _parse_value(value.strip())
    return out


@main.group("schedules", invoke_without_command=True, epilog="""\b
Examples:
  lrfind schedules
  lrfind schedules plot --out schedules.png
  lrfind schedules plot step cosine --steps 300
  lrfind schedules plot multistep --param milestones=100,200 --param gamma=0.3 --out ms.png
""")
@click.pass_context
@verbose_option
def schedules(ctx: click.Context) -> None:
    """List the decay schedules lrfind searches, with their parameters (in optimizer steps).

    Every schedule can be rebuilt as torch's own scheduler; those marked (+warmup) also take
    `warmup` and `warmup_start` for a linear warmup in front.
    """
    if ctx.invoked_subcommand is not None:
        return
    from .schedules import SCHEDULES, WARMUP_PARAMS

    for schedule in SCHEDULES.values():
        tag = " (+warmup)" if schedule.warmup_allowed else ""
        click.echo(f"{click.style(schedule.name, bold=True)}{tag}  [{schedule.torch_name}]  {schedule.description}")
        for p in schedule.params:
            default = "" if p.required else f" (default {p.default!r})"
            click.echo(f"    {p.name:<17}{p.doc}{default}")
    click.echo("\n(+warmup): " + "; ".join(f"{p.name}: {p.doc} (default {p.default!r})" for p in WARMUP_PARAMS))


@schedules.command("plot")
@click.argument("names", nargs=-1)
@click.option("--steps", default=300, show_default=True, type=click.IntRange(min=4), help="Steps in the run.")
@click.option("--steps-per-epoch", default=None, type=click.IntRange(min=1),
              help="Steps per epoch (dotted lines; plateau reports). Default: steps/10.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a parameter (repeatable; lists as 100,200). Needs exactly one NAME.")
@click.option("--out", default=Path("schedules.png"), show_default=True, type=PathGiven(dir_okay=False),
              callback=figure_file, help="Figure file to write (PNG; .pdf or .svg by their extension).")
@verbose_option
def schedules_plot(names: tuple[str, ...], steps: int, steps_per_epoch: int | None, params: tuple[str, ...],
                   out: Path) -> None:
    """Draw the LR curves of NAMES (default: all schedules) in one figure.

    Without --param each schedule is drawn with example parameters that show its shape. The
    plateau schedule is driven by a made-up validation loss that stops improving half-way.
    """
    import numpy as np

    from .plots import plot_schedules
    from .schedules import SCHEDULES, get_schedule, params_text

    try:
        chosen = [get_schedule(schedule_name(n)) for n in names] or list(SCHEDULES.values())
    except ValueError as e:
        raise UserError(str(e)) from None
    given = _parse_params(params)
    if given and len(chosen) != 1:
        raise UserError(f"--param needs exactly one schedule name, got {len(chosen)}")
    per_epoch = steps_per_epoch or max(1, steps // 10)
    reports = steps // per_epoch + 1
    metrics = [max(1.0 / (1 + i), 0.4) for i in range(reports)]   # improves, then stalls
    curves, momenta = {}, {}
    for schedule in chosen:
        p = {**schedule.example(steps, per_epoch), **given}
        if schedule.needs_metric and "interval" not in given:
            p["interval"] = per_epoch   # one metric report per epoch
        try:
            factors = schedule.factor(np.arange(steps), steps, metrics=metrics, **p)
        except ValueError as e:
            raise UserError(str(e)) from None
        momentum = schedule.momentum(np.arange(steps), steps, **p)
        if momentum is not None:
            momenta[schedule.name] = momentum
        caption = params_text({"warmup": 0, **p}, sep=", ")
        curves[schedule.name] = (factors, caption)
    plot_schedules(curves, path=out, steps_per_epoch=per_epoch, momenta=momenta)
    click.echo(f"wrote {out}")


def entry() -> None:
    """The ``lrfind`` console script: the command, then an exit that skips the interpreter's
    teardown. After a study on a GPU, freeing the CUDA graphs' pools and the caching allocator's
    blocks one by one took 1.5 s on an H100; the operating system reclaims all of it at once.
    Everything lrfind writes is closed before (files, the study's storage); stdout and stderr are
    flushed. ``LRFIND_CLEAN_EXIT=1`` restores the ordinary exit."""
    import os
    import sys

    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    if os.environ.get("LRFIND_CLEAN_EXIT") == "1":
        sys.exit(code)
    if isinstance(code, str):       # SystemExit("message"): Python prints it and exits with 1
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


# `lrfind tune` and `lrfind show` live in their own module; they register on `main` here.
from . import cli_tune  # noqa: E402,F401

if __name__ == "__main__":
    entry()
