"""The study: pick the LR first (a range test), the decay second (Optuna over the schedule registry).

Stage 1 runs a range test on the model and data of the study and fixes the base LR (or takes
``base_lr``). Stage 2 asks Optuna for trials in batches of ``parallel``, trains each batch fused on
one device (``train.run_trials``), reports the validation accuracy after every epoch so that the
pruner can stop hopeless trials, and tells Optuna how each ended. The constant-LR trial is always
enqueued first: the report says whether decay helps at all. Stage 3 retrains the best schedule and
the constant baseline on the whole training set and scores them once on the test set.

Trials are scored on a validation split carved from the training set; the test set is read only in
stage 3. The study lives in Optuna's storage (a journal file by default, which several processes
on one machine may share; SQLite or PostgreSQL by URL), so running the same command again resumes
it and runs only the missing trials.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import optuna
import torch

from lrfind.study import search as _search_loop
from lrfind.study import storage as _storage
from lrfind.study import trials as _study
from lrfind.study.spec import StudySpec
from lrfind.study import report
from lrfind._args import COUNTS, check_counts, check_names, check_positive, unknown
from lrfind._device import on_device, resolve_device
from lrfind._duration import timeout_seconds
from lrfind._imports import callable_name
from lrfind._output import progress_bar
from lrfind.study.painter import Painter
from lrfind.engine.update import check_max_grad_norm
from lrfind.data.augment import Augment, AugmentError, check_augment, get_augment
from lrfind.data.builtin import check_dataset, is_user_dataset, load_dataset
from lrfind.data.images import DataSizeError, ImageData, check_batch_fits
from lrfind.models import check_fits, get_model, is_builtin, model_name
from lrfind.rangetest.find import find_lr
from lrfind.rangetest.result import RangeTestResult
from lrfind.schedules import get_schedule, stored_choices
from lrfind.engine.trials import TrialRecord, TrialSpec, run_trials
from lrfind.data.losses import is_regression, task_loss
from lrfind.data.user import DataSetError, dataset_name, describe as describe_dataset, given_name

if TYPE_CHECKING:
    from lrfind.study.best import TunedSchedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneConfig(StudySpec):
    """Everything a study is made of. Fields that shape the search space are stored with the study,
    and a resumed study must match them."""

    model: str = "lenet"                         # or module:function, file.py:function, or the callable itself
    dataset: str = "mnist"                       # "fashion-mnist", the user's own named as a model is, or the data
    data_dir: str | None = None
    trials: int = 50
    epochs: int = 3
    batch_size: int = 128
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float | None = None            # None: torch's default, 0 (AdamW: 0.01)
    max_grad_norm: float | None = None           # clip each trial's gradient norm to this; None: no clipping
    base_lr: float | None = None
    schedules: tuple[str, ...] | None = None     # None: every registered schedule
    parallel: int | None = None                  # None: as many as fit
    storage: str | None = None                   # None: <out>/study.log (an Optuna journal file)
    study_name: str | None = None
    seed: int = 0
    # True: every trial from the same initial weights (common random numbers: two trials then
    # differ by their schedules, not their starts; bench/same_init.py), and a trial that repeats a
    # finished one takes its score; False: a seed each; None: the stored study's, False for a new
    # one (whole studies found schedules as good either way: bench/init_studies_*.json)
    same_init: bool | None = None
    device: str = "auto"                         # "cpu", "cuda", or "cuda:N": one GPU of several
    out: str = "lrfind_out"
    train_subset: int | None = None
    val_size: int | None = None                  # None: 10,000, at most a sixth of the set
    final: bool = True
    pruner: str = "median"
    heartbeat: int = 10                          # seconds; a silent worker's trial is failed after 3
    max_peak: float | None = None                # warming schedules' peak / base LR; None: from the range test
    final_seeds: int = 3                         # retrains of best and constant in stage 3
    range_test_iters: int = 300                  # steps of each stage-1 sweep from 1e-6 to 1; twice as many
                                                 # when the sweeps disagree (README, "One sweep, or ...")
    range_test_repeats: int = 3                  # stage 1's sweeps, with seeds seed, seed+1, ...: their median LR
    amp: str | None = None                       # "bf16": trials' forward/backward under bfloat16 autocast
    channels_last: bool | None = None            # convolution weights channels-last; None: on a CPU only
    fold: bool = True                            # vectorized trials (a GPU's) folded into the channels, not vmapped
    augment: str | None = None                   # training batches: "flip-crop", "crop", or the user's own
    timeout: float | str | None = None           # seconds (or "10m"): no batch of trials starts after it
    metric: str | None = None                    # what trials are scored on: validation "accuracy" or "loss";
                                                 # None: accuracy for class labels, loss for regression targets
    progress: bool = True

    def __post_init__(self) -> None:
        if callable(self.model):               # stored, resumed and shared by its name
            object.__setattr__(self, "model", model_name(self.model))
        if callable(self.dataset):
            object.__setattr__(self, "dataset", dataset_name(self.dataset))
        elif not isinstance(self.dataset, str):    # tensors, arrays or a Dataset given as they are
            object.__setattr__(self, "dataset", given_name(self.dataset))
        if callable(self.augment):
            object.__setattr__(self, "augment", callable_name(self.augment, "augment", AugmentError))
        object.__setattr__(self, "timeout", timeout_seconds(self.timeout))
        check_counts(**{name: getattr(self, name) for name in COUNTS})
        if self.same_init not in (None, True, False):
            raise ValueError(f"same_init must be True, False or None (the stored study's; False for a new one), "
                             f"got {self.same_init!r}")
        if self.parallel is not None and not (isinstance(self.parallel, int) and 1 <= self.parallel <= self.trials):
            raise ValueError(f"parallel must be between 1 and trials={self.trials}, got {self.parallel!r}")
        if self.base_lr is not None:
            check_positive("base_lr", self.base_lr)
        if self.train_subset is not None and self.train_subset < self.batch_size:
            raise ValueError(f"train_subset must be at least batch_size={self.batch_size}, got {self.train_subset!r}")
        if self.max_peak is not None:
            check_positive("max_peak", self.max_peak, least=1)
        check_max_grad_norm(self.max_grad_norm)
        if self.amp not in (None, "bf16"):
            raise ValueError(f"amp must be None or 'bf16', got {self.amp!r}")
        if not isinstance(self.fold, bool):
            raise ValueError(f"fold must be True or False, got {self.fold!r}")
        if self.metric is not None and self.metric not in _study.METRICS:
            raise ValueError(f"metric must be 'accuracy' or 'loss', got {self.metric!r}")
        if self.pruner not in _study.PRUNERS:
            raise ValueError(unknown("pruner", self.pruner, _study.PRUNERS))
        self.check_schedules()
        self.check_out()
        self.optimizer_config                # checks the optimizer's name, momentum and weight decay
        get_model(self.model)
        check_dataset(self.dataset)
        self.augment_fn                      # a built-in augmentation's name, or the user's function
        resolve_device(self.device)

    @property
    def scoring(self) -> str:
        """The metric trials are scored on; ``metric=None`` is accuracy until ``tune`` sees regression
        targets (which it scores on the loss)."""
        return self.metric or "accuracy"

    @property
    def augment_fn(self) -> Augment | None:
        return get_augment(self.augment) if self.augment else None

    def setup(self) -> dict[str, Any]:
        """What defines the search space and the scores: stored with the study, checked on resume."""
        keys = ("model", "dataset", "epochs", "batch_size", "optimizer", "momentum", "train_subset", "val_size",
                "same_init", "max_peak", "amp")
        setup = {**{k: getattr(self, k) for k in keys}, "schedules": self.choices, "metric": self.scoring}
        decay = self.optimizer_config.weight_decay
        if decay:                    # no decay is left out: studies from before the option resume
            setup["weight_decay"] = decay
        if not is_builtin(self.model):   # the user's file may change between runs: a resume checks its size
            setup["model_parameters"] = sum(p.numel() for p in get_model(self.model).parameters())
        if is_user_dataset(self.dataset):  # and a resume checks the user's data set's size, shape and classes
            setup["data"] = describe_dataset(self.dataset)
        if self.augment:                 # none is left out: studies from before the option resume
            setup["augment"] = self.augment
        if self.max_grad_norm is not None:      # the same
            setup["max_grad_norm"] = self.max_grad_norm
        return setup


@dataclass
class TuneResult:
    """What ``tune`` found: the study, the base LR, and the final scores (empty with final=False)."""

    study: optuna.Study
    base_lr: float
    out: Path
    final: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)     # wall time of each stage of this run
    files: list[Path] = field(default_factory=list)              # the report written into ``out``

    def summary(self) -> str:
        """The report ``lrfind show`` prints: the best trials, then the verdict against the constant LR."""
        return f"{report.top_table(self.study)}\n\n{report.verdict(self.study)}"

    def __repr__(self) -> str:
        """One line, not the study and the scores: a notebook or a REPL shows this."""
        best = self.best
        return (f"<TuneResult: study {self.study.study_name!r}, base LR {self.base_lr:.3g}, best: "
                f"{best if best is not None else 'none yet'}; .summary() says more, the report is in {self.out}>")

    def _repr_png_(self) -> bytes | None:
        """For Jupyter, a result left as a cell's value: the figure of the top trials' LR curves
        beside the range test that this run wrote (``lr_curves.png``); None where it wrote none."""
        drawn = next((f for f in self.files if f.name == "lr_curves.png" and f.is_file()), None)
        return drawn.read_bytes() if drawn is not None else None

    @property
    def best(self) -> "TunedSchedule | None":
        """The best schedule, for a training run of any length (``load_best``); None if no trial completed."""
        from lrfind.study.best import from_study

        return from_study(self.study)


class NoBaseLRError(ValueError):
    """The range test's curve gave no clear base LR."""


class TuneInterrupted(RuntimeError):
    """Ctrl-C during the study: finished trials are kept, unfinished ones marked; run again to go on."""


@contextlib.contextmanager
def _interrupted_says(text: str) -> Iterator[None]:
    """Ctrl-C inside becomes a ``TuneInterrupted`` that says what is kept and how to go on."""
    try:
        yield
    except KeyboardInterrupt:
        raise TuneInterrupted(f"interrupted {text}") from None


def _data(cfg: TuneConfig, device: torch.device) -> tuple[ImageData, ImageData]:
    """(train, validation): the last ``val_size`` training images validate (by default 10,000, at
    most a sixth of the set); ``train_subset`` trims the rest."""
    data = load_dataset(cfg.dataset, "train", root=cfg.data_dir, device=device)
    if cfg.val_size is None:
        train, val = data.holdout()
    elif cfg.val_size < len(data):
        train, val = data.split(cfg.val_size)
    else:
        raise DataSizeError(f"val_size {cfg.val_size:,} leaves none of the {len(data):,} training examples of "
                            f"{cfg.dataset} to train on: give fewer (a sixth, {len(data) // 6:,}, is usual), or "
                            "leave it out for 10,000, at most a sixth of the set")
    if cfg.train_subset is not None:
        train = train.subset(cfg.train_subset)
    check_batch_fits(cfg.batch_size, train, val)       # a small data set of the user's: before anything is written
    return train, val


# other spellings of TuneConfig's fields (Optuna's among them)
_OTHER_NAMES = {"n_trials": "trials", "lr": "base_lr", "timeout_s": "timeout", "n_jobs": "parallel",
                "storage_url": "storage", "mixed_precision": "amp", "subset": "train_subset"}


def tune(config: TuneConfig | None = None, **fields: Any) -> TuneResult:
    """Run (or resume) a study: range test, then Optuna over decay schedules, then the final test.

    Give a ``TuneConfig`` or its fields: ``tune(trials=50, epochs=3)``.
    """
    check_names("tune", fields, TuneConfig.__dataclass_fields__, aliases=_OTHER_NAMES,
                takes="Its arguments are TuneConfig's fields: see help(lrfind.TuneConfig)")
    if config is not None and fields:
        raise TypeError("give either a TuneConfig or its fields, not both")
    cfg = config or TuneConfig(**fields)
    clock = time.perf_counter()
    deadline = _search_loop.now() + cfg.timeout if cfg.timeout else None      # no batch of trials starts after it
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    train, val = _data(cfg, device)           # a missing data set fails before the storage is touched
    regression = is_regression(train.labels)
    cfg = _with_metric(cfg, regression)
    model = get_model(cfg.model, seed=cfg.seed).to(device)     # the range test's, checked before the storage too
    check_fits(model, train.images, train.classes, cfg.model, regression=regression, labels=train.labels)
    if cfg.augment:
        check_augment(cfg.augment_fn, train.images, cfg.augment)
    url = cfg.storage or _storage.default_storage(out)
    # Figures are drawn while the device trains: beside a GPU in a process of their own (in a thread
    # they would take the GIL from the loop that feeds the GPU), beside a CPU in a thread.
    with _storage.run_lock(url), Painter(process=device.type == "cuda") as painter, on_device(device):
        study, cfg = open_settled(cfg, out)   # checks storage, setup and base LR before anything is written
        per_epoch = len(train.loader(cfg.batch_size))
        total = cfg.epochs * per_epoch
        study.set_user_attr("steps", total)
        data = {"name": cfg.dataset, "train": len(train), "val": len(val), "shape": list(train.images.shape[1:]),
                "classes": train.classes, "augment": cfg.augment}
        if not train.images.is_floating_point():
            data["tokens"] = True                    # integer inputs: token ids for a model that embeds them
        if regression:
            data["regression"] = True                # float targets: the model returns ``classes`` values
        study.set_user_attr("data", data)
        study.set_user_attr("steps_per_epoch", per_epoch)

        seconds: dict[str, float] = {"setup": time.perf_counter() - clock}     # data and storage
        clock = time.perf_counter()
        with _study.claim(study), _interrupted_says("during the range test (stage 1), which is not stored: run the "
                                                    "same command again to start it over"):
            # workers starting together: one range test, whose LR all use
            base_lr = _study.stored_base_lr(study)
            if base_lr is None:
                found = None if cfg.base_lr is not None else _range_test(cfg, model, train, out, painter)
                base_lr = cfg.base_lr if found is None else found.suggested_lr
                _study.store_base_lr(study, base_lr, found)
            if "max_peak" not in study.user_attrs:
                study.set_user_attr("max_peak", _max_peak(cfg, study, base_lr))
        max_peak = study.user_attrs["max_peak"]
        log.info("base LR %.3g (%s); warming schedules may peak up to %.3g", base_lr,
                 study.user_attrs.get("base_lr_source"), base_lr * max_peak)

        seconds["range_test"], clock = time.perf_counter() - clock, time.perf_counter()
        parallel = cfg.parallel or _auto_parallel(cfg, device, train)
        _search(study, cfg, train, val, base_lr, max_peak, total, per_epoch, parallel,
                single=_storage.single_process(url), deadline=deadline)
        seconds["search"], clock = time.perf_counter() - clock, time.perf_counter()
        figures = painter.submit(report.draw_figures, report.snapshot(study), out)   # stage 3 adds no trials

        final: dict[str, Any] = {}
        if cfg.final:
            # workers of one study finish together: the first retrains, the others take its results
            with _study.claim(study), _interrupted_says("during the final retrains (stage 3); the search is stored: "
                                                        "run the same command again to retrain"):
                final = report.final_of(study, _study.best(study), seeds=cfg.final_seeds)
                if not final:
                    final = _final(study, cfg, train, val, base_lr, max_peak)
                    study.set_user_attr("final", final)
            seconds["final"] = time.perf_counter() - clock
        seconds = {k: round(v, 2) for k, v in seconds.items()}
        study.set_user_attr("seconds", seconds)                      # of the last run
        if device.type == "cuda":
            study.set_user_attr("peak_gpu_bytes", torch.cuda.max_memory_allocated(device))
        with _interrupted_says(f"while writing the report; the study is stored: lrfind show --out {out} writes it"):
            files = report.write(study, out, figures=False)
            waited = time.perf_counter()
            log.info("report written; waiting for its figures")
            files += figures.result()
        log.info("waited %.2f s for the report's figures", time.perf_counter() - waited)
    log.info("figure process and storage closed")
    return TuneResult(study, base_lr, out, final, seconds, files)


def _with_metric(cfg: TuneConfig, regression: bool) -> TuneConfig:
    """The config with its metric settled: accuracy for class labels, loss for regression targets
    (which have no accuracy)."""
    if regression and cfg.metric == "accuracy":
        raise DataSetError(f"--metric accuracy needs class labels, and dataset {cfg.dataset} has float regression "
                           "targets; leave --metric out (loss is its default) or give integer class indices")
    return cfg if cfg.metric is not None else _settled(cfg, metric="loss" if regression else "accuracy")


def open_settled(cfg: TuneConfig, out: Path) -> tuple[optuna.Study, TuneConfig]:
    """The study (``_study.open_study``), and the config with what it leaves to the stored study settled."""
    study = _study.open_study(cfg, out)
    if cfg.same_init is None:
        cfg = _settled(cfg, same_init=_study.stored_setup(study, "same_init"))
    return study, cfg


def _settled(cfg: TuneConfig, **values: Any) -> TuneConfig:
    """The config with ``values`` that were left open settled."""
    settled = copy.copy(cfg)          # not dataclasses.replace: its checks would build the user's model again
    for name, value in values.items():
        object.__setattr__(settled, name, value)
    return settled


def _range_test(cfg: TuneConfig, model: torch.nn.Module, train: ImageData, out: Path,
                painter: Painter) -> RangeTestResult:
    """Stage 1's sweeps, written to ``out``; raises ``NoBaseLRError`` when they give no clear LR."""
    loader = train.loader(cfg.batch_size, seed=cfg.seed, augment=cfg.augment_fn)
    # the median of several sweeps; when they disagree, of as many again at half the pace
    result = find_lr(model, loader, optimizer=cfg.optimizer_config, loss_fn=task_loss, num_iter=cfg.range_test_iters,
                     repeats=cfg.range_test_repeats, seed=cfg.seed, max_grad_norm=cfg.max_grad_norm,
                     progress=cfg.progress, warn=False)
    for text in result.warnings:                      # one log line each
        log.warning("range test: %s", text)
    # what `lrfind range-test` records too, so that `lrfind compare` tells two studies' sweeps apart
    # (the config holds the model, data set and augmentation by name: see TuneConfig.__post_init__)
    result.config.update(model=cfg.model, dataset=cfg.dataset, augment=cfg.augment, train_examples=len(train),
                         batch_size=cfg.batch_size)
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / "range_test.json")
    figure = painter.submit(report.draw_range_test, result, out / "range_test.png")
    if result.suggested_lr is None:
        figure.result()                       # the error points at it
        raise NoBaseLRError(f"the range test gave no clear base LR ({result.reason}); see {out / 'range_test.png'} "
                         "and pass --base-lr")
    return result


def _max_peak(cfg: TuneConfig, study: optuna.Study, base_lr: float) -> float:
    """How far above the base LR a schedule that warms up may peak.

    The base LR is right for a constant LR; a schedule that climbs from a low LR tolerates more (the
    range test's loss keeps falling up to its minimum, 3x the default suggestion). Default: the LR at
    the range test's lowest loss, over the base LR, between 1 and 10; 3 when the base LR was given.
    """
    if cfg.max_peak is not None:
        return cfg.max_peak
    falling = (study.user_attrs.get("range_test") or {}).get("falling_range")
    if not falling:
        return 3.0
    return float(min(10.0, max(1.0, falling[1] / base_lr)))


def _auto_parallel(cfg: TuneConfig, device: torch.device, train: ImageData) -> int:
    """As many trials at once as fit on CUDA (measured). 8 on the CPU: there the trials are looped, so
    a batch's size does not change the cost per trial, and smaller batches give the sampler and the
    pruner more finished trials to learn from (a 50-trial CPU study found one-cycle, 98.98% test, in
    batches of 8, and multistep, 98.83%, in batches of 16; 7% more time)."""
    if device.type != "cuda":
        return min(cfg.trials, 8)
    from lrfind.engine.trials import FusedTrials

    x, y = train.images[:cfg.batch_size], train.labels[:cfg.batch_size]
    used = []
    for k in (2, 4):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        engine = FusedTrials(cfg.model, [TrialSpec("constant", {}, seed=i) for i in range(k)], base_lr=1e-3,
                             total_steps=2, steps_per_epoch=1, optimizer=cfg.optimizer_config, device=device)
        engine.step(x, y)
        torch.cuda.synchronize()
        used.append(torch.cuda.max_memory_allocated() - start)
        del engine
    per_trial = max(1, (used[1] - used[0]) // 2)
    free, _ = torch.cuda.mem_get_info()
    return max(1, min(cfg.trials, 256, int(0.5 * free // per_trial)))


def _spec(trial: optuna.trial.BaseTrial, cfg: TuneConfig, total: int, per_epoch: int, max_peak: float) -> TrialSpec:
    """A trial's schedule, its parameters and, for schedules that warm up, how high it peaks."""
    name = trial.suggest_categorical("schedule", cfg.choices)
    schedule = get_schedule(name)
    params = schedule.suggest(trial, total, per_epoch)
    scale = 1.0
    if schedule.warms_up(params) and max_peak > 1:
        scale = trial.suggest_float("peak_scale", 1.0, max_peak, log=True)
    # a retry is the run that was cut short: the same seed, its original trial's number
    seed = cfg.seed if cfg.same_init else cfg.seed + (_study.original_number(trial) if hasattr(trial, "number") else 0)
    return TrialSpec(name, params, seed=seed, lr_scale=scale)


def asked_spec(trial: optuna.Trial, cfg: Any, total: int, per_epoch: int, max_peak: float) -> TrialSpec:
    """An asked trial's spec (``_spec``), recorded with it for the report: schedule, parameters in
    steps, peak scale."""
    spec = _spec(trial, cfg, total, per_epoch, max_peak)
    trial.set_user_attr("schedule", spec.schedule)
    trial.set_user_attr("params", _study.jsonable(spec.params))
    trial.set_user_attr("peak_scale", spec.lr_scale)
    return spec


def _search(study: optuna.Study, cfg: TuneConfig, train: ImageData, val: ImageData, base_lr: float,
            max_peak: float, total: int, per_epoch: int, parallel: int, *, single: bool,
            deadline: float | None = None) -> None:
    """Stage 2: batches of ``parallel`` trials trained fused (``_search_loop.search_trials`` asks and counts)."""
    def run(asked: list[optuna.Trial], specs: list[TrialSpec], bar) -> int | None:
        return _run_or_halve(study, cfg, asked, specs, train, val, base_lr, total, bar)

    _search_loop.search_trials(study, cfg, lambda trial: asked_spec(trial, cfg, total, per_epoch, max_peak), run,
                               parallel, single=single, deadline=deadline)


def _run_or_halve(study, cfg, asked, *args) -> int | None:
    """Run a batch of trials; after CUDA ran out of memory, the smaller size its requeued trials run at.

    The size came from a two-step probe (``_auto_parallel``); a model of the user's may need more
    at evaluation or in cuDNN's workspaces than those two steps showed."""
    try:
        _run_batch(study, cfg, asked, *args)
        return None
    except torch.cuda.OutOfMemoryError:
        if len(asked) == 1:
            raise
    torch.cuda.empty_cache()               # out of the except clause: the failed batch's tensors are free
    log.warning("out of GPU memory with %d trials side by side: they run again, %d at a time",
                len(asked), len(asked) // 2)
    return len(asked) // 2


def _run_batch(study, cfg, asked, specs, train, val, base_lr, total, bar) -> None:
    told: set[int] = set()
    try:
        steps = progress_bar(total=total, desc=f"{len(asked)} trials, epoch 1/{cfg.epochs}", leave=False,
                             unit="step", disable=not cfg.progress, dynamic_ncols=True)

        def report(epoch: int, records: list[TrialRecord], running: list[int]) -> set[int]:
            steps.set_description(f"{len(running)} trials, epoch {min(epoch + 2, cfg.epochs)}/{cfg.epochs}")
            for k in running:
                asked[k].report(_study.objective(records[k], cfg.scoring), epoch)
            if epoch == cfg.epochs - 1:       # every epoch is reported, but a finished trial is complete
                return set()
            verdicts = _study.should_prune(study, [asked[k] for k in running])
            return {k for k, prune in zip(running, verdicts) if prune}

        with steps:
            records = run_trials(cfg.model, specs, train, val, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                 base_lr=base_lr, optimizer=cfg.optimizer_config, seed=cfg.seed,
                                 same_init=cfg.same_init, on_epoch=report, progress=steps, amp=cfg.amp,
                                 channels_last=cfg.channels_last, fold=cfg.fold, max_grad_norm=cfg.max_grad_norm,
                                 augment=cfg.augment_fn)
        for k, (trial, rec) in enumerate(zip(asked, records)):
            _study.tell(study, trial, rec, cfg.scoring)
            told.add(k)
            bar.update(1)
    except BaseException as e:
        with _study.claim(study):
            for k, trial in enumerate(asked):
                if k not in told:
                    _study.abandon(study, trial, e)   # whoever goes on runs it again
        if isinstance(e, KeyboardInterrupt):
            raise TuneInterrupted(_study.interrupted_text(study, cfg.trials, "run the same command again")) from None
        raise


def _final(study: optuna.Study, cfg: TuneConfig, train: ImageData, val: ImageData, base_lr: float,
           max_peak: float) -> dict[str, Any]:
    """Stage 3: retrain the best schedule and the constant baseline on the whole training set,
    ``final_seeds`` times each (seed r of both starts from the same weights), and test once.

    One retrain is not enough to compare two good schedules: two runs of the same configuration
    differ by about 0.3 pp of test accuracy on MNIST. The fused engine trains all of them at once.
    A schedule that follows the validation loss (plateau) needs one in its retrain too, as in the
    search and in the user's run: then both retrain on the search's training part alone, and it
    steps on the loss of the validation part (a training loss keeps falling where a validation
    loss stalls).
    """
    best = _study.best(study)
    constant = _study.constant_baseline(study)
    if best is None:
        log.warning("no trial completed: nothing to retrain")
        return {}
    picked = {"best": best}
    if constant is not None and constant.number != best.number:
        picked["constant"] = constant
    follows_val = any(get_schedule(t.params["schedule"]).needs_metric for t in picked.values())
    # else the whole training set: the trials' train part and their validation images
    data, held = (train, val) if follows_val else (
        ImageData(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]), train.name,
                  train.classes), None)
    test = load_dataset(cfg.dataset, "test", root=cfg.data_dir, device=train.images.device)
    per_epoch = len(data.loader(cfg.batch_size))
    total = cfg.epochs * per_epoch
    # The search space is relative to the run, so replaying a trial's choices rescales its steps.
    replayed = {label: _spec(optuna.trial.FixedTrial(stored_choices(t.params)), cfg, total, per_epoch, max_peak)
                for label, t in picked.items()}
    seeds = [cfg.seed + r for r in range(cfg.final_seeds)]
    specs = [TrialSpec(s.schedule, s.params, seed=seed, lr_scale=s.lr_scale) for s in replayed.values() for seed in seeds]
    on = "training part" if held else "full training set"
    bar = progress_bar(total=total, desc=f"final: {len(specs)} retrains on the {on}", leave=False,
                       disable=not cfg.progress)
    with bar:
        records = run_trials(cfg.model, specs, data, held, epochs=cfg.epochs, batch_size=cfg.batch_size,
                             base_lr=base_lr, optimizer=cfg.optimizer_config, seed=cfg.seed, progress=bar,
                             score_on=test, amp=cfg.amp, augment=cfg.augment_fn, channels_last=cfg.channels_last,
                             fold=cfg.fold, max_grad_norm=cfg.max_grad_norm)
    out: dict[str, Any] = {}
    for i, (label, trial) in enumerate(picked.items()):
        recs = records[i * len(seeds):(i + 1) * len(seeds)]
        accs = [r.test_acc for r in recs if r.test_acc is not None]    # a NaN retrain has none
        losses = [r.test_loss for r in recs if r.test_loss is not None]
        spec = replayed[label]
        out[label] = {"trial": trial.number, "schedule": spec.schedule, "params": _study.jsonable(spec.params),
                      "peak_scale": spec.lr_scale, "lr": base_lr * spec.lr_scale,
                      "val_acc": _study.val_acc(trial, study), "val_loss": _study.val_loss(trial),
                      "test_acc": sum(accs) / len(accs) if accs else None, "test_acc_per_seed": accs,
                      "test_loss": sum(losses) / len(losses) if losses else None, "test_loss_per_seed": losses,
                      "seeds": seeds, "failed": sum(r.status == "failed" for r in recs)}
    if constant is not None and constant.number == best.number:     # the baseline itself won
        out["constant"] = dict(out["best"])
    out["setup"] = {"train_images": len(data), "test_images": len(test), "steps": total, "seeds": len(seeds)}
    if held is not None:                         # the images plateau's retrain stepped on
        out["setup"]["val_images"] = len(held)
    return out


__all__ = ["TuneConfig", "TuneResult", "TuneInterrupted", "NoBaseLRError", "tune"]
