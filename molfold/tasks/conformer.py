"""Training a conformer model (2D graph -> coordinates) on ground-state geometries.

The loss averages the L1 distance-matrix errors of the intermediate and the final conformation
(ReBind Sec. 3.4); ``coordinate_weight`` and ``chirality_weight`` add the handedness-aware terms
of :mod:`molfold.conformers.chirality` (a molfold addition, off by default: the paper has
neither). Validation reports D-MAE (``loss``, which picks the best checkpoint, as the
paper's ``metric_for_best_model=mae``) and D-RMSE from exact sums; the test adds C-RMSD
(:func:`molfold.conformers.metrics.c_rmsd_pair`): of the raw prediction (``c_rmsd``), after
molfold's stereocentre-matching mirror correction (``c_rmsd_stereo``), and as the papers'
evaluation computes it, the better of the prediction and its mirror image (``c_rmsd_mirror``).
A model that refines an ETKDG + MMFF conformer (``start="etkdg"``) is also tested against that
conformer, its baseline on the same molecules (``d_mae_start``, ``d_rmse_start``,
``c_rmsd_start``), and reports the fraction of molecules whose start needed one of ETKDG's
fallbacks (``start_fallback``, :mod:`molfold.conformers.starts`). Lengths in Angstrom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from molfold.conformers.chirality import (
    aligned_coordinate_loss,
    batch_stereocentres,
    signed_volume_loss,
)
from molfold.conformers.metrics import c_rmsd_pair, distance_errors, distance_l1_loss
from molfold.conformers.starts import EtkdgMmffStart
from molfold.data import graph as G
from molfold.data.molgraph import MOLECULE_FIELDS
from molfold.data.transforms import MolecularGraph
from molfold.tasks.base import Task
from molfold.tasks.metrics import mae_rmse


@dataclass(frozen=True)
class ConformerSettings:
    """The ``task`` section of a conformer model."""

    name: str = "conformer"
    c_rmsd: bool = True
    """Also compute C-RMSD (RDKit, heavy atoms, symmetry-matched) on the test split."""
    coordinate_weight: float = 0.0
    """Weight of the squared coordinate error after a proper-rotation superposition (A^2)."""
    chirality_weight: float = 0.0
    """Weight of the signed-volume hinge of the stereocentres (A^3)."""
    chirality_margin: float = 0.5
    """Signed volume (A^3) a right stereocentre must reach to cost nothing."""


class ConformerTask(Task):
    """Distance-matrix L1 training of a conformer model (``pos``, optionally
    ``pos_intermediate``, [N, 3] from a batch of 2D graphs)."""

    name = "conformer"
    model_kind = "conformer"
    settings_class = ConformerSettings
    required_fields = MOLECULE_FIELDS
    items = "molecules"
    units = {
        name: "A"
        for name in ("d_mae", "d_rmse", "c_rmsd", "c_rmsd_stereo", "c_rmsd_mirror")
        + ("d_mae_start", "d_rmse_start", "c_rmsd_start")
    } | {"start_fallback": "fraction"}
    curves = (
        ("train/loss_epoch", "train/loss"),
        ("val/loss", "val/d_rmse"),
        ("L1 distance loss (A)", "D-MAE (val/loss), D-RMSE (A)"),
    )

    @classmethod
    def transforms(cls, model_hparams: dict[str, Any]) -> list:
        """The 2D graph, and for a model that refines an ETKDG + MMFF conformer
        (``start="etkdg"``) that conformer, made once per molecule with the data."""
        if model_hparams.get("start") == "etkdg":
            return [MolecularGraph(), EtkdgMmffStart()]
        return [MolecularGraph()]

    @classmethod
    def fit_statistics(
        cls, graphs: Sequence, settings: Any = None, targets: Sequence[tuple[str, str]] = ()
    ) -> dict[str, Any]:
        elements = sorted({int(z) for graph in graphs for z in graph[G.Z].unique()})
        return {"elements": elements, "num_structures": len(graphs)}

    def loss(self, outputs: dict, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pred, target = outputs[G.POS], batch[G.POS].to(outputs[G.POS])
        loss = final = distance_l1_loss(pred, target, batch[G.BATCH])
        parts = {}
        if G.POS_INTERMEDIATE in outputs:
            intermediate = distance_l1_loss(outputs[G.POS_INTERMEDIATE], target, batch[G.BATCH])
            loss = 0.5 * (final + intermediate)
            parts["d_mae_intermediate"] = intermediate
        if self.settings.coordinate_weight:
            parts["coordinate_mse"] = aligned_coordinate_loss(pred, target, batch[G.BATCH])
            loss = loss + self.settings.coordinate_weight * parts["coordinate_mse"]
        if self.settings.chirality_weight:
            quads = batch_stereocentres(batch)
            margin = self.settings.chirality_margin
            parts["chirality"] = signed_volume_loss(pred, target, quads, margin)
            loss = loss + self.settings.chirality_weight * parts["chirality"]
        return loss, parts

    def accumulate(self, outputs: dict, batch, stage: str) -> None:
        self.errors.add_sums(
            "distance", distance_errors(outputs[G.POS], batch[G.POS], batch[G.BATCH])
        )
        if stage != "test":
            return
        if G.POS_START in batch:  # the ETKDG + MMFF conformer a refining model starts from
            start = batch[G.POS_START].to(batch[G.POS])
            self.errors.add_sums(
                "distance_start", distance_errors(start, batch[G.POS], batch[G.BATCH])
            )
        if G.START_METHOD in batch:  # absent where the caller supplied its own start
            self.errors.add("start_fallback", (batch[G.START_METHOD] > 0).double())
        if not self.settings.c_rmsd:
            return
        predicted = outputs[G.POS].detach().cpu().double()
        batch = batch.cpu()
        per_molecule: dict[str, list[float]] = {}
        for m, graph in enumerate(batch.to_data_list()):
            atoms = batch[G.BATCH] == m
            for name, value in c_rmsd_pair(graph, predicted[atoms]).items():
                per_molecule.setdefault(name, []).append(value)
            if G.POS_START in batch:
                value = c_rmsd_pair(graph, batch[G.POS_START][atoms].double())["c_rmsd"]
                per_molecule.setdefault("c_rmsd_start", []).append(value)
        for name, values in per_molecule.items():
            self.errors.add(name, torch.tensor(values, dtype=torch.float64))

    def metrics(self, sums: dict[str, tuple[float, float, float]]) -> dict[str, float]:
        d_mae, d_rmse = mae_rmse(sums["distance"])
        metrics = {"d_mae": d_mae, "d_rmse": d_rmse}
        if "distance_start" in sums:
            metrics["d_mae_start"], metrics["d_rmse_start"] = mae_rmse(sums["distance_start"])
        for name in sorted(set(sums) - {"distance", "distance_start"}):
            metrics[name] = mae_rmse(sums[name])[0]  # C-RMSD values are >= 0: their mean
        metrics["loss"] = d_mae
        return metrics
