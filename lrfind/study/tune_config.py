"""``TuneConfig``: everything a study of ``tune`` is made of, a value checked as it is made (its
fields' types and ranges; the model, data and device they name are found when ``tune`` starts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lrfind._errors import FieldError
from lrfind._args import COUNTS, check_counts, check_positive, check_threads, unknown
from lrfind._duration import timeout_seconds
from lrfind._imports import callable_name
from lrfind.data.augment import Augment, AugmentError, get_augment
from lrfind.data.builtin import is_user_dataset
from lrfind.data.user import dataset_name, describe as describe_dataset, given_name
from lrfind.engine.update import check_max_grad_norm
from lrfind.models import get_model, is_builtin, model_name
from lrfind.study import pruner as _pruner
from lrfind.study import trials as _study
from lrfind.study.spec import StudySpec


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
    # differ by their schedules, not their starts; experiments/same_init.py), and a trial that repeats a
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
    # True: the plain constant's LR is searched too, 0.2x to 2x the base LR (no higher than warming
    # schedules may peak; the base LR suits a schedule's peak, and where the best constant lies
    # depends on the run's length), and the verdict judges decay against the best constant; False:
    # the constant at the base LR only; None: the stored study's (False for one stored before lrfind
    # searched it), True for a new one
    search_constant_lr: bool | None = None
    # stage 1's sweeps from 1e-6 to 1: steps of each (twice as many when they disagree) and how many
    # (their median LR); None: 300 and 3, fewer for a study whose search is short (tune_lr.sweeps_for)
    range_test_iters: int | None = None
    range_test_repeats: int | None = None
    amp: str | None = None                       # "bf16": trials' forward/backward under bfloat16 autocast
    channels_last: bool | None = None            # convolution weights channels-last; None: on a CPU only
    fold: bool = True                            # vectorized trials (a GPU's) folded into the channels, not vmapped
    augment: str | None = None                   # training batches: "flip-crop", "crop", or the user's own
    timeout: float | str | None = None           # seconds (or "10m"): no batch of trials starts after it
    metric: str | None = None                    # what trials are scored on: validation "accuracy" or "loss";
                                                 # None: accuracy for class labels, loss for regression targets
    progress: bool = True
    # CPU threads of this process (torch.set_num_threads); None: its share of the cores it may use,
    # divided among the study's workers on this host, unless OMP_NUM_THREADS or the user's own
    # torch.set_num_threads chose already (lrfind._threads)
    threads: int | None = None

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
        check_threads(self.threads)
        if self.same_init not in (None, True, False):
            raise FieldError("same_init", f"same_init must be True, False or None (the stored study's; False for a new one), "
                             f"got {self.same_init!r}")
        if self.search_constant_lr not in (None, True, False):
            raise FieldError("search_constant_lr", "search_constant_lr must be True, False or None (the stored study's; "
                             f"True for a new one), got {self.search_constant_lr!r}")
        if self.parallel is not None and not (isinstance(self.parallel, int) and 1 <= self.parallel <= self.trials):
            raise FieldError("parallel", f"parallel must be between 1 and trials={self.trials}, got {self.parallel!r}")
        if self.base_lr is not None:
            check_positive("base_lr", self.base_lr)
        if self.train_subset is not None and self.train_subset < self.batch_size:
            raise FieldError("train_subset", f"train_subset must be at least batch_size={self.batch_size}, got {self.train_subset!r}")
        if self.max_peak is not None:
            check_positive("max_peak", self.max_peak, least=1)
        check_max_grad_norm(self.max_grad_norm)
        if self.amp not in (None, "bf16"):
            raise FieldError("amp", f"amp must be None or 'bf16', got {self.amp!r}")
        if not isinstance(self.fold, bool):
            raise FieldError("fold", f"fold must be True or False, got {self.fold!r}")
        if self.metric is not None and self.metric not in _study.METRICS:
            raise FieldError("metric", f"metric must be 'accuracy' or 'loss', got {self.metric!r}")
        if self.pruner not in _pruner.PRUNERS:
            raise ValueError(unknown("pruner", self.pruner, _pruner.PRUNERS))
        self.check_schedules()
        self.check_out()
        self.optimizer_config                # checks the optimizer's name, momentum and weight decay
        # A value: the model, the data set, the augmentation and the device are found by ``tune`` as
        # it starts (the user's code runs there, once), not here.

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
                "same_init", "max_peak", "amp", "search_constant_lr")
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


__all__ = ["TuneConfig"]
