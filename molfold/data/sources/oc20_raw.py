"""OC20 S2EF as published: pairs of ``<n>.extxyz.xz`` frames and ``<n>.txt.xz`` ids.

Each ``.extxyz.xz`` (LZMA) holds about 5,000 frames from different systems, written by ASE::

    Lattice="..." Properties=species:S:1:pos:R:3:move_mask:L:1:tags:I:1:forces:R:3 energy=...

with the total DFT energy (eV) and forces (eV/Angstrom). ``move_mask`` F marks a fixed atom;
ASE reads the column into a ``FixAtoms`` constraint, and its writer leaves the column out when
nothing is fixed. Line k of the matching ``.txt.xz`` describes frame k:
``random<sid>,frame<fid>,<reference energy>``; the energy everyone reports (and fairchem's
``preprocess_ef.py --ref-energy`` stores) is energy minus reference energy, the adsorption
energy. Uncompressed ``.extxyz`` + ``.txt`` pairs (what ``uncompress.py`` makes) read the same.

Where molfold departs from fairchem: fairchem converts these files into LMDBs before training
(``preprocess_ef.py``); molfold reads them directly, decoding one ``.xz`` file at a time (the
last one decoded is cached per process). The number of structures is the number of lines of
the ``.txt`` files, so counting decodes only those; a pair whose files disagree (fewer lines
than frames) is refused when it is first read. Forces are read as stored
(``apply_constraint=False``, as fairchem does): fixed atoms keep their DFT forces.
"""

from __future__ import annotations

import io
import lzma
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import ase.io
import numpy as np
from ase import Atoms
from torch_geometric.data import Data

from molfold.data.sources.oc20_graph import fixed_atoms, oc20_graph
from molfold.data.sources.oc20_sequence import OC20Sequence
from molfold.errors import DataError, MissingFileError

FRAME_SUFFIXES = (".extxyz.xz", ".extxyz")
ID_SUFFIXES = (".txt.xz", ".txt")


class FrameIds(NamedTuple):
    """Line k of a ``.txt`` file: frame k's system id, frame id and reference energy (eV;
    None when the line has none, as in the test split)."""

    sid: int
    fid: int
    ref_energy: float | None


def raw_pairs(path: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(frames file, ids file) of every pair at ``path`` (a folder, or either file of one
    pair), in numeric order of the names (``0``, ``1``, ..., ``10``). In a folder, the frames
    files make the pairs; other ``.txt`` files (fairchem's ``data_log`` ...) are ignored."""
    path = Path(path)
    if path.is_dir():
        stems = {_stem(f, FRAME_SUFFIXES) for f in path.iterdir()} - {""}
        if not stems:
            raise DataError(f"{path}: no OC20 .extxyz.xz / .extxyz files (S2EF raw layout)")
        return [_pair(path, stem) for stem in sorted(stems, key=_natural)]
    stem = _stem(path, FRAME_SUFFIXES) or _stem(path, ID_SUFFIXES)
    if not stem:
        raise DataError(f"{path}: not an OC20 raw file (.extxyz.xz, .txt.xz, .extxyz, .txt)")
    if not path.is_file():
        raise MissingFileError(f"OC20 file {path} does not exist")
    return [_pair(path.parent, stem)]


def _stem(path: Path, suffixes: tuple[str, ...]) -> str:
    for suffix in suffixes:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    return ""


def _natural(stem: str) -> tuple:
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def _pair(folder: Path, stem: str) -> tuple[Path, Path]:
    def find(suffixes: tuple[str, ...]) -> Path:
        for suffix in suffixes:
            if (folder / f"{stem}{suffix}").is_file():
                return folder / f"{stem}{suffix}"
        names = " or ".join(stem + s for s in suffixes)
        raise MissingFileError(f"{folder}: no {names}, the other file of pair {stem!r}")

    return find(FRAME_SUFFIXES), find(ID_SUFFIXES)


def read_text(path: Path) -> str:
    """A ``.xz`` or plain text file's text; a :class:`DataError` naming it if the file is
    corrupt, truncated or not UTF-8."""
    try:
        raw = lzma.decompress(path.read_bytes()) if path.name.endswith(".xz") else path.read_bytes()
        return raw.decode("utf-8")
    except (lzma.LZMAError, EOFError, OSError, UnicodeDecodeError) as error:
        raise DataError(
            f"{path}: cannot decode (corrupt or truncated?): {type(error).__name__}: {error}"
        ) from error


def read_ids(path: Path) -> list[FrameIds]:
    """The frame ids of a ``.txt(.xz)`` file, one per non-empty line."""
    ids = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        where = f"{path} line {number}"
        if len(fields) not in (2, 3) or not fields[0].startswith("random"):
            raise DataError(f"{where}: expected 'random<sid>,frame<fid>,<energy>', got {line!r}")
        sid, fid = fields[0][len("random") :], fields[1].removeprefix("frame")
        if not sid.isdigit() or not fid.isdigit():
            raise DataError(f"{where}: system and frame ids must be integers, got {line!r}")
        ref = None
        if len(fields) == 3:
            try:
                ref = float(fields[2])
            except ValueError:
                raise DataError(
                    f"{where}: reference energy {fields[2]!r} is not a number"
                ) from None
            if not np.isfinite(ref):
                raise DataError(f"{where}: reference energy is {ref}")
        ids.append(FrameIds(int(sid), int(fid), ref))
    return ids


def read_frames(path: Path) -> list[Atoms]:
    """Every frame of an ``.extxyz(.xz)`` file, through ASE's extxyz reader."""
    text = read_text(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ASE warns about keys it skips
            return ase.io.read(io.StringIO(text), index=":", format="extxyz")
    except Exception as error:  # noqa: BLE001 - ASE raises many types on malformed text
        raise DataError(
            f"{path}: not a readable extxyz file: {type(error).__name__}: {error}"
        ) from error


class RawStructures(OC20Sequence):
    """S2EF frames of :func:`raw_pairs`, read a pair at a time.

    ``referenced``: energies minus the reference energy of the ``.txt`` line (adsorption
    energies); else the total energies of the ``.extxyz`` file.
    """

    def __init__(self, path: str | os.PathLike, referenced: bool, limit: int | None) -> None:
        self.pairs = raw_pairs(path)
        self.referenced = referenced
        counts = []
        for k, (_, ids_file) in enumerate(self.pairs):
            if limit is not None and sum(counts) >= limit:
                break  # files past max_structures are never counted, nor read
            ids = read_ids(ids_file)
            self._cache = (k, None, ids)
            counts.append(len(ids))
        super().__init__([frames for frames, _ in self.pairs[: len(counts)]], counts, limit)

    def _pair_contents(self, k: int) -> tuple[list[Atoms], list[FrameIds]]:
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] == k and cached[1] is not None:
            return cached[1], cached[2]
        frames_file, ids_file = self.pairs[k]
        ids = cached[2] if cached is not None and cached[0] == k else read_ids(ids_file)
        frames = read_frames(frames_file)
        if len(frames) != len(ids):
            raise DataError(
                f"{frames_file} holds {len(frames)} frames but {ids_file} lists {len(ids)} "
                "(truncated or mismatched pair?)"
            )
        self._cache = (k, frames, ids)
        return frames, ids

    def read(self, k: int, index: int) -> Data:
        frames, ids = self._pair_contents(k)
        atoms, frame_ids = frames[index], ids[index]
        where = f"{self.pairs[k][0]} frame {index}"
        results = atoms.calc.results if atoms.calc is not None else {}
        if "energy" not in results or "forces" not in results:
            raise DataError(
                f"{where}: no energy and forces (found {sorted(results) or 'none'}); "
                "S2EF test frames carry no labels"
            )
        energy = float(results["energy"])
        if self.referenced:
            if frame_ids.ref_energy is None:
                raise DataError(
                    f"{self.pairs[k][1]}: frame {index} has no reference energy; "
                    "read total energies with data.energy=total"
                )
            energy -= frame_ids.ref_energy
        return oc20_graph(
            z=atoms.numbers,
            pos=atoms.positions,
            cell=np.asarray(atoms.cell),
            pbc=atoms.pbc,
            tags=atoms.get_tags(),
            fixed=fixed_atoms(atoms.constraints, len(atoms)),
            sid=frame_ids.sid,
            fid=frame_ids.fid,
            where=where,
            energy=energy,
            forces=np.asarray(results["forces"]),
        )
