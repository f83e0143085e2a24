"""Generate a small GEOM-DRUGS-format dataset of GFN2-xTB conformer ensembles.

GEOM (Axelrod & Gomez-Bombarelli, Sci. Data 9, 185 (2022)) holds CREST/GFN2-xTB conformer ensembles
of drug-like molecules. It cannot be downloaded on the machines molfold is developed on, so this
script makes a real dataset of the same layouts with a cheaper conformer search:

1. Molecules: ``--select`` (``scripts/pick_druglike.py``): ``nci-first``, the first drug-like
   molecules of RDKit's NCI set in file order; ``diverse``, a fingerprint-diverse pick of MOSES's
   scaffold test split with all stereo fixed, none of whose constitutions is in an ``--exclude``
   folder.
2. Per molecule ``--confs`` ETKDGv3 embeddings (``randomSeed=--seed``; not 0: RDKit then gives
   every conformer the same seed, so all embeddings are identical), each pre-relaxed with
   MMFF94 (at most 500 iterations); all of them, or with ``--relax N`` the N lowest in MMFF energy
   that differ by at least 0.125 Angstrom heavy-atom RMSD (a molecule ETKDG cannot embed within
   10 s is left out), are then relaxed with GFN2-xTB
   (``tblite`` ASE calculator, no solvent) by ASE ``BFGS`` to ``fmax`` 0.05 eV/Angstrom, at most
   ``--max-steps`` steps, maximum step 0.2 Angstrom. Unconverged relaxations and conformers whose
   bonds or stereochemistry changed are dropped.
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
``<out>.part``, which then replaces ``--out`` as a whole. Each molecule's finished ensemble is kept
in ``<out>.cache/`` until then, so a killed run resumes where it stopped.

Usage::

    OMP_NUM_THREADS=1 python scripts/make_geom_xtb.py --molecules 24 --confs 16 --seed 42 \\
        --out data/geom_xtb
    pip download molsets==0.3.1 --no-deps -d /tmp/molsets
    OMP_NUM_THREADS=1 python scripts/make_geom_xtb.py --select diverse --molecules 72 --confs 30 \
        --relax 8 --seed 7 --molsets /tmp/molsets/molsets-0.3.1-py3-none-any.whl \
        --exclude data/geom_xtb --out data/druglike_xtb
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import time
from functools import partial
from pathlib import Path

import msgpack
import numpy as np
from ase import Atoms, units
from ase.optimize import BFGS
from pick_druglike import diverse, nci_first  # scripts/ is on sys.path when run as a script
from rdkit import Chem, rdBase
from rdkit.Chem import AllChem, rdMolAlign
from tblite.ase import TBLite

from molfold.io import atomic_write
from molfold.units import HARTREE_TO_EV, KCAL_PER_MOL_TO_EV

TEMPERATURE_K = 298.15
RMSD_THRESHOLD = 0.125  # Angstrom, heavy atoms; CREST's default RTHR
ENERGY_THRESHOLD = 0.05  # kcal/mol; CREST's default ETHR
MOMENTS_RTOL = 0.01  # CREST's default BTHR compares rotational constants to 1 %
FMAX = 0.05  # eV/Angstrom
EMBED_TIMEOUT_S = 10  # for all ETKDG conformers: some stereoisomers of bridged rings never embed
COVALENT_TOLERANCE = 1.25  # a bond is d < 1.25 * (r_cov,i + r_cov,j)


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


def heavy_conformer(heavy: Chem.Mol, heavy_idx: list[int], pos: np.ndarray) -> Chem.Mol:
    """``heavy`` (the molecule without hydrogens) with the heavy-atom rows ``heavy_idx`` of
    ``pos`` [N, 3] as its conformer, for RMSD comparisons."""
    m = Chem.Mol(heavy)
    m.RemoveAllConformers()
    conf = Chem.Conformer(m.GetNumAtoms())
    for i, k in enumerate(heavy_idx):
        conf.SetAtomPosition(i, pos[k].tolist())
    m.AddConformer(conf)
    return m


def ensemble(smiles: str, n_confs: int, seed: int, max_steps: int, relax: int = 0) -> list[dict]:
    """xTB-relaxed, deduplicated conformers of ``smiles``: ``pos`` [N, 3] Angstrom, ``energy`` eV,
    sorted by energy; atom order of ``Chem.AddHs(Chem.MolFromSmiles(smiles))``. ``relax`` > 0
    relaxes only that many of the lowest-MMFF-energy conformers that differ by at least
    :data:`RMSD_THRESHOLD` (0: all)."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    heavy = Chem.RemoveHs(mol)
    heavy_idx = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() > 1]
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.timeout = EMBED_TIMEOUT_S
    conf_ids = [c for c in AllChem.EmbedMultipleConfs(mol, n_confs, params) if c >= 0]
    if not conf_ids:  # timed out ([-1])
        return []
    mmff = AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=500)  # (not converged, kcal/mol)
    if relax:
        distinct: list[tuple[int, Chem.Mol]] = []
        for cid in sorted(conf_ids, key=lambda k: mmff[k][1]):
            probe = heavy_conformer(heavy, heavy_idx, mol.GetConformer(cid).GetPositions())
            if all(rdMolAlign.GetBestRMS(probe, m) >= RMSD_THRESHOLD for _, m in distinct):
                distinct.append((cid, probe))
            if len(distinct) == relax:
                break
        conf_ids = [cid for cid, _ in distinct]
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
    print(f"  {len(mmff)} embedded, {len(conf_ids)} relaxed, {len(relaxed)} kept", flush=True)
    relaxed.sort(key=lambda c: c["energy"])

    kept: list[dict] = []
    kept_heavy: list[Chem.Mol] = []
    for conf in relaxed:
        probe = heavy_conformer(heavy, heavy_idx, conf["pos"])
        moments = Atoms(numbers, positions=conf["pos"]).get_moments_of_inertia()
        for k, k_heavy in zip(kept, kept_heavy):
            if rdMolAlign.GetBestRMS(probe, k_heavy) < RMSD_THRESHOLD:
                break  # the same conformer found twice
            same_energy = conf["energy"] - k["energy"] < ENERGY_THRESHOLD * KCAL_PER_MOL_TO_EV
            if same_energy and np.allclose(moments, k["moments"], rtol=MOMENTS_RTOL, atol=0):
                k["degeneracy"] += 1  # a rotamer (e.g. a mirror image): same energy and shape
                break
        else:
            kept.append({**conf, "moments": moments, "degeneracy": 1})
            kept_heavy.append(probe)
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


def cached_ensemble(smiles: str, cache: Path, settings: dict) -> list[dict]:
    """:func:`ensemble` of ``smiles``, read from ``cache`` when an earlier run with the same
    ``settings`` finished it, else computed and written there (one JSON file per molecule)."""
    path = cache / (hashlib.sha256(smiles.encode()).hexdigest()[:16] + ".json")
    if path.is_file():
        record = json.loads(path.read_text())
        if record["smiles"] == smiles and record["settings"] == settings:
            return [
                {**c, "pos": np.array(c["pos"]), "moments": np.array(c["moments"])}
                for c in record["conformers"]
            ]
    confs = ensemble(smiles, **settings)
    stored = [{**c, "pos": c["pos"].tolist(), "moments": c["moments"].tolist()} for c in confs]
    record = {"smiles": smiles, "settings": settings, "conformers": stored}
    atomic_write(path, json.dumps(record) + "\n")
    return confs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--molecules", type=int, default=24)
    parser.add_argument(
        "--select",
        choices=("nci-first", "diverse"),
        default="nci-first",
        help="which molecules (scripts/pick_druglike.py)",
    )
    parser.add_argument(
        "--molsets", type=Path, help="the molsets wheel or its install folder (--select diverse)"
    )
    parser.add_argument("--pool", type=int, default=20000, help="MOSES molecules to pick from")
    parser.add_argument(
        "--exclude", type=Path, nargs="*", default=[], help="GEOM folders whose molecules to skip"
    )
    parser.add_argument("--confs", type=int, default=16, help="ETKDGv3 embeddings per molecule")
    parser.add_argument(
        "--relax", type=int, default=0, help="xTB-relax the N lowest-MMFF distinct ones (0: all)"
    )
    parser.add_argument("--max-steps", type=int, default=300, help="BFGS step cap")
    parser.add_argument(
        "--seed", type=int, default=42, help="ETKDG, pick and shuffle seed; 0 is refused"
    )
    parser.add_argument("--out", type=Path, default=Path("data/geom_xtb"))
    args = parser.parse_args()
    if args.seed == 0:
        parser.error(
            "--seed 0 gives identical ETKDG conformers "
            "(RDKit seeds conformer i with seed * (i + 1))"
        )
    if args.select == "diverse" and args.molsets is None:
        parser.error("--select diverse reads MOSES from --molsets (pip download molsets --no-deps)")
    start = time.time()
    if args.select == "diverse":
        chosen = diverse(args.molecules, args.molsets, args.pool, args.seed, args.exclude)
    else:
        chosen = nci_first(args.molecules)
    settings = dict(n_confs=args.confs, seed=args.seed, max_steps=args.max_steps, relax=args.relax)
    cache = args.out.with_name(args.out.name + ".cache")
    results = []
    for i, smiles in enumerate(chosen):
        t = time.time()
        confs = cached_ensemble(smiles, cache, settings)
        print(f"[{i + 1}/{len(chosen)}] {smiles}: {len(confs)} conformers, {time.time() - t:.1f} s")
        if confs:
            results.append((smiles, confs))
        else:
            print(f"  no conformer of {smiles} survived relaxation: left out", flush=True)
    write(results, args.out, args.seed)
    shutil.rmtree(cache)
    n_confs = sum(len(c) for _, c in results)
    print(
        f"wrote {args.out}: {len(results)} of {len(chosen)} molecules, {n_confs} conformers, "
        f"{time.time() - start:.0f} s; RDKit {rdBase.rdkitVersion}"
    )


if __name__ == "__main__":
    main()
