"""Benchmark: molfold's Equiformer (speed, memory, learning curves, OC20-format set, reference).

Parts (``--parts``, comma-separated; default all):

``throughput``  training (forward + backward + AdamW step) and inference (property: forward;
                potential: energy + autograd forces) molecules/s, float32, median of repeats
                after warm-up, each setting x mode in a fresh subprocess that also reports its
                peak memory (CUDA: max_memory_allocated; CPU: peak RSS above the RSS before the
                first call, model and batch built, from /proc VmHWM after resetting it, else
                ru_maxrss; training includes the AdamW state). Settings:
                ``qm9`` = the paper's full property model (configs/model/equiformer.yaml,
                3.53 M parameters) on randomly drawn real QM9 molecules; ``md17`` = the full L2
                potential with configs/preset/equiformer_md17.yaml on the shipped aspirin frames.
``curve``       data.target=homo learning curve: ``molfold train`` (compose + train, with an
                epoch timer callback) on a random QM9 subset for ``--budget-minutes`` of
                trainer.max_time; validation and test MAE (meV) against wall time, plotted to
                ``<workdir>/bench_equiformer_curve.png``, next to the paper's 15 meV.
``oc20``        the shipped EMT OC20-format set (data/oc20_emt, NOT OC20): S2EF potential and
                IS2RE property model (the OC20 preset, reduced in size), with baselines
                computed here on the same splits.
``reference``   atomicarchitects/equiformer at ``--reference PATH`` against molfold, same QM9
                batch and irreps, forward and forward + backward (shims, see below).
``gpu_epoch``   on CUDA only: one full QM9 epoch (110,000 molecules, batch 128) vs 12.1 min.

Everything is written to ``--output`` (JSON); run artefacts go to ``--workdir`` (default a
folder in /tmp), never into the repository. Timings on a shared machine swing: compare ratios
taken within one run. ``--quick`` is a ~2 minute smoke run; the default run takes <= ~25 min on
two CPU cores::

    .venv/bin/python scripts/bench_equiformer.py --reference /tmp/eqref_bench
    .venv/bin/python scripts/bench_equiformer.py --quick --parts throughput,oc20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench_equiformer_parts import (
    ASPIRIN,
    MD17_MODEL,
    PAPER,
    QM9_MODEL,
    fmt,
    md17_sample,
    part_curve,
    part_oc20,
    qm9_sample,
    table,
)
from bench_equiformer_workers import OMP_ENV, run_worker, worker_main
from bench_machine import machine_info  # scripts/ is on sys.path when run as a script

SETTINGS = {
    "default": dict(
        qm9_batch=32,
        qm9_infer_batch=64,
        md17_batch=8,
        repeats=5,
        warmup=2,
        qm9_pool=None,
        curve_pool=None,
        curve_train=1000,
        curve_val=250,
        curve_test=500,
        curve_model="small",
        s2ef_minutes=3.0,
        is2re_minutes=1.5,
        ref_batch=32,
    ),
    "quick": dict(
        qm9_batch=8,
        qm9_infer_batch=8,
        md17_batch=2,
        repeats=2,
        warmup=1,
        qm9_pool=3000,
        curve_pool=180,  # the first 180 hold no F: every species trains
        curve_train=130,
        curve_val=25,
        curve_test=25,
        curve_model="small",
        s2ef_minutes=0.3,
        is2re_minutes=0.2,
        ref_batch=8,
    ),
}


# ----------------------------------------------------------------------------------------------
# parts (main process)
# ----------------------------------------------------------------------------------------------


def part_throughput(args, s: dict, workdir: Path) -> dict:
    qm9 = qm9_sample(
        max(s["qm9_batch"], s["qm9_infer_batch"], s["ref_batch"]),
        s["qm9_pool"],
        workdir / "qm9_sample.pt",
    )
    md17 = md17_sample(s["md17_batch"], workdir / "md17_sample.pt")
    cases = [
        ("qm9", "train", s["qm9_batch"], qm9, QM9_MODEL),
        ("qm9", "infer", s["qm9_infer_batch"], qm9, QM9_MODEL),
        ("md17", "train", s["md17_batch"], md17, MD17_MODEL),
        ("md17", "infer", s["md17_batch"], md17, MD17_MODEL),
    ]
    rows = []
    for setting, mode, batch, path, overrides in cases:
        spec = dict(
            setting=setting,
            mode=mode,
            batch=batch,
            structures=str(path),
            overrides=overrides,
            warmup=s["warmup"],
            repeats=s["repeats"],
        )
        rows.append(run_worker("throughput", spec, workdir, args.threads))
        print(
            f"  throughput {setting} {mode}: {rows[-1].get('molecules_per_s', rows[-1])}",
            flush=True,
        )
    ok = [r for r in rows if "error" not in r]
    print(
        table(
            "Throughput and peak memory (float32, median of "
            f"{s['repeats']} after {s['warmup']} warm-up)",
            ["setting", "mode", "params", "batch", "atoms", "edges", "s/call", "mol/s", "peak MiB"],
            [
                [
                    r["setting"],
                    r["mode"],
                    f"{r['parameters']:,}",
                    r["batch"],
                    r["atoms"],
                    r["edges"],
                    fmt(r["median_s"]),
                    fmt(r["molecules_per_s"]),
                    fmt(r["peak_memory_increase_MiB"], ".0f"),
                ]
                for r in ok
            ],
        )
    )
    if ok:
        print(f"memory: {ok[0]['memory_method']}; paper batches 128 (QM9) / 8 (MD17)")
    return {
        "qm9_sample": "random molecules of QM9 (seed 0), radius graph 5 A, untimed",
        "md17_sample": f"random frames of {ASPIRIN.name} (seed 0)",
        "rows": rows,
    }


def part_reference(args, s: dict, workdir: Path) -> dict:
    needed = (
        "needs --reference PATH: a checkout of atomicarchitects/equiformer (e.g. git clone "
        "https://github.com/atomicarchitects/equiformer; @64cb786 was used). torch_scatter, "
        "torch_cluster and ocpmodels need not be installed: shims replace them in the "
        "benchmark's worker process only"
    )
    if not args.reference:
        print(f"\n== Reference: skipped; {needed}")
        return {"skipped": needed}
    if not (Path(args.reference) / "nets" / "graph_attention_transformer.py").is_file():
        return {"error": f"{args.reference} has no nets/graph_attention_transformer.py"}
    sample = workdir / "qm9_sample.pt"
    if not sample.exists():
        qm9_sample(s["ref_batch"], s["qm9_pool"], sample)
    result = run_worker(
        "reference",
        dict(
            reference=str(Path(args.reference).resolve()),
            structures=str(sample),
            batch=s["ref_batch"],
            overrides=QM9_MODEL,
            warmup=s["warmup"],
            repeats=s["repeats"],
        ),
        workdir,
        args.threads,
    )
    if "error" in result:
        print(result["error"])
        return result
    rows = [
        [
            name,
            f"{result[name]['parameters']:,}",
            fmt(result[name]["forward_s"]),
            fmt(result[name]["forward_backward_s"]),
        ]
        for name in ("molfold", "reference")
    ]
    rows.append(
        [
            "molfold / reference",
            "",
            fmt(result["ratio_forward_s_molfold_over_reference"]),
            fmt(result["ratio_forward_backward_s_molfold_over_reference"]),
        ]
    )
    print(
        table(
            f"molfold vs reference QM9 model (same {result['batch']} molecules, "
            f"{result['atoms']} atoms, edges {result['edges_molfold']} / "
            f"{result['edges_reference']}, float32, {result['threads']} threads)",
            ["model", "params", "forward s", "fwd+bwd s"],
            rows,
        )
    )
    print(
        f"reference times include its radius graph (shim, {result['radius_graph_shim_s']:.4f} "
        "s per call); shims used: " + "; ".join(f"{k} -> {v}" for k, v in result["shims"].items())
    )
    return result


def part_gpu_epoch(args, s: dict, workdir: Path) -> dict:
    import torch

    if not torch.cuda.is_available():
        message = (
            "one full QM9 epoch (110,000 molecules, batch 128; reference 12.1 min on one "
            "GPU) needs a GPU: torch.cuda.is_available() is False here"
        )
        print(f"\n== GPU epoch: skipped; {message}")
        return {"skipped": message}
    sample = qm9_sample(110_000, None, workdir / "qm9_110k.pt")
    result = run_worker(
        "epoch", dict(structures=str(sample), overrides=QM9_MODEL), workdir, args.threads
    )
    if "error" not in result:
        result["reference_min"] = PAPER["qm9_epoch_min_gpu"]
        print(
            table(
                "One QM9 epoch on GPU",
                ["molecules", "batch", "min", "reference min"],
                [[result["molecules"], 128, fmt(result["minutes"]), 12.1]],
            )
        )
    return result


PARTS = {
    "throughput": part_throughput,
    "curve": part_curve,
    "oc20": part_oc20,
    "reference": part_reference,
    "gpu_epoch": part_gpu_epoch,
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated of {', '.join(PARTS)}"
    )
    p.add_argument("--quick", action="store_true", help="~2 minute smoke run")
    p.add_argument("--output", default="bench_equiformer.json")
    p.add_argument(
        "--workdir", default=None, help="run artefacts (default /tmp/bench_equiformer_*)"
    )
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="trainer.max_time of the QM9 curve (default 12, quick 0.5)",
    )
    p.add_argument("--reference", default=None, help="checkout of atomicarchitects/equiformer")
    for key, value in SETTINGS["default"].items():
        kind = type(value) if value is not None else int
        p.add_argument(
            f"--{key.replace('_', '-')}", type=kind, default=None, help=f"default {value}"
        )
    p.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(*args.worker)
        return 0
    import torch

    from molfold.io import atomic_write

    s = dict(SETTINGS["quick" if args.quick else "default"])
    s.update({k: getattr(args, k) for k in s if getattr(args, k) is not None})
    args.budget_minutes = args.budget_minutes or (0.5 if args.quick else 12.0)
    workdir = Path(args.workdir or f"/tmp/bench_equiformer_{time.strftime('%Y%m%d-%H%M%S')}")
    workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    result = {
        "machine": {
            **machine_info(args.threads),
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
            "worker_env": OMP_ENV,
        },
        "settings": s,
        "paper": PAPER,
        "workdir": str(workdir),
        "parts": {},
    }
    start = time.perf_counter()
    for name in [p.strip() for p in args.parts.split(",") if p.strip()]:
        part_start = time.perf_counter()
        result["parts"][name] = PARTS[name](args, s, workdir)
        result["parts"][name]["part_wall_s"] = time.perf_counter() - part_start
        atomic_write(args.output, json.dumps(result, indent=2, default=str))
    result["machine"]["load_average_end"] = list(os.getloadavg())
    result["total_wall_s"] = time.perf_counter() - start
    atomic_write(args.output, json.dumps(result, indent=2, default=str))
    print(
        f"\nwrote {args.output} ({result['total_wall_s'] / 60:.1f} min; load average "
        f"{result['machine']['load_average_start'][0]:.2f} at start, "
        f"{result['machine']['load_average_end'][0]:.2f} at end)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
