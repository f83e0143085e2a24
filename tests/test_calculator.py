"""ASE calculator: agreement with the potential and with finite differences, units, errors; MD and
relaxation through scripts/run_md.py and scripts/relax.py."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces as numerical_forces
from ase.calculators.fd import calculate_numerical_stress as numerical_stress
from ase.data import covalent_radii
from ase.io import read, write
from torch import nn

from molfold.calculator import MolfoldCalculator
from molfold.data import graph as G
from molfold.errors import ConfigError, UnknownElementError
from molfold.models.checkpoint import save_model
from molfold.models.potential import Potential
from molfold.models.registry import build_model
from molfold.nn.radial import PolynomialCutoff

from .common import SMALL, make_potential, nve_energy_error, relax_script, run_md_script
from .conftest import DATA, REPO
from .equivariance import evaluate

SPECIES = [1, 6, 8, 29]


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one intra-op thread is several times faster than two on a busy
    machine. Restores the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny():
    """A one-layer random Allegro for H, C, O and Cu, in the current default dtype."""
    return make_potential(SPECIES, num_layers=1)


class RepulsiveCore(nn.Module):
    """A per-atom energy model plus a repulsive core, e_i + 1/2 sum_j (sigma_ij / r_ij)^12
    u(r_ij / r_max) eV, sigma_ij = 0.7 x the sum of covalent radii, u the polynomial envelope.

    A random Allegro has no repulsive core: relaxations and MD can pull two atoms onto each other
    (seen within 50 fs of NVE). With the core, its minima are physical enough to relax into and
    to vibrate around.
    """

    def __init__(self, model: nn.Module, species: list[int]):
        super().__init__()
        self.model, self.r_max = model, model.r_max
        sigma = 0.7 * torch.as_tensor(covalent_radii[species], dtype=torch.get_default_dtype())
        self.register_buffer("sigma", sigma)
        self.cutoff = PolynomialCutoff(6)

    def forward(self, data, atom_types: torch.Tensor) -> torch.Tensor:
        j, i = data[G.EDGE_INDEX]
        r = G.edge_vectors(data).norm(dim=-1)
        sigma = self.sigma[atom_types[i]] + self.sigma[atom_types[j]]
        pair = (sigma / r) ** 12 * self.cutoff(r / self.r_max)
        return self.model(data, atom_types) + r.new_zeros(len(atom_types)).index_add(
            0, i, 0.5 * pair
        )


@pytest.fixture
def bound_allegro():
    """The tiny random Allegro for H, C, O with a repulsive core (seed 1: its minimum near
    ethanol is bound; about one seed in ten lets an H atom drift away)."""
    potential = make_potential([1, 6, 8], seed=1, num_layers=1)
    potential.model = RepulsiveCore(potential.model, potential.species)
    return potential


class MorsePairs(nn.Module):
    """Per-atom Morse energies, e_i = 1/2 sum_j D [(1 - exp(-a (r_ij - r0)))^2 - 1] u(r_ij / r_max):
    a metal-like pair potential (Girifalco & Weizer, Phys. Rev. 114, 687 (1959) parameters for
    Cu) with a minimum-energy fcc cell, for cell relaxation."""

    def __init__(self, r_max: float = 5.0, depth: float = 0.3429, a: float = 1.3588, r0=2.866):
        super().__init__()
        self.r_max, self.a, self.r0 = r_max, a, r0
        self.depth = nn.Parameter(torch.tensor(depth))  # a parameter fixes the model's dtype
        self.cutoff = PolynomialCutoff(6)

    def forward(self, data, atom_types: torch.Tensor) -> torch.Tensor:
        j, i = data[G.EDGE_INDEX]
        r = G.edge_vectors(data).norm(dim=-1)
        pair = self.depth * ((1 - torch.exp(-self.a * (r - self.r0))) ** 2 - 1)
        pair = pair * self.cutoff(r / self.r_max)
        return r.new_zeros(len(atom_types)).index_add(0, i, 0.5 * pair)


def test_public_import():
    import molfold

    assert molfold.MolfoldCalculator is MolfoldCalculator


# --- agreement with the potential and with finite differences -------------------------------


def test_results_equal_potential_outputs(float64, tiny, ethanol, triclinic_cu):
    calc = MolfoldCalculator(tiny)
    for atoms in (ethanol, triclinic_cu):
        expected = evaluate(tiny, atoms)
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(expected["energy"][0], abs=1e-12)
        assert calc.get_property("free_energy") == atoms.get_potential_energy()
        np.testing.assert_allclose(atoms.get_forces(), expected["forces"], atol=1e-12)
        energies = atoms.get_potential_energies()
        np.testing.assert_allclose(energies, expected["atomic_energy"], atol=1e-12)
        assert energies.sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    stress = triclinic_cu.get_stress(voigt=False)
    np.testing.assert_allclose(stress, expected["stress"][0], atol=1e-12)
    voigt = triclinic_cu.get_stress()  # xx yy zz yz xz xy
    np.testing.assert_allclose(voigt, stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], atol=1e-12)


def test_forces_equal_numerical_forces(float64, tiny, ethanol):
    calc = MolfoldCalculator(tiny)
    ethanol.calc = calc
    numerical = numerical_forces(ethanol, eps=1e-4)
    np.testing.assert_allclose(ethanol.get_forces(), numerical, atol=1e-7)


def test_stress_equals_numerical_stress(float64, tiny, triclinic_cu):
    """ASE's stress is (1/V) dE/d(strain); a sign or factor-of-two slip shows up here."""
    calc = MolfoldCalculator(tiny)
    triclinic_cu.calc = calc
    stress = triclinic_cu.get_stress()
    assert np.abs(stress).max() > 1e-3  # not trivially zero
    np.testing.assert_allclose(stress, numerical_stress(triclinic_cu), atol=1e-8)
    numerical = numerical_forces(triclinic_cu, eps=1e-4)
    np.testing.assert_allclose(triclinic_cu.get_forces(), numerical, atol=1e-7)


def test_unit_factors(float64, tiny, triclinic_cu):
    """A model in kcal/mol and a made-up length unit of 0.8 A: the energy is converted, and forces
    and stress stay the derivatives of that energy in eV and Angstrom."""
    kcal_mol, length = units.kcal / units.mol, 0.8
    calc = MolfoldCalculator(tiny, energy_units_to_eV=kcal_mol, length_units_to_A=length)
    atoms = triclinic_cu
    atoms.calc = calc
    in_model_units = atoms.copy()
    in_model_units.set_cell(np.asarray(atoms.cell) / length, scale_atoms=True)
    expected = evaluate(tiny, in_model_units)
    assert atoms.get_potential_energy() == pytest.approx(
        kcal_mol * expected["energy"][0], abs=1e-12
    )
    np.testing.assert_allclose(atoms.get_forces(), numerical_forces(atoms, eps=1e-4), atol=1e-7)
    np.testing.assert_allclose(atoms.get_stress(), numerical_stress(atoms), atol=1e-8)


def test_float32_model_gives_float64_results(ethanol):
    potential = make_potential(SPECIES, num_layers=1)
    assert potential.dtype == torch.float32
    ethanol.calc = MolfoldCalculator(potential)
    forces = ethanol.get_forces()
    assert forces.dtype == np.float64 and ethanol.get_potential_energies().dtype == np.float64
    ethanol.calc = MolfoldCalculator(make_potential(SPECIES, num_layers=1).to(torch.float64))
    np.testing.assert_allclose(forces, ethanol.get_forces(), atol=1e-4)


# --- errors ------------------------------------------------------------------------------------


def test_unknown_element_is_refused():
    calc = MolfoldCalculator(make_potential([1, 6], num_layers=1))
    # N and S unknown, and S has no neighbour: the element check comes before the graph
    atoms = Atoms(
        "CH3NS", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [-1.4, 0, 0], [20, 0, 0]]
    )
    atoms.calc = calc
    with pytest.raises(UnknownElementError) as error:
        atoms.get_potential_energy()
    assert "element(s) N, S" in str(error.value) and "knows only H, C" in str(error.value)


def test_stress_needs_a_periodic_cell(tiny, ethanol):
    ethanol.calc = MolfoldCalculator(tiny)
    ethanol.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="periodic in all three directions"):
        ethanol.get_stress()


def test_rejects_other_models():
    with pytest.raises(ConfigError, match="needs a potential"):
        MolfoldCalculator(nn.Linear(3, 1))


def test_checkpoint_path(float64, tmp_path, ethanol):
    potential = build_model(
        "allegro", {**SMALL, "r_max": 4.0, "num_layers": 1}, {"species": [1, 6, 8]}, "float64"
    )
    path = tmp_path / "model.ckpt"
    save_model(potential, path)
    ethanol.calc = MolfoldCalculator(potential)
    expected = ethanol.get_forces()
    for model in (path, str(path)):
        ethanol.calc = MolfoldCalculator(model)
        assert not ethanol.calc.potential.training
        np.testing.assert_allclose(ethanol.get_forces(), expected, atol=1e-12)


# --- molecular dynamics --------------------------------------------------------------------------


def test_nve_conserves_energy(float64, bound_allegro, ethanol):
    """Ethanol at its minimum on the tiny float64 Allegro (with a repulsive core), 300 K
    velocities, 50 fs of velocity Verlet at dt = 0.25 fs.

    The bound: velocity Verlet conserves a shadow Hamiltonian, so E_tot only fluctuates, by about
    (omega dt)^2 times the kinetic energy per degree of freedom. The stiffest modes here (H against
    the core, curvature ~20 eV/A^2) have omega ~ 0.45/fs, so at dt = 0.25 fs (omega dt)^2 ~ 1e-2,
    and with kT ~ 0.01-0.03 eV that is ~1e-4 eV/atom; we measure ~4e-6. The bound is meaningful:
    the error grows as dt^2 (16x at dt = 1 fs) and exceeds it at dt = 2 fs. Forces inconsistent
    with the energy would instead leave an error that does not shrink with dt.
    """
    bound = 1e-4  # eV/atom
    calc = MolfoldCalculator(bound_allegro)
    assert relax_script.relax(ethanol, calc, fmax=0.02, optimizer="fire", verbose=False)[
        "converged"
    ]
    small = nve_energy_error(calc, ethanol, timestep_fs=0.25, steps=200)
    medium = nve_energy_error(calc, ethanol, timestep_fs=1.0, steps=50)
    large = nve_energy_error(calc, ethanol, timestep_fs=2.0, steps=25)
    assert small < bound < large
    assert 8 < medium / small < 32  # dt^2 scaling: 16


def test_run_md_writes_trajectory(tiny, ethanol, tmp_path, capsys):
    path = tmp_path / "md" / "langevin.traj"
    summary = run_md_script.run_md(
        ethanol, MolfoldCalculator(tiny), "langevin", 300.0, 0.5, 20, trajectory=path, log_every=5
    )
    frames = read(path, ":")
    assert len(frames) == 5 and summary["steps"] == 20 and len(summary["etot_eV"]) == 21
    np.testing.assert_allclose(frames[-1].positions, ethanol.positions)
    assert frames[-1].get_potential_energy() == pytest.approx(summary["epot_eV"][-1])
    out = capsys.readouterr().out
    assert "Etot/eV" in out and "T/K" in out and "eV/atom/ps" in out
    rows = [line.split() for line in out.splitlines() if len(line.split()) == 6]
    assert [row[:2] for row in rows[1:]] == [[f"{s}", f"{s * 5e-4:.4f}"] for s in range(0, 21, 5)]


def test_read_structure(tmp_path):
    aspirin = run_md_script.read_structure(DATA / "aspirin_xtb_500K.npz", frame=3)
    with np.load(DATA / "aspirin_xtb_500K.npz") as npz:
        np.testing.assert_array_equal(aspirin.numbers, npz["z"])
        np.testing.assert_array_equal(aspirin.positions, npz["R"][3])
    np.savez(
        tmp_path / "rmd17.npz", nuclear_charges=aspirin.numbers, coords=aspirin.positions[None]
    )
    assert run_md_script.read_structure(tmp_path / "rmd17.npz") == aspirin
    write(tmp_path / "aspirin.xyz", [aspirin, aspirin])
    assert len(run_md_script.read_structure(tmp_path / "aspirin.xyz", frame=1)) == 21
    with pytest.raises(IndexError, match="frame 5 out of range"):
        run_md_script.read_structure(tmp_path / "rmd17.npz", frame=5)


# --- relaxation ----------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["bfgs", "fire", "lbfgs"])
def test_relax_molecule(float64, bound_allegro, optimizer):
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.1, seed=3)
    calc = MolfoldCalculator(bound_allegro)
    summary = relax_script.relax(atoms, calc, 0.05, 300, optimizer, verbose=False)
    assert summary["converged"]
    assert summary["final_energy_eV"] < summary["initial_energy_eV"] - 0.1
    assert summary["final_max_force"] < 0.05
    assert relax_script.max_force(atoms) == summary["final_max_force"]


def test_relax_cell(float64, triclinic_cu, capsys):
    calc = MolfoldCalculator(Potential(MorsePairs(), [29]))
    volume = triclinic_cu.get_volume()
    summary = relax_script.relax(triclinic_cu, calc, fmax=0.05, steps=200, relax_cell=True)
    assert summary["converged"] and summary["final_energy_eV"] < summary["initial_energy_eV"]
    assert np.abs(summary["final_stress"]).max() * triclinic_cu.get_volume() < 0.05
    assert triclinic_cu.get_volume() != pytest.approx(volume, rel=1e-2)
    assert "|stress|/GPa" in capsys.readouterr().out
    with pytest.raises(ValueError, match="periodic in all three"):
        relax_script.relax(molecule("H2O"), calc, relax_cell=True)


# --- command lines -------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["run_md", "relax"])
def test_cli_help(script):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / f"{script}.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "--model" in result.stdout and "--structure" in result.stdout


def test_cli_main(float64, tmp_path, ethanol, capsys):
    checkpoint = tmp_path / "model.ckpt"
    potential = build_model(
        "allegro", {**SMALL, "r_max": 4.0, "num_layers": 1}, {"species": [1, 6, 8]}, "float64"
    )
    save_model(potential, checkpoint)
    write(tmp_path / "ethanol.xyz", ethanol)
    trajectory, output = tmp_path / "md.traj", tmp_path / "out" / "relaxed.extxyz"
    run_md_script.main(
        [
            "--model",
            str(checkpoint),
            "--structure",
            str(tmp_path / "ethanol.xyz"),
            "--steps",
            "4",
            "--log-every",
            "2",
            "--trajectory",
            str(trajectory),
        ]
    )
    assert len(read(trajectory, ":")) == 3
    relax_script.main(
        [
            "--model",
            str(checkpoint),
            "--structure",
            str(tmp_path / "ethanol.xyz"),
            "--fmax",
            "100",
            "--output",
            str(output),
        ]
    )
    relaxed = read(output)
    np.testing.assert_allclose(relaxed.positions, ethanol.positions, atol=1e-6)
    assert sorted(p.name for p in output.parent.iterdir()) == ["relaxed.extxyz"]  # no temp left
    with pytest.raises(SystemExit, match="not trained on element"):
        write(tmp_path / "water_cu.xyz", Atoms("OCu", positions=[[0, 0, 0], [2, 0, 0]]))
        relax_script.main(
            ["--model", str(checkpoint), "--structure", str(tmp_path / "water_cu.xyz")]
        )
