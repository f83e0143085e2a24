"""GEOM conformer ensembles (GEOM-DRUGS, GEOM-QM9) and their ground-state conformers.

Axelrod & Gomez-Bombarelli, "GEOM, energy-annotated molecular conformations for property
prediction and molecular generation", Sci. Data 9, 185 (2022). Ensembles from CREST with
GFN2-xTB energies. The ground-state target of conformer prediction (GTMGC, ReBind) is the
lowest-energy conformer by ``totalenergy``; conformers are *not* guaranteed to be sorted.

Two published layouts, both read here:

``rdkit_folder``
    ``summary_drugs.json`` (or ``summary_qm9.json``): SMILES -> {``pickle_path`` (relative to the
    folder holding the summary), ``totalconfs``, ``uniqueconfs``, ``lowestenergy`` (Hartree),
    ``charge``, ...}, and per molecule a pickle of {``smiles``, ``conformers``: [{``geom_id``,
    ``totalenergy`` (Hartree), ``relativeenergy`` (kcal/mol), ``boltzmannweight``,
    ``degeneracy``, ``rd_mol`` (RDKit Mol with Hs and one 3D conformer)}, ...], ...}.
    Unpickling can run arbitrary code, so it is refused unless the caller passes
    ``allow_pickle=True`` (``data.allow_pickle=true`` on the CLI); even then only RDKit molecules,
    NumPy scalars and plain containers are unpickled (:data:`PICKLE_ALLOWED`).
``msgpack`` (``drugs_crude.msgpack``, ``qm9_crude.msgpack``)
    A stream of packed dicts of about 1,000 molecules each, SMILES -> {``conformers``: [{``xyz``
    = [[Z, x, y, z], ...] (Angstrom), ``totalenergy``, ``boltzmannweight``, ``geom_id``, ...}],
    ``uniqueconfs``, ``charge``, ...}. The file has no bonds: the molecule is rebuilt as
    ``Chem.AddHs(Chem.MolFromSmiles(smiles))`` and **assumed** to be in the atom order of ``xyz``
    (GEOM wrote ``xyz`` from the ``rd_mol`` of the SMILES with Hs added). Every conformer's atomic
    numbers are checked against that order, so a molecule for which the assumption fails raises
    :class:`DataError` instead of getting scrambled coordinates. The shipped ``data/geom_xtb``
    set holds both layouts from the same ensembles; ``tests/test_geom_drugs.py`` checks they agree.

==============  ==========================  ==================
quantity        source unit                 unit after loading
==============  ==========================  ==================
positions       Angstrom                    Angstrom
totalenergy     Hartree                     eV
weights         Boltzmann weight (sums 1)   same
==============  ==========================  ==================
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import units
from rdkit import Chem, rdBase

from molfold.errors import ConfigError, DataError, MissingFileError

HARTREE_TO_EV = units.Hartree
"""eV per Hartree, 27.211386...: from ase.units, derived from the CODATA 2014 constants
(Mohr, Newell & Taylor, Rev. Mod. Phys. 88, 035009 (2016))."""

SUMMARY_FILES = ("summary_drugs.json", "summary_qm9.json")
MSGPACK_FILES = ("drugs_crude.msgpack", "qm9_crude.msgpack")

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
    if root.is_file():
        if root.suffix == ".json":
            return read_rdkit_folder(
                root, allow_pickle, max_molecules, all_conformers, skip_invalid
            )
        return read_msgpack(root, max_molecules, all_conformers, skip_invalid)
    folders = [root, root / "rdkit_folder"]
    summary = next((f / s for f in folders for s in SUMMARY_FILES if (f / s).is_file()), None)
    packs = [root / name for name in MSGPACK_FILES if (root / name).is_file()]
    if packs and (summary is None or not allow_pickle):
        return read_msgpack(packs[0], max_molecules, all_conformers, skip_invalid)
    if summary is None:
        raise DataError(
            f"{root}: no GEOM summary ({' or '.join(SUMMARY_FILES)}) in {root} or "
            f"{root / 'rdkit_folder'}, and no {' or '.join(MSGPACK_FILES)}"
        )
    return read_rdkit_folder(summary, allow_pickle, max_molecules, all_conformers, skip_invalid)


def read_rdkit_folder(
    summary: str | os.PathLike,
    allow_pickle: bool = False,
    max_molecules: int | None = None,
    all_conformers: bool = False,
    skip_invalid: bool = False,
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
    folder = summary.parent.resolve()
    molecules = []
    for smiles, entry in entries.items():
        if max_molecules is not None and len(molecules) == max_molecules:
            break
        if not isinstance(entry, dict) or not isinstance(entry.get("pickle_path"), str):
            raise DataError(f"{summary}: molecule {smiles!r} has no pickle_path")
        path = (folder / entry["pickle_path"]).resolve()
        if not path.is_relative_to(folder):
            raise DataError(f"{summary}: pickle_path {entry['pickle_path']!r} leaves {folder}")
        if not path.is_file():
            raise DataError(f"{path}: pickle of molecule {smiles!r} (listed in {summary}) missing")
        record = read_pickle(path, allow_pickle=True)
        try:
            molecules.append(_from_pickle(record, smiles, path, all_conformers))
        except DataError:
            if not skip_invalid:
                raise
    return molecules


def read_pickle(path: str | os.PathLike, allow_pickle: bool = False) -> dict:
    """Unpickle one GEOM molecule file (only :data:`PICKLE_ALLOWED` globals), as stored."""
    path = Path(path)
    if not allow_pickle:
        raise DataError(f"{path}: refusing to unpickle; {PICKLE_HINT}")
    if not path.is_file():
        raise MissingFileError(f"GEOM pickle {path} does not exist")
    try:
        with rdBase.BlockLogs():
            record = _Unpickler(io.BytesIO(path.read_bytes())).load()
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
    except Exception as error:  # noqa: BLE001 - unpickling damaged bytes can raise anything
        raise DataError(
            f"{path}: not a readable pickle (corrupt or truncated?): "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(record, dict) or not isinstance(record.get("conformers"), list):
        raise DataError(f"{path}: expected a dict with a 'conformers' list, got {type(record)}")
    return record


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in PICKLE_ALLOWED:
            raise DataError(f"refusing to unpickle {module}.{name}: not part of a GEOM file")
        return super().find_class(module, name)


def read_msgpack(
    path: str | os.PathLike,
    max_molecules: int | None = None,
    all_conformers: bool = False,
    skip_invalid: bool = False,
) -> list[GeomMolecule]:
    """Read a GEOM ``*_crude.msgpack`` stream (see the module docstring for the atom order)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"GEOM msgpack file {path} does not exist")
    molecules = []
    for smiles, record in _msgpack_records(path):
        if max_molecules is not None and len(molecules) == max_molecules:
            break
        try:
            molecules.append(_from_msgpack(record, smiles, path, all_conformers))
        except DataError:
            if not skip_invalid:
                raise
    return molecules


def _msgpack_records(path: Path) -> Iterator[tuple[str, dict]]:
    """(SMILES, molecule dict) in file order; DataError for damaged or truncated streams."""
    try:
        import msgpack
    except ImportError as error:  # pragma: no cover - msgpack is a dependency
        raise DataError(
            f"{path}: reading GEOM msgpack files needs `pip install msgpack`"
        ) from error
    size = path.stat().st_size
    # No length in the file can exceed its size: this bounds what a damaged header can allocate.
    limit = max(1, min(size, 2**31 - 1))
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(
            f, raw=False, strict_map_key=False, max_buffer_size=limit, use_list=True
        )
        n_chunks = 0
        try:
            for chunk in unpacker:
                n_chunks += 1
                if not isinstance(chunk, dict):
                    raise DataError(
                        f"{path}: chunk {n_chunks} is a {type(chunk).__name__}, expected a dict "
                        "of molecules keyed by SMILES"
                    )
                for smiles, record in chunk.items():
                    if not isinstance(smiles, str) or not isinstance(record, dict):
                        raise DataError(f"{path}: chunk {n_chunks} has a non-molecule entry")
                    yield smiles, record
            end = unpacker.tell()
        except DataError:
            raise
        except Exception as error:  # noqa: BLE001 - msgpack raises many types on damaged bytes
            raise DataError(
                f"{path}: not a readable msgpack stream (corrupt or truncated?): "
                f"{type(error).__name__}: {error}"
            ) from error
    if end != size or n_chunks == 0:
        raise DataError(
            f"{path}: truncated or not msgpack: {n_chunks} complete chunks end at byte {end} "
            f"of {size}"
        )


def _smiles_mol(smiles: str, where: str) -> Chem.Mol:
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        raise DataError(f"{where}: RDKit cannot parse the SMILES {smiles!r}")
    return Chem.AddHs(mol)


def _number(conf: dict, key: str, where: str) -> float:
    value = conf.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise DataError(f"{where}: {key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise DataError(f"{where}: {key} is {value}")
    return float(value)


def _conformers(record: dict, where: str) -> list:
    confs = record.get("conformers")
    if not isinstance(confs, list) or not confs:
        raise DataError(f"{where}: the molecule has no conformers")
    if not all(isinstance(c, dict) for c in confs):
        raise DataError(f"{where}: conformers must be dicts")
    return confs


def _from_pickle(record: dict, smiles: str, path: Path, all_conformers: bool) -> GeomMolecule:
    where = f"{path} molecule {smiles!r}"
    reference = _smiles_mol(smiles, where)
    expected = sorted(a.GetAtomicNum() for a in reference.GetAtoms())
    rows, first_z = [], None
    for k, conf in enumerate(_conformers(record, where)):
        at = f"{where} conformer {k} (geom_id {conf.get('geom_id')})"
        mol = conf.get("rd_mol")
        if not isinstance(mol, Chem.Mol) or mol.GetNumConformers() != 1:
            raise DataError(f"{at}: rd_mol must be an RDKit Mol with one 3D conformer")
        z = [a.GetAtomicNum() for a in mol.GetAtoms()]
        if sorted(z) != expected:
            raise DataError(
                f"{at}: its atoms {_formula(z)} disagree with the SMILES {_formula(expected)}"
            )
        if first_z is None:
            first_z = z
        elif z != first_z:
            raise DataError(f"{at}: atom order differs from the molecule's first conformer")
        pos = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
        rows.append((*_energy_weight_id(conf, at), pos, mol))
    return _molecule(smiles, rows, where, all_conformers, str(path))


def _from_msgpack(record: dict, smiles: str, path: Path, all_conformers: bool) -> GeomMolecule:
    where = f"{path} molecule {smiles!r}"
    mol = _smiles_mol(smiles, where)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    rows = []
    for k, conf in enumerate(_conformers(record, where)):
        at = f"{where} conformer {k} (geom_id {conf.get('geom_id')})"
        try:
            xyz = np.asarray(conf.get("xyz"), dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise DataError(f"{at}: xyz must be [[Z, x, y, z], ...] numbers") from error
        if xyz.ndim != 2 or xyz.shape[1] != 4:
            raise DataError(f"{at}: xyz must have shape [N, 4], got {xyz.shape}")
        if xyz.shape[0] != len(z) or not np.array_equal(xyz[:, 0], z):
            raise DataError(
                f"{at}: atomic numbers of xyz {_formula(xyz[:, 0])} disagree with "
                f"AddHs(MolFromSmiles) {_formula(z)} (count or order)"
            )
        rows.append((*_energy_weight_id(conf, at), xyz[:, 1:], None))
    return _molecule(smiles, rows, where, all_conformers, str(path), template=mol)


def _energy_weight_id(conf: dict, at: str) -> tuple[float, float, int]:
    energy = _number(conf, "totalenergy", at) * HARTREE_TO_EV
    weight = _number(conf, "boltzmannweight", at)
    geom_id = conf.get("geom_id", -1)
    valid = isinstance(geom_id, (int, np.integer)) and not isinstance(geom_id, bool)
    return energy, weight, int(geom_id) if valid else -1


def _molecule(smiles, rows, where, all_conformers, source, template=None) -> GeomMolecule:
    """Sort ``rows`` (energy eV, weight, geom_id, pos [N, 3], rd_mol or None) by energy."""
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


def _formula(z) -> str:
    table = Chem.GetPeriodicTable()
    values, counts = np.unique(np.asarray(z, dtype=np.int64), return_counts=True)
    parts = []
    for v, c in zip(values, counts):
        symbol = table.GetElementSymbol(int(v)) if 0 < v < 119 else f"Z={v}"
        parts.append(f"{symbol}{c if c > 1 else ''}")
    return "".join(parts) or "(no atoms)"


def geom_split(
    n: int, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, np.ndarray]:
    """Disjoint, sorted train/val/test molecule indices from a seeded permutation of ``n``.

    ``round(fractions[0] * n)`` molecules train, ``round(fractions[1] * n)`` validate, the rest
    test. The same ``n``, ``seed`` and ``fractions`` give the same split on every machine
    (NumPy's ``default_rng``, PCG64).
    """
    if n < 0 or len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"geom_split needs n >= 0 and 3 fractions >= 0 summing to 1, got {n}, {fractions}"
        )
    n_train = round(fractions[0] * n)
    n_val = min(round(fractions[1] * n), n - n_train)
    order = np.random.default_rng(seed).permutation(n)
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }
