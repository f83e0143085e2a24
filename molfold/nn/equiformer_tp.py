"""The depth-wise tensor product of Equiformer (Liao & Smidt, ICLR 2023) and the radial MLP that
gives its weights per edge.

:class:`DepthwiseTensorProduct` multiplies node features x (irreps_in) by the spherical harmonics
Y(r_ij) channel by channel ('uvu': channel u of x times the single SH channel goes to channel u of
the output). Every path (input irrep, SH irrep, output irrep l3) is kept, each in its own output
slot, whenever l3 is in ``irreps_filter`` or is 0e; the output irreps are these slots sorted by l,
even parity first (not simplified, so two slots of one irrep stay two paths). Each path has one
weight per channel: ``weight_numel`` = sum over paths of the input multiplicity. At L = 2 with
node and SH irreps 0e+1e+2e that is 15 paths (960 weights for 128x0e+64x1e+32x2e), at L = 3 34,
for OC20's 256x0e+128x1e and SH 0e+1e 5.

Normalisation is e3nn's 'component' irrep normalisation with no path normalisation (the reference's
``path_normalization='none'``). The weights come from :class:`RadialProfile` per edge, or are
learned and shared by all edges (``internal_weights``, the second product of the non-linear
messages).

:class:`RadialProfile` is the reference's MLP Linear-LN-SiLU-...-Linear (no bias) + offset, with
a plain SiLU (not normalised, as in the reference's ``radial_func.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from e3nn import o3
from torch import nn

from molfold.nn.equiformer_linear import sort_even_first

SCALAR = o3.Irrep("0e")


class DepthwiseTensorProduct(nn.Module):
    """x (irreps_in) times Y (irreps_sh), channel-wise, every path into ``irreps_filter`` + 0e.

    Parameters
    ----------
    irreps_in : node (or edge message) irreps
    irreps_sh : spherical-harmonics irreps, one channel each (e.g. ``1x0e+1x1e+1x2e``)
    irreps_filter : irreps the output may hold (0e is always kept)
    internal_weights : learned weights shared by all edges, instead of weights per edge

    ``forward(x [E, irreps_in.dim], sh [E, irreps_sh.dim], weight [E, weight_numel] or None) ->
    [E, irreps_out.dim]``.

    >>> tp = DepthwiseTensorProduct("128x0e+64x1e+32x2e", "1x0e+1x1e+1x2e", "128x0e+64x1e+32x2e")
    >>> tp.num_paths, tp.weight_numel
    (15, 960)
    """

    def __init__(
        self,
        irreps_in: o3.Irreps | str,
        irreps_sh: o3.Irreps | str,
        irreps_filter: o3.Irreps | str,
        internal_weights: bool = False,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_sh = o3.Irreps(irreps_sh)
        self.irreps_filter = o3.Irreps(irreps_filter)
        if any(mul != 1 for mul, _ in self.irreps_sh):
            raise ValueError(f"spherical harmonics must have one channel each, got {irreps_sh}")
        allowed = {ir for _, ir in self.irreps_filter} | {SCALAR}
        slots, instructions = [], []
        for i, (mul, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_sh) in enumerate(self.irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in allowed:
                        instructions.append((i, j, len(slots), "uvu", True))
                        slots.append((mul, ir_out))
        if not instructions:
            raise ValueError(
                f"no path from {self.irreps_in} x {self.irreps_sh} into {self.irreps_filter}"
            )
        irreps_out, position = sort_even_first(o3.Irreps(slots))
        self.irreps_out = irreps_out
        self.tp = o3.TensorProduct(
            self.irreps_in,
            self.irreps_sh,
            irreps_out,
            [(i, j, position[k], mode, train) for i, j, k, mode, train in instructions],
            irrep_normalization="component",
            path_normalization="none",
            internal_weights=internal_weights,
            shared_weights=internal_weights,
        )
        self.num_paths = len(instructions)
        self.weight_numel = self.tp.weight_numel

    def forward(
        self, x: torch.Tensor, sh: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.tp(x, sh, weight)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.irreps_in} x {self.irreps_sh} -> {self.irreps_out}, "
            f"{self.num_paths} paths, weight_numel={self.weight_numel})"
        )


class RadialProfile(nn.Module):
    """MLP of the radial basis: (Linear, LayerNorm, SiLU) per hidden width, then a Linear
    without bias plus a learned offset (uniform in +-1/sqrt(last hidden width) at the start).

    Linear biases start at zero, weights as torch's default. ``forward([E, widths[0]]) -> [E,
    widths[-1]]``.

    >>> profile = RadialProfile([128, 64, 64, 960])
    >>> sum(p.numel() for p in profile.parameters())
    75072
    """

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"RadialProfile needs input and output widths, got {list(widths)}")
        layers: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-2], widths[1:-1]):
            linear = nn.Linear(width_in, width_out)
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.LayerNorm(width_out), nn.SiLU()]
        layers.append(nn.Linear(widths[-2], widths[-1], bias=False))
        self.net = nn.Sequential(*layers)
        bound = 1.0 / math.sqrt(widths[-2])
        self.offset = nn.Parameter(torch.empty(widths[-1]).uniform_(-bound, bound))

    def forward(self, basis: torch.Tensor) -> torch.Tensor:
        return self.net(basis) + self.offset
