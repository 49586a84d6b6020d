"""The optimizers lrfind trains with itself, described by value: ``OptimizerConfig``.

The trial engine and the range test apply torch.optim's update rules (``_update``) to tensors of
their own. They need the rule's name and its hyper-parameters, not a ``torch.optim`` object:
creating one imports ``torch._dynamo`` (1-2 s of start-up; torch wraps ``add_param_group`` to keep
the compiler out of it). ``torch_optimizer`` builds the equivalent torch optimizer where one is
wanted: in users' code, on the range test's eager path, and in the tests that hold both equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from lrfind._device import exact_dtype
from lrfind._errors import FieldError
from lrfind.engine.update import adam_, sgd_

RULES = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD (momentum, Nesterov, weight decay), Adam or AdamW, with torch's semantics and defaults
    (``momentum`` is SGD's and ignored by the others)."""

    name: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adamw', got {self.name!r}")
        if not 0 <= self.momentum < 1:
            raise FieldError("momentum", f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise FieldError("nesterov", "nesterov needs optimizer 'sgd' with momentum > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise FieldError("weight_decay", f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)):
            raise FieldError("betas", f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not self.eps > 0:
            raise FieldError("eps", f"eps must be > 0, got {self.eps!r}")

    @classmethod
    def of(cls, name: str, *, momentum: float = 0.9, weight_decay: float | None = None) -> "OptimizerConfig":
        """The optimizer the command-line options describe: ``momentum`` counts for SGD only, and
        ``weight_decay=None`` is torch's default for the rule (0; AdamW 0.01)."""
        decay = (0.01 if name == "adamw" else 0.0) if weight_decay is None else weight_decay
        return cls(name, momentum=momentum if name == "sgd" else 0.0, weight_decay=decay)

    def param_groups(self, params: Iterable[torch.Tensor], lr: float) -> list[dict[str, Any]]:
        """One parameter group in ``torch.optim``'s layout: the parameters, ``lr`` and this rule's
        hyper-parameters under torch's names."""
        group: dict[str, Any] = {"params": list(params), "lr": lr, "weight_decay": self.weight_decay}
        if self.name == "sgd":
            group.update(momentum=self.momentum, nesterov=self.nesterov)
        else:
            group.update(betas=self.betas, eps=self.eps)
        return [group]

    def torch_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        """The equivalent ``torch.optim`` optimizer, for users' code and for checking lrfind's own."""
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=self.momentum, nesterov=self.nesterov,
                                   weight_decay=self.weight_decay)
        cls = torch.optim.Adam if self.name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)

    def initial_state(self, flat: torch.Tensor, *, cycled: bool) -> dict[str, torch.Tensor]:
        """The update's buffers for (K, P) weights ``flat``, made up front so that a step never
        allocates state (``cycled``: a trial's schedule cycles the momentum, so SGD keeps a momentum
        buffer even at momentum 0). A zero momentum buffer gives torch's first step exactly
        (0 * momentum + g = g)."""
        names = ((["momentum"] if self.momentum or cycled else []) if self.name == "sgd"
                 else ["exp_avg", "exp_avg_sq"])
        return {name: torch.zeros_like(flat) for name in names}

    def step_rows(self, flat: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor], lr: torch.Tensor,
                  momentum: torch.Tensor | None, step: torch.Tensor) -> None:
        """torch.optim's update of the (K, P) weights ``flat`` in place, one LR per trial (row), (K,),
        and one momentum (Adam's beta1) per trial, (K, 1), where some trial cycles it; ``step``
        already counts this step (torch's ``step`` state)."""
        lr = lr.unsqueeze(1)
        if self.name == "sgd":
            # torch multiplies float32 buffers by the momentum rounded to float32
            sgd_([flat], [grad], [state["momentum"]] if "momentum" in state else [], lr,
                 momentum=self.momentum if momentum is None else momentum.float(),
                 nesterov=self.nesterov, weight_decay=self.weight_decay)
        else:
            betas = self.betas if momentum is None else (momentum, self.betas[1])
            adam_([flat], [grad], [state["exp_avg"]], [state["exp_avg_sq"]], lr, step.to(exact_dtype(flat.device)),
                  betas=betas, eps=self.eps, weight_decay=self.weight_decay, decoupled=self.name == "adamw")



def own_rule(optimizer: torch.optim.Optimizer) -> tuple[str | None, str]:
    """(rule name, "") when lrfind's update rules can take over ``optimizer``'s steps exactly, else
    (None, why not): another class, state it already holds, or an option they do not implement."""
    name = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adamw"}.get(type(optimizer))
    if name is None:
        return None, f"{type(optimizer).__name__} is not SGD, Adam or AdamW"
    if optimizer.state:
        return None, "the optimizer already holds state"
    for g in optimizer.param_groups:
        if g.get("maximize") or g.get("amsgrad") or g.get("dampening", 0) or g.get("differentiable"):
            return None, "maximize, amsgrad, dampening or differentiable is set"
    return name, ""
