"""Bias-free scalar MLPs with variance-preserving weight scaling.

As in the NequIP/Allegro code, weights are drawn from U(-sqrt(3), sqrt(3)) (unit variance) and the
layer multiplies by a constant ``gain / sqrt(fan_in)`` instead of drawing small weights. With Adam
this keeps the relative step size independent of the layer width. No layer has a bias, so a zero
input gives a zero output: Allegro relies on this for features that vanish smoothly at r_max.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}


class ScaledLinear(nn.Module):
    """x @ (alpha * W), W [in, out] with unit-variance uniform initialisation."""

    def __init__(self, in_features: int, out_features: int, alpha: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        nn.init.uniform_(self.weight, -math.sqrt(3.0), math.sqrt(3.0))
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.weight * self.alpha)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]} -> {self.weight.shape[1]}, alpha={self.alpha:.4g}"


class ScalarMLP(nn.Sequential):
    """MLP on scalar features: [*, input_dim] -> [*, output_dim].

    Parameters
    ----------
    input_dim, output_dim : feature sizes
    hidden : widths of the hidden layers; empty for a single linear map
    activation : name in :data:`ACTIVATIONS`, applied after every hidden layer

    Examples
    --------
    >>> ScalarMLP(16, 8, hidden=[32])(torch.zeros(5, 16)).shape
    torch.Size([5, 8])
    """

    def __init__(
        self, input_dim: int, output_dim: int, hidden: Sequence[int] = (), activation: str = "silu"
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}"
            )
        dims = [input_dim, *hidden, output_dim]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            # relu-like gain sqrt(2) on layers that follow a nonlinearity (forward normalisation)
            gain = 1.0 if index == 0 else math.sqrt(2.0)
            layers.append(ScaledLinear(fan_in, fan_out, gain / math.sqrt(fan_in)))
            if index < len(dims) - 2:
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)
        self.input_dim = input_dim
        self.output_dim = output_dim
