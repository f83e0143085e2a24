"""SMILES -> 3D conformers with a trained conformer model (ReBind), optionally relaxed.

Each prediction is replaced by its mirror image when that matches more of the stereocentres the
SMILES specifies (:mod:`molfold.conformers.stereo`): the model is trained on distances, which do
not tell enantiomers apart.

``predict_conformers`` is the Python API; ``molfold predict`` (see :func:`predict_to_sdf`) writes
SDF. Each molecule gets ``num_conformers`` predictions: the first with the model's canonical
Laplacian encoding, the others with random eigenvector signs (the symmetry ReBind is trained to
ignore), which is where their diversity comes from. ``refine`` relaxes every prediction:

* ``none``: the model's coordinates;
* ``mmff`` (the default): RDKit's MMFF94 (``MMFFOptimizeMolecule``, up to 2,000 steps; a
  molecule MMFF94 has no parameters for is kept as predicted and flagged as not converged);
* ``xtb``: GFN2-xTB through tblite's ASE calculator and ASE's BFGS (fmax 0.05 eV/A, 500 steps);
* a path to a molfold potential checkpoint: that potential through
  :class:`~molfold.calculator.MolfoldCalculator` and BFGS (same limits).

Each refined conformer records whether the relaxation converged (conformer property
``refine_converged``; SDF field ``molfold_refine_converged``); one that did not is kept as it is
and reported.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch_geometric.data import Batch

from molfold.conformers.stereo import match_stereocentres
from molfold.data.molgraph import InvalidMoleculeError, smiles_to_graph
from molfold.errors import ConfigError, DataError, MissingFileError, UnknownElementError
from molfold.io import atomic_write
from molfold.shipped import shipped_data

DEFAULT_MODEL = "rebind_qm9.pt"
REFINE_STEPS = 500
REFINE_FMAX = 0.05  # eV/Angstrom


@dataclass
class MoleculeInput:
    """One input molecule: its SMILES, a name (SDF title) and where it came from."""

    smiles: str
    name: str
    where: str


def read_smiles_file(path: str | os.PathLike) -> list[MoleculeInput]:
    """``SMILES [name]`` per line; blank lines and lines starting with ``#`` are skipped."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"input file {path} does not exist")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a text file of SMILES ({error.reason})") from None
    molecules = []
    for number, line in enumerate(lines, start=1):
        fields = line.split(maxsplit=1)
        if not fields or fields[0].startswith("#"):
            continue
        name = fields[1].strip() if len(fields) > 1 else ""
        molecules.append(MoleculeInput(fields[0], name, f"{path}:{number}"))
    if not molecules:
        raise DataError(f"{path}: no SMILES in the file")
    return molecules


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


def _relax_with_ase(mol, conf_id: int, calculator) -> bool:
    from ase import Atoms
    from ase.optimize import BFGS

    conformer = mol.GetConformer(conf_id)
    atoms = Atoms(
        numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=conformer.GetPositions()
    )
    atoms.calc = calculator
    converged = BFGS(atoms, logfile=None).run(fmax=REFINE_FMAX, steps=REFINE_STEPS)
    for i, p in enumerate(atoms.positions):
        conformer.SetAtomPosition(i, p.tolist())
    return bool(converged)


def make_refiner(refine: str):
    """``refine(mol, conf_id) -> converged``, relaxing one conformer in place (module docstring);
    None for ``refine=none``."""
    if refine in ("none", "", None):
        return None
    if refine == "mmff":
        from rdkit.Chem import AllChem

        def mmff(mol, conf_id: int) -> bool:
            if not AllChem.MMFFHasAllMoleculeParams(mol):
                return False  # kept unrefined, flagged and reported like an unconverged run
            return AllChem.MMFFOptimizeMolecule(mol, confId=conf_id, maxIters=2000) == 0

        return mmff
    if refine == "xtb":
        try:
            from tblite.ase import TBLite
        except ImportError:
            raise ConfigError("refine=xtb needs tblite: pip install 'molfold[xtb]'") from None

        def xtb(mol, conf_id: int) -> bool:
            charge = sum(a.GetFormalCharge() for a in mol.GetAtoms())
            return _relax_with_ase(
                mol, conf_id, TBLite(method="GFN2-xTB", charge=charge, verbosity=0)
            )

        return xtb
    if Path(refine).is_file():
        from molfold.calculator import MolfoldCalculator
        from molfold.models.checkpoint import load_model

        potential = load_model(refine)
        if potential.model_info["kind"] != "potential":
            kind = potential.model_info["kind"]
            raise ConfigError(f"refine={refine} is a {kind} model, not a potential")

        def learned(mol, conf_id: int) -> bool:
            return _relax_with_ase(mol, conf_id, MolfoldCalculator(potential))

        return learned
    raise ConfigError(
        f"refine must be none, mmff, xtb or a path to a molfold potential checkpoint; "
        f"got {refine!r} (no such file)"
    )


@dataclass
class Prediction:
    """A predicted molecule (RDKit Mol with hydrogens and one conformer per prediction) or the
    error that stopped it."""

    input: MoleculeInput
    mol: object | None = None
    error: str | None = None
    error_type: type[Exception] = DataError


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict(
    inputs: Iterable[MoleculeInput],
    model=None,
    num_conformers: int = 1,
    refine: str = "mmff",
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> list[Prediction]:
    """Conformers for every input; an invalid SMILES (or a failed refinement) gives a
    :class:`Prediction` with ``error`` set instead of stopping the others."""
    from tqdm import tqdm

    if num_conformers < 1:
        raise ConfigError(f"num_conformers must be at least 1, got {num_conformers}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    from molfold.nn.lennard_jones import LJ_PARAMETERS

    model = model if model is not None else load_conformer_model()
    refiner = make_refiner(refine)
    device = next(model.parameters()).device
    results, valid = [], []
    for item in inputs:
        result = Prediction(item)
        try:
            graph, mol = smiles_to_graph(item.smiles, item.name, item.where)
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

    known = set(model.model_info["statistics"].get("elements", []))
    for result, graph in valid:
        unseen = sorted(set(graph.z.tolist()) - known) if known else []
        if unseen:
            print(
                f"molfold predict: warning: {result.input.where}: elements {unseen} never appeared "
                "in the model's training data; expect a poor structure",
                file=sys.stderr,
            )
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(
        total=len(valid) * num_conformers, desc="predicting", unit="conf", disable=not progress
    )
    for chunk in _batches(valid, batch_size):
        batch = Batch.from_data_list([graph for _, graph in chunk]).to(device)
        for k in range(num_conformers):
            with torch.no_grad():
                out = model(batch, generator=generator if k > 0 else None)
            pos = out["pos"].double().cpu()
            for m, (result, _) in enumerate(chunk):
                conf_id = _set_positions(result.mol, pos[batch.batch.cpu() == m])
                match_stereocentres(result.mol, conf_id)
            bar.update(len(chunk))
    bar.close()

    if refiner is not None:
        for result, _ in tqdm(valid, desc=f"refining ({refine})", unit="mol", disable=not progress):
            try:
                for conformer in result.mol.GetConformers():
                    converged = refiner(result.mol, conformer.GetId())
                    conformer.SetBoolProp("refine_converged", bool(converged))
            except Exception as error:  # one molecule's failed relaxation must not stop the rest
                result.error = f"{result.input.where}: refine={refine} failed: {error}"
    return results


def predict_conformers(
    smiles: str | Iterable[str],
    ckpt: str | os.PathLike | None = None,
    num_conformers: int = 1,
    refine: str = "mmff",
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
):
    """RDKit Mols (explicit hydrogens, ``num_conformers`` conformers each, Angstrom) for one or
    several SMILES, predicted by the shipped ReBind model or the conformer checkpoint ``ckpt``.

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
    items = [MoleculeInput(s, "", f"SMILES {k}") for k, s in enumerate(smiles)]
    model = load_conformer_model(ckpt)
    results = predict(items, model, num_conformers, refine, batch_size, seed, progress)
    for result in results:
        if result.error:
            raise result.error_type(result.error)
    mols = [r.mol for r in results]
    return mols[0] if single else mols


def write_sdf(results: list[Prediction], path: str | os.PathLike, model_name: str, refine: str):
    """Write every successful prediction to ``path`` atomically: one record per conformer, titled
    with the input name (or its SMILES), with the input SMILES, model and refinement as fields."""
    from rdkit import Chem

    text = io.StringIO()
    written = 0
    with Chem.SDWriter(text) as writer:
        for result in results:
            if result.error or result.mol is None:
                continue
            mol = result.mol
            mol.SetProp("_Name", result.input.name or result.input.smiles)
            mol.SetProp("input_smiles", result.input.smiles)
            mol.SetProp("molfold_model", model_name)
            mol.SetProp("molfold_refine", refine)
            for k, conformer in enumerate(mol.GetConformers()):
                mol.SetIntProp("conformer_index", k)
                if conformer.HasProp("refine_converged"):
                    converged = conformer.GetBoolProp("refine_converged")
                    mol.SetIntProp("molfold_refine_converged", int(converged))
                writer.write(mol, confId=conformer.GetId())
                written += 1
    atomic_write(path, text.getvalue())
    return written


@dataclass(frozen=True)
class PredictConfig:
    """The keys of ``molfold predict`` (``configs/predict.yaml``)."""

    output: str
    smiles: str | None = None
    name: str | None = None
    input: str | None = None
    ckpt: str | None = None
    num_conformers: int = 1
    refine: str = "mmff"
    batch_size: int = 64
    seed: int = 0
    device: str = "cpu"


def predict_to_sdf(values: dict) -> int:
    """``molfold predict``: the number of failed inputs (each reported on stderr)."""
    from molfold.config import parse

    config = parse(PredictConfig, values, "")
    if bool(config.smiles) == bool(config.input):
        raise ConfigError("give exactly one of smiles=SMILES or input=FILE (one SMILES per line)")
    if config.smiles:
        items = [MoleculeInput(config.smiles, config.name or "", "smiles=")]
    else:
        items = read_smiles_file(config.input)
    model = load_conformer_model(config.ckpt, config.device)
    results = predict(
        items,
        model,
        config.num_conformers,
        config.refine,
        config.batch_size,
        config.seed,
        progress=True,
    )
    name = f"{model.model_info['name']} ({model.checkpoint_info['path']})"
    written = write_sdf(results, config.output, name, config.refine)
    failed = [r for r in results if r.error]
    for result in failed:
        print(f"molfold predict: error: {result.error}", file=sys.stderr)
    for result in results:
        if result.mol is not None and not result.error:
            stuck = [
                c.GetId()
                for c in result.mol.GetConformers()
                if c.HasProp("refine_converged") and not c.GetBoolProp("refine_converged")
            ]
            if stuck:
                print(
                    f"molfold predict: warning: {result.input.where}: refinement of conformers "
                    f"{stuck} did not converge (written as is, molfold_refine_converged=0)",
                    file=sys.stderr,
                )
    print(
        f"molfold predict: wrote {written} conformers of {len(results) - len(failed)} molecules "
        f"to {config.output}" + (f"; {len(failed)} failed" if failed else "")
    )
    return len(failed)
