"""Stereo correction: make a predicted conformer's stereocentres and double bonds match its graph.

ReBind's loss compares interatomic distances, which a conformer and its mirror image share, so a
prediction may come out as the enantiomer of what the graph specifies. Reflecting every atom
through a plane changes no distance (D-MAE, D-RMSE stay the same) but inverts every stereocentre.
:func:`match_stereocentres` keeps whichever of the two images agrees with more of the
tetrahedral stereocentres the molecule's graph specifies (compared by chiral tag, which also
covers the cis/trans centres of rings that have no CIP label); molecules without specified
stereocentres are left alone. The reflection is z -> -z of every atom.

A diastereomer cannot be mended by one reflection. :func:`correct_stereo` then fixes each wrong
element on its own without changing a bond length: a double bond by turning its smaller side
half a turn about the bond axis, a centre by reflecting it, with the smallest branch behind
one of its acyclic bonds, through the plane of its other three neighbours. Centres whose bonds
are all in rings (bridgeheads, spiro atoms) cannot be moved this way and are reported.

GTMGC's and ReBind's published evaluation un-mirrors too, but with the answer: ``evaluate.py``
(Rich-XGK/GTMGC, holymollyhao/ReBIND) gives the model the reference conformer, and its
``ConformerPredictionHead`` (``models/modules/task_head.py``) aligns the prediction to it by
``align_conformer_hat_to_conformer`` (``models/modules/utils.py``), a Kabsch fit ``R = V U^T``
with no determinant check, which reflects the prediction whenever its mirror image fits the
reference better. This module needs only the graph, so it also works at prediction time, where
no reference exists (``molfold predict``); it can only fix molecules with specified
stereocentres. :func:`molfold.conformers.metrics.c_rmsd_pair` reports C-RMSD both ways
(``c_rmsd_stereo``; ``c_rmsd_mirror``, the papers' protocol).

:func:`check_stereo` (and :func:`stereo_mismatches`, its messages) checks a conformer against
every stereo element the graph specifies, tetrahedral centres and double bonds (E/Z), by
perceiving them from the 3D coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _specified(mol):
    """A copy of ``mol`` with the stereo its graph specifies perceived (CIP labels, E/Z)."""
    from rdkit import Chem

    wanted = Chem.Mol(mol, True)  # quick copy: the graph, no conformers
    Chem.AssignStereochemistry(wanted, cleanIt=True, force=True)
    return wanted


def is_achiral(mol) -> bool:
    """Whether ``mol``'s graph is its own mirror image (its canonical SMILES unchanged when every
    tetrahedral chiral tag is inverted; double bonds keep E/Z in a mirror): then a conformer
    and its mirror image are two conformers of the same molecule, equal in every energy."""
    from rdkit import Chem

    mirror = Chem.Mol(mol, True)
    for atom in mirror.GetAtoms():
        atom.InvertChirality()
    return Chem.MolToSmiles(mirror) == Chem.MolToSmiles(Chem.Mol(mol, True))


def _centres(mol) -> dict[int, object]:
    """Chiral tags (clockwise or not in the atom's neighbour order) of the tetrahedral centres:
    comparable between copies of one molecule, and defined where CIP labels are not (the
    cis/trans centres of a 1,4-disubstituted ring)."""
    from rdkit import Chem

    tetrahedral = (Chem.ChiralType.CHI_TETRAHEDRAL_CW, Chem.ChiralType.CHI_TETRAHEDRAL_CCW)
    return {a.GetIdx(): a.GetChiralTag() for a in mol.GetAtoms() if a.GetChiralTag() in tetrahedral}


def _centre_name(mol, atom: int) -> str:
    """The CIP label of ``atom`` where it has one, else its SMILES tag (@ or @@)."""
    from rdkit import Chem

    centre = mol.GetAtomWithIdx(atom)
    if centre.HasProp("_CIPCode"):
        return centre.GetProp("_CIPCode")
    return "@" if centre.GetChiralTag() == Chem.ChiralType.CHI_TETRAHEDRAL_CCW else "@@"


def _double_bonds(mol) -> dict[int, str]:
    from rdkit import Chem

    names = {Chem.BondStereo.STEREOE: "E", Chem.BondStereo.STEREOZ: "Z"}
    return {b.GetIdx(): names[b.GetStereo()] for b in mol.GetBonds() if b.GetStereo() in names}


@dataclass
class StereoCheck:
    """What a conformer gets wrong: tetrahedral centres (atom indices) and double bonds (bond
    indices) whose configuration in 3D differs from the graph's, and one line per problem."""

    atoms: list[int] = field(default_factory=list)
    bonds: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_stereo(mol, conf_id: int = -1) -> StereoCheck:
    """Compare every stereo element ``mol``'s graph specifies (chiral tags, double-bond marks)
    with the one perceived from conformer ``conf_id``'s coordinates."""
    from rdkit import Chem

    wanted_mol = _specified(mol)
    found_mol = Chem.Mol(mol, False, conf_id)  # that conformer only
    Chem.AssignStereochemistryFrom3D(found_mol, confId=conf_id)
    check = StereoCheck()
    wanted, found = _centres(wanted_mol), _centres(found_mol)
    for atom, tag in sorted(wanted.items()):
        if found.get(atom) != tag:
            got = _centre_name(found_mol, atom) if atom in found else "none"
            check.atoms.append(atom)
            check.problems.append(
                f"atom {atom}: {_centre_name(wanted_mol, atom)} specified, {got} in 3D"
            )
    found = _double_bonds(found_mol)
    for bond, label in sorted(_double_bonds(wanted_mol).items()):
        if found.get(bond) != label:
            ends = mol.GetBondWithIdx(bond)
            where = f"bond {bond} (atoms {ends.GetBeginAtomIdx()}-{ends.GetEndAtomIdx()})"
            check.bonds.append(bond)
            check.problems.append(f"{where}: {label} specified, {found.get(bond, 'none')} in 3D")
    return check


def stereo_mismatches(mol, conf_id: int = -1) -> list[str]:
    """The stereo elements that ``mol``'s graph specifies (chiral tags, double-bond marks) and
    conformer ``conf_id`` does not have, perceived from its coordinates; one line each, such as
    ``"atom 1: S specified, R in 3D"`` or ``"bond 3 (atoms 3-4): E specified, Z in 3D"``. Empty
    when the conformer has them all (or the graph specifies none)."""
    return check_stereo(mol, conf_id).problems


def match_stereocentres(mol, conf_id: int = -1) -> bool:
    """Reflect conformer ``conf_id`` of ``mol`` in place if its mirror image matches more of the
    tetrahedral centres specified by ``mol``'s chiral tags; returns whether it was reflected."""
    from rdkit import Chem

    wanted = _centres(_specified(mol))
    if not wanted:
        return False
    found_mol = Chem.Mol(mol, False, conf_id)
    Chem.AssignStereochemistryFrom3D(found_mol, confId=conf_id)
    found = _centres(found_mol)
    agree = sum(found.get(i) == tag for i, tag in wanted.items())
    disagree = sum(found.get(i) not in (None, tag) for i, tag in wanted.items())
    if disagree <= agree:
        return False
    conformer = mol.GetConformer(conf_id)
    for i in range(mol.GetNumAtoms()):
        p = conformer.GetAtomPosition(i)
        p.z = -p.z
        conformer.SetAtomPosition(i, p)
    return True


def _side(mol, start: int, cut: int) -> list[int]:
    """The atoms on ``start``'s side of the acyclic bond ``start``-``cut`` (``start`` included)."""
    seen, todo = {start, cut}, [start]
    while todo:
        for neighbour in mol.GetAtomWithIdx(todo.pop()).GetNeighbors():
            if neighbour.GetIdx() not in seen:
                seen.add(neighbour.GetIdx())
                todo.append(neighbour.GetIdx())
    return sorted(seen - {cut})


def _reflect(points: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """``points`` [M, 3] reflected through the plane through the three rows of ``plane``."""
    normal = np.cross(plane[1] - plane[0], plane[2] - plane[0])
    normal /= np.linalg.norm(normal)
    return points - 2.0 * ((points - plane[0]) @ normal)[:, None] * normal


def invert_centre(mol, conf_id: int, atom: int, keep: set[int] = frozenset()) -> bool:
    """Invert the tetrahedral centre ``atom`` of conformer ``conf_id`` in place, changing no bond
    length: with three neighbours the centre is reflected through their plane (an umbrella
    inversion); with four, the centre and the smallest branch behind one of its acyclic bonds
    are reflected through the plane of the other three neighbours (branches holding atoms of
    ``keep``, stereocentres that must not move, are taken last). False when every bond of the
    centre is in a ring (a bridgehead or spiro centre), which no such move can invert."""
    conformer = mol.GetConformer(conf_id)
    pos = conformer.GetPositions()
    neighbours = [n.GetIdx() for n in mol.GetAtomWithIdx(atom).GetNeighbors()]
    if len(neighbours) == 3:
        moved, plane = [atom], neighbours
    elif len(neighbours) == 4:
        branches = [
            (bool(keep.intersection(side)), len(side), n, side)
            for n in neighbours
            if not mol.GetBondBetweenAtoms(atom, n).IsInRing()
            for side in [_side(mol, n, atom)]
        ]
        if not branches:
            return False
        _, _, root, side = min(branches)
        moved, plane = [atom, *side], [n for n in neighbours if n != root]
    else:
        return False
    pos[moved] = _reflect(pos[moved], pos[plane])
    for i in moved:
        conformer.SetAtomPosition(i, pos[i].tolist())
    return True


def flip_double_bond(mol, conf_id: int, bond: int) -> bool:
    """Turn the E/Z configuration of double bond ``bond`` of conformer ``conf_id`` in place by
    rotating the smaller side 180 degrees about the bond axis (no bond length or angle changes);
    False for a bond in a ring."""
    double = mol.GetBondWithIdx(bond)
    if double.IsInRing():
        return False
    a, b = double.GetBeginAtomIdx(), double.GetEndAtomIdx()
    side_a, side_b = _side(mol, a, b), _side(mol, b, a)
    moved = side_b if len(side_b) <= len(side_a) else side_a
    conformer = mol.GetConformer(conf_id)
    pos = conformer.GetPositions()
    axis = (pos[b] - pos[a]) / np.linalg.norm(pos[b] - pos[a])
    relative = pos[moved] - pos[a]
    pos[moved] = pos[a] + 2.0 * (relative @ axis)[:, None] * axis - relative
    for i in moved:
        conformer.SetAtomPosition(i, pos[i].tolist())
    return True


def correct_stereo(mol, conf_id: int = -1) -> list[str]:
    """Give conformer ``conf_id`` every stereo element ``mol``'s graph specifies, in place: the
    mirror image first where it matches more centres (:func:`match_stereocentres`), then each
    remaining wrong double bond flipped and each wrong centre inverted one at a time
    (:func:`flip_double_bond`, :func:`invert_centre`), re-perceiving after each round. Returns
    what is still wrong (empty when all is right), e.g. a wrong bridgehead."""
    match_stereocentres(mol, conf_id)
    check = check_stereo(mol, conf_id)
    specified = set(_centres(_specified(mol)))
    for _ in range(len(check.atoms) + len(check.bonds) + 1):
        if not check.problems:
            break
        changed = any([flip_double_bond(mol, conf_id, bond) for bond in check.bonds])
        for atom in check.atoms:
            if invert_centre(mol, conf_id, atom, keep=specified - {atom}):
                changed = True
                break
        if not changed:
            break
        check = check_stereo(mol, conf_id)
    return check.problems
