"""Options, argument types and errors shared by lrfind's commands: declared once, reused."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Callable

import click

from lrfind._args import closest, did_you_mean
from lrfind._clock import configure_logging
from lrfind._names import AUGMENT_NAMES, DATASET_NAMES, DEVICE_NAMES, MODEL_NAMES, ONE_GPU

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
    from lrfind.schedules import SCHEDULES

    name = typed.strip()
    return name.lower() if name.lower() in SCHEDULES else name


def option_message(e: ValueError) -> str:
    """The library speaks of fields (TuneConfig's, the model's); the user typed options. The error
    says which field it is about (``FieldError.field``, or its class's ``field``: ModelError's is
    the model), and its message starts with that field's name, which becomes the option's."""
    text, field = str(e), getattr(e, "field", None)
    if field is None or not text.startswith(field + " "):
        return text
    return "--" + field.replace("_", "-") + text[len(field):]


def build_model(name: str, seed: int, data):
    """The model on the data's device, checked to map its images to class scores; a one-line error if not."""
    from lrfind.models import ModelError, check_fits, get_model

    try:
        model = get_model(name, seed=seed).to(data.images.device)
        check_fits(model, data.images, data.classes, name, regression=data.labels.is_floating_point(),
                   labels=data.labels)
    except ModelError as e:
        raise UserError(option_message(e)) from None
    return model


def load_augment(name: str | None, data):
    """The augmentation named, checked on the data's images; a one-line error if it does not fit."""
    from lrfind.data.augment import AugmentError, check_augment, get_augment

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
    from lrfind._device import resolve_device as resolve

    try:
        return resolve(name)
    except ValueError as e:
        raise UserError(f"--device {name}: {e}") from None


def load_split(dataset: str, data_dir: Path | None, device, split: str = "train"):
    """Load a data set, turning a missing or corrupt file, or a broken function of the user's, into a
    one-line error."""
    from lrfind.data.builtin import CorruptDataError, DataNotFoundError, load_dataset
    from lrfind.data.user import DataSetError

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
    click.option("--max-grad-norm", default=None, type=float, metavar="NORM",
                 help="Clip the gradients' total norm to NORM before every step (torch's clip_grad_norm_), as "
                      "your training does (without it the loss may blow up at a lower LR than in your run). "
                      "Default: no clipping."),
    click.option("--device", default="auto", show_default=True, type=DeviceChoice(),
                 help="Where to train; auto picks CUDA when available, cuda:N the N-th of several GPUs."),
    click.option("--seed", default=0, show_default=True, type=int, help="Seed for weights and batch order."),
    click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
    click.option("--threads", default=None, type=int, metavar="N",
                 help="CPU threads of this process (torch's intra-op threads). Default: the physical cores it may "
                      "use (its CPU affinity), shared out among the workers of the same study running on this "
                      "host, at least 1 each, so that processes on one machine do not fight over its cores; "
                      "where OMP_NUM_THREADS or MKL_NUM_THREADS is set, torch's count from it. -v says the "
                      "choice."),
)


def batch_size_option(default: int) -> Callable:
    return click.option("--batch-size", default=default, show_default=True, type=click.IntRange(min=1),
                        help="Examples per optimizer step.")


