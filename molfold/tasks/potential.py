"""Training a potential on energies, forces and stress.

loss = w_E mean(((E_pred - E) / N_atoms)^2) + w_F mean((F_pred - F)^2) + w_S mean((S_pred - S)^2)

(``loss: mse``, the default; ``loss: mae`` is Equiformer's and OCP's L1 / L2MAE loss, see
:class:`PotentialSettings`).
Energies enter per atom, so the weights do not depend on system size (nequip/Allegro's
``PerAtomMSELoss``, weights 1:1 in their tutorials). Units: eV^2/atom^2, eV^2/A^2, eV^2/A^6.
Metrics are reported in meV (energy per structure, as the MD17 literature), meV/atom and meV/A;
``loss`` is the same weighted sum over the whole split, so it does not depend on batching.
With ``energy_reference: group`` the energy errors are taken relative to the mean over the
structures of the same group (``group``: a molecule's conformers) in the batch, and a structure
without another of its group in the batch does not enter the energy term: what is learnt is the
energy differences between conformers, the quantity that ranks them, without the per-molecule
offset a local model cannot see (the data keeps groups together: ``data.batch_by=group``).
Where the data marks atoms as fixed (OC20's sub-surface slab layers), forces enter the loss and
the metrics on free atoms only, as fairchem does (``forces_on: free``, the default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from molfold.data import graph as G
from molfold.data.statistics import fit_statistics
from molfold.errors import ConfigError
from molfold.tasks.base import StructureTask
from molfold.tasks.metrics import mae_rmse
from molfold.units import EV_TO_MEV


@dataclass(frozen=True)
class PotentialSettings:
    """The ``task`` section of a potential: the loss weights."""

    name: str = "potential"
    energy_weight: float = 1.0
    forces_weight: float = 1.0
    stress_weight: float = 0.0
    energy_shifts: str = "mean_per_atom"
    """Per-species energy shifts: ``mean_per_atom`` (the reference's default: every species the
    mean energy per atom of the training set) or ``least_squares`` (a per-element fit, which
    needs several compositions to mean anything)."""
    loss: str = "mse"
    """``mse``: the per-atom squared errors above (nequip/Allegro); ``mae``: w_E mean |E_pred - E|
    + w_F mean over atoms of |F_pred - F| (the L2 norm) + w_S mean |S_pred - S|, the L1 energy
    and L2MAE force loss of Equiformer on MD17 and of OCP."""
    energy_reference: str = "absolute"
    """``absolute``: each structure's energy; ``group``: energies relative within each group of
    the batch (module docstring), metrics included."""
    forces_on: str = "free"
    """Atoms whose forces enter the loss and the metrics: ``free`` (fairchem's
    ``train_on_free_atoms`` and ``eval_on_free_atoms``: atoms not held fixed, where the data
    marks fixed atoms, as OC20's slabs) or ``all``."""

    def __post_init__(self) -> None:
        weights = (self.energy_weight, self.forces_weight, self.stress_weight)
        if min(weights) < 0 or sum(weights) == 0:
            raise ValueError(f"loss weights must be >= 0 and not all zero, got {list(weights)}")
        if self.loss not in ("mse", "mae"):
            raise ValueError(f"loss must be mse or mae, got {self.loss!r}")
        if self.energy_reference not in ("absolute", "group"):
            raise ValueError(
                f"energy_reference must be absolute or group, got {self.energy_reference!r}"
            )
        if self.forces_on not in ("free", "all"):
            raise ValueError(f"forces_on must be free or all, got {self.forces_on!r}")
        if self.energy_shifts not in ("mean_per_atom", "least_squares"):
            raise ValueError(
                f"energy_shifts must be mean_per_atom or least_squares, got {self.energy_shifts!r}"
            )

    def terms(self) -> dict[str, tuple[str, float]]:
        """Loss term -> (error quantity, weight): per-atom energies and force components for
        ``mse``, energies and per-atom force norms for ``mae``."""
        energy, forces = (
            ("energy_per_atom", "forces") if self.loss == "mse" else ("energy", "forces_norm")
        )
        return {
            energy: (energy, self.energy_weight),
            forces: (forces, self.forces_weight),
            "stress": ("stress", self.stress_weight),
        }

    def combine(self, sums: dict[str, tuple[float, float, float]]) -> float:
        """The loss from whole-split error sums ``(sum |e|, sum e^2, count)`` of each quantity."""
        total = 0.0
        for quantity, weight in self.terms().values():
            if weight > 0 and quantity in sums:
                abs_sum, square_sum, count = sums[quantity]
                total += weight * (square_sum if self.loss == "mse" else abs_sum) / count
        return total


def relative_within_groups(
    error: torch.Tensor, atoms: torch.Tensor, group: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy errors [B] (eV) minus the mean error of their group in the batch (``group`` [B]),
    for the structures whose group has another structure in the batch [B'], and their atom
    counts [B']: the errors of the energies relative to the group's mean."""
    _, inverse, counts = torch.unique(group, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(counts), dtype=error.dtype, device=error.device)
    mean = sums.index_add(0, inverse, error) / counts.to(error)
    paired = counts[inverse] > 1
    return (error - mean[inverse])[paired], atoms[paired]


class PotentialTask(StructureTask):
    """Energy, force and stress training of a :class:`~molfold.models.potential.Potential`."""

    name = "potential"
    model_kind = "potential"
    settings_class = PotentialSettings
    required_fields = (G.ENERGY,)
    units = {
        "energy_mae": "meV",
        "energy_rmse": "meV",
        "energy_per_atom_mae": "meV/atom",
        "forces_mae": "meV/A",
        "forces_rmse": "meV/A",
        "stress_mae": "meV/A^3",
    }
    curves = (
        ("train/loss_epoch", "train/loss", "val/loss"),
        ("val/forces_mae", "val/energy_mae"),
        ("loss (eV^2 units)", "MAE (meV, meV/A)"),
    )
    gradients_in_evaluation = True

    @classmethod
    def fit_statistics(
        cls,
        graphs: Sequence,
        settings: PotentialSettings | None = None,
        targets: Sequence[tuple[str, str]] = (),
    ) -> dict:
        method = (settings or PotentialSettings()).energy_shifts
        return fit_statistics(graphs, energy_shifts=method)

    edge_gradient = None
    """The compiled core of the model (:meth:`compile_model`), or None: eager."""

    def compile_model(self) -> None:
        """Train, validate and test through one compiled graph of the model's energies and
        forces (:class:`~molfold.compiled.training.CompiledEdgeGradient`)."""
        from molfold.compiled.training import CompiledEdgeGradient

        self.edge_gradient = CompiledEdgeGradient(self.model)

    def on_fit_start(self) -> None:
        """Check that relative energies have their groups together in the batches; compile
        before the first step (outside Lightning's ``max_time``, as nequip compiles before its
        training starts)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        relative = self.settings.energy_reference == "group" and datamodule is not None
        if relative and datamodule.config.batch_by != G.GROUP:
            raise ConfigError(
                "task.energy_reference=group compares conformers of one molecule within a "
                "batch: set data.batch_by=group (and data.group_key) so that they share one"
            )
        if self.edge_gradient is not None:
            if self.trainer.is_global_zero:
                print("compiling the model for training (about a minute) ...", flush=True)
            self.edge_gradient.warm_up(self.device)

    def forward(self, batch) -> dict[str, torch.Tensor]:
        stress = self.settings.stress_weight > 0 and G.STRESS in batch
        return self.model(
            batch, compute_forces=True, compute_stress=stress, edge_gradient=self.edge_gradient
        )

    def _errors(self, outputs: dict, batch) -> dict[str, torch.Tensor]:
        errors = {}
        if G.ENERGY in batch:
            energy = outputs[G.ENERGY]
            error = energy - batch[G.ENERGY].reshape(-1).to(energy)
            atoms = torch.bincount(batch[G.BATCH], minlength=batch.num_graphs).to(energy)
            if self.settings.energy_reference == "group":
                error, atoms = relative_within_groups(error, atoms, batch[G.GROUP].reshape(-1))
            errors["energy"] = error
            errors["energy_per_atom"] = error / atoms
        if G.FORCES in batch and G.FORCES in outputs:
            free = self._force_mask(batch)
            forces = outputs[G.FORCES][free]
            errors[G.FORCES] = forces - batch[G.FORCES][free].to(forces)
            errors["forces_norm"] = errors[G.FORCES].norm(dim=-1)
        if G.STRESS in batch and G.STRESS in outputs:
            errors[G.STRESS] = outputs[G.STRESS] - batch[G.STRESS].to(outputs[G.STRESS])
        return errors

    def _force_mask(self, batch) -> torch.Tensor:
        """Atoms [N] (bool) whose forces count: see :attr:`PotentialSettings.forces_on`."""
        if self.settings.forces_on == "free" and G.FIXED in batch:
            return ~batch[G.FIXED].bool()
        return torch.ones(batch[G.Z].shape[0], dtype=torch.bool, device=batch[G.Z].device)

    def loss(self, outputs: dict, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        errors = self._errors(outputs, batch)
        square = self.settings.loss == "mse"
        terms, total = {}, 0.0
        for name, (quantity, weight) in self.settings.terms().items():
            if weight > 0 and quantity in errors and errors[quantity].numel():
                error = errors[quantity]
                terms[f"{name}_{self.settings.loss}"] = (error**2 if square else error.abs()).mean()
                total = total + weight * terms[f"{name}_{self.settings.loss}"]
        return total, terms

    def accumulate(self, outputs: dict, batch, stage: str) -> None:
        for name, error in self._errors(outputs, batch).items():
            self.errors.add(name, error)

    def metrics(self, sums: dict[str, tuple[float, float, float]]) -> dict[str, float]:
        metrics = {}
        for name, stats in sums.items():
            if name == "forces_norm":
                continue  # a loss quantity; forces_mae is per component, as the papers report
            mae, rmse = mae_rmse(stats)
            metrics[f"{name}_mae"] = EV_TO_MEV * mae
            if name in ("energy", "forces"):
                metrics[f"{name}_rmse"] = EV_TO_MEV * rmse
        metrics["loss"] = self.settings.combine(sums)
        return metrics

    def test_outputs(self, outputs: dict, batch) -> dict[str, torch.Tensor]:
        kept = {"energy": outputs[G.ENERGY], "energy_ref": batch[G.ENERGY].reshape(-1)}
        if G.FORCES in batch:
            free = self._force_mask(batch)
            kept["forces"] = outputs[G.FORCES][free]
            kept["forces_ref"] = batch[G.FORCES][free]
        return kept

    def figures(self, predictions: dict[str, torch.Tensor], run_dir: Path) -> None:
        """Energies in meV around the reference mean, force components in meV/A."""
        from molfold.train.plots import parity_plot

        arrays = {k: EV_TO_MEV * v.double().numpy() for k, v in predictions.items()}
        offset = arrays["energy_ref"].mean()
        panels = [
            (arrays["energy"] - offset, arrays["energy_ref"] - offset, "energy - mean", "meV")
        ]
        if "forces" in arrays:
            panels.append((arrays["forces"], arrays["forces_ref"], "force component", "meV/A"))
        parity_plot(panels, run_dir / "parity.png")
