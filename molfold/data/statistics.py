"""Training-set statistics that set a model's scale: per-species energy shifts, force RMS,
average numbers of neighbours and atoms, target means and standard deviations.

These are computed from the training split only, once, and stored in the checkpoint. Their names
are what configs interpolate, ``${statistics:avg_num_neighbors}`` (resolved by
:func:`molfold.train.run.train` once the training split is known), as nequip's
``${training_data_stats:...}``.

Per-species energy shifts, two ways (``task.energy_shifts``):

* ``mean_per_atom`` (default): every species gets the mean over training structures of
  E_k / N_k, as the nequip/Allegro tutorials
  (``per_type_energy_shifts: ${training_data_stats:per_atom_energy_mean}``);
* ``least_squares``: per-element energies e_s with E ~ sum_s n_s e_s. Meaningful only with many
  compositions; on single-molecule data (MD17) the system is rank deficient and the
  minimum-norm solution spreads the energy over the elements arbitrarily.
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


def per_atom_energy_mean(graphs: Sequence[Data]) -> float:
    """Mean over structures of energy / number of atoms, eV."""
    return float(np.mean([float(g[G.ENERGY].reshape(-1)[0]) / g.num_nodes for g in graphs]))


ENERGY_SHIFT_METHODS = ("mean_per_atom", "least_squares")


def force_rms(graphs: Sequence[Data]) -> float:
    """Root mean square of all force components, eV/Angstrom."""
    squares = sum(float((graph[G.FORCES] ** 2).sum()) for graph in graphs)
    components = sum(graph[G.FORCES].numel() for graph in graphs)
    return (squares / components) ** 0.5


def fit_statistics(graphs: Sequence[Data], energy_shifts: str = "mean_per_atom") -> dict:
    """Species, per-species shifts (eV, by ``energy_shifts``: see the module docstring), energy
    scale (eV; force RMS when forces are known, else the per-atom energy residual RMS) and the
    average neighbour count of a training set."""
    if energy_shifts not in ENERGY_SHIFT_METHODS:
        raise ValueError(
            f"energy_shifts must be one of {ENERGY_SHIFT_METHODS}, got {energy_shifts!r}"
        )
    if len(graphs) == 0:
        raise DataError("the training set is empty")
    if any(G.ENERGY not in graph for graph in graphs):
        raise DataError("every training structure needs an energy to fit per-species shifts")
    species = species_of(graphs)
    if energy_shifts == "least_squares":
        shifts = per_species_energy_shifts(graphs, species)
    else:
        shifts = np.full(len(species), per_atom_energy_mean(graphs))
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
        "energy_shift_method": energy_shifts,
        "per_atom_energy_mean": per_atom_energy_mean(graphs),
        **structure_statistics(graphs),
    }


def structure_statistics(graphs: Sequence[Data]) -> dict:
    """What every model's scale is set from: ``species``, ``avg_num_neighbors`` (edges per
    atom), ``avg_num_atoms`` (atoms per structure, Equiformer's readout divisor) and
    ``num_structures`` of a training set (with its edges attached)."""
    if len(graphs) == 0:
        raise DataError("the training set is empty")
    return {
        "species": species_of(graphs),
        "avg_num_neighbors": average_num_neighbors(graphs),
        "num_structures": len(graphs),
        "avg_num_atoms": float(np.mean([g.num_nodes for g in graphs])),
    }


def target_statistics(
    graphs: Sequence[Data], names: Sequence[str], units: Sequence[str], standardize: bool = True
) -> dict:
    """Names, units, and the mean and standard deviation over ``graphs`` of each column of the
    ``target`` field ([1, T] per structure), as :class:`~molfold.models.property.PropertyModel`
    takes them; ``standardize=False`` gives means 0 and stds 1 (a target trained as it is)."""
    if any(G.TARGET not in graph for graph in graphs):
        raise DataError("every training structure needs its target")
    values = np.concatenate([graph[G.TARGET].double().reshape(1, -1).numpy() for graph in graphs])
    if values.shape[1] != len(names):
        raise DataError(f"the structures carry {values.shape[1]} targets, expected {list(names)}")
    means, stds = values.mean(axis=0), values.std(axis=0)
    if not standardize:
        means, stds = np.zeros_like(means), np.ones_like(stds)
    stds = np.where(stds > 0, stds, 1.0)
    return {
        "names": list(names),
        "units": list(units),
        "means": [float(m) for m in means],
        "stds": [float(s) for s in stds],
    }
