"""Weighted energy/forces/stress loss of a potential.

loss = w_E mean(((E_pred - E) / N_atoms)^2) + w_F mean((F_pred - F)^2) + w_S mean((S_pred - S)^2)

Energies enter per atom, so the weights do not depend on system size (the nequip/Allegro
convention, ``PerAtomMSELoss``). Units: eV^2/atom^2, eV^2/A^2, eV^2/A^6.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from molfold.data import graph as G


@dataclass(frozen=True)
class LossWeights:
    energy: float = 1.0
    forces: float = 1.0
    stress: float = 0.0

    def combine(self, mean_squares: dict[str, float]) -> float:
        """The loss from whole-set mean squared errors (``energy_per_atom``, ``forces``,
        ``stress``): the same value whatever the batching or the number of processes."""
        return (
            self.energy * mean_squares.get("energy_per_atom", 0.0)
            + self.forces * mean_squares.get("forces", 0.0)
            + self.stress * mean_squares.get("stress", 0.0)
        )

    def __post_init__(self) -> None:
        if (
            min(self.energy, self.forces, self.stress) < 0
            or self.energy + self.forces + self.stress == 0
        ):
            raise ValueError(f"loss weights must be >= 0 and not all zero, got {self}")


def potential_loss(
    prediction: dict[str, torch.Tensor], batch, weights: LossWeights
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its terms, for a batch with ``energy``/``forces``/``stress`` targets."""
    terms: dict[str, torch.Tensor] = {}
    if weights.energy > 0:
        atoms = torch.bincount(batch[G.BATCH], minlength=batch.num_graphs).to(prediction[G.ENERGY])
        target = batch[G.ENERGY].reshape(-1).to(prediction[G.ENERGY])
        terms["energy"] = (((prediction[G.ENERGY] - target) / atoms) ** 2).mean()
    if weights.forces > 0:
        terms["forces"] = (
            (prediction[G.FORCES] - batch[G.FORCES].to(prediction[G.FORCES])) ** 2
        ).mean()
    if weights.stress > 0 and G.STRESS in batch:
        terms["stress"] = (
            (prediction[G.STRESS] - batch[G.STRESS].to(prediction[G.STRESS])) ** 2
        ).mean()
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, terms
