"""Add MMFF94 baseline labels to GFN2-xTB frames, for a Delta-learning potential (xTB - MMFF94).

    python scripts/add_mmff_labels.py data/druglike_xtb_frames

For every frame of every ``*.extxyz.gz`` file in the folder (frames with a ``smiles`` info key,
atoms in the order of ``Chem.AddHs(Chem.MolFromSmiles(smiles))``, energies and forces as
calculator results in eV and eV/Angstrom, as ``scripts/make_druglike_xtb_frames.py`` writes
them), RDKit's MMFF94 energy and forces at the frame's coordinates (kcal/mol and kcal/mol/A,
converted with :data:`molfold.units.KCAL_PER_MOL_TO_EV`) are written next to the labels:

* ``mmff_energy`` (info, eV): the MMFF94 energy;
* ``delta_energy`` (info, eV) and ``delta_forces`` (per atom, eV/A): GFN2-xTB minus MMFF94;
* ``delta_energy_centered`` (info, eV): ``delta_energy`` minus its mean over the frames of the
  same molecule (``smiles``), the energy target of the Delta potential
  (``configs/preset/allegro_druglike_xtb.yaml``). Conformers are ranked within a molecule, so
  only these differences matter; the per-molecule mean holds MMFF94's molecule-dependent
  reference (bond-increment charges, whole-molecule electrostatics), which a strictly local
  model cannot learn and which, uncentered, dominated the energy loss (validation MAE 0.7 eV)
  while the within-molecule ranking got no better than MMFF94's own.

A frame at which MMFF94 has a force component above :data:`MAX_MMFF_FORCE` is dropped and
named: an MMFF94 "minimum" whose minimisation failed (a broken geometry, with GFN2-xTB forces
of up to 12 eV/A too), where the difference is no correction a potential can learn. Each file
is rewritten atomically (running the script again gives the same files). A frame MMFF94 has no
parameters for stops the run with its file and index.
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from tqdm import tqdm

from molfold.data.sources.ase_files import read_structures
from molfold.io import atomic_write
from molfold.units import KCAL_PER_MOL_TO_EV

MAX_MMFF_FORCE = 50.0  # eV/Angstrom


def mmff_energy_forces(smiles: str, positions: np.ndarray, cache: dict) -> tuple[float, np.ndarray]:
    """MMFF94 energy (eV) and forces ([N, 3] eV/A) of ``smiles`` at ``positions`` ([N, 3] A)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from rdkit.Geometry import Point3D

    if smiles not in cache:
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        mol.AddConformer(Chem.Conformer(mol.GetNumAtoms()))
        properties = AllChem.MMFFGetMoleculeProperties(mol)
        cache[smiles] = (mol, properties)
    mol, properties = cache[smiles]
    if properties is None:
        raise ValueError(f"MMFF94 has no parameters for {smiles}")
    conformer = mol.GetConformer()
    for i, (x, y, z) in enumerate(positions.tolist()):
        conformer.SetAtomPosition(i, Point3D(x, y, z))
    field = AllChem.MMFFGetMoleculeForceField(mol, properties)
    energy = field.CalcEnergy() * KCAL_PER_MOL_TO_EV
    forces = -np.asarray(field.CalcGrad()).reshape(-1, 3) * KCAL_PER_MOL_TO_EV
    return energy, forces


def label_file(path: Path, cache: dict) -> list[int]:
    """Add the labels to every frame of ``path`` and drop the outliers; their indices."""
    frames, kept, dropped = read_structures(path), [], []
    for index, atoms in enumerate(frames):
        xtb_energy, xtb_forces = atoms.get_potential_energy(), atoms.get_forces()
        try:
            energy, forces = mmff_energy_forces(atoms.info["smiles"], atoms.positions, cache)
        except ValueError as error:
            raise SystemExit(f"{path}: frame {index}: {error}") from None
        if np.abs(forces).max() > MAX_MMFF_FORCE:
            dropped.append(index)
            continue
        atoms.info.update(mmff_energy=energy, delta_energy=xtb_energy - energy)
        atoms.arrays["delta_forces"] = xtb_forces - forces
        atoms.calc = SinglePointCalculator(atoms, energy=xtb_energy, forces=xtb_forces)
        kept.append(atoms)
    molecules: dict[str, list] = {}
    for atoms in kept:
        molecules.setdefault(atoms.info["smiles"], []).append(atoms)
    for frames_of_one in molecules.values():
        mean = np.mean([a.info["delta_energy"] for a in frames_of_one])
        for atoms in frames_of_one:
            atoms.info["delta_energy_centered"] = atoms.info["delta_energy"] - mean
    text = io.StringIO()
    write(text, kept, format="extxyz")
    atomic_write(path, gzip.compress(text.getvalue().encode(), mtime=0))
    return dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    cache: dict = {}
    files = sorted(args.folder.glob("*.extxyz.gz"))
    for path in tqdm(files, desc="MMFF94 labels", unit="file"):
        for index in label_file(path, cache):
            print(f"{path.name}: frame {index} dropped (MMFF94 force above {MAX_MMFF_FORCE} eV/A)")


if __name__ == "__main__":
    main()
