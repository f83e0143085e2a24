"""Equivariant layer normalisation of Equiformer (Liao & Smidt, ICLR 2023), the reference's
``EquivariantLayerNormV2``.

For each entry (mul, l) of the irreps, per node: the 0e channels are first centred (their mean
over the mul channels subtracted), then every entry is divided by sqrt(<x^2> + eps), <x^2> the mean
over its channels and components, multiplied by a learned weight per channel, and the 0e channels
get a learned bias. Norms of l > 0 features are rotation invariant, so this commutes with
rotations and reflections.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

SCALAR = o3.Irrep("0e")


class EquivariantLayerNorm(nn.Module):
    """Layer norm of irreps features, per (mul, l) entry.

    Parameters
    ----------
    irreps : the features' irreps
    eps : added to the mean square before the square root

    Parameters: one weight per irrep channel (``irreps.num_irreps``), one bias per 0e channel.
    ``forward(x [N, irreps.dim]) -> [N, irreps.dim]``.

    >>> norm = EquivariantLayerNorm("8x0e+4x1e")
    >>> norm.irreps_out, sum(p.numel() for p in norm.parameters())
    (8x0e+4x1e, 20)
    """

    def __init__(self, irreps: o3.Irreps | str, eps: float = 1e-5) -> None:
        super().__init__()
        self.irreps_in = self.irreps_out = o3.Irreps(irreps)
        self.eps = eps
        num_scalars = sum(mul for mul, ir in self.irreps_in if ir == SCALAR)
        self.weight = nn.Parameter(torch.ones(self.irreps_in.num_irreps))
        self.bias = nn.Parameter(torch.zeros(num_scalars))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fields = []
        start = weight_start = bias_start = 0
        for mul, ir in self.irreps_in:
            field = x.narrow(1, start, mul * ir.dim).reshape(-1, mul, ir.dim)
            start += mul * ir.dim
            if ir == SCALAR:
                field = field - field.mean(dim=1, keepdim=True)
            mean_square = field.pow(2).mean(dim=(1, 2), keepdim=True)  # [N, 1, 1]
            weight = self.weight[weight_start : weight_start + mul].reshape(1, mul, 1)
            weight_start += mul
            field = field * (mean_square + self.eps).rsqrt() * weight
            if ir == SCALAR:
                field = field + self.bias[bias_start : bias_start + mul].reshape(1, mul, 1)
                bias_start += mul
            fields.append(field.reshape(-1, mul * ir.dim))
        return torch.cat(fields, dim=1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.irreps_in}, eps={self.eps:g})"
