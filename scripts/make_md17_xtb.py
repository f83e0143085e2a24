"""Generate MD17-layout datasets from GFN2-xTB molecular dynamics.

MD17 (Chmiela et al., Sci. Adv. 2017) sampled ab initio MD at 500 K. No dataset can be downloaded on
the machines molfold is developed on, so this script makes real ones of the same layout with a
cheaper quantum-chemical method: GFN2-xTB (Bannwarth, Ehlert, Grimme, JCTC 2019) through the
``tblite`` ASE calculator, Langevin dynamics at 500 K.

Procedure per molecule:
1. SMILES -> RDKit ETKDG geometry (seed) -> MMFF94 minimum.
2. Maxwell-Boltzmann velocities at 500 K, Langevin dynamics (time step 0.5 fs, friction 0.01/fs)
   with GFN2-xTB energies and forces; ``--equilibration`` steps are discarded.
3. Every ``--stride`` steps one frame is kept until ``--frames`` frames exist.

Output: ``<name>_xtb_500K.npz`` with the original MD17 keys: ``z`` [N] atomic numbers, ``R`` [F,N,3]
Angstrom, ``E`` [F,1] kcal/mol, ``F`` [F,N,3] kcal/mol/Angstrom, plus ``name``, ``theory`` and
``md5`` strings as in the published files.

Usage::

    python scripts/make_md17_xtb.py aspirin --frames 1500 --out data/
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from rdkit import Chem
from rdkit.Chem import AllChem
from tblite.ase import TBLite
from tqdm import tqdm

from molfold.io import atomic_write
from molfold.units import KCAL_PER_MOL_TO_EV

MOLECULES = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "ethanol": "CCO",
    "malonaldehyde": "O=CCC=O",
    "uracil": "O=C1C=CNC(=O)N1",
}
EV_TO_KCAL_PER_MOL = 1.0 / KCAL_PER_MOL_TO_EV


def initial_geometry(smiles: str, seed: int) -> Atoms:
    """ETKDG embedding followed by an MMFF94 minimisation; Angstrom."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError(f"RDKit could not embed {smiles}")
    AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    symbols = [atom.GetSymbol() for atom in mol.GetAtoms()]
    return Atoms(symbols, positions=mol.GetConformer().GetPositions())


def run(name: str, frames: int, stride: int, equilibration: int, seed: int, out: Path) -> Path:
    atoms = initial_geometry(MOLECULES[name], seed)
    atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=500.0, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=500.0, friction=0.01 / units.fs, rng=rng)
    for _ in tqdm(range(equilibration // 100), desc=f"{name} equilibration"):
        dyn.run(100)

    positions, energies, forces = [], [], []
    for _ in tqdm(range(frames), desc=f"{name} frames"):
        dyn.run(stride)
        positions.append(atoms.get_positions())
        energies.append([atoms.get_potential_energy() * EV_TO_KCAL_PER_MOL])
        forces.append(atoms.get_forces() * EV_TO_KCAL_PER_MOL)

    arrays = {
        "z": atoms.get_atomic_numbers().astype(np.int64),
        "R": np.asarray(positions),
        "E": np.asarray(energies),
        "F": np.asarray(forces),
    }
    digest = hashlib.md5(b"".join(a.tobytes() for a in arrays.values())).hexdigest()
    strings = {
        "name": np.array(name),
        "theory": np.array("GFN2-xTB (tblite), Langevin 500 K, 0.5 fs"),
        "md5": np.array(digest),
    }
    path = out / f"{name}_xtb_500K.npz"
    return atomic_write(path, lambda file: np.savez_compressed(file, **arrays, **strings))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("molecule", choices=sorted(MOLECULES))
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument(
        "--stride", type=int, default=20, help="MD steps between kept frames (0.5 fs each)"
    )
    parser.add_argument("--equilibration", type=int, default=2000, help="MD steps discarded first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("data"))
    args = parser.parse_args()
    path = run(args.molecule, args.frames, args.stride, args.equilibration, args.seed, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
