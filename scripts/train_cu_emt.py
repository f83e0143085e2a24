"""Train the small Allegro Cu potential that ships with molfold (data/allegro_cu_emt.ckpt).

    OMP_NUM_THREADS=2 python scripts/train_cu_emt.py [--run-dir runs/allegro_cu_emt] [--epochs 150]

Runs ``molfold train model=allegro data=ase`` on ``data/cu_emt.extxyz`` (made by
``scripts/make_cu_emt.py``: EMT energies, forces and stress of bulk fcc Cu) with :data:`RECIPE`:
one Allegro layer, 16 scalar and 8 tensor features, float32, energy + forces + stress loss. A
model for molecular-dynamics tests and large-cell speed benchmarks, sized to be cheap, not for
accuracy records. Its cutoff, 4.2 A, lies between the second (3.59 A) and third (4.40 A)
neighbour shells of fcc Cu at EMT's lattice constant: about 18 neighbours per atom instead of 43
at 5.0 A, which makes it about 2.5 times faster, and in a trial it was also the more accurate of
the two (EMT's third-shell terms are small). When training has finished, the best checkpoint's
(EMA) weights (validation loss) are written to data/allegro_cu_emt.ckpt with
:func:`~molfold.models.checkpoint.save_model`, and data/allegro_cu_emt_metrics.json records

* the test split of the training file, as ``molfold train`` reports it;
* errors on an independent EMT set made afresh by scripts/make_cu_emt.py with another seed
  (``--check-seed``), since frames of one trajectory may fall in both train and test;
* the fcc lattice constant (energy minimised over a) and bulk modulus (Birch-Murnaghan fit of
  E(V)) of the model and of EMT;
* the time per atom of one call on a 4,000-atom cell, one thread (machine and load dependent).

data/README.md records the recipe and these numbers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from make_cu_emt import make  # scripts/ is on sys.path when run as a script
from scipy.optimize import minimize_scalar
from ship_model import train_and_ship, write_metrics

from molfold.calculator import MolfoldCalculator

REPO = Path(__file__).resolve().parents[1]
MODEL = [
    "model=allegro",
    "model.r_max=4.2",
    "model.num_bessels=8",
    "model.num_layers=1",
    "model.num_scalar_features=16",
    "model.num_tensor_features=8",
    "model.radial_chemical_embed_dim=16",
    "model.two_body_mlp_hidden=[32]",
    "model.allegro_mlp_hidden=[32]",
    "model.readout_mlp_hidden=[16]",
    "dtype=float32",
]
"""The shipped model's size."""
RECIPE = [
    *MODEL,
    "data=ase",
    "data.stress_key=stress",
    "data.n_train=272",
    "data.n_val=24",
    "data.n_test=null",
    "data.batch_size=4",
    "data.val_batch_size=24",
    "task.energy_weight=300.0",
    "task.forces_weight=1.0",
    "task.stress_weight=1000.0",
    "optim.lr=0.005",
    "optim.scheduler=cosine",
    "optim.scheduler.min_lr=1.0e-5",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=20",
    "seed=0",
]


def lattice_constant(calc) -> float:
    """fcc lattice constant (A) minimising the energy of the 4-atom conventional cell."""

    def energy(a: float) -> float:
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = calc
        return atoms.get_potential_energy() / len(atoms)

    best = minimize_scalar(energy, bounds=(3.3, 3.9), method="bounded", options={"xatol": 1e-6})
    return float(best.x)


def bulk_modulus(calc, a0: float) -> float:
    """Bulk modulus (GPa): Birch-Murnaghan fit of E(V) over a in a0 (0.98 ... 1.02)."""
    volumes, energies = [], []
    for a in a0 * np.linspace(0.98, 1.02, 9):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = calc
        volumes.append(atoms.get_volume() / len(atoms))
        energies.append(atoms.get_potential_energy() / len(atoms))
    _, _, b = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    return float(b / units.GPa)


def errors(calc, frames) -> dict[str, float]:
    """MAEs of ``calc`` against the EMT labels of ``frames``: meV/atom, meV/A, meV/A^3."""
    de, df, ds = [], [], []
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = calc
        de.append((atoms.get_potential_energy() - frame.get_potential_energy()) / len(atoms))
        df.append((atoms.get_forces() - frame.get_forces()).ravel())
        ds.append(atoms.get_stress() - frame.get_stress())
    return {
        "frames": len(frames),
        "energy_per_atom_mae": 1e3 * float(np.mean(np.abs(de))),
        "energy_per_atom_max": 1e3 * float(np.max(np.abs(de))),
        "forces_mae": 1e3 * float(np.mean(np.abs(np.concatenate(df)))),
        "forces_rmse": 1e3 * float(np.sqrt(np.mean(np.concatenate(df) ** 2))),
        "stress_mae": 1e3 * float(np.mean(np.abs(ds))),
    }


def speed(calc, a0: float, repeats: int = 5) -> dict[str, float]:
    """Microseconds per atom of one calculator call (energy + forces + stress, graph included)
    and of the model alone (energy + forces) on a rattled 10x10x10 conventional cell (4,000
    atoms), one torch thread, best of ``repeats``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        atoms = bulk("Cu", "fcc", a=a0, cubic=True) * (10, 10, 10)
        atoms.rattle(0.05, seed=0)
        graph = calc.atoms_to_graph(atoms)
        calc.call_model(graph)
        model, full = [], []
        for index in range(repeats):
            start = time.perf_counter()
            calc.call_model(graph)
            model.append(time.perf_counter() - start)
            atoms.rattle(0.001, seed=index + 1)
            atoms.calc = calc
            start = time.perf_counter()
            atoms.get_forces()
            full.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return {
        "atoms": len(atoms),
        "model_energy_forces_us_per_atom": 1e6 * min(model) / len(atoms),
        "calculator_call_us_per_atom": 1e6 * min(full) / len(atoms),
        "edges_per_atom": graph.edge_index.shape[1] / len(atoms),
        "torch_threads": 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/allegro_cu_emt")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--check-seed", type=int, default=1, help="seed of the independent set")
    parser.add_argument("--check-frames", type=int, default=32)
    parser.add_argument("--data", default=str(REPO / "data" / "cu_emt.extxyz"))
    parser.add_argument("--output", default=str(REPO / "data" / "allegro_cu_emt.ckpt"))
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides (experiments)")
    args = parser.parse_args()

    overrides = [*RECIPE, *args.extra, f"trainer.max_epochs={args.epochs}"]
    overrides += [f"data.path={args.data}"]
    output = Path(args.output)
    metrics, wall, model = train_and_ship(overrides, Path(args.run_dir), output)
    calc = MolfoldCalculator(model)
    check = argparse.Namespace(
        frames=args.check_frames,
        frames_per_trajectory=2,
        stride=50,
        equilibration=100,
        cold_frames=0,
        seed=args.check_seed,
    )
    frames, _ = make(check)
    a_emt, a_model = lattice_constant(EMT()), lattice_constant(calc)
    record = {
        "test_split_metrics": metrics,
        "test_split_units": "meV, meV/atom, meV/A, meV/A^3; loss in eV^2 units",
        "independent_emt_set": {"seed": args.check_seed, **errors(calc, frames)},
        "independent_emt_set_units": "meV/atom, meV/A, meV/A^3",
        "lattice_constant_A": {"emt": a_emt, "model": a_model},
        "bulk_modulus_GPa": {
            "emt": bulk_modulus(EMT(), a_emt),
            "model": bulk_modulus(calc, a_model),
        },
        "speed_4000_atoms": speed(calc, a_emt),
        "recipe": [o for o in overrides if not o.startswith("data.path=")],
        "data_path": Path(args.data).name,
        "epochs": args.epochs,
        "wall_time_this_sitting_s": round(wall, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads_training": torch.get_num_threads(),
    }
    write_metrics(output, record)
    print(json.dumps({k: record[k] for k in list(record)[2:7]}, indent=1))


if __name__ == "__main__":
    main()
