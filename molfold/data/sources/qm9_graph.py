"""The RDKit bond graph of a QM9 geometry: bond orders and formal charges in the geometry's atom
order, perceived once when :mod:`molfold.data.sources.qm9` builds its cache.

qm9pack gives each geometry one SMILES (that of the relaxed B3LYP geometry, charged where the
geometry is a zwitterion, e.g. ``[NH3+]CCC([O-])=O`` for GDB 271) but no bonds, so the graph is
found in this order (the code is a key of :data:`GRAPH_SOURCES`):

1. the SMILES, with explicit hydrogens, mapped atom by atom onto the connectivity of the geometry,
   keeping the SMILES' bond orders, formal charges and aromaticity. The connectivity is first
   RDKit's (``rdDetermineBonds.DetermineConnectivity``, connect-the-dots: bonded when closer than
   the two covalent radii plus a fixed tolerance), then, if the SMILES does not map onto that,
   the SMILES' number of closest atom pairs (:func:`_closest_pairs`, distance over the sum of
   covalent radii). RDKit's tolerance also bonds the bridgeheads of strained cages such as
   bicyclo[1.1.1]pentane (1.88 Angstrom apart, GDB 105), giving those carbons five neighbours:
   with RDKit's connectivity alone, 5.2 % of the molecules matched no SMILES and then failed
   bond-order perception too. (``covFactor`` would not help: RDKit applies it only with
   ``useVdw=True``.) The closest pairs also handle cages where a real bond (1.70 Angstrom, GDB
   37494) is longer than a cross-cage contact of lighter atoms.
2. where the SMILES maps onto neither (the geometry's connectivity differs from the SMILES', e.g.
   GDB 133857), bond orders and formal charges perceived from the geometry with
   ``rdDetermineBonds.DetermineBondOrders`` (xyz2mol, total charge 0, charged fragments allowed,
   so zwitterions get their charges, no stereochemistry); kept only when RDKit sanitizes it.
3. the fallback when both fail: RDKit's connectivity alone, every bond single, no charges, no
   aromaticity. Such a graph is not chemically valid (carbons lack hydrogens or bonds), and
   ``graph_source == 3`` marks it so that featurizers can drop or flag those molecules.

On all 130,831 molecules of qm9pack: 130,829 get source 1, 2 get source 2 (GDB 133857 and
133859), none source 3.

Bond types are coded as in :data:`BOND_TYPE_CODES` (1 single, 2 double, 3 triple, 4 aromatic);
graphs from sources 1 and 2 are sanitized, so aromaticity is RDKit's in both.
"""

from __future__ import annotations

import numpy as np
from torch_geometric.data import Data

GRAPH_SOURCES = {0: "file bonds", 1: "SMILES template", 2: "rdDetermineBonds", 3: "connectivity"}
"""How the RDKit graph was obtained: 0 the bonds in gdb9.sdf; 1 the SMILES mapped onto the
geometry's connectivity; 2 bond orders and charges perceived from the geometry (the SMILES did
not match the geometry's connectivity); 3 connectivity only, all bonds single (perception
failed)."""

MAX_BOND_RATIO = 1.3
"""Longest bond accepted when bonding the closest atom pairs: this many times the sum of the two
covalent radii (RDKit's ``covFactor`` default for its van der Waals method)."""

BOND_TYPE_CODES = {"SINGLE": 1, "DOUBLE": 2, "TRIPLE": 3, "AROMATIC": 4}
"""RDKit bond type name -> the ``bond_type`` code stored on each structure."""


def mol_graph(mol) -> tuple[list, list, list]:
    """``(bonds, types, charges)`` of an RDKit molecule: atom index pairs, bond type codes
    (:data:`BOND_TYPE_CODES`, unknown types as single) and formal charges per atom."""
    bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()]
    types = [BOND_TYPE_CODES.get(str(b.GetBondType()), 1) for b in mol.GetBonds()]
    charges = [a.GetFormalCharge() for a in mol.GetAtoms()]
    return bonds, types, charges


def _geometry_mol(z: np.ndarray, pos: np.ndarray):
    """An RDKit molecule with the atoms of ``z`` (no bonds) and ``pos`` as its conformer."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    mol = Chem.RWMol()
    for k in z:
        atom = Chem.Atom(int(k))
        atom.SetNoImplicit(True)
        mol.AddAtom(atom)
    conformer = Chem.Conformer(len(z))
    for i, (x, y, w) in enumerate(np.asarray(pos, dtype=np.float64).tolist()):
        conformer.SetAtomPosition(i, Point3D(x, y, w))
    mol.AddConformer(conformer, assignId=True)
    return mol.GetMol()


def _template_query(smiles: str):
    """The SMILES with explicit hydrogens, and a copy reduced to its connectivity (all bonds
    single, no charges or aromaticity) for matching; ``(None, None)`` when it does not parse, is
    not neutral overall or has unpaired electrons."""
    from rdkit import Chem

    template = Chem.MolFromSmiles(smiles) if smiles else None
    if template is None or Chem.GetFormalCharge(template) != 0:
        return None, None
    if any(atom.GetNumRadicalElectrons() for atom in template.GetAtoms()):
        return None, None
    template = Chem.AddHs(template)
    query = Chem.RWMol(template)
    for bond in query.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
    for atom in query.GetAtoms():
        atom.SetIsAromatic(False)
        atom.SetFormalCharge(0)
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(0)
    return template, query.GetMol()


def _sanitized(mol):
    """``mol`` sanitized (aromaticity perceived), or None when RDKit rejects it, its formal
    charges do not sum to 0 or it has unpaired electrons (QM9 molecules are closed-shell)."""
    from rdkit import Chem

    mol = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # RDKit raises several types for bad valences and kekulization
        return None
    if Chem.GetFormalCharge(mol) != 0 or any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return None
    return mol


def _closest_pairs(geometry, n_bonds: int):
    """``geometry`` bonded by single bonds between its ``n_bonds`` closest atom pairs, closeness
    being distance over the sum of covalent radii; None when the next pair is as close (no unique
    choice) or a chosen pair is farther than :data:`MAX_BOND_RATIO`."""
    from rdkit import Chem

    table = Chem.GetPeriodicTable()
    pos = geometry.GetConformer().GetPositions()
    radii = np.array([table.GetRcovalent(a.GetAtomicNum()) for a in geometry.GetAtoms()])
    i, j = np.triu_indices(len(pos), k=1)
    ratio = np.linalg.norm(pos[i] - pos[j], axis=1) / (radii[i] + radii[j])
    order = np.argsort(ratio, kind="stable")
    if n_bonds == 0 or n_bonds > len(order) or ratio[order[n_bonds - 1]] > MAX_BOND_RATIO:
        return None
    if n_bonds < len(order) and ratio[order[n_bonds]] <= ratio[order[n_bonds - 1]]:
        return None
    mol = Chem.RWMol(geometry)
    for k in order[:n_bonds]:
        mol.AddBond(int(i[k]), int(j[k]), Chem.BondType.SINGLE)
    return mol.GetMol()


def geometry_graph(z: np.ndarray, pos: np.ndarray, smiles: str):
    """The RDKit molecule of a geometry, atoms in the geometry's order, and how it was found.

    Parameters
    ----------
    z : [N] atomic numbers
    pos : [N, 3] positions in Angstrom
    smiles : the SMILES of the geometry (may be empty)

    Returns ``(mol, code)``: ``mol`` holds ``pos`` as its conformer; ``code`` is a key of
    :data:`GRAPH_SOURCES` (1, 2 or 3, in the order of the module docstring). For codes 1 and 2
    the molecule is sanitized and neutral overall; it carries no stereochemistry.
    """
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdDetermineBonds

    # failed perceptions are recorded in the code instead; RDKit logs again once this returns
    logs_blocked = rdBase.BlockLogs()  # noqa: F841
    geometry = _geometry_mol(z, pos)
    template, query = _template_query(smiles)
    connected = Chem.Mol(geometry)
    rdDetermineBonds.DetermineConnectivity(connected)
    connections = [connected]
    if query is not None and query.GetNumAtoms() == geometry.GetNumAtoms():
        closest = _closest_pairs(geometry, query.GetNumBonds())
        connections += [closest] if closest is not None else []
    for connected in connections if query is not None else ():
        if query.GetNumAtoms() != connected.GetNumAtoms():
            continue
        if query.GetNumBonds() != connected.GetNumBonds():
            continue
        match = connected.GetSubstructMatch(query)
        if match:
            order = [int(i) for i in np.argsort(match)]
            mol = Chem.RenumberAtoms(template, order)
            mol.RemoveAllConformers()
            mol.AddConformer(geometry.GetConformer(), assignId=True)
            return mol, 1
    for connected in connections:
        mol = Chem.Mol(connected)
        try:
            rdDetermineBonds.DetermineBondOrders(
                mol, charge=0, allowChargedFragments=True, embedChiral=False
            )
        except Exception:  # RDKit raises ValueError or RuntimeError when perception fails
            continue
        mol = _sanitized(mol)
        if mol is not None:
            return mol, 2
    return connections[0], 3


def to_rdkit_mol(data: Data):
    """The RDKit molecule of a loaded structure: atoms in ``data.z`` order, bonds from
    ``bond_index``/``bond_type``, formal charges, and ``pos`` as its 3D conformer (Angstrom).

    Not sanitized; ``Chem.SanitizeMol`` succeeds for ``graph_source`` 0, 1 and 2."""
    from rdkit import Chem

    types = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    types[4] = Chem.BondType.AROMATIC
    mol = Chem.RWMol(_geometry_mol(data.z.numpy(), data.pos.numpy()))
    for atom, charge in zip(mol.GetAtoms(), data.formal_charge.tolist()):
        atom.SetFormalCharge(int(charge))
    for (i, j), code in zip(data.bond_index.t().tolist(), data.bond_type.tolist()):
        if i < j:
            mol.AddBond(i, j, types[code])
            if code == 4:
                mol.GetBondBetweenAtoms(i, j).SetIsAromatic(True)
                mol.GetAtomWithIdx(i).SetIsAromatic(True)
                mol.GetAtomWithIdx(j).SetIsAromatic(True)
    mol = mol.GetMol()
    mol.UpdatePropertyCache(strict=False)
    return mol
