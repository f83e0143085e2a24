"""Radius graphs with periodic cells, through vesin.

:func:`build_graph` turns one structure (numbers, positions, optional cell and periodicity) into an
atomic graph (see :mod:`molfold.data.graph`) whose edges are every ordered pair (i, j), i != j or
j a periodic image of i, closer than ``r_max``. vesin handles triclinic cells and cells smaller
than ``r_max``, where a neighbour appears through several images.
"""

from __future__ import annotations

import numpy as np
import torch
import vesin
from torch_geometric.data import Data

from molfold.data import graph as G
from molfold.errors import DataError

MIN_DISTANCE = 0.1
"""Angstrom. Two atoms closer than this are a broken structure, not chemistry."""


def neighbor_list(
    pos: np.ndarray, r_max: float, cell: np.ndarray | None = None, pbc: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs closer than ``r_max``, sorted by centre (then by neighbour).

    Parameters
    ----------
    pos : [N, 3] float, Angstrom
    r_max : cutoff radius, Angstrom
    cell : [3, 3] lattice vectors as rows, Angstrom (ignored where ``pbc`` is False)
    pbc : [3] bool, periodicity along each lattice vector

    Returns
    -------
    edge_index : [2, E] int64, row 0 the neighbour j, row 1 the centre i
    cell_shift : [E, 3] int32 (as vesin gives it): r_ij = pos[j] - pos[i] + cell_shift @ cell
    distance : [E] float64, |r_ij| in Angstrom
    """
    pbc = np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(3)
    box = np.zeros((3, 3)) if cell is None or not pbc.any() else np.asarray(cell, dtype=np.float64)
    # sorted: a centre's edges are contiguous, so a compiled potential takes blocks of centres
    # as slices (molfold.compiled.potential.centre_blocks) instead of sorting every call. One
    # thread: sorting per-thread lists peaks at 114 bytes per edge against 81 (4.7 M edges), in
    # the same time on 2 cores, and memory is what limits large cells; the model dominates time.
    calculator = vesin.NeighborList(cutoff=float(r_max), full_list=True, sorted=True, n_threads=1)
    i, j, shift, distance = calculator.compute(
        points=np.asarray(pos, dtype=np.float64), box=box, periodic=pbc.tolist(), quantities="ijSd"
    )
    edge_index = np.empty((2, len(i)), dtype=np.int64)  # one copy of vesin's size_t indices
    edge_index[0], edge_index[1] = j, i
    return edge_index, shift, distance


def build_graph(
    z: np.ndarray,
    pos: np.ndarray,
    r_max: float | None,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | None = None,
    where: str = "structure",
    allow_isolated: bool = False,
    **targets: np.ndarray | float,
) -> Data:
    """One structure as an atomic graph, with its radius graph unless ``r_max`` is None.

    ``targets`` (``energy`` eV, ``forces`` [N, 3] eV/Angstrom, ``stress`` [3, 3] eV/Angstrom^3, or
    any other named array) are stored as float64 tensors with a leading graph dimension for
    graph-level values. Raises :class:`DataError`, naming ``where``, for bad shapes and
    non-finite values, and (see :func:`add_radius_graph`) for atoms too close or isolated.
    """
    z = np.asarray(z)
    G.validate_structure(z, pos, cell, where)
    pbc_array = np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(3)
    cell_array = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    if pbc_array.any() and abs(np.linalg.det(cell_array)) < 1e-6:
        raise DataError(f"{where}: periodic along {pbc_array.tolist()} but the cell has no volume")
    data = Data(
        z=torch.as_tensor(z, dtype=torch.long),
        pos=torch.as_tensor(np.asarray(pos), dtype=torch.float64),
        cell=torch.as_tensor(cell_array, dtype=torch.float64).unsqueeze(0),
        pbc=torch.as_tensor(pbc_array).unsqueeze(0),
    )
    for name, value in targets.items():
        if value is None:
            continue
        value = np.asarray(value, dtype=np.float64)
        if not np.isfinite(value).all():
            raise DataError(f"{where}: {name} contains NaN or inf")
        tensor = torch.as_tensor(value)
        if name == G.FORCES:
            if tensor.shape != (len(z), 3):
                raise DataError(f"{where}: forces must have shape [{len(z)}, 3], got {value.shape}")
        else:
            tensor = tensor.reshape(1, *tensor.shape)
        data[name] = tensor
    if r_max is None:
        return data
    return add_radius_graph(data, r_max, where, allow_isolated)


def add_radius_graph(
    data: Data, r_max: float, where: str = "structure", allow_isolated: bool = False
) -> Data:
    """``data`` with ``edge_index`` [2, E] and ``edge_cell_shift`` [E, 3]: every ordered pair
    closer than ``r_max`` (Angstrom), through periodic images (vesin).

    Raises :class:`DataError`, naming ``where``, for atoms closer than :data:`MIN_DISTANCE` and,
    unless ``allow_isolated``, atoms with no neighbour inside ``r_max`` (a dissociating atom in a
    simulation is legitimate; in a training set it is usually an error). A molecule without a
    cell (QM9, GEOM) gets the zero cell and no periodicity.
    """
    if G.CELL not in data:
        data[G.CELL] = torch.zeros(1, 3, 3, dtype=data[G.POS].dtype)
        data[G.PBC] = torch.zeros(1, 3, dtype=torch.bool)
    pos = data[G.POS].detach().cpu().double().numpy()
    cell = data[G.CELL].reshape(3, 3).detach().cpu().double().numpy()
    pbc = data[G.PBC].reshape(3).cpu().numpy()
    edge_index, shift, distance = neighbor_list(pos, r_max, cell, pbc)
    if len(distance) and distance.min() < MIN_DISTANCE:
        k = int(distance.argmin())
        raise DataError(
            f"{where}: atoms {edge_index[1, k]} and {edge_index[0, k]} are {distance[k]:.3g} A "
            f"apart (less than {MIN_DISTANCE} A); the structure is broken"
        )
    isolated = np.flatnonzero(np.bincount(edge_index[1], minlength=len(pos)) == 0)
    if len(isolated) and len(pos) > 1 and not allow_isolated:
        raise DataError(
            f"{where}: atoms {isolated.tolist()[:10]} have no neighbour within r_max = {r_max} A"
        )
    data[G.EDGE_INDEX] = torch.as_tensor(edge_index)
    data[G.EDGE_CELL_SHIFT] = torch.as_tensor(shift, dtype=torch.float64)
    return data


def atoms_to_graph(
    atoms, r_max: float | None, where: str = "structure", allow_isolated: bool = False, **targets
) -> Data:
    """An :class:`ase.Atoms` as an atomic graph (see :func:`build_graph`)."""
    pbc = atoms.get_pbc()
    return build_graph(
        atoms.get_atomic_numbers(),
        atoms.get_positions(),
        r_max,
        cell=np.asarray(atoms.get_cell()) if pbc.any() else None,
        pbc=pbc,
        where=where,
        allow_isolated=allow_isolated,
        **targets,
    )
