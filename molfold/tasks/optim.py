"""The optimizer and learning-rate schedule of every task, from the ``optim`` config section.

``optim.name`` is ``adam`` (the Allegro/nequip tutorials) or ``adamw`` (ReBind); ``optim.scheduler``
is one of the schedules below, each a config file in ``configs/optim/scheduler/`` with its own
keys (``molfold train optim.scheduler=cosine`` swaps the whole section, so no key of another
schedule is left behind):

===================  =================================================================  ========
``scheduler.name``   learning rate                                                      steps at
===================  =================================================================  ========
``plateau``          times ``factor`` after ``patience`` epochs without a better        epochs
                     ``val/loss``, down to ``min_lr``
``cosine``           linear rise from ``warmup_lr`` over ``warmup_fraction`` of the      steps
                     steps (none by default), then ``min_lr + (lr - min_lr)
                     (1 + cos(pi t / T)) / 2`` over the T steps left (Equiformer's
                     timm schedule, stepped per optimizer step rather than per epoch)
``linear_warmup``    linear rise over ``warmup_fraction`` of all steps, then linear     steps
                     decay to 0 (ReBind's ``get_linear_schedule_with_warmup``)
``none``             constant                                                            --
===================  =================================================================  ========

The step-wise schedules are closed-form functions of the step number (``LambdaLR``), so a run
resumed from a checkpoint continues with exactly the learning rates of an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from molfold.config import parse, parse_choice


@dataclass(frozen=True)
class Plateau:
    name: str = "plateau"
    factor: float = 0.5
    patience: int = 10
    min_lr: float = 1e-6

    def __post_init__(self) -> None:
        if not 0 < self.factor < 1 or self.patience < 0 or self.min_lr < 0:
            raise ValueError(f"need 0 < factor < 1, patience >= 0, min_lr >= 0: {self}")


@dataclass(frozen=True)
class Cosine:
    name: str = "cosine"
    min_lr: float = 1e-6
    warmup_fraction: float = 0.0
    warmup_lr: float = 1e-6

    def __post_init__(self) -> None:
        if self.min_lr < 0 or self.warmup_lr < 0 or not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"need min_lr, warmup_lr >= 0 and 0 <= warmup_fraction < 1: {self}")


@dataclass(frozen=True)
class LinearWarmup:
    name: str = "linear_warmup"
    warmup_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_fraction <= 1:
            raise ValueError(f"warmup_fraction must be in [0, 1], got {self.warmup_fraction}")


@dataclass(frozen=True)
class Constant:
    name: str = "none"


SCHEDULERS = {"plateau": Plateau, "cosine": Cosine, "linear_warmup": LinearWarmup, "none": Constant}
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@dataclass(frozen=True)
class OptimConfig:
    """The ``optim`` section: optimizer ``name``, ``lr``, ``weight_decay``, ``betas`` and the
    ``scheduler`` section."""

    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)
    scheduler: Any = field(default_factory=Plateau)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"name must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(
                f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}"
            )
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> OptimConfig:
        values = dict(values or {})
        scheduler = parse_choice(
            SCHEDULERS, values.pop("scheduler", {"name": "plateau"}), "optim.scheduler"
        )
        return parse(cls, {**values, "scheduler": scheduler}, "optim")


def configure_optimizer(
    parameters: Iterable[torch.nn.Parameter], config: OptimConfig, total_steps: Callable[[], int]
) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer for ``config``; ``total_steps()`` gives the
    number of optimizer steps of the whole run (asked only by the step-wise schedules)."""
    optimizer = OPTIMIZERS[config.name](
        parameters, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay
    )
    schedule = config.scheduler
    if isinstance(schedule, Constant):
        return {"optimizer": optimizer}
    if isinstance(schedule, Plateau):
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=schedule.factor, patience=schedule.patience, min_lr=schedule.min_lr
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"},
        }
    total = max(1, int(total_steps()))
    if isinstance(schedule, Cosine):
        floor, start = schedule.min_lr / config.lr, schedule.warmup_lr / config.lr
        warmup = int(schedule.warmup_fraction * total)

        def factor(step: int) -> float:
            if step < warmup:
                return start + (1 - start) * step / warmup
            t, span = min(step, total) - warmup, max(1, total - warmup)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t / span))

    else:
        warmup = max(1, int(schedule.warmup_fraction * total))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
