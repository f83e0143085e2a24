"""Training-set statistics that set a potential's scale: per-species energy shifts, force RMS,
average number of neighbours.

These are computed from the training split only, once, and stored in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch_geometric.data import Data

from molfold.data import graph as G
from molfold.errors import DataError


def species_of(graphs: Sequence[Data]) -> list[int]:
    """Sorted atomic numbers present in ``graphs``."""
    return sorted({int(z) for graph in graphs for z in graph[G.Z].unique()})


def average_num_neighbors(graphs: Sequence[Data]) -> float:
    """Mean number of neighbours within r_max per atom."""
    edges = sum(graph[G.EDGE_INDEX].shape[1] for graph in graphs)
    atoms = sum(graph.num_nodes for graph in graphs)
    return edges / atoms


def per_species_energy_shifts(graphs: Sequence[Data], species: Sequence[int]) -> np.ndarray:
    """Least-squares per-element energies e_s with E ~ sum_s n_s e_s, eV, shape [T].

    When the composition matrix is rank deficient (e.g. MD17: one molecule), this is the
    minimum-norm solution, which spreads the mean energy over the elements in proportion.
    """
    counts = np.zeros((len(graphs), len(species)))
    index = {z: t for t, z in enumerate(species)}
    energies = np.empty(len(graphs))
    for row, graph in enumerate(graphs):
        for z, n in zip(*np.unique(graph[G.Z].numpy(), return_counts=True)):
            counts[row, index[int(z)]] = n
        energies[row] = float(graph[G.ENERGY].reshape(-1)[0])
    shifts, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return shifts


def force_rms(graphs: Sequence[Data]) -> float:
    """Root mean square of all force components, eV/Angstrom."""
    squares = sum(float((graph[G.FORCES] ** 2).sum()) for graph in graphs)
    components = sum(graph[G.FORCES].numel() for graph in graphs)
    return (squares / components) ** 0.5


def fit_statistics(graphs: Sequence[Data]) -> dict:
    """Species, per-species shifts (eV), energy scale (eV; force RMS when forces are known, else
    the per-atom energy residual RMS) and the average neighbour count of a training set."""
    if len(graphs) == 0:
        raise DataError("the training set is empty")
    if any(G.ENERGY not in graph for graph in graphs):
        raise DataError("every training structure needs an energy to fit per-species shifts")
    species = species_of(graphs)
    shifts = per_species_energy_shifts(graphs, species)
    if all(G.FORCES in graph for graph in graphs):
        scale = force_rms(graphs)
    else:
        residual = [
            (
                float(g[G.ENERGY].reshape(-1)[0])
                - float(shifts[[species.index(int(z)) for z in g[G.Z]]].sum())
            )
            / g.num_nodes
            for g in graphs
        ]
        scale = float(np.sqrt(np.mean(np.square(residual))))
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    return {
        "species": species,
        "energy_shifts": [float(s) for s in shifts],
        "energy_scale": float(scale),
        "avg_num_neighbors": average_num_neighbors(graphs),
        "num_structures": len(graphs),
    }
