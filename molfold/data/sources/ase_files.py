"""Bring your own data: structures from any file ASE reads (extxyz, ...) and from ASE databases.

Each structure becomes an atomic graph (see :mod:`molfold.data.graph`). Targets are looked up by
key, in this order, in

1. the results of a calculator attached to the structure (ASE's extxyz reader and ASE databases
   put ``energy``, ``forces`` and ``stress`` there when they were written from a calculator),
2. ``atoms.info`` (per-structure values, e.g. ``REF_energy=...`` in an extxyz comment line),
3. ``atoms.arrays`` (per-atom columns, e.g. ``REF_forces``),
4. for ASE databases, the row's ``key_value_pairs`` and ``data``.

=========  =================================  ============================  ================
target     shape in the file                  source unit                   unit after load
=========  =================================  ============================  ================
positions  [N, 3]                             ``length_unit``               Angstrom
cell       [3, 3]                             ``length_unit``               Angstrom
energy     scalar                             ``energy_unit``               eV
forces     [N, 3]                             energy_unit / length_unit     eV/Angstrom
stress     [6] (Voigt xx yy zz yz xz xy),     energy_unit / length_unit^3   eV/Angstrom^3
           [9] or [3, 3]
=========  =================================  ============================  ================

Unit factors are :data:`molfold.units.ENERGY_UNITS` (eV per ``eV``, ``meV``, ``Hartree``,
``kcal/mol``, ``kJ/mol``) and :data:`molfold.units.LENGTH_UNITS` (Angstrom per ``Angstrom``,
``Bohr``, ``nm``), from the CODATA 2014 constants as in :mod:`ase.units`; unit names match
case-insensitively. Stress keeps ASE's sign convention, (1/V) dE/d(strain).
"""

from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase.db
import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.io.formats import filetype, get_compression, open_with_compression, string2index
from ase.stress import voigt_6_to_full_3x3_stress
from torch_geometric.data import Data
from tqdm import tqdm

from molfold.data import graph as G
from molfold.data.neighbors import atoms_to_graph
from molfold.data.sources import register_source
from molfold.errors import ConfigError, DataError, MissingFileError
from molfold.units import ENERGY_UNITS, LENGTH_UNITS

DB_SUFFIXES = (".db",)
"""Files read through :func:`ase.db.connect` (SQLite ASE databases)."""

PROGRESS_MIN_FRAMES = 5000
"""Show a progress bar when converting at least this many structures to graphs."""


def load_ase(
    path: str | os.PathLike,
    r_max: float | None = None,
    energy_key: str | None = "energy",
    forces_key: str | None = "forces",
    stress_key: str | None = None,
    index: str | int = ":",
    energy_unit: str = "eV",
    length_unit: str = "Angstrom",
    group_key: str | None = None,
) -> list[Data]:
    """Structures of an ASE-readable file or ASE database as atomic graphs.

    Parameters
    ----------
    path : extxyz (or any format :func:`ase.io.read` guesses from the name) or ``.db`` database
    r_max : cutoff radius of the radius graph, Angstrom (None: no edges; the datamodule adds
        them with :class:`molfold.data.transforms.RadiusGraph`)
    energy_key, forces_key, stress_key : where the targets are stored (see the module docstring);
        ``None`` skips that target. Every selected structure must have every requested key.
    index : which structures, in ASE's syntax: ``":"`` all, ``"-1"`` the last, ``"::10"`` ...
    energy_unit : one of :data:`molfold.units.ENERGY_UNITS`
    length_unit : one of :data:`molfold.units.LENGTH_UNITS`, for positions, cell, forces and
        stress
    group_key : a per-structure value (``atoms.info``, e.g. a molecule's SMILES) naming the group
        a structure belongs to, stored as the integer ``group`` [1] (groups numbered by first
        appearance), for ``data.split_by=group``: all conformers of a molecule in one split

    Returns
    -------
    One :class:`~torch_geometric.data.Data` per structure with ``z``, ``pos`` [N, 3] Angstrom,
    ``cell`` [1, 3, 3], ``pbc`` [1, 3], the radius graph, the requested targets (``energy`` [1]
    eV, ``forces`` [N, 3] eV/Angstrom, ``stress`` [1, 3, 3] eV/Angstrom^3) and ``frame`` [1]
    int64, the structure's index in the file (and ``group`` [1] int64 with ``group_key``).

    Raises
    ------
    :class:`MissingFileError` (a FileNotFoundError) if ``path`` does not exist;
    :class:`DataError` naming the file (and the
    structure) for an unknown unit, an unreadable, corrupt or empty file, a missing key (listing
    the keys that exist), or bad shapes and values.
    """
    path = Path(path)
    energy_factor = _unit_factor(energy_unit, ENERGY_UNITS, "energy")
    length_factor = _unit_factor(length_unit, LENGTH_UNITS, "length")
    if not path.is_file():
        raise MissingFileError(f"structure file {path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")

    structures = _read(path, index)
    if not structures:
        raise DataError(f"{path}: no structures selected by index {index!r}")
    factors = {
        G.ENERGY: energy_factor,
        G.FORCES: energy_factor / length_factor,
        G.STRESS: energy_factor / length_factor**3,
    }
    keys = {G.ENERGY: energy_key, G.FORCES: forces_key, G.STRESS: stress_key}
    graphs, groups = [], {}
    for frame, atoms, extra in tqdm(
        structures, desc=f"graphs of {path.name}", disable=len(structures) < PROGRESS_MIN_FRAMES
    ):
        where = f"{path} frame {frame}"
        targets = {}
        for name, key in keys.items():
            if key is not None:
                value = _lookup(atoms, extra, key, where)
                if name == G.ENERGY and value.size != 1:
                    raise DataError(
                        f"{where}: energy {key!r} must be one number, got {value.shape}"
                    )
                if name == G.STRESS:
                    value = _full_stress(value, key, where)
                targets[name] = value * factors[name]
        scaled = Atoms(
            numbers=atoms.get_atomic_numbers(),
            positions=atoms.get_positions() * length_factor,
            cell=np.asarray(atoms.get_cell()) * length_factor,
            pbc=atoms.get_pbc(),
        )
        data = atoms_to_graph(scaled, r_max, where=where, **targets)
        data.frame = torch.tensor([frame], dtype=torch.long)
        if group_key is not None:
            if group_key not in atoms.info:
                raise DataError(f"{where}: no {group_key!r} in its info (group_key)")
            label = str(atoms.info[group_key])
            data.group = torch.tensor([groups.setdefault(label, len(groups))], dtype=torch.long)
        graphs.append(data)
    return graphs


def _unit_factor(unit: str, table: dict[str, float], kind: str) -> float:
    """The factor of ``unit`` in ``table``, matching names case-insensitively."""
    for name, factor in table.items():
        if unit.lower() == name.lower():
            return factor
    raise DataError(f"unknown {kind} unit {unit!r}; known: {list(table)}")


def _read(path: Path, index: str | int) -> list[tuple[int, Atoms, dict[str, Any]]]:
    """(index in the file, structure, extra key-value lookups) of each selected structure."""
    try:
        selection = string2index(index) if isinstance(index, str) else index
    except ValueError as error:
        raise DataError(f"{path}: bad index {index!r}: {error}") from error
    # ASE's readers raise many exception types on malformed input (ValueError, IndexError,
    # KeyError, StopIteration, sqlite3.DatabaseError, ...): report any of them as a DataError.
    try:
        if path.suffix.lower() in DB_SUFFIXES:
            entries = _read_db(path)
        else:
            entries = [(atoms, {}) for atoms in read_structures(path)]
    except Exception as error:
        raise DataError(
            f"{path}: cannot read structures (corrupt or unsupported file?): "
            f"{type(error).__name__}: {error}"
        ) from error
    if not entries:
        raise DataError(f"{path}: the file holds no structures")
    try:
        frames = np.atleast_1d(np.arange(len(entries))[selection])
    except IndexError as error:
        raise DataError(
            f"{path}: index {index!r} is out of range for {len(entries)} structures"
        ) from error
    return [(int(k), *entries[k]) for k in frames]


def read_structures(path: Path) -> list[Atoms]:
    """Every structure of a structure file, compressed ones (.gz, .bz2, .xz) read into memory
    first: ASE's readers seek backwards, and a seek in a compressed stream decompresses from the
    start again, which makes a file of thousands of frames take minutes."""
    _, compression = get_compression(str(path))
    if compression is None:
        return ase.io.read(path, index=":")
    with open_with_compression(str(path), "rb") as stream:
        text = stream.read().decode()
    return ase.io.read(io.StringIO(text), index=":", format=filetype(path, read=False))


def _read_db(path: Path) -> list[tuple[Atoms, dict[str, Any]]]:
    """Rows of an ASE database in id order, with their key-value pairs and data for lookups."""
    entries = []
    with ase.db.connect(path, type="db", create_indices=False, use_lock_file=False) as db:
        for row in db.select(sort="id"):
            entries.append((row.toatoms(), {**row.data, **row.key_value_pairs}))
    return entries


def _lookup(atoms: Atoms, extra: dict[str, Any], key: str, where: str) -> np.ndarray:
    """The value stored under ``key`` (see the module docstring) as a float64 array."""
    results = atoms.calc.results if atoms.calc is not None else {}
    for source in (results, atoms.info, atoms.arrays, extra):
        if key in source:
            try:
                return np.asarray(source[key], dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise DataError(f"{where}: {key!r} is not numeric: {error}") from error
    available = sorted(set(results) | set(atoms.info) | set(atoms.arrays) | set(extra))
    raise DataError(f"{where}: key {key!r} not found; keys present: {available}")


def _full_stress(stress: np.ndarray, key: str, where: str) -> np.ndarray:
    """A stress given as a Voigt 6-vector, 9 values or a 3x3 matrix, as a [3, 3] matrix."""
    if stress.shape == (6,):
        return voigt_6_to_full_3x3_stress(stress)
    if stress.shape in ((9,), (3, 3)):
        return stress.reshape(3, 3)
    raise DataError(f"{where}: {key!r} must have 6 (Voigt), 9 or 3x3 values, got {stress.shape}")


@dataclass(frozen=True)
class AseOptions:
    """The keys of ``data=ase`` (see :func:`load_ase`)."""

    index: str = ":"
    energy_key: str = "energy"
    forces_key: str | None = "forces"
    stress_key: str | None = None
    energy_unit: str = "eV"
    length_unit: str = "Angstrom"
    group_key: str | None = None


def structure_files(path: str | os.PathLike) -> list[Path]:
    """``path`` itself, or the files of the folder ``path`` in name order (hidden ones left out)."""
    files = [Path(path)]
    if files[0].is_dir():
        files = sorted(f for f in files[0].iterdir() if f.is_file() and not f.name.startswith("."))
        if not files:
            raise DataError(f"{path}: the folder holds no structure files")
    return files


@register_source("ase", AseOptions, provides=("pos", "z", "energy"))
def load(path: str | None, options: AseOptions, max_structures: int | None) -> list[Data]:
    """Every structure of an ASE-readable file or database, or of every such file in a folder
    (sorted by name; the groups of different files are distinct), at most ``max_structures``."""
    if path is None:
        raise ConfigError("data.path is not set: give the file, e.g. data.path=frames.extxyz")
    graphs, offset = [], 0
    for file in structure_files(path):
        part = load_ase(file, None, **dataclasses.asdict(options))
        for data in part if options.group_key else []:
            data.group += offset
        offset += int(max(d.group for d in part)) + 1 if options.group_key else 0
        graphs += part
        if max_structures and len(graphs) >= max_structures:
            break
    return graphs[:max_structures] if max_structures else graphs
