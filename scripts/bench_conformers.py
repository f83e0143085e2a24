"""Benchmark: ground-state conformer prediction, RDKit ETKDGv3 against molfold predict.

Datasets (``--datasets``, all by default):

``qm9``
    A seeded random subset (``--max-molecules``, default 1,000; 0 = all 10,831) of the QM9 test
    split that training uses (``configs/data/qm9.yaml`` sizes through
    :func:`molfold.data.splits.random_split`, split_seed 0);
    target: the DFT ground state.
``geom``
    The lowest-energy conformer of every molecule of a GEOM folder (``--geom``, default the
    shipped ``data/geom_xtb``, 24 NCI molecules); target: the GFN2-xTB ground state.
``druglike``
    The same for ``--druglike`` (default the shipped ``data/druglike_xtb``: 69 fingerprint-diverse
    molecules of MOSES's scaffold test split, 17-26 heavy atoms, all stereo specified; see
    ``data/README.md``): the held-out drug-like test set.

Methods: ``scripts/conformer_methods.py`` (RDKit baselines including the lowest-MMFF-energy
conformer of ten ETKDG + MMFF embeddings, the raw model, and ``molfold predict`` modes). Every
method is given the reference's full stereochemistry, as a fully specified SMILES gives it.

Metrics (:mod:`molfold.conformers.metrics`, the ReBind/GTMGC definitions, Angstrom): D-MAE and
D-RMSE pooled over every entry of the full distance matrices (hydrogens included), C-RMSD on
heavy atoms after symmetry-aware alignment (RDKit ``GetBestRMS``), averaged per molecule, of the
prediction as it is (C-RMSD) and the better of the prediction and its mirror image (C-RMSD min,
``c_rmsd_mirror``): the papers' protocol, since GTMGC's and ReBind's evaluation un-mirrors the
prediction by aligning it to the reference without a determinant check (see
:mod:`molfold.conformers.metrics`). ``C-RMSD*`` (``c_rmsd_achiral_mirror``) takes the mirror
image into account for achiral molecules only (:func:`molfold.conformers.stereo.is_achiral`):
an achiral molecule's conformer and its mirror image are two conformers of one molecule with
equal energies, so which of the two the reference happens to be is a coin toss that no
ranking can win (conformational chirality: a helical chain, a twisted ring), while for a
chiral molecule the mirror image is the other enantiomer, and counted wrong. ``PB``: the share
of molecules whose predicted conformer passes every PoseBusters check of its ``mol``
configuration (sanitisation, bond lengths and angles, clashes, ring and double-bond flatness,
internal energy). ``stereo``: the share whose tetrahedral centres and double bonds, perceived
from the coordinates, are all the ones specified
(:func:`molfold.conformers.stereo.check_stereo`). A molecule a method fails on counts as a
failure and is left out of that method's metrics.
molecules/s is wall clock of the prediction alone (input -> coordinates, refinement and ranking
included; metrics excluded), one process, ``--threads`` torch threads; RDKit runs
single-threaded. The table puts each row next to the published numbers (``PAPER``, from the
ReBind paper's QM9 table and an ETKDG run on 1,000 random QM9 molecules)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_conformers.py
    .venv/bin/python scripts/bench_conformers.py --ckpt runs/x/best.pt --max-molecules 0 --xtb
    .venv/bin/python scripts/bench_conformers.py --datasets geom --geom path/to/rdkit_folder
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from bench_machine import machine_info, text_table  # scripts/ is on sys.path when run as a script
from conformer_methods import (
    PREDICT_MODES,
    MethodRun,
    input_mol,
    run_etkdg,
    run_predict,
    run_rebind_raw,
)

METHODS = ("etkdg", "etkdg+mmff", "etkdg10+mmff", "rebind-raw", *PREDICT_MODES)
POTENTIAL_MODES = ("predict:potential-rank", "predict:10-potential-rank")

PAPER: dict[str, dict[str, dict]] = {
    "qm9": {
        "etkdg": {"d_mae": 0.329, "d_rmse": None, "c_rmsd": 0.485, "molecules_per_s": 30.0},
        "etkdg+mmff": {"d_mae": 0.292, "d_rmse": None, "c_rmsd": 0.410},
        "rebind-raw": {"d_mae": 0.254, "d_rmse": 0.446, "c_rmsd": 0.321},
        "gtmgc": {"d_mae": 0.281, "d_rmse": 0.471, "c_rmsd": 0.414},
    }
}
"""Published QM9 numbers (Angstrom): ReBind and GTMGC on the
10,831-molecule test split as tabulated in the ReBind paper (arXiv 2410.14696); ETKDGv3 with and
without MMFF on 1,000 random QM9 molecules. ``None``: not reported."""

PAPER_SOURCES = {
    "etkdg": "ETKDGv3 on 1,000 random QM9 molecules (stereo assumed from 3D)",
    "etkdg+mmff": "ETKDGv3 + MMFF on 1,000 random QM9 molecules (stereo assumed from 3D)",
    "rebind-raw": "ReBind paper, QM9 test (10,831)",
    "gtmgc": "GTMGC as tabulated in the ReBind paper, QM9 test",
}


# --- data ---------------------------------------------------------------------------------


def qm9_test_graphs(root: str | None, max_molecules: int, seed: int) -> tuple[list, dict]:
    """The seeded random subset of the QM9 test split (all of it for ``max_molecules`` 0)."""
    from molfold.cli import compose
    from molfold.data.datamodule import load_structures
    from molfold.data.splits import random_split
    from molfold.data.transforms import MolecularGraph

    print("loading QM9 conformer graphs (about a minute from the cache) ...", flush=True)
    data = {**compose("eval", ["ckpt=none", "data=qm9"])["data"], "path": root}
    graphs = load_structures(data, [MolecularGraph()])
    sizes = (data["n_train"], data["n_val"], data["n_test"])
    test = random_split(len(graphs), *sizes, data["split_seed"])["test"]
    chosen = np.sort(test)
    if 0 < max_molecules < len(test):
        chosen = np.sort(np.random.default_rng(seed).choice(test, max_molecules, replace=False))
    info = {"n_total": len(graphs), "n_test_split": len(test), "indices": chosen.tolist()}
    return [graphs[i] for i in chosen], info


def geom_graphs(
    path: str | None, max_molecules: int, seed: int, shipped: str = "geom_xtb"
) -> tuple[list | None, dict]:
    """Ground-state GEOM graphs of ``path`` (default the shipped set ``shipped``); None when
    absent."""
    from molfold.data.datamodule import load_structures
    from molfold.data.transforms import MolecularGraph
    from molfold.errors import MissingFileError
    from molfold.shipped import shipped_data

    if path is None:
        try:
            path = shipped_data(shipped)
        except MissingFileError as error:
            return None, {"skipped": f"no shipped GEOM set: {error}"}
    if not Path(path).exists():
        return None, {"skipped": f"GEOM path {path} does not exist"}
    graphs = load_structures({"format": "geom", "path": str(path)}, [MolecularGraph()])
    info = {"path": str(path), "n_total": len(graphs)}
    if 0 < max_molecules < len(graphs):
        chosen = np.sort(
            np.random.default_rng(seed).choice(len(graphs), max_molecules, replace=False)
        )
        graphs = [graphs[i] for i in chosen]
    return graphs, info


# --- metrics ------------------------------------------------------------------------------


def posebusters_passes(mols: list) -> list[bool]:
    """Whether each molecule (one conformer, hydrogens) passes every PoseBusters ``mol`` check;
    a check PoseBusters cannot compute (NaN: its energy-ratio check embeds the molecule with
    ETKDG, which fails on some strained cages) counts as not passed."""
    from posebusters import PoseBusters

    if not mols:
        return []
    table = PoseBusters(config="mol").bust(mols, None, None)
    checks = table.drop(columns=["position"], errors="ignore")
    return checks.eq(True).all(axis=1).tolist()


def evaluate(graphs: list, mols: list, run: MethodRun, posebusters: bool) -> dict:
    """D-MAE, D-RMSE (pooled), C-RMSD (mean and median per molecule), the mean C-RMSD of
    the better of each prediction and its mirror image (Angstrom), and the shares of molecules
    passing PoseBusters and with the specified stereo."""
    from rdkit import Chem

    from molfold.conformers.metrics import c_rmsd_pair, distance_errors, metrics_from_sums
    from molfold.conformers.stereo import check_stereo, is_achiral

    sums = torch.zeros(3, dtype=torch.float64)
    rmsds, mirror_rmsds, achiral_rmsds, predicted = [], [], [], []
    for i, pos in run.positions.items():
        graph = graphs[i]
        pred = torch.from_numpy(np.ascontiguousarray(pos, dtype=np.float64))
        batch = torch.zeros(len(pred), dtype=torch.long)
        sums += distance_errors(pred, graph.pos.double(), batch)
        values = c_rmsd_pair(graph, pred)
        rmsds.append(values["c_rmsd"])
        mirror_rmsds.append(values["c_rmsd_mirror"])
        achiral_rmsds.append(values["c_rmsd_mirror" if is_achiral(mols[i]) else "c_rmsd"])
        mol = Chem.Mol(mols[i])
        conformer = Chem.Conformer(mol.GetNumAtoms())
        for k, p in enumerate(pos.tolist()):
            conformer.SetAtomPosition(k, p)
        mol.AddConformer(conformer, assignId=True)
        predicted.append(mol)
    n_ok, n_failed = len(run.positions), len(run.failures)
    stereo_ok = [not check_stereo(mol).problems for mol in predicted]
    passes = posebusters_passes(predicted) if posebusters else []
    record = {
        "n_evaluated": n_ok,
        "n_failed": n_failed,
        "failures": [{"name": n, "reason": r} for n, r in run.failures[:50]],
        "seconds": run.seconds,
        "molecules_per_s": (n_ok + n_failed) / run.seconds if run.seconds > 0 else None,
        "d_mae": None,
        "d_rmse": None,
        "c_rmsd": None,
        "c_rmsd_median": None,
        "c_rmsd_mirror": None,
        "c_rmsd_achiral_mirror": None,
        "posebusters_pass": float(np.mean(passes)) if passes else None,
        "stereo_right": float(np.mean(stereo_ok)) if stereo_ok else None,
    }
    if n_ok:
        record.update(metrics_from_sums(sums))
        record["c_rmsd"] = float(np.mean(rmsds))
        record["c_rmsd_median"] = float(np.median(rmsds))
        record["c_rmsd_mirror"] = float(np.mean(mirror_rmsds))
        record["c_rmsd_achiral_mirror"] = float(np.mean(achiral_rmsds))
    return record


# --- output -------------------------------------------------------------------------------


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def results_table(datasets: dict) -> str:
    """One row per dataset x method, ours and the published numbers side by side."""
    headers = [
        "data",
        "method",
        "mols",
        "failed",
        "D-MAE",
        "D-RMSE",
        "C-RMSD",
        "C-RMSD*",
        "C-RMSD min",
    ]
    headers += ["PB", "stereo", "mol/s"]
    headers += ["paper D-MAE", "paper D-RMSE", "paper C-RMSD", "paper mol/s"]
    rows = []
    for data, record in datasets.items():
        if "skipped" in record:
            rows.append([data, "skipped"] + ["-"] * (len(headers) - 2))
            continue
        paper = PAPER.get(data, {})
        for method in [*record["methods"], *(m for m in paper if m not in record["methods"])]:
            ours = record["methods"].get(method, {})
            ref = paper.get(method, {})
            rows.append(
                [
                    data,
                    method,
                    _fmt(ours.get("n_evaluated"), "d"),
                    _fmt(ours.get("n_failed"), "d"),
                    _fmt(ours.get("d_mae"), ".3f"),
                    _fmt(ours.get("d_rmse"), ".3f"),
                    _fmt(ours.get("c_rmsd"), ".3f"),
                    _fmt(ours.get("c_rmsd_achiral_mirror"), ".3f"),
                    _fmt(ours.get("c_rmsd_mirror"), ".3f"),
                    _fmt(ours.get("posebusters_pass"), ".0%"),
                    _fmt(ours.get("stereo_right"), ".0%"),
                    _fmt(ours.get("molecules_per_s"), ".1f"),
                    _fmt(ref.get("d_mae"), ".3f"),
                    _fmt(ref.get("d_rmse"), ".3f"),
                    _fmt(ref.get("c_rmsd"), ".3f"),
                    _fmt(ref.get("molecules_per_s"), ".0f"),
                ]
            )
    return text_table(headers, rows)


def versions() -> dict:
    import rdkit

    import molfold

    return {"molfold": molfold.__version__, "torch": torch.__version__, "rdkit": rdkit.__version__}


def _write(path: Path, result: dict) -> None:
    from molfold.io import atomic_write

    atomic_write(path, json.dumps(result, indent=2, default=str))


# --- main ---------------------------------------------------------------------------------


def benchmark(args) -> dict:
    from molfold.conformers.predict import load_conformer_model
    from molfold.errors import MolfoldError

    torch.set_num_threads(args.threads)
    try:
        model = load_conformer_model(args.ckpt, args.device)
    except MolfoldError as error:
        raise SystemExit(
            f"cannot load the conformer model: {error}\n(give one with --ckpt)"
        ) from None
    modes = {k: v for k, v in PREDICT_MODES.items() if args.xtb or k != "predict:xtb"}
    if args.potential:
        rank = f"mmff+{args.potential}"
        modes["predict:potential-rank"] = {"rank": rank}
        modes["predict:10-potential-rank"] = {"num_samples": 10, "rank": rank}
    if args.modes:
        modes = {k: v for k, v in modes.items() if k in args.modes}
    elements = sorted(model.model_info["statistics"].get("elements", []))
    result = {
        "benchmark": "ground-state conformers: RDKit ETKDGv3 vs molfold predict",
        "machine": machine_info(args.threads),
        "versions": versions(),
        "settings": {
            "ckpt": model.checkpoint_info["path"],
            "model_config": {k: v for k, v in model.model_info.items() if k != "statistics"},
            "model_training_data": model.model_info["statistics"],
            "max_molecules": args.max_molecules,
            "seed": args.seed,
            "batch_size": args.batch_size,
            "device": args.device,
            "threads": args.threads,
            "predict_modes": modes,
            "posebusters": not args.no_posebusters,
            "units": "Angstrom; molecules/s = molecules attempted / prediction seconds",
        },
        "paper": {"values": PAPER, "sources": PAPER_SOURCES},
        "datasets": {},
    }
    for data in args.datasets:
        if data == "qm9":
            graphs, info = qm9_test_graphs(args.qm9_root, args.max_molecules, args.seed)
        elif data == "geom":
            graphs, info = geom_graphs(args.geom, args.max_molecules, args.seed)
        else:
            graphs, info = geom_graphs(args.druglike, args.max_molecules, args.seed, "druglike_xtb")
        if graphs is None:
            print(f"{data}: skipped: {info['skipped']}", flush=True)
            result["datasets"][data] = info
            continue
        unseen = [g.name for g in graphs if elements and set(g.z.tolist()) - set(elements)]
        info.update(n_molecules=len(graphs), n_with_elements_unseen_by_model=len(unseen))
        print(f"{data}: {len(graphs)} molecules", flush=True)
        if unseen:
            print(
                f"{data}: {len(unseen)} molecules hold elements outside the model's training "
                f"data {elements}",
                flush=True,
            )
        mols = [input_mol(g) for g in graphs]
        names = [str(g.name) for g in graphs]
        runs = run_etkdg(mols, names, args.seed)
        runs["rebind-raw"] = run_rebind_raw(graphs, model, args.batch_size)
        for name, mode in modes.items():
            print(f"{data}: {name} {mode}", flush=True)
            runs[name] = run_predict(mols, graphs, names, model, mode, args.batch_size)
        info["methods"] = {
            name: evaluate(graphs, mols, runs[name], not args.no_posebusters)
            for name in (*METHODS, *POTENTIAL_MODES)
            if name in runs
        }
        result["datasets"][data] = info
        _write(args.output, result)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["table"] = results_table(result["datasets"])
    print(
        f"\nGround-state conformers (Angstrom); metrics over the molecules a method did not fail "
        f"on; mol/s: prediction only, {args.threads} torch thread(s), RDKit single-threaded; "
        f"model {model.checkpoint_info['path']}. C-RMSD*: the mirror image counted for "
        "achiral molecules only (equal energies: a coin toss). C-RMSD min: the better of the "
        "prediction and its mirror image, as the papers' evaluation counts it. PB: PoseBusters "
        "mol checks passed; stereo: all specified stereo right. Modes: "
        + "; ".join(f"{k} = {v or 'defaults'}" for k, v in modes.items())
        + ". Paper columns (QM9 only):"
    )
    for method, source in PAPER_SOURCES.items():
        print(f"  {method}: {source}")
    print()
    print(result["table"])
    for data, record in result["datasets"].items():
        if "skipped" in record:
            print(f"{data} skipped: {record['skipped']}")
    _write(args.output, result)
    print(f"\nwrote {args.output}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ckpt", help="conformer checkpoint (default: the shipped data/rebind_qm9.pt)"
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=("qm9", "geom", "druglike"),
        default=["qm9", "geom", "druglike"],
    )
    parser.add_argument(
        "--max-molecules",
        type=int,
        default=1000,
        help="seeded random subset of each dataset's molecules (0: all)",
    )
    parser.add_argument("--qm9-root", help="QM9 source for data=qm9 (default: qm9pack)")
    parser.add_argument("--geom", help="GEOM folder or file (default: the shipped data/geom_xtb)")
    parser.add_argument(
        "--druglike", help="drug-like test set, GEOM layout (default: data/druglike_xtb)"
    )
    parser.add_argument("--no-posebusters", action="store_true", help="skip the PoseBusters checks")
    parser.add_argument("--seed", type=int, default=0, help="subset and ETKDG seed")
    parser.add_argument("--batch-size", type=int, default=100, help="molecules per model call")
    parser.add_argument("--device", default="cpu", help="model device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--xtb", action="store_true", help="also refine=xtb (slow)")
    parser.add_argument(
        "--potential", help="a Delta potential on MMFF94: also conformers ranked by MMFF94 + it"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=(*PREDICT_MODES, *POTENTIAL_MODES),
        help="run only these molfold predict modes (default: all; the RDKit rows always run)",
    )
    parser.add_argument("--output", type=Path, default=Path("bench_conformers.json"))
    args = parser.parse_args(argv)
    if args.max_molecules < 0:
        parser.error("--max-molecules must be 0 (all) or positive")
    benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
