"""``molfold predict``: SMILES (one, or a file of them) in, SDF out.

:func:`predict_to_sdf` reads the command's keys (``configs/predict.yaml``), runs
:func:`molfold.conformers.predict.predict` and writes every conformer as one SDF record
(:func:`write_sdf`, atomically), reporting each failed input and each warning on stderr by where
it came from (``FILE:LINE`` or ``smiles=``).
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from molfold.conformers.predict import (
    MoleculeInput,
    Prediction,
    PredictOptions,
    load_conformer_model,
    predict,
)
from molfold.errors import ConfigError, DataError, MissingFileError
from molfold.io import atomic_write


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


CONFORMER_TAGS = (
    "molfold_rank",
    "molfold_energy_eV",
    "molfold_relative_energy_eV",
    "molfold_relative_energy_kcal_mol",
)


def write_sdf(results: list[Prediction], path: str | os.PathLike, model_name: str, options):
    """Write every successful prediction to ``path`` atomically: one record per conformer in rank
    order, titled with the input name (or its SMILES), with the input SMILES, the stereoisomer
    predicted and the stereo chosen, model, refinement, energy (method, absolute and relative,
    eV and kcal/mol) and whether the refinement converged as fields."""
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
            mol.SetProp("molfold_smiles", Chem.MolToSmiles(Chem.RemoveHs(mol)))
            mol.SetProp("molfold_model", model_name)
            mol.SetProp("molfold_refine", options.refine)
            for k, conformer in enumerate(mol.GetConformers()):
                mol.SetIntProp("conformer_index", k)
                for tag in (*CONFORMER_TAGS, "molfold_refine_converged"):
                    mol.ClearProp(tag)
                for tag in CONFORMER_TAGS:
                    if conformer.HasProp(tag):
                        mol.SetProp(tag, format(conformer.GetProp(tag)))
                if conformer.HasProp("refine_converged"):
                    converged = conformer.GetBoolProp("refine_converged")
                    mol.SetIntProp("molfold_refine_converged", int(converged))
                writer.write(mol, confId=conformer.GetId())
                written += 1
    atomic_write(path, text.getvalue())
    return written


@dataclass(frozen=True)
class PredictConfig(PredictOptions):
    """The keys of ``molfold predict`` (``configs/predict.yaml``): where from and to, and the
    fields of :class:`PredictOptions`."""

    output: str = field(kw_only=True)
    smiles: str | None = None
    name: str | None = None
    input: str | None = None
    ckpt: str | None = None
    device: str = "cpu"


def predict_to_sdf(values: dict) -> int:
    """``molfold predict``: the number of failed inputs (each reported on stderr)."""
    from molfold.config import parse

    config = parse(PredictConfig, values, "")
    if bool(config.smiles) == bool(config.input):
        raise ConfigError("give exactly one of smiles=SMILES or input=FILE (one SMILES per line)")
    config.check()
    if config.smiles:
        items = [MoleculeInput(config.smiles, config.name or "", "smiles=")]
    else:
        items = read_smiles_file(config.input)
    model = load_conformer_model(config.ckpt, config.device)
    results = predict(items, model, config, progress=True)
    name = f"{model.model_info['name']} ({model.checkpoint_info['path']})"
    written = write_sdf(results, config.output, name, config)
    failed = [r for r in results if r.error]
    for result in failed:
        print(f"molfold predict: error: {result.error}", file=sys.stderr)
    for result in results:
        for warning in result.warnings:
            print(f"molfold predict: warning: {result.input.where}: {warning}", file=sys.stderr)
        if result.mol is not None and not result.error:
            stuck = [
                k
                for k, c in enumerate(result.mol.GetConformers())
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
