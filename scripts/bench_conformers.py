"""Benchmark: ground-state conformer prediction, RDKit ETKDGv3 against molfold's ReBind.

Datasets (``--datasets``, both by default):

``qm9``
    A seeded random subset (``--max-molecules``, default 1,000; 0 = all 10,831) of the QM9 test
    split that training uses (``configs/data/qm9.yaml`` sizes through
    :func:`molfold.data.splits.random_split`, split_seed 0);
    target: the DFT ground state.
``geom``
    The lowest-energy conformer of every molecule of a GEOM folder (``--geom``, default the
    shipped ``data/geom_xtb``; skipped with a message when absent); target: the GFN2-xTB / CREST
    ground state. The shipped set is small and holds elements (S) absent from QM9.

Methods, each predicting one conformer per molecule from the 2D graph (atoms in the
reference's order, explicit hydrogens):

``etkdg``          RDKit ETKDGv3, one embedding, ``randomSeed = --seed``, fresh parameters per
                   molecule; the graph as the model sees it (tetrahedral chiral tags, which
                   QM9 graphs take from the DFT geometry, but no double-bond E/Z)
``etkdg+mmff``     the same embedding relaxed with MMFF94 (``make_refiner("mmff")``)
``etkdg-3d``       ETKDGv3 given all the reference's stereochemistry, double bonds included
                   (``AssignStereochemistryFrom3D``); the setting of the published ETKDG
                   numbers, which are therefore shown on these rows
``etkdg-3d+mmff``  the same relaxed with MMFF94
``rebind-raw``     the conformer checkpoint ``--ckpt`` (default the shipped ``data/rebind_qm9.pt``),
                   its output as is (the papers' numbers are on this row: compare them with
                   its C-RMSD min column)
``rebind``         the same with mirror images corrected to the graph's stereocentres
                   (:mod:`molfold.conformers.stereo`), as ``molfold predict`` returns it
``rebind+mmff``    that prediction relaxed with MMFF94
``rebind+xtb``     ReBind's prediction relaxed with GFN2-xTB (tblite + BFGS), only with ``--xtb``

``--etkdg-stereo graph|3d|both`` (default both) picks the ETKDG variants.

Metrics (:mod:`molfold.conformers.metrics`, the ReBind/GTMGC definitions, Angstrom): D-MAE and
D-RMSE pooled over every entry of the full distance matrices (hydrogens included), C-RMSD on
heavy atoms after symmetry-aware alignment (RDKit ``GetBestRMS``), averaged per molecule, of the
prediction as it is (C-RMSD) and the better of the prediction and its mirror image (C-RMSD min,
``c_rmsd_mirror``): the papers' protocol, since GTMGC's and ReBind's evaluation un-mirrors the
prediction by aligning it to the reference without a determinant check (see
:mod:`molfold.conformers.metrics`). A molecule a method fails on (ETKDG does not embed, MMFF has
no parameters, ...) counts as a failure and is left out of that method's metrics, so methods with
failures are scored on fewer molecules.
molecules/s is wall clock of the prediction alone (graph -> coordinates, refinement included;
building inputs and computing metrics excluded), one process, ``--threads`` torch threads;
RDKit runs single-threaded. The table puts each row next to the published numbers
(``PAPER``, from the ReBind paper's QM9 table and an ETKDG run on 1,000 random QM9 molecules)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_conformers.py
    .venv/bin/python scripts/bench_conformers.py --ckpt runs/x/best.pt --max-molecules 0 --xtb
    .venv/bin/python scripts/bench_conformers.py --datasets geom --geom path/to/rdkit_folder
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from bench_machine import machine_info, text_table  # scripts/ is on sys.path when run as a script

METHODS = (
    "etkdg",
    "etkdg+mmff",
    "etkdg-3d",
    "etkdg-3d+mmff",
    "rebind-raw",
    "rebind",
    "rebind+mmff",
    "rebind+xtb",
)

PAPER: dict[str, dict[str, dict]] = {
    "qm9": {
        "etkdg-3d": {"d_mae": 0.329, "d_rmse": None, "c_rmsd": 0.485, "molecules_per_s": 30.0},
        "etkdg-3d+mmff": {"d_mae": 0.292, "d_rmse": None, "c_rmsd": 0.410},
        "rebind-raw": {"d_mae": 0.254, "d_rmse": 0.446, "c_rmsd": 0.321},
        "gtmgc": {"d_mae": 0.281, "d_rmse": 0.471, "c_rmsd": 0.414},
    }
}
"""Published QM9 numbers (Angstrom): ReBind and GTMGC on the
10,831-molecule test split as tabulated in the ReBind paper (arXiv 2410.14696); ETKDGv3 with and
without MMFF on 1,000 random QM9 molecules. ``None``: not reported."""

PAPER_SOURCES = {
    "etkdg-3d": "ETKDGv3 on 1,000 random QM9 molecules (stereo assumed from 3D)",
    "etkdg-3d+mmff": "ETKDGv3 + MMFF on 1,000 random QM9 molecules (stereo assumed from 3D)",
    "rebind-raw": "ReBind paper, QM9 test (10,831)",
    "gtmgc": "GTMGC as tabulated in the ReBind paper, QM9 test",
}


@dataclass
class MethodRun:
    """One method on one dataset: predicted positions [N, 3] (Angstrom) by molecule index,
    failures as (name, reason), and the seconds spent predicting."""

    positions: dict[int, np.ndarray] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


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


def geom_graphs(path: str | None, max_molecules: int, seed: int) -> tuple[list | None, dict]:
    """Ground-state GEOM graphs of ``path`` (default the shipped set); None when absent."""
    from molfold.data.datamodule import load_structures
    from molfold.data.transforms import MolecularGraph
    from molfold.errors import MissingFileError
    from molfold.shipped import shipped_data

    if path is None:
        try:
            path = shipped_data("geom_xtb")
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


# --- methods ------------------------------------------------------------------------------


def run_etkdg(graphs: list, seed: int, stereo_from_3d: bool) -> dict[str, MethodRun]:
    """ETKDGv3 (one seeded embedding per molecule) and the same embedding relaxed by MMFF94;
    with ``stereo_from_3d`` the input carries the reference's stereochemistry."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import AllChem
    from tqdm import tqdm

    from molfold.conformers.predict import make_refiner
    from molfold.data.molgraph import graph_to_mol

    mmff = make_refiner("mmff")
    name = "etkdg-3d" if stereo_from_3d else "etkdg"
    embedded, relaxed = MethodRun(), MethodRun()
    for i, graph in enumerate(tqdm(graphs, desc=f"{name} (+mmff)", unit="mol")):
        mol = graph_to_mol(graph)
        if stereo_from_3d:
            Chem.AssignStereochemistryFrom3D(mol)
        mol.RemoveAllConformers()
        with rdBase.BlockLogs():
            start = time.perf_counter()
            params = AllChem.ETKDGv3()  # fresh per molecule: results independent of the order
            params.randomSeed = seed
            conf_id = AllChem.EmbedMolecule(mol, params)
            embed_s = time.perf_counter() - start
        embedded.seconds += embed_s
        relaxed.seconds += embed_s
        if conf_id < 0:
            for run in (embedded, relaxed):
                run.failures.append((graph.name, "ETKDG could not embed the molecule"))
            continue
        embedded.positions[i] = mol.GetConformer(conf_id).GetPositions()
        start = time.perf_counter()
        try:
            mmff(mol, conf_id)
            relaxed.positions[i] = mol.GetConformer(conf_id).GetPositions()
        except Exception as error:  # one molecule's failure must not stop the benchmark
            relaxed.failures.append((graph.name, f"MMFF: {error}"))
        finally:
            relaxed.seconds += time.perf_counter() - start
    return {name: embedded, f"{name}+mmff": relaxed}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_rebind(graphs: list, model, batch_size: int, refiners: dict[str, Callable]) -> dict:
    """The model's canonical prediction for every graph, then each refiner applied to it."""
    from torch_geometric.data import Batch
    from tqdm import tqdm

    from molfold.conformers.stereo import match_stereocentres
    from molfold.data.molgraph import graph_to_mol

    device = next(model.parameters()).device
    chunks = [graphs[k : k + batch_size] for k in range(0, len(graphs), batch_size)]
    with torch.no_grad():  # warm-up, not timed
        model(Batch.from_data_list(chunks[0][:2]).to(device))
    rebind = MethodRun()
    offset = 0
    for chunk in tqdm(chunks, desc="rebind", unit="batch"):
        _synchronize(device)
        start = time.perf_counter()
        batch = Batch.from_data_list(chunk).to(device)
        with torch.no_grad():
            pos = model(batch)["pos"].double().cpu().numpy()
        rebind.seconds += time.perf_counter() - start
        index = batch.batch.cpu().numpy()
        for m in range(len(chunk)):
            rebind.positions[offset + m] = pos[index == m]
        offset += len(chunk)
    fixed = MethodRun(seconds=rebind.seconds)  # as molfold predict: mirror images corrected
    for i, graph in enumerate(tqdm(graphs, desc="rebind (stereo)", unit="mol")):
        start = time.perf_counter()
        mol = graph_to_mol(graph, torch.from_numpy(rebind.positions[i]))
        match_stereocentres(mol)
        fixed.positions[i] = mol.GetConformer().GetPositions()
        fixed.seconds += time.perf_counter() - start
    runs = {"rebind-raw": rebind, "rebind": fixed}
    for name, refine in refiners.items():
        run = runs[name] = MethodRun(seconds=fixed.seconds)
        for i, graph in enumerate(tqdm(graphs, desc=name, unit="mol")):
            start = time.perf_counter()
            try:
                mol = graph_to_mol(graph, torch.from_numpy(fixed.positions[i]))
                refine(mol, mol.GetConformer().GetId())
                run.positions[i] = mol.GetConformer().GetPositions()
            except Exception as error:  # one molecule's failure must not stop the benchmark
                run.failures.append((graph.name, f"{name.split('+')[1]}: {error}"))
            finally:
                run.seconds += time.perf_counter() - start
    return runs


# --- metrics ------------------------------------------------------------------------------


def evaluate(graphs: list, run: MethodRun) -> dict:
    """D-MAE, D-RMSE (pooled), C-RMSD (mean and median per molecule) and the mean C-RMSD of
    the better of each prediction and its mirror image, Angstrom."""
    from molfold.conformers.metrics import c_rmsd_pair, distance_errors, metrics_from_sums

    sums = torch.zeros(3, dtype=torch.float64)
    rmsds, mirror_rmsds = [], []
    for i, pos in run.positions.items():
        graph = graphs[i]
        pred = torch.from_numpy(np.ascontiguousarray(pos, dtype=np.float64))
        batch = torch.zeros(len(pred), dtype=torch.long)
        sums += distance_errors(pred, graph.pos.double(), batch)
        values = c_rmsd_pair(graph, pred)
        rmsds.append(values["c_rmsd"])
        mirror_rmsds.append(values["c_rmsd_mirror"])
    n_ok, n_failed = len(run.positions), len(run.failures)
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
    }
    if n_ok:
        record.update(metrics_from_sums(sums))
        record["c_rmsd"] = float(np.mean(rmsds))
        record["c_rmsd_median"] = float(np.median(rmsds))
        record["c_rmsd_mirror"] = float(np.mean(mirror_rmsds))
    return record


# --- output -------------------------------------------------------------------------------


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def results_table(datasets: dict) -> str:
    """One row per dataset x method, ours and the published numbers side by side."""
    headers = ["data", "method", "mols", "failed", "D-MAE", "D-RMSE", "C-RMSD", "C-RMSD min"]
    headers += ["mol/s"]
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
                    _fmt(ours.get("c_rmsd_mirror"), ".3f"),
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
    from molfold.conformers.predict import load_conformer_model, make_refiner
    from molfold.errors import MolfoldError

    torch.set_num_threads(args.threads)
    try:
        model = load_conformer_model(args.ckpt, args.device)
    except MolfoldError as error:
        raise SystemExit(
            f"cannot load the conformer model: {error}\n(give one with --ckpt)"
        ) from None
    refiners = {"rebind+mmff": make_refiner("mmff")}
    if args.xtb:
        try:
            refiners["rebind+xtb"] = make_refiner("xtb")
        except MolfoldError as error:
            raise SystemExit(str(error)) from None
    elements = sorted(model.model_info["statistics"].get("elements", []))
    result = {
        "benchmark": "ground-state conformers: RDKit ETKDGv3 vs molfold ReBind",
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
            "etkdg_stereo": args.etkdg_stereo,
            "xtb": args.xtb,
            "units": "Angstrom; molecules/s = molecules attempted / prediction seconds",
        },
        "paper": {"values": PAPER, "sources": PAPER_SOURCES},
        "datasets": {},
    }
    for data in args.datasets:
        if data == "qm9":
            graphs, info = qm9_test_graphs(args.qm9_root, args.max_molecules, args.seed)
        else:
            graphs, info = geom_graphs(args.geom, args.max_molecules, args.seed)
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
        runs = {}
        for stereo_from_3d in {"graph": [False], "3d": [True], "both": [False, True]}[
            args.etkdg_stereo
        ]:
            runs.update(run_etkdg(graphs, args.seed, stereo_from_3d))
        runs.update(run_rebind(graphs, model, args.batch_size, refiners))
        info["methods"] = {name: evaluate(graphs, runs[name]) for name in METHODS if name in runs}
        result["datasets"][data] = info
        _write(args.output, result)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["table"] = results_table(result["datasets"])
    print(
        f"\nGround-state conformers (Angstrom); metrics over the molecules a method did not fail "
        f"on; mol/s: prediction only, {args.threads} torch thread(s), RDKit single-threaded; "
        f"model {model.checkpoint_info['path']}. C-RMSD min: the better of the prediction and "
        "its mirror image, "
        f"as the papers' evaluation counts it. Paper columns (QM9 only):"
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
    parser.add_argument("--datasets", nargs="+", choices=("qm9", "geom"), default=["qm9", "geom"])
    parser.add_argument(
        "--max-molecules",
        type=int,
        default=1000,
        help="seeded random subset of each dataset's molecules (0: all)",
    )
    parser.add_argument("--qm9-root", help="QM9 source for data=qm9 (default: qm9pack)")
    parser.add_argument("--geom", help="GEOM folder or file (default: the shipped data/geom_xtb)")
    parser.add_argument("--seed", type=int, default=0, help="subset and ETKDG seed")
    parser.add_argument("--batch-size", type=int, default=100, help="molecules per model call")
    parser.add_argument("--device", default="cpu", help="model device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--etkdg-stereo",
        choices=("graph", "3d", "both"),
        default="both",
        help="ETKDG from the graph alone (etkdg), with the reference's stereochemistry "
        "(etkdg-3d; the model never sees it), or both",
    )
    parser.add_argument("--xtb", action="store_true", help="also ReBind + GFN2-xTB (slow)")
    parser.add_argument("--output", type=Path, default=Path("bench_conformers.json"))
    args = parser.parse_args(argv)
    if args.max_molecules < 0:
        parser.error("--max-molecules must be 0 (all) or positive")
    benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
