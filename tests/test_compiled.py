"""Compiled potentials (molfold.compiled): the exported package and the in-process compiled model
give the eager model's energies, forces and stress, the calculator uses them, and failures are
clear. Each compilation takes tens of seconds, so one package and one JIT model serve many
checks."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from e3nn import o3

from molfold.calculator import MolfoldCalculator
from molfold.cli import main
from molfold.compiled.export import TOLERANCES, random_structure, run_export
from molfold.compiled.package import load_package
from molfold.compiled.potential import CompiledPotential, centre_blocks
from molfold.compiled.trace import check_traceable
from molfold.data.neighbors import atoms_to_graph
from molfold.errors import CheckpointError, ConfigError
from molfold.models.checkpoint import save_model
from molfold.models.registry import build_model
from molfold.nn.path_mixing import PathwiseTensorProduct
from molfold.nn.strided import ChannelwiseTensorProduct, WeightedChannels, unroll_products
from molfold.shipped import shipped_data

from .common import SMALL, nve_energy_error, tiny_equiformer_potential
from .equivariance import TRANSFORMATIONS, assert_symmetry


def structures():
    """Structures of different sizes (the compiled sizes are free): a periodic cell, a molecule
    in vacuum, one atom whose neighbours are its own images, and an atom with no neighbour."""
    cell = random_structure([1, 6, 8], 4.0, seed=3)
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    single = bulk("C", "sc", a=2.0)
    lonely = molecule("H2O")
    lonely.positions[0] += [0.0, 0.0, 6.0]  # O far from both H: no edge at all for it
    return {"cell": cell, "ethanol": ethanol, "single-atom cell": single, "isolated": lonely}


def results(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress()
    return out


@pytest.fixture(scope="module")
def float64_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    hparams = {**SMALL, "r_max": 4.0, "avg_num_neighbors": 10.0, "l_max": 2}
    statistics = {"species": [1, 6, 8], "energy_scale": 0.7, "energy_shifts": [-3.0, -2.0, -1.0]}
    potential = build_model("allegro", hparams, statistics, "float64")
    path = tmp_path_factory.mktemp("compiled") / "model.ckpt"
    save_model(potential, path)
    return path


@pytest.fixture(scope="module")
def package(float64_checkpoint):
    output = float64_checkpoint.with_name("model.pt2")
    run_export({"ckpt": str(float64_checkpoint), "output": str(output), "device": "cpu"})
    return output


@pytest.mark.parametrize("name", list(structures()))
def test_package_matches_the_eager_model_in_float64(package, float64_checkpoint, name):
    atoms = structures()[name]
    eager = results(MolfoldCalculator(float64_checkpoint), atoms)
    compiled = results(MolfoldCalculator(package), atoms)
    tolerance = TOLERANCES[torch.float64]
    assert abs(compiled["energy"] - eager["energy"]) <= tolerance["energy_per_atom"] * len(atoms)
    np.testing.assert_allclose(
        compiled["forces"], eager["forces"], rtol=0, atol=tolerance["forces"]
    )
    if "stress" in eager:
        np.testing.assert_allclose(compiled["stress"], eager["stress"], rtol=0, atol=1e-12)
    # a real comparison, not of zeros (one atom among its own images feels no force, but stress)
    if name == "single-atom cell":
        assert np.abs(eager["stress"]).max() > 1e-3
    elif name != "isolated":
        assert np.abs(eager["forces"]).max() > 1e-3


@pytest.mark.parametrize("transformation", TRANSFORMATIONS)
def test_package_outputs_transform_correctly_in_float64(package, transformation):
    """Every output of the compiled model under a random rotation, reflection, translation
    (with lattice shifts) and permutation, float64, the checks every eager model gets."""
    compiled = load_package(package)
    assert compiled.dtype == torch.float64
    assert_symmetry(compiled, structures()["cell"], transformation, seed=4)


@pytest.mark.parametrize("edge_order", ["sorted", "shuffled"])
def test_blocks_of_centres_give_the_whole_graph_result(package, edge_order):
    """Evaluated in blocks of whole centres (as large cells are), the package gives what one
    call on every edge gives, float64: as slices for edges sorted by centre (as the neighbour
    list gives them), through a sort for edges in any order."""
    compiled = load_package(package)
    atoms = random_structure([1, 6, 8], 4.0, seed=5) * (2, 1, 1)
    graph = atoms_to_graph(atoms, compiled.r_max)
    centre = graph.edge_index[1]
    assert (centre[1:] >= centre[:-1]).all(), "the neighbour list sorts edges by centre"
    if edge_order == "shuffled":
        order = torch.randperm(centre.shape[0], generator=torch.Generator().manual_seed(0))
        graph.edge_index, graph.edge_cell_shift = (
            graph.edge_index[:, order],
            graph.edge_cell_shift[order],
        )
    whole = compiled(graph, compute_stress=True)
    compiled.max_edges_per_call = 37
    blocks = centre_blocks(graph.edge_index[1], len(atoms), 37)
    assert all(isinstance(b, slice) for b in blocks) == (edge_order == "sorted")
    blocks = [torch.arange(graph.edge_index.shape[1])[b] for b in blocks]
    assert len(blocks) > 10 and max(len(b) for b in blocks) <= 37
    # every edge once, each centre in one block only
    assert sorted(torch.cat(blocks).tolist()) == list(range(graph.edge_index.shape[1]))
    owners = [set(graph.edge_index[1, b].tolist()) for b in blocks]
    assert sum(len(o) for o in owners) == len(set().union(*owners))
    calls = []
    core = compiled.core

    def counting_core(vectors, edge_index, atom_types):
        calls.append((atom_types.shape[0], set(edge_index[1].tolist())))
        return core(vectors, edge_index, atom_types)

    compiled.core = counting_core
    blocked = compiled(graph, compute_stress=True)
    for key in whole:
        torch.testing.assert_close(blocked[key], whole[key], rtol=1e-12, atol=1e-12)
    # each call sees only its block's atoms, numbered from 0
    assert len(calls) == len(blocks)
    assert all(len(centres) < atoms_seen < len(atoms) for atoms_seen, centres in calls)


def test_a_block_of_one_atom_and_its_images(package):
    """One atom in a small periodic cell: every edge joins the atom to its own images, the
    block holds one atom (the core then gets an idle second one)."""
    compiled = load_package(package)
    atoms = Atoms("O", cell=np.eye(3) * 2.6, pbc=True)
    graph = atoms_to_graph(atoms, compiled.r_max)
    whole = compiled(graph, compute_stress=True)
    compiled.max_edges_per_call = 10
    assert graph.edge_index.shape[1] > 10
    blocked = compiled(graph, compute_stress=True)
    for key in whole:
        torch.testing.assert_close(blocked[key], whole[key], rtol=1e-12, atol=1e-12)


def test_calculator_uses_the_package(package):
    calc = MolfoldCalculator(package)
    assert isinstance(calc.potential, CompiledPotential)
    assert calc.potential.backend == "aotinductor" and calc.potential.species == [1, 6, 8]
    assert calc.potential.core is not None


def test_package_loads_in_a_fresh_process(package, float64_checkpoint):
    """A new Python process (nothing of molfold imported yet) loads the package: the custom
    operators it calls are registered by the loader itself."""
    script = (
        "import sys; from molfold import MolfoldCalculator; from ase.build import molecule\n"
        "atoms = molecule('CH3CH2OH'); atoms.calc = MolfoldCalculator(sys.argv[1])\n"
        "print(repr(atoms.get_potential_energy()))"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(package)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    atoms = molecule("CH3CH2OH")
    atoms.calc = MolfoldCalculator(float64_checkpoint)
    assert float(run.stdout.strip().splitlines()[-1]) == pytest.approx(
        atoms.get_potential_energy(), abs=1e-9
    )


def test_package_for_another_device_or_damaged_is_refused(package, tmp_path):
    with pytest.raises(CheckpointError, match="compiled for cpu, not meta"):
        load_package(package, torch.device("meta"))
    damaged = tmp_path / "damaged.pt2"
    damaged.write_bytes(package.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="cannot be loaded as a compiled model"):
        MolfoldCalculator(damaged)


@pytest.fixture(scope="module")
def compiled_cu():
    return MolfoldCalculator(shipped_data("allegro_cu_emt.ckpt"), compile=True)


def test_jit_compiled_shipped_model_matches_eager_in_float32(compiled_cu):
    """The shipped Cu potential (float32), compiled in-process: the default of the MD script.
    Two cell sizes, so the compiled graph serves more than the size it first saw."""
    checkpoint = shipped_data("allegro_cu_emt.ckpt")
    compiled_calc = compiled_cu
    assert isinstance(compiled_calc.potential, CompiledPotential)
    assert compiled_calc.potential.backend == "inductor"
    eager_calc = MolfoldCalculator(checkpoint)
    tolerance = TOLERANCES[torch.float32]
    for reps in (2, 3):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (reps, reps, reps)
        atoms.rattle(0.1, seed=reps)
        eager, compiled = results(eager_calc, atoms), results(compiled_calc, atoms)
        assert abs(compiled["energy"] - eager["energy"]) <= tolerance["energy_per_atom"] * len(
            atoms
        )
        np.testing.assert_allclose(compiled["forces"], eager["forces"], atol=tolerance["forces"])
        np.testing.assert_allclose(compiled["stress"], eager["stress"], atol=1e-6)
        assert np.abs(eager["forces"]).max() > 0.05
    assert compiled_calc.potential.core is not None  # it never fell back


def test_nve_on_the_compiled_model_conserves_energy(compiled_cu):
    """200 steps of 2 fs at 300 K, 108 Cu atoms, float32 compiled: the total energy drifts less
    than 3e-4 eV/atom (the bound of the eager NVE tests)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (3, 3, 3)
    assert nve_energy_error(compiled_cu, atoms, timestep_fs=2.0, steps=200) < 3e-4
    assert compiled_cu.potential.core is not None


def test_compiler_failure_falls_back_to_eager_with_one_warning(float64_checkpoint):
    eager_calc = MolfoldCalculator(float64_checkpoint)

    def broken_core(*args):
        raise RuntimeError("no C++ compiler found")

    potential = eager_calc.potential
    compiled = CompiledPotential(
        broken_core, potential.species, potential.scales, potential.shifts, potential.r_max,
        potential.dtype, potential.model.widest_edge_row, backend="inductor",
        fallback=copy.deepcopy(potential),
    )  # fmt: skip
    atoms = structures()["ethanol"]
    with pytest.warns(RuntimeWarning, match="not available here.*no C\\+\\+ compiler.*eager"):
        first = results(MolfoldCalculator(compiled), atoms)
    second = results(MolfoldCalculator(compiled), atoms)  # no second warning, still eager
    expected = results(eager_calc, atoms)
    for out in (first, second):
        np.testing.assert_allclose(out["forces"], expected["forces"], atol=1e-12)


def test_only_strictly_local_potentials_compile():
    equiformer = tiny_equiformer_potential()
    with pytest.raises(ConfigError, match="Equiformer.* cannot be compiled yet.*eager"):
        check_traceable(equiformer)


def test_export_command_reports_bad_output(float64_checkpoint, tmp_path, capsys):
    assert main(["export", f"ckpt={float64_checkpoint}", f"output={tmp_path / 'x.zip'}"]) == 2
    assert "output must end in .pt2" in capsys.readouterr().err


@pytest.mark.parametrize("l_max", [1, 2, 3])
def test_unrolled_products_equal_the_gathered_ones(float64, l_max):
    """The entry-by-entry evaluation traced for compilation and the gathered eager one agree."""
    torch.manual_seed(l_max)
    irreps = o3.Irreps([(1, (degree, p)) for degree in range(l_max + 1) for p in (1, -1)])
    sh = o3.Irreps.spherical_harmonics(l_max, p=-1)
    x1, x2 = torch.randn(5, irreps.dim, 3), torch.randn(5, sh.dim, 3)
    for product in (
        ChannelwiseTensorProduct(irreps, sh, irreps, 3),
        PathwiseTensorProduct(irreps, sh, irreps),
    ):
        gathered = product(x1, x2)
        unrolled = unroll_products(copy.deepcopy(product))(x1, x2)
        torch.testing.assert_close(unrolled, gathered, rtol=1e-12, atol=1e-12)
        assert gathered.abs().max() > 0.1


def test_weighted_channels_read_irrep_major_weights(float64):
    """Channel u of irrep r is weighted by column r * mul + u, an independent loop here."""
    irreps, mul = o3.Irreps("0e+1o+2e"), 3
    x, weights = torch.randn(4, irreps.dim), torch.randn(4, len(irreps) * mul)
    expected = torch.zeros(4, irreps.dim, mul)
    for r, block in enumerate(irreps.slices()):
        for u in range(mul):
            expected[:, block, u] = x[:, block] * weights[:, r * mul + u, None]
    torch.testing.assert_close(WeightedChannels(irreps, mul)(x, weights), expected)


def test_allocator_settings_respect_the_users_choice(monkeypatch):
    """Applied in-process on glibc, unless the user set glibc's own variables."""
    from molfold.compiled import allocator

    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert allocator.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert allocator.keep_freed_memory() is True  # this machine's libc is glibc
