"""Environment embedding of Allegro: the weighted spherical harmonics of a centre's edges, summed.

Strided layout as in :mod:`molfold.nn.strided`: ``mul`` channels of each irrep per edge, channels
innermost, [E, irreps.dim, mul].
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from molfold.nn.centre_sums import gather_centres, sum_over_centres
from molfold.nn.strided import WeightedChannels


class EnvironmentEmbedding(nn.Module):
    """Environment of each edge's centre i: sum over the edges (i, k) of w_ik Y(r_ik), per edge.

    The sum is divided by sqrt(avg_num_neighbors), or, with ``exclude_self`` (allegro 0.3), the
    edge (i, j) itself is left out and the sum of the other edges of i is divided by
    sqrt(avg_num_neighbors - 1), the mean number of terms left.

    ``forward(sh [E, sh.dim], weights [E, mul * len(sh_irreps)], centre [E], num_atoms) ->
    [E, sh.dim, mul]``.
    """

    def __init__(
        self, sh_irreps: o3.Irreps, multiplicity: int, avg_num_neighbors: float, exclude_self: bool
    ) -> None:
        super().__init__()
        mean_terms = avg_num_neighbors - (1.0 if exclude_self else 0.0)
        if mean_terms <= 0:
            left_out = " when each edge is left out of its own environment" if exclude_self else ""
            raise ValueError(
                f"avg_num_neighbors must exceed {int(exclude_self)}{left_out}, "
                f"got {avg_num_neighbors}"
            )
        self.weighter = WeightedChannels(sh_irreps, multiplicity)
        self.exclude_self = exclude_self
        self.sum_factor = 1.0 / math.sqrt(mean_terms)

    def forward(
        self, sh: torch.Tensor, weights: torch.Tensor, centre: torch.Tensor, num_atoms: int
    ) -> torch.Tensor:
        weighted = self.weighter(sh, weights) * self.sum_factor
        per_atom = sum_over_centres(weighted, centre, num_atoms)
        environment = gather_centres(per_atom, centre)
        return environment - weighted if self.exclude_self else environment
