"""The transformer block of Equiformer (Liao & Smidt, ICLR 2023, Fig. 1): pre-norm, equivariant
graph attention and an equivariant feed-forward network, each on a residual branch with drop path.

    x = x + DropPath(Attention(LN(x)))
    x = Shortcut(x) + DropPath(FFN(LN(x)))

The shortcut is the identity, or a linear map when the block changes irreps (the reference's last
block, to ``512x0e``). The FFN is Linear -> Gate -> Linear through ``irreps_hidden`` (three times
the node irreps in the paper); all linear maps have biases on their 0e outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from e3nn import o3
from torch import nn

from molfold.nn.equiformer_attention import GraphAttention
from molfold.nn.equiformer_drop import GraphDropPath
from molfold.nn.equiformer_edges import Edges
from molfold.nn.equiformer_linear import EquivariantLinear, Gate
from molfold.nn.equiformer_norm import EquivariantLayerNorm


class FeedForward(nn.Module):
    """Linear -> gate (SiLU scalars, sigmoid gates) -> Linear, through ``irreps_hidden``.

    ``forward(x [N, irreps_in.dim]) -> [N, irreps_out.dim]``.

    >>> ffn = FeedForward("8x0e+4x1e", "24x0e+12x1e", "8x0e+4x1e")
    >>> ffn.linear_1.irreps_out
    36x0e+12x1e
    """

    def __init__(
        self,
        irreps_in: o3.Irreps | str,
        irreps_hidden: o3.Irreps | str,
        irreps_out: o3.Irreps | str,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.gate = Gate(irreps_hidden)
        self.linear_1 = EquivariantLinear(self.irreps_in, self.gate.irreps_in)
        self.linear_2 = EquivariantLinear(self.gate.irreps_out, self.irreps_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.gate(self.linear_1(x)))


class TransformerBlock(nn.Module):
    """One pre-norm Equiformer block from ``irreps_in`` to ``irreps_out`` (module docstring).

    Parameters
    ----------
    irreps_in, irreps_out : node irreps in and out
    irreps_sh : spherical-harmonics irreps of the edges
    irreps_head, num_heads, irreps_pre_attention, nonlinear_messages, attention_dropout,
    radial_widths : of the attention (:class:`~molfold.nn.equiformer_attention.GraphAttention`)
    irreps_ffn : hidden irreps of the feed-forward network
    drop_path : drop-path probability of both residual branches

    ``forward(x [N, irreps_in.dim], edges) -> [N, irreps_out.dim]``.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps | str,
        irreps_sh: o3.Irreps | str,
        irreps_out: o3.Irreps | str,
        irreps_head: o3.Irreps | str,
        num_heads: int,
        irreps_ffn: o3.Irreps | str,
        radial_widths: Sequence[int],
        irreps_pre_attention: o3.Irreps | str | None = None,
        nonlinear_messages: bool = True,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.norm_1 = EquivariantLayerNorm(self.irreps_in)
        self.attention = GraphAttention(
            self.irreps_in,
            irreps_sh,
            self.irreps_in,
            irreps_head,
            num_heads,
            radial_widths,
            irreps_pre_attention,
            nonlinear_messages,
            attention_dropout,
        )
        self.drop_path = GraphDropPath(drop_path)
        self.norm_2 = EquivariantLayerNorm(self.irreps_in)
        self.ffn = FeedForward(self.irreps_in, irreps_ffn, self.irreps_out)
        self.shortcut = (
            EquivariantLinear(self.irreps_in, self.irreps_out)
            if self.irreps_in != self.irreps_out
            else None
        )

    def forward(self, x: torch.Tensor, edges: Edges) -> torch.Tensor:
        x = x + self.drop_path(self.attention(self.norm_1(x), edges), edges.batch)
        update = self.ffn(self.norm_2(x))
        if self.shortcut is not None:
            x = self.shortcut(x)
        return x + self.drop_path(update, edges.batch)
