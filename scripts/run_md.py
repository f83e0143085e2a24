"""Molecular dynamics with a molfold potential through ASE: NVE (velocity Verlet) or Langevin NVT.

Usage::

    python scripts/run_md.py --model model.ckpt --structure ethanol.xyz --ensemble nve \
        --temperature 300 --timestep 0.5 --steps 1000 --trajectory md.traj

``--structure`` is any file ASE reads (xyz, extxyz, cif, POSCAR, traj, ...) or an MD17 ``.npz``
(keys ``z``/``R`` or ``nuclear_charges``/``coords``, positions in Angstrom); ``--frame`` picks the
frame. Velocities are drawn from the Maxwell-Boltzmann distribution at ``--temperature`` (seeded by
``--seed``), with the centre-of-mass momentum removed, and for molecules (no periodic direction)
also the total angular momentum.

Every ``--log-every`` steps a row (step, time in ps, potential, kinetic and total energy in eV,
temperature in K) is printed and a frame is written to the trajectory. The summary at the end
gives the total-energy drift in eV/atom/ps (slope of a straight-line fit of E_tot / N against
time, every step) and the largest deviation of E_tot / N from its start, which for NVE measure
how well the integrator and the potential's forces conserve energy.

The core, :func:`run_md`, takes Atoms and any ASE calculator, so tests and notebooks can call it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.constraints import FixCom
from ase.io import Trajectory, read
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # pragma: no cover
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize_momenta(atoms: Atoms, temperature_K: float, rng=None) -> None:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


ENSEMBLES = ("nve", "langevin")
NPZ_KEYS = (("z", "R"), ("nuclear_charges", "coords"))
"""(atomic numbers, positions) key pairs of the MD17 and revised MD17 layouts."""


def read_structure(path: str | Path, frame: int = 0) -> Atoms:
    """Frame ``frame`` of an ASE-readable file, or of an MD17-layout ``.npz`` (Angstrom)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"structure file {path} does not exist")
    if path.suffix != ".npz":
        return read(path, index=frame)
    with np.load(path, allow_pickle=False) as npz:
        for z_key, pos_key in NPZ_KEYS:
            if z_key in npz.files and pos_key in npz.files:
                numbers, positions = np.asarray(npz[z_key]), np.asarray(npz[pos_key])
                break
        else:
            raise ValueError(
                f"{path}: expected keys {' or '.join('/'.join(k) for k in NPZ_KEYS)}, "
                f"found {sorted(npz.files)}"
            )
    if positions.ndim == 2:
        positions = positions[None]
    if positions.ndim != 3 or positions.shape[1:] != (len(numbers), 3):
        raise ValueError(
            f"{path}: positions must have shape [F, {len(numbers)}, 3], got {positions.shape}"
        )
    if not -len(positions) <= frame < len(positions):
        raise IndexError(f"{path}: frame {frame} out of range; the file has {len(positions)}")
    return Atoms(numbers=numbers.astype(int), positions=positions[frame].astype(np.float64))


def initialize_velocities(atoms: Atoms, temperature_K: float, seed: int) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K``, no net momentum (nor rotation for
    molecules)."""
    thermalize_momenta(atoms, temperature_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)


HEADER = f"{'step':>8} {'time/ps':>9} {'Epot/eV':>14} {'Ekin/eV':>11} {'Etot/eV':>14} {'T/K':>8}"


def run_md(
    atoms: Atoms,
    calculator: Calculator,
    ensemble: str = "nve",
    temperature_K: float = 300.0,
    timestep_fs: float = 0.5,
    steps: int = 1000,
    friction_per_fs: float = 0.01,
    seed: int = 0,
    trajectory: str | Path | None = None,
    log_every: int = 10,
    set_velocities: bool = True,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run ``steps`` MD steps of ``atoms`` (changed in place) with ``calculator``.

    Parameters
    ----------
    ensemble : ``"nve"`` (velocity Verlet) or ``"langevin"`` (NVT, ASE's Langevin integrator)
    temperature_K : initial velocity temperature, and the thermostat temperature for Langevin
    timestep_fs : time step in fs
    friction_per_fs : Langevin friction in 1/fs
    seed : seeds the initial velocities and the Langevin noise
    trajectory : ASE ``.traj`` file written every ``log_every`` steps (none if ``None``)
    set_velocities : draw Maxwell-Boltzmann velocities; if False keep the momenta of ``atoms``
    verbose : print the table and the summary to stdout

    Returns
    -------
    dict with ``time_ps`` [steps+1] and ``etot_eV``, ``epot_eV``, ``temperature_K`` at every step,
    and scalars ``drift_eV_per_atom_per_ps`` (slope of the fit of E_tot / N against time),
    ``max_deviation_eV_per_atom`` (max |E_tot(t) - E_tot(0)| / N), ``mean_temperature_K``,
    ``steps``, ``n_atoms``, ``ensemble``, ``timestep_fs``, ``wall_s``, ``trajectory``.

    For Langevin a :class:`~ase.constraints.FixCom` constraint is added to ``atoms``.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    if timestep_fs <= 0 or steps < 0 or log_every < 1:
        raise ValueError("timestep_fs must be > 0, steps >= 0 and log_every >= 1")
    stream = sys.stdout if verbose else None
    atoms.calc = calculator
    if set_velocities:
        initialize_velocities(atoms, temperature_K, seed)
    if ensemble == "nve":
        dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    else:
        # the thermostat's noise would move the centre of mass: fix it by a constraint (ASE's
        # advice since 3.28; Langevin's own fixcm=True does not sample NVT exactly)
        if not any(isinstance(c, FixCom) for c in atoms.constraints):
            atoms.set_constraint([*atoms.constraints, FixCom()])
        dynamics = Langevin(
            atoms,
            timestep=timestep_fs * units.fs,
            temperature_K=temperature_K,
            friction=friction_per_fs / units.fs,
            fixcm=False,
            rng=np.random.default_rng(seed + 1),
        )

    record: dict[str, list[float]] = {"time_ps": [], "epot_eV": [], "ekin_eV": [], "T_K": []}

    def observe() -> None:
        step = dynamics.nsteps
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        record["time_ps"].append(step * timestep_fs * 1e-3)
        record["epot_eV"].append(epot)
        record["ekin_eV"].append(ekin)
        temperature = atoms.get_temperature()  # 3N degrees of freedom minus constraints
        record["T_K"].append(temperature)
        if stream is not None and step % log_every == 0:
            print(
                f"{step:>8d} {step * timestep_fs * 1e-3:>9.4f} {epot:>14.5f} {ekin:>11.5f} "
                f"{epot + ekin:>14.5f} {temperature:>8.1f}",
                file=stream,
                flush=True,
            )

    dynamics.attach(observe, interval=1)
    writer = None
    if trajectory is not None:
        Path(trajectory).parent.mkdir(parents=True, exist_ok=True)
        writer = Trajectory(str(trajectory), "w", atoms)
        dynamics.attach(writer.write, interval=log_every)
    if stream is not None:
        print(f"{ensemble} MD, {len(atoms)} atoms, {steps} steps of {timestep_fs} fs", file=stream)
        print(HEADER, file=stream)
    start = time.perf_counter()
    try:
        dynamics.run(steps)
    finally:
        if writer is not None:
            writer.close()
    summary = summarize(record, len(atoms), ensemble, timestep_fs)
    summary.update(wall_s=time.perf_counter() - start, trajectory=trajectory)
    if stream is not None:
        print_summary(summary, stream)
    return summary


def summarize(
    record: dict[str, list[float]], n_atoms: int, ensemble: str, timestep_fs: float
) -> dict[str, Any]:
    """Energy conservation and temperature statistics of a recorded run."""
    time_ps = np.asarray(record["time_ps"])
    epot, ekin = np.asarray(record["epot_eV"]), np.asarray(record["ekin_eV"])
    etot = epot + ekin
    temperature = np.asarray(record["T_K"])
    per_atom = (etot - etot[0]) / n_atoms
    drift = float(np.polyfit(time_ps, per_atom, 1)[0]) if len(time_ps) > 1 else 0.0
    return {
        "ensemble": ensemble,
        "steps": len(time_ps) - 1,
        "timestep_fs": timestep_fs,
        "n_atoms": n_atoms,
        "time_ps": time_ps,
        "epot_eV": epot,
        "etot_eV": etot,
        "temperature_K": temperature,
        "mean_temperature_K": float(temperature.mean()),
        "drift_eV_per_atom_per_ps": drift,
        "max_deviation_eV_per_atom": float(np.abs(per_atom).max()),
    }


def print_summary(summary: dict[str, Any], stream: IO[str]) -> None:
    print(
        f"\n{summary['steps']} steps ({summary['time_ps'][-1]:.4f} ps) in {summary['wall_s']:.1f} s"
        f", mean T = {summary['mean_temperature_K']:.1f} K, "
        f"final Epot = {summary['epot_eV'][-1]:.5f} eV",
        file=stream,
    )
    kind = "drift" if summary["ensemble"] == "nve" else "change (thermostat: not conserved)"
    print(
        f"total energy {kind}: {summary['drift_eV_per_atom_per_ps']:.3e} eV/atom/ps, "
        f"max |Etot - Etot(0)| = {summary['max_deviation_eV_per_atom']:.3e} eV/atom",
        file=stream,
    )
    if summary["trajectory"] is not None:
        print(f"trajectory: {summary['trajectory']}", file=stream)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="molfold checkpoint or compiled .pt2")
    parser.add_argument("--structure", required=True, help="ASE-readable file or MD17 .npz")
    parser.add_argument("--frame", type=int, default=0, help="frame of --structure (default 0)")
    parser.add_argument("--ensemble", choices=ENSEMBLES, default="nve")
    parser.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin, 1/fs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trajectory", default="md.traj", help="output .traj (default md.traj)")
    parser.add_argument("--log-every", type=int, default=10, help="print/write every N steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--eager",
        action="store_true",
        help="run the eager model; by default a checkpoint's potential is compiled on the first "
        "step where it can be (Allegro; tens of seconds, cached), and a .pt2 is compiled already",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from molfold.calculator import MolfoldCalculator
    from molfold.errors import MolfoldError

    try:
        atoms = read_structure(args.structure, args.frame)
        compile_model = not args.eager and not str(args.model).endswith(".pt2") and "auto"
        calculator = MolfoldCalculator(args.model, device=args.device, compile=compile_model)
        run_md(
            atoms,
            calculator,
            ensemble=args.ensemble,
            temperature_K=args.temperature,
            timestep_fs=args.timestep,
            steps=args.steps,
            friction_per_fs=args.friction,
            seed=args.seed,
            trajectory=args.trajectory,
            log_every=args.log_every,
        )
    except (MolfoldError, FileNotFoundError, IndexError, ValueError) as error:
        sys.exit(f"run_md: error: {error}")


if __name__ == "__main__":
    main()
