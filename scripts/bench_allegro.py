"""Benchmark: molfold's Allegro against the reference implementation (PyPI ``nequip-allegro``).

Both packages build Allegro at the same hyperparameters (allegro's current
``configs/tutorial.yaml``, molfold's ``configs/model/allegro.yaml`` defaults; checked to agree with
:data:`bench_allegro_reference.HPARAMS`) and the same parameter count, evaluate the very same
structures, and are timed by the same rules (``time_calls``/``timing_record`` of
``scripts/bench_allegro_reference.py``), each case in a fresh process. Results are ratios taken
in one run, so both sides see the same machine load.

Needs the benchmark environment ``bench_env/`` (see ``scripts/bench_allegro_reference.py``) for
the reference side; this script itself runs with molfold's environment::

    .venv/bin/python scripts/bench_allegro.py                      # speed, every system x dtype
    .venv/bin/python scripts/bench_allegro.py --train-budget-s 600 # ... plus a training race
    .venv/bin/python scripts/bench_allegro.py --systems aspirin32 --dtypes float32 --repeats 5

Subcommands:

``run`` (default)
    For each system x dtype, the reference worker (``bench_env/bin/python
    scripts/bench_allegro_reference.py speed``) and molfold's worker (``speed`` below) alternate,
    ``--process-runs`` times each (ref, molfold, ref, molfold, ...); each side's result is its
    best process (lowest median time per call), which keeps transient load from other work out
    of the ratio. Prints a table, a markdown summary for the README, and writes everything to
    ``--out`` (JSON). ``--train-budget-s N`` adds the training comparison: the same aspirin split
    and N seconds of fitting (Lightning ``max_time``) for each package, then test-set MAEs.
``speed``
    molfold's worker, the counterpart of the reference ``speed``: one system x dtype, random
    weights (seed 0), graph building not timed, energy + forces (+ stress for periodic systems)
    per call; prints one JSON line in the reference's record format.

What each side computes per call: the reference's ``ForceStressOutput`` always differentiates
with respect to a strain as well as the positions (virial; stress when there is a cell), also
for the non-periodic aspirin batch. molfold computes energy + forces, and the stress only for
periodic systems (``--molfold-stress always`` makes it take the strain derivative everywhere).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from bench_machine import machine_info, text_table  # scripts/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()
REFERENCE_SCRIPT = REPO / "scripts" / "bench_allegro_reference.py"
BENCH_PYTHON = REPO / "bench_env" / "bin" / "python"
MODEL_CONFIG = REPO / "configs" / "model" / "allegro.yaml"


def _load_reference():
    """``scripts/bench_allegro_reference.py`` as a module (its shared part needs no nequip)."""
    spec = importlib.util.spec_from_file_location("bench_allegro_reference", REFERENCE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ref = _load_reference()

MOLFOLD_TO_REFERENCE = {
    "r_max": "r_max",
    "num_bessels": "num_bessels",
    "polynomial_p": "polynomial_cutoff_p",
    "radial_chemical_embed_dim": "radial_chemical_embed_dim",
    "two_body_mlp_hidden": "scalar_embed_mlp_hidden",
    "l_max": "l_max",
    "parity": "parity",
    "num_layers": "num_layers",
    "num_scalar_features": "num_scalar_features",
    "num_tensor_features": "num_tensor_features",
    "allegro_mlp_hidden": "allegro_mlp_hidden",
    "readout_mlp_hidden": "readout_mlp_hidden",
    "activation": "nonlinearity",
    "tp_path_channel_coupling": "tp_path_channel_coupling",
}
"""molfold hyperparameter name -> name in the reference worker's :data:`HPARAMS`."""

REFERENCE_COMPUTES = (
    "energy + forces + virial (ForceStressOutput always takes the strain derivative; "
    "stress as well where there is a cell)"
)
TRAIN_STEPS_PER_EPOCH = math.ceil(950 / 5)


def molfold_hparams() -> dict:
    """molfold's Allegro defaults (``configs/model/allegro.yaml``), checked against the reference.

    ``avg_num_neighbors`` is left to the caller. Raises if any shared hyperparameter differs from
    the reference worker's :data:`HPARAMS`, or if the latent update is not the reference's dense
    one: the benchmark compares the same model, not two different ones.
    """
    import yaml

    hp = yaml.safe_load(MODEL_CONFIG.read_text())
    hp.pop("name", None)
    hp.pop("avg_num_neighbors", None)
    mismatches = [
        f"{ours}={hp.get(ours)!r} vs reference {theirs}={ref.HPARAMS[theirs]!r}"
        for ours, theirs in MOLFOLD_TO_REFERENCE.items()
        if _normalise(hp.get(ours)) != _normalise(ref.HPARAMS[theirs])
    ]
    if hp.get("latent_update") != "dense":
        mismatches.append(f"latent_update={hp.get('latent_update')!r} vs reference 'dense'")
    if mismatches:
        raise SystemExit(f"{MODEL_CONFIG} differs from the benchmark: " + "; ".join(mismatches))
    return hp


def _normalise(value):
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


# ====================================================================================
# molfold's speed worker (runs with molfold's environment)
# ====================================================================================


def _molfold_versions() -> dict:
    import e3nn
    import torch
    import torch_geometric

    import molfold

    return {
        "molfold": molfold.__version__,
        "torch": torch.__version__,
        "e3nn": e3nn.__version__,
        "torch_geometric": torch_geometric.__version__,
        "python": platform.python_version(),
    }


def cmd_speed(args) -> dict:
    import torch
    from torch_geometric.data import Batch

    from molfold.data.neighbors import atoms_to_graph
    from molfold.models.registry import build_model

    torch.set_num_threads(args.threads)
    hp = molfold_hparams()
    hp["l_max"] = args.l_max
    structures, source = ref.build_system(args.system, args.seed)
    summary = ref.system_summary(structures, hp["r_max"])
    species = sorted(args.species or summary["atomic_numbers"])
    # the same value the reference worker uses: mean neighbour count of the benchmark batch
    hp["avg_num_neighbors"] = summary["avg_num_neighbors"]

    torch.manual_seed(args.model_seed)
    t0 = time.perf_counter()
    potential = build_model("allegro", hp, {"species": species}, args.dtype).eval()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    batch = Batch.from_data_list([atoms_to_graph(atoms, hp["r_max"]) for atoms in structures])
    batch_s = time.perf_counter() - t0
    assert batch.edge_index.shape[1] == summary["n_edges"], "neighbour lists disagree"

    params = sum(p.numel() for p in potential.parameters())
    if args.expect_params is not None:
        assert params == args.expect_params, (
            f"molfold has {params} parameters, the reference {args.expect_params} "
            f"for species {species}"
        )
    stress = {"auto": summary["periodic"], "always": True, "never": False}[args.stress]
    computes = "energy + forces" + (" + stress (strain derivative)" if stress else "")

    model, compile_s = potential, None
    if args.mode == "compiled":
        from molfold.compiled.potential import compile_potential

        t0 = time.perf_counter()
        model = compile_potential(potential)
        model(batch, compute_forces=True, compute_stress=stress)  # Inductor compiles here
        compile_s = time.perf_counter() - t0

    def energy_and_forces() -> dict:
        return model(batch, compute_forces=True, compute_stress=stress)

    return ref.speed_record(
        "molfold" + ("" if args.mode == "eager" else f" ({args.mode})"),
        args,
        energy_and_forces,
        (summary, source),
        build_s,
        batch_s,
        _molfold_versions(),
        species=species,
        params=params,
        computes=computes,
        mode=args.mode,
        compile_s=compile_s,
    )


# ====================================================================================
# orchestrator (runs with molfold's environment; the reference side in bench_env)
# ====================================================================================


def run_worker(python: Path | str, script: Path, args: Sequence[str], env: dict) -> dict:
    """Run ``python script speed *args`` in a fresh process; its last stdout line is the record."""
    cmd = [str(python), str(script), "speed", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "process_wall_s": wall}
    try:
        record = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {
            "error": f"no JSON record in output:\n{proc.stdout[-2000:]}",
            "process_wall_s": wall,
        }
    record["process_wall_s"] = wall
    return record


def _best(records: list[dict]) -> dict | None:
    good = [r for r in records if "error" not in r]
    return min(good, key=lambda r: r["time_median_s"]) if good else None


def variants(args) -> list[tuple[str, str, str]]:
    """Every (side, mode, malloc) the speed comparison runs, in the order they alternate."""
    sides = (("reference", args.reference_modes), ("molfold", args.molfold_modes))
    return [
        (side, mode, malloc) for malloc in args.malloc for side, modes in sides for mode in modes
    ]


def variant_name(side: str, mode: str, malloc: str) -> str:
    return f"{side} {mode} {malloc}"


def speed_case(system: str, dtype: str, args, env: dict) -> dict:
    """One system x dtype: every variant ``--process-runs`` times, interleaved; each variant's
    best process, each side's best variant, and their ratio."""
    common = ["--system", system, "--dtype", dtype, "--warmup", str(args.warmup)]
    common += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
    common += ["--l-max", str(args.l_max)]
    runs: dict[str, list[dict]] = {variant_name(*v): [] for v in variants(args)}
    expect: list[str] = []
    for k in range(args.process_runs):
        for side, mode, malloc in variants(args):
            worker_env = dict(env, **(ref.MALLOC_TUNED_ENV if malloc == "tuned" else {}))
            if side == "reference":
                record = run_worker(
                    BENCH_PYTHON, REFERENCE_SCRIPT, [*common, "--mode", mode], worker_env
                )
                if not expect and "params" in record:
                    expect = ["--expect-params", str(record["params"])]
            else:
                extra = ["--mode", mode, "--stress", args.molfold_stress, *expect]
                record = run_worker(sys.executable, THIS, common + extra, worker_env)
            runs[variant_name(side, mode, malloc)].append(record)
            _progress(system, dtype, variant_name(side, mode, malloc), k, record)
    best = {name: _best(records) for name, records in runs.items()}
    row = {"system": system, "dtype": dtype, "l_max": args.l_max}
    sides = {}
    for side in ("reference", "molfold"):
        done = [(name, r) for name, r in best.items() if name.startswith(side) and r is not None]
        sides[side] = min(done, key=lambda item: item[1]["time_median_s"]) if done else None
    if sides["reference"] is None or sides["molfold"] is None:
        row["error"] = "; ".join(
            f"{name}: {r['error'].strip().splitlines()[-1] if r['error'].strip() else '?'}"
            for name, records in runs.items()
            for r in records
            if "error" in r
        )
    else:
        (ref_name, best_ref), (mf_name, best_mf) = sides["reference"], sides["molfold"]
        best_ref.setdefault("computes", REFERENCE_COMPUTES)
        row.update(
            n_atoms=best_ref["n_atoms"],
            n_edges=best_ref["n_edges"],
            n_structures=best_ref["n_structures"],
            params_reference=best_ref["params"],
            params_molfold=best_mf["params"],
            params_match=best_ref["params"] == best_mf["params"],
            reference_best=ref_name,
            molfold_best=mf_name,
            reference_s=best_ref["time_median_s"],
            molfold_s=best_mf["time_median_s"],
            speedup=best_ref["time_median_s"] / best_mf["time_median_s"],
            reference_rss_delta_mib=best_ref["rss_delta_mib"],
            molfold_rss_delta_mib=best_mf["rss_delta_mib"],
            rss_delta_ratio=best_mf["rss_delta_mib"] / best_ref["rss_delta_mib"]
            if best_ref["rss_delta_mib"] > 0
            else None,
            reference_peak_mib=best_ref["rss_peak_mib"],
            molfold_peak_mib=best_mf["rss_peak_mib"],
            reference_computes=best_ref["computes"],
            molfold_computes=best_mf["computes"],
        )
    row["variants"] = {
        name: None
        if r is None
        else {
            k: r.get(k)
            for k in ("time_median_s", "rss_delta_mib", "rss_peak_mib", "compile_s", "atoms_per_s")
        }
        for name, r in best.items()
    }
    row["runs"] = runs
    return row


def _progress(system: str, dtype: str, side: str, k: int, record: dict) -> None:
    if "error" in record:
        lines = record["error"].strip().splitlines() or ["?"]
        msg = f"FAILED: {lines[-1]}"
    else:
        msg = (
            f"median {record['time_median_s']:.4f} s/call, "
            f"rss delta {record['rss_delta_mib']:.0f} MiB, {record['params']} params"
        )
    print(f"  {system:9s} {dtype:7s} {side:28s} run {k + 1}: {msg}", flush=True)


# --- training comparison --------------------------------------------------------------------


def _molfold_progress(run_dir: Path) -> dict:
    """Optimizer steps, epochs and validations from molfold's ``metrics.csv`` (same rule as the
    reference: the step of the last validation row, 0-based, + 1)."""
    path = run_dir / "metrics.csv"
    if not path.exists():
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    vals = [r for r in rows if r.get("val/loss")]
    n_steps = max((int(r["step"]) + 1 for r in vals), default=0)
    return {
        "optimizer_steps": n_steps,
        "epochs": n_steps / TRAIN_STEPS_PER_EPOCH,
        "validations": len(vals),
        "best_val_forces_mae_mev_per_A": min(
            (float(r["val/forces_mae"]) for r in vals if r.get("val/forces_mae")), default=None
        ),
    }


def run_training(args, env: dict) -> dict:
    """Same split, same fitting budget: reference ``train`` (nequip-train + evaluation), then
    ``molfold train`` in each of ``--molfold-train-modes``; returns the results by side
    (``reference``, ``molfold eager``, ``molfold compiled``) and the settings used."""
    npz = Path(args.train_data).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    train_dir = Path(args.train_dir or REPO / "runs" / f"bench_allegro_train-{stamp}").resolve()
    if train_dir.exists() and any(train_dir.iterdir()):
        raise SystemExit(f"{train_dir} is not empty; choose another --train-dir")
    train_dir.mkdir(parents=True, exist_ok=True)
    data = ref.read_md17_ev(npz)
    split = ref.make_split(len(data["R"]), 950, 50, None, seed=0)
    split_file = train_dir / "split.npz"
    np.savez(split_file, **split)
    budget = int(args.train_budget_s)
    env = dict(env, OMP_NUM_THREADS=str(args.threads))
    result = {
        "data": npz.name,
        "split": {k: len(v) for k, v in split.items()},
        "split_file": str(split_file),
        "budget_s": budget,
        "dtype": args.train_dtype,
        "threads": args.threads,
        "settings": (
            "both: Adam lr 1e-3, batch 5, no lr schedule, EMA 0.999 (warm-up "
            "min(decay, (1+n)/(10+n))), no gradient clipping, per-atom energy MSE + force MSE 1:1, "
            "validation every epoch (batch 25), best checkpoint (EMA weights) tested; molfold run "
            "with ema_decay=0.999 optim.scheduler=none trainer.gradient_clip_val=null to match the "
            "reference config (its own defaults: EMA 0.99, plateau scheduler, clipping 100)"
        ),
        "differences": (
            "best checkpoint: reference lowest val energy MAE + force MAE, molfold lowest "
            "val loss; weights initialised by each package's own seed 0; the reference trains "
            "eagerly (its compile_mode: compile is slower on CPU, and nequip advises against it "
            "there)"
        ),
    }

    # reference: nequip-train within the budget, then its worker evaluates best.ckpt on the test
    ref_dir = train_dir / "reference"
    cmd = [
        str(BENCH_PYTHON),
        str(REFERENCE_SCRIPT),
        "train",
        "--data",
        str(npz),
        "--split",
        str(split_file),
        "--workdir",
        str(ref_dir),
        "--budget-s",
        str(budget),
        "--dtype",
        args.train_dtype,
        "--batch-size",
        "5",
        "--threads",
        str(args.threads),
    ]
    print(f"training the reference for {budget} s ({ref_dir}) ...", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        result["reference"] = {"error": (proc.stderr or proc.stdout)[-3000:]}
    else:
        result["reference"] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["reference"]["process_wall_s"] = wall
    _check_same_split(split, ref_dir / "split.npz", result["reference"])

    for mode in args.molfold_train_modes:
        result[f"molfold {mode}"] = train_molfold(args, env, mode, split, train_dir, budget)
    return result


def train_molfold(args, env: dict, mode: str, split: dict, train_dir: Path, budget: int) -> dict:
    """``molfold train`` (``compile=true`` for mode ``compiled``) with the pre-written split."""
    run_dir = train_dir / f"molfold-{mode}"
    run_dir.mkdir()
    shutil.copy(train_dir / "split.npz", run_dir / "split.npz")  # the DataModule reuses it
    npz = Path(args.train_data).resolve()
    cmd = [
        sys.executable,
        "-m",
        "molfold.cli",
        "train",
        f"run_dir={run_dir}",
        "model=allegro",
        "data=md17",
        f"data.path={npz}",
        "data.batch_size=5",
        "data.val_batch_size=25",
        f"dtype={args.train_dtype}",
        "seed=0",
        "optim.lr=0.001",
        "optim.scheduler=none",
        "ema_decay=0.999",
        "task.energy_weight=1.0",
        "task.forces_weight=1.0",
        f"trainer.max_time={ref._dhms(budget)}",
        "trainer.max_epochs=100000",
        "trainer.enable_progress_bar=false",
        "trainer.accelerator=cpu",
        "trainer.gradient_clip_val=null",
        "trainer.check_val_every_n_epoch=1",
        f"compile={'true' if mode == 'compiled' else 'false'}",
    ]
    print(f"training molfold ({mode}) for {budget} s ({run_dir}) ...", flush=True)
    log_path = train_dir / f"molfold-{mode}-train.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    metrics_file = run_dir / "test_metrics.json"
    if proc.returncode != 0 or not metrics_file.exists():
        tail = log_path.read_text()[-3000:]
        record = {"error": f"molfold train failed ({proc.returncode}):\n{tail}"}
    else:
        metrics = json.loads(metrics_file.read_text())
        record = {
            "package": "molfold",
            "mode": mode,
            "budget_s": budget,
            "wall_s": wall,
            "batch_size": 5,
            **_molfold_progress(run_dir),
            "checkpoint": str(run_dir / "checkpoints" / "best.ckpt"),
            "n_test": len(split["test"]),
            "energy_mae_mev": metrics["energy_mae"],
            "energy_rmse_mev": metrics.get("energy_rmse"),
            "energy_per_atom_mae_mev": metrics.get("energy_per_atom_mae"),
            "forces_mae_mev_per_A": metrics["forces_mae"],
            "forces_rmse_mev_per_A": metrics.get("forces_rmse"),
            "versions": json.loads((run_dir / "versions.json").read_text()),
        }
    record["process_wall_s"] = wall
    _check_same_split(split, run_dir / "split.npz", record)
    return record


def _check_same_split(split: dict, path: Path, record: dict) -> None:
    if not path.exists():
        record["split_identical"] = None
        return
    theirs = ref.load_split(path)
    record["split_identical"] = all(np.array_equal(split[k], theirs[k]) for k in split)
    if not record["split_identical"]:
        print(f"WARNING: {path} differs from the shared split", flush=True)


# --- tables -----------------------------------------------------------------------------


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def speed_rows(rows: list[dict], names: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the speed table: s/call of every variant, each side's best, their
    ratio and the memory ratio of the two best."""
    headers = ["system", "dtype", "l_max", "atoms", "edges", *names]
    headers += ["best reference", "best molfold", "speed-up", "rise mf/ref", "peak MiB mf/ref"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["system"], r["dtype"], str(r["l_max"]), "FAILED", r["error"][:60]])
            body[-1] += [""] * (len(headers) - len(body[-1]))
            continue
        times = [_fmt((r["variants"].get(n) or {}).get("time_median_s"), ".4f") for n in names]
        body.append(
            [r["system"], r["dtype"], str(r["l_max"]), str(r["n_atoms"]), str(r["n_edges"])]
            + times
            + [
                r["reference_best"].removeprefix("reference "),
                r["molfold_best"].removeprefix("molfold "),
                _fmt(r["speedup"], ".2f") + "x",
                _fmt(r["rss_delta_ratio"], ".2f"),
                f"{r['molfold_peak_mib']:.0f}/{r['reference_peak_mib']:.0f}",
            ]
        )
    return headers, body


def training_sides(training: dict) -> list[str]:
    return [k for k in training if k == "reference" or k.startswith("molfold ")]


def training_rows(training: dict) -> tuple[list[str], list[list[str]]]:
    """Rows per side: test errors, steps in the budget and their ratio to the reference's
    (Lightning's ``max_time`` counts fitting only, for both: model building and compilation
    before the first step are outside it, and inside the process wall time)."""
    headers = [
        "package",
        "test energy MAE (meV)",
        "test force MAE (meV/Å)",
        "fit budget (s)",
        "process wall (s)",
        "optimizer steps",
        "epochs",
        "steps vs reference",
    ]
    reference_steps = training.get("reference", {}).get("optimizer_steps")
    body = []
    for side in training_sides(training):
        r = training[side]
        name = "nequip-allegro (eager)" if side == "reference" else side
        if "error" in r:
            body.append([name, "FAILED"] + [""] * (len(headers) - 2))
            continue
        steps = r.get("optimizer_steps")
        ratio = steps / reference_steps if steps and reference_steps else None
        body.append(
            [
                name,
                _fmt(r.get("energy_mae_mev"), ".1f"),
                _fmt(r.get("forces_mae_mev_per_A"), ".1f"),
                str(training["budget_s"]),
                _fmt(r.get("process_wall_s"), ".0f"),
                _fmt(steps, "d"),
                _fmt(r.get("epochs"), ".2f"),
                _fmt(ratio, ".2f") + "x",
            ]
        )
    return headers, body


def readme_markdown(result: dict) -> str:
    m = result["machine"]
    versions = "; ".join(
        f"{side}: " + ", ".join(f"{k} {val}" for k, val in v.items())
        for side, v in result.get("versions", {}).items()
    )
    parts = [
        "#### Allegro: molfold vs nequip-allegro (CPU)",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs, "
        f"{m['torch_threads']} torch threads; load average at start "
        f"{m['load_average_start'][0]:.2f}. Versions: {versions}.",
    ]
    rows = [r for r in result.get("speed", []) if "error" not in r]
    if rows:
        s = result["settings"]
        parts += [
            "",
            f"Energy + forces per call on one batch, random weights, identical hyperparameters "
            f"(allegro tutorial, l_max {s['l_max']}) and parameter count; best of "
            f"{s['process_runs']} processes' median over {s['repeats']} calls, seconds. "
            "Speed-up = the reference's best variant / molfold's best variant; rise = their "
            "peak-RSS rise during the calls (compiled variants reuse memory their compilation "
            "left), peak = the whole process's peak RSS during the calls, molfold / reference. "
            "Malloc `tuned`: "
            f"{ref.MALLOC_TUNED_ENV}. The reference also takes the strain derivative (virial) on "
            "every call; molfold computes the stress for the periodic systems only.",
            "",
            _markdown(*speed_rows(rows, s["variants"])),
        ]
    training = result.get("training")
    if training:
        headers, body = training_rows(training)
        parts += [
            "",
            f"Training on {training['data']} ({training['split']['train']} train / "
            f"{training['split']['val']} val / {training['split']['test']} test frames, same "
            f"split), {training['budget_s']} s of fitting each ({training['dtype']}, "
            f"{training['threads']} threads); {training['settings']}.",
            "",
            _markdown(headers, body),
        ]
    return "\n".join(parts)


def cmd_run(args) -> dict:
    if not BENCH_PYTHON.exists():
        raise SystemExit(f"{BENCH_PYTHON} not found: set up bench_env (see {REFERENCE_SCRIPT})")
    for system in args.systems:
        if system not in ref.SYSTEMS:
            raise SystemExit(f"unknown system {system!r}; choose from {ref.SYSTEMS}")
    for dtype in args.dtypes:
        if dtype not in ref.DTYPES:
            raise SystemExit(f"unknown dtype {dtype!r}; choose from {ref.DTYPES}")
    hp = molfold_hparams()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    result = {
        "benchmark": "allegro: molfold vs nequip-allegro",
        "machine": machine_info(args.threads),
        "settings": {
            "systems": args.systems,
            "dtypes": args.dtypes,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "process_runs": args.process_runs,
            "threads": args.threads,
            "malloc": args.malloc,
            "malloc_tuned_env": ref.MALLOC_TUNED_ENV,
            "variants": [variant_name(*v) for v in variants(args)],
            "l_max": args.l_max,
            "molfold_stress": args.molfold_stress,
            "hparams_molfold": hp,
            "hparams_reference": ref.HPARAMS,
            "aggregation": "per side, the lowest of the process runs' median times per call",
        },
        "reference_computes": REFERENCE_COMPUTES,
        "versions": {},
        "speed": [],
    }
    print(
        f"machine: {result['machine']['cpu_model']}, {result['machine']['logical_cpus']} CPUs, "
        f"{args.threads} threads, load average {result['machine']['load_average_start'][0]:.2f}"
        + f", malloc {' and '.join(args.malloc)}",
        flush=True,
    )
    if not args.skip_speed:
        for system in args.systems:
            for dtype in args.dtypes:
                result["speed"].append(speed_case(system, dtype, args, env))
                _write(args.out, result)
        for row in result["speed"]:
            for name, records in row["runs"].items():
                best = _best(records)
                if best and best.get("versions"):
                    result["versions"].setdefault(name.split()[0], best["versions"])
        print("\nEnergy + forces per call (reference computes " + REFERENCE_COMPUTES + ";")
        print(
            f"molfold stress: {args.molfold_stress}); best of {args.process_runs} processes' "
            f"medians over {args.repeats} calls, {args.threads} threads, seconds per call; "
            "speed-up = best reference / best molfold variant; rise = peak-RSS rise during the "
            "calls of those two, peak = their whole process's peak RSS, molfold/ref.\n"
        )
        names = [variant_name(*v) for v in variants(args)]
        print(text_table(*speed_rows(result["speed"], names)))
        for row in result["speed"]:
            if "error" not in row and not row["params_match"]:
                print(
                    f"ERROR: parameter counts differ for {row['system']}: reference "
                    f"{row['params_reference']}, molfold {row['params_molfold']}"
                )
    if args.train_budget_s > 0:
        print("", flush=True)
        result["training"] = run_training(args, env)
        _write(args.out, result)
        for side in training_sides(result["training"]):
            if result["training"][side].get("versions"):
                name = side.split()[0]
                result["versions"].setdefault(name, result["training"][side]["versions"])
        headers, body = training_rows(result["training"])
        print(f"\nTraining comparison ({result['training']['settings']})\n")
        print(text_table(headers, body))
        print(f"differences left: {result['training']['differences']}")
        for side in training_sides(result["training"]):
            if "error" in result["training"][side]:
                print(f"\n{side} training FAILED:\n{result['training'][side]['error']}")
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["markdown"] = readme_markdown(result)
    print("\n--- markdown for the README ---\n")
    print(result["markdown"])
    _write(args.out, result)
    print(f"\nwrote {args.out}")
    return result


def _write(path: Path, result: dict) -> None:
    from molfold.io import atomic_write

    atomic_write(path, json.dumps(result, indent=2, default=str))


def _failed(result: dict) -> bool:
    speed_bad = any("error" in r or not r["params_match"] for r in result.get("speed", []))
    training = result.get("training", {})
    train_bad = any("error" in training[side] for side in training_sides(training))
    return speed_bad or train_bad


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "speed", "-h", "--help"):
        argv = ["run", *argv]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="the benchmark (default): both packages, table, JSON")
    p.add_argument("--systems", nargs="+", default=list(ref.SYSTEMS))
    p.add_argument("--dtypes", nargs="+", default=list(ref.DTYPES))
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10, help="timed calls per process")
    p.add_argument("--process-runs", type=int, default=2, help="fresh processes per side")
    p.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    p.add_argument(
        "--malloc",
        nargs="+",
        choices=("default", "tuned"),
        default=["default", "tuned"],
        help=f"glibc malloc settings to run each variant with (tuned: {ref.MALLOC_TUNED_ENV})",
    )
    p.add_argument(
        "--reference-modes",
        nargs="+",
        choices=("eager", "aotinductor"),
        default=["eager", "aotinductor"],
        help="reference variants: eager, and compiled as nequip-compile --mode aotinductor does",
    )
    p.add_argument(
        "--molfold-modes",
        nargs="+",
        choices=("eager", "compiled"),
        default=["eager", "compiled"],
        help="molfold variants: eager, and compiled (molfold.compiled, Inductor)",
    )
    p.add_argument("--l-max", type=int, default=1, help="both models' l_max (tutorial: 1)")
    p.add_argument(
        "--molfold-stress",
        choices=("auto", "always", "never"),
        default="auto",
        help="molfold: stress (strain derivative) for periodic systems only / always / never",
    )
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument(
        "--train-budget-s",
        type=int,
        default=0,
        help="seconds of fitting for each package on aspirin (0: no training comparison)",
    )
    p.add_argument("--train-data", default=str(ref.ASPIRIN_NPZ))
    p.add_argument("--train-dtype", choices=ref.DTYPES, default="float32")
    p.add_argument(
        "--molfold-train-modes",
        type=lambda text: text.split(","),
        default=["eager", "compiled"],
        help="molfold training runs, comma-separated: eager (compile=false), compiled",
    )
    p.add_argument("--train-dir", help="default: runs/bench_allegro_train-<date>-<time>")
    p.add_argument("--out", type=Path, default=Path("bench_allegro.json"))

    p = sub.add_parser("speed", help="molfold worker: time one system x dtype, one JSON line")
    p.add_argument("--system", choices=ref.SYSTEMS, required=True)
    p.add_argument("--dtype", choices=ref.DTYPES, default="float32")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0, help="geometry seed")
    p.add_argument("--model-seed", type=int, default=0, help="torch.manual_seed for the weights")
    p.add_argument("--species", type=int, nargs="*", help="atomic numbers the model knows")
    p.add_argument("--stress", choices=("auto", "always", "never"), default="auto")
    p.add_argument("--expect-params", type=int, help="assert this parameter count")
    p.add_argument("--mode", choices=("eager", "compiled"), default="eager")
    p.add_argument("--l-max", type=int, default=1, help="l_max (tutorial: 1)")

    args = parser.parse_args(argv)
    if args.cmd == "speed":
        print(json.dumps(cmd_speed(args)), flush=True)
        return 0
    return 1 if _failed(cmd_run(args)) else 0


if __name__ == "__main__":
    sys.exit(main())
