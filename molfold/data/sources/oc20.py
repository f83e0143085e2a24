"""Open Catalyst 2020 (OC20; Chanussot et al., ACS Catal. 11, 6059 (2021)): adsorbates on
catalyst surfaces, in every layout fairchem has published, read lazily.

``data.format=oc20`` reads, detected from ``data.path`` (or named by ``data.layout``):

===========  ===============================================  =========================
layout       files                                            reader
===========  ===============================================  =========================
``raw``      ``<n>.extxyz.xz`` + ``<n>.txt.xz`` pairs (or     :mod:`.oc20_raw`
             ``.extxyz`` + ``.txt``): S2EF as downloaded
``lmdb``     ``data.NNNN.lmdb`` folder (S2EF) or one          :mod:`.oc20_lmdb`
             ``.lmdb`` (IS2RE) of pickled torch-geometric
             ``Data``; needs ``allow_pickle: true``
``aselmdb``  ``.aselmdb`` file(s): ASE databases in LMDB      :mod:`.oc20_aselmdb`
             (fairchem's current ``AseDBDataset``)
===========  ===============================================  =========================

The loader returns a lazy sequence (:mod:`.oc20_sequence`): it counts the structures of each
file up front (from the ``.txt`` lines, the LMDB ``length`` or entry count, the ``.aselmdb``
ids), reads none, and reads each structure when it is indexed, opening LMDB files anew in each
process. Each structure carries the fields of :mod:`.oc20_graph` (:func:`provides` lists them
per task). OC20 is in eV and Angstrom, molfold's units: nothing is converted.

========================  =========================================================
option                    meaning
========================  =========================================================
``task``                  ``s2ef`` (default): ``energy`` and ``forces`` of each frame;
                          ``is2re``: ``target`` = relaxed adsorption energy of each
                          initial structure (``lmdb`` layout only)
``layout``                ``auto`` (default), ``raw``, ``lmdb`` or ``aselmdb``
``allow_pickle``          read pickled LMDBs (default false; pickles can run code, and
                          molfold's unpickler allows only tensors, NumPy and PyG Data)
``energy``                ``adsorption`` (default): energy minus the reference energy of
                          the frame (the OC20 label); ``total``: the DFT total energy.
                          Pickled LMDBs hold the energies as written (published S2EF
                          LMDBs: adsorption), so they accept only ``adsorption``
========================  =========================================================

Where molfold departs from fairchem: no conversion step (raw files are read directly), no PyG
classes unpickled, and training on free atoms only (fairchem's ``train_on_free_atoms``) is left
to the task, which gets ``fixed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from molfold.data import graph as G
from molfold.data.sources import lmdb_envs, register_source
from molfold.data.sources.oc20_aselmdb import SUFFIX as ASELMDB_SUFFIX
from molfold.data.sources.oc20_aselmdb import AseLmdbStructures
from molfold.data.sources.oc20_lmdb import PickledLmdbStructures, lmdb_files
from molfold.data.sources.oc20_pickle import PICKLE_HINT
from molfold.data.sources.oc20_raw import FRAME_SUFFIXES, ID_SUFFIXES, RawStructures
from molfold.data.sources.oc20_sequence import OC20Sequence
from molfold.errors import ConfigError, DataError, MissingFileError

TASKS = ("s2ef", "is2re")
LAYOUTS = ("auto", "raw", "lmdb", "aselmdb")
ENERGIES = ("adsorption", "total")

COMMON_FIELDS = (G.POS, G.Z, G.CELL, G.PBC, G.TAGS, G.FIXED, G.SID, G.FID)
TASK_FIELDS = {"s2ef": (G.ENERGY, G.FORCES), "is2re": (G.TARGET,)}
"""Fields every structure of a task carries; IS2RE adds ``energy_init`` and ``pos_relaxed``
when the files store them."""
RELAXED_ENERGY = "relaxed_energy"
"""IS2RE's one target (``target`` [1, 1], eV): the adsorption energy of the relaxed state."""


@dataclass(frozen=True)
class OC20Options:
    """The keys of ``data=oc20`` (see the module docstring)."""

    task: str = "s2ef"
    layout: str = "auto"
    allow_pickle: bool = False
    energy: str = "adsorption"

    def __post_init__(self) -> None:
        for name, choices in (("task", TASKS), ("layout", LAYOUTS), ("energy", ENERGIES)):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}"
                )


def provides(options: OC20Options) -> tuple[str, ...]:
    """The fields every structure carries for ``options.task``."""
    return COMMON_FIELDS + TASK_FIELDS[options.task]


def layout(path: str | os.PathLike | None, options: OC20Options | None = None) -> str:
    """The layout at ``path``: ``options.layout`` unless ``auto``, else what the files are
    (a DataError naming the path when they are none of the three, or a mixture)."""
    if options is not None and options.layout != "auto":
        return options.layout
    if path is None:
        raise ConfigError("data.path is not set: give an OC20 folder or file")
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"OC20 path {path} does not exist")
    names = [f.name for f in path.iterdir() if f.is_file()] if path.is_dir() else [path.name]
    found = []
    if any(n.endswith(ASELMDB_SUFFIX) for n in names):
        found.append("aselmdb")
    if any(n.endswith(".lmdb") for n in names):
        found.append(_lmdb_kind(path))
    raw_names = FRAME_SUFFIXES if path.is_dir() else FRAME_SUFFIXES + ID_SUFFIXES
    if any(n.endswith(s) for n in names for s in raw_names):
        found.append("raw")
    if len(set(found)) == 1:
        return found[0]
    if not found:
        raise DataError(
            f"{path}: no OC20 files (.extxyz.xz + .txt.xz, .lmdb or .aselmdb); "
            f"found {sorted(names)[:5]}"
        )
    raise DataError(f"{path}: holds files of several layouts ({', '.join(found)}); set data.layout")


def _lmdb_kind(path: Path) -> str:
    """``lmdb`` (pickled Data), or ``aselmdb`` for an ASE database named ``.lmdb`` (it has the
    reserved key ``nextid``)."""
    first = lmdb_files(path)[0]
    with lmdb_envs.briefly(first) as env:
        return "aselmdb" if lmdb_envs.get(first, b"nextid", env) is not None else "lmdb"


def targets(options: OC20Options) -> list[tuple[str, str]]:
    """Name and unit of the column of ``target``: IS2RE's relaxed adsorption energy."""
    return [(RELAXED_ENERGY, "eV")] if options.task == "is2re" else []


@register_source("oc20", OC20Options, provides=provides, layout=layout, targets=targets)
def load(path: str | None, options: OC20Options, max_structures: int | None) -> OC20Sequence:
    """The structures at ``path`` (at most ``max_structures``), as a lazy sequence."""
    found = layout(path, options)
    if path is None:
        raise ConfigError("data.path is not set: give an OC20 folder or file")
    if options.task == "is2re" and found != "lmdb":
        raise ConfigError(
            f"data.task=is2re reads IS2RE LMDBs (data.lmdb of pickled Data); {path} is "
            f"layout {found}, which holds S2EF frames: use data.task=s2ef"
        )
    referenced = options.energy == "adsorption"
    if found == "raw":
        return RawStructures(path, referenced, max_structures)
    if found == "aselmdb":
        suffix = ASELMDB_SUFFIX if any(Path(path).glob(f"*{ASELMDB_SUFFIX}")) else ".lmdb"
        return AseLmdbStructures(path, referenced, max_structures, suffix)
    if not options.allow_pickle:
        raise DataError(f"{path}: {PICKLE_HINT}")
    if not referenced:
        raise ConfigError(
            "data.energy=total: pickled OC20 LMDBs hold the energies as they were written "
            "(published S2EF LMDBs: adsorption energies, without the reference to add back); "
            "read the raw .extxyz.xz files for total energies"
        )
    return PickledLmdbStructures(path, options.task, max_structures)
