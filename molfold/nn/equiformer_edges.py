"""What every Equiformer layer reads from the edges of a graph, and the softmax over them.

An edge (j -> i) carries a message from the neighbour j (``src``, row 0 of ``edge_index``) to the
centre i (``dst``, row 1), where it is aggregated. :class:`Edges` holds, for E edges and N nodes,
the spherical harmonics of r_ij, its radial basis and, when the model is made smooth at r_max, an
envelope u(r_ij) that weights every contribution of the edge (:func:`edge_softmax`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Edges:
    """The edges of a (batched) graph as the layers see them.

    ``src`` [E] neighbour j, ``dst`` [E] centre i, ``sh`` [E, irreps_sh.dim] spherical harmonics
    of r_ij (component normalisation), ``basis`` [E, num_basis] radial basis of |r_ij|,
    ``envelope`` [E] smooth u(|r_ij|) that vanishes at r_max, or None, ``batch`` [N] graph
    index of each node.
    """

    src: torch.Tensor
    dst: torch.Tensor
    sh: torch.Tensor
    basis: torch.Tensor
    envelope: torch.Tensor | None
    batch: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return self.batch.shape[0]


def scatter_sum(values: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Sum of ``values`` [E, ...] over the edges of each node ``index`` [E] -> [num_nodes, ...]."""
    out = values.new_zeros((num_nodes, *values.shape[1:]))
    return out.index_add(0, index, values)


def edge_softmax(
    logits: torch.Tensor,
    dst: torch.Tensor,
    num_nodes: int,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax of ``logits`` [E, H] over the incoming edges of each centre ``dst`` [E].

    With ``weight`` [E] (w >= 0) it is alpha_ij = w_ij exp(a_ij) / sum_k w_ik exp(a_ik), so an
    edge whose weight goes to zero leaves the others' weights smoothly. The largest logit of each
    centre is subtracted first (the result does not depend on it). Centres whose weights are all
    zero get zeros.
    """
    index = dst.unsqueeze(-1).expand_as(logits)
    largest = logits.new_full((num_nodes, logits.shape[1]), -torch.inf)
    largest = largest.scatter_reduce(0, index, logits.detach(), reduce="amax", include_self=True)
    scores = torch.exp(logits - largest[dst])
    if weight is not None:
        scores = scores * weight.unsqueeze(-1)
    total = scatter_sum(scores, dst, num_nodes)[dst]
    return scores / torch.where(total > 0, total, torch.ones_like(total))
