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
"""

from __future__ import annotations


def _labels(mol) -> dict[int, str]:
    return {a.GetIdx(): a.GetProp("_CIPCode") for a in mol.GetAtoms() if a.HasProp("_CIPCode")}


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
