"""MD17 and revised MD17 (rMD17) trajectories: molecular dynamics of one small molecule each.

Two published layouts of the same content, both ``.npz`` archives:

==========  ====================  ===================  ==================  =====================
layout      atomic numbers [N]    positions [F, N, 3]  energies [F]/[F,1]  forces [F, N, 3]
==========  ====================  ===================  ==================  =====================
``md17``    ``z``                 ``R``                ``E``               ``F``
``rmd17``   ``nuclear_charges``   ``coords``           ``energies``        ``forces``
==========  ====================  ===================  ==================  =====================

``md17`` is the original sGDML layout (Chmiela et al., Sci. Adv. 3, e1603015 (2017)); ``rmd17`` is
the revised dataset (Christensen & von Lilienfeld, Mach. Learn.: Sci. Technol. 1, 045018 (2020)).
Other keys (``name``, ``theory``, ``old_indices``, ...) are ignored.

=========  ======================  ==================
target     source unit             unit after loading
=========  ======================  ==================
positions  Angstrom                Angstrom
energy     kcal/mol                eV
forces     kcal/mol/Angstrom       eV/Angstrom
=========  ======================  ==================

kcal/mol are converted to eV with :data:`molfold.units.KCAL_PER_MOL_TO_EV` (0.0433641..., the
thermochemical calorie with the CODATA 2014 constants: the value of ``ase.units.kcal /
ase.units.mol``).

The files that molfold ships in ``data/`` use the ``md17`` layout (see ``data/README.md``).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data
from tqdm import tqdm

from molfold.data import graph as G
from molfold.data.neighbors import build_graph
from molfold.data.sources import register_source
from molfold.data.sources.downloads import download
from molfold.errors import ConfigError, DataError, MissingFileError
from molfold.io import atomic_write
from molfold.units import KCAL_PER_MOL_TO_EV

LAYOUTS = {
    "md17": {"z": "z", "pos": "R", "energy": "E", "forces": "F"},
    "rmd17": {"z": "nuclear_charges", "pos": "coords", "energy": "energies", "forces": "forces"},
}
"""Per layout, molfold's name of each array -> its key in the ``.npz`` archive."""

SOURCE_UNITS = {"pos": "Angstrom", "energy": "kcal/mol", "forces": "kcal/mol/Angstrom"}

PROGRESS_MIN_FRAMES = 5000
"""Show a progress bar when converting at least this many frames to graphs."""

MD17_URL = "http://www.quantum-machine.org/gdml/data/npz/md17_{name}.npz"
MD17_NAMES = (
    "aspirin",
    "benzene2017",
    "ethanol",
    "malonaldehyde",
    "naphthalene",
    "salicylic",
    "toluene",
    "uracil",
)
RMD17_URL = "https://figshare.com/ndownloader/files/23950376"
"""rMD17 as one ``tar.bz2`` (figshare, doi:10.6084/m9.figshare.12672038) holding
``rmd17/npz_data/rmd17_<name>.npz``. torch-geometric downloads the same archive from Materials
Cloud (record 466)."""
RMD17_NAMES = (
    "aspirin",
    "azobenzene",
    "benzene",
    "ethanol",
    "malonaldehyde",
    "naphthalene",
    "paracetamol",
    "salicylic",
    "toluene",
    "uracil",
)

# What numpy and zipfile raise for files that are not npz archives, or are corrupt or truncated.
# MemoryError: a corrupt array header can declare an absurd shape.
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    ValueError,
    OSError,
    KeyError,
    NotImplementedError,
    RuntimeError,
    MemoryError,
)


def read_md17(path: str | os.PathLike) -> dict:
    """Read an MD17 or rMD17 ``.npz`` file into numpy arrays in Angstrom and eV.

    Parameters
    ----------
    path : the ``.npz`` file, in either layout (see the module docstring)

    Returns
    -------
    dict with ``z`` [N] int64, ``pos`` [F, N, 3] Angstrom, ``energy`` [F] eV, ``forces``
    [F, N, 3] eV/Angstrom (float64), ``source_units`` (unit of each array in the file) and
    ``layout`` (``"md17"`` or ``"rmd17"``).

    Raises
    ------
    :class:`MissingFileError` (a FileNotFoundError) if ``path`` does not exist;
    :class:`DataError`, naming the file, if it is
    not an npz archive, is corrupt or truncated, lacks the keys of both layouts, has inconsistent
    shapes, has no frames, or has NaN or inf values (naming the frames).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"MD17 file {path} does not exist or is not a file")
    arrays, layout = _load_arrays(path)

    z = arrays["z"]
    if z.ndim != 1 or len(z) == 0 or z.dtype.kind not in "iu":
        raise DataError(f"{path}: atomic numbers must be integers of shape [N], got {_desc(z)}")
    if z.min() < 1 or z.max() > 118:
        raise DataError(f"{path}: atomic numbers must be in 1..118, got {np.unique(z).tolist()}")
    n_atoms = len(z)
    pos, energy, forces = arrays["pos"], arrays["energy"], arrays["forces"]
    for name, array in (("positions", pos), ("energies", energy), ("forces", forces)):
        if array.dtype.kind not in "iuf":
            raise DataError(f"{path}: {name} must be numbers, got {_desc(array)}")
    if pos.ndim != 3 or pos.shape[1:] != (n_atoms, 3):
        raise DataError(f"{path}: positions must have shape [F, {n_atoms}, 3], got {pos.shape}")
    n_frames = pos.shape[0]
    if n_frames == 0:
        raise DataError(f"{path}: the file holds zero frames")
    if energy.shape == (n_frames, 1):
        energy = energy[:, 0]
    if energy.shape != (n_frames,):
        raise DataError(
            f"{path}: energies must have shape [{n_frames}] or [{n_frames}, 1], got {energy.shape}"
        )
    if forces.shape != pos.shape:
        raise DataError(
            f"{path}: forces must have shape {pos.shape} like positions, got {forces.shape}"
        )

    bad = (
        ~np.isfinite(pos).all(axis=(1, 2))
        | ~np.isfinite(energy)
        | ~np.isfinite(forces).all(axis=(1, 2))
    )
    if bad.any():
        frames = np.nonzero(bad)[0]
        raise DataError(
            f"{path}: NaN or inf in {len(frames)} of {n_frames} frames, "
            f"frame indices {frames[:10].tolist()}{' ...' if len(frames) > 10 else ''}"
        )
    return {
        "z": z.astype(np.int64),
        "pos": pos.astype(np.float64),
        "energy": energy.astype(np.float64) * KCAL_PER_MOL_TO_EV,
        "forces": forces.astype(np.float64) * KCAL_PER_MOL_TO_EV,
        "source_units": dict(SOURCE_UNITS),
        "layout": layout,
    }


def _load_arrays(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """The four arrays of ``path`` under molfold's names, read eagerly, and the layout's name."""
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a single .npy array, not an .npz archive of MD17 arrays")
        with npz:
            found = sorted(npz.files)
            for layout, keys in LAYOUTS.items():
                if set(keys.values()) <= set(found):
                    return {name: np.asarray(npz[key]) for name, key in keys.items()}, layout
    except DataError:
        raise
    except _READ_ERRORS as error:
        raise DataError(
            f"{path}: not a readable .npz archive (corrupt or truncated?): "
            f"{type(error).__name__}: {error}"
        ) from error
    expected = "; ".join(f"{name}: {sorted(keys.values())}" for name, keys in LAYOUTS.items())
    raise DataError(f"{path}: missing MD17 keys; expected one layout ({expected}), found {found}")


def _desc(array: np.ndarray) -> str:
    return f"shape {array.shape} dtype {array.dtype}"


def load_md17(
    path: str | os.PathLike, r_max: float | None = None, max_frames: int | None = None
) -> list[Data]:
    """Frames of an MD17 or rMD17 file as atomic graphs (see :mod:`molfold.data.graph`).

    Parameters
    ----------
    path : ``.npz`` file in either layout
    r_max : cutoff radius of the radius graph, Angstrom (None: no edges; the datamodule adds
        them with :class:`molfold.data.transforms.RadiusGraph`)
    max_frames : keep only the first ``max_frames`` frames in file order (``None``: all)

    Returns
    -------
    One :class:`~torch_geometric.data.Data` per frame with ``z``, ``pos`` [N, 3] Angstrom,
    ``energy`` [1] eV, ``forces`` [N, 3] eV/Angstrom, the radius graph, and ``frame`` [1] int64,
    the frame's index in the file, so that a split can be saved and reported by frame.
    """
    if max_frames is not None and max_frames < 1:
        raise DataError(f"{path}: max_frames must be a positive integer, got {max_frames}")
    arrays = read_md17(path)
    n_frames = (
        len(arrays["energy"]) if max_frames is None else min(max_frames, len(arrays["energy"]))
    )
    graphs = []
    for k in tqdm(
        range(n_frames), desc=f"graphs of {Path(path).name}", disable=n_frames < PROGRESS_MIN_FRAMES
    ):
        data = build_graph(
            arrays["z"],
            arrays["pos"][k],
            r_max,
            where=f"{path} frame {k}",
            **{G.ENERGY: arrays["energy"][k], G.FORCES: arrays["forces"][k]},
        )
        data.frame = torch.tensor([k], dtype=torch.long)
        graphs.append(data)
    return graphs


def download_md17(name: str, root: str | os.PathLike, revised: bool = False) -> Path:
    """Download one MD17 (``md17_<name>.npz``) or rMD17 (``rmd17_<name>.npz``) file into ``root``.

    Needs network access; nothing in molfold's tests calls it. ``name`` is one of
    :data:`MD17_NAMES` or, with ``revised=True``, :data:`RMD17_NAMES`. An existing file is not
    downloaded again. Files are written atomically (:func:`molfold.io.atomic_write`), so an
    interrupted download leaves no partial file behind. Returns the path of the ``.npz`` file.
    """
    names = RMD17_NAMES if revised else MD17_NAMES
    if name not in names:
        raise DataError(
            f"unknown {'rMD17' if revised else 'MD17'} molecule {name!r}; known: {list(names)}"
        )
    root = Path(root)
    target = root / (f"rmd17_{name}.npz" if revised else f"md17_{name}.npz")
    if target.exists():
        return target
    if not revised:
        return download(MD17_URL.format(name=name), target)

    archive = root / "rmd17.tar.bz2"
    if not archive.exists():
        download(RMD17_URL, archive)
    member_name = f"rmd17/npz_data/rmd17_{name}.npz"
    with tarfile.open(archive, mode="r:bz2") as tar:
        try:
            member = tar.getmember(member_name)
        except KeyError as error:
            raise DataError(f"{archive}: no member {member_name}") from error
        if not member.isfile():
            raise DataError(f"{archive}: {member_name} is not a regular file")
        # Only this member's bytes are read, and written to a path chosen here: no path traversal.
        with tar.extractfile(member) as source:
            atomic_write(target, partial(shutil.copyfileobj, source))
    return target


@dataclass(frozen=True)
class MD17Options:
    """``data=md17`` has no keys of its own: the format fixes its units (kcal/mol, Angstrom)."""


@register_source("md17", MD17Options, provides=("pos", "z", "energy", "forces"))
def load(path: str | None, options: MD17Options, max_structures: int | None) -> list[Data]:
    """Every frame of an MD17 / rMD17 file (at most ``max_structures``), without edges."""
    if path is None:
        raise ConfigError("data.path is not set: give the MD17 file, e.g. data.path=aspirin.npz")
    return load_md17(path, None, max_frames=max_structures)
