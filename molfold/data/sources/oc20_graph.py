"""One OC20 structure as a molfold graph: the fields every OC20 layout is turned into.

======================  ==========  ===========  ==========================================
field                   shape       unit         from
======================  ==========  ===========  ==========================================
``pos``                 [N, 3]      Angstrom     positions (float64)
``z``                   [N]         --           atomic numbers (int64; OC20 LMDBs store
                                                 them as floats, checked to be integers)
``cell``                [1, 3, 3]   Angstrom     lattice vectors as rows
``pbc``                 [1, 3]      --           periodicity (OC20 LMDBs store none: all True)
``tags``                [N]         --           0 sub-surface, 1 surface, 2 adsorbate (int64)
``fixed``               [N]         --           fixed in the relaxation (bool)
``sid``, ``fid``        [1]         --           system and frame ids (int64; -1 when absent)
``energy``              [1]         eV           S2EF: energy (adsorption or total)
``forces``              [N, 3]      eV/Angstrom  S2EF: forces
``target``              [1, 1]      eV           IS2RE: relaxed adsorption energy
``energy_init``         [1]         eV           IS2RE, when stored: initial energy
``pos_relaxed``         [N, 3]      Angstrom     IS2RE, when stored: relaxed positions
======================  ==========  ===========  ==========================================

OC20 is computed and distributed in eV and Angstrom (fairchem's documentation and
``preprocess_ef.py``, which stores ASE's values, eV and eV/Angstrom, unconverted), molfold's own
units, so nothing is converted. Field names are the constants of :mod:`molfold.data.graph`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase.constraints import FixAtoms
from torch_geometric.data import Data

from molfold.data import graph as G
from molfold.data.neighbors import build_graph
from molfold.errors import DataError

MISSING_ID = -1
"""``sid`` / ``fid`` of a structure that does not store it."""


def oc20_graph(
    *,
    z: Any,
    pos: Any,
    cell: Any,
    pbc: Any,
    tags: Any,
    fixed: Any,
    sid: int,
    fid: int,
    where: str,
    energy: Any = None,
    forces: Any = None,
    target: Any = None,
    energy_init: Any = None,
    pos_relaxed: Any = None,
) -> Data:
    """The graph of one structure (fields of the module docstring; None leaves a field out).

    ``z`` [N] integer-valued, ``pos`` [N, 3], ``cell`` [3, 3] or [1, 3, 3], ``pbc`` [3],
    ``tags`` [N] integer-valued, ``fixed`` [N] bool or 0/1 (None: nothing fixed), ``energy``,
    ``target``, ``energy_init`` one number each. Raises :class:`DataError` naming ``where`` for
    bad shapes, non-integer atomic numbers or tags, and NaN or inf values.
    """
    z = _integers(z, "atomic numbers", where)
    n_atoms = len(z)
    cell = _floats(cell, "cell", where)
    if cell.shape == (1, 3, 3):
        cell = cell[0]
    data = build_graph(
        z,
        _floats(pos, "positions", where),
        None,
        cell=cell,
        pbc=to_numpy(pbc).astype(bool),
        where=where,
        **{
            G.ENERGY: _number(energy, "energy", where),
            G.FORCES: None if forces is None else _floats(forces, "forces", where),
            G.ENERGY_INIT: _number(energy_init, "energy_init", where),
        },
    )
    tags = _integers(tags, "tags", where)
    if tags.shape != (n_atoms,):
        raise DataError(f"{where}: tags must have shape [{n_atoms}], got {tags.shape}")
    data[G.TAGS] = torch.as_tensor(tags)
    data[G.FIXED] = torch.as_tensor(_mask(fixed, n_atoms, where))
    data[G.SID] = torch.tensor([sid], dtype=torch.long)
    data[G.FID] = torch.tensor([fid], dtype=torch.long)
    if target is not None:
        value = _number(target, "target", where)
        if not np.isfinite(value):
            raise DataError(f"{where}: target contains NaN or inf")
        data[G.TARGET] = torch.tensor([[value]], dtype=torch.float64)
    if pos_relaxed is not None:
        relaxed = _floats(pos_relaxed, "pos_relaxed", where)
        if relaxed.shape != (n_atoms, 3) or not np.isfinite(relaxed).all():
            raise DataError(
                f"{where}: pos_relaxed must be finite with shape [{n_atoms}, 3], "
                f"got {relaxed.shape}"
            )
        data[G.POS_RELAXED] = torch.as_tensor(relaxed)
    return data


def to_numpy(value: Any) -> np.ndarray:
    """A tensor, NumPy value, number or nested list as a NumPy array (tensors copied off any
    autograd graph)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _floats(value: Any, name: str, where: str) -> np.ndarray:
    array = to_numpy(value)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where}: {name} must be numbers, got dtype {array.dtype}")
    return array.astype(np.float64)


def _integers(value: Any, name: str, where: str) -> np.ndarray:
    """An array of integer values (stored as integers or as integral floats) as int64."""
    array = to_numpy(value)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or (array != np.rint(array)).any():
            raise DataError(f"{where}: {name} must be whole numbers, got {array[:10]}")
        array = np.rint(array)
    elif array.dtype.kind not in "biu":
        raise DataError(f"{where}: {name} must be integers, got dtype {array.dtype}")
    return array.astype(np.int64)


def _mask(value: Any, n_atoms: int, where: str) -> np.ndarray:
    if value is None:
        return np.zeros(n_atoms, dtype=bool)
    array = to_numpy(value).reshape(-1)
    if array.shape != (n_atoms,) or not np.isin(array, (0, 1)).all():
        raise DataError(f"{where}: fixed must be {n_atoms} values 0/1, got {array[:10]}")
    return array.astype(bool)


def _number(value: Any, name: str, where: str) -> float | None:
    """One number (a scalar, or an array or tensor of one element) as a float, or None."""
    if value is None:
        return None
    array = to_numpy(value)
    if array.size != 1 or array.dtype.kind not in "biuf":
        raise DataError(f"{where}: {name} must be one number, got {array!r}")
    return float(array.reshape(()))


def integer_id(value: Any, name: str, where: str) -> int:
    """A system or frame id stored as an int, a one-element tensor/array, or a string such as
    ``"random1234"`` (digits after a prefix); None gives :data:`MISSING_ID`."""
    if value is None:
        return MISSING_ID
    if isinstance(value, str):
        digits = value.lstrip("abcdefghijklmnopqrstuvwxyz_")
        if digits.isdigit():
            return int(digits)
        raise DataError(f"{where}: {name} {value!r} is not an integer id")
    array = to_numpy(value)
    if array.size != 1 or (array.dtype.kind not in "iub" and not _integral_float(array)):
        raise DataError(f"{where}: {name} must be one integer, got {value!r}")
    return int(array.reshape(()))


def _integral_float(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" and bool(np.isfinite(array).all()) and (array % 1 == 0).all()


def fixed_atoms(constraints: list, n_atoms: int) -> np.ndarray:
    """[N] bool: the atoms an ASE ``FixAtoms`` constraint holds (OC20 fixes whole atoms only;
    other constraint types are ignored)."""
    mask = np.zeros(n_atoms, dtype=bool)
    for constraint in constraints:
        if isinstance(constraint, FixAtoms):
            mask[constraint.get_indices()] = True
    return mask
