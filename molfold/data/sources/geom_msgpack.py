"""GEOM's ``msgpack`` layout (``drugs_crude.msgpack``, ``qm9_crude.msgpack``): a stream of packed
dicts of molecules keyed by SMILES, coordinates as ``xyz`` = [[Z, x, y, z], ...] in Angstrom.

The file has no bonds: each molecule is rebuilt from its SMILES and its atom order checked
against every conformer (see :mod:`molfold.data.sources.geom`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from molfold.data.sources import geom_molecule as molecule
from molfold.data.sources.geom_molecule import READ_ALL, GeomMolecule, GeomReading
from molfold.errors import DataError, MissingFileError

MSGPACK_FILES = ("drugs_crude.msgpack", "qm9_crude.msgpack")


def read_msgpack(path: str | os.PathLike, reading: GeomReading = READ_ALL) -> list[GeomMolecule]:
    """Read a GEOM ``*_crude.msgpack`` stream (see the module docstring for the atom order)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"GEOM msgpack file {path} does not exist")

    def convert(smiles: str, record: dict) -> GeomMolecule:
        return _from_msgpack(record, smiles, path, reading.all_conformers)

    return molecule.collect(_msgpack_records(path), convert, reading)


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
        n_chunks = n_molecules = 0
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
                    n_molecules += 1
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
    if n_molecules == 0:
        raise DataError(f"{path}: a msgpack stream of {n_chunks} empty chunk(s), no molecules")


def _from_msgpack(record: dict, smiles: str, path: Path, all_conformers: bool) -> GeomMolecule:
    """The molecule of one msgpack record; every conformer's ``xyz`` must list the atoms of
    ``AddHs(MolFromSmiles(smiles))`` in that order."""
    where = f"{path} molecule {smiles!r}"
    mol = molecule.smiles_mol(smiles, where)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    rows = []
    for k, conf in enumerate(molecule.conformer_dicts(record, where)):
        at = f"{where} conformer {k} (geom_id {conf.get('geom_id')})"
        try:
            xyz = np.asarray(conf.get("xyz"), dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise DataError(f"{at}: xyz must be [[Z, x, y, z], ...] numbers") from error
        if xyz.ndim != 2 or xyz.shape[1] != 4:
            raise DataError(f"{at}: xyz must have shape [N, 4], got {xyz.shape}")
        if xyz.shape[0] != len(z) or not np.array_equal(xyz[:, 0], z):
            raise DataError(
                f"{at}: atomic numbers of xyz {molecule.formula(xyz[:, 0])} disagree with "
                f"AddHs(MolFromSmiles) {molecule.formula(z)} (count or order)"
            )
        rows.append((*molecule.energy_weight_id(conf, at), xyz[:, 1:], None))
    return molecule.ground_state_molecule(
        smiles, rows, where, all_conformers, str(path), template=mol
    )
