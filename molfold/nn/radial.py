"""Radial bases and smooth cutoff envelopes for edge lengths.

Both take the normalised length ``x = r / r_max`` (shape [E, 1]) so that one module serves any
cutoff radius.
"""

from __future__ import annotations

import torch
from torch import nn


class PolynomialCutoff(nn.Module):
    """Polynomial envelope u(x) of DimeNet (Gasteiger et al., ICLR 2020, eq. 8).

    u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2) for x < 1, else 0.
    u and its first two derivatives vanish at x = 1, so energies and forces are smooth at r_max.
    """

    def __init__(self, p: int = 6) -> None:
        super().__init__()
        if p < 2:
            raise ValueError(f"polynomial cutoff needs p >= 2, got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p
        envelope = (
            1.0
            - 0.5 * (p + 1.0) * (p + 2.0) * x.pow(p)
            + p * (p + 2.0) * x.pow(p + 1.0)
            - 0.5 * p * (p + 1.0) * x.pow(p + 2.0)
        )
        return envelope * (x < 1.0)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


class BesselBasis(nn.Module):
    """Radial Bessel functions b_n(x) = sin(n pi x) / (pi x), n = 1..num_basis, x = r / r_max.

    This is n * sinc(n x), the form of the current Allegro and NequIP code; up to the constant
    2 / r_max it is the basis of DimeNet, sin(n pi r / r_max) / r. Shape [E, 1] -> [E, num_basis].
    """

    def __init__(self, num_basis: int = 8, trainable: bool = False) -> None:
        super().__init__()
        frequencies = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype())
        if trainable:
            self.frequencies = nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sinc(x * self.frequencies) * self.frequencies

    def extra_repr(self) -> str:
        return f"num_basis={len(self.frequencies)}"
