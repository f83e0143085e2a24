"""The methods ``scripts/bench_conformers.py`` compares: RDKit baselines and molfold predict modes.

Every method gets the same input per molecule, :func:`input_mol`: the reference's atoms in their
order with hydrogens, its bonds and charges, and all of its stereochemistry (tetrahedral centres
and double bonds, perceived from the reference geometry): what a fully specified SMILES gives.

``etkdg``          RDKit ETKDGv3, one embedding, ``randomSeed = --seed``, fresh parameters per
                   molecule
``etkdg+mmff``     the same embedding relaxed with MMFF94 (at most 2,000 steps)
``etkdg10+mmff``   ten ETKDGv3 embeddings (``randomSeed = --seed + 1``: 0 would seed all ten
                   alike), each relaxed with MMFF94, the one lowest in MMFF94 energy: the
                   strongest cheap baseline
``rebind-raw``     the conformer model's canonical prediction as is, no stereo correction: the
                   papers' numbers are on this row (compare them with its C-RMSD min column)
``predict``        ``molfold predict`` with its defaults (eight ETKDG + MMFF conformers ranked
                   by MMFF94 + the shipped drug-like Delta potential, ``rank=auto``)
``predict:mmff-rank``  the same conformers ranked by their MMFF94 energies (``rank=mmff``): what
                   the potential's ranking adds
``predict:model``  ``sampler=model num_samples=1``: the conformer model (ReBind), stereo
                   corrected, MMFF-refined
``predict:none``   ``sampler=model num_samples=1 refine=none``: the model's output, stereo
                   corrected
``predict:etkdg10-xtb-rank``  ``num_samples=10 rank=xtb``: ten ETKDG + MMFF conformers ranked by
                   GFN2-xTB single points (of the distinct MMFF94 minima within ``rank_window``,
                   3 kcal/mol, of the lowest)
``predict:xtb``    ``sampler=model num_samples=1 refine=xtb``, only with ``--xtb``
``predict:potential-rank``, ``predict:10-potential-rank``  six or ten ETKDG + MMFF conformers
                   ranked by MMFF94 + the Delta potential ``--potential`` (``rank=mmff+PATH``),
                   only with it: to try a potential before it ships

The ``predict`` modes run :func:`molfold.conformers.predict.predict_molecules`, the code behind
``molfold predict``, on the input molecule, and score its first (lowest-energy) conformer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

MODEL = {"sampler": "model", "num_samples": 1}
PREDICT_MODES = {
    "predict": {},
    "predict:mmff-rank": {"rank": "mmff"},
    "predict:model": MODEL,
    "predict:none": {**MODEL, "refine": "none"},
    "predict:etkdg10-xtb-rank": {"num_samples": 10, "rank": "xtb"},
    "predict:xtb": {**MODEL, "refine": "xtb"},
}


@dataclass
class MethodRun:
    """One method on one dataset: predicted positions [N, 3] (Angstrom) by molecule index,
    failures as (name, reason), and the seconds spent predicting."""

    positions: dict[int, np.ndarray] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def input_mol(graph):
    """The RDKit molecule every method starts from (module docstring), without conformers."""
    from rdkit import Chem

    from molfold.data.molgraph import graph_to_mol

    mol = graph_to_mol(graph)
    Chem.AssignStereochemistryFrom3D(mol)
    mol.RemoveAllConformers()
    return mol


def run_etkdg(mols: list, names: list[str], seed: int) -> dict[str, MethodRun]:
    """``etkdg``, ``etkdg+mmff`` and ``etkdg10+mmff`` (module docstring)."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import AllChem
    from tqdm import tqdm

    from molfold.conformers.refine import relax_mmff

    runs = {name: MethodRun() for name in ("etkdg", "etkdg+mmff", "etkdg10+mmff")}
    for i, template in enumerate(tqdm(mols, desc="etkdg (+mmff, etkdg10+mmff)", unit="mol")):
        with rdBase.BlockLogs():
            mol = Chem.Mol(template)
            start = time.perf_counter()
            params = AllChem.ETKDGv3()  # fresh per molecule: results independent of the order
            params.randomSeed = seed
            conf_id = AllChem.EmbedMolecule(mol, params)
            runs["etkdg"].seconds += time.perf_counter() - start
            if conf_id < 0:
                for name in ("etkdg", "etkdg+mmff"):
                    runs[name].failures.append((names[i], "ETKDG could not embed the molecule"))
            else:
                runs["etkdg"].positions[i] = mol.GetConformer(conf_id).GetPositions()
                relaxed = relax_mmff(mol, conf_id)
                if relaxed.energy is None:
                    runs["etkdg+mmff"].failures.append((names[i], "MMFF94 has no parameters"))
                else:
                    runs["etkdg+mmff"].positions[i] = mol.GetConformer(conf_id).GetPositions()
            runs["etkdg+mmff"].seconds += time.perf_counter() - start

            many = Chem.Mol(template)
            start = time.perf_counter()
            params = AllChem.ETKDGv3()
            params.randomSeed = seed + 1
            ids = [c for c in AllChem.EmbedMultipleConfs(many, 10, params) if c >= 0]
            ok = bool(ids) and AllChem.MMFFHasAllMoleculeParams(many)
            energies = AllChem.MMFFOptimizeMoleculeConfs(many, maxIters=2000) if ok else []
            runs["etkdg10+mmff"].seconds += time.perf_counter() - start
        if not ok:
            runs["etkdg10+mmff"].failures.append((names[i], "ETKDG or MMFF94 failed"))
        else:
            lowest = ids[int(np.argmin([energy for _, energy in energies]))]
            runs["etkdg10+mmff"].positions[i] = many.GetConformer(lowest).GetPositions()
    return runs


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_rebind_raw(graphs: list, model, batch_size: int) -> MethodRun:
    """The model's canonical prediction for every graph, as it comes out."""
    from torch_geometric.data import Batch
    from tqdm import tqdm

    device = next(model.parameters()).device
    chunks = [graphs[k : k + batch_size] for k in range(0, len(graphs), batch_size)]
    with torch.no_grad():  # warm-up, not timed
        model(Batch.from_data_list(chunks[0][:2]).to(device))
    run = MethodRun()
    offset = 0
    for chunk in tqdm(chunks, desc="rebind-raw", unit="batch"):
        _synchronize(device)
        start = time.perf_counter()
        batch = Batch.from_data_list(chunk).to(device)
        with torch.no_grad():
            pos = model(batch)["pos"].double().cpu().numpy()
        run.seconds += time.perf_counter() - start
        index = batch.batch.cpu().numpy()
        for m in range(len(chunk)):
            run.positions[offset + m] = pos[index == m]
        offset += len(chunk)
    return run


def run_predict(mols: list, graphs: list, names: list[str], model, mode: dict, batch_size: int):
    """One ``molfold predict`` mode (:data:`PREDICT_MODES`) on every molecule: its rank-1
    conformer."""
    from rdkit import Chem

    from molfold.conformers.predict import (
        MoleculeInput,
        Prediction,
        PredictOptions,
        predict_molecules,
    )

    options = PredictOptions(batch_size=batch_size, **mode)
    molecules = [
        (Prediction(MoleculeInput(Chem.MolToSmiles(m), n, n), mol=Chem.Mol(m)), g)
        for m, g, n in zip(mols, graphs, names)
    ]
    start = time.perf_counter()
    predict_molecules(molecules, model, options, progress=True)
    run = MethodRun(seconds=time.perf_counter() - start)
    for i, (result, _) in enumerate(molecules):
        if result.error or result.mol.GetNumConformers() == 0:
            run.failures.append((names[i], result.error or "no conformer"))
        else:
            run.positions[i] = result.mol.GetConformer(0).GetPositions()
    return run
