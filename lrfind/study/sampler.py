"""The study's sampler: multivariate TPE, seeded afresh for each trial."""

from __future__ import annotations

import warnings

import numpy as np
import optuna
from optuna.trial import FrozenTrial


class SeededByTrial(optuna.samplers.BaseSampler):
    """Optuna's multivariate TPE, its random numbers drawn afresh for each trial from the study's
    seed and the trial's number. One seed for the sampler would make two workers that start
    together (or a study resumed in a new process) draw the same random first trials again; trial
    numbers are unique in a study, so no two trials share a draw, and a study run by one worker
    is as reproducible as before."""

    def __init__(self, seed: int | None, n_startup_trials: int) -> None:
        self.seed, self.n_startup_trials = seed, n_startup_trials
        self._tpe = self._for(None)

    def _for(self, number: int | None) -> optuna.samplers.TPESampler:
        seed = self.seed if self.seed is None or number is None else int(
            np.random.SeedSequence([self.seed, number]).generate_state(1)[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed,
                                              n_startup_trials=self.n_startup_trials)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._tpe = self._for(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()
