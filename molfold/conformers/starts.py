"""Starting conformers from RDKit: ETKDGv3 embeddings, and ETKDGv3 + MMFF94 minima for a model
that refines them.

:func:`embed_etkdg` is how ``molfold predict`` samples conformers. :class:`EtkdgMmffStart` is
the data transform of a refining conformer model (``model.start=etkdg``, the WGFormer recipe:
Wang et al., ICML 2025, refine an ETKDG + MMFF conformer rather than predict from the graph
alone): it attaches the MMFF94 minimum of one seeded ETKDGv3 embedding of each molecule, which
is what ``molfold predict`` gives such a model at inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch_geometric.data import Data

from molfold.conformers.refine import relax_mmff
from molfold.data.graph import POS_START
from molfold.data.molgraph import mol_from_fields
from molfold.errors import DataError


def embed_etkdg(mol, count: int, seed: int, time_limit: float) -> bool:
    """``count`` ETKDGv3 conformers added to ``mol`` (``randomSeed`` = seed + 1: with 0 RDKit
    seeds every conformer alike), within ``time_limit`` seconds; False if none embedded."""
    from rdkit import rdBase
    from rdkit.Chem import AllChem

    params = AllChem.ETKDGv3()
    params.randomSeed = seed + 1
    params.timeout = max(1, round(time_limit))
    with rdBase.BlockLogs():
        ids = AllChem.EmbedMultipleConfs(mol, count, params)
    return any(i >= 0 for i in ids)


def etkdg_mmff_coordinates(mol, seed: int, time_limit: float = 30.0) -> torch.Tensor | None:
    """The MMFF94 minimum (or, without MMFF94 parameters, the embedding) of one ETKDGv3
    conformer of ``mol`` (hydrogens as explicit atoms), [N, 3] float64 Angstrom in ``mol``'s atom
    order; None where ETKDG cannot embed it."""
    from rdkit import Chem

    probe = Chem.Mol(mol)
    probe.RemoveAllConformers()
    if not embed_etkdg(probe, 1, seed, time_limit):
        return None
    relax_mmff(probe, probe.GetConformer().GetId())
    return torch.from_numpy(probe.GetConformer().GetPositions())


@dataclass(frozen=True)
class EtkdgMmffStart:
    """Attach ``pos_start`` [N, 3] (:data:`POS_START`, dtype of ``pos``): the ETKDGv3 + MMFF94
    conformer of :func:`etkdg_mmff_coordinates` with ``seed``, from the molecule's fields."""

    seed: int = 0
    cache_version: int = 1

    def __call__(self, data: Data, where: str = "structure") -> Data:
        start = etkdg_mmff_coordinates(mol_from_fields(data), self.seed)
        if start is None:
            raise DataError(
                f"{where}: ETKDG could not embed the molecule, so a model that refines an "
                "ETKDG + MMFF conformer (model.start=etkdg) has nothing to start from; drop it "
                "from the data or train a model with model.start=model"
            )
        data[POS_START] = start.to(data.pos.dtype if "pos" in data else torch.get_default_dtype())
        return data
