"""Bring-your-own-data loading from extxyz files and ASE databases."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import voigt_6_to_full_3x3_stress
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molfold.data import graph as G
from molfold.data.sources.ase_files import load_ase
from molfold.errors import DataError

# Independent of ase.units: CODATA 2014 (N_A = 6.022140857e23 /mol, e = 1.6021766208e-19 C,
# Bohr radius 0.52917721067 A).
KCAL_PER_MOL_IN_EV = 4184.0 / (6.022140857e23 * 1.6021766208e-19)
BOHR_IN_ANGSTROM = 0.52917721067


def at(path: Path) -> str:
    """``path`` as a regular expression that matches it literally."""
    return re.escape(str(path))


def copper_frames(n_frames: int = 3) -> list[Atoms]:
    """Rattled, strained periodic Cu cells with EMT energies, forces and stress attached."""
    frames = []
    for k in range(n_frames):
        atoms = bulk("Cu", "fcc", a=3.6) * (2, 2, 1)
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + 0.02 * k * np.eye(3)[::-1]), scale_atoms=True)
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        results = {
            "energy": atoms.get_potential_energy(),
            "forces": atoms.get_forces(),
            "stress": atoms.get_stress(),
        }
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


def molecules_with_custom_keys() -> list[Atoms]:
    """Non-periodic molecules with energies in kcal/mol under ``info['E_kcal']``."""
    frames = []
    for k, name in enumerate(["H2O", "CH4", "C2H6"]):
        atoms = molecule(name)
        atoms.info["E_kcal"] = -100.0 * (k + 1)
        atoms.arrays["F_kcal"] = np.full((len(atoms), 3), float(k + 1))
        frames.append(atoms)
    return frames


@pytest.fixture
def copper_xyz(tmp_path) -> Path:
    path = tmp_path / "cu.extxyz"
    ase.io.write(path, copper_frames(), format="extxyz")
    return path


@pytest.fixture
def copper_db(tmp_path) -> Path:
    path = tmp_path / "cu.db"
    with ase.db.connect(path) as db:
        for atoms in copper_frames():
            db.write(atoms)
    return path


@pytest.mark.parametrize("fixture", ["copper_xyz", "copper_db"])
def test_periodic_frames_with_calculator_results(fixture, request):
    path = request.getfixturevalue(fixture)
    expected = copper_frames()
    graphs = load_ase(path, r_max=3.0, stress_key="stress")
    assert len(graphs) == 3
    for k, (graph, atoms) in enumerate(zip(graphs, expected, strict=True)):
        assert int(graph.frame) == k
        np.testing.assert_allclose(graph[G.POS].numpy(), atoms.positions, atol=1e-7)
        np.testing.assert_allclose(graph[G.CELL][0].numpy(), atoms.cell[:], atol=1e-7)
        assert graph[G.PBC].tolist() == [[True, True, True]]
        assert graph[G.ENERGY].shape == (1,)
        assert graph[G.ENERGY].item() == pytest.approx(atoms.get_potential_energy(), rel=1e-7)
        np.testing.assert_allclose(graph[G.FORCES].numpy(), atoms.get_forces(), atol=1e-7)
        assert graph[G.STRESS].shape == (1, 3, 3)
        full = voigt_6_to_full_3x3_stress(atoms.get_stress())
        np.testing.assert_allclose(graph[G.STRESS][0].numpy(), full, atol=1e-9)
        # every atom has the 12 nearest neighbours of fcc Cu (2.55 A) within 3 A
        assert graph[G.EDGE_INDEX].shape[1] == 12 * len(atoms)
    assert not np.allclose(graphs[0][G.STRESS], graphs[2][G.STRESS])


@pytest.mark.parametrize(
    ("index", "frames"), [(":", [0, 1, 2]), ("1:", [1, 2]), ("-1", [2]), (0, [0])]
)
def test_index_selects_frames(copper_xyz, index, frames):
    graphs = load_ase(copper_xyz, r_max=3.0, index=index)
    assert [int(g.frame) for g in graphs] == frames
    energies = [a.get_potential_energy() for a in copper_frames()]
    assert [g[G.ENERGY].item() for g in graphs] == pytest.approx([energies[k] for k in frames])


def test_custom_keys_and_kcal_per_mol(tmp_path):
    path = tmp_path / "molecules.xyz"
    ase.io.write(path, molecules_with_custom_keys(), format="extxyz")
    graphs = load_ase(
        path, r_max=5.0, energy_key="E_kcal", forces_key="F_kcal", energy_unit="kcal/mol"
    )
    assert [g[G.ENERGY].item() for g in graphs] == pytest.approx(
        [-100.0 * KCAL_PER_MOL_IN_EV, -200.0 * KCAL_PER_MOL_IN_EV, -300.0 * KCAL_PER_MOL_IN_EV],
        rel=1e-6,
    )
    for k, graph in enumerate(graphs):
        expected = (k + 1) * KCAL_PER_MOL_IN_EV
        np.testing.assert_allclose(graph[G.FORCES].numpy(), expected, rtol=1e-6)
        assert not graph[G.PBC].any() and not graph[G.CELL].any()
    assert graphs[2][G.Z].tolist() == molecule("C2H6").numbers.tolist()


def test_db_key_value_pairs_and_data(tmp_path):
    path = tmp_path / "molecules.db"
    with ase.db.connect(path) as db:
        for k, atoms in enumerate(molecules_with_custom_keys()):
            db.write(Atoms(atoms), E_ref=float(k), data={"F_ref": np.full((len(atoms), 3), 0.5)})
    graphs = load_ase(path, r_max=5.0, energy_key="E_ref", forces_key="F_ref")
    assert [g[G.ENERGY].item() for g in graphs] == [0.0, 1.0, 2.0]
    assert all(bool((g[G.FORCES] == 0.5).all()) for g in graphs)


def test_length_and_energy_units_scale_positions_forces_and_stress(tmp_path):
    atoms = copper_frames(1)[0]
    in_bohr = atoms.copy()
    in_bohr.set_cell(atoms.cell[:] / BOHR_IN_ANGSTROM, scale_atoms=True)
    hartree = units.Hartree
    in_bohr.calc = SinglePointCalculator(
        in_bohr,
        energy=atoms.get_potential_energy() / hartree,
        forces=atoms.get_forces() * BOHR_IN_ANGSTROM / hartree,
        stress=atoms.get_stress() * BOHR_IN_ANGSTROM**3 / hartree,
    )
    path = tmp_path / "bohr.xyz"
    ase.io.write(path, in_bohr, format="extxyz")
    (graph,) = load_ase(
        path, r_max=3.0, stress_key="stress", energy_unit="hartree", length_unit="Bohr"
    )
    (reference,) = load_ase(
        _write(tmp_path / "angstrom.xyz", atoms), r_max=3.0, stress_key="stress"
    )
    # extxyz keeps 8 decimals: 5e-9 Hartree/Bohr is 2.6e-7 eV/A
    for key, atol in ((G.POS, 1e-8), (G.CELL, 1e-8), (G.ENERGY, 1e-8), (G.FORCES, 1e-6)):
        torch.testing.assert_close(graph[key], reference[key], rtol=1e-7, atol=atol)
    torch.testing.assert_close(graph[G.STRESS], reference[G.STRESS], rtol=1e-7, atol=1e-9)
    assert torch.equal(graph[G.EDGE_INDEX], reference[G.EDGE_INDEX])


def _write(path: Path, atoms: Atoms) -> Path:
    ase.io.write(path, atoms, format="extxyz")
    return path


def test_targets_can_be_skipped(tmp_path):
    path = _write(tmp_path / "bare.xyz", molecule("CH4"))
    (graph,) = load_ase(path, r_max=3.0, energy_key=None, forces_key=None)
    assert G.ENERGY not in graph and G.FORCES not in graph
    assert graph[G.POS].shape == (5, 3)


def test_missing_key_names_key_frame_and_available_keys(tmp_path):
    path = tmp_path / "molecules.xyz"
    ase.io.write(path, molecules_with_custom_keys(), format="extxyz")
    with pytest.raises(DataError) as info:
        load_ase(path, r_max=5.0, energy_key="E_kcal", forces_key="REF_forces")
    message = str(info.value)
    assert f"{path} frame 0" in message and "'REF_forces' not found" in message
    assert "'E_kcal'" in message and "'F_kcal'" in message and "'positions'" in message


def test_missing_key_in_a_later_frame_names_that_frame(copper_xyz, tmp_path):
    frames = ase.io.read(copper_xyz, ":")
    frames[2].calc = None
    path = _write(tmp_path / "partial.xyz", frames)
    with pytest.raises(DataError, match=rf"{at(path)} frame 2: key 'energy' not found"):
        load_ase(path, r_max=3.0)


def test_per_atom_array_as_energy_is_rejected(tmp_path):
    path = tmp_path / "molecules.xyz"
    ase.io.write(path, molecules_with_custom_keys(), format="extxyz")
    with pytest.raises(
        DataError, match=r"frame 0: energy 'F_kcal' must be one number, got \(3, 3\)"
    ):
        load_ase(path, r_max=5.0, energy_key="F_kcal", forces_key=None)


def test_bad_stress_shape_is_reported(tmp_path):
    atoms = molecule("CH4")
    atoms.info["my_stress"] = np.arange(4.0)
    path = _write(tmp_path / "virial.xyz", atoms)
    with pytest.raises(DataError, match=r"'my_stress' must have 6 \(Voigt\), 9 or 3x3 values"):
        load_ase(path, r_max=3.0, energy_key=None, forces_key=None, stress_key="my_stress")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"energy_unit": "Ry"},
            r"unknown energy unit 'Ry'; known: \['eV', 'meV', 'Hartree', 'kcal/mol', 'kJ/mol'\]",
        ),
        ({"length_unit": "pm"}, r"unknown length unit 'pm'; known: \['Angstrom', 'Bohr', 'nm'\]"),
    ],
)
def test_unknown_unit_is_rejected(copper_xyz, kwargs, message):
    with pytest.raises(DataError, match=message):
        load_ase(copper_xyz, r_max=3.0, **kwargs)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=at(tmp_path / "none.xyz")):
        load_ase(tmp_path / "none.xyz", r_max=3.0)


@pytest.mark.parametrize("name", ["empty.xyz", "empty.db"])
def test_empty_file_is_rejected(tmp_path, name):
    path = tmp_path / name
    path.touch()
    with pytest.raises(DataError, match=rf"{at(path)}: the file is empty"):
        load_ase(path, r_max=3.0)


def test_db_without_rows_is_rejected(tmp_path):
    path = tmp_path / "no_rows.db"
    with ase.db.connect(path) as db:
        db.delete([db.write(molecule("H2O"))])
    with pytest.raises(DataError, match=rf"{at(path)}: the file holds no structures"):
        load_ase(path, r_max=3.0)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("garbage.db", b"this is not an SQLite database" * 10),
        ("garbage.xyz", b'3\nLattice="1 2" pbc="T T T"\nH 0 0\n'),
        ("truncated.xyz", None),
    ],
)
def test_corrupt_file_is_rejected(tmp_path, copper_xyz, name, content):
    path = tmp_path / name
    if content is None:
        lines = copper_xyz.read_text().splitlines(keepends=True)
        content = "".join(lines[:5]).encode()  # header says 4 atoms, 3 atom lines follow
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"{at(path)}: cannot read structures"):
        load_ase(path, r_max=3.0)


def test_index_out_of_range_is_rejected(copper_xyz):
    with pytest.raises(DataError, match=r"index 7 is out of range for 3 structures"):
        load_ase(copper_xyz, r_max=3.0, index=7)


def test_bad_structure_names_file_and_frame(tmp_path):
    atoms = molecule("H2O")
    atoms.positions[1] = atoms.positions[0] + 0.01
    atoms.info["energy"] = 0.0
    path = _write(tmp_path / "broken.xyz", [molecule("H2O"), atoms])
    with pytest.raises(DataError, match=rf"{at(path)} frame 1: atoms .* apart"):
        load_ase(path, r_max=3.0, energy_key=None, forces_key=None)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.binary(min_size=1, max_size=2000), suffix=st.sampled_from([".extxyz", ".xyz", ".db"])
)
def test_random_bytes_give_a_data_error(tmp_path, content, suffix):
    """Garbage in any supported format is reported as DataError, never as another exception."""
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(content)
    with contextlib.suppress(DataError):
        load_ase(path, r_max=5.0)


def test_a_folder_of_compressed_files_with_groups_splits_by_molecule(tmp_path):
    from molfold.data.datamodule import load_structures
    from molfold.data.splits import random_split

    folder = tmp_path / "frames"
    folder.mkdir()
    names = ["CH4", "H2O", "NH3", "C2H6"]
    for k, pair in enumerate((names[:2], names[2:])):
        frames = []
        for name in pair:
            for shift in (0.0, 0.05):  # two "conformers" of each molecule
                atoms = molecule(name)
                atoms.positions[0] += shift
                atoms.info["smiles"] = name
                atoms.calc = EMT()
                atoms.get_potential_energy()
                frames.append(atoms)
        ase.io.write(folder / f"chunk_{k}.extxyz.gz", frames)
    data = {"format": "ase", "path": str(folder), "group_key": "smiles"}
    graphs = load_structures(data, [])
    numbers = [g.z.tolist() for g in graphs]
    assert numbers == [molecule(n).numbers.tolist() for n in names for _ in range(2)]
    assert [int(g.group) for g in graphs] == [0, 0, 1, 1, 2, 2, 3, 3]
    groups = np.array([int(g.group) for g in graphs])
    split = random_split(len(graphs), 2, 1, 1, 0, groups=groups)
    for part in split.values():  # no molecule in two splits
        assert not set(groups[part]) & set(groups[np.setdiff1d(np.arange(8), part)])
