"""Training-set statistics that set a model's scale: per-species energy shifts, force RMS,
average numbers of neighbours and atoms, target means and standard deviations.

These are computed from the training split only, once, and stored in the checkpoint. Their names
are what configs interpolate, ``${statistics:avg_num_neighbors}`` (resolved by
:func:`molfold.train.run.train` once the training split is known), as nequip's
``${training_data_stats:...}``. Everything is read in one pass over the structures
(:func:`scan`), as a lazy source (OC20) reads each structure from disk again on every pass.

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
from dataclasses import dataclass

import numpy as np
from torch_geometric.data import Data
from tqdm import tqdm

from molfold.data import graph as G
from molfold.errors import DataError

PROGRESS_MIN_STRUCTURES = 5000
"""Scans of at least this many structures show a progress bar."""

ENERGY_SHIFT_METHODS = ("mean_per_atom", "least_squares")


@dataclass(frozen=True)
class Scan:
    """What the statistics need of each structure, gathered in one pass (:func:`scan`).

    ``species`` sorted atomic numbers; ``composition`` [S, T] atoms of each species per
    structure; ``energies`` [S] eV (None unless every structure has one); ``targets`` [S, T']
    (None unless every structure has them); ``force_squares`` and ``force_components``: sums over
    the force components (0 without forces); ``edges``: number of edges of the radius graph."""

    species: list[int]
    composition: np.ndarray
    energies: np.ndarray | None
    targets: np.ndarray | None
    force_squares: float
    force_components: int
    edges: int

    @property
    def num_atoms(self) -> np.ndarray:
        return self.composition.sum(axis=1)


class ScanTally:
    """The running totals behind a :class:`Scan`, one :meth:`add` per structure (``molfold data
    inspect`` keeps its own extras beside them)."""

    def __init__(self) -> None:
        self.counts: list[dict[int, int]] = []
        self.energies: list[float | None] = []
        self.targets: list[np.ndarray] = []
        self.force_squares, self.force_components, self.edges = 0.0, 0, 0

    def add(self, graph: Data) -> None:
        z = graph[G.Z].reshape(-1)
        self.counts.append(dict(zip(*(v.tolist() for v in z.unique(return_counts=True)))))
        self.energies.append(float(graph[G.ENERGY].reshape(-1)[0]) if G.ENERGY in graph else None)
        if G.TARGET in graph:
            self.targets.append(graph[G.TARGET].double().reshape(-1).numpy())
        if G.FORCES in graph:
            self.force_squares += float((graph[G.FORCES].double() ** 2).sum())
            self.force_components += graph[G.FORCES].numel()
        if G.EDGE_INDEX in graph:
            self.edges += graph[G.EDGE_INDEX].shape[1]

    def result(self) -> Scan:
        species = sorted({z for count in self.counts for z in count})
        composition = np.array([[count.get(z, 0) for z in species] for count in self.counts])
        return Scan(
            species=species,
            composition=composition.reshape(len(self.counts), len(species)),
            energies=None if None in self.energies else np.array(self.energies),
            targets=np.stack(self.targets) if len(self.targets) == len(self.counts) else None,
            force_squares=self.force_squares,
            force_components=self.force_components,
            edges=self.edges,
        )


def scan(graphs: Sequence[Data]) -> Scan:
    """Read each structure of ``graphs`` once (a progress bar for large sets)."""
    if len(graphs) == 0:
        raise DataError("the training set is empty")
    tally = ScanTally()
    quiet = len(graphs) < PROGRESS_MIN_STRUCTURES
    for k in tqdm(range(len(graphs)), desc="statistics", unit="structure", disable=quiet):
        tally.add(graphs[k])
    return tally.result()


def species_of(graphs: Sequence[Data]) -> list[int]:
    """Sorted atomic numbers present in ``graphs``."""
    return sorted({int(z) for k in range(len(graphs)) for z in graphs[k][G.Z].unique()})


def per_species_energy_shifts(found: Scan) -> np.ndarray:
    """Least-squares per-element energies e_s with E ~ sum_s n_s e_s, eV, shape [T].

    When the composition matrix is rank deficient (e.g. MD17: one molecule), this is the
    minimum-norm solution, which spreads the mean energy over the elements in proportion.
    """
    shifts, *_ = np.linalg.lstsq(found.composition, found.energies, rcond=None)
    return shifts


def structure_statistics(found: Scan) -> dict:
    """What every model's scale is set from: ``species``, ``avg_num_neighbors`` (edges per
    atom), ``avg_num_atoms`` (atoms per structure, Equiformer's readout divisor) and
    ``num_structures`` of a training set (with its edges attached)."""
    return {
        "species": found.species,
        "avg_num_neighbors": found.edges / float(found.num_atoms.sum()),
        "num_structures": len(found.composition),
        "avg_num_atoms": float(found.num_atoms.mean()),
    }


def fit_statistics(graphs: Sequence[Data], energy_shifts: str = "mean_per_atom") -> dict:
    """Species, per-species shifts (eV, by ``energy_shifts``: see the module docstring), energy
    scale (eV; force RMS when forces are known, else the per-atom energy residual RMS) and the
    average neighbour and atom counts of a training set."""
    if energy_shifts not in ENERGY_SHIFT_METHODS:
        raise ValueError(
            f"energy_shifts must be one of {ENERGY_SHIFT_METHODS}, got {energy_shifts!r}"
        )
    found = scan(graphs)
    if found.energies is None:
        raise DataError("every training structure needs an energy to fit per-species shifts")
    per_atom_mean = float(np.mean(found.energies / found.num_atoms))
    if energy_shifts == "least_squares":
        shifts = per_species_energy_shifts(found)
    else:
        shifts = np.full(len(found.species), per_atom_mean)
    if found.force_components and found.force_components == 3 * found.num_atoms.sum():
        scale = (found.force_squares / found.force_components) ** 0.5
    else:
        residual = (found.energies - found.composition @ shifts) / found.num_atoms
        scale = float(np.sqrt(np.mean(np.square(residual))))
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    return {
        "species": found.species,
        "energy_shifts": [float(s) for s in shifts],
        "energy_scale": float(scale),
        "energy_shift_method": energy_shifts,
        "per_atom_energy_mean": per_atom_mean,
        **structure_statistics(found),
    }


def property_statistics(
    graphs: Sequence[Data], names: Sequence[str], units: Sequence[str], standardize: bool = True
) -> dict:
    """:func:`structure_statistics` and ``targets``: names, units, and the mean and standard
    deviation of each column of the ``target`` field ([1, T] per structure), as
    :class:`~molfold.models.property.PropertyModel` takes them; ``standardize=False`` gives means
    0 and stds 1 (a target trained as it is)."""
    found = scan(graphs)
    if found.targets is None:
        raise DataError("every training structure needs its target")
    if found.targets.shape[1] != len(names):
        raise DataError(f"the structures carry {found.targets.shape[1]} targets, expected {names}")
    means, stds = found.targets.mean(axis=0), found.targets.std(axis=0)
    if not standardize:
        means, stds = np.zeros_like(means), np.ones_like(stds)
    stds = np.where(stds > 0, stds, 1.0)
    targets = {
        "names": list(names),
        "units": list(units),
        "means": [float(m) for m in means],
        "stds": [float(s) for s in stds],
    }
    return {**structure_statistics(found), "targets": targets}
