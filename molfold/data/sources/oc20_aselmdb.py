"""OC20 as ``.aselmdb`` files: ASE databases in LMDB (fairchem's current ``AseDBDataset``).

One LMDB file per shard, written by the ``aselmdb`` backend of ``ase.db.connect`` (PyPI
``ase-db-backends``; older files by fairchem's own ``LMDBDatabase``). Row ``i`` is stored under
key ``b"<i>"``, ids from 1; reserved keys ``nextid`` (the id the next row would get),
``deleted_ids`` and ``metadata``. Every value is zlib-compressed JSON, decoded here by ASE's own
decoder (:func:`ase.io.jsonio.decode`, which reads both the ASE and the orjson flavour) into an
:class:`ase.db.row.AtomsRow`. A row carries positions, cell, pbc, ``tags``, its constraints
(``FixAtoms``: the fixed atoms), the calculator's ``energy`` (total, eV) and ``forces``
(eV/Angstrom), and a per-row ``data`` dict, which fairchem merges into ``atoms.info``; OC20
rows keep ``sid``, ``fid`` and ``ref_energy`` there (molfold also looks in the row's key-value
pairs). With ``referenced`` the energy is ``energy - ref_energy``, the adsorption energy.

Where molfold departs from fairchem and from ``ase.db.connect``: the backend's
``LMDBDatabase`` reopens its environment in a forked DataLoader worker without closing the
inherited one, which py-lmdb >= 2 refuses ("already open in this process"). molfold therefore
opens the file itself (:mod:`molfold.data.sources.lmdb_envs`, one environment per file per
process) and decodes each row as the backend does, with ASE's decoder and ``AtomsRow``.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from torch_geometric.data import Data

from molfold.data.sources import lmdb_envs
from molfold.data.sources.oc20_graph import fixed_atoms, integer_id, oc20_graph
from molfold.data.sources.oc20_lmdb import lmdb_files
from molfold.data.sources.oc20_sequence import OC20Sequence
from molfold.errors import DataError

SUFFIX = ".aselmdb"


def decode_value(stored: bytes, where: str) -> Any:
    """One value of an ``.aselmdb`` file: zlib-compressed JSON, decoded by ASE."""
    from ase.io.jsonio import decode

    try:
        return decode(zlib.decompress(stored).decode("utf-8"))
    except Exception as error:  # noqa: BLE001 - damaged bytes can fail anywhere in decoding
        raise DataError(
            f"{where}: not a readable ASE LMDB value (corrupt?): {type(error).__name__}: {error}"
        ) from error


def row_ids(path: Path) -> range | np.ndarray:
    """The ids of the rows of one ``.aselmdb`` file in order: 1 .. nextid - 1 except the
    deleted ones (read from the reserved keys; no row is read). A ``range`` when no row was
    deleted, so that the sequence pickles small."""
    with lmdb_envs.briefly(path) as env:
        stored_next = lmdb_envs.get(path, b"nextid", env)
        stored_deleted = lmdb_envs.get(path, b"deleted_ids", env)
    next_id = 1 if stored_next is None else decode_value(stored_next, f"{path} key 'nextid'")
    if isinstance(next_id, bool) or not isinstance(next_id, int | np.integer) or next_id < 1:
        raise DataError(f"{path}: 'nextid' must be a positive integer, got {next_id!r}")
    deleted = [] if stored_deleted is None else decode_value(stored_deleted, f"{path} deleted")
    deleted = np.asarray(deleted, dtype=np.int64).reshape(-1)
    if not deleted.size:
        return range(1, int(next_id))
    ids = np.arange(1, int(next_id), dtype=np.int64)
    return ids[~np.isin(ids, deleted)]


class AseLmdbStructures(OC20Sequence):
    """The rows of ``.aselmdb`` files (one file, or every ``*<suffix>`` of a folder), as S2EF
    graphs.

    ``referenced``: energies minus the row's ``ref_energy`` (adsorption energies); else the
    calculator's total energy.
    """

    def __init__(
        self, path: str | os.PathLike, referenced: bool, limit: int | None, suffix: str = SUFFIX
    ) -> None:
        self.referenced = referenced
        files, self.ids = [], []
        for file in lmdb_files(path, suffix):
            if limit is not None and sum(len(ids) for ids in self.ids) >= limit:
                break
            files.append(file)
            self.ids.append(row_ids(file))
        super().__init__(files, [len(ids) for ids in self.ids], limit)

    def read(self, k: int, index: int) -> Data:
        from ase.db.row import AtomsRow

        path, row_id = self.files[k], int(self.ids[k][index])
        where = f"{path} row id {row_id}"
        stored = lmdb_envs.get(path, str(row_id).encode("ascii"))
        if stored is None:
            raise DataError(f"{where}: missing (the file's nextid promises it; truncated?)")
        record = decode_value(stored, where)
        try:
            row = AtomsRow(record)
            numbers = np.asarray(row.numbers)
            constraints = row.constraints
        except Exception as error:  # noqa: BLE001 - a malformed row fails inside ASE
            raise DataError(f"{where}: not an ASE row: {type(error).__name__}: {error}") from error
        info = {**row.key_value_pairs, **(row.data if isinstance(row.data, dict) else {})}
        energy, forces = row.get("energy"), row.get("forces")
        if energy is None or forces is None:
            raise DataError(f"{where}: no calculator energy and forces")
        if self.referenced:
            if info.get("ref_energy") is None:
                raise DataError(
                    f"{where}: no ref_energy in the row's data; read total energies with "
                    "data.energy=total"
                )
            energy = float(energy) - float(info["ref_energy"])
        tags = row.get("tags")
        return oc20_graph(
            z=numbers,
            pos=np.asarray(row.positions),
            cell=np.asarray(row.cell),
            pbc=np.asarray(row.pbc),
            tags=np.zeros(len(numbers), dtype=np.int64) if tags is None else tags,
            fixed=fixed_atoms(constraints, len(numbers)),
            sid=integer_id(info.get("sid"), "sid", where),
            fid=integer_id(info.get("fid"), "fid", where),
            where=where,
            energy=energy,
            forces=forces,
        )
