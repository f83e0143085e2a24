"""Exponential moving average of a module's weights.

The average is what gets validated, tested and exported; the raw weights keep training. nequip
and Allegro train with EMA decay 0.99 (allegro ``configs/example.yaml``).
"""

from __future__ import annotations

import torch
from torch import nn


class ExponentialMovingAverage:
    """Shadow copy of every floating-point parameter and buffer of ``module``.

    ``update()`` after each optimizer step: shadow <- decay * shadow + (1 - decay) * weights, with
    the warm-up decay min(decay, (1 + n) / (10 + n)) over the first updates.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = module
        self.decay = decay
        self.num_updates = 0
        self.swapped = False  # True while the module holds the averaged weights
        self.shadow = {k: v.detach().clone() for k, v in self._weights().items()}

    def _weights(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.module.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for name, value in self._weights().items():
            shadow = self.shadow[name]
            if shadow.device != value.device:
                shadow = self.shadow[name] = shadow.to(value.device)
            shadow.lerp_(value.detach(), 1.0 - decay)

    def averaged_state_dict(self) -> dict[str, torch.Tensor]:
        """The module's state dict with the averaged weights, whether swapped in or not."""
        state = self.module.state_dict()
        if self.swapped:
            return {k: v.detach().clone() for k, v in state.items()}
        return {k: self.shadow.get(k, v).detach().clone() for k, v in state.items()}

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the module's weights with the averaged ones (call twice to undo)."""
        for name, value in self._weights().items():
            current = value.detach().clone()
            value.copy_(self.shadow[name])
            self.shadow[name].copy_(current)
        self.swapped = not self.swapped

    def state_dict(self) -> dict:
        averages = self.averaged_state_dict()
        shadow = {k: averages[k] for k in self.shadow}
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.num_updates = state["num_updates"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
        self.swapped = False
