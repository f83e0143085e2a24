"""Readers of the two QM9 sources: the torch-geometric raw layout and qm9pack's CSV files.

Both produce the cache's dict of plain tensors (:class:`~molfold.data.sources.qm9_targets.
MoleculeColumns`); :mod:`molfold.data.sources.qm9` describes the files, picks the source and
keeps the cache. Every damaged or truncated file raises :class:`DataError` naming the file and
the line (CSV) or molecule (SD file).
"""

from __future__ import annotations

import ast
import csv
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

import numpy as np
import torch

from molfold.data.sources.qm9_graph import geometry_graph, mol_graph
from molfold.data.sources.qm9_targets import N_GDB, MoleculeColumns
from molfold.errors import DataError

RAW_FILES = ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt")
"""The torch-geometric raw layout: geometries with bonds, properties, uncharacterized indices."""
RAW_CSV_COLUMNS = {
    "A": "A", "B": "B", "C": "C", "mu": "mu", "alpha": "alpha", "homo": "homo", "lumo": "lumo",
    "gap": "gap", "r2": "r2", "zpve": "zpve", "U0": "u0", "U": "u298", "H": "h298", "G": "g298",
    "Cv": "cv",
}  # fmt: skip
"""molfold target -> ``gdb9.sdf.csv`` column."""

QM9PACK_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
QM9PACK_COLUMNS = {
    "mu": "Dipole_debye",
    "alpha": "Polarizability_bohr3",
    "homo": "HOMO_au",
    "lumo": "LUMO_au",
    "gap": "HOMO_LUMO_gap_au",
    "r2": "R2_bohr2",
    "zpve": "ZPVE_au",
    "U0": "InternalEnergy_0K_au",
    "U": "InternalEnergy_298K_au",
    "H": "Enthalphy_298K_au",  # sic
    "G": "GibbsFreeEnergy_298K_au",
    "Cv": "Heatcapacity_Cv_cal_mol_K",
    "A": "RotA_GHz",
    "B": "RotB_GHz",
    "C": "RotC_GHz",
}
"""molfold target -> qm9pack CSV column (source units as in
:data:`~molfold.data.sources.qm9_targets.TARGETS`)."""

SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}

CSV_FIELD_LIMIT = 1 << 28
"""Longest CSV field, in characters, accepted while a QM9 CSV file is read (Python's default is
131,072); set only for the duration of :func:`read_raw` and :func:`read_qm9pack`."""


@contextmanager
def _csv_field_limit(limit: int = CSV_FIELD_LIMIT) -> Iterator[None]:
    """Raise :func:`csv.field_size_limit` (process-wide) to ``limit``, and restore it after."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _float(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: not a number: {text[:40]!r}") from None
    if not np.isfinite(value):
        raise DataError(f"{where}: value is {text!r}")
    return value


def _csv_records(path: Path, columns: Iterable[str]) -> Iterator[tuple[str, dict[str, str]]]:
    """``(file:line, {column: text})`` for each data row of the CSV file ``path``, whose header
    must hold ``columns``; rows with too few or too many fields (truncated files) raise.

    Undecodable bytes become U+FFFD and then fail as bad values, naming their line.
    """
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file")
            missing = set(columns) - set(header)
            if missing:
                raise DataError(f"{path}: missing columns {sorted(missing)}")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if len(row) != len(header):
                    raise DataError(
                        f"{where}: {len(row)} fields, expected {len(header)} (truncated?)"
                    )
                yield where, dict(zip(header, row))
        except csv.Error as error:
            raise DataError(f"{path}:{reader.line_num}: {error}") from None


def read_uncharacterized(path: str | os.PathLike) -> np.ndarray:
    """The 1-based GDB indices listed in ``uncharacterized.txt`` (int64, sorted).

    The file has 9 header lines, one line per molecule whose first field is its GDB index
    (1-based, as in ``dsgdb9nsd_<index>.xyz``), and a footer; torch-geometric reads it the same
    way (``split('\\n')[9:-2]``) and subtracts 1 to get 0-based positions in ``gdb9.sdf``.
    """
    path = Path(path)
    lines = path.read_text(errors="replace").splitlines()[9:]
    while lines and not (lines[-1].split() and lines[-1].split()[0].isdigit()):
        lines.pop()  # footer and blank lines
    indices = []
    for number, line in enumerate(lines, start=10):
        fields = line.split()
        if not fields or not fields[0].isdigit():
            raise DataError(f"{path}:{number}: expected a molecule index, got {line[:60]!r}")
        indices.append(int(fields[0]))
    out = np.array(sorted(indices), dtype=np.int64)
    if len(out) and (out[0] < 1 or out[-1] > N_GDB):
        raise DataError(f"{path}: indices must be in 1..{N_GDB}, got {out[0]}..{out[-1]}")
    return out


# --------------------------------------------------------------------------- qm9pack


def read_qm9pack(folder: str | os.PathLike, max_molecules: int | None = None) -> dict:
    """Read qm9pack's CSV files (:data:`QM9PACK_FILES` in ``folder``) into the cache's tensors.

    Positions come from ``XYZ_Ang`` (Angstrom), elements from ``Elements``, targets from
    :data:`QM9PACK_COLUMNS`, the RDKit graph from
    :func:`~molfold.data.sources.qm9_graph.geometry_graph`. ``max_molecules`` stops after that
    many molecules in file order.
    """
    folder = Path(folder)
    required = {"Index", "SMILES", "Elements", "XYZ_Ang", *QM9PACK_COLUMNS.values()}
    rows = chain.from_iterable(_csv_records(folder / name, required) for name in QM9PACK_FILES)
    columns = MoleculeColumns()
    with _csv_field_limit():
        for where, row in rows:
            if max_molecules is not None and len(columns.idx) >= max_molecules:
                break
            try:
                idx = int(row["Index"])
                symbols = ast.literal_eval(row["Elements"])
                z = [SYMBOL_TO_Z[s] for s in symbols]
            except (ValueError, SyntaxError, KeyError, TypeError) as error:
                raise DataError(f"{where}: bad Index or Elements: {error}") from None
            xyz = row["XYZ_Ang"].replace("[", " ").replace("]", " ").split(",")
            pos = np.array([_float(v, f"{where} XYZ_Ang") for v in xyz]).reshape(-1, 3)
            targets = {
                key: _float(row[col], f"{where} {col}") for key, col in QM9PACK_COLUMNS.items()
            }
            mol, code = geometry_graph(np.array(z), pos, row["SMILES"])
            bonds, types, charges = mol_graph(mol)
            columns.add(idx, z, pos, targets, row["SMILES"], bonds, types, charges, code, where)
    out = columns.tensors("qm9pack")
    if len(torch.unique(out["idx"])) != len(out["idx"]):
        raise DataError(f"{folder}: repeated molecule indices")
    return out


# --------------------------------------------------------------------------- raw layout


def read_raw(folder: str | os.PathLike, max_molecules: int | None = None) -> dict:
    """Read the torch-geometric raw layout (:data:`RAW_FILES` in ``folder``) into the cache's
    tensors.

    Molecules are matched by name (``gdb_<index>`` in both ``gdb9.sdf`` and ``gdb9.sdf.csv``), and
    those listed in ``uncharacterized.txt`` (1-based indices) are dropped. ``max_molecules`` stops
    after that many kept molecules.
    """
    from rdkit import Chem, rdBase

    logs_blocked = rdBase.BlockLogs()  # noqa: F841  (RDKit logs again once this returns)
    folder = Path(folder)
    sdf, table, unchar = (folder / name for name in RAW_FILES)
    skip = set(read_uncharacterized(unchar).tolist())

    properties: dict[int, dict[str, float]] = {}
    with _csv_field_limit():
        for where, record in _csv_records(table, {"mol_id", *RAW_CSV_COLUMNS.values()}):
            properties[_gdb_index(record["mol_id"], where)] = {
                key: _float(record[col], f"{where} {col}") for key, col in RAW_CSV_COLUMNS.items()
            }

    columns = MoleculeColumns()
    try:
        supplier = Chem.SDMolSupplier(str(sdf), removeHs=False, sanitize=False)
        num_blocks = len(supplier)
    except OSError as error:  # RDKit's message for a file it cannot parse at all
        raise DataError(f"{sdf}: not an SD file ({error})") from None
    for position in range(num_blocks):
        if max_molecules is not None and len(columns.idx) >= max_molecules:
            break
        where = f"{sdf} molecule {position + 1}"
        mol = supplier[position]
        if mol is None or mol.GetNumConformers() == 0 or mol.GetNumAtoms() == 0:
            raise DataError(f"{where}: unreadable molfile block (corrupt or truncated)")
        try:
            name = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
        except UnicodeDecodeError:
            raise DataError(f"{where}: molecule name is not UTF-8 text") from None
        idx = _gdb_index(name, where)
        if idx in skip:
            continue
        if idx not in properties:
            raise DataError(f"{where}: gdb_{idx} has no row in {table}")
        z = [a.GetAtomicNum() for a in mol.GetAtoms()]
        pos = mol.GetConformer().GetPositions()
        bonds, types, charges = mol_graph(mol)
        try:
            smiles = Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False), isomericSmiles=True)
        except Exception:  # RDKit raises several types for unusual valences
            smiles = Chem.MolToSmiles(mol, isomericSmiles=True)
        targets = dict(properties[idx])
        columns.add(idx, z, pos, targets, smiles, bonds, types, charges, 0, where)
    return columns.tensors("raw")


def _gdb_index(name: str, where: str) -> int:
    """The GDB index of a molecule named ``gdb_<index>``."""
    name = name.strip()
    if not name.startswith("gdb_") or not name[4:].isdigit():
        raise DataError(f"{where}: molecule name {name[:40]!r} is not gdb_<index>")
    return int(name[4:])
