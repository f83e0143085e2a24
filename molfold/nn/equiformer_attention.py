"""Equivariant graph attention of Equiformer (Liao & Smidt, ICLR 2023, Sec. 3.3 and Fig. 2).

For an edge j -> i (j the neighbour, i the centre) and node features x [N, irreps_in]:

1. m_ij = Linear_src(x_j) + Linear_dst(x_i) (the source map has a bias, the other none), in
   ``irreps_pre_attention``.
2. A depth-wise tensor product with Y(r_ij), its weights per edge from the radial MLP of the
   basis (:mod:`molfold.nn.equiformer_tp`).
3. Attention logits, per head h, from the scalars only: a_ij^h = w_h . SmoothLeakyReLU(f_ij^h)
   (GATv2-style MLP attention), f the 0e channels of head h; softmax over the incoming edges of
   each centre i; dropout on the weights while training.
4. Values. ``nonlinear_messages`` (the published default): Gate(Linear(TP output)), then a second
   depth-wise tensor product with Y(r_ij) whose weights are learned and shared by all edges, then
   a linear map to the heads; logits from a linear map of the first product's scalars. Otherwise
   one linear map of the first product gives logits and values together.
5. out_i = Linear(concat_h sum_j alpha_ij^h v_ij^h).

With an envelope u(r) on the edges (:class:`~molfold.nn.equiformer_edges.Edges`; molfold's option
for smooth potentials, not in the reference), the softmax is weighted,
alpha_ij = u_ij exp(a_ij) / sum_k u_ik exp(a_ik), and each message is also multiplied by u_ij, so
that it vanishes at r_max even for a centre with a single neighbour (whose weighted softmax weight
stays 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from e3nn import o3
from torch import nn

from molfold.nn.equiformer_edges import Edges, edge_softmax, scatter_sum
from molfold.nn.equiformer_linear import (
    SCALAR,
    EquivariantLinear,
    Gate,
    normalized_activation,
    sort_even_first,
)
from molfold.nn.equiformer_tp import DepthwiseTensorProduct, RadialProfile


class HeadSplit(nn.Module):
    """Reshape features of all heads [.., num_heads * irreps_head] (each irrep's channels of all
    heads together, head by head) to [.., num_heads, irreps_head.dim] and back (``merge``)."""

    def __init__(self, irreps_head: o3.Irreps, num_heads: int) -> None:
        super().__init__()
        self.irreps_head = irreps_head
        self.num_heads = num_heads
        self._blocks = [mul * ir.dim for mul, ir in irreps_head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.num_heads
        parts = torch.split(x, [h * size for size in self._blocks], dim=-1)
        return torch.cat(
            [part.reshape(*x.shape[:-1], h, size) for part, size in zip(parts, self._blocks)],
            dim=-1,
        )

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        h = self.num_heads
        parts = torch.split(x, self._blocks, dim=-1)
        return torch.cat(
            [part.reshape(*x.shape[:-2], h * size) for part, size in zip(parts, self._blocks)],
            dim=-1,
        )

    def extra_repr(self) -> str:
        return f"irreps_head={self.irreps_head}, num_heads={self.num_heads}"


class GraphAttention(nn.Module):
    """Equivariant graph attention with MLP attention weights (module docstring).

    Parameters
    ----------
    irreps_in, irreps_out : node irreps in and out
    irreps_sh : spherical-harmonics irreps of the edges
    irreps_head : irreps of one head, sorted (l, even first) and simplified, with 0e channels
    num_heads : number of heads
    radial_widths : input and hidden widths of the radial MLPs, e.g. [num_basis, 64, 64]
    irreps_pre_attention : irreps of m_ij (None: ``irreps_in``)
    nonlinear_messages : gated values and a second tensor product (published default)
    attention_dropout : dropout probability of the attention weights

    ``forward(x [N, irreps_in.dim], edges) -> [N, irreps_out.dim]``.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps | str,
        irreps_sh: o3.Irreps | str,
        irreps_out: o3.Irreps | str,
        irreps_head: o3.Irreps | str,
        num_heads: int,
        radial_widths: Sequence[int],
        irreps_pre_attention: o3.Irreps | str | None = None,
        nonlinear_messages: bool = True,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.irreps_sh = o3.Irreps(irreps_sh)
        irreps_head = o3.Irreps(irreps_head)
        pre = self.irreps_in if irreps_pre_attention is None else o3.Irreps(irreps_pre_attention)
        self.irreps_pre_attention = pre
        if num_heads < 1:
            raise ValueError(f"num_heads must be positive, got {num_heads}")
        if sort_even_first(irreps_head)[0].simplify() != irreps_head:
            raise ValueError(f"irreps_head must be sorted and simplified, got {irreps_head}")
        mul_alpha = sum(mul for mul, ir in irreps_head if ir == SCALAR)
        if mul_alpha == 0:
            raise ValueError(f"irreps_head needs 0e channels for the attention, got {irreps_head}")
        self.num_heads = num_heads
        self.nonlinear_messages = nonlinear_messages
        # all heads: each irrep's channels of every head together, e.g. 128x0e+64x1e+32x2e
        heads = sort_even_first(irreps_head * num_heads)[0].simplify()
        self.irreps_heads = heads
        alpha = o3.Irreps(f"{mul_alpha * num_heads}x0e")
        self.mul_alpha = mul_alpha

        self.merge_src = EquivariantLinear(self.irreps_in, pre, bias=True)
        self.merge_dst = EquivariantLinear(self.irreps_in, pre, bias=False)
        filter_ = pre if nonlinear_messages else (alpha + heads).simplify()
        self.tp = DepthwiseTensorProduct(pre, self.irreps_sh, filter_)
        self.radial = RadialProfile([*radial_widths, self.tp.weight_numel])
        if nonlinear_messages:
            self.alpha_linear = EquivariantLinear(self.tp.irreps_out, alpha)
            self.value_gate = Gate(pre)
            self.value_linear = EquivariantLinear(self.tp.irreps_out, self.value_gate.irreps_in)
            self.value_tp = DepthwiseTensorProduct(
                self.value_gate.irreps_out, self.irreps_sh, heads, internal_weights=True
            )
            self.value_out = EquivariantLinear(self.value_tp.irreps_out, heads)
            self.alpha_heads = HeadSplit(o3.Irreps(f"{mul_alpha}x0e"), num_heads)
        else:
            self.linear = EquivariantLinear(self.tp.irreps_out, (alpha + heads).simplify())
            self.alpha_heads = HeadSplit(
                (o3.Irreps(f"{mul_alpha}x0e") + irreps_head).simplify(), num_heads
            )
        self.value_heads = HeadSplit(irreps_head, num_heads)
        self.alpha_activation = normalized_activation("smooth_leaky_relu")
        bound = math.sqrt(6.0 / (num_heads + mul_alpha))  # Glorot, as GATv2 and the reference
        self.alpha_dot = nn.Parameter(torch.empty(num_heads, mul_alpha).uniform_(-bound, bound))
        self.dropout = nn.Dropout(attention_dropout) if attention_dropout > 0 else None
        self.proj = EquivariantLinear(heads, self.irreps_out)

    def _logits_and_values(
        self, x: torch.Tensor, edges: Edges
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention logits [E, H] and values [E, H, irreps_head.dim] of every edge."""
        message = self.merge_src(x)[edges.src] + self.merge_dst(x)[edges.dst]
        product = self.tp(message, edges.sh, self.radial(edges.basis))
        if self.nonlinear_messages:
            features = self.alpha_heads(self.alpha_linear(product))
            value = self.value_gate(self.value_linear(product))
            value = self.value_heads(self.value_out(self.value_tp(value, edges.sh)))
        else:
            both = self.alpha_heads(self.linear(product))
            features, value = both[..., : self.mul_alpha], both[..., self.mul_alpha :]
        logits = (self.alpha_activation(features) * self.alpha_dot).sum(-1)
        return logits, value

    def _weights(self, logits: torch.Tensor, edges: Edges) -> torch.Tensor:
        alpha = edge_softmax(logits, edges.dst, edges.num_nodes, edges.envelope)
        if edges.envelope is not None:
            alpha = alpha * edges.envelope.unsqueeze(-1)
        return alpha

    def attention_weights(self, x: torch.Tensor, edges: Edges) -> torch.Tensor:
        """The weights [E, H] that multiply each edge's values (before dropout)."""
        return self._weights(self._logits_and_values(x, edges)[0], edges)

    def forward(self, x: torch.Tensor, edges: Edges) -> torch.Tensor:
        logits, value = self._logits_and_values(x, edges)
        alpha = self._weights(logits, edges)
        if self.dropout is not None:
            alpha = self.dropout(alpha)
        out = scatter_sum(value * alpha.unsqueeze(-1), edges.dst, edges.num_nodes)
        return self.proj(self.value_heads.merge(out))

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, heads={self.num_heads} x "
            f"{self.value_heads.irreps_head}, nonlinear_messages={self.nonlinear_messages}"
        )
