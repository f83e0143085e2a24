"""Error metrics for energies and forces, accumulated over an epoch, and their table.

Reported in meV (energy per structure, as the MD17 literature), meV/atom, and meV/Angstrom.
"""

from __future__ import annotations

import torch

from molfold.data import graph as G

EV_TO_MEV = 1000.0
UNITS = {
    "energy_mae": "meV",
    "energy_rmse": "meV",
    "energy_per_atom_mae": "meV/atom",
    "forces_mae": "meV/A",
    "forces_rmse": "meV/A",
    "stress_mae": "meV/A^3",
    "loss": "",
}


class ErrorAccumulator:
    """Sums of absolute and squared errors, so that per-epoch metrics are exact (not averages of
    batch averages) and can be reduced across processes by summation."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.mean_squares: dict[str, float] = {}  # eV^2 units, set by compute()

    def add(self, name: str, error: torch.Tensor) -> None:
        error = error.detach().double().reshape(-1)
        stats = torch.stack([error.abs().sum(), (error**2).sum(), error.new_tensor(error.numel())])
        self.sums[name] = self.sums[name] + stats if name in self.sums else stats

    def add_batch(self, prediction: dict[str, torch.Tensor], batch) -> None:
        if G.ENERGY in batch:
            error = prediction[G.ENERGY] - batch[G.ENERGY].reshape(-1).to(prediction[G.ENERGY])
            self.add("energy", error)
            self.add("energy_per_atom", error / torch.bincount(batch[G.BATCH]).to(error))
        if G.FORCES in batch:
            self.add("forces", prediction[G.FORCES] - batch[G.FORCES].to(prediction[G.FORCES]))
        if G.STRESS in batch and G.STRESS in prediction:
            self.add("stress", prediction[G.STRESS] - batch[G.STRESS].to(prediction[G.STRESS]))

    def compute(self, reduce=None) -> dict[str, float]:
        """MAE and RMSE of each quantity in meV units; ``reduce`` sums tensors across processes.

        Also keeps the mean squared errors (eV units) in :attr:`mean_squares`.
        """
        metrics = {}
        self.mean_squares = {}
        for name, stats in sorted(self.sums.items()):
            if reduce is not None:
                stats = reduce(stats)
            abs_sum, sq_sum, count = stats.tolist()
            self.mean_squares[name] = sq_sum / count
            metrics[f"{name}_mae"] = EV_TO_MEV * abs_sum / count
            if name in ("energy", "forces"):
                metrics[f"{name}_rmse"] = EV_TO_MEV * (sq_sum / count) ** 0.5
        return metrics

    def reset(self) -> None:
        self.sums = {}


def format_table(metrics: dict[str, float], title: str = "", units: dict | None = None) -> str:
    """Aligned two-column table of metric, value and unit (``units``: name -> unit)."""
    units = UNITS if units is None else units
    rows = [(name, f"{value:.4g}", units.get(name, "")) for name, value in metrics.items()]
    width = max([len(r[0]) for r in rows] + [6])
    lines = [title, "-" * (width + 24)] if title else ["-" * (width + 24)]
    lines += [f"{name:<{width}}  {value:>12}  {unit}" for name, value, unit in rows]
    lines.append("-" * (width + 24))
    return "\n".join(lines)
