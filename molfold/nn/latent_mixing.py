"""Residual mixing of the scalar latents across layers, as in the paper's code (allegro 0.3)."""

from __future__ import annotations

import torch
from torch import nn


class LatentMixing(nn.Module):
    """Residual update x <- sqrt(c_old) x + sqrt(c_new) x_new of the paper's code (allegro 0.3).

    The coefficients are a cumulative softmax of one logit per latent (the two-body latent and one
    per layer), so the latent keeps unit variance whatever the weights. The logits start at zero
    (every latent weighted equally) and are a buffer, as in allegro 0.3, unless ``learnable``.
    ``forward(old [E, F], new [E, F], layer) -> [E, F]`` mixes in the output of layer ``layer``.
    """

    def __init__(self, num_layers: int, learnable: bool = False) -> None:
        super().__init__()
        logits = torch.zeros(num_layers + 1)
        if learnable:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits)

    def forward(self, old: torch.Tensor, new: torch.Tensor, layer: int) -> torch.Tensor:
        weights = (self.logits - self.logits.max()).exp()
        cumulative = weights.cumsum(0) + 1e-12  # allegro 0.3's guard against 0 / 0
        c_old = cumulative[layer] / cumulative[layer + 1]
        c_new = weights[layer + 1] / cumulative[layer + 1]
        return c_old.sqrt() * old + c_new.sqrt() * new
