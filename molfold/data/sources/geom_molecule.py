"""One GEOM molecule (:class:`GeomMolecule`) and the conformer checks both GEOM layouts share.

The layout readers (:mod:`~molfold.data.sources.geom_pickle`,
:mod:`~molfold.data.sources.geom_msgpack`) turn each stored conformer into a row (energy in eV,
Boltzmann weight, geom_id, positions [N, 3] Angstrom, RDKit molecule or None) with the helpers
here, and :func:`ground_state_molecule` sorts the rows into a :class:`GeomMolecule`. Energies are
converted from Hartree with :data:`molfold.units.HARTREE_TO_EV` (CODATA 2014, the value of
``ase.units.Hartree``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from rdkit import Chem, rdBase

from molfold.errors import DataError
from molfold.units import HARTREE_TO_EV

Record = TypeVar("Record")

ConformerRow = tuple[float, float, int, np.ndarray, "Chem.Mol | None"]
"""(energy eV, Boltzmann weight, geom_id, positions [N, 3] Angstrom, rd_mol or None)."""


@dataclass
class GeomMolecule:
    """One GEOM molecule, conformers sorted by energy (index 0 is the ground state).

    Attributes
    ----------
    smiles : the GEOM key of the molecule
    mol : RDKit molecule with explicit Hs and one conformer, the ground state (Angstrom)
    energies : [C] float64, total energies in eV, ascending
    weights : [C] float64, GEOM's Boltzmann weights, in the same order
    geom_ids : [C] int64, GEOM's conformer ids (-1 where absent)
    positions : [C, N, 3] float64 Angstrom in ``mol``'s atom order, or None unless asked for
    source : the file the molecule was read from
    """

    smiles: str
    mol: Chem.Mol
    energies: np.ndarray
    weights: np.ndarray
    geom_ids: np.ndarray
    positions: np.ndarray | None
    source: str

    @property
    def z(self) -> np.ndarray:
        """[N] int64 atomic numbers."""
        return np.array([a.GetAtomicNum() for a in self.mol.GetAtoms()], dtype=np.int64)

    @property
    def pos(self) -> np.ndarray:
        """[N, 3] float64 Angstrom, the ground-state conformer."""
        return np.asarray(self.mol.GetConformer().GetPositions(), dtype=np.float64)


@dataclass(frozen=True)
class GeomReading:
    """What every GEOM reader is asked: ``max_molecules`` (the first ones in file order; None:
    all), ``all_conformers`` (also fill :attr:`GeomMolecule.positions` with every conformer) and
    ``skip_invalid`` (drop molecules that fail their checks instead of raising)."""

    max_molecules: int | None = None
    all_conformers: bool = False
    skip_invalid: bool = False


READ_ALL = GeomReading()
"""Every molecule, its ground state only, raising on the first invalid one."""


def collect(
    records: Iterable[tuple[str, Record]],
    convert: Callable[[str, Record], GeomMolecule],
    reading: GeomReading,
) -> list[GeomMolecule]:
    """``convert(smiles, record)`` for each record, in order, until ``reading.max_molecules``.

    A :class:`DataError` from ``convert`` (a molecule that fails its checks) drops the molecule
    when ``reading.skip_invalid`` is set, and is raised otherwise; errors from ``records`` itself
    (damaged files) are always raised. No record after the last molecule kept is read.
    """
    max_molecules, skip_invalid = reading.max_molecules, reading.skip_invalid
    molecules: list[GeomMolecule] = []
    if max_molecules == 0:
        return molecules
    for smiles, record in records:
        try:
            molecules.append(convert(smiles, record))
        except DataError:
            if not skip_invalid:
                raise
        if len(molecules) == max_molecules:
            break
    return molecules


def smiles_mol(smiles: str, where: str) -> Chem.Mol:
    """``Chem.AddHs(Chem.MolFromSmiles(smiles))``, or a DataError naming ``where``."""
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        raise DataError(f"{where}: RDKit cannot parse the SMILES {smiles!r}")
    return Chem.AddHs(mol)


def conformer_dicts(record: dict, where: str) -> list[dict]:
    """The non-empty ``conformers`` list of a molecule record, each a dict."""
    confs = record.get("conformers")
    if not isinstance(confs, list) or not confs:
        raise DataError(f"{where}: the molecule has no conformers")
    if not all(isinstance(c, dict) for c in confs):
        raise DataError(f"{where}: conformers must be dicts")
    return confs


def _number(conf: dict, key: str, where: str) -> float:
    value = conf.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise DataError(f"{where}: {key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise DataError(f"{where}: {key} is {value}")
    return float(value)


def energy_weight_id(conf: dict, at: str) -> tuple[float, float, int]:
    """(``totalenergy`` in eV, ``boltzmannweight``, ``geom_id`` or -1) of one conformer dict."""
    energy = _number(conf, "totalenergy", at) * HARTREE_TO_EV
    weight = _number(conf, "boltzmannweight", at)
    geom_id = conf.get("geom_id", -1)
    valid = isinstance(geom_id, (int, np.integer)) and not isinstance(geom_id, bool)
    return energy, weight, int(geom_id) if valid else -1


def ground_state_molecule(
    smiles: str,
    rows: list[ConformerRow],
    where: str,
    all_conformers: bool,
    source: str,
    template: Chem.Mol | None = None,
) -> GeomMolecule:
    """Sort ``rows`` by energy into a :class:`GeomMolecule` whose ``mol`` (the ground state's
    ``rd_mol``, or ``template`` where the rows have none) carries the lowest-energy positions."""
    for _, _, geom_id, pos, _ in rows:
        if not np.isfinite(pos).all():
            raise DataError(f"{where} geom_id {geom_id}: NaN or inf coordinates")
    rows = sorted(rows, key=lambda row: row[0])  # stable: ties keep file order
    ground = rows[0]
    mol = Chem.Mol(ground[4] if ground[4] is not None else template)
    mol.RemoveAllConformers()
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, p in enumerate(ground[3]):
        conf.SetAtomPosition(i, p.tolist())
    conf.Set3D(True)
    mol.AddConformer(conf, assignId=True)
    return GeomMolecule(
        smiles=smiles,
        mol=mol,
        energies=np.array([r[0] for r in rows]),
        weights=np.array([r[1] for r in rows]),
        geom_ids=np.array([r[2] for r in rows], dtype=np.int64),
        positions=np.stack([r[3] for r in rows]) if all_conformers else None,
        source=source,
    )


def formula(z: Iterable) -> str:
    """The formula of the atomic numbers ``z``, elements in atomic-number order (``H6C2O``)."""
    table = Chem.GetPeriodicTable()
    values, counts = np.unique(np.asarray(z, dtype=np.int64), return_counts=True)
    parts = []
    for v, c in zip(values, counts):
        symbol = table.GetElementSymbol(int(v)) if 0 < v < 119 else f"Z={v}"
        parts.append(f"{symbol}{c if c > 1 else ''}")
    return "".join(parts) or "(no atoms)"
