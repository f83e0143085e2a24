"""Conformer ensembles: rank by energy, drop duplicates, and state the stereo that was chosen.

:func:`rank_conformers` orders a molecule's conformers by energy (lowest first, conformers without
an energy last, in their original order) and drops each conformer whose heavy-atom RMSD to a
kept lower-energy one is under ``rmsd_threshold`` (RDKit ``GetBestRMS``: symmetry-aware, after
optimal superposition, mirror images count as different). The kept conformers carry conformer
properties ``molfold_rank`` (1 = predicted ground state), ``molfold_energy_eV`` and
``molfold_relative_energy_eV`` / ``molfold_relative_energy_kcal_mol`` (to the rank-1 conformer),
which :func:`molfold.conformers.command.write_sdf` writes as SD tags.

:func:`rescoring_candidates` picks the relaxed conformers worth a single point of a ranking
energy: those near the lowest refined energy, once per energy twin.

:func:`fix_unspecified_stereo` makes one stereoisomer of a molecule whose SMILES leaves stereo
open the molecule's graph, from the stereo of one conformer, so that every conformer of the
ensemble is then corrected to that same stereoisomer; :func:`enumerate_stereoisomers` instead
expands a SMILES into all of its stereoisomers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from molfold.data.molgraph import InvalidMoleculeError
from molfold.units import KCAL_PER_MOL_TO_EV

if TYPE_CHECKING:
    from molfold.conformers.refine import Relaxation

MAX_STEREOISOMERS = 32
TWIN_KCAL_MOL = 1e-3  # refined conformers this close in energy are one minimum (or its mirror)


def rescoring_candidates(
    conf_ids: list[int], relaxed: dict[int, Relaxation], window: float, at_least: int = 1
) -> tuple[list[int], dict[int, int]]:
    """The conformers a single-point ``rank`` energy is computed for
    (:mod:`molfold.conformers.predict`, step 4): of those whose refinement converged, one of
    each set of energy twins (within :data:`TWIN_KCAL_MOL`: the same minimum, or its mirror
    image), the lowest ``at_least`` and any others within ``window`` kcal/mol of the lowest
    refined energy; and every conformer without a converged refinement energy. Returns them
    and ``{twin: the candidate whose energy it shares}``."""
    minima = {
        c: relaxed[c].energy / KCAL_PER_MOL_TO_EV
        for c in conf_ids
        if c in relaxed and relaxed[c].converged and relaxed[c].energy is not None
    }
    candidates, twins = [c for c in conf_ids if c not in minima], {}
    window_top = min(minima.values(), default=0.0) + window
    previous, distinct = None, 0
    for conf_id in sorted(minima, key=minima.get):
        if minima[conf_id] > window_top and distinct >= at_least:
            break
        if previous is not None and minima[conf_id] - minima[previous] < TWIN_KCAL_MOL:
            twins[conf_id] = previous
        else:
            candidates.append(conf_id)
            previous, distinct = conf_id, distinct + 1
    return candidates, twins


def _heavy_copy(mol, conf_id: int):
    from rdkit import Chem

    single = Chem.Mol(mol, confId=conf_id)
    return Chem.RemoveHs(single)


def rank_conformers(
    mol, energies: dict[int, float | None], rmsd_threshold: float, limit: int | None = None
) -> list[int]:
    """Reorder ``mol``'s conformers, lowest ``energies`` (eV, by conformer id) first, removing
    duplicates (module docstring) and keeping at most ``limit``, and set their rank and energy
    properties; returns the old ids of the conformers kept, in their new order (their new ids
    are 0, 1, ...)."""
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign

    ids = [c.GetId() for c in mol.GetConformers()]
    order = sorted(ids, key=lambda i: (energies.get(i) is None, energies.get(i) or 0.0))
    kept, heavy = [], []
    for conf_id in order:
        if limit is not None and len(kept) == limit:
            break
        probe = _heavy_copy(mol, conf_id)
        if all(rdMolAlign.GetBestRMS(probe, other) >= rmsd_threshold for other in heavy):
            kept.append(conf_id)
            heavy.append(probe)
    ordered = [Chem.Conformer(mol.GetConformer(conf_id)) for conf_id in kept]
    mol.RemoveAllConformers()
    for conformer in ordered:
        mol.AddConformer(conformer, assignId=True)
    lowest = energies.get(kept[0])
    for rank, (conf_id, conformer) in enumerate(zip(kept, mol.GetConformers()), start=1):
        conformer.SetIntProp("molfold_rank", rank)
        energy = energies.get(conf_id)
        if energy is not None:
            conformer.SetDoubleProp("molfold_energy_eV", energy)
        if energy is not None and lowest is not None:
            conformer.SetDoubleProp("molfold_relative_energy_eV", energy - lowest)
            relative_kcal = (energy - lowest) / KCAL_PER_MOL_TO_EV
            conformer.SetDoubleProp("molfold_relative_energy_kcal_mol", relative_kcal)
    return kept


def unspecified_stereo(mol) -> tuple[list[int], list[int]]:
    """Atoms and bonds of ``mol`` that could be stereo elements but have no configuration."""
    from rdkit import Chem

    atoms, bonds = [], []
    for element in Chem.FindPotentialStereo(Chem.Mol(mol)):
        if element.specified != Chem.StereoSpecified.Unspecified:
            continue
        if element.type == Chem.StereoType.Atom_Tetrahedral:
            atoms.append(element.centeredOn)
        elif element.type == Chem.StereoType.Bond_Double:
            bonds.append(element.centeredOn)
    return atoms, bonds


def fix_unspecified_stereo(mol, conf_id: int) -> str:
    """Give ``mol``'s graph the configuration conformer ``conf_id`` has at every stereo element
    the graph leaves open; returns what was chosen (``""`` when nothing was open), e.g.
    ``"atom 3: R; bond 5 (atoms 5-6): E"``, for the SDF."""
    from rdkit import Chem

    atoms, bonds = unspecified_stereo(mol)
    if not atoms and not bonds:
        return ""
    Chem.AssignStereochemistryFrom3D(mol, confId=conf_id, replaceExistingTags=False)
    Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
    chosen = []
    for atom in atoms:
        centre = mol.GetAtomWithIdx(atom)
        label = centre.GetProp("_CIPCode") if centre.HasProp("_CIPCode") else None
        tag = centre.GetChiralTag()
        if label is None and tag != Chem.ChiralType.CHI_UNSPECIFIED:
            label = "@" if tag == Chem.ChiralType.CHI_TETRAHEDRAL_CCW else "@@"
        chosen.append(f"atom {atom}: {label or 'none'}")
    names = {Chem.BondStereo.STEREOE: "E", Chem.BondStereo.STEREOZ: "Z"}
    for bond in bonds:
        double = mol.GetBondWithIdx(bond)
        ends = f"atoms {double.GetBeginAtomIdx()}-{double.GetEndAtomIdx()}"
        chosen.append(f"bond {bond} ({ends}): {names.get(double.GetStereo(), 'none')}")
    return "; ".join(chosen)


def enumerate_stereoisomers(smiles: str, where: str) -> list[str]:
    """Isomeric SMILES of every stereoisomer of ``smiles`` that keeps its specified stereo (the
    SMILES itself when nothing is open); more than :data:`MAX_STEREOISOMERS` is an error."""
    from rdkit import Chem
    from rdkit.Chem.EnumerateStereoisomers import (
        EnumerateStereoisomers,
        StereoEnumerationOptions,
    )

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InvalidMoleculeError(f"{where}: invalid SMILES {smiles!r}")
    options = StereoEnumerationOptions(
        onlyUnassigned=True, unique=True, maxIsomers=MAX_STEREOISOMERS + 1
    )
    isomers = sorted({Chem.MolToSmiles(m) for m in EnumerateStereoisomers(mol, options=options)})
    if len(isomers) > MAX_STEREOISOMERS:
        raise InvalidMoleculeError(
            f"{where}: {smiles!r} has more than {MAX_STEREOISOMERS} stereoisomers; specify "
            "some of its stereo or use stereo=choose"
        )
    return isomers
