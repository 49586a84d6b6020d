"""Monotone decays: constant, step, multistep, exponential, inverse-time, linear, polynomial, cosine."""

from __future__ import annotations

import math

import numpy as np
from torch.optim import lr_scheduler as tls

from lrfind.schedules._base import Param, Schedule, cosine, fmt, is_int, period, require


class Constant(Schedule):
    name = "constant"
    torch_name = "ConstantLR"
    description = "the base LR throughout: the baseline every decay must beat"
    params = ()

    def _suggest(self, trial, total, steps_per_epoch):
        return {}

    def _check(self, total, p):
        pass

    def _factor(self, steps, total, p, metrics):
        return np.ones(steps.shape)

    def _build(self, optimizer, total, p):
        return tls.ConstantLR(optimizer, factor=1.0, total_iters=0)

    def _code(self, total, p, base_lr):
        return "ConstantLR(optimizer, factor=1.0, total_iters=0)", ["ConstantLR"]

    def example(self, total, steps_per_epoch):
        return {}


class Step(Schedule):
    name = "step"
    torch_name = "StepLR"
    description = "multiply the LR by gamma every step_size steps"
    params = (Param("step_size", "steps between decays, 1 <= step_size < total"),
              Param("gamma", "factor at each decay, 0 < gamma < 1"))

    def _suggest(self, trial, total, steps_per_epoch):
        return {"step_size": period(trial, self.key("step"), total, steps_per_epoch),
                "gamma": trial.suggest_float(self.key("gamma"), 0.05, 0.7, log=True)}

    def _check(self, total, p):
        require(is_int(p["step_size"]) and 1 <= p["step_size"] < total, self.name, "step_size", p["step_size"],
                f"an integer in [1, {total})")
        require(0 < p["gamma"] < 1, self.name, "gamma", p["gamma"], "in (0, 1)")

    def _factor(self, steps, total, p, metrics):
        return p["gamma"] ** (steps // p["step_size"])

    def _build(self, optimizer, total, p):
        return tls.StepLR(optimizer, step_size=p["step_size"], gamma=p["gamma"])

    def _code(self, total, p, base_lr):
        return f"StepLR(optimizer, step_size={p['step_size']}, gamma={fmt(p['gamma'])})", ["StepLR"]

    def example(self, total, steps_per_epoch):
        return {"step_size": max(1, total // 4), "gamma": 0.5}


class MultiStep(Schedule):
    name = "multistep"
    torch_name = "MultiStepLR"
    description = "multiply the LR by gamma at each milestone step"
    params = (Param("milestones", "strictly increasing steps in [1, total)"),
              Param("gamma", "factor at each milestone, 0 < gamma < 1"))

    def _suggest(self, trial, total, steps_per_epoch):
        n = trial.suggest_int(self.key("n_milestones"), 1, 3)
        fracs, low = [], 0.2
        for i in range(n):
            fracs.append(trial.suggest_float(self.key(f"milestone_{i}"), low, 0.95))
            low = min(fracs[-1] + 0.05, 0.95)
        marks = sorted({max(1, min(total - 1, round(f * total))) for f in fracs})
        return {"milestones": marks, "gamma": trial.suggest_float(self.key("gamma"), 0.05, 0.7, log=True)}

    def _check(self, total, p):
        m = p["milestones"]
        ok = (isinstance(m, (list, tuple)) and len(m) > 0 and all(is_int(x) and 1 <= x < total for x in m)
              and all(a < b for a, b in zip(m, m[1:])))
        require(ok, self.name, "milestones", m, f"a non-empty, strictly increasing list of steps in [1, {total})")
        require(0 < p["gamma"] < 1, self.name, "gamma", p["gamma"], "in (0, 1)")

    def _factor(self, steps, total, p, metrics):
        return p["gamma"] ** np.searchsorted(np.asarray(p["milestones"]), steps, side="right")

    def _build(self, optimizer, total, p):
        return tls.MultiStepLR(optimizer, milestones=list(p["milestones"]), gamma=p["gamma"])

    def _code(self, total, p, base_lr):
        return f"MultiStepLR(optimizer, milestones={fmt(p['milestones'])}, gamma={fmt(p['gamma'])})", ["MultiStepLR"]

    def example(self, total, steps_per_epoch):
        return {"milestones": [total // 2, 3 * total // 4], "gamma": 0.3}


class Exponential(Schedule):
    name = "exponential"
    torch_name = "ExponentialLR"
    description = ("multiply the LR by gamma after every step: lr0 * gamma**n, which is lr0 * exp(-d n) with "
                   "d = -ln(gamma) (MultiplicativeLR with a constant factor is the same)")
    params = (Param("gamma", "factor per step, 0 < gamma < 1"),)

    def _suggest(self, trial, total, steps_per_epoch):
        final = trial.suggest_float(self.key("final_factor"), 1e-3, 0.5, log=True)
        return {"gamma": float(final ** (1.0 / total))}

    def _check(self, total, p):
        require(0 < p["gamma"] < 1, self.name, "gamma", p["gamma"], "in (0, 1)")

    def _factor(self, steps, total, p, metrics):
        return p["gamma"] ** steps.astype(np.float64)

    def _build(self, optimizer, total, p):
        return tls.ExponentialLR(optimizer, gamma=p["gamma"])

    def _code(self, total, p, base_lr):
        return f"ExponentialLR(optimizer, gamma={fmt(p['gamma'])})", ["ExponentialLR"]

    def example(self, total, steps_per_epoch):
        return {"gamma": 0.01 ** (1 / total)}


class InverseTime(Schedule):
    name = "inverse_time"
    torch_name = "LambdaLR"
    description = "time-based decay lr0 / (1 + decay * n); torch has no class for it"
    params = (Param("decay", "decay per step, decay > 0"),)

    def _suggest(self, trial, total, steps_per_epoch):
        k = trial.suggest_float(self.key("decay_total"), 0.5, 100.0, log=True)   # final factor 1/(1+k)
        return {"decay": k / total}

    def _check(self, total, p):
        require(p["decay"] > 0, self.name, "decay", p["decay"], "> 0")

    def _factor(self, steps, total, p, metrics):
        return 1.0 / (1.0 + p["decay"] * steps)

    def _build(self, optimizer, total, p):
        decay = p["decay"]
        return tls.LambdaLR(optimizer, lambda step: 1.0 / (1.0 + decay * step))

    def _code(self, total, p, base_lr):
        return f"LambdaLR(optimizer, lambda step: 1.0 / (1.0 + {fmt(p['decay'])} * step))", ["LambdaLR"]

    def example(self, total, steps_per_epoch):
        return {"decay": 10.0 / total}


class InverseSqrt(Schedule):
    name = "inverse_sqrt"
    torch_name = "LambdaLR"
    description = ("inverse square root lr0 / sqrt(1 + n / timescale): the Transformer's decay (with warmup: "
                   "Noam, fairseq's and Hugging Face's inverse_sqrt); torch has no class for it")
    params = (Param("timescale", "steps over which the LR falls to 1/sqrt(2) of the base LR, timescale > 0"),)

    def _suggest(self, trial, total, steps_per_epoch):
        k = trial.suggest_float(self.key("timescales"), 0.5, 100.0, log=True)   # final factor 1/sqrt(1+k)
        return {"timescale": total / k}

    def _check(self, total, p):
        require(p["timescale"] > 0, self.name, "timescale", p["timescale"], "> 0")

    def _factor(self, steps, total, p, metrics):
        return 1.0 / np.sqrt(1.0 + steps / p["timescale"])

    def _build(self, optimizer, total, p):
        timescale = p["timescale"]
        return tls.LambdaLR(optimizer, lambda step: 1.0 / math.sqrt(1.0 + step / timescale))

    def _code(self, total, p, base_lr):
        return f"LambdaLR(optimizer, lambda step: 1.0 / math.sqrt(1.0 + step / {fmt(p['timescale'])}))", ["LambdaLR"]

    def example(self, total, steps_per_epoch):
        return {"timescale": total / 20.0}


class Linear(Schedule):
    name = "linear"
    torch_name = "LinearLR"
    description = "straight line from the base LR down to end_factor at the last step"
    params = (Param("end_factor", "LR factor reached at the end, 0 < end_factor < 1"),)

    def _suggest(self, trial, total, steps_per_epoch):
        return {"end_factor": trial.suggest_float(self.key("end_factor"), 1e-3, 0.5, log=True)}

    def _check(self, total, p):
        require(0 < p["end_factor"] < 1, self.name, "end_factor", p["end_factor"], "in (0, 1)")

    def _factor(self, steps, total, p, metrics):
        return 1.0 + (p["end_factor"] - 1.0) * np.minimum(steps, total - 1) / (total - 1)

    def _build(self, optimizer, total, p):
        return tls.LinearLR(optimizer, start_factor=1.0, end_factor=p["end_factor"], total_iters=total - 1)

    def _code(self, total, p, base_lr):
        return (f"LinearLR(optimizer, start_factor=1.0, end_factor={fmt(p['end_factor'])}, "
                f"total_iters={total - 1})", ["LinearLR"])

    def example(self, total, steps_per_epoch):
        return {"end_factor": 0.1}


class Polynomial(Schedule):
    name = "polynomial"
    torch_name = "PolynomialLR"
    description = "(1 - n/total)**power: towards zero at the end of the run"
    params = (Param("power", "exponent, power > 0 (1 is linear to zero)"),)

    def _suggest(self, trial, total, steps_per_epoch):
        return {"power": trial.suggest_float(self.key("power"), 0.5, 3.0, log=True)}

    def _check(self, total, p):
        require(p["power"] > 0, self.name, "power", p["power"], "> 0")

    def _factor(self, steps, total, p, metrics):
        return (1.0 - np.minimum(steps, total) / total) ** p["power"]

    def _build(self, optimizer, total, p):
        return tls.PolynomialLR(optimizer, total_iters=total, power=p["power"])

    def _code(self, total, p, base_lr):
        return f"PolynomialLR(optimizer, total_iters={total}, power={fmt(p['power'])})", ["PolynomialLR"]

    def example(self, total, steps_per_epoch):
        return {"power": 2.0}


class Cosine(Schedule):
    name = "cosine"
    torch_name = "CosineAnnealingLR"
    description = "half a cosine from the base LR down to min_factor * base LR at the end"
    params = (Param("min_factor", "floor as a fraction of the base LR, 0 <= min_factor < 1", 0.0),)

    def _suggest(self, trial, total, steps_per_epoch):
        return {"min_factor": trial.suggest_float(self.key("min_factor"), 1e-4, 0.1, log=True)}

    def _check(self, total, p):
        require(0 <= p["min_factor"] < 1, self.name, "min_factor", p["min_factor"], "in [0, 1)")

    def _factor(self, steps, total, p, metrics):
        m = p["min_factor"]
        return m + (1.0 - m) * cosine(steps / total)

    def _build(self, optimizer, total, p):
        return tls.CosineAnnealingLR(optimizer, T_max=total, eta_min=_eta_min(optimizer, p["min_factor"]))

    def _code(self, total, p, base_lr):
        return (f"CosineAnnealingLR(optimizer, T_max={total}, eta_min={fmt(p['min_factor'] * base_lr)})",
                ["CosineAnnealingLR"])

    def example(self, total, steps_per_epoch):
        return {"min_factor": 0.0}


class StableDecay(Schedule):
    name = "wsd"
    torch_name = "LambdaLR"
    description = ("warmup-stable-decay: the base LR held, then a decay over the last decay_steps down to "
                   "min_factor (MiniCPM's WSD, Hugging Face's get_wsd_schedule); the warmup is warmup=")
    _SHAPES = ("linear", "cosine", "1-sqrt")
    params = (Param("decay_steps", "steps of the final decay, 1 <= decay_steps <= total"),
              Param("decay_shape", "'linear', 'cosine' or '1-sqrt'", "linear"),
              Param("min_factor", "LR factor reached at the end, 0 <= min_factor < 1", 0.0))

    def _suggest(self, trial, total, steps_per_epoch):
        frac = trial.suggest_float(self.key("decay_frac"), 0.05, 0.5)
        return {"decay_steps": max(1, min(total, round(frac * total))),
                "decay_shape": trial.suggest_categorical(self.key("decay_shape"), list(self._SHAPES)),
                "min_factor": trial.suggest_float(self.key("min_factor"), 1e-3, 0.1, log=True)}

    def _check(self, total, p):
        require(is_int(p["decay_steps"]) and 1 <= p["decay_steps"] <= total, self.name, "decay_steps",
                p["decay_steps"], f"an integer in [1, {total}]")
        require(p["decay_shape"] in self._SHAPES, self.name, "decay_shape", p["decay_shape"],
                "'linear', 'cosine' or '1-sqrt'")
        require(0 <= p["min_factor"] < 1, self.name, "min_factor", p["min_factor"], "in [0, 1)")

    def _factor(self, steps, total, p, metrics):
        x = np.clip((steps - (total - p["decay_steps"])) / p["decay_steps"], 0.0, 1.0)   # how far into the decay
        left = {"linear": lambda: 1.0 - x, "cosine": lambda: cosine(x), "1-sqrt": lambda: 1.0 - np.sqrt(x)}
        m = p["min_factor"]
        return m + (1.0 - m) * left[p["decay_shape"]]()

    def _build(self, optimizer, total, p):
        factor = self._factor
        return tls.LambdaLR(optimizer, lambda step: float(factor(np.array(step), total, p, None)))

    def _code(self, total, p, base_lr):
        stable, m = total - p["decay_steps"], fmt(p["min_factor"])
        x = f"min(1.0, max(0.0, (step - {stable}) / {p['decay_steps']}))"
        left = {"linear": f"1 - {x}", "cosine": f"0.5 * (1 + math.cos(math.pi * {x}))",
                "1-sqrt": f"1 - math.sqrt({x})"}[p["decay_shape"]]
        factor = left if p["min_factor"] == 0 else f"{m} + (1 - {m}) * ({left})"
        return f"LambdaLR(optimizer, lambda step: {factor})", ["LambdaLR"]

    def example(self, total, steps_per_epoch):
        return {"decay_steps": max(1, total // 5), "decay_shape": "1-sqrt", "min_factor": 0.0}


def _eta_min(optimizer, min_factor: float) -> float:
    """torch's floors are absolute LRs: the factor times the first group's base LR."""
    group = optimizer.param_groups[0]
    return min_factor * group.get("initial_lr", group["lr"])

