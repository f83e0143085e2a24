"""Starting conformers from RDKit: ETKDGv3 embeddings, and ETKDGv3 + MMFF94 minima for a model
that refines them.

:func:`embed_etkdg` is how ``molfold predict`` samples conformers. :class:`EtkdgMmffStart` is
the data transform of a refining conformer model (``model.start=etkdg``, the WGFormer recipe:
Wang et al., ICML 2025, refine an ETKDG + MMFF conformer rather than predict from the graph
alone): it attaches the MMFF94 minimum of one seeded ETKDGv3 embedding of each molecule, which
is what ``molfold predict`` gives such a model at inference.

ETKDG with the stereo the graph specifies fails on about 9 % of QM9 (strained polycycles whose
centres its chirality checks reject; 26 of 300 sampled). WGFormer's paper does not say what it
does with them; molfold keeps every molecule with a chain of fallbacks, each tried only when the
one before fails, and records which one made the start (``start_method``, an index into
:data:`START_METHODS`; about 6 of the 26 need the second, 18 the third, 2 the fourth):

0. ``etkdg``: ETKDGv3 from its usual (eigenvector) starting coordinates;
1. ``etkdg_random_coords``: ETKDGv3 from random starting coordinates;
2. ``etkdg_free_stereo``: ETKDGv3 from random coordinates without enforcing the chiral centres,
   then the stereo put right (:func:`molfold.conformers.stereo.correct_stereo`); a strained
   bridgehead may stay wrong after MMFF;
3. ``layout_2d``: RDKit's 2D depiction with small seeded out-of-plane offsets (0.3 A), relaxed
   by MMFF94 and stereo-corrected the same way; it never fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Data

from molfold.conformers.refine import relax_mmff
from molfold.conformers.stereo import correct_stereo
from molfold.data.graph import POS_START, START_METHOD
from molfold.data.molgraph import mol_from_fields

ETKDG_ATTEMPTS = {
    "etkdg": {},
    "etkdg_random_coords": {"random_coords": True},
    "etkdg_free_stereo": {"random_coords": True, "enforce_chirality": False},
}
"""The ETKDGv3 options (of :func:`embed_etkdg`) of each attempt, in the order tried."""

START_METHODS = (*ETKDG_ATTEMPTS, "layout_2d")
"""How a start conformer was made, in the order tried (``start_method`` indexes it)."""

OUT_OF_PLANE = 0.3
"""Standard deviation (Angstrom) of the z offsets that lift a 2D layout out of its plane."""


def embed_etkdg(
    mol,
    count: int,
    seed: int,
    time_limit: float,
    random_coords: bool = False,
    enforce_chirality: bool = True,
) -> bool:
    """``count`` ETKDGv3 conformers added to ``mol`` (``randomSeed`` = seed + 1: with 0 RDKit
    seeds every conformer alike), within ``time_limit`` seconds; False if none embedded.
    ``random_coords`` and ``enforce_chirality`` set RDKit's ``useRandomCoords`` and
    ``enforceChirality``."""
    from rdkit import rdBase
    from rdkit.Chem import AllChem

    params = AllChem.ETKDGv3()
    params.randomSeed = seed + 1
    params.timeout = max(1, round(time_limit))
    params.useRandomCoords = random_coords
    params.enforceChirality = enforce_chirality
    with rdBase.BlockLogs():
        ids = AllChem.EmbedMultipleConfs(mol, count, params)
    return any(i >= 0 for i in ids)


def _layout_2d(mol, seed: int) -> None:
    """Give ``mol`` one conformer: its 2D depiction with seeded N(0, OUT_OF_PLANE) z offsets."""
    from rdkit.Chem import AllChem

    AllChem.Compute2DCoords(mol)
    conformer = mol.GetConformer()
    conformer.Set3D(True)  # else RDKit perceives its stereo from the 2D drawing
    positions = conformer.GetPositions()
    positions[:, 2] = np.random.default_rng(seed).normal(0.0, OUT_OF_PLANE, len(positions))
    for i, position in enumerate(positions.tolist()):
        conformer.SetAtomPosition(i, position)


def etkdg_mmff_start(mol, seed: int, time_limit: float = 30.0) -> tuple[torch.Tensor, int]:
    """The MMFF94 minimum (without MMFF94 parameters, the unrelaxed conformer) of one ETKDGv3
    conformer of ``mol`` (hydrogens as explicit atoms), made by the first method of
    :data:`START_METHODS` that works: ([N, 3] float64 Angstrom in ``mol``'s atom order, the
    method's index)."""
    from rdkit import Chem

    probe = Chem.Mol(mol)
    probe.RemoveAllConformers()
    attempts = ETKDG_ATTEMPTS.items()
    embedded = (name for name, kw in attempts if embed_etkdg(probe, 1, seed, time_limit, **kw))
    method = next(embedded, "layout_2d")
    if method == "layout_2d":
        _layout_2d(probe, seed)
    conf_id = probe.GetConformer().GetId()
    relax_mmff(probe, conf_id)
    options = ETKDG_ATTEMPTS.get(method)  # None: the 2D layout, whose stereo is arbitrary too
    if options is None or not options.get("enforce_chirality", True):
        correct_stereo(probe, conf_id)
        relax_mmff(probe, conf_id)  # a corrected centre's bonds are strained: relax them again
    return torch.from_numpy(probe.GetConformer().GetPositions()), START_METHODS.index(method)


@dataclass(frozen=True)
class EtkdgMmffStart:
    """Attach ``pos_start`` [N, 3] (:data:`POS_START`, dtype of ``pos``), the conformer of
    :func:`etkdg_mmff_start` with ``seed`` from the molecule's fields, and ``start_method`` [1]
    (:data:`START_METHOD`, int64 index into :data:`START_METHODS`)."""

    seed: int = 0
    cache_version: int = 2

    def __call__(self, data: Data, where: str = "structure") -> Data:
        start, method = etkdg_mmff_start(mol_from_fields(data), self.seed)
        data[POS_START] = start.to(data.pos.dtype if "pos" in data else torch.get_default_dtype())
        data[START_METHOD] = torch.tensor([method])
        return data
