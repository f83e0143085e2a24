"""GEOM's ``rdkit_folder`` layout: a summary JSON and one pickle per molecule.

Unpickling can run arbitrary code, so every reader here refuses unless the caller opts in
(``allow_pickle=True``, :data:`PICKLE_HINT`), and even then unpickles only the globals of
:data:`PICKLE_ALLOWED` (RDKit molecules, NumPy scalars and plain containers), through
:class:`~molfold.data.sources.restricted_pickle.RestrictedUnpickler`. See
:mod:`molfold.data.sources.geom` for the layout's fields.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase

from molfold.data.sources.geom_molecule import (
    READ_ALL,
    GeomMolecule,
    GeomReading,
    collect,
    conformer_dicts,
    energy_weight_id,
    formula,
    ground_state_molecule,
    smiles_mol,
)
from molfold.data.sources.restricted_pickle import restricted_loads
from molfold.errors import DataError, MissingFileError

SUMMARY_FILES = ("summary_drugs.json", "summary_qm9.json")

PICKLE_ALLOWED = {
    ("rdkit.Chem.rdchem", "Mol"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("collections", "OrderedDict"),
}
"""(module, name) of the only globals a GEOM pickle may reference."""

PICKLE_HINT = (
    "unpickling can run arbitrary code, so molfold reads GEOM pickles only if you trust the "
    "files and opt in: allow_pickle=True in Python, data.allow_pickle=true on the CLI "
    "(or read the msgpack files, drugs_crude.msgpack, which need no opt-in)"
)


def read_rdkit_folder(
    summary: str | os.PathLike, allow_pickle: bool = False, reading: GeomReading = READ_ALL
) -> list[GeomMolecule]:
    """Read the ``rdkit_folder`` layout from its summary file (or the folder holding it)."""
    summary = Path(summary)
    if summary.is_dir():
        found = [summary / s for s in SUMMARY_FILES if (summary / s).is_file()]
        if not found:
            raise DataError(f"{summary}: no GEOM summary file ({' or '.join(SUMMARY_FILES)})")
        summary = found[0]
    if not summary.is_file():
        raise DataError(f"GEOM summary file {summary} does not exist")
    if not allow_pickle:
        raise DataError(f"{summary}: the rdkit_folder layout stores pickles; {PICKLE_HINT}")
    try:
        entries = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise DataError(
            f"{summary}: not a readable JSON summary (corrupt or truncated?): "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(entries, dict):
        raise DataError(f"{summary}: expected a JSON object keyed by SMILES")

    def convert(smiles: str, stored: tuple[dict, Path]) -> GeomMolecule:
        return _from_pickle(*stored, smiles, reading.all_conformers)

    return collect(_pickle_records(summary, entries), convert, reading)


def _pickle_records(summary: Path, entries: dict) -> Iterator[tuple[str, tuple[dict, Path]]]:
    """(SMILES, (unpickled record, its path)) of each summary entry, in file order."""
    folder = summary.parent.resolve()
    for smiles, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("pickle_path"), str):
            raise DataError(f"{summary}: molecule {smiles!r} has no pickle_path")
        path = (folder / entry["pickle_path"]).resolve()
        if not path.is_relative_to(folder):
            raise DataError(f"{summary}: pickle_path {entry['pickle_path']!r} leaves {folder}")
        if not path.is_file():
            raise DataError(f"{path}: pickle of molecule {smiles!r} (listed in {summary}) missing")
        yield smiles, (read_pickle(path, allow_pickle=True), path)


def read_pickle(path: str | os.PathLike, allow_pickle: bool = False) -> dict:
    """Unpickle one GEOM molecule file (only :data:`PICKLE_ALLOWED` globals), as stored."""
    path = Path(path)
    if not allow_pickle:
        raise DataError(f"{path}: refusing to unpickle; {PICKLE_HINT}")
    if not path.is_file():
        raise MissingFileError(f"GEOM pickle {path} does not exist")
    try:
        stored = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read the pickle: {error}") from error
    with rdBase.BlockLogs():
        record = restricted_loads(stored, PICKLE_ALLOWED, "a GEOM file", str(path))
    if not isinstance(record, dict) or not isinstance(record.get("conformers"), list):
        raise DataError(f"{path}: expected a dict with a 'conformers' list, got {type(record)}")
    return record


def _from_pickle(record: dict, path: Path, smiles: str, all_conformers: bool) -> GeomMolecule:
    """The molecule of one unpickled record; every conformer's ``rd_mol`` must hold the atoms of
    the SMILES, in the same order for all conformers."""
    where = f"{path} molecule {smiles!r}"
    reference = smiles_mol(smiles, where)
    expected = sorted(a.GetAtomicNum() for a in reference.GetAtoms())
    rows, first_z = [], None
    for k, conf in enumerate(conformer_dicts(record, where)):
        at = f"{where} conformer {k} (geom_id {conf.get('geom_id')})"
        mol = conf.get("rd_mol")
        if not isinstance(mol, Chem.Mol) or mol.GetNumConformers() != 1:
            raise DataError(f"{at}: rd_mol must be an RDKit Mol with one 3D conformer")
        z = [a.GetAtomicNum() for a in mol.GetAtoms()]
        if sorted(z) != expected:
            raise DataError(
                f"{at}: its atoms {formula(z)} disagree with the SMILES {formula(expected)}"
            )
        if first_z is None:
            first_z = z
        elif z != first_z:
            raise DataError(f"{at}: atom order differs from the molecule's first conformer")
        pos = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
        rows.append((*energy_weight_id(conf, at), pos, mol))
    return ground_state_molecule(smiles, rows, where, all_conformers, str(path))
