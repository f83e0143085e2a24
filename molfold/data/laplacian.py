"""The Laplacian positional encoding of GTMGC and ReBind: eigenvectors of each molecule's
normalised graph Laplacian, L = I - D^-1/2 A D^-1/2.

:class:`molfold.data.transforms.LaplacianEigenvectors` computes them once per molecule with the
data (``lap_vectors``: the N x N matrix of one molecule, flattened, so that molecules of other
sizes batch together); ReBind scatters them into its padded batch (:func:`padded_eigenvectors`)
and flips their signs at random while training. Without the transform (``molfold predict``),
ReBind computes them itself with the same function.
"""

from __future__ import annotations

import torch

LAP_VECTORS = "lap_vectors"
"""[N * N] float64 per molecule: its eigenvectors as columns, by increasing eigenvalue."""


def laplacian_eigenvectors(adjacency: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of L = I - D^-1/2 A D^-1/2 of each padded graph, as columns by increasing
    eigenvalue: [B, N, N] float -> [B, N, N], zero on padding rows and columns.

    Each graph's Laplacian is diagonalised on its own, unpadded, so a molecule's encoding does
    not depend on what else is in the batch: with a repeated eigenvalue (a CH3 group) the basis
    of that eigenspace is whatever the eigensolver returns for the matrix, and a padded matrix,
    or a batch of several matrices, can give another one. Isolated atoms follow the
    reference (D + 1e-8 in the inverse square root). Each eigenvector's sign is chosen so that
    the sum of its cubed entries is positive: a permutation-invariant rule, so that reordering
    the atoms of a graph without repeated eigenvalues reorders its encoding exactly (the
    reference keeps whatever sign the eigensolver returns). No rule on the graph alone can sign
    an eigenvector whose entries are symmetric under negation, as (e_a - e_b)/sqrt(2) of two
    atoms with the same neighbours (two H on one carbon, the O and H of an aldehyde): its sign
    is the eigensolver's, and may differ between machines.
    """
    n = adjacency.shape[-1]
    a = adjacency.double() * (mask[:, :, None] & mask[:, None, :])
    d = (a.sum(-1) + 1e-8).rsqrt()
    laplacian = torch.eye(n, dtype=a.dtype, device=a.device) - d[:, :, None] * a * d[:, None, :]
    sizes = mask.sum(-1)
    vectors = torch.zeros_like(laplacian)
    for b, size in enumerate(sizes.tolist()):
        _, vectors[b, :size, :size] = torch.linalg.eigh(laplacian[b, :size, :size])
    signs = torch.where((vectors**3).sum(1, keepdim=True) < 0, -1.0, 1.0).to(vectors)
    return (vectors * signs).to(adjacency.dtype)


def padded_eigenvectors(flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The per-molecule ``lap_vectors`` of a batch, [sum N_i^2], as [B, N, N] with zeros on
    padding (``mask`` [B, N]: real atoms)."""
    sizes = mask.sum(-1).tolist()
    vectors = flat.new_zeros(mask.shape[0], mask.shape[1], mask.shape[1])
    start = 0
    for b, n in enumerate(sizes):
        vectors[b, :n, :n] = flat[start : start + n * n].view(n, n)
        start += n * n
    return vectors
