"""Allegro's two-body scalar embedding of an edge: radial basis times species embeddings, an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from molfold.nn.mlp import ScalarMLP
from molfold.nn.radial import BesselBasis, PolynomialCutoff


class TwoBodyEmbedding(nn.Module):
    """Scalar features x_ij^0 of each edge from its length and the species of its two atoms.

    ``forward(lengths [E, 1] Angstrom, centre_types [E], neighbour_types [E]) -> [E, out_dim]``.
    """

    def __init__(
        self,
        num_types: int,
        r_max: float,
        num_bessels: int,
        polynomial_p: int,
        embed_dim: int,
        out_dim: int,
        mlp_hidden: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"radial_chemical_embed_dim must be even, got {embed_dim}")
        self.r_max = r_max
        self.bessel = BesselBasis(num_bessels)
        self.cutoff = PolynomialCutoff(polynomial_p)
        self.radial_linear = ScalarMLP(num_bessels, embed_dim)
        self.centre_embedding = nn.Embedding(num_types, embed_dim // 2)
        self.neighbour_embedding = nn.Embedding(num_types, embed_dim // 2)
        self.mlp = ScalarMLP(embed_dim, out_dim, mlp_hidden, activation)

    def forward(
        self, lengths: torch.Tensor, centre_types: torch.Tensor, neighbour_types: torch.Tensor
    ) -> torch.Tensor:
        x = lengths / self.r_max
        radial = self.radial_linear(self.bessel(x) * self.cutoff(x))
        species = torch.cat(
            [self.centre_embedding(centre_types), self.neighbour_embedding(neighbour_types)], -1
        )
        return self.mlp(species * radial)
