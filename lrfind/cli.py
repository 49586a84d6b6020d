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
    from ._device import resolve_device as resolve

    try:
        return resolve(name)
    except ValueError as e:
        raise UserError(f"--device {name}: {e}") from None


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


data_options = _options(
    click.option("--model", default="lenet", show_default=True, type=click.Choice(sorted(MODELS)),
                 help="Built-in model to train."),
    click.option("--dataset", default="mnist", show_default=True, type=click.Choice(DATASETS),
                 help="Built-in data set."),
    click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Folder holding MNIST/raw/ (torchvision's layout). Default: $LRFIND_DATA_DIR, "
                      "else ~/.cache/lrfind."),
)
run_options = _options(
    click.option("--momentum", default=0.9, show_default=True, type=click.FloatRange(0, 1, max_open=True),
                 help="SGD momentum (ignored for Adam)."),
    click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
                 help="Where to train; auto picks CUDA when available."),
    click.option("--seed", default=0, show_default=True, type=int, help="Seed for weights and batch order."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
)


def batch_size_option(default: int) -> Callable:
    return click.option("--batch-size", default=default, show_default=True, type=click.IntRange(min=1),
                        help="Examples per optimizer step.")


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
      lrfind tune --trials 50             search the decay with Optuna
      lrfind show                         report a stored study
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO on stderr; keep that for --verbose only."""
    import optuna

    if not logging.getLogger("lrfind").isEnabledFor(logging.INFO):
        optuna.logging.set_verbosity(optuna.logging.WARNING)


@main.command("range-test", epilog="""\b
Examples:
  lrfind range-test --model lenet
  lrfind range-test --model mlp --optimizer adam --num-iter 500 --repeats 3 --out runs/mlp
  LRFIND_DATA_DIR=../shared/data lrfind range-test --device cpu --num-iter 100
""")
@data_options
@batch_size_option(64)
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adam"]),
              help="Optimizer to use.")
@run_options
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


@main.command("tune", epilog="""\b
Examples:
  lrfind tune --trials 50
  lrfind tune --trials 20 --epochs 2 --schedules cosine,onecycle,step --out runs/quick
  lrfind tune --trials 8 --train-subset 5000 --device cpu --no-final       # a quick look on a laptop
  lrfind tune --storage postgresql://user:pw@host/db --study-name mnist-lenet --trials 200
""")
@click.option("--trials", default=50, show_default=True, type=int, help="Trials in the study (in total, over resumes).")
@data_options
@click.option("--epochs", default=3, show_default=True, type=int, help="Epochs each trial trains.")
@batch_size_option(128)
@click.option("--optimizer", default="sgd", show_default=True, type=click.Choice(["sgd", "adam", "adamw"]),
              help="Optimizer of every trial.")
@run_options
@click.option("--base-lr", type=float, default=None, help="Skip the range test and use this base LR.")
@click.option("--schedules", default=None, metavar="NAME,NAME,...",
              help="Schedules to search (default: all; see `lrfind schedules`). The constant LR is always included.")
@click.option("--parallel", type=int, default=None, help="Trials trained side by side. Default: as many as fit.")
@click.option("--storage", default=None, metavar="URL",
              help="Optuna storage URL. Default: sqlite:///OUT/study.db (readable by optuna-dashboard).")
@click.option("--study-name", default=None, help="Study name in the storage. Default: lrfind-MODEL-DATASET.")
@click.option("--out", default=Path("lrfind_out"), show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the study, report and figures.")
@click.option("--train-subset", type=int, default=None, metavar="N", help="Train on the first N images only (quick runs).")
@click.option("--val-size", default=10_000, show_default=True, type=int,
              help="Validation images carved off the end of the training set (a sixth of smaller sets).")
@click.option("--pruner", default="median", show_default=True, type=click.Choice(["median", "hyperband", "none"]),
              help="Optuna pruner that stops hopeless trials after an epoch.")
@click.option("--heartbeat", default=10, show_default=True, type=int, metavar="SECONDS",
              help="With a shared --storage: how often workers beat; a trial silent for 3 beats is failed "
                   "and rerun by another worker.")
@click.option("--same-init", is_flag=True, help="Start every trial from the same weights (default: a seed each).")
@click.option("--range-test-iters", default=300, show_default=True, type=int, help="Iterations of the stage-1 range test.")
@click.option("--no-final", is_flag=True, help="Skip stage 3 (retrain best and constant, score on the test set).")
def tune_command(trials: int, model: str, dataset: str, data_dir: Path | None, epochs: int, batch_size: int,
                 optimizer: str, momentum: float, device: str, seed: int, quiet: bool, base_lr: float | None,
                 schedules: str | None, parallel: int | None, storage: str | None, study_name: str | None, out: Path,
                 train_subset: int | None, val_size: int, pruner: str, heartbeat: int, same_init: bool,
                 range_test_iters: int, no_final: bool) -> None:
    """Find the best LR decay for a built-in model: LR first, decay second.

    Stage 1 runs a range test and fixes the base LR (or takes --base-lr). Stage 2 is an Optuna
    study over the decay type and its parameters; trials are trained side by side on one device
    and scored on a validation split of the training set, and the constant LR is always trial 0.
    Stage 3 retrains the best schedule and the constant on the whole training set and scores both
    once on the test set. Run the same command again to resume: only missing trials are run.
    """
    from . import report
    from .data import CorruptDataError, DataNotFoundError
    from .tuner import NoBaseLRError, TuneConfig, TuneInterrupted, tune
    from ._study import StudyError

    quiet_optuna()
    names = tuple(n.strip() for n in schedules.split(",") if n.strip()) if schedules else None
    try:
        cfg = TuneConfig(model=model, dataset=dataset, data_dir=str(data_dir) if data_dir else None, trials=trials,
                         epochs=epochs, batch_size=batch_size, optimizer=optimizer, momentum=momentum, base_lr=base_lr,
                         schedules=names, parallel=parallel, storage=storage, study_name=study_name, seed=seed,
                         same_init=same_init, device=device, out=str(out), train_subset=train_subset,
                         val_size=val_size, final=not no_final, pruner=pruner, heartbeat=heartbeat,
                         range_test_iters=range_test_iters,
                         progress=not quiet)
    except ValueError as e:
        raise UserError(_option_message(e)) from None
    try:
        result = tune(cfg)
    except (StudyError, DataNotFoundError, CorruptDataError, NoBaseLRError) as e:
        raise UserError(str(e)) from None
    except TuneInterrupted as e:
        click.echo(str(e), err=True)
        raise SystemExit(130) from None
    _print_report(result.study, out)


def _option_message(e: ValueError) -> str:
    """TuneConfig speaks of fields; the user typed options."""
    text = str(e)
    for field in ("trials", "epochs", "batch_size", "parallel", "base_lr", "train_subset", "val_size",
                  "range_test_iters", "heartbeat"):
        if text.startswith(field + " "):
            return "--" + field.replace("_", "-") + text[len(field):]
    return text


def _print_report(study, out: Path) -> None:
    from . import report

    click.echo(report.top_table(study))
    click.echo("")
    click.echo(report.verdict(study))
    written = report.write(study, out)
    click.echo(f"wrote {', '.join(str(p) for p in written)}")


@main.command("show", epilog="""\b
Examples:
  lrfind show                      # the study in ./lrfind_out/study.db
  lrfind show --out runs/quick
  lrfind show --storage postgresql://user:pw@host/db --study-name mnist-lenet
""")
@click.option("--out", default=Path("lrfind_out"), show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the study (its study.db), where the report is written again.")
@click.option("--storage", default=None, metavar="URL", help="Optuna storage URL. Default: sqlite:///OUT/study.db.")
@click.option("--study-name", default=None, help="Which study; needed when the storage holds several.")
def show(out: Path, storage: str | None, study_name: str | None) -> None:
    """Print the report of a stored study: top trials, verdict, and write its files again."""
    import optuna

    from ._study import StudyError, connect, default_storage, describe

    quiet_optuna()
    url = storage or default_storage(out)
    if storage is None and not (out / "study.db").is_file():
        raise UserError(f"no study in {out}: {out / 'study.db'} does not exist; pass --out or --storage")
    try:
        backend = connect(url)
    except StudyError as e:
        raise UserError(str(e)) from None
    names = [s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            raise UserError(f"{describe(url)} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                            "pick one with --study-name")
        study_name = names[0]
    elif study_name not in names:
        raise UserError(f"no study {study_name!r} in {describe(url)}; it holds: {', '.join(names) or 'none'}")
    _print_report(optuna.load_study(study_name=study_name, storage=backend), out)


def _parse_value(text: str):
    """A --param value: int, float, list of ints (``100,200``), or a word."""
    if "," in text:
        return [_parse_value(t) for t in text.split(",") if t]
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
@click.option("--out", default=Path("schedules.png"), show_default=True, type=click.Path(dir_okay=False, path_type=Path),
              help="PNG file to write.")
def schedules_plot(names: tuple[str, ...], steps: int, steps_per_epoch: int | None, params: tuple[str, ...],
                   out: Path) -> None:
    """Draw the LR curves of NAMES (default: all schedules) in one figure.

    Without --param each schedule is drawn with example parameters that show its shape. The
    plateau schedule is driven by a made-up validation loss that stops improving half-way.
    """
    import numpy as np

    from .plots import plot_schedules
    from .schedules import SCHEDULES, get_schedule

    try:
        chosen = [get_schedule(n) for n in names] or list(SCHEDULES.values())
    except ValueError as e:
        raise UserError(str(e)) from None
    given = _parse_params(params)
    if given and len(chosen) != 1:
        raise UserError(f"--param needs exactly one schedule name, got {len(chosen)}")
    per_epoch = steps_per_epoch or max(1, steps // 10)
    reports = steps // per_epoch + 1
    metrics = [max(1.0 / (1 + i), 0.4) for i in range(reports)]   # improves, then stalls
    curves = {}
    for schedule in chosen:
        p = {**schedule.example(steps, per_epoch), **given}
        if schedule.needs_metric and "interval" not in given:
            p["interval"] = per_epoch   # one metric report per epoch
        try:
            factors = schedule.factor(np.arange(steps), steps, metrics=metrics, **p)
        except ValueError as e:
            raise UserError(str(e)) from None
        caption = ", ".join(f"{k}={_short(v)}" for k, v in p.items() if k not in ("warmup_start",) or p.get("warmup"))
        curves[schedule.name] = (factors, caption)
    plot_schedules(curves, path=out, steps_per_epoch=per_epoch)
    click.echo(f"wrote {out}")


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ",".join(_short(v) for v in value)
    return str(value)


if __name__ == "__main__":
    main()
