"""The shipped Allegro copper potential (data/allegro_cu_emt.ckpt) against EMT, its reference.

The model was trained on EMT energies, forces and stress (data/cu_emt.extxyz, see data/README.md);
here EMT (``ase.calculators.emt.EMT``) is evaluated afresh as the independent reference, on
configurations that are not in the training file (their own seed), and for the equation of state
of the perfect crystal. Tolerances leave a margin of about two (four for energies) over the
model's errors.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from molfold import MolfoldCalculator
from molfold.models.checkpoint import load_model
from molfold.shipped import shipped_data

from .common import load_script

NAME = "allegro_cu_emt.ckpt"
EMT_A0 = 3.5898  # EMT's Cu lattice constant (A), recomputed below
# Tolerances on the configurations below; the shipped model's largest errors over the four are
# 0.7 meV/atom, 57 meV/A (mean), 0.30 eV/A (largest component) and 3.5 meV/A^3.
ENERGY_TOL = 0.003  # eV/atom, energy error per atom
FORCE_MAE_TOL = 0.100  # eV/A, mean absolute force-component error over a configuration
FORCE_MAX_TOL = 0.500  # eV/A, largest force-component error
STRESS_TOL = 0.007  # eV/A^3 (1.1 GPa), largest stress-component error; stresses reach 0.09


@pytest.fixture(scope="module")
def calc() -> MolfoldCalculator:
    return MolfoldCalculator(shipped_data(NAME))


def fresh_configurations() -> list[tuple[str, Atoms]]:
    """Rattled 2x2x2 conventional cells (32 atoms), strained, sheared and with a vacancy; a seed
    that no training frame used."""
    rng = np.random.default_rng(20261202)
    cases = []
    for name, scale, shear, rattle, vacancy in (
        ("rattled", 1.00, 0.0, 0.08, False),
        ("compressed", 0.97, 0.0, 0.10, False),
        ("expanded, sheared", 1.03, 0.015, 0.12, False),
        ("vacancy", 1.00, 0.0, 0.10, True),
    ):
        atoms = bulk("Cu", "fcc", a=EMT_A0, cubic=True) * (2, 2, 2)
        deformation = scale * (np.eye(3) + shear * np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]]))
        atoms.set_cell(np.asarray(atoms.cell) @ deformation.T, scale_atoms=True)
        if vacancy:
            del atoms[int(rng.integers(len(atoms)))]
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        cases.append((name, atoms))
    return cases


cu_script = load_script("train_cu_emt")
lattice_constant = cu_script.lattice_constant  # the fcc a0 minimising the energy, A
bulk_modulus = cu_script.bulk_modulus  # Birch-Murnaghan fit of E(V) within 2 % of a0, GPa


def test_shipped_model_loads():
    path = shipped_data(NAME)
    assert os.path.getsize(path) < 1_000_000
    model = load_model(path)
    info = model.model_info
    assert (info["name"], info["kind"]) == ("allegro", "potential")
    assert info["statistics"]["species"] == [29]
    assert 4.0 <= model.r_max <= 5.0
    atoms = bulk("Cu", "fcc", a=EMT_A0, cubic=True) * (2, 2, 2)
    atoms.calc = MolfoldCalculator(path)
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    assert np.isfinite(energy) and abs(energy / len(atoms)) < 0.02  # EMT: ~0 at a0
    assert np.abs(forces).max() < 1e-3  # perfect crystal: zero by symmetry
    assert np.abs(stress).max() < 0.002  # eV/A^3: near zero pressure at EMT's a0


@pytest.mark.parametrize("case", range(4))
def test_agrees_with_emt_on_fresh_configurations(calc, case):
    name, atoms = fresh_configurations()[case]
    reference = atoms.copy()
    reference.calc = EMT()
    atoms.calc = calc
    n = len(atoms)
    energy_error = abs(atoms.get_potential_energy() - reference.get_potential_energy()) / n
    force_error = np.abs(atoms.get_forces() - reference.get_forces())
    stress_error = np.abs(atoms.get_stress() - reference.get_stress())
    assert energy_error < ENERGY_TOL, name
    assert force_error.mean() < FORCE_MAE_TOL, name
    assert force_error.max() < FORCE_MAX_TOL, name
    assert stress_error.max() < STRESS_TOL, name


def test_lattice_constant_and_bulk_modulus_match_emt(calc):
    a_emt, a_model = lattice_constant(EMT()), lattice_constant(calc)
    assert a_emt == pytest.approx(EMT_A0, abs=1e-3)
    assert a_model == pytest.approx(a_emt, rel=0.01)
    b_emt, b_model = bulk_modulus(EMT(), a_emt), bulk_modulus(calc, a_model)
    assert b_emt == pytest.approx(134.4, rel=0.01)  # GPa (experiment: about 140)
    assert b_model == pytest.approx(b_emt, rel=0.15)
