"""Benchmark: cost per atom of molfold's Allegro on fcc Cu cells from about 1,000 to 100,000 atoms.

The tutorial model (``configs/model/allegro.yaml``, random weights, the cell's mean neighbour count
as ``avg_num_neighbors``), float32, compiled (:mod:`molfold.compiled`; ``--mode eager`` for the
eager model), energy + forces + stress per call. The model is first built, compiled and called
on a small cell (:data:`WARMUP_REPETITIONS`, two blocks of edges), as an MD run's first steps
would; the process's RSS then is the fixed part (Python, torch, the model, the compiled code).

Time: one process takes every size in turn, round after round (``--rounds``), so that all sizes
see the same machine load (on a shared 2-core machine it drifts by 30 % within minutes; sizes in
separate processes compared runs minutes apart). Per call, the neighbour list (vesin, through
``atoms_to_graph``, as the calculator builds it) and the model call are timed separately; each
size's row is its median over the rounds.

Memory: each size in a fresh process, so the peak is its own. One call is tracked by memray
(the ``bench`` extra), which records every allocation (numpy, vesin, torch, the compiled
kernels) and gives the peak of what the call allocated and held at once; the same for a call
on the warm-up cell gives one block's temporaries (the same in every cell). Memory per atom is
the call's peak above that, over the atoms beyond the warm-up cell's. The RSS rise over the
calls is reported too, but it moves by megabytes with what the allocator kept from earlier
calls, too much for small cells. Prints a table (per atom: microseconds and kilobytes) and the
same as two mermaid charts for the README, writes JSON and a
plot::

    .venv/bin/python scripts/bench_allegro_scaling.py --out runs/bench_scaling.json \\
        --plot runs/bench_scaling.png

``times`` and ``memory`` are the workers; each prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench_machine import machine_info, text_table  # scripts/ is on sys.path when run as a script

THIS = Path(__file__).resolve()
REPETITIONS = (7, 10, 15, 22, 30)
"""Cubic fcc cells of 4 n^3 atoms: 1,372, 4,000, 13,500, 42,592 and 108,000."""
WARMUP_REPETITIONS = 3
WARMUP_CELL_ATOMS = 4 * WARMUP_REPETITIONS**3
"""The warm-up cell: 108 atoms, 4,644 edges, more than one block (4,096 edges at l_max 1)."""


def tracked_peak_mib(call: Callable[[], None]) -> float | None:
    """The peak of the memory allocated during ``call()`` and live at once (every allocation:
    numpy, vesin, torch, compiled kernels), MiB, as memray records it; None without memray.
    Unlike the RSS, it does not depend on what the allocator kept from earlier calls."""
    try:
        import memray
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "call.bin"
        with memray.Tracker(path):
            call()
        return memray.FileReader(path).metadata.peak_memory / 2**20


def prepared_model(args) -> tuple[Callable, object, float]:
    """The tutorial model (compiled unless ``--mode eager``), warmed up on the warm-up cell:
    ``(step, warmup_cell, fixed MiB)``. ``step(atoms)`` is one MD step's call (neighbour list,
    then energy, forces and stress; the graph is gone before the next step builds its own, as in
    the calculator) and returns the seconds of both parts and the number of edges."""
    import torch
    from bench_allegro import molfold_hparams
    from bench_allegro_reference import copper_cell, peak_rss_mib, reset_peak_rss, system_summary

    from molfold.compiled.potential import compile_potential
    from molfold.data.neighbors import atoms_to_graph
    from molfold.models.registry import build_model

    torch.set_num_threads(args.threads)
    rss_start = reset_peak_rss()
    hp = molfold_hparams()
    hp["avg_num_neighbors"] = system_summary([copper_cell(4)], hp["r_max"])["avg_num_neighbors"]
    torch.manual_seed(0)
    potential = build_model("allegro", hp, {"species": [29]}, "float32").eval()
    model = compile_potential(potential) if args.mode == "compiled" else potential

    def step(atoms) -> tuple[float, float, int]:
        start = time.perf_counter()
        graph = atoms_to_graph(atoms, hp["r_max"])
        middle = time.perf_counter()
        with torch.enable_grad():
            model(graph, compute_forces=True, compute_stress=True)
        return middle - start, time.perf_counter() - middle, int(graph.edge_index.shape[1])

    warmup_cell = copper_cell(WARMUP_REPETITIONS)
    for _ in range(2):
        step(warmup_cell)
    return step, warmup_cell, peak_rss_mib() - rss_start


def cmd_times(args) -> list[dict]:
    """Every size in one process, in turn, ``args.warmup`` + ``args.rounds`` rounds."""
    from bench_allegro_reference import copper_cell

    step, _, _ = prepared_model(args)
    cells = {reps: copper_cell(reps) for reps in args.reps}
    seconds: dict[int, list[tuple[float, float]]] = {reps: [] for reps in args.reps}
    edges = {}
    for round_ in range(args.warmup + args.rounds):
        for reps, atoms in cells.items():
            atoms.rattle(0.01, seed=round_)  # a new geometry every call, as in MD
            graph_s, model_s, edges[reps] = step(atoms)
            if round_ >= args.warmup:
                seconds[reps].append((graph_s, model_s))
    rows = []
    for reps, atoms in cells.items():
        graph_s = statistics.median(g for g, _ in seconds[reps])
        model_s = statistics.median(m for _, m in seconds[reps])
        rows.append(
            {
                "reps": reps,
                "n_atoms": len(atoms),
                "n_edges": edges[reps],
                "graph_s": graph_s,
                "model_s": model_s,
                "us_per_atom": 1e6 * (graph_s + model_s) / len(atoms),
                "call_s": [g + m for g, m in seconds[reps]],
            }
        )
    return rows


def cmd_memory(args) -> dict:
    """One size in this (fresh) process: fixed RSS, RSS rise and memray peaks."""
    from bench_allegro_reference import copper_cell, peak_rss_mib, reset_peak_rss

    step, warmup_cell, fixed = prepared_model(args)
    workspace = tracked_peak_mib(lambda: step(warmup_cell))
    rss_cell = reset_peak_rss()
    atoms = copper_cell(args.reps)
    for call in range(args.warmup):
        atoms.rattle(0.01, seed=call)
        step(atoms)
    rss_rise = peak_rss_mib() - rss_cell
    call_peak = tracked_peak_mib(lambda: step(atoms))
    n_atoms = len(atoms)
    record = {
        "reps": args.reps,
        "n_atoms": n_atoms,
        "fixed_mib": fixed,
        "rss_rise_mib": rss_rise,
        "call_peak_mib": call_peak,
        "workspace_mib": workspace,
    }
    if call_peak is None:  # no memray: the RSS rise over the calls, per atom
        record["kb_per_atom"] = 1024.0 * rss_rise / n_atoms
    else:  # above the warm-up cell's call: one block's temporaries, the same in every cell
        record["kb_per_atom"] = 1024.0 * (call_peak - workspace) / (n_atoms - WARMUP_CELL_ATOMS)
    return record


def run_worker(args, command: str, reps: Sequence[int], env: dict) -> dict | list:
    """This script's ``command`` worker in a fresh process; its JSON line, or {"error": ...}."""
    cmd = [sys.executable, str(THIS), command, "--reps", *map(str, reps), "--mode", args.mode]
    cmd += ["--warmup", str(args.warmup), "--threads", str(args.threads)]
    if command == "times":
        cmd += ["--rounds", str(args.rounds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cmd_run(args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    result = {"benchmark": "allegro scaling, fcc Cu", "machine": machine_info(args.threads)}
    result["settings"] = {
        "mode": args.mode, "rounds": args.rounds, "warmup": args.warmup, "reps": args.reps,
    }  # fmt: skip
    print(f"  timing {len(args.reps)} sizes in one process, {args.rounds} rounds", flush=True)
    times = run_worker(args, "times", args.reps, env)
    if isinstance(times, dict):  # failed
        times = [dict(times, reps=reps) for reps in args.reps]
    rows = []
    for timing in times:
        memory = run_worker(args, "memory", [timing["reps"]], env)
        rows.append({**timing, **memory})
        r = rows[-1]
        if "error" in r:
            print(f"  {4 * r['reps'] ** 3:7d} atoms: FAILED {r['error']}", flush=True)
        else:
            print(f"  {r['n_atoms']:7d} atoms: {r['us_per_atom']:.1f} us/atom, "
                  f"{r['kb_per_atom']:.2f} kB/atom", flush=True)  # fmt: skip
    result["cells"] = rows
    good = [r for r in rows if "error" not in r]
    if good:
        low = min(good, key=lambda r: r["n_atoms"])
        for r in good:
            r["time_per_atom_vs_smallest"] = r["us_per_atom"] / low["us_per_atom"]
            r["memory_per_atom_vs_smallest"] = r["kb_per_atom"] / low["kb_per_atom"]
    headers = ["atoms", "edges", "graph s", "model s", "us/atom", "call peak MiB", "kB/atom"]
    headers += ["time x", "memory x", "RSS rise MiB"]
    body = [
        [
            f"{r['n_atoms']:,}", f"{r['n_edges']:,}", f"{r['graph_s']:.3f}", f"{r['model_s']:.3f}",
            f"{r['us_per_atom']:.1f}", _mib(r["call_peak_mib"]), f"{r['kb_per_atom']:.2f}",
            f"{r['time_per_atom_vs_smallest']:.2f}", f"{r['memory_per_atom_vs_smallest']:.2f}",
            _mib(r["rss_rise_mib"]),
        ]
        for r in good
    ]  # fmt: skip
    title = "Cu fcc, energy + forces + stress per call (with the neighbour list), float32"
    print(f"\n{title}, {args.mode}, {args.threads} threads; x: per atom, over the smallest\n")
    print(text_table(headers, body))
    if good:
        fixed, workspace = _mib(good[0]["fixed_mib"]), _mib(good[0]["workspace_mib"])
        print(f"\nfixed: {fixed} MiB of RSS after the warm-up (Python, torch, model, compiled "
              f"code); a call on the {WARMUP_CELL_ATOMS}-atom warm-up cell peaks at {workspace} "
              "MiB (one block's temporaries); kB/atom: the call's peak above that")  # fmt: skip
        print(f"\n--- charts for the README ---\n\n{mermaid_charts(good)}\n")
    if args.plot and good:
        plot(good, args.plot, result["machine"]["cpu_model"])
        print(f"wrote {args.plot}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def mermaid_charts(rows: list[dict]) -> str:
    """Two mermaid ``xychart-beta`` blocks for the README: µs and kB (the call's peak memory
    above one block's temporaries) per atom, each against the number of atoms."""
    labels = ", ".join(f'"{r["n_atoms"]:,}"' for r in rows)
    charts = []
    for title, axis, values in (
        ("Time per atom per call (neighbour list + model)", "µs per atom",
         [r["us_per_atom"] for r in rows]),
        ("Peak memory per atom (above one block's temporaries)", "kB per atom",
         [r["kb_per_atom"] for r in rows]),
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
    """Time and peak memory per atom against the number of atoms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    atoms = [r["n_atoms"] for r in rows]
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    time_axis.plot(atoms, [r["us_per_atom"] for r in rows], "o-")
    time_axis.set(xscale="log", xlabel="atoms", ylabel="µs per atom per call", ylim=(0, None))
    memory_axis.plot(atoms, [r["kb_per_atom"] for r in rows], "o-", color="C1")
    memory_axis.set(xscale="log", xlabel="atoms", ylabel="peak memory, kB per atom", ylim=(0, None))
    figure.suptitle(f"molfold Allegro, fcc Cu, float32, energy + forces + stress ({machine})")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "times", "memory", "-h", "--help"):
        argv = ["run", *argv]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("run", "times", "memory"):
        p = sub.add_parser(name)
        p.add_argument("--mode", choices=("compiled", "eager"), default="compiled")
        p.add_argument("--warmup", type=int, default=2, help="untimed rounds (calls) first")
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--reps", type=int, nargs="+", default=list(REPETITIONS))
        if name in ("run", "times"):
            p.add_argument("--rounds", type=int, default=5, help="timed calls per size")
        if name == "run":
            p.add_argument("--out", type=Path, default=Path("bench_allegro_scaling.json"))
            p.add_argument("--plot", type=Path, help="write a PNG of time and memory per atom")
    args = parser.parse_args(argv)
    if args.cmd == "times":
        print(json.dumps(cmd_times(args)), flush=True)
        return 0
    if args.cmd == "memory":
        (args.reps,) = args.reps
        print(json.dumps(cmd_memory(args)), flush=True)
        return 0
    return 0 if all("error" not in r for r in cmd_run(args)["cells"]) else 1


if __name__ == "__main__":
    sys.exit(main())
