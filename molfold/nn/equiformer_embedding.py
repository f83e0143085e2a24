"""Node embeddings of Equiformer (Liao & Smidt, ICLR 2023, Sec. 3.4): atom (and tag) types, and
the edge-degree embedding, where features of l > 0 first appear.

* :class:`TypeEmbedding`: one-hot of a type index -> linear map to the node irreps (only its 0e
  part is non-zero); its weights start at N(0, 1), the reference's scaling of ``LinearRS`` by
  sqrt(num_types). Used for species and, on OC20, for the three tags.
* :class:`EdgeDegreeEmbedding`: a learned constant (a linear map of 1) times Y(r_ij) through a
  depth-wise tensor product with radial weights, a linear map, summed over the neighbours of each
  centre and divided by sqrt(avg_num_neighbors). With an envelope u(r_ij) on the edges each
  message is multiplied by it (molfold's option for smooth potentials).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from e3nn import o3
from torch import nn

from molfold.nn.equiformer_edges import Edges, scatter_sum
from molfold.nn.equiformer_linear import EquivariantLinear
from molfold.nn.equiformer_tp import DepthwiseTensorProduct, RadialProfile


class TypeEmbedding(nn.Module):
    """Linear map of the one-hot of type indices 0..num_types-1 to ``irreps_out``, with a bias.

    ``forward(types [N] int64) -> [N, irreps_out.dim]``.

    >>> embed = TypeEmbedding(5, "128x0e+64x1e+32x2e")
    >>> embed.irreps_out, sum(p.numel() for p in embed.parameters())
    (128x0e+64x1e+32x2e, 768)
    """

    def __init__(self, num_types: int, irreps_out: o3.Irreps | str) -> None:
        super().__init__()
        if num_types < 1:
            raise ValueError(f"num_types must be positive, got {num_types}")
        self.num_types = num_types
        self.irreps_out = o3.Irreps(irreps_out)
        self.linear = EquivariantLinear(f"{num_types}x0e", self.irreps_out)
        with torch.no_grad():
            for weight in self.linear.weights:
                weight.mul_(math.sqrt(num_types))

    def forward(self, types: torch.Tensor) -> torch.Tensor:
        dtype = self.linear.weights[0].dtype
        return self.linear(nn.functional.one_hot(types, self.num_types).to(dtype))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.num_types} types -> {self.irreps_out})"


class EdgeDegreeEmbedding(nn.Module):
    """Sum over neighbours j of Linear(TP(c, Y(r_ij), R(basis_ij))) / sqrt(avg_num_neighbors), c a
    learned constant in ``irreps_node``.

    Parameters
    ----------
    irreps_node : node irreps (of c, and of the output)
    irreps_sh : spherical-harmonics irreps of the edges
    radial_widths : input and hidden widths of the radial MLP, e.g. [num_basis, 64, 64]
    avg_num_neighbors : mean number of neighbours within r_max in the training data

    ``forward(edges) -> [N, irreps_node.dim]``.
    """

    def __init__(
        self,
        irreps_node: o3.Irreps | str,
        irreps_sh: o3.Irreps | str,
        radial_widths: Sequence[int],
        avg_num_neighbors: float,
    ) -> None:
        super().__init__()
        if avg_num_neighbors <= 0:
            raise ValueError(f"avg_num_neighbors must be positive, got {avg_num_neighbors}")
        self.irreps_out = o3.Irreps(irreps_node)
        self.constant = EquivariantLinear("1x0e", self.irreps_out)
        self.tp = DepthwiseTensorProduct(self.irreps_out, irreps_sh, self.irreps_out)
        self.radial = RadialProfile([*radial_widths, self.tp.weight_numel])
        self.proj = EquivariantLinear(self.tp.irreps_out, self.irreps_out)
        self.avg_num_neighbors = float(avg_num_neighbors)

    def forward(self, edges: Edges) -> torch.Tensor:
        constant = self.constant(edges.basis.new_ones(1, 1)).expand(edges.src.shape[0], -1)
        messages = self.proj(self.tp(constant, edges.sh, self.radial(edges.basis)))
        if edges.envelope is not None:
            messages = messages * edges.envelope.unsqueeze(-1)
        return scatter_sum(messages, edges.dst, edges.num_nodes) / math.sqrt(self.avg_num_neighbors)

    def extra_repr(self) -> str:
        return f"{self.irreps_out}, avg_num_neighbors={self.avg_num_neighbors:g}"
