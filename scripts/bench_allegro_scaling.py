"""Benchmark: cost per atom of molfold's Allegro on fcc Cu cells from about 1,000 to 100,000 atoms.

The tutorial model (``configs/model/allegro.yaml``, random weights, the cell's mean neighbour count
as ``avg_num_neighbors``), float32, compiled (:mod:`molfold.compiled`; ``--mode eager`` for the
eager model), energy + forces + stress per call. Each cell size runs in a fresh process, so the
peak memory is that size's own. Per call: the neighbour list (vesin, through ``atoms_to_graph``,
as the calculator builds it) and the model call are timed separately; peak RSS is the process's
high-water mark over both, above its RSS before the cell was built. Prints a table (per atom:
microseconds and kilobytes) and the same as two mermaid charts for the README, writes JSON and a
plot::

    .venv/bin/python scripts/bench_allegro_scaling.py --out runs/bench_scaling.json \\
        --plot runs/bench_scaling.png

``cell`` is the worker: one size, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench_machine import machine_info, text_table  # scripts/ is on sys.path when run as a script

THIS = Path(__file__).resolve()
REPETITIONS = (7, 10, 15, 22, 30)
"""Cubic fcc cells of 4 n^3 atoms: 1,372, 4,000, 13,500, 42,592 and 108,000."""


def cmd_cell(args) -> dict:
    import torch
    from bench_allegro import molfold_hparams
    from bench_allegro_reference import copper_cell, peak_rss_mib, reset_peak_rss, system_summary

    from molfold.compiled.potential import compile_potential
    from molfold.data.neighbors import atoms_to_graph
    from molfold.models.registry import build_model

    torch.set_num_threads(args.threads)
    rss_start = reset_peak_rss()
    atoms = copper_cell(args.reps)
    hp = molfold_hparams()
    hp["avg_num_neighbors"] = system_summary([copper_cell(4)], hp["r_max"])["avg_num_neighbors"]
    torch.manual_seed(0)
    potential = build_model("allegro", hp, {"species": [29]}, "float32").eval()
    model = compile_potential(potential) if args.mode == "compiled" else potential
    graph_s, model_s = [], []
    for call in range(args.warmup + args.repeats):
        atoms.rattle(0.01, seed=call)  # a new geometry every call, as in MD
        start = time.perf_counter()
        graph = atoms_to_graph(atoms, hp["r_max"])
        middle = time.perf_counter()
        with torch.enable_grad():
            model(graph, compute_forces=True, compute_stress=True)
        end = time.perf_counter()
        if call >= args.warmup:
            graph_s.append(middle - start)
            model_s.append(end - middle)
    n_atoms, n_edges = len(atoms), int(graph.edge_index.shape[1])
    peak = peak_rss_mib() - rss_start
    return {
        "reps": args.reps,
        "mode": args.mode,
        "n_atoms": n_atoms,
        "n_edges": n_edges,
        "graph_s": statistics.median(graph_s),
        "model_s": statistics.median(model_s),
        "us_per_atom": 1e6 * (statistics.median(graph_s) + statistics.median(model_s)) / n_atoms,
        "peak_rss_rise_mib": peak,
        "kb_per_atom": 1024.0 * peak / n_atoms,
        "threads": args.threads,
        "repeats": args.repeats,
    }


def cmd_run(args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    result = {"benchmark": "allegro scaling, fcc Cu", "machine": machine_info(args.threads)}
    result["settings"] = {"mode": args.mode, "repeats": args.repeats, "reps": args.reps}
    rows = []
    for reps in args.reps:
        cmd = [sys.executable, str(THIS), "cell", "--reps", str(reps), "--mode", args.mode]
        cmd += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            rows.append({"reps": reps, "error": proc.stderr.strip().splitlines()[-1:]})
            print(f"  {4 * reps**3:7d} atoms: FAILED {rows[-1]['error']}", flush=True)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"  {r['n_atoms']:7d} atoms: {r['us_per_atom']:.1f} us/atom, "
              f"{r['kb_per_atom']:.1f} kB/atom", flush=True)  # fmt: skip
    result["cells"] = rows
    good = [r for r in rows if "error" not in r]
    if good:
        low = min(good, key=lambda r: r["n_atoms"])
        for r in good:
            r["time_per_atom_vs_smallest"] = r["us_per_atom"] / low["us_per_atom"]
            r["memory_per_atom_vs_smallest"] = r["kb_per_atom"] / low["kb_per_atom"]
    headers = ["atoms", "edges", "graph s", "model s", "us/atom", "kB/atom", "time x", "memory x"]
    body = [
        [
            f"{r['n_atoms']:,}", f"{r['n_edges']:,}", f"{r['graph_s']:.3f}", f"{r['model_s']:.3f}",
            f"{r['us_per_atom']:.1f}", f"{r['kb_per_atom']:.1f}",
            f"{r['time_per_atom_vs_smallest']:.2f}", f"{r['memory_per_atom_vs_smallest']:.2f}",
        ]
        for r in good
    ]  # fmt: skip
    title = "Cu fcc, energy + forces + stress per call (with the neighbour list), float32"
    print(f"\n{title}, {args.mode}, {args.threads} threads; x: per atom, over the smallest\n")
    print(text_table(headers, body))
    if good:
        print(f"\n--- charts for the README ---\n\n{mermaid_charts(good)}\n")
    if args.plot and good:
        plot(good, args.plot, result["machine"]["cpu_model"])
        print(f"wrote {args.plot}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


def mermaid_charts(rows: list[dict]) -> str:
    """Two mermaid ``xychart-beta`` blocks for the README: µs per atom and peak memory rise
    (GiB), each against the number of atoms."""
    labels = ", ".join(f'"{r["n_atoms"]:,}"' for r in rows)
    charts = []
    for title, axis, values in (
        ("Time per atom per call (neighbour list + model)", "µs per atom",
         [r["us_per_atom"] for r in rows]),
        ("Peak memory rise", "GiB", [r["peak_rss_rise_mib"] / 1024 for r in rows]),
    ):  # fmt: skip
        top = max(values) * 1.25
        charts.append(
            "```mermaid\nxychart-beta\n"
            f'    title "{title}"\n'
            f'    x-axis "atoms" [{labels}]\n'
            f'    y-axis "{axis}" 0 --> {top:.3g}\n'
            f"    line [{', '.join(f'{v:.3g}' for v in values)}]\n```"
        )
    return "\n\n".join(charts)


def plot(rows: list[dict], path: Path, machine: str) -> None:
    """Time per atom, and peak memory, against the number of atoms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atoms = [r["n_atoms"] for r in rows]
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    time_axis.plot(atoms, [r["us_per_atom"] for r in rows], "o-")
    time_axis.set(xscale="log", xlabel="atoms", ylabel="µs per atom per call", ylim=(0, None))
    memory_axis.plot(atoms, [r["peak_rss_rise_mib"] / 1024 for r in rows], "o-", color="C1")
    memory_axis.set(xlabel="atoms", ylabel="peak memory rise, GiB", ylim=(0, None))
    figure.suptitle(f"molfold Allegro, fcc Cu, float32, energy + forces + stress ({machine})")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "cell", "-h", "--help"):
        argv = ["run", *argv]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("run", "cell"):
        p = sub.add_parser(name)
        p.add_argument("--mode", choices=("compiled", "eager"), default="compiled")
        p.add_argument("--repeats", type=int, default=5)
        p.add_argument("--warmup", type=int, default=2)
        p.add_argument("--threads", type=int, default=2)
        if name == "run":
            p.add_argument("--reps", type=int, nargs="+", default=list(REPETITIONS))
            p.add_argument("--out", type=Path, default=Path("bench_allegro_scaling.json"))
            p.add_argument("--plot", type=Path, help="write a PNG of time and memory per atom")
        else:
            p.add_argument("--reps", type=int, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "cell":
        print(json.dumps(cmd_cell(args)), flush=True)
        return 0
    return 0 if all("error" not in r for r in cmd_run(args)["cells"]) else 1


if __name__ == "__main__":
    sys.exit(main())
