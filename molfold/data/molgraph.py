"""2D molecular graphs for conformer models: RDKit Mol or SMILES -> atom and bond features.

One module shared by training (QM9, GEOM-DRUGS) and prediction (``molfold predict``), so that a
molecule is featurised the same way in both.

Atoms carry the nine categorical features that GTMGC and ReBind embed and sum (the OGB set, as in
GTMGC's ``data/utils.py``; hydrogens explicit):

==================  =====================================================================
feature             categories (an unlisted value falls into the last, "misc", category)
==================  =====================================================================
atomic number       1 ... 118
chirality           unspecified, tetrahedral CW, tetrahedral CCW, other
degree              0 ... 10, misc
formal charge       -5 ... +5, misc
total hydrogens     0 ... 8, misc
radical electrons   0 ... 4, misc
hybridisation       SP, SP2, SP3, SP3D, SP3D2, misc
aromatic            no, yes
in a ring           no, yes
==================  =====================================================================

MoleBERT atom tokens (GTMGC's default input) are not used: ReBind replaces them with these
features, and the tokenizer is a separately pre-trained network.

A molecule becomes a :class:`~torch_geometric.data.Data` with

=================  ==========  ===========================================================
field              shape       meaning
=================  ==========  ===========================================================
``z``              [N]         atomic numbers
``atom_features``  [N, 9]      category indices of the table above (int64)
``bond_index``     [2, 2B]     both directions of each bond
``bond_type``      [2B]        1 single, 2 double, 3 triple, 4 aromatic
``pos``            [N, 3]      Angstrom, the molecule's conformer when it has one
``smiles``         str         canonical SMILES of the input (hydrogens implicit)
``name``           str         the molecule's name ("" if none)
=================  ==========  ===========================================================

Datasets store the RDKit-level molecule instead (:func:`molecule_fields`: atoms, bonds, formal
charges, chiral tags, hydrogens counted on heavy atoms), and the
:class:`~molfold.data.transforms.MolecularGraph` transform rebuilds the molecule from those
fields (:func:`mol_from_fields`) and featurises it here, as a conformer task needs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from molfold.errors import DataError

ATOM_FEATURE_CATEGORIES: tuple[tuple, ...] = (
    tuple(range(1, 119)),
    ("CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER"),
    (*range(11), "misc"),
    (*range(-5, 6), "misc"),
    (*range(9), "misc"),
    (*range(5), "misc"),
    ("SP", "SP2", "SP3", "SP3D", "SP3D2", "misc"),
    (False, True),
    (False, True),
)
ATOM_FEATURE_SIZES = tuple(len(c) for c in ATOM_FEATURE_CATEGORIES)
BOND_TYPE_CODES = {"SINGLE": 1, "DOUBLE": 2, "TRIPLE": 3, "AROMATIC": 4}


class InvalidMoleculeError(DataError):
    """A SMILES string or molecule that RDKit cannot parse or sanitise."""


def _category(categories: tuple, value) -> int:
    try:
        return categories.index(value)
    except ValueError:
        return len(categories) - 1


def atom_features(mol) -> torch.Tensor:
    """The [N, 9] int64 category indices (see the module docstring) of every atom of ``mol``."""
    rows = []
    for atom in mol.GetAtoms():
        values = (
            atom.GetAtomicNum(),
            str(atom.GetChiralTag()),
            atom.GetDegree(),
            atom.GetFormalCharge(),
            atom.GetTotalNumHs(),
            atom.GetNumRadicalElectrons(),
            str(atom.GetHybridization()),
            atom.GetIsAromatic(),
            atom.IsInRing(),
        )
        rows.append([_category(c, v) for c, v in zip(ATOM_FEATURE_CATEGORIES, values)])
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, len(ATOM_FEATURE_CATEGORIES))


def sanitized(mol):
    """``mol`` sanitised in place as far as RDKit allows: everything, or everything but the
    valence checks (some perceived QM9 graphs fail those; hybridisation and rings are needed)."""
    from rdkit import Chem

    failed = Chem.SanitizeMol(mol, catchErrors=True)
    if failed != Chem.SanitizeFlags.SANITIZE_NONE:
        mol.UpdatePropertyCache(strict=False)
        Chem.SanitizeMol(
            mol,
            Chem.SanitizeFlags.SANITIZE_ALL ^ Chem.SanitizeFlags.SANITIZE_PROPERTIES,
            catchErrors=True,
        )
    return mol


MOLECULE_FIELDS = ("z", "pos", "bond_index", "bond_type", "formal_charge", "chiral_tag", "num_hs")
"""What :func:`molecule_fields` stores: ``formal_charge``, ``chiral_tag`` (RDKit ``ChiralType``
codes, meaningful in the bond order of ``bond_index``) and ``num_hs`` (hydrogens an atom carries
beyond its hydrogen neighbours) are [N] int64."""


def _bond_lists(mol) -> tuple[torch.Tensor, torch.Tensor]:
    """``bond_index`` [2, 2B] (each bond both ways, in RDKit's bond order) and ``bond_type``."""
    pairs, types = [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        code = BOND_TYPE_CODES.get(str(bond.GetBondType()), 1)
        pairs += [(i, j), (j, i)]
        types += [code, code]
    index = torch.tensor(pairs, dtype=torch.int64).reshape(-1, 2).t().contiguous()
    return index, torch.tensor(types, dtype=torch.int64)


def molecule_fields(mol) -> dict[str, torch.Tensor]:
    """The RDKit-level molecule as graph fields (:data:`MOLECULE_FIELDS`, but ``pos``), from which
    :func:`mol_from_fields` rebuilds it exactly."""
    atoms = list(mol.GetAtoms())
    bond_index, bond_type = _bond_lists(mol)
    return {
        "z": torch.tensor([a.GetAtomicNum() for a in atoms], dtype=torch.int64),
        "bond_index": bond_index,
        "bond_type": bond_type,
        "formal_charge": torch.tensor([a.GetFormalCharge() for a in atoms], dtype=torch.int64),
        "chiral_tag": torch.tensor([int(a.GetChiralTag()) for a in atoms], dtype=torch.int64),
        "num_hs": torch.tensor([a.GetTotalNumHs() for a in atoms], dtype=torch.int64),
    }


def mol_from_fields(data: Data):
    """The RDKit molecule of :func:`molecule_fields` (with ``pos`` as its conformer when there),
    sanitised as far as RDKit allows; bonds are added in ``bond_index`` order, so chiral tags keep
    their meaning."""
    mol = _build_mol(
        data.z.tolist(),
        data.formal_charge.tolist(),
        data.chiral_tag.tolist(),
        data.bond_index,
        data.bond_type,
        data.pos if "pos" in data else None,
        data.num_hs.tolist(),
    )
    return sanitized(mol)


def _build_mol(z, charges, tags, bond_index, bond_type, pos, num_hs=None):
    """An unsanitised RDKit molecule from atoms (numbers, charges, chiral tag codes, hydrogens
    carried), bonds (added in ``bond_index`` order, each once, oriented as it first appears) and
    an optional conformer."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    types = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    types[4] = Chem.BondType.AROMATIC
    mol = Chem.RWMol()
    for k, (number, charge, tag) in enumerate(zip(z, charges, tags)):
        atom = Chem.Atom(int(number))
        atom.SetFormalCharge(int(charge))
        atom.SetChiralTag(Chem.ChiralType.values[int(tag)])
        atom.SetNoImplicit(True)
        if num_hs is not None:
            atom.SetNumExplicitHs(int(num_hs[k]))
        mol.AddAtom(atom)
    added = set()
    for (i, j), code in zip(bond_index.t().tolist(), bond_type.tolist()):
        if (j, i) not in added:  # each bond once, as it first appears (begin atom, end atom)
            added.add((i, j))
            mol.AddBond(i, j, types[int(code)])
            if code == 4:
                mol.GetBondBetweenAtoms(i, j).SetIsAromatic(True)
                mol.GetAtomWithIdx(i).SetIsAromatic(True)
                mol.GetAtomWithIdx(j).SetIsAromatic(True)
    if pos is not None:
        conformer = Chem.Conformer(mol.GetNumAtoms())
        for i, (x, y, w) in enumerate(pos.tolist()):
            conformer.SetAtomPosition(i, Point3D(x, y, w))
        mol.AddConformer(conformer, assignId=True)
    return mol.GetMol()


def mol_from_smiles(smiles: str, where: str = "SMILES"):
    """An RDKit molecule with explicit hydrogens; :class:`InvalidMoleculeError` if RDKit rejects it.

    ``where`` names the input in the message (e.g. ``"molecules.smi:12"``).
    """
    from rdkit import Chem, rdBase

    text = smiles.strip() if isinstance(smiles, str) else ""
    if not text:
        raise InvalidMoleculeError(f"{where}: empty SMILES")
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(text)
    if mol is None:
        raise InvalidMoleculeError(f"{where}: invalid SMILES {text!r} (RDKit cannot parse it)")
    if len(Chem.GetMolFrags(mol)) > 1:
        raise InvalidMoleculeError(
            f"{where}: {text!r} holds several disconnected molecules; give one per line"
        )
    return Chem.AddHs(mol)


def mol_to_graph(mol, name: str = "", with_conformer: bool = True) -> Data:
    """Featurise an RDKit molecule (hydrogens must be explicit) as described in the module docs.

    With ``with_conformer`` and a conformer present, ``pos`` holds its coordinates (Angstrom).
    """
    from rdkit import Chem

    if mol.GetNumAtoms() == 0:
        raise InvalidMoleculeError(f"{name or 'molecule'}: no atoms")
    implicit = sum(atom.GetNumImplicitHs() for atom in mol.GetAtoms())
    if implicit:
        raise InvalidMoleculeError(
            f"{name or 'molecule'}: {implicit} implicit hydrogens; add them with Chem.AddHs"
        )
    bond_index, bond_type = _bond_lists(mol)
    data = Data(
        z=torch.tensor([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=torch.int64),
        atom_features=atom_features(mol),
        bond_index=bond_index,
        bond_type=bond_type,
        smiles=Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False)),
        name=name,
    )
    data.num_nodes = mol.GetNumAtoms()
    if with_conformer and mol.GetNumConformers():
        pos = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
        if not np.isfinite(pos).all():
            raise InvalidMoleculeError(
                f"{name or 'molecule'}: conformer has NaN or inf coordinates"
            )
        data.pos = torch.from_numpy(pos)
    return data


def smiles_to_graph(smiles: str, name: str = "", where: str = "SMILES") -> tuple[Data, object]:
    """Graph and RDKit molecule (explicit hydrogens, no conformer) of a SMILES string."""
    mol = mol_from_smiles(smiles, where)
    return mol_to_graph(mol, name=name, with_conformer=False), mol


def graph_to_mol(graph: Data, pos: torch.Tensor | None = None):
    """The RDKit molecule of a graph (atoms in graph order, bonds, formal charges, chiral tags)
    with ``pos`` [N, 3] (default ``graph.pos``, Angstrom) as its conformer; sanitised where
    RDKit allows. Bonds are added in the order of ``bond_index``, so chiral tags keep the meaning
    they had in the molecule the graph came from (:func:`mol_to_graph` lists bonds in RDKit's
    order)."""
    from rdkit import Chem

    chirality, charges = ATOM_FEATURE_CATEGORIES[1], ATOM_FEATURE_CATEGORIES[3]
    codes = graph.atom_features[:, [1, 3]].tolist()
    tags = [int(getattr(Chem.ChiralType, chirality[tag])) for tag, _ in codes]
    charge = [charges[c] if isinstance(charges[c], int) else 0 for _, c in codes]
    pos = graph.pos if pos is None else pos
    mol = _build_mol(graph.z.tolist(), charge, tags, graph.bond_index, graph.bond_type, pos)
    if Chem.SanitizeMol(mol, catchErrors=True) != Chem.SanitizeFlags.SANITIZE_NONE:
        mol.UpdatePropertyCache(strict=False)
    return mol
