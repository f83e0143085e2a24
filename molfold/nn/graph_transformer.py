"""Dense graph-transformer blocks of GTMGC and ReBind: multi-relational self-attention.

Molecules are padded to a common size: features [B, N, d], a boolean atom mask [B, N] and one or
more [B, N, N] adjacency matrices (bonds; ReBind's attractive and repulsive pairs).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_geometric.nn.inits import glorot


class MultiRelationalAttention(nn.Module):
    """Self-attention whose scores are modulated by adjacency matrices (GTMGC Eq. 5, ReBind Eq. 8).

    With scores S = Q K^T per head, each adjacency A_t adds S * (w_t[head] * A_t), a learned
    scalar per head and relation, before the 1/sqrt(d_head) scaling and the softmax:

        attention = softmax((S + sum_t w_t S * A_t) / sqrt(d_head))

    Padding atoms are excluded as keys (the reference code sets their scores to 0 instead, which
    lets padding leak into real atoms and makes outputs depend on the batch's padding).
    """

    def __init__(self, d_model: int, num_heads: int, num_relations: int, dropout: float = 0.0):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.d_head = d_model // num_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.relation_weights = nn.Parameter(torch.empty(num_relations, num_heads))
        # as the reference (ReBIND models/modules/attention.py): PyG's glorot on each relation's
        # (1, heads, 1, 1) weight, whose fan is its last two (singleton) dims, so w_t is
        # uniform on +-sqrt(6 / (1 + 1)) = +-sqrt(3) whatever the number of heads
        for row in self.relation_weights.data:
            glorot(row.view(1, num_heads, 1, 1))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, adjacencies: list[torch.Tensor]
    ) -> torch.Tensor:
        """``x`` [B, N, d], ``mask`` [B, N] bool, ``adjacencies`` of [B, N, N] -> [B, N, d]."""
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.num_heads, self.d_head).transpose(1, 2)  # [B, H, N, dh]

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-1, -2)  # [B, H, N, N]
        relation = sum(
            w.view(1, -1, 1, 1) * a.unsqueeze(1).to(scores)
            for w, a in zip(self.relation_weights, adjacencies)
        )
        scores = (scores + scores * relation) / math.sqrt(self.d_head)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        return self.out((weights @ v).transpose(1, 2).reshape(b, n, -1))


class TransformerBlock(nn.Module):
    """Attention and a GELU feed-forward network, each followed by residual add and LayerNorm
    (post-LN, as ReBind trains it: ``pre_ln=False`` in its QM9 script)."""

    def __init__(
        self, d_model: int, num_heads: int, d_ffn: int, num_relations: int, dropout: float = 0.0
    ):
        super().__init__()
        self.attention = MultiRelationalAttention(d_model, num_heads, num_relations, dropout)
        self.norm_attention = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, d_ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ffn, d_model)
        )
        self.norm_feed_forward = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, adjacencies: list[torch.Tensor]
    ) -> torch.Tensor:
        x = self.norm_attention(x + self.dropout(self.attention(x, mask, adjacencies)))
        return self.norm_feed_forward(x + self.dropout(self.feed_forward(x)))
