"""Drop path (stochastic depth) per graph, as Equiformer (Liao & Smidt, ICLR 2023) applies it to
the residual branches of its blocks.

While training, each graph of a batch keeps a residual branch with probability 1 - p, scaled by
1 / (1 - p), or drops it for all of its atoms (timm's ``drop_path`` with one draw per graph, the
reference's ``GraphDropPath``). In eval mode, or with p = 0, it is the identity.
"""

from __future__ import annotations

import torch
from torch import nn


class GraphDropPath(nn.Module):
    """Drop a residual branch for whole graphs with probability ``drop_prob`` (training only).

    ``forward(x [N, ...], batch [N] graph index of each atom) -> [N, ...]``.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
        mask = torch.floor(keep + torch.rand(num_graphs, dtype=x.dtype, device=x.device))
        return x * (mask / keep)[batch].reshape(-1, *([1] * (x.dim() - 1)))

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:g}"
