"""Metric sums over a whole split, exact across batches and processes, and their table.

Every task reports errors as means over the whole split (not averages of batch averages): it
adds absolute and squared errors to :class:`ErrorSums`, whose sums reduce across DDP ranks by
summation, so that a run on k processes reports what one process would.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Reduce = Callable[[torch.Tensor], torch.Tensor]


class ErrorSums:
    """For each named quantity, the sum of |error|, the sum of error^2 and the count (float64)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, name: str, errors: torch.Tensor) -> None:
        """Add every element of ``errors`` (any shape) to quantity ``name``."""
        errors = errors.detach().double().reshape(-1)
        stats = torch.stack(
            [errors.abs().sum(), (errors**2).sum(), errors.new_tensor(errors.numel())]
        )
        self.add_sums(name, stats)

    def add_sums(self, name: str, stats: torch.Tensor) -> None:
        """Add precomputed ``[sum |e|, sum e^2, count]`` to quantity ``name``."""
        stats = stats.detach().double()
        self.sums[name] = (
            self.sums[name] + stats.to(self.sums[name]) if name in self.sums else stats
        )

    def reduced(self, reduce: Reduce | None = None) -> dict[str, tuple[float, float, float]]:
        """``{name: (sum |e|, sum e^2, count)}``, summed across processes by ``reduce``."""
        names = sorted(self.sums)
        if not names:
            return {}
        stacked = torch.stack([self.sums[name] for name in names])
        if reduce is not None:
            stacked = reduce(stacked)
        return {name: tuple(row.tolist()) for name, row in zip(names, stacked.cpu())}

    def reset(self) -> None:
        self.sums = {}


def mae_rmse(stats: tuple[float, float, float]) -> tuple[float, float]:
    """Mean absolute and root-mean-square error from ``(sum |e|, sum e^2, count)``."""
    abs_sum, square_sum, count = stats
    return abs_sum / count, (square_sum / count) ** 0.5


def format_table(metrics: dict[str, float], title: str = "", units: dict | None = None) -> str:
    """Aligned table of metric, value and unit (``units``: name -> unit)."""
    units = units or {}
    rows = [(name, f"{value:.4g}", units.get(name, "")) for name, value in metrics.items()]
    width = max([len(r[0]) for r in rows] + [6])
    rule = "-" * (width + 24)
    lines = [title, rule] if title else [rule]
    lines += [f"{name:<{width}}  {value:>12}  {unit}" for name, value, unit in rows]
    lines.append(rule)
    return "\n".join(lines)
