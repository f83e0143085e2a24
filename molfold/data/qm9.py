"""QM9: 130,831 small organic molecules (H, C, N, O, F; up to 9 heavy atoms) with DFT properties.

Ramakrishnan, Dral, Rupp & von Lilienfeld, "Quantum chemistry structures and properties of 134
kilo molecules", Sci. Data 1, 140022 (2014). Geometries and properties at B3LYP/6-31G(2df,p).
Of the 133,885 molecules, the 3,054 that failed the paper's geometry consistency check
("uncharacterized") are dropped, as the literature does.

Sources, tried in this order by :func:`read_qm9`:

1. the torch-geometric raw layout in ``root`` (or ``root/raw``): ``gdb9.sdf`` (the geometries with
   bonds, molecule names ``gdb_<index>``), ``gdb9.sdf.csv`` (the properties, one row per
   molecule, ``mol_id`` = ``gdb_<index>``) and ``uncharacterized.txt`` (figshare 3195404).
   :func:`download_qm9` fetches them where there is a network, from the URLs torch-geometric uses.
2. offline, the PyPI package ``qm9pack`` (``pip install molfold[qm9]``): its
   ``data/qm9_part{1,2,3}.csv`` hold the 130,831 characterized molecules (columns ``XYZ_file``,
   ``Index``, ``SMILES``, ``InChi``, ``N_atoms``, ``Stoichiometry``, ``Elements``, ``XYZ_Ang``,
   ``Mulliken_pop``, ``Harmonic_Freq_cmi``, ``RotA_GHz`` ... ``Heatcapacity_Cv_cal_mol_K``), in
   the units of the original XYZ files. Its module is never imported (it needs the removed
   ``pkg_resources``); the data folder is located with :func:`importlib.util.find_spec`.

Molecule ids: ``idx`` is the 1-based GDB index of the original files (``dsgdb9nsd_000001.xyz`` is
molecule 1, methane), the same in both sources (``gdb_1`` in the raw layout, ``Index`` in
qm9pack). ``uncharacterized.txt`` lists these 1-based indices, so molecule ``gdb_<k>`` is dropped
when ``k`` is listed: the molecule at 0-based position ``k - 1`` of ``gdb9.sdf``.

Targets, each stored on a :class:`~torch_geometric.data.Data` as a graph-level ``[1]`` tensor
(float64) named as in the first column (:data:`TARGETS`):

===========  ==========================================  ==============  =====================
target       meaning                                     unit (loaded)   source unit
===========  ==========================================  ==============  =====================
``mu``       dipole moment                               Debye           Debye
``alpha``    isotropic polarizability                    a0^3            a0^3 (bohr^3)
``homo``     HOMO energy                                 eV              Hartree
``lumo``     LUMO energy                                 eV              Hartree
``gap``      LUMO - HOMO                                 eV              Hartree
``r2``       electronic spatial extent <R^2>             a0^2            a0^2 (bohr^2)
``zpve``     zero-point vibrational energy               eV              Hartree
``U0``       internal energy at 0 K                      eV              Hartree
``U``        internal energy at 298.15 K                 eV              Hartree
``H``        enthalpy at 298.15 K                        eV              Hartree
``G``        free energy at 298.15 K                     eV              Hartree
``Cv``       heat capacity at 298.15 K                   cal/mol/K       cal/mol/K
``U0_atom``  atomization energy at 0 K                   eV              (computed, Hartree)
``U_atom``   atomization energy at 298.15 K              eV              (computed, Hartree)
``H_atom``   atomization enthalpy at 298.15 K            eV              (computed, Hartree)
``G_atom``   atomization free energy at 298.15 K         eV              (computed, Hartree)
``A``        rotational constant A                       GHz             GHz
``B``        rotational constant B                       GHz             GHz
``C``        rotational constant C                       GHz             GHz
===========  ==========================================  ==============  =====================

The atomization variants are ``X_atom = X - sum over atoms of ATOMREF[X][element]``, computed in
Hartree from :data:`ATOMREF` for both sources (the ``*_atom`` columns of ``gdb9.sdf.csv``, in
kcal/mol, are not read), then converted to eV.

Each structure also carries ``z`` [N], ``pos`` [N, 3] Angstrom (the DFT geometry), ``idx`` [1]
(the GDB index), ``smiles`` (str) and the RDKit graph in the geometry's atom order:
``bond_index`` [2, 2B] (both directions), ``bond_type`` [2B] (1 single, 2 double, 3 triple,
4 aromatic), ``formal_charge`` [N] and ``graph_source`` [1] (:data:`GRAPH_SOURCES`): for the
raw layout the bonds of ``gdb9.sdf``, for qm9pack the graph that
:func:`~molfold.data.qm9_graph.geometry_graph` perceives (see :mod:`molfold.data.qm9_graph`).
:func:`to_rdkit_mol` rebuilds the RDKit molecule with its 3D conformer.

Processed cache: the first :func:`load_qm9` converts the source once into plain tensors, written
atomically and read back with ``torch.load(weights_only=True)``: ``<root>/processed/qm9_<key>.pt``
for the raw layout, ``$MOLFOLD_CACHE_DIR/qm9/qm9pack_<key>.pt`` (default
``~/.cache/molfold/qm9/``) for qm9pack, where ``<key>`` hashes the source files' names, sizes and
modification times, the slice and :data:`CACHE_VERSION`. :func:`cache_path` names it.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib.util
import os
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from ase import units
from torch_geometric.data import Data

from molfold.data.qm9_graph import GRAPH_SOURCES, geometry_graph, mol_graph, to_rdkit_mol
from molfold.errors import DataError, MissingFileError

__all__ = [
    "ATOMREF", "CACHE_VERSION", "GRAPH_SOURCES", "TARGETS", "TARGET_NAMES", "cache_path",
    "download_qm9", "geometry_graph", "load_qm9", "qm9_split", "read_qm9", "read_qm9pack",
    "read_raw", "to_data_list", "to_rdkit_mol",
]  # fmt: skip

HARTREE_TO_EV = units.Hartree
"""eV per Hartree, 27.21138...: from ase.units, which derives it from the CODATA 2014 constants
(Mohr, Newell & Taylor, Rev. Mod. Phys. 88, 035009 (2016)). torch-geometric's ``HAR2EV`` is
27.211386246 (CODATA 2018); the two differ by 8e-9 relative."""

# name: (meaning, unit after loading, source unit, factor source -> loaded)
TARGETS: dict[str, tuple[str, str, str, float]] = {
    "mu": ("dipole moment", "Debye", "Debye", 1.0),
    "alpha": ("isotropic polarizability", "a0^3", "a0^3", 1.0),
    "homo": ("HOMO energy", "eV", "Hartree", HARTREE_TO_EV),
    "lumo": ("LUMO energy", "eV", "Hartree", HARTREE_TO_EV),
    "gap": ("HOMO-LUMO gap", "eV", "Hartree", HARTREE_TO_EV),
    "r2": ("electronic spatial extent", "a0^2", "a0^2", 1.0),
    "zpve": ("zero-point vibrational energy", "eV", "Hartree", HARTREE_TO_EV),
    "U0": ("internal energy at 0 K", "eV", "Hartree", HARTREE_TO_EV),
    "U": ("internal energy at 298.15 K", "eV", "Hartree", HARTREE_TO_EV),
    "H": ("enthalpy at 298.15 K", "eV", "Hartree", HARTREE_TO_EV),
    "G": ("free energy at 298.15 K", "eV", "Hartree", HARTREE_TO_EV),
    "Cv": ("heat capacity at 298.15 K", "cal/mol/K", "cal/mol/K", 1.0),
    "U0_atom": ("atomization energy at 0 K", "eV", "Hartree", HARTREE_TO_EV),
    "U_atom": ("atomization energy at 298.15 K", "eV", "Hartree", HARTREE_TO_EV),
    "H_atom": ("atomization enthalpy at 298.15 K", "eV", "Hartree", HARTREE_TO_EV),
    "G_atom": ("atomization free energy at 298.15 K", "eV", "Hartree", HARTREE_TO_EV),
    "A": ("rotational constant A", "GHz", "GHz", 1.0),
    "B": ("rotational constant B", "GHz", "GHz", 1.0),
    "C": ("rotational constant C", "GHz", "GHz", 1.0),
}
"""Every QM9 target: meaning, unit after loading, unit in the source files, conversion factor."""

TARGET_NAMES = tuple(TARGETS)

ATOMREF: dict[str, dict[int, float]] = {
    "U0": {1: -0.500273, 6: -37.846772, 7: -54.583861, 8: -75.064579, 9: -99.718730},
    "U": {1: -0.498857, 6: -37.845355, 7: -54.582445, 8: -75.063162, 9: -99.717314},
    "H": {1: -0.497912, 6: -37.844411, 7: -54.581501, 8: -75.062219, 9: -99.716370},
    "G": {1: -0.510927, 6: -37.861317, 7: -54.598897, 8: -75.079532, 9: -99.733544},
}
"""Energies of the free atoms H, C, N, O, F in Hartree at B3LYP/6-31G(2df,p), by atomic number:
the ``atomref`` table of Ramakrishnan et al., Sci. Data 1, 140022 (2014) (figshare ``atomref.txt``;
torch-geometric's ``atomrefs`` are these values in eV)."""

N_GDB = 133_885
"""Molecules in the original QM9 release, GDB indices 1..133,885."""
N_UNCHARACTERIZED = 3_054
N_CHARACTERIZED = N_GDB - N_UNCHARACTERIZED  # 130,831
SPLIT_SIZES = (110_000, 10_000)
"""Train and validation sizes of the usual QM9 split; the test set is the rest (10,831)."""

CACHE_VERSION = 2
"""Version of the processed cache's layout and contents; caches of another version are rebuilt
(2: graphs perceived by :mod:`molfold.data.qm9_graph`, charge-aware, strained cages fixed)."""

RAW_URL = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/molnet_publish/qm9.zip"
"""``qm9.zip`` holding ``gdb9.sdf`` and ``gdb9.sdf.csv`` (torch-geometric ``QM9.raw_url``)."""
RAW_URL2 = "https://ndownloader.figshare.com/files/3195404"
"""``uncharacterized.txt`` (torch-geometric ``QM9.raw_url2``)."""
RAW_FILES = ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt")

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
"""molfold target -> qm9pack CSV column (source units as in :data:`TARGETS`)."""
RAW_CSV_COLUMNS = {
    "A": "A", "B": "B", "C": "C", "mu": "mu", "alpha": "alpha", "homo": "homo", "lumo": "lumo",
    "gap": "gap", "r2": "r2", "zpve": "zpve", "U0": "u0", "U": "u298", "H": "h298", "G": "g298",
    "Cv": "cv",
}  # fmt: skip
"""molfold target -> ``gdb9.sdf.csv`` column."""

SYMBOL_TO_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}

csv.field_size_limit(1 << 28)


# --------------------------------------------------------------------------- sources


def qm9pack_dir() -> Path | None:
    """The ``data/`` folder of the installed ``qm9pack`` package, or None; never imports it."""
    try:
        spec = importlib.util.find_spec("qm9pack")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data"
        if all((folder / name).is_file() for name in QM9PACK_FILES):
            return folder
    return None


def raw_dir(root: str | os.PathLike | None) -> Path | None:
    """The folder holding the torch-geometric raw files under ``root`` (itself or ``root/raw``)."""
    if root is None:
        return None
    for folder in (Path(root), Path(root) / "raw"):
        if all((folder / name).is_file() for name in RAW_FILES):
            return folder
    return None


def download_qm9(root: str | os.PathLike) -> Path:
    """Download the torch-geometric raw layout into ``root/raw`` (needs a network).

    Same URLs and steps as torch-geometric's ``QM9.download``: unzip :data:`RAW_URL`, then save
    :data:`RAW_URL2` as ``uncharacterized.txt``. Returns the folder.
    """
    folder = Path(root) / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "qm9.zip"
    urllib.request.urlretrieve(RAW_URL, archive)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(folder)
    archive.unlink()
    urllib.request.urlretrieve(RAW_URL2, folder / "uncharacterized.txt")
    return folder


def _source(root: str | os.PathLike | None) -> tuple[str, Path]:
    folder = raw_dir(root)
    if folder is not None:
        return "raw", folder
    folder = qm9pack_dir()
    if folder is not None:
        return "qm9pack", folder
    where = f"{root} (or {Path(root) / 'raw'})" if root is not None else "no root given"
    raise MissingFileError(
        f"no QM9 source: the torch-geometric raw files {', '.join(RAW_FILES)} are not in {where}, "
        "and the qm9pack package is not installed (pip install 'molfold[qm9]', or call "
        "molfold.data.qm9.download_qm9(root) on a machine with a network)"
    )


# --------------------------------------------------------------------------- parsing helpers


def _float(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: not a number: {text[:40]!r}") from None
    if not np.isfinite(value):
        raise DataError(f"{where}: value is {text!r}")
    return value


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


class _Columns:
    """Growing per-molecule arrays, converted to the tensors of the processed cache."""

    def __init__(self) -> None:
        self.z, self.pos, self.n_atoms, self.idx, self.smiles = [], [], [], [], []
        self.targets, self.bonds, self.bond_types, self.n_bonds = [], [], [], []
        self.charges, self.graph_source = [], []

    def add(self, idx, z, pos, targets, smiles, bonds, bond_types, charges, graph_source, where):
        z = np.asarray(z, dtype=np.int64)
        pos = np.asarray(pos, dtype=np.float64)
        if len(z) == 0 or pos.shape != (len(z), 3):
            raise DataError(f"{where}: {len(z)} atoms but positions of shape {pos.shape}")
        if not np.isfinite(pos).all():
            raise DataError(f"{where}: positions contain NaN or inf")
        atom = {}
        for key in ("U0", "U", "H", "G"):
            try:
                atom[key] = targets[key] - sum(ATOMREF[key][int(k)] for k in z)
            except KeyError as error:
                raise DataError(f"{where}: element Z={error} is not H, C, N, O or F") from None
        for key, value in atom.items():
            targets[f"{key}_atom"] = value
        row = [targets[name] * TARGETS[name][3] for name in TARGET_NAMES]
        self.z.append(z)
        self.pos.append(pos)
        self.n_atoms.append(len(z))
        self.idx.append(idx)
        self.smiles.append(smiles)
        self.targets.append(row)
        self.bonds.append(np.asarray(bonds, dtype=np.int64).reshape(-1, 2))
        self.bond_types.append(np.asarray(bond_types, dtype=np.int64))
        self.n_bonds.append(len(bond_types))
        self.charges.append(np.asarray(charges, dtype=np.int64))
        self.graph_source.append(graph_source)

    def tensors(self, source: str) -> dict:
        if not self.idx:
            raise DataError(f"the QM9 {source} source holds no molecules")

        def cat(arrays, shape):
            return torch.from_numpy(np.concatenate(arrays).reshape(shape))

        return {
            "version": CACHE_VERSION,
            "source": source,
            "target_names": list(TARGET_NAMES),
            "idx": torch.tensor(self.idx, dtype=torch.int64),
            "n_atoms": torch.tensor(self.n_atoms, dtype=torch.int64),
            "z": cat(self.z, (-1,)),
            "pos": cat(self.pos, (-1, 3)),
            "targets": torch.tensor(self.targets, dtype=torch.float64),
            "smiles": list(self.smiles),
            "n_bonds": torch.tensor(self.n_bonds, dtype=torch.int64),
            "bonds": cat(self.bonds, (-1, 2)),
            "bond_type": cat(self.bond_types, (-1,)),
            "formal_charge": cat(self.charges, (-1,)),
            "graph_source": torch.tensor(self.graph_source, dtype=torch.int64),
        }


# --------------------------------------------------------------------------- qm9pack


def _qm9pack_rows(folder: Path) -> Iterator[tuple[str, dict]]:
    for name in QM9PACK_FILES:
        path = folder / name
        # undecodable bytes become U+FFFD and then fail as bad values, naming their line
        with open(path, newline="", encoding="utf-8", errors="replace") as handle:
            reader = csv.reader(handle)
            try:
                header = next(reader)
            except StopIteration:
                raise DataError(f"{path}: empty file") from None
            missing = {"Index", "SMILES", "Elements", "XYZ_Ang", *QM9PACK_COLUMNS.values()}
            missing -= set(header)
            if missing:
                raise DataError(f"{path}: missing columns {sorted(missing)}")
            try:
                for row in reader:
                    where = f"{path}:{reader.line_num}"
                    if len(row) != len(header):
                        raise DataError(
                            f"{where}: {len(row)} fields, expected {len(header)} (truncated?)"
                        )
                    yield where, dict(zip(header, row))
            except csv.Error as error:
                raise DataError(f"{path}:{reader.line_num}: {error}") from None


def read_qm9pack(folder: str | os.PathLike, max_molecules: int | None = None) -> dict:
    """Read qm9pack's CSV files (see the module docstring) into the cache's tensors."""
    folder = Path(folder)
    columns = _Columns()
    for where, row in _qm9pack_rows(folder):
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
        targets = {key: _float(row[col], f"{where} {col}") for key, col in QM9PACK_COLUMNS.items()}
        mol, code = geometry_graph(np.array(z), pos, row["SMILES"])
        bonds, types, charges = mol_graph(mol)
        columns.add(idx, z, pos, targets, row["SMILES"], bonds, types, charges, code, where)
    out = columns.tensors("qm9pack")
    if len(torch.unique(out["idx"])) != len(out["idx"]):
        raise DataError(f"{folder}: repeated molecule indices")
    return out


# --------------------------------------------------------------------------- raw layout


def read_raw(folder: str | os.PathLike, max_molecules: int | None = None) -> dict:
    """Read the torch-geometric raw layout (see the module docstring) into the cache's tensors.

    Molecules are matched by name (``gdb_<index>`` in both ``gdb9.sdf`` and ``gdb9.sdf.csv``), and
    those listed in ``uncharacterized.txt`` (1-based indices) are dropped. ``max_molecules`` stops
    after that many kept molecules.
    """
    from rdkit import Chem, rdBase

    logs_blocked = rdBase.BlockLogs()  # noqa: F841  (RDKit logs again once this returns)
    folder = Path(folder)
    sdf, table, unchar = (folder / name for name in RAW_FILES)
    skip = set(read_uncharacterized(unchar).tolist())

    properties: dict[int, dict] = {}
    with open(table, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or "mol_id" not in header:
            raise DataError(f"{table}: no header with a mol_id column")
        missing = set(RAW_CSV_COLUMNS.values()) - set(header)
        if missing:
            raise DataError(f"{table}: missing columns {sorted(missing)}")
        for row in reader:
            where = f"{table}:{reader.line_num}"
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} fields, expected {len(header)} (truncated?)")
            record = dict(zip(header, row))
            idx = _gdb_index(record["mol_id"], where)
            properties[idx] = {
                key: _float(record[col], f"{where} {col}") for key, col in RAW_CSV_COLUMNS.items()
            }

    columns = _Columns()
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
    name = name.strip()
    if not name.startswith("gdb_") or not name[4:].isdigit():
        raise DataError(f"{where}: molecule name {name[:40]!r} is not gdb_<index>")
    return int(name[4:])


# --------------------------------------------------------------------------- cache and loading


def read_qm9(root: str | os.PathLike | None = None, max_molecules: int | None = None) -> dict:
    """Read QM9 from the first source found (see the module docstring), without any cache.

    Returns the cache's dict of plain tensors: ``idx`` [M] GDB indices, ``n_atoms`` [M], ``z``
    [sum N], ``pos`` [sum N, 3] Angstrom, ``targets`` [M, T] (float64, units of :data:`TARGETS`,
    columns in ``target_names``), ``smiles`` (list), ``n_bonds`` [M], ``bonds`` [sum B, 2]
    (per-molecule atom indices), ``bond_type`` [sum B], ``formal_charge`` [sum N],
    ``graph_source`` [M], plus ``source`` and ``version``.

    Raises :class:`MissingFileError` when no source is found, :class:`DataError` naming file and
    line for corrupt or truncated files.
    """
    kind, folder = _source(root)
    if kind == "raw":
        return read_raw(folder, max_molecules)
    return read_qm9pack(folder, max_molecules)


def cache_path(
    root: str | os.PathLike | None = None,
    max_molecules: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Where :func:`load_qm9` keeps the processed cache for this source (see module docstring)."""
    kind, folder = _source(root)
    names = RAW_FILES if kind == "raw" else QM9PACK_FILES
    key = hashlib.sha256()
    key.update(f"{CACHE_VERSION} {kind} {max_molecules}".encode())
    for name in names:
        stat = (folder / name).stat()
        key.update(f" {folder / name} {stat.st_size} {stat.st_mtime_ns}".encode())
    digest = key.hexdigest()[:16]
    if cache_dir is not None:
        base = Path(cache_dir)
    elif kind == "raw":
        base = folder.parent / "processed" if folder.name == "raw" else folder / "processed"
    else:
        env = os.environ.get("MOLFOLD_CACHE_DIR")
        base = (Path(env) if env else Path.home() / ".cache" / "molfold") / "qm9"
    return base / f"{'qm9' if kind == 'raw' else 'qm9pack'}_{digest}.pt"


def _save_atomic(tensors: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        torch.save(tensors, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cache(path: Path) -> dict | None:
    try:
        tensors = torch.load(path, weights_only=True)
    except Exception:  # corrupt or foreign cache: rebuild it
        return None
    if not isinstance(tensors, dict) or tensors.get("version") != CACHE_VERSION:
        return None
    return tensors


def to_data_list(tensors: dict) -> list[Data]:
    """Split the cache's tensors into one :class:`~torch_geometric.data.Data` per molecule."""
    atoms = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.int64), tensors["n_atoms"]]), 0)
    bonds = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.int64), tensors["n_bonds"]]), 0)
    names = tensors["target_names"]
    out = []
    for m in range(len(tensors["idx"])):
        a0, a1, b0, b1 = int(atoms[m]), int(atoms[m + 1]), int(bonds[m]), int(bonds[m + 1])
        pairs = tensors["bonds"][b0:b1].t()
        data = Data(
            z=tensors["z"][a0:a1],
            pos=tensors["pos"][a0:a1],
            idx=tensors["idx"][m : m + 1],
            smiles=tensors["smiles"][m],
            bond_index=torch.cat([pairs, pairs.flip(0)], dim=1),
            bond_type=tensors["bond_type"][b0:b1].repeat(2),
            formal_charge=tensors["formal_charge"][a0:a1],
            graph_source=tensors["graph_source"][m : m + 1],
        )
        for t, name in enumerate(names):
            data[name] = tensors["targets"][m, t : t + 1]
        out.append(data)
    return out


def load_qm9(
    root: str | os.PathLike | None = None,
    max_molecules: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    rebuild: bool = False,
) -> list[Data]:
    """QM9 as a list of :class:`~torch_geometric.data.Data`, through the processed cache.

    Parameters
    ----------
    root : folder with the torch-geometric raw files (or their ``raw/`` parent); None or a folder
        without them falls back to qm9pack
    max_molecules : keep only the first molecules (in GDB index order), for tests and quick runs
    cache_dir : folder for the cache instead of the default (see :func:`cache_path`)
    rebuild : re-parse the source even if a cache exists

    Each structure holds ``z``, ``pos`` (Angstrom), ``idx``, ``smiles``, the RDKit graph and every
    target of :data:`TARGETS` as a ``[1]`` float64 tensor in the units stated there.
    """
    path = cache_path(root, max_molecules, cache_dir)
    tensors = None if rebuild or not path.is_file() else _load_cache(path)
    if tensors is None:
        tensors = read_qm9(root, max_molecules)
        _save_atomic(tensors, path)
    return to_data_list(tensors)


def qm9_split(
    n: int, seed: int, n_train: int = SPLIT_SIZES[0], n_val: int = SPLIT_SIZES[1]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train, validation and test indices into a dataset of ``n`` molecules from a seeded random
    permutation: ``n_train`` (110,000), ``n_val`` (10,000) and the rest (10,831 for full QM9)."""
    if n_train < 0 or n_val < 0 or n_train + n_val > n:
        raise ValueError(f"cannot take {n_train} train + {n_val} validation from {n} molecules")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
