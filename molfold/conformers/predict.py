"""SMILES -> 3D conformers with a trained conformer model (ReBind): corrected, relaxed, ranked.

``predict_conformers`` is the Python API; ``molfold predict``
(:mod:`molfold.conformers.command`) writes SDF. Per molecule:

1. ``num_samples`` starting conformers (at least ``num_conformers``; ``sampler``): RDKit's
   ETKDGv3 embeddings (``etkdg``, default), with the model as the fallback for a molecule ETKDG
   cannot embed within ``time_limit``; or the model (``model``), the first with its canonical
   Laplacian encoding, the others with random eigenvector signs (the symmetry ReBind is trained
   to ignore), which is where their diversity comes from.
   A model that refines ETKDG (``start="etkdg"``) makes every sample, whatever ``sampler``:
   sample k refines the ETKDG + MMFF94 conformer of seed ``seed + k``
   (:func:`molfold.conformers.starts.etkdg_mmff_start`, which never fails).
2. Stereo: every stereocentre and double bond the SMILES specifies is made right in each
   prediction (:func:`molfold.conformers.stereo.correct_stereo`: the mirror image where it
   matches more centres, as the model is trained on distances, which do not tell enantiomers
   apart, then per-element inversions; where none can fix a centre, a spiro or bridgehead atom,
   the conformer restarts from an ETKDG embedding). Stereo the SMILES leaves open is, with
   ``stereo=choose`` (default), taken from the first prediction and imposed on the others, and
   stated in the SDF
   (``molfold_chosen_stereo``); ``stereo=enumerate`` predicts every stereoisomer as its own
   molecule (:mod:`molfold.conformers.ensemble`).
3. ``refine`` relaxes every prediction (:mod:`molfold.conformers.refine`): ``none``, ``mmff``
   (default), ``xtb`` or a molfold potential checkpoint. A conformer whose relaxation did not
   converge is kept as it is and flagged (``molfold_refine_converged`` 0); one whose stereo
   changed during relaxation is dropped while another conformer is right.
4. The conformers are ranked by energy (``rank``: ``auto`` = MMFF94 + the shipped drug-like
   Delta potential where it applies, else the refinement's; ``none``; or a single point with
   ``mmff``, ``xtb``, a potential or ``mmff+`` a Delta potential; :mod:`molfold.conformers.refine`).
   A single point is computed only for the relaxed conformers within ``rank_window`` kcal/mol
   of the lowest refined energy (default 3: for 94 % of the 1,997 molecules of
   ``data/druglike_xtb_frames`` the GFN2-xTB-lowest MMFF94 minimum is that close to the
   MMFF94-lowest) and at least ``num_conformers``, once per energy twin (the same minimum, or
   its mirror image; :func:`~molfold.conformers.ensemble.rescoring_candidates`); the others
   follow, without an energy (``rank_window=inf`` scores all). Then one within
   ``dedup_rmsd`` Angstrom heavy-atom RMSD of a lower-energy one is dropped, and the first
   ``num_conformers`` are kept; the first SDF record of each molecule is its predicted ground
   state.

``time_limit`` bounds the seconds spent on one molecule by ETKDG and, separately, by refinement:
refinement stops once it is reached, the conformers not yet refined are dropped (the first is
always kept) and a warning names the molecule. The model itself takes milliseconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from torch_geometric.data import Batch

from molfold.conformers.ensemble import (
    enumerate_stereoisomers,
    fix_unspecified_stereo,
    rank_conformers,
    rescoring_candidates,
)
from molfold.conformers.refine import Relaxation, energy_name, make_refiner, make_scorer
from molfold.conformers.starts import embed_etkdg, etkdg_mmff_start
from molfold.conformers.stereo import check_stereo, correct_stereo
from molfold.data.graph import POS_START
from molfold.data.molgraph import InvalidMoleculeError, smiles_to_graph
from molfold.errors import ConfigError, DataError, UnknownElementError
from molfold.shipped import shipped_data

DEFAULT_MODEL = "rebind_qm9.pt"
STEREO_MODES = ("choose", "enumerate")
SAMPLERS = ("model", "etkdg")


@dataclass
class MoleculeInput:
    """One input molecule: its SMILES, a name (SDF title) and where it came from."""

    smiles: str
    name: str
    where: str
    stereoisomer: str = ""  # with stereo=enumerate: the stereoisomer's SMILES predicted


def load_conformer_model(ckpt: str | os.PathLike | None = None, device: str = "cpu"):
    """A conformer model from ``ckpt`` (default: the shipped model), in eval mode."""
    from molfold.models.checkpoint import load_model

    path = Path(ckpt) if ckpt else Path(shipped_data(DEFAULT_MODEL))
    model = load_model(path, device)
    info = model.model_info
    if info["kind"] != "conformer":
        raise ConfigError(f"{path} holds a {info['name']!r} {info['kind']}, not a conformer model")
    return model


def _set_positions(mol, positions) -> int:
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    conformer = Chem.Conformer(mol.GetNumAtoms())
    for i, (x, y, z) in enumerate(positions.tolist()):
        conformer.SetAtomPosition(i, Point3D(x, y, z))
    conformer.Set3D(True)
    return mol.AddConformer(conformer, assignId=True)


@dataclass
class Prediction:
    """A predicted molecule (RDKit Mol with hydrogens and its ranked conformers) or the error
    that stopped it; ``warnings`` for what went wrong short of an error."""

    input: MoleculeInput
    mol: object | None = None
    error: str | None = None
    error_type: type[Exception] = DataError
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PredictOptions:
    """How :func:`predict` works (module docstring); ``time_limit`` in seconds per molecule."""

    num_conformers: int = 1
    num_samples: int = 8
    sampler: str = "etkdg"
    refine: str = "mmff"
    rank: str = "auto"
    dedup_rmsd: float = 0.5
    rank_window: float = 3.0
    stereo: str = "choose"
    time_limit: float = 120.0
    batch_size: int = 64
    seed: int = 0

    def check(self) -> None:
        for key in ("num_conformers", "num_samples", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.stereo not in STEREO_MODES:
            raise ConfigError(f"stereo must be one of {STEREO_MODES}, got {self.stereo!r}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if not self.time_limit > 0 or not self.dedup_rmsd >= 0 or not self.rank_window >= 0:
            raise ConfigError(
                f"time_limit must be positive, dedup_rmsd (Angstrom) and rank_window (kcal/mol) "
                f"at least 0; got {self.time_limit}, {self.dedup_rmsd} and {self.rank_window}"
            )

    @property
    def rank_method(self) -> str:
        """The energy conformers are ranked by (``auto``: the refinement's where the shipped
        potential does not apply)."""
        return self.refine if self.rank == "auto" else self.rank

    @property
    def samples(self) -> int:
        """Conformers made per molecule: ``num_samples``, at least ``num_conformers``."""
        return max(self.num_samples, self.num_conformers)


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _stereoisomer_inputs(items: Iterable[MoleculeInput]) -> list[MoleculeInput]:
    """Each input once per stereoisomer (``stereo=enumerate``); bad SMILES are kept as they are,
    for the usual error."""
    expanded = []
    for item in items:
        try:
            isomers = enumerate_stereoisomers(item.smiles, item.where)
        except InvalidMoleculeError:
            expanded.append(item)
            continue
        title = item.name or item.smiles
        for k, isomer in enumerate(isomers, start=1):
            name = f"{title} stereoisomer {k}/{len(isomers)}" if len(isomers) > 1 else item.name
            where = f"{item.where} (stereoisomer {k} of {len(isomers)})"
            expanded.append(MoleculeInput(item.smiles, name, where, stereoisomer=isomer))
    return expanded


def _restart_from_etkdg(mol, conf_id: int, options: PredictOptions) -> list[str]:
    """Replace conformer ``conf_id`` by an ETKDG embedding, which honours the specified stereo,
    for a centre no local move can invert (a spiro or bridgehead atom); what is still wrong."""
    from rdkit import Chem

    probe = Chem.Mol(mol)
    probe.RemoveAllConformers()
    if not embed_etkdg(probe, 1, options.seed, options.time_limit):
        return check_stereo(mol, conf_id).problems
    conformer = mol.GetConformer(conf_id)
    for i, p in enumerate(probe.GetConformer().GetPositions().tolist()):
        conformer.SetAtomPosition(i, p)
    return correct_stereo(mol, conf_id)


def _finish(result: Prediction, options: PredictOptions, refiner, scorer) -> None:
    """Stereo, refinement, ranking and deduplication of one molecule's predictions, in place."""
    mol = result.mol
    deadline = time.monotonic() + options.time_limit
    ids = [c.GetId() for c in mol.GetConformers()]
    chosen = ""
    for k, conf_id in enumerate(ids):
        problems = correct_stereo(mol, conf_id)
        if problems:
            problems = _restart_from_etkdg(mol, conf_id, options)
        if k == 0 and options.stereo == "choose":
            chosen = fix_unspecified_stereo(mol, conf_id)
        if problems:
            result.warnings.append(f"conformer {k}: stereo not corrected: {'; '.join(problems)}")
    mol.SetProp("molfold_chosen_stereo", chosen or "none")
    relaxed: dict[int, Relaxation] = {}
    for k, conf_id in enumerate(ids):
        conformer = mol.GetConformer(conf_id)
        if k > 0 and time.monotonic() > deadline:
            result.warnings.append(
                f"time limit {options.time_limit:g} s reached: {len(ids) - k} of {len(ids)} "
                "conformers dropped before refinement"
            )
            for late in ids[k:]:
                mol.RemoveConformer(late)
            break
        if refiner is not None:
            relaxed[conf_id] = refiner(mol, conf_id, deadline)
            conformer.SetBoolProp("refine_converged", relaxed[conf_id].converged)
    if refiner is not None:  # a relaxation may invert a centre: correct it, relax once more
        wrong = []
        for conformer in mol.GetConformers():
            conf_id = conformer.GetId()
            if not check_stereo(mol, conf_id).problems:
                continue
            if correct_stereo(mol, conf_id):
                wrong.append(conf_id)
                continue
            relaxed[conf_id] = refiner(mol, conf_id, deadline)
            conformer.SetBoolProp("refine_converged", relaxed[conf_id].converged)
            if check_stereo(mol, conf_id).problems:
                wrong.append(conf_id)
        if len(wrong) < mol.GetNumConformers():
            for conf_id in wrong:
                mol.RemoveConformer(conf_id)
        elif wrong:
            result.warnings.append("refinement changed the stereo of every conformer")
    method = options.rank_method
    remaining = [c.GetId() for c in mol.GetConformers()]
    energies = {}
    if options.rank_method == options.refine:
        energies = {c: relaxed[c].energy for c in remaining if c in relaxed}
    if scorer is not None:
        candidates, twins = rescoring_candidates(
            remaining, relaxed, options.rank_window, options.num_conformers
        )
        scored = scorer(mol, candidates)
        if scored is not None:  # None: outside the shipped potential's domain (rank=auto)
            energies = dict(zip(candidates, scored))
            energies.update({twin: energies[first] for twin, first in twins.items()})
            method = options.rank
    mol.SetProp("molfold_energy_method", "none" if method == "none" else energy_name(method))
    rank_conformers(mol, energies, options.dedup_rmsd, limit=options.num_conformers)


def predict(
    inputs: Iterable[MoleculeInput],
    model=None,
    options: PredictOptions = PredictOptions(),
    progress: bool = True,
) -> list[Prediction]:
    """Conformers for every input; an invalid SMILES (or a failed refinement) gives a
    :class:`Prediction` with ``error`` set instead of stopping the others."""

    from molfold.nn.lennard_jones import LJ_PARAMETERS

    options.check()
    model = model if model is not None else load_conformer_model()
    if options.stereo == "enumerate":
        inputs = _stereoisomer_inputs(inputs)
    results, valid = [], []
    for item in inputs:
        result = Prediction(item)
        try:
            graph, mol = smiles_to_graph(item.stereoisomer or item.smiles, item.name, item.where)
            missing = sorted(set(graph.z.tolist()) - set(LJ_PARAMETERS))
            if missing and getattr(model, "rewiring", False):
                raise UnknownElementError(
                    f"{item.where}: elements {missing} have no Lennard-Jones parameters for "
                    "ReBind's rewiring"
                )
            result.mol = mol
            valid.append((result, graph))
        except (InvalidMoleculeError, UnknownElementError) as error:
            result.error, result.error_type = str(error), type(error)
        results.append(result)
    predict_molecules(valid, model, options, progress)
    return results


def predict_molecules(
    molecules: list[tuple[Prediction, object]],
    model,
    options: PredictOptions = PredictOptions(),
    progress: bool = True,
) -> None:
    """Fill each ``(prediction, graph)`` pair's ``prediction.mol`` (an RDKit molecule with
    hydrogens, in the atom order of ``graph``, the model's input graph, and without conformers)
    with its ranked conformers, or set its ``error``."""
    from tqdm import tqdm

    options.check()
    refiner = make_refiner(options.refine)
    rank = options.rank_method
    if options.rank == "auto":
        scorer = make_scorer("auto")
    else:
        scorer = None if rank in ("none", options.refine) else make_scorer(rank)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    valid = molecules
    known = set(model.model_info["statistics"].get("elements", []))
    for result, graph in valid:
        unseen = sorted(set(graph.z.tolist()) - known) if known else []
        if unseen:
            result.warnings.append(
                f"elements {unseen} never appeared in the model's training data; expect a poor "
                "structure"
            )
    for_model = valid
    refines_etkdg = getattr(model, "start", "model") == "etkdg"
    if options.sampler == "etkdg" and not refines_etkdg:
        for_model = []
        for result, graph in tqdm(valid, desc="ETKDG", unit="mol", disable=not progress):
            if not embed_etkdg(result.mol, options.samples, options.seed, options.time_limit):
                result.warnings.append(
                    f"ETKDG could not embed the molecule within {options.time_limit:g} s: "
                    "conformers from the model instead"
                )
                for_model.append((result, graph))
    generator = torch.Generator().manual_seed(options.seed)
    total = len(for_model) * options.samples
    bar = tqdm(total=total, desc="predicting", unit="conf", disable=not progress or not total)
    for chunk in _batches(for_model, options.batch_size):
        batch = Batch.from_data_list([graph for _, graph in chunk]).to(device)
        for k in range(options.samples):
            if refines_etkdg:  # sample k refines the ETKDG + MMFF conformer of seed + k
                for result, graph in chunk:
                    start = etkdg_mmff_start(result.mol, options.seed + k, options.time_limit)
                    graph[POS_START] = start[0].to(dtype)
                batch = Batch.from_data_list([graph for _, graph in chunk]).to(device)
            with torch.no_grad():
                out = model(batch, generator=generator if k > 0 else None)
            pos = out["pos"].double().cpu()
            for m, (result, _) in enumerate(chunk):
                _set_positions(result.mol, pos[batch.batch.cpu() == m])
            bar.update(len(chunk))
    bar.close()

    what = f"stereo, refine={options.refine}, rank={options.rank}"
    for result, _ in tqdm(valid, desc=what, unit="mol", disable=not progress):
        try:
            _finish(result, options, refiner, scorer)
        except Exception as error:  # one molecule's failed relaxation must not stop the rest
            result.error = f"{result.input.where}: {what} failed: {error}"


def predict_conformers(
    smiles: str | Iterable[str],
    ckpt: str | os.PathLike | None = None,
    progress: bool = False,
    **options,
):
    """RDKit Mols (explicit hydrogens, up to ``num_conformers`` conformers each ranked by energy,
    Angstrom) for one or several SMILES, predicted by the shipped ReBind model or the conformer
    checkpoint ``ckpt``; ``options`` are the fields of :class:`PredictOptions`.

    Raises :class:`~molfold.data.molgraph.InvalidMoleculeError` for an invalid SMILES; use
    :func:`predict` to keep going past bad inputs.
    """
    single = isinstance(smiles, str)
    if not single and not isinstance(smiles, Iterable):
        raise ConfigError(f"smiles must be a SMILES string or a list of them, got {smiles!r}")
    smiles = [smiles] if single else list(smiles)
    bad = [s for s in smiles if not isinstance(s, str)]
    if bad:
        raise ConfigError(f"smiles must be a SMILES string or a list of them; found {bad[0]!r}")
    unknown = sorted(set(options) - {f.name for f in fields(PredictOptions)})
    if unknown:
        raise ConfigError(f"unknown predict options {unknown}")
    items = [MoleculeInput(s, "", f"SMILES {k}") for k, s in enumerate(smiles)]
    model = load_conformer_model(ckpt)
    results = predict(items, model, PredictOptions(**options), progress)
    for result in results:
        if result.error:
            raise result.error_type(result.error)
    mols = [r.mol for r in results]
    return mols[0] if single else mols
