"""Benchmark (not a test): molfold Allegro in LAMMPS on 1, 2, ... MPI ranks against the same model
through ASE on one process, on fcc Cu cells of 4,000 to 100,000 atoms.

    python scripts/bench_lammps.py                       # sizes 4,000 32,000 108,000; 1 and 2 ranks
    python scripts/bench_lammps.py --ranks 1 2 4 --oversubscribe   # 4 ranks on a 2-core machine
    python scripts/bench_lammps.py --sizes 4000 --steps 20 --json bench_lammps.json

Each case runs ``mpirun -np R molfold lammps`` on an NVE input (velocities at 300 K, 1 fs steps):
one warm-up step, then ``--steps`` timed steps, read from LAMMPS's "Loop time" line. The driver's
own summary gives the milliseconds per force call spent building the graph (and moving arrays
to and from LAMMPS), in the model and in MPI, so the overhead of the Python callback is measured
against the model's cost. The ASE reference is one process with all cores as torch threads,
``MolfoldCalculator`` and velocity Verlet on the same cell.

Strong scaling: one cell size on R ranks, speed-up and efficiency against one rank. Weak scaling:
``--weak-atoms`` atoms per rank, efficiency against one rank. Ranks beyond the cores share them
(``--oversubscribe``), which shows that the decomposition works, not how fast it is. On GPUs,
one rank per GPU (``pair_style molfold MODEL`` picks ``cuda:<local rank>``).
Prints tables and writes JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_machine import machine_info, text_table  # scripts/ is on sys.path as a script

from molfold.io import atomic_write
from molfold.models.checkpoint import load_model
from molfold.shipped import shipped_data

LATTICE = 3.59  # Angstrom, near the EMT / model lattice constant of Cu
BIN = Path(sys.executable).parent
INPUT = """units metal
atom_style atomic
lattice fcc {lattice}
region box block 0 {n} 0 {n} 0 {n}
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style molfold {model}{dtype}
pair_coeff * * Cu
velocity all create 300 42 dist gaussian
fix nve all nve
thermo 100
run 1
run {steps}
"""
LOOP = re.compile(r"Loop time of ([\d.eE+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms")
SUMMARY = re.compile(
    r"graph and transfers ([\d.eE+-]+) \(([\d.eE+-]+)\), model ([\d.eE+-]+) \(([\d.eE+-]+)\), "
    r"MPI ([\d.eE+-]+) \(([\d.eE+-]+)\)"
)


def cells_for(atoms: int) -> int:
    """Conventional fcc cells per side of the cube closest to ``atoms`` atoms (4 per cell)."""
    return max(1, round((atoms / 4) ** (1 / 3)))


def lammps_case(
    model: str, n: int, ranks: int, steps: int, dtype: str | None, extra: list[str], threads: int
) -> dict:
    """One ``mpirun -np ranks molfold lammps`` run with ``threads`` torch threads per rank."""
    with tempfile.TemporaryDirectory(prefix="bench-lammps-") as folder:
        script = INPUT.format(
            lattice=LATTICE, n=n, model=model, steps=steps,
            dtype=f" dtype {dtype}" if dtype else "",
        )  # fmt: skip
        Path(folder, "in.bench").write_text(script)
        command = [str(BIN / "mpirun"), *extra, "-np", str(ranks), str(BIN / "molfold")]
        command += ["lammps", "in.bench", "-log", "none"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr}")
    seconds, _, timed_steps, atoms = LOOP.findall(done.stdout)[-1]
    graph, graph_max, model_ms, model_max, mpi, mpi_max = map(
        float, SUMMARY.search(done.stdout).groups()
    )
    step_seconds = float(seconds) / int(timed_steps)
    return {
        "engine": "lammps",
        "ranks": ranks,
        "atoms": int(atoms),
        "steps": int(timed_steps),
        "seconds_per_step": step_seconds,
        "steps_per_second": 1 / step_seconds,
        "atom_steps_per_second": int(atoms) / step_seconds,
        "ms_per_call": {"graph": graph, "model": model_ms, "mpi": mpi},
        "ms_per_call_max_rank": {"graph": graph_max, "model": model_max, "mpi": mpi_max},
    }


def ase_case(model: str, n: int, steps: int, dtype: str | None, threads: int) -> dict:
    """The same cell and dynamics through MolfoldCalculator and ASE on one process with
    ``threads`` torch threads."""
    import torch
    from ase import units
    from ase.build import bulk
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from molfold import MolfoldCalculator

    torch.set_num_threads(threads)
    atoms = bulk("Cu", "fcc", a=LATTICE, cubic=True) * (n, n, n)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(42))
    Stationary(atoms)
    calculator = MolfoldCalculator(model)
    if dtype:
        calculator.potential.to(getattr(torch, dtype))
    atoms.calc = calculator
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    dynamics.run(1)
    start = time.perf_counter()
    dynamics.run(steps)
    step_seconds = (time.perf_counter() - start) / steps
    return {
        "engine": "ase",
        "ranks": 1,
        "atoms": len(atoms),
        "steps": steps,
        "seconds_per_step": step_seconds,
        "steps_per_second": 1 / step_seconds,
        "atom_steps_per_second": len(atoms) / step_seconds,
        "torch_threads": torch.get_num_threads(),
    }


def neighbour_list_case(n: int, r_max: float) -> dict:
    """Reusing LAMMPS's neighbour list against vesin, on one process: LAMMPS's half list of the
    zero pair style (cutoff r_max, plus the skin) read into Python atom by atom (the only way its
    library interface offers), against vesin's full list of the periodic cell."""
    from molfold.data.neighbors import neighbor_list
    from molfold.lammps.driver import import_mpi_and_lammps, lammps_cell

    _, lammps = import_mpi_and_lammps()
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none"])
    setup = INPUT.split("pair_style")[0].format(lattice=LATTICE, n=n)
    lmp.commands_string(setup + f"pair_style zero {r_max}\npair_coeff * *\nrun 0\n")
    start = time.perf_counter()
    neighbours = lmp.numpy.get_neighlist(lmp.find_pair_neighlist("zero"))
    pairs = sum(len(neighbours.get(k)[1]) for k in range(len(neighbours)))
    lammps_seconds = time.perf_counter() - start
    nlocal = lmp.extract_global("nlocal")
    positions = np.array(lmp.numpy.extract_atom("x", nelem=nlocal, dim=3))
    cell, pbc = lammps_cell(lmp)
    start = time.perf_counter()
    edges = neighbor_list(positions, r_max, cell, pbc)[0].shape[1]
    vesin_seconds = time.perf_counter() - start
    lmp.close()
    return {"atoms": nlocal, "lammps_half_list_ms": 1e3 * lammps_seconds, "lammps_pairs": pairs,
            "vesin_full_list_ms": 1e3 * vesin_seconds, "vesin_edges": edges}  # fmt: skip


def scaling_rows(records: list[dict], weak: bool) -> list[list[str]]:
    """Rows of a scaling table: speed-up and efficiency of each LAMMPS run against one rank
    (strong: same atoms; weak: same atoms per rank, efficiency = t(1) / t(R))."""
    rows = []
    for record in records:
        base = next(
            r for r in records
            if r["ranks"] == 1 and (weak or r["atoms"] == record["atoms"])
        )  # fmt: skip
        ratio = base["seconds_per_step"] / record["seconds_per_step"]
        speedup = ratio * (record["atoms"] / base["atoms"] if weak else 1)
        efficiency = speedup / record["ranks"]
        ms = record["ms_per_call"]
        rows.append(
            [
                f"{record['atoms']:,}",
                str(record["ranks"]),
                f"{record['steps_per_second']:.3g}",
                f"{record['atom_steps_per_second']:,.0f}",
                f"{speedup:.2f}",
                f"{efficiency:.0%}",
                f"{ms['graph']:.3g} / {ms['model']:.3g} / {ms['mpi']:.3g}",
            ]
        )
    return rows


HEADERS = ["atoms", "ranks", "steps/s", "atom-steps/s", "speed-up", "efficiency",
           "graph / model / MPI ms"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint (default: the shipped Cu EMT Allegro)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 32000, 108000])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--weak-atoms", type=int, default=4000, help="atoms per rank (weak)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case")
    parser.add_argument("--dtype", choices=["float32", "float64"], default=None)
    parser.add_argument("--oversubscribe", action="store_true", help="more ranks than cores")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--skip-ase", action="store_true")
    parser.add_argument("--json", type=Path, default=Path("bench_lammps.json"))
    args = parser.parse_args(argv)
    args.model = str(Path(args.model or shipped_data("allegro_cu_emt.ckpt")).resolve())
    extra = ["-bind-to", "none"] if args.oversubscribe else []
    result = {
        "machine": machine_info(args.threads),
        "model": args.model,
        "dtype": args.dtype,
        "cases": {},
    }
    strong, weak, ase = [], [], []
    for size in args.sizes:
        n = cells_for(size)
        for ranks in args.ranks:
            strong.append(
                lammps_case(args.model, n, ranks, args.steps, args.dtype, extra, args.threads)
            )
            print(f"strong {strong[-1]['atoms']:,} atoms, {ranks} ranks: "
                  f"{strong[-1]['seconds_per_step']:.3g} s/step", flush=True)  # fmt: skip
        if not args.skip_ase:
            for threads in sorted({args.threads, os.cpu_count() or 1}):
                ase.append(ase_case(args.model, n, args.steps, args.dtype, threads))
                print(f"ase {ase[-1]['atoms']:,} atoms, {threads} threads: "
                      f"{ase[-1]['seconds_per_step']:.3g} s/step", flush=True)  # fmt: skip
    for ranks in args.ranks:
        n = cells_for(args.weak_atoms * ranks)
        weak.append(lammps_case(args.model, n, ranks, args.steps, args.dtype, extra, args.threads))
    r_max = load_model(args.model).r_max
    lists = [neighbour_list_case(cells_for(size), r_max) for size in args.sizes]
    result["cases"] = {"strong": strong, "weak": weak, "ase": ase, "neighbour_lists": lists}
    print("\nStrong scaling (same cell on more ranks)")
    print(text_table(HEADERS, scaling_rows(strong, weak=False)))
    print(f"\nWeak scaling (about {args.weak_atoms:,} atoms per rank)")
    print(text_table(HEADERS, scaling_rows(weak, weak=True)))
    if ase:
        rows = []
        for reference in ase:
            one = next(r for r in strong if r["atoms"] == reference["atoms"] and r["ranks"] == 1)
            rows.append([
                f"{reference['atoms']:,}", str(reference["torch_threads"]),
                f"{reference['steps_per_second']:.3g}",
                f"{one['steps_per_second']:.3g}",
                f"{reference['seconds_per_step'] / one['seconds_per_step']:.2f}",
            ])  # fmt: skip
        print(f"\nLAMMPS on one rank ({args.threads} thread(s)) against ASE on one process "
              "(same model, same cell)")  # fmt: skip
        headers = ["atoms", "ASE threads", "ASE steps/s", "LAMMPS steps/s", "LAMMPS / ASE speed"]
        print(text_table(headers, rows))
    print("\nNeighbour list per force call: LAMMPS's, read into Python, against vesin's")
    rows = [[f"{c['atoms']:,}", f"{c['lammps_half_list_ms']:.3g}", f"{c['vesin_full_list_ms']:.3g}"]
            for c in lists]  # fmt: skip
    print(text_table(["atoms", "LAMMPS half list ms", "vesin full list ms"], rows))
    result["machine"]["load_average_end"] = list(os.getloadavg())
    atomic_write(args.json, json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
