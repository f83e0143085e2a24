"""Drug-like molecules for the GFN2-xTB conformer sets that ``scripts/make_geom_xtb.py`` makes.

Two selections:

``nci-first`` (the shipped ``data/geom_xtb``)
    ``RDConfig.RDDataDir/NCI/first_5K.smi`` (shipped in the RDKit wheel) in file order, kept if
    :func:`drug_like` accepts them with its defaults, until ``n`` are found.
``diverse`` (the held-out drug-like test set)
    A pool of MOSES's scaffold test split (``test_scaffolds.csv.gz`` of the PyPI ``molsets`` wheel,
    Polykovskiy et al., Front. Pharmacol. 11, 565644 (2020): ZINC clean-leads molecules whose
    Bemis-Murcko scaffolds appear in neither MOSES's train nor test split; ``pool`` of them, a
    seeded random sample); kept if :func:`drug_like` accepts them with 10-40 heavy atoms (MOSES
    holds 8-27), MW 150-600 Da and up to 10 rotatable bonds; molecules whose InChIKey
    connectivity block is in an ``exclude`` folder are dropped (stereoisomers of an excluded
    molecule too); stereo the SMILES leaves open is fixed by a seeded random choice among its
    stereoisomers (MOSES SMILES have no stereo marks), so that every test SMILES specifies all of
    its stereochemistry; then ``n`` molecules are picked by RDKit's MaxMin picker on Morgan
    fingerprints (radius 2, 2,048 bits, Tanimoto distance), seeded: each next molecule is the one
    least similar to those picked.
    (NCI is not in this pool: MaxMin then picks its perhalogenated and inorganic oddities.)

Training sets made later take molecules from MOSES's train split (scaffold-disjoint from
``test_scaffolds``) and pass the test folder as ``exclude``.
"""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
from rdkit import Chem, RDConfig
from rdkit.Chem import Descriptors, rdFingerprintGenerator, rdMolDescriptors
from rdkit.Chem.EnumerateStereoisomers import EnumerateStereoisomers, StereoEnumerationOptions
from rdkit.SimDivFilters import rdSimDivPickers

ELEMENTS = {"H", "C", "N", "O", "F", "S", "Cl"}
NCI = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
TEST_SIZED = dict(heavy_atoms=(10, 40), atoms=(0, 1000), weight=(150.0, 600.0), rotatable=(0, 10))
"""The :func:`drug_like` ranges of the held-out test set and of the training sets made for it."""
MAX_STEREOISOMERS = 16  # molecules with more (over 4 open stereo elements) are not taken


def drug_like(
    mol: Chem.Mol | None,
    heavy_atoms: tuple[int, int] = (0, 1000),
    atoms: tuple[int, int] = (15, 50),
    weight: tuple[float, float] = (150.0, 450.0),
    rotatable: tuple[int, int] = (3, 7),
    stereo_specified: bool = True,
) -> bool:
    """Neutral, one fragment, elements H C N O F S Cl, sizes (heavy atoms, atoms with H, MW in
    Dalton, rotatable bonds) in the closed ranges given, Lipinski donors (<= 5) and acceptors
    (<= 10); with ``stereo_specified`` all stereo specified (or none)."""
    if mol is None or len(Chem.GetMolFrags(mol)) != 1:
        return False
    if any(a.GetFormalCharge() or a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return False
    if any(a.GetSymbol() not in ELEMENTS for a in mol.GetAtoms()):
        return False
    ranges = (
        (mol.GetNumHeavyAtoms(), heavy_atoms),
        (Chem.AddHs(mol).GetNumAtoms(), atoms),
        (Descriptors.MolWt(mol), weight),
        (rdMolDescriptors.CalcNumRotatableBonds(mol), rotatable),
    )
    if not all(low <= value <= high for value, (low, high) in ranges):
        return False
    if rdMolDescriptors.CalcNumHBD(mol) > 5 or rdMolDescriptors.CalcNumHBA(mol) > 10:
        return False
    # Unspecified stereocentres or double bonds would mix stereoisomers in one ensemble.
    return not stereo_specified or len(list(EnumerateStereoisomers(mol))) == 1


def nci_smiles() -> list[str]:
    return [line.split()[0] for line in NCI.read_text().splitlines() if line.strip()]


def nci_first(n: int) -> list[str]:
    """The first ``n`` distinct canonical SMILES of NCI ``first_5K.smi`` that are drug-like."""
    smiles: list[str] = []
    for raw in nci_smiles():
        mol = Chem.MolFromSmiles(raw)
        if drug_like(mol):
            canonical = Chem.MolToSmiles(mol)
            if canonical not in smiles:
                smiles.append(canonical)
        if len(smiles) == n:
            return smiles
    raise RuntimeError(f"only {len(smiles)} drug-like molecules in {NCI}")


def moses_split(molsets: Path, split: str) -> list[str]:
    """SMILES of MOSES's ``split`` (``train``, ``test`` or ``test_scaffolds``), read from the
    ``molsets`` wheel file or from the folder the wheel was installed into (holding ``moses/``)."""
    member = f"moses/dataset/data/{split}.csv.gz"
    if molsets.suffix == ".whl":
        with zipfile.ZipFile(molsets) as wheel:
            raw = wheel.read(member)
    else:
        raw = (molsets / member).read_bytes()
    header, *rows = gzip.decompress(raw).decode().splitlines()
    column = header.split(",").index("SMILES")
    return [row.split(",")[column] for row in rows]


def connectivity_key(mol: Chem.Mol) -> str:
    """The InChIKey's first block: the same for every stereoisomer of a constitution."""
    return Chem.MolToInchiKey(mol).split("-")[0]


def excluded_keys(folders: list[Path]) -> set[str]:
    """Connectivity keys of every molecule in the ``rdkit_folder/summary_drugs.json`` (or
    ``summary_drugs.json``) of each GEOM-layout folder."""
    keys = set()
    for folder in folders:
        summary = folder / "rdkit_folder" / "summary_drugs.json"
        if not summary.is_file():
            summary = folder / "summary_drugs.json"
        for smiles in json.loads(summary.read_text()):
            keys.add(connectivity_key(Chem.MolFromSmiles(smiles)))
    return keys


def fix_open_stereo(mol: Chem.Mol, rng: np.random.Generator) -> Chem.Mol | None:
    """One stereoisomer of ``mol``, chosen at random among those that keep its specified stereo;
    None for more than :data:`MAX_STEREOISOMERS`."""
    options = StereoEnumerationOptions(onlyUnassigned=True, unique=True)
    isomers = sorted({Chem.MolToSmiles(m) for m in EnumerateStereoisomers(mol, options=options)})
    if len(isomers) > MAX_STEREOISOMERS:
        return None
    return Chem.MolFromSmiles(isomers[rng.integers(len(isomers))])


def candidates(molsets: Path, split: str, pool: int, seed: int, exclude: list[Path]) -> list[str]:
    """Drug-like (:data:`TEST_SIZED`) SMILES with all stereo fixed from a seeded random sample
    of ``pool`` molecules of MOSES's ``split``, one per constitution, none excluded."""
    rng = np.random.default_rng(seed)
    moses = moses_split(molsets, split)
    sample = [moses[i] for i in rng.choice(len(moses), min(pool, len(moses)), replace=False)]
    skip = excluded_keys(exclude)
    smiles, keys = [], set()
    for raw in sample:
        mol = Chem.MolFromSmiles(raw)
        if not drug_like(mol, **TEST_SIZED, stereo_specified=False):
            continue
        key = connectivity_key(mol)
        if key in skip or key in keys:
            continue
        mol = fix_open_stereo(mol, rng)
        if mol is not None:
            keys.add(key)
            smiles.append(Chem.MolToSmiles(mol))
    return smiles


def diverse(n: int, molsets: Path, pool: int, seed: int, exclude: list[Path]) -> list[str]:
    """``n`` fingerprint-diverse drug-like SMILES of MOSES's scaffold test split with all stereo
    specified (module docstring)."""
    smiles = candidates(molsets, "test_scaffolds", pool, seed, exclude)
    if len(smiles) < n:
        raise RuntimeError(f"only {len(smiles)} candidate molecules for {n}")
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fingerprints = [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in smiles]
    picker = rdSimDivPickers.MaxMinPicker()
    picked = picker.LazyBitVectorPick(fingerprints, len(smiles), n, seed=seed)
    return [smiles[i] for i in picked]
