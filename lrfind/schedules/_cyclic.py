"""Schedules that rise as well as fall, or follow a metric: warm restarts, one-cycle, cyclic,
reduce-on-plateau, warmup alone, and exponential decay after warmup with a floor."""

from __future__ import annotations

import math

import numpy as np
from torch.optim import lr_scheduler as tls

from lrfind.schedules._base import (Param, Schedule, check_momentum, cosine, fmt, is_int, momentum_params, period,
    require)
from lrfind.schedules._decay import _eta_min


def _base_lrs(optimizer) -> list[float]:
    return [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]


def _momentum_args(p: dict) -> dict:
    """torch's momentum arguments of OneCycleLR and CyclicLR for ``momentum_params``."""
    if not p["cycle_momentum"]:
        return {"cycle_momentum": False}
    return {"cycle_momentum": True, "base_momentum": p["base_momentum"], "max_momentum": p["max_momentum"]}


def _momentum_code(p: dict) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in _momentum_args(p).items())


class WarmRestarts(Schedule):
    name = "cosine_restarts"
    torch_name = "CosineAnnealingWarmRestarts"
    description = "cosine cycles of T_0 steps, each T_mult times longer than the last (SGDR)"
    params = (Param("T_0", "steps in the first cycle, 1 <= T_0 < total"),
              Param("T_mult", "growth of each cycle, an integer >= 1", 1),
              Param("min_factor", "floor as a fraction of the base LR, 0 <= min_factor < 1", 0.0))

    def _suggest(self, trial, total, steps_per_epoch):
        return {"T_0": period(trial, self.key("T_0"), total, steps_per_epoch, 0.1, 0.5),
                "T_mult": trial.suggest_int(self.key("T_mult"), 1, 2),
                "min_factor": trial.suggest_float(self.key("min_factor"), 1e-4, 0.1, log=True)}

    def _check(self, total, p):
        require(is_int(p["T_0"]) and 1 <= p["T_0"] < total, self.name, "T_0", p["T_0"], f"an integer in [1, {total})")
        require(is_int(p["T_mult"]) and p["T_mult"] >= 1, self.name, "T_mult", p["T_mult"], "an integer >= 1")
        require(0 <= p["min_factor"] < 1, self.name, "min_factor", p["min_factor"], "in [0, 1)")

    def _factor(self, steps, total, p, metrics):
        t0, mult, m = p["T_0"], p["T_mult"], p["min_factor"]
        if mult == 1:
            t_cur, t_i = steps % t0, np.full(steps.shape, t0)
        else:
            n = np.floor(np.log(steps / t0 * (mult - 1) + 1) / np.log(mult)).astype(np.int64)
            # guard the float log at exact cycle boundaries
            start = t0 * (mult ** n - 1) // (mult - 1)
            n = np.where(steps < start, n - 1, n)
            n = np.where(steps >= t0 * (mult ** (n + 1) - 1) // (mult - 1), n + 1, n)
            start = t0 * (mult ** n - 1) // (mult - 1)
            t_cur, t_i = steps - start, t0 * mult ** n
        return m + (1.0 - m) * cosine(t_cur / t_i)

    def _build(self, optimizer, total, p):
        return tls.CosineAnnealingWarmRestarts(optimizer, T_0=p["T_0"], T_mult=p["T_mult"],
                                               eta_min=_eta_min(optimizer, p["min_factor"]))

    def _code(self, total, p, base_lr):
        return (f"CosineAnnealingWarmRestarts(optimizer, T_0={p['T_0']}, T_mult={p['T_mult']}, "
                f"eta_min={fmt(p['min_factor'] * base_lr)})", ["CosineAnnealingWarmRestarts"])

    def example(self, total, steps_per_epoch):
        return {"T_0": max(1, total // 7), "T_mult": 2, "min_factor": 0.0}


class OneCycle(Schedule):
    name = "onecycle"
    torch_name = "OneCycleLR"
    description = ("one cycle: up from base/div_factor to the base LR over pct_start of the run, then down "
                   "to base/(div_factor*final_div_factor); with cycle_momentum, the momentum goes the other way")
    params = (Param("pct_start", "fraction of the run spent rising, 0 < pct_start < 1", 0.3),
              Param("anneal_strategy", "'cos' or 'linear'", "cos"),
              Param("div_factor", "start LR = base / div_factor, >= 1", 25.0),
              Param("final_div_factor", "end LR = start LR / final_div_factor, >= 1", 1e4),
              *momentum_params(0.85, 0.95))
    starts_low = True
    warmup_allowed = False
    min_total = 4
    added_choices = {"cycle_momentum": False}

    def _suggest(self, trial, total, steps_per_epoch):
        low, high = max(0.05, 2 / total), min(0.5, 1 - 2 / total)
        return {"pct_start": trial.suggest_float(self.key("pct_start"), low, high),
                "anneal_strategy": trial.suggest_categorical(self.key("anneal_strategy"), ["cos", "linear"]),
                "div_factor": trial.suggest_float(self.key("div_factor"), 3.0, 100.0, log=True),
                "final_div_factor": trial.suggest_float(self.key("final_div_factor"), 10.0, 1e4, log=True),
                "cycle_momentum": trial.suggest_categorical(self.key("cycle_momentum"), [False, True])}

    def _check(self, total, p):
        require(0 < p["pct_start"] < 1 and p["pct_start"] * total >= 2 and (1 - p["pct_start"]) * total >= 2,
                self.name, "pct_start", p["pct_start"], f"in (0, 1), leaving >= 2 steps for each phase of {total}")
        require(p["anneal_strategy"] in ("cos", "linear"), self.name, "anneal_strategy", p["anneal_strategy"],
                "'cos' or 'linear'")
        require(p["div_factor"] >= 1, self.name, "div_factor", p["div_factor"], ">= 1")
        require(p["final_div_factor"] >= 1, self.name, "final_div_factor", p["final_div_factor"], ">= 1")
        check_momentum(self.name, p)

    @staticmethod
    def _cycle(steps, total, p, start: float, peak: float, end: float) -> np.ndarray:
        """torch's two phases: from ``start`` to ``peak`` over pct_start of the run, then to ``end``."""
        up_end = float(p["pct_start"] * total) - 1       # torch's phase boundaries, in steps
        down_end = float(total - 1)
        anneal = ((lambda a, b, pct: b + (a - b) * cosine(pct)) if p["anneal_strategy"] == "cos"
                  else (lambda a, b, pct: a + (b - a) * pct))
        s = steps.astype(np.float64)
        rising = anneal(start, peak, s / up_end)
        falling = anneal(peak, end, (s - up_end) / (down_end - up_end))
        return np.where(s <= up_end, rising, falling)

    def _factor(self, steps, total, p, metrics):
        start = 1.0 / p["div_factor"]
        return self._cycle(steps, total, p, start, 1.0, start / p["final_div_factor"])

    def _momentum(self, steps, total, p):
        return self._cycle(steps, total, p, p["max_momentum"], p["base_momentum"], p["max_momentum"])

    def _build(self, optimizer, total, p):
        return tls.OneCycleLR(optimizer, max_lr=_base_lrs(optimizer), total_steps=total, pct_start=p["pct_start"],
                              anneal_strategy=p["anneal_strategy"], div_factor=p["div_factor"],
                              final_div_factor=p["final_div_factor"], **_momentum_args(p))

    def _code(self, total, p, base_lr):
        return (f"OneCycleLR(optimizer, max_lr={fmt(base_lr)}, total_steps={total}, "
                f"pct_start={fmt(p['pct_start'])}, anneal_strategy={p['anneal_strategy']!r}, "
                f"div_factor={fmt(p['div_factor'])}, final_div_factor={fmt(p['final_div_factor'])}, "
                f"{_momentum_code(p)})", ["OneCycleLR"])

    def example(self, total, steps_per_epoch):
        return {"pct_start": 0.3, "anneal_strategy": "cos", "div_factor": 25.0, "final_div_factor": 1e4,
                "cycle_momentum": True}


class Cyclic(Schedule):
    name = "cyclic"
    torch_name = "CyclicLR"
    description = ("triangles between min_factor * base and the base LR (Smith's CLR): triangular, "
                   "triangular2 (halved every cycle) or exp_range (times gamma**step)")
    params = (Param("step_size_up", "steps rising in each cycle, >= 1"),
              Param("step_size_down", "steps falling in each cycle, >= 1"),
              Param("mode", "'triangular', 'triangular2' or 'exp_range'", "triangular"),
              Param("gamma", "per-step scale for exp_range, 0 < gamma <= 1", 1.0),
              Param("min_factor", "the low LR as a fraction of the base LR, 0 < min_factor < 1", 0.1),
              *momentum_params(0.8, 0.9))
    starts_low = True
    warmup_allowed = False
    added_choices = {"cycle_momentum": False}
    _SCALE = {"triangular": "cycle", "triangular2": "cycle", "exp_range": "iterations"}

    def _suggest(self, trial, total, steps_per_epoch):
        cycles = trial.suggest_int(self.key("cycles"), 1, 4)
        half = max(1, total // (2 * cycles))
        mode = trial.suggest_categorical(self.key("mode"), ["triangular", "triangular2", "exp_range"])
        gamma = 1.0
        if mode == "exp_range":
            gamma = float(trial.suggest_float(self.key("final_scale"), 0.01, 0.5, log=True) ** (1.0 / total))
        return {"step_size_up": half, "step_size_down": half, "mode": mode, "gamma": gamma,
                "min_factor": trial.suggest_float(self.key("min_factor"), 0.01, 0.3, log=True),
                "cycle_momentum": trial.suggest_categorical(self.key("cycle_momentum"), [False, True])}

    def _check(self, total, p):
        for k in ("step_size_up", "step_size_down"):
            require(is_int(p[k]) and p[k] >= 1, self.name, k, p[k], "an integer >= 1")
        require(p["mode"] in self._SCALE, self.name, "mode", p["mode"], "'triangular', 'triangular2' or 'exp_range'")
        require(0 < p["gamma"] <= 1, self.name, "gamma", p["gamma"], "in (0, 1]")
        require(0 < p["min_factor"] < 1, self.name, "min_factor", p["min_factor"], "in (0, 1)")
        check_momentum(self.name, p)

    def _height(self, steps, p) -> np.ndarray:
        """How far up its triangle each step is, 0 to 1, times the mode's scale: torch's CyclicLR."""
        size = p["step_size_up"] + p["step_size_down"]
        ratio = p["step_size_up"] / size
        s = steps.astype(np.float64)
        cycle = np.floor(1 + s / size)
        x = 1.0 + s / size - cycle
        scale = np.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
        mode = p["mode"]
        fn = (np.ones_like(s) if mode == "triangular" else 1 / (2.0 ** (cycle - 1)) if mode == "triangular2"
              else p["gamma"] ** s)
        return scale * fn

    def _factor(self, steps, total, p, metrics):
        m = p["min_factor"]
        return m + (1.0 - m) * self._height(steps, p)

    def _momentum(self, steps, total, p):
        top = p["max_momentum"]
        return top - (top - p["base_momentum"]) * self._height(steps, p)

    def _build(self, optimizer, total, p):
        base = _base_lrs(optimizer)
        return tls.CyclicLR(optimizer, base_lr=[p["min_factor"] * b for b in base], max_lr=base,
                            step_size_up=p["step_size_up"], step_size_down=p["step_size_down"], mode=p["mode"],
                            gamma=p["gamma"], **_momentum_args(p))

    def _code(self, total, p, base_lr):
        return (f"CyclicLR(optimizer, base_lr={fmt(p['min_factor'] * base_lr)}, "
                f"max_lr={fmt(base_lr)}, step_size_up={p['step_size_up']}, "
                f"step_size_down={p['step_size_down']}, mode={p['mode']!r}, gamma={fmt(p['gamma'])}, "
                f"{_momentum_code(p)})", ["CyclicLR"])

    def example(self, total, steps_per_epoch):
        return {"step_size_up": max(1, total // 8), "step_size_down": max(1, total // 8), "mode": "triangular2",
                "gamma": 1.0, "min_factor": 0.1}


class Plateau(Schedule):
    name = "plateau"
    torch_name = "ReduceLROnPlateau"
    description = ("multiply the LR by factor when the validation loss has not improved for patience "
                   "reports (one report every interval steps, usually an epoch); searched in runs of 3 epochs or more")
    params = (Param("interval", "steps between metric reports (an epoch), >= 1"),
              Param("factor", "factor at each reduction, 0 < factor < 1", 0.1),
              Param("patience", "reports without improvement before a reduction, integer >= 0", 10),
              Param("threshold", "relative improvement that counts, >= 0", 1e-4),
              Param("cooldown", "reports to wait after a reduction, integer >= 0", 0),
              Param("min_factor", "floor as a fraction of the base LR, 0 <= min_factor < 1", 0.0))
    warmup_allowed = False
    needs_metric = True
    min_epochs = 3
    min_epochs_why = ("its LR follows the validation loss reported once an epoch, and torch's ReduceLROnPlateau "
                      "lowers it after the second report at the earliest, for the third epoch: over fewer it is "
                      "the constant LR")

    def _suggest(self, trial, total, steps_per_epoch):
        reports = max(1, total // steps_per_epoch)
        # the first report always improves, and a reduction must leave an epoch to act on: with
        # patience p the LR can first drop after report p + 2, so p <= reports - 3
        return {"interval": steps_per_epoch,
                "factor": trial.suggest_float(self.key("factor"), 0.1, 0.7, log=True),
                "patience": trial.suggest_int(self.key("patience"), 0, max(0, min(3, reports - 3))),
                "threshold": trial.suggest_float(self.key("threshold"), 1e-4, 1e-2, log=True),
                "cooldown": 0, "min_factor": 1e-3}

    def _check(self, total, p):
        require(is_int(p["interval"]) and p["interval"] >= 1, self.name, "interval", p["interval"], "an integer >= 1")
        require(0 < p["factor"] < 1, self.name, "factor", p["factor"], "in (0, 1)")
        for k in ("patience", "cooldown"):
            require(is_int(p[k]) and p[k] >= 0, self.name, k, p[k], "an integer >= 0")
        require(p["threshold"] >= 0, self.name, "threshold", p["threshold"], ">= 0")
        require(0 <= p["min_factor"] < 1, self.name, "min_factor", p["min_factor"], "in [0, 1)")

    def levels(self, metrics, **p) -> list[float]:
        """The LR factor after each metric report, as torch's ReduceLROnPlateau ('min', 'rel') sets it."""
        level, best, bad, cooldown, out = 1.0, math.inf, 0, 0, []
        for value in metrics:
            value = float(value)
            if value < best * (1.0 - p["threshold"]):
                best, bad = value, 0
            else:
                bad += 1
            if cooldown > 0:
                cooldown -= 1
                bad = 0
            if bad > p["patience"]:
                level = max(level * p["factor"], p["min_factor"])
                cooldown, bad = p["cooldown"], 0
            out.append(level)
        return out

    def _factor(self, steps, total, p, metrics):
        levels = np.asarray([1.0] + self.levels(metrics, **p))
        reports_before = np.minimum(steps // p["interval"], len(levels) - 1)
        return levels[reports_before]

    def _build(self, optimizer, total, p):
        return tls.ReduceLROnPlateau(optimizer, mode="min", factor=p["factor"], patience=p["patience"],
                                     threshold=p["threshold"], threshold_mode="rel", cooldown=p["cooldown"],
                                     min_lr=[p["min_factor"] * b for b in _base_lrs(optimizer)], eps=0.0)

    def _code(self, total, p, base_lr):
        return (f"ReduceLROnPlateau(optimizer, mode='min', factor={fmt(p['factor'])}, patience={p['patience']}, "
                f"threshold={fmt(p['threshold'])}, cooldown={p['cooldown']}, "
                f"min_lr={fmt(p['min_factor'] * base_lr)}, eps=0.0)", ["ReduceLROnPlateau"])

    def example(self, total, steps_per_epoch):
        return {"interval": max(1, total // 20), "factor": 0.5, "patience": 1}


class Warmup(Schedule):
    name = "warmup"
    torch_name = "LinearLR"
    description = "linear warmup from warmup_start * base to the base LR, then constant"
    params = (Param("warmup", "steps of warmup, 1 <= warmup < total"),
              Param("warmup_start", "LR factor at the first step, 0 < warmup_start < 1", 0.1))
    starts_low = True
    warmup_allowed = False   # it is the warmup

    def _suggest(self, trial, total, steps_per_epoch):
        frac = trial.suggest_float(self.key("warmup_frac"), 0.01, 0.3)
        return {"warmup": max(1, min(total - 1, round(frac * total))),
                "warmup_start": trial.suggest_float(self.key("warmup_start"), 0.01, 0.5, log=True)}

    def _check(self, total, p):
        require(is_int(p["warmup"]) and 1 <= p["warmup"] < total, self.name, "warmup", p["warmup"],
                f"an integer in [1, {total}) (shorter than the run)")
        require(0 < p["warmup_start"] < 1, self.name, "warmup_start", p["warmup_start"], "in (0, 1)")

    def _factor(self, steps, total, p, metrics):
        ws = p["warmup_start"]
        return ws + (1.0 - ws) * np.minimum(steps, p["warmup"]) / p["warmup"]

    def _build(self, optimizer, total, p):
        return tls.LinearLR(optimizer, start_factor=p["warmup_start"], end_factor=1.0, total_iters=p["warmup"])

    def _code(self, total, p, base_lr):
        return (f"LinearLR(optimizer, start_factor={fmt(p['warmup_start'])}, end_factor=1.0, "
                f"total_iters={p['warmup']})", ["LinearLR"])

    def example(self, total, steps_per_epoch):
        return {"warmup": total // 5, "warmup_start": 0.1}


class WarmupExp(Schedule):
    name = "warmup_exp"
    torch_name = "LambdaLR"
    description = ("linear warmup over warmup steps, then exp(-decay * (n - warmup)) with a floor "
                   "min_factor; torch has no class for it")
    params = (Param("warmup", "steps of warmup, 1 <= warmup < total"),
              Param("decay", "exponential decay rate per step after warmup, > 0"),
              Param("min_factor", "floor as a fraction of the base LR, 0 <= min_factor < 1", 0.0))
    starts_low = True
    warmup_allowed = False

    def _suggest(self, trial, total, steps_per_epoch):
        warm = max(1, min(total - 2, round(trial.suggest_float(self.key("warmup_frac"), 0.01, 0.2) * total)))
        final = trial.suggest_float(self.key("final_factor"), 1e-3, 0.5, log=True)
        return {"warmup": warm, "decay": -math.log(final) / (total - warm),
                "min_factor": trial.suggest_float(self.key("min_factor"), 1e-4, 0.1, log=True)}

    def _check(self, total, p):
        require(is_int(p["warmup"]) and 1 <= p["warmup"] < total, self.name, "warmup", p["warmup"],
                f"an integer in [1, {total}) (shorter than the run)")
        require(p["decay"] > 0, self.name, "decay", p["decay"], "> 0")
        require(0 <= p["min_factor"] < 1, self.name, "min_factor", p["min_factor"], "in [0, 1)")

    def _factor(self, steps, total, p, metrics):
        w = p["warmup"]
        decayed = np.maximum(np.exp(-p["decay"] * np.maximum(steps - w, 0)), p["min_factor"])
        return np.where(steps < w, (steps + 1) / w, decayed)

    def _build(self, optimizer, total, p):
        w, k, m = p["warmup"], p["decay"], p["min_factor"]
        return tls.LambdaLR(optimizer, lambda step: (step + 1) / w if step < w else max(math.exp(-k * (step - w)), m))

    def _code(self, total, p, base_lr):
        w = p["warmup"]
        return (f"LambdaLR(optimizer, lambda step: (step + 1) / {w} if step < {w} else "
                f"max(math.exp(-{fmt(p['decay'])} * (step - {w})), {fmt(p['min_factor'])}))", ["LambdaLR"])

    def example(self, total, steps_per_epoch):
        return {"warmup": total // 10, "decay": 5.0 / total, "min_factor": 0.05}
