"""Radial bases of edge lengths in Angstrom, for Equiformer (Liao & Smidt, ICLR 2023).

Unlike :mod:`molfold.nn.radial`, whose modules take ``x = r / r_max`` [E, 1], these take the
lengths themselves, ``r`` [E] in Angstrom, and know their ``r_max``; each returns [E, num_basis].

==================  ==========================================================  ================
basis               formula (x = r / r_max)                                      reference use
==================  ==========================================================  ================
``gaussian``        exp(-((a x + b - mu_k) / s_k)^2 / 2) / (sqrt(2 pi) s_k),     QM9, OC20
                    mu_k, s_k, a, b all trained (Graphormer's basis)
``exp_normal``      c(r) exp(-beta (exp(-alpha r) - mu_k)^2), alpha = 5 / r_max,  MD17
                    c the cosine cutoff; mu_k, beta fixed (PhysNet, torchmd-net)
``bessel``          sqrt(2 / r_max^3) sin(f_k x) / x * u_p(x), f_k = k pi        QM9 U0, U, H, G,
                    trained, u_p the polynomial envelope (DimeNet, GemNet)      R2, ZPVE
==================  ==========================================================  ================

The Gaussian basis does not vanish at r_max; the other two do, with their derivatives.
The Bessel basis reuses :class:`~molfold.nn.radial.BesselBasis` and
:class:`~molfold.nn.radial.PolynomialCutoff`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from molfold.nn.radial import BesselBasis, PolynomialCutoff


class GaussianBasis(nn.Module):
    """Gaussians of the scaled length with trained means, widths and input affine map.

    ``x = r / r_max`` is first mapped to ``a x + b`` (a = 1, b = 0 at the start); means start
    uniform in [0, 1), widths uniform in [1 / num_basis, 1); the width used is |s| + 1e-5.
    Parameters: 2 num_basis + 2. ``forward(r [E]) -> [E, num_basis]``.

    >>> GaussianBasis(128, r_max=5.0)(torch.tensor([1.0, 2.0])).shape
    torch.Size([2, 128])
    """

    def __init__(self, num_basis: int, r_max: float) -> None:
        super().__init__()
        self.num_basis = num_basis
        self.r_max = float(r_max)
        self.mean = nn.Parameter(torch.empty(1, num_basis).uniform_(0.0, 1.0))
        self.std = nn.Parameter(torch.empty(1, num_basis).uniform_(1.0 / num_basis, 1.0))
        self.scale = nn.Parameter(torch.ones(1, 1))
        self.offset = nn.Parameter(torch.zeros(1, 1))

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = self.scale * (r / self.r_max).unsqueeze(-1) + self.offset
        std = self.std.abs() + 1e-5
        return torch.exp(-0.5 * ((x - self.mean) / std) ** 2) / (math.sqrt(2.0 * math.pi) * std)

    def extra_repr(self) -> str:
        return f"num_basis={self.num_basis}, r_max={self.r_max:g}"


class CosineCutoff(nn.Module):
    """c(r) = (cos(pi r / r_max) + 1) / 2 for r < r_max, else 0. ``[...] -> [...]``.

    c and c' vanish at r_max (c'' does not).
    """

    def __init__(self, r_max: float) -> None:
        super().__init__()
        self.r_max = float(r_max)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return 0.5 * (torch.cos(r * (math.pi / self.r_max)) + 1.0) * (r < self.r_max)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max:g}"


class ExpNormalBasis(nn.Module):
    """Exponential-normal smearing times a cosine cutoff (Unke & Meuwly, PhysNet, JCTC 2019).

    phi_k(r) = c(r) exp(-beta (exp(-alpha r) - mu_k)^2), alpha = 5 / r_max, means mu_k evenly
    spaced from exp(-r_max) to 1 and beta = (2 (1 - exp(-r_max)) / num_basis)^-2, fixed (the
    lower cutoff of the torchmd-net original is 0 here; its first mean, exp(-r_max), has r_max
    in Angstrom, not scaled by alpha, as in that code). ``forward(r [E]) -> [E, num_basis]``.

    >>> ExpNormalBasis(32, r_max=5.0)(torch.tensor([5.0])).abs().max().item()
    0.0
    """

    def __init__(self, num_basis: int, r_max: float) -> None:
        super().__init__()
        self.num_basis = num_basis
        self.r_max = float(r_max)
        self.alpha = 5.0 / self.r_max
        self.cutoff = CosineCutoff(r_max)
        start = math.exp(-self.r_max)
        self.register_buffer("means", torch.linspace(start, 1.0, num_basis))
        self.register_buffer(
            "betas", torch.full((num_basis,), (2.0 / num_basis * (1.0 - start)) ** -2)
        )

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return self.cutoff(r) * torch.exp(
            -self.betas * (torch.exp(-self.alpha * r) - self.means) ** 2
        )

    def extra_repr(self) -> str:
        return f"num_basis={self.num_basis}, r_max={self.r_max:g}"


class EnvelopedBesselBasis(nn.Module):
    """The spherical Bessel basis of DimeNet/GemNet, sqrt(2 / r_max^3) sin(f_k x) / x, times the
    polynomial envelope u_p(x), x = r / r_max, with trained frequencies f_k = k pi at the start.

    Built from :class:`~molfold.nn.radial.BesselBasis` (k sinc(k x) = sin(k pi x) / (pi x), so
    the prefactor here is pi sqrt(2 / r_max^3)); its trained ``frequencies`` are f_k / pi.
    ``forward(r [E]) -> [E, num_basis]``.
    """

    def __init__(self, num_basis: int, r_max: float, polynomial_p: int = 5) -> None:
        super().__init__()
        self.r_max = float(r_max)
        self.bessel = BesselBasis(num_basis, trainable=True)
        self.envelope = PolynomialCutoff(polynomial_p)
        self.prefactor = math.pi * math.sqrt(2.0 / self.r_max**3)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x = (r / self.r_max).unsqueeze(-1)
        return self.prefactor * self.envelope(x) * self.bessel(x)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max:g}"


RADIAL_BASES = ("gaussian", "exp_normal", "bessel")


def radial_basis(name: str, num_basis: int, r_max: float, polynomial_p: int = 5) -> nn.Module:
    """The basis ``name`` (one of :data:`RADIAL_BASES`) with ``num_basis`` functions up to
    ``r_max``; ``polynomial_p`` is the Bessel envelope's exponent."""
    if name == "gaussian":
        return GaussianBasis(num_basis, r_max)
    if name == "exp_normal":
        return ExpNormalBasis(num_basis, r_max)
    if name == "bessel":
        return EnvelopedBesselBasis(num_basis, r_max, polynomial_p)
    raise ValueError(f"radial_basis must be one of {RADIAL_BASES}, got {name!r}")
