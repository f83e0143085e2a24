"""Training a property model on graph targets (QM9 properties, OC20 IS2RE relaxed energies).

loss = mean over structures and targets of |y_pred - y| / std   (``loss: l1``, the default)
       or of ((y_pred - y) / std)^2                             (``loss: mse``)
     + w_v mean over atoms of |v_pred - v|                      (``atom_vectors_weight`` > 0)

``std`` is each target's standard deviation on the training split, so the L1 loss is the L1 loss
of standardised targets, as the reference Equiformer trains QM9 (``(y - mean) / std``) and
fairchem normalises IS2RE energies; ``standardize: false`` trains a target as it is (std 1, the
reference's recipe for U0, U, H and G). The auxiliary term is the IS2RS head of Equiformer on
OC20: per-atom displacement from the initial (with Noisy Nodes: the noisy) to the relaxed
position (Angstrom), its L2 norm averaged over atoms (fairchem's ``l2mae``); the reference
decays its weight from 15 to 1 during training, molfold keeps it constant.

Metrics are MAE and RMSE of each target in the papers' units: energies in meV, dipoles in D,
polarisability in a0^3, R2 in a0^2, heat capacity in cal/mol/K; ``loss`` is the same
combination as training over the whole split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from molfold.data import graph as G
from molfold.data.statistics import property_statistics
from molfold.errors import DataError
from molfold.models.property import ATOM_VECTORS_OUTPUT, TARGET_OUTPUT
from molfold.tasks.base import StructureTask
from molfold.tasks.metrics import mae_rmse
from molfold.units import EV_TO_MEV

REPORTED_UNITS = {"eV": ("meV", EV_TO_MEV)}
"""Source unit -> (unit the papers report, factor): energies in meV."""


def reported(unit: str) -> tuple[str, float]:
    """The unit a target's errors are reported in, and the factor from its own unit."""
    return REPORTED_UNITS.get(unit, (unit, 1.0))


@dataclass(frozen=True)
class PropertySettings:
    """The ``task`` section of a property model."""

    name: str = "property"
    loss: str = "l1"
    """``l1`` (Equiformer on QM9 and OC20) or ``mse`` of the standardised targets."""
    standardize: bool = True
    """Divide errors by the training split's standard deviation of each target (and start the
    model's outputs at its mean); false trains the target as it is."""
    atom_vectors_weight: float = 0.0
    """Weight of the per-atom relaxed-displacement loss (OC20 IS2RS auxiliary; 0: off)."""
    noisy_nodes_std: float = 0.0
    """Noisy Nodes (Godwin et al., ICLR 2022), with the auxiliary head: while training, free
    atoms' input positions get Gaussian noise of this standard deviation (Angstrom) and the head
    learns the displacement from the noisy to the relaxed position (0: off)."""

    def __post_init__(self) -> None:
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"loss must be l1 or mse, got {self.loss!r}")
        if self.atom_vectors_weight < 0 or self.noisy_nodes_std < 0:
            raise ValueError("atom_vectors_weight and noisy_nodes_std must be >= 0")


INPUT_POS = "input_pos"  # [N, 3] Angstrom, the positions the model saw (noisy while training)


class PropertyTask(StructureTask):
    """Graph-target training of a :class:`~molfold.models.property.PropertyModel`."""

    name = "property"
    model_kind = "property"
    settings_class = PropertySettings
    required_fields = (G.TARGET,)
    items = "structures"
    curves = (
        ("train/loss_epoch", "train/loss", "val/loss"),
        ("val/loss",),
        ("loss (standardised)", "validation loss (standardised)"),
    )

    @classmethod
    def fit_statistics(
        cls,
        graphs: Sequence,
        settings: PropertySettings | None = None,
        targets: Sequence[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        settings = settings or PropertySettings()
        if not targets:
            raise DataError("the data names no targets for a property model (set data.target)")
        names, units = zip(*targets)
        return property_statistics(graphs, names, units, settings.standardize)

    @property
    def units(self) -> dict[str, str]:  # type: ignore[override]
        """Metric -> unit for tables, from the model's targets (the papers' units)."""
        table = {}
        for name, unit in zip(self.model.names, self.model.units):
            shown, _ = reported(unit)
            table[f"{name}_mae"] = table[f"{name}_rmse"] = shown
        table["atom_vectors_mae"] = "A"
        return table

    def forward(self, batch) -> dict[str, torch.Tensor]:
        """The model's outputs and ``input_pos``, the positions it saw: with Noisy Nodes, while
        training, free atoms moved by Gaussian noise (the radius graph stays that of the
        initial structure, whereas the reference rebuilds it from the noisy positions)."""
        pos = batch[G.POS]
        if self.training and self.settings.noisy_nodes_std > 0:
            noise = torch.randn_like(pos) * self.settings.noisy_nodes_std
            if G.FIXED in batch:
                noise = noise * (~batch[G.FIXED].bool()).unsqueeze(-1)
            batch = batch.clone()
            batch[G.POS] = pos = pos + noise
        return {**self.model(batch), INPUT_POS: pos}

    def _errors(self, outputs: dict, batch) -> dict[str, torch.Tensor]:
        """Errors [B, T] of the targets and, with the head, [N, 3] of the atom vectors."""
        predicted = outputs[TARGET_OUTPUT]
        errors = {"target": predicted - batch[G.TARGET].reshape(predicted.shape).to(predicted)}
        if ATOM_VECTORS_OUTPUT in outputs and G.POS_RELAXED in batch:
            vectors = outputs[ATOM_VECTORS_OUTPUT]
            displacement = batch[G.POS_RELAXED] - outputs.get(INPUT_POS, batch[G.POS])
            errors["atom_vectors"] = vectors - displacement.to(vectors)
        return errors

    def _target_loss(self, errors: torch.Tensor) -> torch.Tensor:
        scaled = errors / self.model.stds
        return scaled.abs().mean() if self.settings.loss == "l1" else (scaled**2).mean()

    def loss(self, outputs: dict, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        errors = self._errors(outputs, batch)
        total = self._target_loss(errors["target"])
        terms = {"target_loss": total}
        if self.settings.atom_vectors_weight > 0:
            if "atom_vectors" not in errors:
                raise DataError(
                    "task.atom_vectors_weight > 0 needs a model with the atom-vector head and "
                    "structures with relaxed positions (pos_relaxed)"
                )
            vectors = errors["atom_vectors"].norm(dim=-1).mean()
            total = total + self.settings.atom_vectors_weight * vectors
            terms["atom_vectors_l2mae"] = vectors
        return total, terms

    def accumulate(self, outputs: dict, batch, stage: str) -> None:
        errors = self._errors(outputs, batch)
        for t, name in enumerate(self.model.names):
            self.errors.add(name, errors["target"][:, t])
            self.errors.add(f"{name}_standardised", errors["target"][:, t] / self.model.stds[t])
        if "atom_vectors" in errors:
            self.errors.add("atom_vectors", errors["atom_vectors"].norm(dim=-1))

    def metrics(self, sums: dict[str, tuple[float, float, float]]) -> dict[str, float]:
        metrics, losses = {}, []
        for name, unit in zip(self.model.names, self.model.units):
            if name not in sums:
                continue
            _, factor = reported(unit)
            mae, rmse = mae_rmse(sums[name])
            metrics[f"{name}_mae"], metrics[f"{name}_rmse"] = factor * mae, factor * rmse
            scaled_mae, scaled_rmse = mae_rmse(sums[f"{name}_standardised"])
            losses.append(scaled_mae if self.settings.loss == "l1" else scaled_rmse**2)
        loss = sum(losses) / max(1, len(losses))
        if "atom_vectors" in sums:
            metrics["atom_vectors_mae"], _ = mae_rmse(sums["atom_vectors"])
            loss += self.settings.atom_vectors_weight * metrics["atom_vectors_mae"]
        metrics["loss"] = loss
        return metrics

    def test_outputs(self, outputs: dict, batch) -> dict[str, torch.Tensor]:
        predicted = outputs[TARGET_OUTPUT]
        return {"target": predicted, "target_ref": batch[G.TARGET].reshape(predicted.shape)}

    def figures(self, predictions: dict[str, torch.Tensor], run_dir: Path) -> None:
        """One panel per target, in the units its errors are reported in."""
        from molfold.train.plots import parity_plot

        panels = []
        for t, (name, unit) in enumerate(zip(self.model.names, self.model.units)):
            shown, factor = reported(unit)
            predicted = factor * predictions["target"][:, t].double().numpy()
            reference = factor * predictions["target_ref"][:, t].double().numpy()
            panels.append((predicted, reference, name, shown))
        parity_plot(panels, run_dir / "parity.png")
