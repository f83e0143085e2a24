"""Generate a bulk fcc copper dataset with ASE's EMT potential (energies, forces, stress).

A training set for a small, cheap Cu potential (``data/allegro_cu_emt.ckpt``, made by
``scripts/train_cu_emt.py``) that molecular-dynamics tests and large-cell speed benchmarks use.
Every label is an exact value of ``ase.calculators.emt.EMT`` (effective-medium theory, Cu
parameters of Jacobsen, Stoltze & Norskov, Surf. Sci. 366, 394 (1996)); EMT is not DFT.

Sampling (all random draws from one ``numpy.random.default_rng(seed)``, in trajectory order):

1. EMT's own fcc lattice constant a0 (:func:`emt_lattice_constant`).
2. ``--frames`` // ``--frames-per-trajectory`` short Langevin trajectories. Trajectory k runs at
   ``TEMPERATURES[k % 4]`` (300, 600, 900, 1200 K) in a 3x3x3 conventional cell (108 atoms) when
   ``(k // 4)`` is even and a 2x2x2 one (32 atoms) when odd, with one random atom removed (a
   vacancy) when ``(k // 4) % 5 == 2`` (one block of four temperatures in five, both sizes: 20 %
   of the MD frames). The perfect cell at a0 is strained by F = s (I + e): s ~ U(0.96, 1.04)
   (isotropic) and, for half of the trajectories (probability 0.5), e a random symmetric matrix
   with entries ~ U(-0.02, 0.02) (anisotropic stretch and shear), else e = 0.
   Maxwell-Boltzmann velocities at T (``thermalize_momenta``, centre-of-mass motion removed), ASE
   ``Langevin`` at T (time step 2 fs, friction 0.02 / fs, ``fixcm=False``), ``--equilibration``
   steps discarded, then one frame every ``--stride`` steps.
3. ``--cold-frames`` strained perfect 2x2x2 crystals (no thermal motion) for the 0 K equation of
   state: s evenly spaced over 0.95-1.05, every second one with a random anisotropic e as above.

Output: one extended XYZ file (ASE's writer) with, per frame, ``energy`` (eV, total EMT energy),
``forces`` (eV/A) and ``stress`` (eV/A^3, ASE's sign convention (1/V) dE/d(strain), Voigt order
xx yy zz yz xz xy) from the attached calculator, and ``trajectory``, ``temperature_K``, ``scale``
(s), ``anisotropic``, ``vacancy``, ``md_step`` in the frame info. Usage::

    OMP_NUM_THREADS=1 python scripts/make_cu_emt.py --frames 320 --cold-frames 16 --seed 0 \
        --out data/cu_emt.extxyz

Read it with ``molfold ... data=ase data.path=data/cu_emt.extxyz data.stress_key=stress``.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from scipy.optimize import minimize_scalar
from tqdm import tqdm

from molfold.io import atomic_write

TEMPERATURES = (300.0, 600.0, 900.0, 1200.0)  # K
SCALE_RANGE = (0.96, 1.04)  # isotropic scale of the lattice constant, MD frames
COLD_SCALE_RANGE = (0.95, 1.05)  # ... of the 0 K frames
SHEAR = 0.02  # entries of the random symmetric strain e ~ U(-SHEAR, SHEAR)
TIME_STEP_FS, FRICTION_PER_FS = 2.0, 0.02
VACANCY_BLOCKS = 5  # trajectory k has a vacancy when (k // 4) % VACANCY_BLOCKS == 2


def emt_lattice_constant() -> float:
    """fcc Cu lattice constant (A) minimising the EMT energy of the bulk."""

    def energy(a: float) -> float:
        return EMT().get_potential_energy(bulk("Cu", "fcc", a=a))

    best = minimize_scalar(energy, bounds=(3.3, 3.9), method="bounded", options={"xatol": 1e-6})
    return float(best.x)


def strained_cell(
    a0: float, repeat: int, scale: float, anisotropic: bool, rng: np.random.Generator
) -> Atoms:
    """``repeat``^3 conventional fcc cells at ``a0``, deformed by F = scale (I + e)."""
    atoms = bulk("Cu", "fcc", a=a0, cubic=True) * (repeat, repeat, repeat)
    strain = np.zeros((3, 3))
    if anisotropic:
        upper = np.triu(rng.uniform(-SHEAR, SHEAR, size=(3, 3)))
        strain = upper + np.triu(upper, 1).T
    deformation = scale * (np.eye(3) + strain)
    atoms.set_cell(np.asarray(atoms.cell) @ deformation.T, scale_atoms=True)
    return atoms


def labelled(atoms: Atoms, **info: object) -> Atoms:
    """A copy of ``atoms`` (with EMT attached) carrying its EMT energy, forces and stress."""
    frame = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    energy = float(atoms.get_potential_energy())
    frame.calc = SinglePointCalculator(
        frame,
        energy=energy,
        free_energy=energy,
        forces=atoms.get_forces(),
        stress=atoms.get_stress(),
    )
    frame.info.update(info)
    return frame


def md_frames(
    a0: float,
    trajectory: int,
    frames: int,
    stride: int,
    equilibration: int,
    rng: np.random.Generator,
) -> list[Atoms]:
    """The frames of Langevin trajectory ``trajectory`` (see the module docstring)."""
    temperature = TEMPERATURES[trajectory % len(TEMPERATURES)]
    repeat = 3 if (trajectory // len(TEMPERATURES)) % 2 == 0 else 2
    vacancy = (trajectory // len(TEMPERATURES)) % VACANCY_BLOCKS == 2
    scale = float(rng.uniform(*SCALE_RANGE))
    anisotropic = bool(rng.random() < 0.5)
    atoms = strained_cell(a0, repeat, scale, anisotropic, rng)
    if vacancy:
        del atoms[int(rng.integers(len(atoms)))]
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dyn = Langevin(
        atoms,
        TIME_STEP_FS * units.fs,
        temperature_K=temperature,
        friction=FRICTION_PER_FS / units.fs,
        fixcm=False,
        rng=rng,
    )
    dyn.run(equilibration)
    kept = []
    for index in range(frames):
        dyn.run(stride)
        kept.append(
            labelled(
                atoms,
                trajectory=trajectory,
                temperature_K=temperature,
                scale=scale,
                anisotropic=anisotropic,
                vacancy=vacancy,
                md_step=equilibration + (index + 1) * stride,
            )
        )
    return kept


def cold_frames(a0: float, count: int, first_trajectory: int, rng: np.random.Generator) -> list:
    """``count`` strained perfect 2x2x2 crystals, s evenly spaced over COLD_SCALE_RANGE."""
    kept = []
    for index, scale in enumerate(np.linspace(*COLD_SCALE_RANGE, count)):
        anisotropic = index % 2 == 1
        atoms = strained_cell(a0, 2, float(scale), anisotropic, rng)
        atoms.calc = EMT()
        kept.append(
            labelled(
                atoms,
                trajectory=first_trajectory + index,
                temperature_K=0.0,
                scale=float(scale),
                anisotropic=anisotropic,
                vacancy=False,
                md_step=0,
            )
        )
    return kept


def make(args: argparse.Namespace) -> tuple[list[Atoms], float]:
    rng = np.random.default_rng(args.seed)
    a0 = emt_lattice_constant()
    trajectories = args.frames // args.frames_per_trajectory
    frames: list[Atoms] = []
    for trajectory in tqdm(range(trajectories), desc="Cu EMT trajectories"):
        frames += md_frames(
            a0, trajectory, args.frames_per_trajectory, args.stride, args.equilibration, rng
        )
    frames += cold_frames(a0, args.cold_frames, trajectories, rng)
    return frames, a0


def main() -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--frames", type=int, default=320, help="MD frames in all")
    parser.add_argument("--frames-per-trajectory", type=int, default=2)
    parser.add_argument("--stride", type=int, default=50, help="MD steps (2 fs) between frames")
    parser.add_argument("--equilibration", type=int, default=100, help="MD steps discarded first")
    parser.add_argument("--cold-frames", type=int, default=16, help="0 K strained crystals")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("data/cu_emt.extxyz"))
    args = parser.parse_args()

    start = time.time()
    frames, a0 = make(args)
    text = io.StringIO()
    ase.io.write(text, frames, format="extxyz")
    path = atomic_write(args.out, text.getvalue())
    atoms = sum(len(frame) for frame in frames)
    print(
        f"wrote {path}: {len(frames)} frames, {atoms} atoms, {path.stat().st_size:,} bytes; "
        f"EMT a0 = {a0:.6f} A; {time.time() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
