"""OC20's LMDBs of pickled torch-geometric ``Data`` (fairchem's ``LmdbDataset`` layout).

==============  ==================================  ==============================================
task            files                               entries
==============  ==================================  ==============================================
S2EF            a folder of ``data.NNNN.lmdb``      keys ``b"0"``, ``b"1"``, ...; a pickled int
                                                    under ``b"length"``
IS2RE / IS2RS   one ``data.lmdb``                   keys ``b"0"``, ...; no ``length``: the
                                                    number of entries is the count
==============  ==================================  ==============================================

Each value is a pickled ``Data`` (:mod:`molfold.data.sources.oc20_pickle`) whose attributes
have changed names over the years; molfold reads them as:

=================  =================================  ==========================================
molfold field      stored as (first found)            notes
=================  =================================  ==========================================
``z``              ``atomic_numbers``                 floats, checked to be whole numbers
``pos``            ``pos``                            Angstrom
``cell``           ``cell`` [1, 3, 3]                 Angstrom
``pbc``            ``pbc``                            usually absent: all True, as fairchem
``tags``           ``tags``                           required
``fixed``          ``fixed`` (float 1 = fixed)        absent: nothing fixed
``sid``, ``fid``   ``sid``, ``fid``                   absent: -1
``energy``         ``energy``, ``y``                  S2EF; as stored (published: referenced)
``forces``         ``forces``, ``force``              S2EF
``target``         ``y_relaxed``, ``energy_relaxed``  IS2RE relaxed (adsorption) energy
``energy_init``    ``y_init``, ``energy_init``        IS2RE, optional
``pos_relaxed``    ``pos_relaxed``                    IS2RE, optional
=================  =================================  ==========================================

Other attributes (``natoms``, checked against the atom count; ``edge_index``, ``distances``,
``cell_offsets``, ...) are ignored, as are None values: fields vary between splits.

Where molfold departs from fairchem: it unpickles only with the user's opt-in
(``allow_pickle``) and without PyG's classes (see ``oc20_pickle``); it opens environments with
``readahead=False`` (random access) and lazily in each process; it refuses a truncated file
instead of crashing on it, and a ``length`` larger than the file's entries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch_geometric.data import Data

from molfold.data.sources import lmdb_envs
from molfold.data.sources.oc20_graph import integer_id, oc20_graph, to_numpy
from molfold.data.sources.oc20_pickle import unpickle_count, unpickle_entry
from molfold.data.sources.oc20_sequence import OC20Sequence
from molfold.errors import DataError, MissingFileError

LENGTH_KEY = b"length"

ALIASES = {
    "z": ("atomic_numbers",),
    "energy": ("energy", "y"),
    "forces": ("forces", "force"),
    "target": ("y_relaxed", "energy_relaxed"),
    "energy_init": ("y_init", "energy_init"),
}
"""molfold's name -> the attribute names OC20 LMDBs have used for it, first found wins."""


def lmdb_files(path: str | os.PathLike, suffix: str = ".lmdb") -> list[Path]:
    """The ``*<suffix>`` files of a folder in name order (``data.0000.lmdb``, ...), or the one
    file ``path``."""
    path = Path(path)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.name.endswith(suffix) and f.is_file())
        if not files:
            raise DataError(f"{path}: no {suffix} files")
        return files
    if not path.is_file():
        raise MissingFileError(f"OC20 file {path} does not exist")
    return [path]


def count_entries(path: Path) -> int:
    """Structures in one LMDB file: its pickled ``length`` if stored (S2EF), else its number
    of keys (IS2RE). Reads no structure."""
    with lmdb_envs.briefly(path) as env:
        entries = lmdb_envs.entry_count(env)
        stored = lmdb_envs.get(path, LENGTH_KEY, env)
    if stored is None:
        return entries
    length = unpickle_count(stored, f"{path} key 'length'")
    if length > entries - 1:
        raise DataError(
            f"{path}: its 'length' says {length} entries but the file holds {entries - 1} "
            "(truncated or damaged?)"
        )
    return length


class PickledLmdbStructures(OC20Sequence):
    """The structures of OC20 LMDB files of pickled ``Data``, for ``task`` ``"s2ef"`` or
    ``"is2re"`` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, task: str, limit: int | None) -> None:
        self.task = task
        files, counts = [], []
        for file in lmdb_files(path):
            if limit is not None and sum(counts) >= limit:
                break
            files.append(file)
            counts.append(count_entries(file))
        super().__init__(files, counts, limit)

    def read(self, k: int, index: int) -> Data:
        path = self.files[k]
        key = str(index).encode("ascii")
        where = f"{path} entry {index}"
        stored = lmdb_envs.get(path, key)
        if stored is None:
            raise DataError(f"{where}: no key {key!r} (the file counts {self.counts[k]} entries)")
        return entry_graph(unpickle_entry(stored, where), self.task, where)


def entry_graph(attributes: dict[str, Any], task: str, where: str) -> Data:
    """The graph of one unpickled entry's attributes (names of the module docstring)."""

    def find(name: str, required: bool = True) -> Any:
        for key in ALIASES.get(name, (name,)):
            if key in attributes:
                return attributes[key]
        if required:
            names = " or ".join(ALIASES.get(name, (name,)))
            hint = {
                "energy": "; an IS2RE LMDB? read it with data.task=is2re",
                "target": "; an S2EF LMDB? read it with data.task=s2ef",
            }.get(name, "")
            raise DataError(f"{where}: no {names} (attributes present: {sorted(attributes)}){hint}")
        return None

    z = find("z")
    natoms = attributes.get("natoms")
    if natoms is not None and int(to_numpy(natoms).reshape(-1)[0]) != to_numpy(z).size:
        raise DataError(f"{where}: natoms is {natoms} but {to_numpy(z).size} atomic numbers")
    fields = {
        "z": z,
        "pos": find("pos"),
        "cell": find("cell"),
        "pbc": attributes.get("pbc", [True, True, True]),
        "tags": find("tags"),
        "fixed": attributes.get("fixed"),
        "sid": integer_id(attributes.get("sid"), "sid", where),
        "fid": integer_id(attributes.get("fid"), "fid", where),
    }
    if task == "s2ef":
        fields.update(energy=find("energy"), forces=find("forces"))
    else:
        fields.update(
            target=find("target"),
            energy_init=find("energy_init", required=False),
            pos_relaxed=find("pos_relaxed", required=False),
        )
    return oc20_graph(where=where, **fields)
