"""Generate GFN2-xTB energies and forces of drug-like conformers, to train a molfold potential.

The potential ranks (and relaxes) the ETKDG + MMFF conformers ``molfold predict`` makes, so its
training structures are those conformers and the GFN2-xTB relaxations that start from them:

1. Molecules: a seeded random sample of MOSES's *train* split (``scripts/pick_druglike.py``
   :func:`~pick_druglike.candidates`: drug-like, 10-40 heavy atoms, open stereo fixed at random,
   one per constitution), none of whose constitutions is in an ``--exclude`` folder (pass the
   held-out test set ``data/druglike_xtb`` and ``data/geom_xtb``). MOSES's train split shares no
   Bemis-Murcko scaffold with its ``test_scaffolds`` split, the source of the test set.
2. Per molecule ``--confs`` ETKDGv3 embeddings (``randomSeed=--seed``, 10 s timeout), each
   relaxed with MMFF94 (at most 2,000 steps); GFN2-xTB (tblite, no solvent, neutral) single
   points of every MMFF94 minimum (``kind=mmff``).
3. The lowest-MMFF94 conformer relaxed with GFN2-xTB (ASE BFGS, fmax 0.05 eV/Angstrom, at most
   300 steps, maximum step 0.2 Angstrom); ``--relax-frames`` frames evenly spaced along the
   trajectory, its last frame included (``kind=xtb-relax``, ``step``).

Output: ``--out``/``chunk_<k>.extxyz.gz``, ``--chunk`` molecules each, ASE extxyz with
``energy`` (eV) and ``forces`` (eV/Angstrom) as calculator results and ``smiles``, ``kind``,
``step`` in each frame's info line; atoms in the order of
``Chem.AddHs(Chem.MolFromSmiles(smiles))``. A chunk is written atomically once all of its
molecules are done; each molecule's frames are kept in ``<out>.cache/`` until then, so a killed
run resumes where it stopped, and a longer run (more ``--molecules``, same seed) extends the
same sample.

Usage::

    pip download molsets==0.3.1 --no-deps -d /tmp/molsets
    OMP_NUM_THREADS=1 python scripts/make_druglike_xtb_frames.py --molecules 2000 --seed 11 \\
        --molsets /tmp/molsets/molsets-0.3.1-py3-none-any.whl \\
        --exclude data/druglike_xtb data/geom_xtb --out data/druglike_xtb_frames
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.optimize import BFGS
from pick_druglike import candidates  # scripts/ is on sys.path when run as a script
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem
from tblite.ase import TBLite

from molfold.io import atomic_write

FMAX = 0.05  # eV/Angstrom
MAX_STEPS = 300
EMBED_TIMEOUT_S = 10


def _xtb() -> TBLite:
    return TBLite(method="GFN2-xTB", verbosity=0)


def frames(smiles: str, n_confs: int, seed: int, relax_frames: int) -> list[dict]:
    """The labelled structures of one molecule (module docstring): ``pos`` [N, 3] Angstrom,
    ``energy`` eV, ``forces`` [N, 3] eV/Angstrom, ``kind``, ``step``."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.timeout = EMBED_TIMEOUT_S
    with rdBase.BlockLogs():
        ids = [c for c in AllChem.EmbedMultipleConfs(mol, n_confs, params) if c >= 0]
        if not ids or not AllChem.MMFFHasAllMoleculeParams(mol):
            return []
        mmff = AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=2000)
    out = []

    def label(atoms: Atoms, kind: str, step: int) -> None:
        out.append(
            {
                "pos": atoms.get_positions().tolist(),
                "energy": float(atoms.get_potential_energy()),
                "forces": atoms.get_forces().tolist(),
                "kind": kind,
                "step": step,
            }
        )

    for cid in ids:
        atoms = Atoms(numbers, positions=mol.GetConformer(cid).GetPositions())
        atoms.calc = _xtb()
        label(atoms, "mmff", 0)
    lowest = ids[int(np.argmin([mmff[c][1] for c in ids]))]
    atoms = Atoms(numbers, positions=mol.GetConformer(lowest).GetPositions())
    atoms.calc = _xtb()
    trajectory = []
    for _ in BFGS(atoms, maxstep=0.2, logfile=None).irun(fmax=FMAX, steps=MAX_STEPS):
        trajectory.append((atoms.get_positions(), atoms.get_potential_energy(), atoms.get_forces()))
    keep = np.unique(np.linspace(0, len(trajectory) - 1, relax_frames).round().astype(int))
    for step in keep[1:]:  # step 0 is the MMFF conformer, labelled above
        pos, energy, forces = trajectory[step]
        out.append(
            {
                "pos": pos.tolist(),
                "energy": float(energy),
                "forces": forces.tolist(),
                "kind": "xtb-relax",
                "step": int(step),
            }
        )
    return out


def cached_frames(smiles: str, cache: Path, settings: dict) -> list[dict]:
    path = cache / (hashlib.sha256(smiles.encode()).hexdigest()[:16] + ".json")
    if path.is_file():
        record = json.loads(path.read_text())
        if record["smiles"] == smiles and record["settings"] == settings:
            return record["frames"]
    labelled = frames(smiles, **settings)
    atomic_write(path, json.dumps({"smiles": smiles, "settings": settings, "frames": labelled}))
    return labelled


def write_chunk(path: Path, molecules: list[tuple[str, list[dict]]]) -> int:
    """One gzip-compressed extxyz file of every frame of ``molecules``; the number of frames."""
    images = []
    for smiles, labelled in molecules:
        numbers = [a.GetAtomicNum() for a in Chem.AddHs(Chem.MolFromSmiles(smiles)).GetAtoms()]
        for frame in labelled:
            atoms = Atoms(numbers, positions=frame["pos"])
            atoms.info.update(smiles=smiles, kind=frame["kind"], step=frame["step"])
            atoms.calc = SinglePointCalculator(
                atoms, energy=frame["energy"], forces=np.array(frame["forces"])
            )
            images.append(atoms)
    text = io.StringIO()
    write(text, images, format="extxyz")
    atomic_write(path, gzip.compress(text.getvalue().encode(), mtime=0))
    return len(images)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--molecules", type=int, default=2000)
    parser.add_argument("--molsets", type=Path, required=True, help="molsets wheel or folder")
    parser.add_argument("--pool", type=int, default=100000, help="MOSES molecules sampled")
    parser.add_argument("--exclude", type=Path, nargs="*", default=[])
    parser.add_argument("--confs", type=int, default=10, help="ETKDGv3 embeddings per molecule")
    parser.add_argument("--relax-frames", type=int, default=6, help="frames per xTB relaxation")
    parser.add_argument("--chunk", type=int, default=100, help="molecules per output file")
    parser.add_argument("--seed", type=int, default=11, help="sample and ETKDG seed (not 0)")
    parser.add_argument("--out", type=Path, default=Path("data/druglike_xtb_frames"))
    args = parser.parse_args()
    if args.seed == 0:
        parser.error("--seed 0 gives identical ETKDG conformers")
    start = time.time()
    chosen = candidates(args.molsets, "train", args.pool, args.seed, args.exclude)
    if len(chosen) < args.molecules:
        parser.error(f"only {len(chosen)} candidates in a pool of {args.pool}: raise --pool")
    chosen = chosen[: args.molecules]
    settings = dict(n_confs=args.confs, seed=args.seed, relax_frames=args.relax_frames)
    cache = args.out.with_name(args.out.name + ".cache")
    args.out.mkdir(parents=True, exist_ok=True)
    for first in range(0, len(chosen), args.chunk):
        path = args.out / f"chunk_{first // args.chunk:03d}.extxyz.gz"
        if path.is_file():
            continue
        done = []
        for i, smiles in enumerate(chosen[first : first + args.chunk], start=first):
            t = time.time()
            labelled = cached_frames(smiles, cache, settings)
            print(
                f"[{i + 1}/{len(chosen)}] {smiles}: {len(labelled)} frames, "
                f"{time.time() - t:.1f} s",
                flush=True,
            )
            if labelled:
                done.append((smiles, labelled))
        n_frames = write_chunk(path, done)
        print(f"wrote {path}: {len(done)} molecules, {n_frames} frames", flush=True)
    shutil.rmtree(cache, ignore_errors=True)
    print(
        f"done: {len(chosen)} molecules in {args.out}, {time.time() - start:.0f} s; "
        f"RDKit {rdBase.rdkitVersion}"
    )


if __name__ == "__main__":
    main()
