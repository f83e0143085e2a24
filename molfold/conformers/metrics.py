"""Conformer losses and metrics as ReBind and GTMGC define them.

* **D-MAE / D-RMSE**: absolute and squared errors of the full interatomic distance matrix
  (every ordered pair, the zero diagonal included, hydrogens included), pooled over all entries
  of all molecules of a split, as the reference code accumulates them; Angstrom.
* **C-RMSD**: root-mean-square deviation of heavy-atom coordinates after optimal superposition,
  computed by RDKit's ``rdMolAlign.GetBestRMS``, which also tries every permutation of
  symmetry-equivalent atoms (graph automorphisms of the heavy-atom graph) but only proper
  rotations; averaged per molecule. Hydrogens are removed first, as in GTMGC/ReBind's evaluation
  (``get_metrics`` in ``evaluate.py`` with ``--removeHs``).

All are invariant to rotating or translating either conformation. D-MAE and D-RMSE are also
invariant to reflecting it; C-RMSD is not, so :func:`c_rmsd_pair` reports it three ways:
``c_rmsd`` (the prediction as it is), ``c_rmsd_stereo`` (after molfold's mirror correction,
:func:`molfold.conformers.stereo.match_stereocentres`, which needs only the graph) and
``c_rmsd_mirror`` = min(C-RMSD(pred), C-RMSD(mirror image of pred)), the papers' protocol.

The published GTMGC and ReBind C-RMSD is un-mirrored by their evaluation: ``evaluate.py`` of
Rich-XGK/GTMGC and of holymollyhao/ReBIND passes the reference conformer into the model, whose
``ConformerPredictionHead`` (``models/modules/task_head.py``) aligns the prediction to it with
``align_conformer_hat_to_conformer`` (``models/modules/utils.py``): Kabsch with ``R = V U^T``
from ``torch.svd`` and no determinant check, so R is a reflection whenever the mirror image fits
the reference better; ``GetBestRMS`` then scores that prediction. The code picks the image by an
all-atom fit without symmetry matching (its centroids also average over the batch's padding
rows), ``c_rmsd_mirror`` by the heavy-atom, symmetry-matched C-RMSD itself, so per molecule
``c_rmsd_mirror`` is at most the code's value and equal when both pick the same image. Compare
published C-RMSD with ``c_rmsd_mirror``.
"""

from __future__ import annotations

import torch


def distance_matrices(pos: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded distance matrices [B, N, N] (Angstrom) of ``pos`` [N_total, 3] and the boolean mask
    [B, N, N] of pairs inside one molecule (diagonal included)."""
    from torch_geometric.utils import to_dense_batch

    dense, mask = to_dense_batch(pos, batch)
    diff = dense[:, :, None, :] - dense[:, None, :, :]
    pairs = mask[:, :, None] & mask[:, None, :]
    # sqrt with a safe gradient at zero distance (the diagonal and padding)
    squared = (diff**2).sum(-1)
    distance = torch.where(pairs, squared.clamp_min(1e-12).sqrt(), torch.zeros_like(squared))
    eye = torch.eye(distance.shape[-1], dtype=torch.bool, device=pos.device)
    return distance.masked_fill(eye, 0.0), pairs


def distance_errors(
    prediction: torch.Tensor, target: torch.Tensor, batch: torch.Tensor
) -> torch.Tensor:
    """Sums ``[sum |dD|, sum dD^2, number of entries]`` over every distance-matrix entry of the
    batch (float64), so that split-level D-MAE and D-RMSE are exact and reduce by summation."""
    d_pred, pairs = distance_matrices(prediction, batch)
    d_true, _ = distance_matrices(target.to(prediction), batch)
    error = (d_pred - d_true)[pairs].double()
    return torch.stack([error.abs().sum(), (error**2).sum(), error.new_tensor(error.numel())])


def distance_l1_loss(prediction: torch.Tensor, target: torch.Tensor, batch: torch.Tensor):
    """ReBind's loss: mean |D_pred - D_true| over all distance-matrix entries of the batch."""
    d_pred, pairs = distance_matrices(prediction, batch)
    d_true, _ = distance_matrices(target.to(prediction), batch)
    return (d_pred - d_true).abs()[pairs].mean()


def metrics_from_sums(sums: torch.Tensor) -> dict[str, float]:
    """``{"d_mae", "d_rmse"}`` in Angstrom from the sums of :func:`distance_errors`."""
    abs_sum, sq_sum, count = sums.tolist()
    return {"d_mae": abs_sum / count, "d_rmse": (sq_sum / count) ** 0.5}


def c_rmsd(predicted_mol, reference_mol, heavy_atoms_only: bool = True) -> float:
    """C-RMSD (Angstrom) between two conformers of the same molecule (RDKit Mols with the same
    atom order), after optimal alignment and symmetry matching (``rdMolAlign.GetBestRMS``)."""
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign

    probe, reference = Chem.Mol(predicted_mol), Chem.Mol(reference_mol)
    if heavy_atoms_only:
        probe = Chem.RemoveHs(probe, sanitize=False)
        reference = Chem.RemoveHs(reference, sanitize=False)
    for mol in (probe, reference):
        mol.UpdatePropertyCache(strict=False)
    return float(rdMolAlign.GetBestRMS(probe, reference))


def kabsch_rmsd(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """RMSD after optimal rotation and translation (Kabsch), no atom permutations; [N, 3] each.

    Differentiable; used for molecules without an RDKit graph and for tests of :func:`c_rmsd`.
    """
    p = prediction - prediction.mean(0)
    q = target.to(p) - target.to(p).mean(0)
    u, _, vt = torch.linalg.svd(p.T @ q)
    sign = torch.sign(torch.linalg.det(u @ vt))
    fix = torch.diag(torch.stack([sign.new_ones(()), sign.new_ones(()), sign]))
    rotation = u @ fix @ vt
    return ((p @ rotation - q) ** 2).sum(-1).mean().sqrt()


def c_rmsd_pair(graph, predicted: torch.Tensor) -> dict[str, float]:
    """C-RMSD (Angstrom, see the module docstring) of ``predicted`` [N, 3] (Angstrom, the graph's
    atom order) against ``graph.pos`` [N, 3]: ``{"c_rmsd", "c_rmsd_stereo", "c_rmsd_mirror"}``.

    The mirror image is z -> -z, the reflection :func:`match_stereocentres` applies, so
    ``c_rmsd_stereo`` is one of the two values ``c_rmsd_mirror`` is the minimum of, and
    ``c_rmsd_mirror <= min(c_rmsd, c_rmsd_stereo)``.
    """
    from molfold.conformers.stereo import match_stereocentres
    from molfold.data.molgraph import graph_to_mol

    reference = graph_to_mol(graph)
    prediction = graph_to_mol(graph, predicted)
    mirror_image = graph_to_mol(graph, predicted * predicted.new_tensor([1.0, 1.0, -1.0]))
    raw = c_rmsd(prediction, reference)
    mirrored = c_rmsd(mirror_image, reference)
    stereo = mirrored if match_stereocentres(prediction) else raw
    return {"c_rmsd": raw, "c_rmsd_stereo": stereo, "c_rmsd_mirror": min(raw, mirrored)}
