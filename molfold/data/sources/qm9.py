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

Hartree are converted to eV with :data:`molfold.units.HARTREE_TO_EV` (CODATA 2014, the value of
``ase.units.Hartree``). The atomization variants are ``X_atom = X - sum over atoms of
ATOMREF[X][element]``, computed in Hartree from :data:`ATOMREF` for both sources (the ``*_atom``
columns of ``gdb9.sdf.csv``, in kcal/mol, are not read), then converted to eV.

Each structure also carries ``z`` [N], ``pos`` [N, 3] Angstrom (the DFT geometry), ``idx`` [1]
(the GDB index), ``smiles`` (str) and the RDKit graph in the geometry's atom order:
``bond_index`` [2, 2B] (both directions), ``bond_type`` [2B] (1 single, 2 double, 3 triple,
4 aromatic), ``formal_charge`` [N] and ``graph_source`` [1] (:data:`GRAPH_SOURCES`): for the
raw layout the bonds of ``gdb9.sdf``, for qm9pack the graph that
:func:`~molfold.data.sources.qm9_graph.geometry_graph` perceives (see
:mod:`molfold.data.sources.qm9_graph`). :func:`to_rdkit_mol` rebuilds the RDKit molecule with its
3D conformer.

Processed cache: the first :func:`load_qm9` converts the source once into plain tensors, written
atomically and read back with ``torch.load(weights_only=True)``: ``<root>/processed/qm9_<key>.pt``
for the raw layout, ``$MOLFOLD_CACHE_DIR/qm9/qm9pack_<key>.pt`` (default
``~/.cache/molfold/qm9/``) for qm9pack, where ``<key>`` hashes the source files' names, sizes and
modification times, the slice and :data:`CACHE_VERSION`. :func:`cache_path` names it.

Layout: this module finds the source, keeps the cache and builds the structures;
:mod:`~molfold.data.sources.qm9_targets` holds :data:`TARGETS`, :data:`ATOMREF` and the tensor
layout; :mod:`~molfold.data.sources.qm9_files` parses the raw layout and the qm9pack CSVs;
:mod:`~molfold.data.sources.qm9_graph` perceives the RDKit graphs. Their public names are
importable from here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import zipfile
from functools import partial
from pathlib import Path

import torch
from torch_geometric.data import Data

from molfold.data.sources.downloads import download
from molfold.data.sources.qm9_files import (
    QM9PACK_FILES,
    RAW_FILES,
    read_qm9pack,
    read_raw,
    read_uncharacterized,
)
from molfold.data.sources.qm9_graph import GRAPH_SOURCES, geometry_graph, to_rdkit_mol
from molfold.data.sources.qm9_targets import (
    ATOMREF,
    CACHE_VERSION,
    N_CHARACTERIZED,
    N_GDB,
    N_UNCHARACTERIZED,
    TARGET_NAMES,
    TARGETS,
)
from molfold.errors import MissingFileError
from molfold.io import atomic_write, cache_root

__all__ = [
    "ATOMREF", "CACHE_VERSION", "GRAPH_SOURCES", "N_CHARACTERIZED", "N_GDB", "N_UNCHARACTERIZED",
    "QM9PACK_FILES", "RAW_FILES", "TARGETS", "TARGET_NAMES", "cache_path",
    "download_qm9", "geometry_graph", "load_qm9", "qm9pack_dir", "raw_dir",
    "read_qm9", "read_qm9pack", "read_raw", "read_uncharacterized", "to_data_list", "to_rdkit_mol",
]  # fmt: skip


RAW_URL = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/molnet_publish/qm9.zip"
"""``qm9.zip`` holding ``gdb9.sdf`` and ``gdb9.sdf.csv`` (torch-geometric ``QM9.raw_url``)."""
RAW_URL2 = "https://ndownloader.figshare.com/files/3195404"
"""``uncharacterized.txt`` (torch-geometric ``QM9.raw_url2``)."""


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

    Same URLs and steps as torch-geometric's ``QM9.download``: unzip ``gdb9.sdf`` and
    ``gdb9.sdf.csv`` from :data:`RAW_URL`, then save :data:`RAW_URL2` as ``uncharacterized.txt``.
    Every file is written atomically, so an interrupted download never leaves a partial file that
    :func:`raw_dir` would take for the layout. Returns the folder.
    """
    folder = Path(root) / "raw"
    archive = download(RAW_URL, folder / "qm9.zip")
    with zipfile.ZipFile(archive) as zipped:
        for name in RAW_FILES[:2]:
            with zipped.open(name) as member:
                atomic_write(folder / name, partial(shutil.copyfileobj, member))
    archive.unlink()
    download(RAW_URL2, folder / "uncharacterized.txt")
    return folder


def _source(root: str | os.PathLike | None) -> tuple[str, Path]:
    """``("raw" or "qm9pack", folder)`` of the first source found (see the module docstring)."""
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
        "molfold.data.sources.qm9.download_qm9(root) on a machine with a network)"
    )


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
        base = cache_root() / "qm9"
    return base / f"{'qm9' if kind == 'raw' else 'qm9pack'}_{digest}.pt"


def _load_cache(path: Path) -> dict | None:
    """The cache's tensors at ``path``, or None if it is unreadable or of another version."""
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
        atomic_write(path, partial(torch.save, tensors))
    return to_data_list(tensors)
