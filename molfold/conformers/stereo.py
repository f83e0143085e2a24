"""Mirror-image correction: make a predicted conformer's stereocentres match its graph.

ReBind's loss compares interatomic distances, which a conformer and its mirror image share, so a
prediction may come out as the enantiomer of what the graph specifies. Reflecting every atom
through a plane changes no distance (D-MAE, D-RMSE stay the same) but inverts every stereocentre.
:func:`match_stereocentres` keeps whichever of the two images agrees with more of the
tetrahedral stereocentres the molecule's graph specifies (CIP labels R/S); molecules without
specified stereocentres are left alone. The reflection is z -> -z of every atom.

GTMGC's and ReBind's published evaluation un-mirrors too, but with the answer: ``evaluate.py``
(Rich-XGK/GTMGC, holymollyhao/ReBIND) gives the model the reference conformer, and its
``ConformerPredictionHead`` (``models/modules/task_head.py``) aligns the prediction to it by
``align_conformer_hat_to_conformer`` (``models/modules/utils.py``), a Kabsch fit ``R = V U^T``
with no determinant check, which reflects the prediction whenever its mirror image fits the
reference better. This module needs only the graph, so it also works at prediction time, where
no reference exists (``molfold predict``); it can only fix molecules with specified
stereocentres. :func:`molfold.conformers.metrics.c_rmsd_pair` reports C-RMSD both ways
(``c_rmsd_stereo``; ``c_rmsd_mirror``, the papers' protocol).

:func:`stereo_mismatches` checks a conformer against every stereo element the graph specifies,
tetrahedral centres (R/S) and double bonds (E/Z), by perceiving them from the 3D coordinates.
"""

from __future__ import annotations


def _labels(mol) -> dict[int, str]:
    return {a.GetIdx(): a.GetProp("_CIPCode") for a in mol.GetAtoms() if a.HasProp("_CIPCode")}


def _double_bonds(mol) -> dict[int, str]:
    from rdkit import Chem

    names = {Chem.BondStereo.STEREOE: "E", Chem.BondStereo.STEREOZ: "Z"}
    return {b.GetIdx(): names[b.GetStereo()] for b in mol.GetBonds() if b.GetStereo() in names}


def stereo_mismatches(mol, conf_id: int = -1) -> list[str]:
    """The stereo elements that ``mol``'s graph specifies (chiral tags, double-bond marks) and
    conformer ``conf_id`` does not have, perceived from its coordinates; one line each, such as
    ``"atom 1: S specified, R in 3D"`` or ``"bond 3 (atoms 3-4): E specified, Z in 3D"``. Empty
    when the conformer has them all (or the graph specifies none)."""
    from rdkit import Chem

    wanted_mol = Chem.Mol(mol)
    Chem.AssignStereochemistry(wanted_mol, cleanIt=True, force=True)
    found_mol = Chem.Mol(mol)
    Chem.AssignStereochemistryFrom3D(found_mol, confId=conf_id)
    problems = []
    found = _labels(found_mol)
    for atom, label in sorted(_labels(wanted_mol).items()):
        if found.get(atom) != label:
            problems.append(f"atom {atom}: {label} specified, {found.get(atom, 'none')} in 3D")
    found = _double_bonds(found_mol)
    for bond, label in sorted(_double_bonds(wanted_mol).items()):
        if found.get(bond) != label:
            ends = mol.GetBondWithIdx(bond)
            where = f"bond {bond} (atoms {ends.GetBeginAtomIdx()}-{ends.GetEndAtomIdx()})"
            problems.append(f"{where}: {label} specified, {found.get(bond, 'none')} in 3D")
    return problems


def match_stereocentres(mol, conf_id: int = -1) -> bool:
    """Reflect conformer ``conf_id`` of ``mol`` in place if its mirror image matches more of the
    stereocentres specified by ``mol``'s chiral tags; returns whether it was reflected."""
    from rdkit import Chem

    wanted_mol = Chem.Mol(mol)
    Chem.AssignStereochemistry(wanted_mol, cleanIt=True, force=True)
    wanted = _labels(wanted_mol)
    if not wanted:
        return False
    found_mol = Chem.Mol(mol)
    Chem.AssignStereochemistryFrom3D(found_mol, confId=conf_id)
    found = _labels(found_mol)
    agree = sum(found.get(i) == label for i, label in wanted.items())
    disagree = sum(found.get(i) not in (None, label) for i, label in wanted.items())
    if disagree <= agree:
        return False
    conformer = mol.GetConformer(conf_id)
    for i in range(mol.GetNumAtoms()):
        p = conformer.GetAtomPosition(i)
        p.z = -p.z
        conformer.SetAtomPosition(i, p)
    return True
