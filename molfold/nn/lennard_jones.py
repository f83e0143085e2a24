"""Lennard-Jones pair energies and forces, and ReBind's force-based edge rewiring.

ReBind (Lee et al., ICLR 2025, Sec. 3.2) scores every non-bonded atom pair of the encoder's
intermediate conformation by the magnitude of its Lennard-Jones force, keeps the strongest pairs
of each atom, and splits them into attractive and repulsive edges for the decoder's attention.

Parameters per element are the Lennard-Jones sigma (Angstrom) and well depth epsilon (kcal/mol)
of the table in the ReBind code (``models/modules/utils.py``, H to Kr): the UFF van der Waals
parameters of Rappe et al. (J. Am. Chem. Soc. 1992, 114, 10024), with sigma = x_I / 2^(1/6) for
most elements (H, He, Li, Be, Na and K keep x_I as printed there). Iodine, which that table lacks
but drug-like molecules contain, is added from UFF in the same way (x_I 4.500, D_I 0.339).
Pairs mix by the Lorentz-Berthelot rules. Only the sign and the ranking of the forces are used,
so the energy unit does not matter.
"""

from __future__ import annotations

import torch

from molfold.errors import UnknownElementError

# element: (sigma Angstrom, epsilon kcal/mol)
LJ_PARAMETERS: dict[int, tuple[float, float]] = {
    1: (2.886, 0.044), 2: (2.362, 0.056), 3: (2.451, 0.025), 4: (2.745, 0.085),
    5: (3.637, 0.180), 6: (3.431, 0.105), 7: (3.260, 0.069), 8: (3.118, 0.060),
    9: (2.996, 0.050), 10: (2.889, 0.042), 11: (2.983, 0.030), 12: (2.905, 0.111),
    13: (4.008, 0.505), 14: (3.826, 0.402), 15: (3.694, 0.305), 16: (3.594, 0.274),
    17: (3.516, 0.227), 18: (3.404, 0.185), 19: (3.812, 0.035), 20: (3.487, 0.238),
    21: (3.316, 0.019), 22: (3.294, 0.017), 23: (3.273, 0.016), 24: (3.249, 0.015),
    25: (3.210, 0.013), 26: (3.174, 0.013), 27: (3.144, 0.013), 28: (3.116, 0.013),
    29: (3.083, 0.005), 30: (3.002, 0.124), 31: (4.383, 0.415), 32: (4.310, 0.379),
    33: (4.280, 0.309), 34: (4.336, 0.291), 35: (4.403, 0.251), 36: (4.463, 0.220),
    53: (4.500 / 2 ** (1 / 6), 0.339),
}  # fmt: skip


def _table() -> torch.Tensor:
    table = torch.full((max(LJ_PARAMETERS) + 1, 2), float("nan"), dtype=torch.float64)
    for z, values in LJ_PARAMETERS.items():
        table[z] = torch.tensor(values, dtype=torch.float64)
    return table


_TABLE = _table()


def pair_parameters(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lorentz-Berthelot sigma_ij = (sigma_i + sigma_j)/2 and epsilon_ij = sqrt(eps_i eps_j).

    ``z`` [..., N] atomic numbers (0 marks padding); returns two [..., N, N] tensors (float64).
    Raises :class:`UnknownElementError` for an element without parameters.
    """
    table = _TABLE.to(z.device)
    known = (z >= 0) & (z < len(table))
    params = table[z.clamp(0, len(table) - 1)]
    missing = (z > 0) & (~known | params[..., 0].isnan())
    if missing.any():
        raise UnknownElementError(
            f"no Lennard-Jones parameters for Z={sorted(set(z[missing].tolist()))}; "
            f"known: {sorted(LJ_PARAMETERS)}"
        )
    params = torch.nan_to_num(params)
    sigma, epsilon = params[..., 0], params[..., 1]
    return (
        0.5 * (sigma[..., :, None] + sigma[..., None, :]),
        torch.sqrt(epsilon[..., :, None] * epsilon[..., None, :]),
    )


def lennard_jones_energy(r: torch.Tensor, sigma: torch.Tensor, epsilon: torch.Tensor):
    """E(r) = 4 eps ((sigma/r)^12 - (sigma/r)^6), elementwise (energy in the unit of eps)."""
    s6 = (sigma / r) ** 6
    return 4 * epsilon * (s6 * s6 - s6)


def lennard_jones_force(r: torch.Tensor, sigma: torch.Tensor, epsilon: torch.Tensor):
    """F(r) = -dE/dr = 24 eps (sigma/r)^6 (2 (sigma/r)^6 - 1) / r: positive repels, negative
    attracts (energy unit of eps per Angstrom)."""
    s6 = (sigma / r) ** 6
    return 24 * epsilon * s6 * (2 * s6 - 1) / r


def force_based_rewiring(
    distance: torch.Tensor,
    z: torch.Tensor,
    bonded: torch.Tensor,
    mask: torch.Tensor,
    top_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ReBind's attractive and repulsive adjacencies of a (batch of) conformation(s).

    Parameters
    ----------
    distance : [B, N, N] interatomic distances of the intermediate conformation, Angstrom
    z : [B, N] atomic numbers (anything on padding)
    bonded : [B, N, N] bool, covalent bonds
    mask : [B, N] bool, real atoms
    top_k : a fixed K for every atom instead of the paper's rule (None)

    Every atom i keeps its K_i = (largest degree in its molecule) - (degree of i) non-bonded
    partners of largest |F_ij| (the rule of the ReBind code, so that every atom ends with as many
    edges as the best-connected one), or ``top_k`` partners if given. A kept pair is attractive
    (+1 in the first output) when F_ij < 0 and repulsive (-1 in the second) when F_ij > 0, as in
    the paper's Eq. 6-7. Rows are per atom, so the adjacencies need not be symmetric. Returns two
    [B, N, N] tensors in the dtype of ``distance``.
    """
    n = distance.shape[-1]
    z = torch.where(mask, z, torch.zeros_like(z))
    sigma, epsilon = pair_parameters(z)
    pairs = mask[:, :, None] & mask[:, None, :]
    eye = torch.eye(n, dtype=torch.bool, device=distance.device)
    candidates = pairs & ~bonded & ~eye
    safe = torch.where(candidates, distance.double(), torch.ones_like(distance.double()))
    force = lennard_jones_force(safe.clamp_min(1e-3), sigma, epsilon)
    score = torch.where(candidates, force.abs(), torch.full_like(force, -1.0))

    degree = (bonded & pairs).sum(-1)  # [B, N]
    k = (
        degree.max(-1, keepdim=True).values - degree
        if top_k is None
        else torch.full_like(degree, top_k)
    )
    k = torch.where(mask, k, torch.zeros_like(degree))
    order = score.argsort(dim=-1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(n, device=order.device).expand_as(order))
    kept = (rank < k[..., None]) & candidates & (score > 0)
    attraction = (kept & (force < 0)).to(distance.dtype)
    repulsion = -(kept & (force > 0)).to(distance.dtype)
    return attraction, repulsion
