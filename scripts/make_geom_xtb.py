"""Generate a small GEOM-DRUGS-format dataset of GFN2-xTB conformer ensembles.

GEOM (Axelrod & Gomez-Bombarelli, Sci. Data 9, 185 (2022)) holds CREST/GFN2-xTB conformer ensembles
of drug-like molecules. It cannot be downloaded on the machines molfold is developed on, so this
script makes a real dataset of the same layouts with a cheaper conformer search:

1. Molecules: ``RDConfig.RDDataDir/NCI/first_5K.smi`` (shipped in the RDKit wheel), in file order,
   kept if :func:`drug_like` accepts them, until ``--molecules`` are found.
2. Per molecule ``--confs`` ETKDGv3 embeddings (``randomSeed=--seed``; not 0: RDKit then gives
   every conformer the same seed, so all embeddings are identical), each pre-relaxed with
   MMFF94 (at most 500 iterations), then relaxed with GFN2-xTB (``tblite`` ASE calculator, no
   solvent) by ASE ``BFGS`` to ``fmax`` 0.05 eV/Angstrom, at most ``--max-steps`` steps, maximum
   step 0.2 Angstrom. Unconverged relaxations and conformers whose bonds or stereochemistry changed
   are dropped.
3. Duplicates are removed as CREST's CREGEN does with its default thresholds: a conformer whose
   symmetry-aware heavy-atom RMSD to a lower-energy kept one is below 0.125 Angstrom is dropped;
   one within 0.05 kcal/mol of a kept one with principal moments of inertia within 1 % is a
   rotamer (e.g. the mirror image) of it: dropped, and the kept one's ``degeneracy`` goes up by 1.
4. ``relativeenergy`` (kcal/mol) and ``boltzmannweight`` at 298.15 K from the xTB energies:
   weight proportional to ``degeneracy * exp(-relativeenergy / kT)``, summing to 1.

Output in ``--out`` (both layouts, the same numbers):

* ``rdkit_folder/summary_drugs.json`` + ``rdkit_folder/drugs/<i>.pickle`` (one per molecule, with
  ``rd_mol`` RDKit molecules whose conformer is the xTB geometry),
* ``drugs_crude.msgpack`` (one packed dict of all molecules keyed by SMILES, ``xyz`` =
  ``[[Z, x, y, z], ...]`` in the atom order of ``Chem.AddHs(Chem.MolFromSmiles(smiles))``).

Energies are stored in Hartree (``totalenergy``, ``lowestenergy``, ``ensembleenergy`` is in
kcal/mol as in GEOM), converted from tblite's eV with :data:`molfold.units.HARTREE_TO_EV` (the
value of ``ase.units.Hartree``). Every file is written with :func:`molfold.io.atomic_write` into
``<out>.part``, which then replaces ``--out`` as a whole.

Usage::

    OMP_NUM_THREADS=1 python scripts/make_geom_xtb.py --molecules 24 --confs 16 --seed 42 \\
        --out data/geom_xtb
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import msgpack
import numpy as np
from ase import Atoms, units
from ase.optimize import BFGS
from rdkit import Chem, RDConfig, rdBase
from rdkit.Chem import AllChem, Descriptors, rdMolAlign, rdMolDescriptors
from tblite.ase import TBLite

from molfold.io import atomic_write
from molfold.units import HARTREE_TO_EV, KCAL_PER_MOL_TO_EV

ELEMENTS = {"H", "C", "N", "O", "F", "S", "Cl"}
TEMPERATURE_K = 298.15
RMSD_THRESHOLD = 0.125  # Angstrom, heavy atoms; CREST's default RTHR
ENERGY_THRESHOLD = 0.05  # kcal/mol; CREST's default ETHR
MOMENTS_RTOL = 0.01  # CREST's default BTHR compares rotational constants to 1 %
FMAX = 0.05  # eV/Angstrom
COVALENT_TOLERANCE = 1.25  # a bond is d < 1.25 * (r_cov,i + r_cov,j)
SOURCE = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def drug_like(mol: Chem.Mol | None) -> bool:
    """Neutral, one fragment, elements H C N O F S Cl, 15-50 atoms with H, MW 150-450,
    3-7 rotatable bonds, Lipinski donors/acceptors, all stereo specified (or none)."""
    if mol is None or len(Chem.GetMolFrags(mol)) != 1:
        return False
    if any(a.GetFormalCharge() or a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return False
    if any(a.GetSymbol() not in ELEMENTS for a in mol.GetAtoms()):
        return False
    n_atoms = Chem.AddHs(mol).GetNumAtoms()
    if not 15 <= n_atoms <= 50:
        return False
    if not 150 <= Descriptors.MolWt(mol) <= 450:
        return False
    if not 3 <= rdMolDescriptors.CalcNumRotatableBonds(mol) <= 7:
        return False
    if rdMolDescriptors.CalcNumHBD(mol) > 5 or rdMolDescriptors.CalcNumHBA(mol) > 10:
        return False
    from rdkit.Chem.EnumerateStereoisomers import EnumerateStereoisomers

    # Unspecified stereocentres or double bonds would mix stereoisomers in one ensemble.
    return len(list(EnumerateStereoisomers(mol))) == 1


def pick_molecules(n: int) -> list[str]:
    smiles = []
    for line in SOURCE.read_text().splitlines():
        mol = Chem.MolFromSmiles(line.split()[0])
        if drug_like(mol):
            canonical = Chem.MolToSmiles(mol)
            if canonical not in smiles:
                smiles.append(canonical)
        if len(smiles) == n:
            return smiles
    raise RuntimeError(f"only {len(smiles)} drug-like molecules in {SOURCE}")


def same_graph(mol: Chem.Mol, pos: np.ndarray, smiles: str) -> bool:
    """Bonds by covalent radii equal the molecule's bonds, and the 3D stereo equals the SMILES's."""
    table = Chem.GetPeriodicTable()
    radii = np.array([table.GetRcovalent(a.GetAtomicNum()) for a in mol.GetAtoms()])
    dist = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    close = dist < COVALENT_TOLERANCE * (radii[:, None] + radii[None])
    np.fill_diagonal(close, False)
    bonded = Chem.GetAdjacencyMatrix(mol).astype(bool)
    if not (close == bonded).all():
        return False
    check = Chem.Mol(mol)
    check.RemoveAllConformers()
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, p in enumerate(pos):
        conf.SetAtomPosition(i, p.tolist())
    check.AddConformer(conf, assignId=True)
    Chem.AssignStereochemistryFrom3D(check)
    return Chem.MolToSmiles(Chem.RemoveHs(check)) == smiles


def ensemble(smiles: str, n_confs: int, seed: int, max_steps: int) -> list[dict]:
    """xTB-relaxed, deduplicated conformers of ``smiles``: ``pos`` [N, 3] Angstrom, ``energy`` eV,
    sorted by energy; atom order of ``Chem.AddHs(Chem.MolFromSmiles(smiles))``."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    conf_ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_confs, params=params))
    AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=500)
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    relaxed = []
    for cid in conf_ids:
        atoms = Atoms(numbers, positions=mol.GetConformer(cid).GetPositions())
        atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
        opt = BFGS(atoms, maxstep=0.2, logfile=None)
        if not opt.run(fmax=FMAX, steps=max_steps):
            continue
        pos = atoms.get_positions()
        if same_graph(mol, pos, smiles):
            relaxed.append({"pos": pos, "energy": float(atoms.get_potential_energy())})
    print(f"  {len(conf_ids)} embedded, {len(relaxed)} relaxed", flush=True)
    relaxed.sort(key=lambda c: c["energy"])

    heavy = Chem.RemoveHs(mol)
    heavy_idx = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]

    def heavy_mol(pos: np.ndarray) -> Chem.Mol:
        m = Chem.Mol(heavy)
        m.RemoveAllConformers()
        conf = Chem.Conformer(m.GetNumAtoms())
        for i, k in enumerate(heavy_idx):
            conf.SetAtomPosition(i, pos[k].tolist())
        m.AddConformer(conf)
        return m

    kept: list[dict] = []
    for conf in relaxed:
        probe = heavy_mol(conf["pos"])
        moments = Atoms(numbers, positions=conf["pos"]).get_moments_of_inertia()
        for k in kept:
            if rdMolAlign.GetBestRMS(probe, heavy_mol(k["pos"])) < RMSD_THRESHOLD:
                break  # the same conformer found twice
            same_energy = conf["energy"] - k["energy"] < ENERGY_THRESHOLD * KCAL_PER_MOL_TO_EV
            if same_energy and np.allclose(moments, k["moments"], rtol=MOMENTS_RTOL, atol=0):
                k["degeneracy"] += 1  # a rotamer (e.g. a mirror image): same energy and shape
                break
        else:
            kept.append({**conf, "moments": moments, "degeneracy": 1})
    return kept


def geom_records(smiles: str, confs: list[dict], first_id: int) -> tuple[dict, list[dict]]:
    """GEOM molecule-level fields and conformer dicts (without geometry) for one ensemble."""
    e_min = confs[0]["energy"]
    rel_kcal = [(c["energy"] - e_min) / KCAL_PER_MOL_TO_EV for c in confs]
    kt_kcal = units.kB * TEMPERATURE_K / KCAL_PER_MOL_TO_EV
    degeneracy = np.array([c["degeneracy"] for c in confs])
    boltz = degeneracy * np.exp(-np.array(rel_kcal) / kt_kcal)
    weights = boltz / boltz.sum()
    ensemble_energy = float(np.sum(weights * np.array(rel_kcal)))  # kcal/mol, as GEOM
    # Conformational entropy -R sum p ln p over all rotamers (each rotamer has p = w / g).
    entropy = float(-units.kB / KCAL_PER_MOL_TO_EV * np.sum(weights * np.log(weights / degeneracy)))
    molecule = {
        "charge": 0,
        "ensembleenergy": ensemble_energy,
        "ensembleentropy": entropy * 1000.0,  # cal/mol/K, as GEOM
        "ensemblefreeenergy": ensemble_energy - TEMPERATURE_K * entropy,
        "lowestenergy": e_min / HARTREE_TO_EV,
        "poplowestpct": float(weights[0] * 100.0),
        "temperature": TEMPERATURE_K,
        "totalconfs": int(degeneracy.sum()),
        "uniqueconfs": len(confs),
    }
    conformers = [
        {
            "geom_id": first_id + k,
            "totalenergy": c["energy"] / HARTREE_TO_EV,
            "relativeenergy": rel_kcal[k],
            "boltzmannweight": float(weights[k]),
            "degeneracy": int(c["degeneracy"]),
        }
        for k, c in enumerate(confs)
    ]
    return molecule, conformers


def write(results: list[tuple[str, list[dict]]], out: Path, seed: int) -> None:
    # Store coordinates as float64 in the pickles so that both layouts hold the same numbers.
    Chem.SetDefaultPickleProperties(Chem.PropertyPickleOptions.CoordsAsDouble)
    rng = np.random.default_rng(seed)
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "rdkit_folder" / "drugs").mkdir(parents=True)
    summary, packed, next_id = {}, {}, 1
    for i, (smiles, confs) in enumerate(results):
        molecule, conformers = geom_records(smiles, confs, next_id)
        next_id += len(confs)
        # GEOM does not promise sorted conformers: store them in a seeded random order.
        order = rng.permutation(len(confs)).tolist()
        template = Chem.AddHs(Chem.MolFromSmiles(smiles))
        numbers = [a.GetAtomicNum() for a in template.GetAtoms()]
        pickled, msg = [], []
        for k in order:
            rd_mol = Chem.Mol(template)
            conf = Chem.Conformer(rd_mol.GetNumAtoms())
            for a, p in enumerate(confs[k]["pos"]):
                conf.SetAtomPosition(a, p.tolist())
            rd_mol.AddConformer(conf, assignId=True)
            pickled.append({**conformers[k], "rd_mol": rd_mol})
            xyz = [[float(z), *map(float, p)] for z, p in zip(numbers, confs[k]["pos"])]
            msg.append({**conformers[k], "xyz": xyz})
        pickle_path = f"drugs/{i:03d}.pickle"
        record = {"smiles": smiles, **molecule, "conformers": pickled}
        atomic_write(tmp / "rdkit_folder" / pickle_path, partial(pickle.dump, record, protocol=4))
        summary[smiles] = {**molecule, "pickle_path": pickle_path}
        packed[smiles] = {**molecule, "conformers": msg}
    atomic_write(tmp / "rdkit_folder" / "summary_drugs.json", json.dumps(summary, indent=1) + "\n")
    # GEOM streams chunks of ~1,000 molecules; this set fits in one chunk.
    atomic_write(tmp / "drugs_crude.msgpack", msgpack.packb(packed, use_bin_type=True))
    # A folder cannot be replaced atomically by a file write: the finished folder replaces --out.
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--molecules", type=int, default=24)
    parser.add_argument("--confs", type=int, default=16, help="ETKDGv3 embeddings per molecule")
    parser.add_argument("--max-steps", type=int, default=300, help="BFGS step cap")
    parser.add_argument(
        "--seed", type=int, default=42, help="ETKDG and shuffle seed; 0 is refused (see above)"
    )
    parser.add_argument("--out", type=Path, default=Path("data/geom_xtb"))
    args = parser.parse_args()
    if args.seed == 0:
        parser.error(
            "--seed 0 gives identical ETKDG conformers "
            "(RDKit seeds conformer i with seed * (i + 1))"
        )
    start = time.time()
    results = []
    for smiles in pick_molecules(args.molecules):
        t = time.time()
        confs = ensemble(smiles, args.confs, args.seed, args.max_steps)
        print(f"{smiles}: {len(confs)} conformers, {time.time() - t:.1f} s", flush=True)
        if not confs:
            sys.exit(f"no conformer of {smiles} survived relaxation")
        results.append((smiles, confs))
    write(results, args.out, args.seed)
    n_confs = sum(len(c) for _, c in results)
    print(
        f"wrote {args.out}: {len(results)} molecules, {n_confs} conformers, "
        f"{time.time() - start:.0f} s; RDKit {rdBase.rdkitVersion}"
    )


if __name__ == "__main__":
    main()
