"""``lrfind tune``, ``lrfind show`` and ``lrfind repair``: thin click commands over ``lrfind.tune`` and the report."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from lrfind._clock import process_seconds
from lrfind._files import write_whole
from lrfind._output import counted
from lrfind._args import check_counts, check_positive, check_threads
from lrfind._duration import timeout_seconds
from lrfind._errors import FieldError
from lrfind.cli.app import main
from lrfind.cli.options import (Choice, PathGiven, RunError, UserError, batch_size_option, creatable_folder,
    data_options, option_message, out_of_memory, run_options, schedule_name, verbose_option)


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO on stderr; keep that for --verbose only."""
    import optuna

    if not logging.getLogger("lrfind").isEnabledFor(logging.INFO):
        optuna.logging.set_verbosity(optuna.logging.WARNING)


@main.command("tune", epilog="""\b
Examples:
  lrfind tune --trials 50
  lrfind tune --trials 20 --epochs 2 --schedules cosine,onecycle,step --out runs/quick
  lrfind tune --trials 8 --train-subset 5000 --device cpu --no-final       # a quick look on a laptop
  lrfind tune --trials 50 --device cpu --timeout 20m                        # as many as 20 minutes allow
  lrfind tune --model examples/own_model.py:SmallCNN --trials 50            # your own model
  lrfind tune --dataset examples/own_data.py:cifar10 --model examples/own_data.py:CifarNet --augment flip-crop
  for gpu in 0 1; do CUDA_VISIBLE_DEVICES=$gpu lrfind tune --trials 100 & done   # one study, two GPUs
  lrfind tune --storage postgresql://user:pw@host/db --study-name mnist-lenet --trials 200   # many machines
""")
@click.option("--trials", default=50, show_default=True, type=int, help="Trials in the study (in total, over resumes).")
@data_options
@click.option("--epochs", default=3, show_default=True, type=int, help="Epochs each trial trains.")
@batch_size_option(128)
@run_options
@click.option("--base-lr", type=float, default=None, help="Skip the range test and use this base LR.")
@click.option("--schedules", default=None, metavar="NAME,NAME,...",
              help="Schedules to search (default: all; see `lrfind schedules`; plateau only with 3 epochs or more). "
                   "The constant LR is always included.")
@click.option("--parallel", type=int, default=None, help="Trials trained side by side. Default: as many as fit on a GPU, 8 on a CPU.")
@click.option("--storage", default=None, metavar="PATH|URL",
              help="Where the study lives: a journal file path, or an RDB URL (sqlite:///study.db, "
                   "postgresql://...). Default: OUT/study.log (readable by optuna-dashboard).")
@click.option("--study-name", default=None, help="Study name in the storage. Default: lrfind-MODEL-DATASET.")
@click.option("--out", default=Path("lrfind_out"), show_default=True, type=PathGiven(file_okay=False),
              callback=creatable_folder, help="Folder for the study, report and figures.")
@click.option("--train-subset", type=int, default=None, metavar="N", help="Train on the first N images only (quick runs).")
@click.option("--val-size", default=None, type=int, metavar="N",
              help="Validation images carved off the end of the training set. Default: 10,000, at most a sixth "
                   "of the set.")
@click.option("--metric", default=None, type=Choice(["accuracy", "loss"]),
              help="What trials are scored, pruned and ranked on: validation accuracy (higher is better) or "
                   "validation loss (cross-entropy, lower is better: it separates trials whose accuracies tie, "
                   "and rewards confident right answers). Both are reported. Default: accuracy; loss (mean "
                   "squared error) for a data set of float regression targets.")
@click.option("--pruner", default="median", show_default=True, type=Choice(["median", "hyperband", "none"]),
              help="Optuna pruner that stops hopeless trials after an epoch (median: from the second "
                   "epoch's report on when --epochs is 3 or more, and only trials whose LR will not fall "
                   "by more than half again: a decay still to come is not judged before it happens).")
@click.option("--heartbeat", default=10, show_default=True, type=int, metavar="SECONDS",
              help="With a PostgreSQL --storage: how often workers beat; a trial silent for 3 beats is failed "
                   "and rerun by another worker. (Workers sharing a journal file on one machine need no beats: "
                   "a trial whose process is gone is rerun.)")
@click.option("--max-peak", type=float, default=None, metavar="X",
              help="Schedules that warm up (one-cycle, cyclic, warmup) may peak at up to X times the base LR. "
                   "Default: where the range test's loss stops falling (at most 10x; 3x with --base-lr).")
@click.option("--same-init/--seed-each", default=None,
              help="Start every trial from the same initial weights, so that two trials differ by their schedules "
                   "alone (a trial that repeats a finished one then takes its score), or each from weights of its "
                   "own seed. Default: the stored study's; a seed each for a new study.")
@click.option("--range-test-iters", default=None, type=int, metavar="N",
              help="Steps of each stage-1 sweep, from LR 1e-6 to 1; when the sweeps disagree by more than 3x, "
                   "stage 1 sweeps again with twice as many. [default: 300, fewer (down to 100) where the "
                   "sweeps would take more than 30% of a short study]")
@click.option("--range-test-repeats", default=None, type=int, metavar="N",
              help="Stage 1 sweeps N times, side by side where the model allows (on a GPU for about the cost of "
                   "one), and takes the median suggestion: one sweep now and then lands far from the others. A "
                   "sweep whose loss fell less than 0.3x as far as the deepest is left out. [default: 3, fewer "
                   "where they would take more than 30% of a short study]")
@click.option("--final-seeds", default=3, show_default=True, type=int,
              help="Stage 3 retrains best and constant this many times each (seeds in pairs): the gain's "
                   "standard error needs 2 or more.")
@click.option("--amp", type=Choice(["bf16"]), default=None,
              help="Train the trials under bfloat16 autocast (weights and updates stay float32): about 25% "
                   "faster on an H100 at 50 trials; compare its accuracy with a float32 study before relying on it.")
@click.option("--channels-last/--no-channels-last", default=None,
              help="Store the trials' convolution weights channels-last (NHWC): a LeNet trial-epoch takes about "
                   "30% less time on a CPU. Default: on a CPU only (on an H100 it changed nothing at 50 trials); a "
                   "model whose forward cannot take it (x.view after a convolution) keeps the usual layout.")
@click.option("--fold/--no-fold", default=True, show_default=True,
              help="Where the trials run side by side (a GPU), run their forward with the activations folded into "
                   "the channels, which spares vmap's copies around every convolution; --no-fold vmaps the model "
                   "whole, as lrfind did before (to compare, or should folding misbehave).")
@click.option("--timeout", default=None, metavar="DURATION",
              help="Start no more trials after this long (600, 90s, 10m, 1h30m), counted from the start; the "
                   "trials running finish, stage 3 follows, and the same command again goes on with the rest.")
@click.option("--no-final", is_flag=True, help="Skip stage 3 (retrain best and constant, score on the test set).")
@verbose_option
def tune_command(trials: int, model: str, dataset: str, data_dir: Path | None, augment: str | None, epochs: int,
                 batch_size: int, optimizer: str, momentum: float, weight_decay: float | None,
                 max_grad_norm: float | None, device: str,
                 seed: int, quiet: bool, threads: int | None, base_lr: float | None, schedules: str | None, parallel: int | None,
                 storage: str | None, study_name: str | None, out: Path, train_subset: int | None, val_size: int | None,
                 metric: str | None, pruner: str, heartbeat: int, max_peak: float | None, same_init: bool | None,
                 range_test_iters: int | None, range_test_repeats: int | None, final_seeds: int, amp: str | None, fold: bool,
                 channels_last: bool | None, timeout: str | None, no_final: bool) -> None:
    """Find the best LR decay for a model: LR first, decay second.

    Stage 1 runs a range test and fixes the base LR (or takes --base-lr). Stage 2 is an Optuna
    study over the decay type and its parameters; trials are trained side by side on one device
    and scored on a validation split of the training set. The constant LR is always trial 0, and
    its LR is searched too, 0.2x to 2x the base LR (which suits a schedule's peak more than a
    constant run), with 1x, 0.5x and 2x queued first. Stage 3 retrains the best schedule and
    the best constant on the whole training set and scores both once on the test set: the verdict
    gives decay's gain seed by seed, its mean and standard error, and names any retrain that
    diverged.
    Run the same command again to resume: only missing trials are run.
    """
    try:                          # the plain values, before torch is imported: a typo is told at once
        check_counts(trials=trials, epochs=epochs, batch_size=batch_size, val_size=val_size,
                     range_test_iters=range_test_iters, range_test_repeats=range_test_repeats, heartbeat=heartbeat,
                     final_seeds=final_seeds)
        if base_lr is not None:
            check_positive("base_lr", base_lr)
        timeout_seconds(timeout)
        check_threads(threads)
    except ValueError as e:
        raise UserError(option_message(e)) from None
    import torch

    from lrfind.data.builtin import CorruptDataError, DataNotFoundError
    from lrfind.data.images import DataSizeError
    from lrfind.models import ModelError
    from lrfind.data.augment import AugmentError
    from lrfind.data.user import DataSetError
    from lrfind.study.result import TuneInterrupted
    from lrfind.study.tune import tune
    from lrfind.study.tune_config import TuneConfig
    from lrfind.study.tune_lr import NoBaseLRError
    from lrfind.study.storage import StorageArgumentError, StudyError

    quiet_optuna()
    names = None if schedules is None else tuple(schedule_name(n) for n in schedules.split(",") if n.strip())
    try:
        cfg = TuneConfig(model=model, dataset=dataset, data_dir=str(data_dir) if data_dir else None, augment=augment,
                         trials=trials,
                         epochs=epochs, batch_size=batch_size, optimizer=optimizer, momentum=momentum,
                         weight_decay=weight_decay, max_grad_norm=max_grad_norm, base_lr=base_lr, schedules=names,
                         parallel=parallel,
                         storage=storage, study_name=study_name, seed=seed,
                         same_init=same_init, device=device, out=str(out), train_subset=train_subset,
                         val_size=val_size, final=not no_final, metric=metric, pruner=pruner, heartbeat=heartbeat,
                         max_peak=max_peak,
                         final_seeds=final_seeds, range_test_iters=range_test_iters,
                         range_test_repeats=range_test_repeats, amp=amp, channels_last=channels_last, fold=fold,
                         timeout=timeout, threads=threads,
                         progress=not quiet)
    except ValueError as e:
        raise UserError(option_message(e)) from None
    started = process_seconds()                    # start-up: the interpreter, imports, options
    try:
        result = tune(cfg)
    except StorageArgumentError as e:
        raise UserError(str(e)) from None
    except (StudyError, DataNotFoundError, CorruptDataError, NoBaseLRError) as e:
        raise RunError(str(e)) from None
    except (ModelError, DataSetError, AugmentError, DataSizeError, FieldError) as e:
        raise UserError(option_message(e)) from None
    except TuneInterrupted as e:
        click.echo(str(e), err=True)
        raise SystemExit(130) from None
    except KeyboardInterrupt:                      # before the study began, or between its stages
        click.echo("interrupted: run the same command again to go on (finished trials are stored)", err=True)
        raise SystemExit(130) from None
    except torch.cuda.OutOfMemoryError as e:       # tune halves a batch of trials first: this is one trial
        raise out_of_memory(e, batch_size) from None
    _print_report(result.study, out, written=result.files)
    click.echo(_timing(result.seconds, started, process_seconds()))


def _timing(seconds: dict[str, float], started: float | None = None, total: float | None = None) -> str:
    """The time line: start-up, the stages, and what is left of ``total`` (writing the report,
    waiting for the figures) where the process's clock is known."""
    names = {"setup": "data and storage", "range_test": "range test", "search": "trials", "final": "final"}
    staged = {names[k]: v for k, v in seconds.items() if k in names}
    parts = [f"{name} {v:.1f} s" for name, v in staged.items()]
    if started is not None and total is not None:
        rest = max(0.0, total - started - sum(staged.values()))
        parts = [f"start-up {started:.1f} s", *parts, f"report and figures {rest:.1f} s"]
    return f"time: {', '.join(parts)}" + (f"; {total:.1f} s since the process started" if total else "")


def _print_report(study, out: Path, written: list[Path] | None = None) -> None:
    """The table and the verdict; writes the report files unless ``written`` lists them already."""
    from lrfind.study import report

    click.echo(report.top_table(study))
    click.echo("")
    click.echo(report.verdict(study))
    written = report.write(study, out) if written is None else written
    click.echo(f"wrote {', '.join(str(p) for p in written)}")
    epochs = study.user_attrs.get("lrfind_setup", {}).get("epochs")
    if any(p.name == "best_schedule.py" for p in written) and epochs:
        run = f"{epochs} epoch{'s' if epochs != 1 else ''} of {report.snippet_steps(study) // epochs} steps"
        click.echo(f"best_schedule.py is for {run}; for your own run: lrfind show --out {out} --epochs N "
                   f"--steps-per-epoch M, or lrfind.load_best({str(out)!r})")


@main.command("show", epilog="""\b
Examples:
  lrfind show                      # the study in ./lrfind_out/study.log
  lrfind show runs/quick           # the same as --out runs/quick
  lrfind show --epochs 30 --steps-per-epoch 469    # the best schedule for your own, longer run
  lrfind show --storage postgresql://user:pw@host/db --study-name mnist-lenet
""")
@click.argument("folder", required=False, type=PathGiven(file_okay=False))
@click.option("--out", default=Path("lrfind_out"), show_default=True, type=PathGiven(file_okay=False),
              help="Folder of the study (its study.log), where the report is written again; or give it as FOLDER.")
@click.option("--storage", default=None, metavar="PATH|URL",
              help="A journal file path or an RDB URL. Default: OUT/study.log (OUT/study.db from older runs).")
@click.option("--study-name", default=None, help="Which study; needed when the storage holds several.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="With --steps-per-epoch: also write the best schedule for your own run of this many epochs "
                   "(its periods keep their share of the run) into OUT/best_schedule_EPOCHSxSTEPS.py.")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None,
              help="Optimizer steps per epoch of your run (len(train_loader)).")
@verbose_option
def show(folder: Path | None, out: Path, storage: str | None, study_name: str | None, epochs: int | None,
         steps_per_epoch: int | None) -> None:
    """Print the report of a stored study in FOLDER (--out): top trials, verdict, and write its files
    again.

    A folder that holds a range test instead (`lrfind range-test --out`) gets its summary."""
    import optuna

    from lrfind.study.storage import StorageArgumentError, StudyError, connect, describe, find_default_storage

    if folder is not None:
        given = click.get_current_context().get_parameter_source("out") is not click.core.ParameterSource.DEFAULT
        if given and out != folder:
            raise UserError(f"two folders: {folder} and --out {out}; give one")
        out = folder
    quiet_optuna()
    url = storage or find_default_storage(out)
    if url is None and (out / "best.json").is_file():           # a study's report, the study stored elsewhere
        name = _study_name_in(out / "best.json")
        raise UserError(f"{out} holds the report of study {name!r} but not the study, which tune stored elsewhere "
                        f"(its --storage): pass the same --storage, or lrfind.load_best({str(out)!r}) for the "
                        f"best schedule")
    if url is None and (out / "range_test.json").is_file():     # a range test's folder: its summary
        from lrfind.rangetest.result import RangeTestResult

        click.echo(RangeTestResult.load(out / "range_test.json").summary())
        click.echo(f"({out} holds a range test, not a study: its plot is {out / 'range_test.png'}; "
                   f"`lrfind compare {out} OTHER...` lays several side by side)")
        return
    if url is None:
        raise RunError(f"no study in {out}: {out / 'study.log'} does not exist; give the folder the study wrote "
                        "(lrfind show FOLDER) or its --storage")
    try:
        backend = connect(url, create=False)
    except StorageArgumentError as e:
        raise UserError(str(e)) from None
    except StudyError as e:
        raise RunError(str(e)) from None
    names = [s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            raise UserError(f"{describe(url)} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                            "pick one with --study-name")
        study_name = names[0]
    elif study_name not in names:
        raise UserError(f"no study {study_name!r} in {describe(url)}; it holds: {', '.join(names) or 'none'}")
    if (epochs is None) != (steps_per_epoch is None):
        raise UserError("--epochs and --steps-per-epoch go together: give both, for a run of EPOCHS x STEPS optimizer "
                        "steps, or neither")
    study = optuna.load_study(study_name=study_name, storage=backend)
    for_run = _for_run(study, epochs, steps_per_epoch) if epochs is not None else None    # checked first
    _print_report(study, out)
    if for_run is not None:
        tuned, code = for_run
        path = out / f"best_schedule_{epochs}x{steps_per_epoch}.py"
        write_whole(path, f"# lrfind study {study.study_name!r}: {tuned}, stretched to {counted(epochs, 'epoch')} of "
                          f"{steps_per_epoch} steps\n" + code)
        tuned.plot(epochs=epochs, steps_per_epoch=steps_per_epoch, path=path.with_suffix(".png"))
        click.echo(f"\nfor {counted(epochs, 'epoch')} of {steps_per_epoch} steps (tuned on {tuned.epochs} of "
                   f"{tuned.steps_per_epoch}), wrote {path} and {path.with_suffix('.png')}:\n\n{code}", nl=False)


@main.command("repair", epilog="""\b
Examples:
  lrfind repair                    # the study in ./lrfind_out/study.log
  lrfind repair runs/quick         # the same as --out runs/quick
  lrfind repair --storage /data/studies/mnist.log
""")
@click.argument("folder", required=False, type=PathGiven(file_okay=False))
@click.option("--out", default=Path("lrfind_out"), show_default=True, type=PathGiven(file_okay=False),
              help="Folder of the study (its study.log); or give it as FOLDER.")
@click.option("--storage", default=None, metavar="PATH", help="The journal file, where tune --storage put it.")
@verbose_option
def repair(folder: Path | None, out: Path, storage: str | None) -> None:
    """Mend a study's journal file that lrfind refused to open because a line of it is damaged.

    Every intact record is kept and the rest dropped; a copy of the file as it was is kept beside
    it (study.log.damaged-DATE). It says how many finished trials were kept and how many records
    were lost; trials left unfinished run again when the study resumes (the same `lrfind tune`).
    Stop the study's workers first: the file must not be in use.
    """
    from lrfind.study.storage import StudyError, repair as repair_journal

    if folder is not None:
        given = click.get_current_context().get_parameter_source("out") is not click.core.ParameterSource.DEFAULT
        if given and out != folder:
            raise UserError(f"two folders: {folder} and --out {out}; give one")
        out = folder
    try:
        click.echo(repair_journal(storage or str(out / "study.log")).summary())
    except StudyError as e:
        raise RunError(str(e)) from None


def _study_name_in(best_json: Path) -> str:
    """The study's name in a report's best.json; "?" where the file cannot say."""
    import json

    try:
        return str(json.loads(best_json.read_text())["study"])
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def _for_run(study, epochs: int, steps_per_epoch: int):
    """The best schedule and its code for a run of the user's, or a one-line error."""
    from lrfind.study.best import BestFileError, from_study

    try:
        tuned = from_study(study)
        if tuned is None:
            raise UserError(f"study {study.study_name!r} has no completed trial: nothing to stretch to your run")
        return tuned, tuned.snippet(epochs=epochs, steps_per_epoch=steps_per_epoch)
    except (BestFileError, ValueError) as e:
        raise UserError(str(e)) from None
