"""Figures a user looks at after training: parity plots and learning curves (PNG).

Drawn on :class:`matplotlib.figure.Figure` objects directly (no pyplot, no global backend
switch), and written atomically.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from molfold.io import atomic_write


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda file: fig.savefig(file, format="png", dpi=150, bbox_inches="tight"))


def parity_plot(panels: list[tuple[np.ndarray, np.ndarray, str, str]], path: Path) -> None:
    """Predicted vs reference values, one panel per ``(predicted, reference, label, unit)``,
    each titled with its MAE in ``unit`` (the values' own unit)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(panels), 4.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (pred, ref, label, unit) in zip(axes, panels):
        pred, ref = np.ravel(pred), np.ravel(ref)
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(ref, pred, s=3, alpha=0.4, color="tab:blue", rasterized=True)
        mae = np.abs(pred - ref).mean()
        ax.set(
            xlabel=f"reference {label} ({unit})",
            ylabel=f"predicted {label} ({unit})",
            title=f"MAE {mae:.3g} {unit}",
        )
        ax.set_aspect("equal")
    fig.suptitle("Test set parity")
    _save(fig, path)


def learning_curves(metrics_csv: Path, path: Path, curves: tuple) -> None:
    """Per-epoch curves from Lightning's ``metrics.csv``: ``curves`` = (left keys, right keys,
    (left label, right label)), as each task's ``curves`` gives them."""
    from matplotlib.figure import Figure

    left, right, labels = curves
    with open(metrics_csv) as file:
        rows = list(csv.DictReader(file))
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        for key in (*left, *right):
            if row.get(key) not in (None, "") and row.get("epoch") not in (None, ""):
                series.setdefault(key, []).append((float(row["epoch"]), float(row[key])))
    if not series:
        return
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for key, points in series.items():
        ax = axes[1] if key in right else axes[0]
        epochs, values = zip(*points)
        ax.plot(epochs, values, marker=".", label=key)
    axes[0].set(xlabel="epoch", ylabel=labels[0], yscale="log", title="training")
    axes[1].set(xlabel="epoch", ylabel=labels[1], yscale="log", title="validation")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    _save(fig, path)
