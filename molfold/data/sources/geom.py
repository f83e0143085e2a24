"""GEOM conformer ensembles (GEOM-DRUGS, GEOM-QM9) and their ground-state conformers.

Axelrod & Gomez-Bombarelli, "GEOM, energy-annotated molecular conformations for property
prediction and molecular generation", Sci. Data 9, 185 (2022). Ensembles from CREST with
GFN2-xTB energies. The ground-state target of conformer prediction (GTMGC, ReBind) is the
lowest-energy conformer by ``totalenergy``; conformers are *not* guaranteed to be sorted.

Two published layouts, both read here (:func:`load_geom` picks one):

``rdkit_folder`` (:mod:`~molfold.data.sources.geom_pickle`)
    ``summary_drugs.json`` (or ``summary_qm9.json``): SMILES -> {``pickle_path`` (relative to the
    folder holding the summary), ``totalconfs``, ``uniqueconfs``, ``lowestenergy`` (Hartree),
    ``charge``, ...}, and per molecule a pickle of {``smiles``, ``conformers``: [{``geom_id``,
    ``totalenergy`` (Hartree), ``relativeenergy`` (kcal/mol), ``boltzmannweight``,
    ``degeneracy``, ``rd_mol`` (RDKit Mol with Hs and one 3D conformer)}, ...], ...}.
    Unpickling can run arbitrary code, so it is refused unless the caller passes
    ``allow_pickle=True`` (``data.allow_pickle=true`` on the CLI); even then only RDKit molecules,
    NumPy scalars and plain containers are unpickled (:data:`PICKLE_ALLOWED`).
``msgpack`` (:mod:`~molfold.data.sources.geom_msgpack`)
    ``drugs_crude.msgpack`` or ``qm9_crude.msgpack``: a stream of packed dicts of about 1,000
    molecules each, SMILES -> {``conformers``: [{``xyz`` = [[Z, x, y, z], ...] (Angstrom),
    ``totalenergy``, ``boltzmannweight``, ``geom_id``, ...}], ``uniqueconfs``, ``charge``, ...}.
    The file has no bonds: the molecule is rebuilt as ``Chem.AddHs(Chem.MolFromSmiles(smiles))``
    and **assumed** to be in the atom order of ``xyz`` (GEOM wrote ``xyz`` from the ``rd_mol`` of
    the SMILES with Hs added). Every conformer's atomic numbers are checked against that order, so
    a molecule for which the assumption fails raises :class:`DataError` instead of getting
    scrambled coordinates. The shipped ``data/geom_xtb``
    set holds both layouts from the same ensembles; ``tests/test_geom.py`` checks they agree.

==============  ==========================  ==================
quantity        source unit                 unit after loading
==============  ==========================  ==================
positions       Angstrom                    Angstrom
totalenergy     Hartree                     eV
weights         Boltzmann weight (sums 1)   same
==============  ==========================  ==================

Hartree are converted to eV with :data:`molfold.units.HARTREE_TO_EV` (CODATA 2014, the value of
``ase.units.Hartree``). Both layouts produce :class:`GeomMolecule` records
(:mod:`~molfold.data.sources.geom_molecule`); their public names are importable from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch_geometric.data import Data

from molfold.data.molgraph import MOLECULE_FIELDS, molecule_fields
from molfold.data.sources import register_source
from molfold.data.sources.geom_molecule import GeomMolecule, GeomReading
from molfold.data.sources.geom_msgpack import MSGPACK_FILES, read_msgpack
from molfold.data.sources.geom_pickle import (
    PICKLE_ALLOWED,
    PICKLE_HINT,
    SUMMARY_FILES,
    read_pickle,
    read_rdkit_folder,
)
from molfold.errors import ConfigError, DataError, MissingFileError

__all__ = [
    "MSGPACK_FILES", "PICKLE_ALLOWED", "PICKLE_HINT", "SUMMARY_FILES", "GeomMolecule",
    "GeomOptions", "GeomReading", "load_geom", "read_msgpack", "read_pickle", "read_rdkit_folder",
]  # fmt: skip


def load_geom(
    root: str | os.PathLike,
    allow_pickle: bool = False,
    max_molecules: int | None = None,
    all_conformers: bool = False,
    skip_invalid: bool = False,
) -> list[GeomMolecule]:
    """Read a GEOM dataset in either layout.

    Parameters
    ----------
    root : a ``.msgpack`` file, a summary ``.json`` file, a folder holding a summary (the
        ``rdkit_folder``), or a folder holding ``rdkit_folder/`` and/or a ``*_crude.msgpack``.
        Given both, the pickles are read when ``allow_pickle`` is set, the msgpack otherwise.
    allow_pickle : opt in to unpickling the ``rdkit_folder`` files (see the module docstring)
    max_molecules : read only the first molecules in file order (``None``: all)
    all_conformers : also fill :attr:`GeomMolecule.positions` with every conformer
    skip_invalid : drop molecules that fail the per-molecule checks (no conformers, atoms that
        disagree with the SMILES, NaN values) instead of raising; damaged files always raise

    Raises
    ------
    :class:`MissingFileError` if ``root`` does not exist; :class:`DataError` naming the file
    (and molecule) for a missing summary or pickle, a pickle without opt-in, a corrupt or
    truncated file, a molecule without conformers, atoms that disagree with the SMILES, NaN
    coordinates or energies.
    """
    root = Path(root)
    if not root.exists():
        raise MissingFileError(f"GEOM path {root} does not exist")
    if max_molecules is not None and max_molecules < 1:
        raise DataError(f"{root}: max_molecules must be a positive integer, got {max_molecules}")
    reading = GeomReading(max_molecules, all_conformers, skip_invalid)
    if root.is_file():
        if root.suffix == ".json":
            return read_rdkit_folder(root, allow_pickle, reading)
        return read_msgpack(root, reading)
    folders = [root, root / "rdkit_folder"]
    summary = next((f / s for f in folders for s in SUMMARY_FILES if (f / s).is_file()), None)
    packs = [root / name for name in MSGPACK_FILES if (root / name).is_file()]
    if packs and (summary is None or not allow_pickle):
        return read_msgpack(packs[0], reading)
    if summary is None:
        raise DataError(
            f"{root}: no GEOM summary ({' or '.join(SUMMARY_FILES)}) in {root} or "
            f"{root / 'rdkit_folder'}, and no {' or '.join(MSGPACK_FILES)}"
        )
    return read_rdkit_folder(summary, allow_pickle, reading)


@dataclass(frozen=True)
class GeomOptions:
    """The keys of ``data=geom`` besides the shared ones."""

    allow_pickle: bool = False
    """Read the rdkit_folder pickles (they can run code: trust the source first)."""


@register_source("geom", GeomOptions, provides=MOLECULE_FIELDS)
def load(path: str | None, options: GeomOptions, max_structures: int | None) -> list[Data]:
    """The lowest-energy conformer of each GEOM molecule as a conformer graph."""
    if path is None:
        raise ConfigError("data.path is not set: give the GEOM folder")
    molecules = load_geom(path, allow_pickle=options.allow_pickle, max_molecules=max_structures)
    from rdkit import Chem

    return [
        Data(
            **molecule_fields(m.mol),
            pos=torch.from_numpy(m.pos),
            smiles=Chem.MolToSmiles(Chem.RemoveHs(m.mol, sanitize=False)),
            name=m.smiles,
        )
        for m in molecules
    ]
