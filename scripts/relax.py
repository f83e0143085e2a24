"""Geometry (and optionally cell) relaxation with a molfold potential through ASE.

Usage::

    python scripts/relax.py --model model.ckpt --structure start.xyz --fmax 0.01 --steps 500 \
        --optimizer bfgs --output relaxed.xyz
    python scripts/relax.py --model model.ckpt --structure bulk.cif --relax-cell --output out.cif

``--structure`` is any file ASE reads or an MD17 ``.npz`` (see ``run_md.py``). ``--relax-cell``
also relaxes the cell, through :class:`ase.filters.FrechetCellFilter` (periodic cells only); the
convergence criterion then covers the cell degrees of freedom too (stress times volume, in eV).
A table of step, energy and the largest force is printed; the relaxed structure is written to
``--output`` (format from its extension) atomically (:func:`molfold.io.atomic_write`), so an
interrupted run never leaves a half-written file.

The core, :func:`relax`, takes Atoms and any ASE calculator, so tests and notebooks can call it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.filters import FrechetCellFilter
from ase.io import write
from ase.io.formats import filetype
from ase.optimize import BFGS, FIRE, LBFGS

from molfold.io import atomic_write

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_md import read_structure  # noqa: E402  (sibling script, not a package)

OPTIMIZERS = {"bfgs": BFGS, "fire": FIRE, "lbfgs": LBFGS}


def max_force(atoms: Atoms) -> float:
    """Largest atomic force norm, eV/Angstrom."""
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max())


def relax(
    atoms: Atoms,
    calculator: Calculator,
    fmax: float = 0.01,
    steps: int = 500,
    optimizer: str = "bfgs",
    relax_cell: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """Relax ``atoms`` in place until every force is below ``fmax`` eV/Angstrom, or ``steps``.

    Returns a dict with ``converged``, ``steps``, ``initial_energy_eV``, ``final_energy_eV``,
    ``initial_max_force``, ``final_max_force`` (eV/Angstrom, atoms only) and, with
    ``relax_cell``, ``final_stress`` (Voigt, eV/Angstrom^3).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    if relax_cell and not atoms.pbc.all():
        raise ValueError(
            f"relax_cell needs a cell periodic in all three directions; pbc={atoms.pbc.tolist()}"
        )
    stream = sys.stdout if verbose else None
    atoms.calc = calculator
    target = FrechetCellFilter(atoms) if relax_cell else atoms
    opt = OPTIMIZERS[optimizer](target, logfile=None)
    initial_energy, initial_fmax = atoms.get_potential_energy(), max_force(atoms)

    def observe() -> None:
        # results cached by the calculator: no extra model call (nor Frechet cell gradient)
        if stream is None:
            return
        row = f"{opt.nsteps:>6d} {atoms.get_potential_energy():>16.6f} {max_force(atoms):>12.5f}"
        if relax_cell:
            row += f" {np.abs(atoms.get_stress()).max() / units.GPa:>12.5f}"
        print(row, file=stream, flush=True)

    opt.attach(observe, interval=1)
    if stream is not None:
        cell = " and cell" if relax_cell else ""
        print(f"relaxing {len(atoms)} atoms{cell} with {optimizer}, fmax {fmax}", file=stream)
        header = f"{'step':>6} {'energy/eV':>16} {'fmax/(eV/A)':>12}"
        print(header + (f" {'|stress|/GPa':>12}" if relax_cell else ""), file=stream)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    summary: dict[str, Any] = {
        "converged": converged,
        "steps": opt.nsteps,
        "optimizer": optimizer,
        "relax_cell": relax_cell,
        "initial_energy_eV": initial_energy,
        "final_energy_eV": atoms.get_potential_energy(),
        "initial_max_force": initial_fmax,
        "final_max_force": max_force(atoms),
    }
    if relax_cell:
        summary["final_stress"] = atoms.get_stress()
    if stream is not None:
        state = "converged" if converged else "NOT converged (step limit)"
        print(
            f"\n{state} after {opt.nsteps} steps: E = {summary['final_energy_eV']:.6f} eV "
            f"(change {summary['final_energy_eV'] - initial_energy:+.6f}), "
            f"max force {summary['final_max_force']:.5f} eV/A",
            file=stream,
        )
    return summary


def write_atomically(atoms: Atoms, path: str | Path, **kwargs: Any) -> None:
    """``ase.io.write`` ``atoms`` to ``path`` through :func:`molfold.io.atomic_write`; the format
    comes from the name of ``path`` (``relaxed.xyz``, ``POSCAR``, ...) unless ``format`` is given.

    ASE writes the temporary file by its name, as some of its writers (``aims``, ``res``, ...)
    accept no open file; ``atomic_write`` then syncs it and renames it to ``path``.
    """
    kwargs.setdefault("format", filetype(str(path), read=False))
    atomic_write(path, lambda file: write(file.name, atoms, **kwargs))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="molfold checkpoint")
    parser.add_argument("--structure", required=True, help="ASE-readable file or MD17 .npz")
    parser.add_argument("--frame", type=int, default=0, help="frame of --structure (default 0)")
    parser.add_argument("--fmax", type=float, default=0.01, help="eV/A (default 0.01)")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="bfgs")
    parser.add_argument("--relax-cell", action="store_true", help="also relax the cell")
    parser.add_argument("--output", default="relaxed.xyz", help="relaxed structure file")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from molfold.calculator import MolfoldCalculator
    from molfold.errors import MolfoldError

    try:
        atoms = read_structure(args.structure, args.frame)
        calculator = MolfoldCalculator(args.model, device=args.device)
        summary = relax(atoms, calculator, args.fmax, args.steps, args.optimizer, args.relax_cell)
        write_atomically(atoms, args.output)
    except (MolfoldError, FileNotFoundError, IndexError, ValueError) as error:
        sys.exit(f"relax: error: {error}")
    print(f"written: {args.output}")
    if not summary["converged"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
