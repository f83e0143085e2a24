"""Test mixins that every model's tests inherit, one per kind of :mod:`molfold.models.registry`.

* :class:`EnergyModelTests` (``potential``): build and parameter count, batching, float64
  rotation / reflection / translation / permutation symmetry of every output (each its own
  test), float32 equivariance, locality and isolated atoms, smoothness at the cutoff,
  finite-difference forces and stress.
* :class:`ConformerModelTests` (``conformer``): permutation equivariance, independence from batch
  padding, invariance of the loss to moving the target, equivariance of an equivariant part.
* :class:`PropertyModelTests` (``property``): O(3) invariance of scalar and rotation of vector
  outputs.

A model's test class inherits a mixin and supplies a class-scoped fixture ``model_config``
returning a :class:`ModelConfig`, usually parametrized over several configurations; every test of
the mixin then runs for each::

    CONFIGS = [ModelConfig("allegro", {...}, {"species": [1, 6]}, num_parameters=..., id="...")]

    class TestAllegro(EnergyModelTests):
        @pytest.fixture(scope="class", params=CONFIGS, ids=str)
        @classmethod
        def model_config(cls, request):
            return request.param

Class attributes and methods named in each mixin's docstring are its hooks. The mixins' names do
not start with ``Test`` and this module's name does not start with ``test_``, so pytest collects
their tests only through a subclass in a test module; test modules import this module, never each
other. The design follows nequip's ``nequip/utils/unittests/model_tests_basic.py`` (mixins with a
``config`` fixture, reused by allegro's ``tests/model/test_allegro.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from ase import Atoms
from torch_geometric.data import Batch

from molfold.conformers.metrics import distance_errors, distance_l1_loss, metrics_from_sums
from molfold.data import graph as G
from molfold.data.molgraph import smiles_to_graph
from molfold.data.neighbors import atoms_to_graph
from molfold.models.registry import build_model, model_entry

from .equivariance import (
    TOLERANCE,
    TRANSFORMATIONS,
    assert_equivariant,
    assert_symmetry,
    evaluate,
    random_orthogonal,
    transformed,
)

STRUCTURES = ("molecule", "crystal")


@dataclass(frozen=True)
class ModelConfig:
    """One configuration of a registered model, as its test class declares it.

    ``num_parameters`` is the expected parameter count, from a source independent of the model's
    code (a reference implementation's count, or counted by hand); a potential must declare it.
    ``id`` names the configuration in test ids; ``seed`` seeds the initialisation.
    """

    name: str
    hparams: dict[str, Any]
    statistics: dict[str, Any] | None = None
    num_parameters: int | None = None
    id: str = ""
    seed: int = 0
    kind: str | None = None
    """The kind to build, for a name registered as several (None: its only kind)."""

    def build(self, dtype: str = "float64") -> torch.nn.Module:
        """The model through the registry, initialised from ``seed``, in eval mode."""
        torch.manual_seed(self.seed)
        statistics = copy.deepcopy(self.statistics)
        hparams = copy.deepcopy(self.hparams)
        return build_model(self.name, hparams, statistics, dtype, self.kind).eval()

    def __str__(self) -> str:
        return self.id or self.name


class _ModelTests:
    """What every mixin shares: the ``model_config`` fixture a subclass supplies, and the build
    check against the registry."""

    kind = ""

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _one_thread(cls):
        """One intra-op thread while these tests run: on tensors this small, threads only add
        synchronisation, which on a loaded machine costs ~50 ms per scatter instead of ~50 us."""
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(previous)

    @pytest.fixture(scope="class")
    @classmethod
    def model_config(cls) -> ModelConfig:
        raise NotImplementedError("a model's test class supplies the fixture model_config")

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls, model_config: ModelConfig) -> torch.nn.Module:
        """The model in float64 (built once per configuration; tests must not change it)."""
        return model_config.build("float64")

    def test_build_and_parameter_count(self, model_config: ModelConfig, model):
        """The registry builds the model as its kind, with its ``model_info``, in float64, with
        the declared number of parameters."""
        assert model_entry(model_config.name, model_config.kind).kind == self.kind
        assert model.model_info == {
            "name": model_config.name,
            "kind": self.kind,
            "hparams": model_config.hparams,
            "dtype": "float64",
            "statistics": model_config.statistics or {},
        }
        assert all(p.dtype == torch.float64 for p in model.parameters())
        count = sum(p.numel() for p in model.parameters())
        if model_config.num_parameters is None:
            assert self.kind != "potential", f"{model_config}: declare num_parameters"
            return
        assert count == model_config.num_parameters, (
            f"{model_config}: {count} parameters, expected {model_config.num_parameters}"
        )


def default_structures(ethanol: Atoms, triclinic_cu: Atoms) -> dict[str, Atoms]:
    """The structures of the ``structures`` fixture: conftest's rattled ethanol, and its
    triclinic Cu cell (neighbours through several periodic images) with one atom made O, so that
    two species meet in the cell."""
    crystal = triclinic_cu.copy()
    crystal.numbers[1] = 8
    return {"molecule": ethanol, "crystal": crystal}


# --- potentials ---------------------------------------------------------------------------------
def _energies(potential, structures: list[Atoms]) -> np.ndarray:
    """Total energies [len(structures)] of many structures, evaluated as one batch."""
    graphs = [atoms_to_graph(atoms, potential.r_max) for atoms in structures]
    out = potential(Batch.from_data_list(graphs), compute_forces=False)
    return out["energy"].detach().numpy()


def chain(species: list[int], r_max: float, length: int = 7, seed: int = 0) -> Atoms:
    """Atoms along x, 0.55 r_max apart (jittered): each has only its two chain neighbours within
    r_max, the next ones are at ~1.1 r_max, so information passed along the chain would show."""
    rng = np.random.default_rng(seed)
    positions = np.zeros((length, 3))
    positions[:, 0] = 0.55 * r_max * np.arange(length)
    positions += rng.normal(scale=0.05, size=(length, 3))
    numbers = [species[k % len(species)] for k in range(length)]
    return Atoms(numbers=numbers, positions=positions)


class EnergyModelTests(_ModelTests):
    """Tests of an interatomic potential (kind ``potential``, built as a
    :class:`~molfold.models.potential.Potential`), in float64 unless named otherwise.

    Hooks:

    * fixture ``model_config`` (class scope): the :class:`ModelConfig`, with ``num_parameters``.
    * fixture ``structures``: ``{"molecule": Atoms, "crystal": Atoms}``, a molecule and a periodic
      cell of the model's species; the default, ethanol and a triclinic Cu cell with one O, needs
      H, C, O and Cu.
    * ``reflections``: the model claims O(3) (True), not only SO(3), equivariance.
    * ``finite_range``: nothing couples atoms that no chain of pairs closer than r_max connects
      (any cutoff-graph model, message passing included).

    Strict locality (an atom's energy depends only on the atoms within r_max of it, no message
    passing) is the model class's own claim, ``strictly_local = True`` (Allegro's), which
    ``molfold lammps`` relies on to split a simulation into domains; the test checks it.
    """

    kind = "potential"
    reflections = True
    finite_range = True

    @pytest.fixture(scope="class")
    @classmethod
    def model32(cls, model_config: ModelConfig) -> torch.nn.Module:
        """The same model (same initialisation) in float32."""
        return model_config.build("float32")

    @pytest.fixture
    def structures(self, ethanol, triclinic_cu) -> dict[str, Atoms]:
        return default_structures(ethanol, triclinic_cu)

    def test_batch_equals_single_structures(self, model, structures):
        """A batch of a molecule and a periodic cell gives what each gives alone."""
        graphs = [atoms_to_graph(structures[key], model.r_max) for key in STRUCTURES]
        batched = model(Batch.from_data_list(graphs), compute_stress=True)
        singles = [model(graph, compute_stress=True) for graph in graphs]
        assert abs(float((singles[0]["energy"] - singles[1]["energy"]).detach())) > 1e-3
        start = 0
        for index, (graph, single) in enumerate(zip(graphs, singles)):
            atoms = slice(start, start + graph.num_nodes)
            pairs = [
                (batched["energy"][index], single["energy"][0]),
                (batched["atomic_energy"][atoms], single["atomic_energy"]),
                (batched["forces"][atoms], single["forces"]),
                (batched["stress"][index], single["stress"][0]),
            ]
            for got, expected in pairs:
                torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
            start += graph.num_nodes
        assert float(singles[1]["stress"].abs().max()) > 1e-4  # the cell's stress is compared

    @pytest.mark.parametrize("structure", STRUCTURES)
    @pytest.mark.parametrize("transformation", TRANSFORMATIONS)
    def test_symmetry(self, model, structures, transformation, structure):
        """Each of rotation, reflection, translation, permutation on its own: energy, atomic
        energies, forces and (periodic cell) stress transform as they must, to 1e-9."""
        if transformation == "reflection" and not self.reflections:
            pytest.skip("the model claims SO(3), not O(3), equivariance")
        seed = TRANSFORMATIONS.index(transformation) + 10 * STRUCTURES.index(structure)
        assert_symmetry(model, structures[structure], transformation, seed=seed)

    @pytest.mark.parametrize("structure", STRUCTURES)
    def test_equivariance_float32(self, model32, structures, structure):
        """Rotation (and reflection), translation and permutation at once, in float32, to 1e-4
        relative."""
        assert model32.dtype == torch.float32
        assert_equivariant(model32, structures[structure], seed=3, reflections=self.reflections)

    def test_far_atom_changes_nothing(self, model, structures):
        """An atom far beyond r_max from a cluster, moved about, changes none of the cluster's
        atomic energies or forces, which stay those of the cluster alone; its own energy stays
        the same and its force zero."""
        if not self.finite_range:
            pytest.skip("the model does not claim a finite range")
        cluster, r_max, z = structures["molecule"], model.r_max, model.species[0]
        n = len(cluster)
        centre = cluster.positions.mean(0)
        extent = np.linalg.norm(cluster.positions - centre, axis=1).max()
        far = centre + np.array([extent + 3 * r_max, 0.0, 0.0])
        alone = evaluate(model, cluster)
        outputs = []
        for shift in ([0.0, 0.0, 0.0], [0.5, r_max, -r_max]):
            atoms = cluster + Atoms(numbers=[z], positions=[far + shift])
            assert atoms.get_distances(n, range(n)).min() > 2 * r_max
            out = evaluate(model, atoms, allow_isolated=True)
            np.testing.assert_allclose(out["atomic_energy"][:n], alone["atomic_energy"], atol=1e-12)
            np.testing.assert_allclose(out["forces"][:n], alone["forces"], atol=1e-12)
            np.testing.assert_allclose(out["forces"][n:], 0.0, atol=0.0)
            total = alone["energy"] + out["atomic_energy"][n:]
            np.testing.assert_allclose(out["energy"], total, rtol=1e-12)
            outputs.append(out)
        np.testing.assert_allclose(*(out["atomic_energy"][n:] for out in outputs), rtol=1e-12)
        # control: the same atom within r_max of the cluster does change it
        near = cluster + Atoms(numbers=[z], positions=[cluster.positions[0] + [0, 0, 0.6 * r_max]])
        changed = evaluate(model, near)["atomic_energy"][:n] - alone["atomic_energy"]
        assert np.abs(changed).max() > 1e-6

    def test_isolated_atom(self, model, structures):
        """A structure of one atom (no pair within r_max at all) gives the energy that atom has
        far from everything in a larger structure, and zero force."""
        if not self.finite_range:
            pytest.skip("the model does not claim a finite range")
        cluster, r_max = structures["molecule"], model.r_max
        far = cluster.positions.max(0) + 3 * r_max
        spaced = [far + [3 * r_max * k, 0.0, 0.0] for k in range(len(model.species))]
        reference = evaluate(model, cluster + Atoms(model.species, spaced), allow_isolated=True)
        for k, z in enumerate(model.species):
            out = evaluate(model, Atoms(numbers=[z], positions=[[0.0, 0.0, 0.0]]), True)
            expected = reference["atomic_energy"][len(cluster) + k]
            np.testing.assert_allclose(out["atomic_energy"], [expected], rtol=1e-12)
            np.testing.assert_allclose(out["energy"], [expected], rtol=1e-12)
            np.testing.assert_allclose(out["forces"], 0.0, atol=0.0)

    def test_atomic_energy_depends_only_on_neighbours(self, model):
        """Strict locality: dE_i/dr_j is exactly zero for every j farther than r_max from i (and
        not for the neighbours), and moving an atom outside i's cutoff sphere leaves E_i as it is
        even where it moves a neighbour of i's neighbours."""
        if not getattr(model.model, "strictly_local", False):
            pytest.skip("the model does not claim strict locality")
        atoms = chain(model.species, model.r_max)
        n = len(atoms)
        graph = atoms_to_graph(atoms, model.r_max)
        pos = graph[G.POS].clone().requires_grad_(True)
        graph[G.POS] = pos
        energies = model(graph, compute_forces=False)["atomic_energy"]
        jacobian = torch.stack(
            [
                torch.autograd.grad(energies[i], pos, retain_graph=True)[0].norm(dim=-1)
                for i in range(n)
            ]
        ).numpy()
        distance = atoms.get_all_distances()
        beyond = distance > model.r_max
        within = (distance < model.r_max) & ~np.eye(n, dtype=bool)
        assert beyond.sum() > 2 * n and within.sum() >= 2 * (n - 1)
        assert jacobian[beyond].max() == 0.0
        assert jacobian[within].min() > 1e-8  # control: every neighbour matters
        # atom 4 is beyond r_max of atom 2 but a neighbour of its neighbour 3
        moved = atoms.copy()
        moved.positions[4] += [0.0, 0.3, 0.0]
        assert moved.get_distance(2, 4) > model.r_max > moved.get_distance(3, 4)
        before, after = evaluate(model, atoms), evaluate(model, moved)
        assert after["atomic_energy"][2] == pytest.approx(before["atomic_energy"][2], abs=1e-13)
        assert abs(after["atomic_energy"][3] - before["atomic_energy"][3]) > 1e-8

    def test_smooth_at_the_cutoff(self, model):
        """As one pair crosses r_max, energy, atomic energies and forces are continuous: 1e-5 A
        inside and outside agree to 1e-8 (a smooth envelope), while the pair does interact."""
        species, r_max = model.species, model.r_max

        def outputs(r):
            # A at the origin, B bonded to it, C at distance r from A (and > r_max from B)
            numbers = [species[0], species[1 % len(species)], species[-1]]
            positions = [[0.0, 0.0, 0.0], [0.0, 1.1, 0.0], [-r, 0.0, 0.0]]
            return evaluate(model, Atoms(numbers=numbers, positions=positions), True)

        inside, outside = outputs(r_max - 1e-5), outputs(r_max + 1e-5)
        for key in ("energy", "atomic_energy", "forces"):
            np.testing.assert_allclose(inside[key], outside[key], rtol=0, atol=1e-8, err_msg=key)
        np.testing.assert_allclose(outside["forces"][2], 0.0, atol=0.0)
        assert abs(outputs(0.6 * r_max)["energy"][0] - outside["energy"][0]) > 1e-4  # control

    @pytest.mark.parametrize("structure", STRUCTURES)
    def test_forces_match_finite_differences(self, model, structures, structure):
        """Forces are minus the central differences (h = 1e-5 A) of the energy, every
        component."""
        atoms, h = structures[structure], 1e-5
        forces = evaluate(model, atoms)["forces"]
        displaced = []
        for atom in range(len(atoms)):
            for axis in range(3):
                for sign in (1, -1):
                    copy_ = atoms.copy()
                    copy_.positions[atom, axis] += sign * h
                    displaced.append(copy_)
        energies = _energies(model, displaced).reshape(len(atoms), 3, 2)
        numeric = -(energies[..., 0] - energies[..., 1]) / (2 * h)
        assert np.abs(forces).max() > 1e-3
        np.testing.assert_allclose(forces, numeric, rtol=1e-7, atol=1e-8)

    def test_stress_matches_finite_strain(self, model, structures):
        """The stress of the periodic cell is (1/V) dE/d(strain), by central differences of
        symmetric strains (h = 1e-6), every component; it is symmetric."""
        atoms, h = structures["crystal"], 1e-6
        stress = evaluate(model, atoms)["stress"][0]
        strained = []
        for a in range(3):
            for b in range(3):
                for sign in (1, -1):
                    strain = np.eye(3)
                    strain[a, b] += sign * h * 0.5
                    strain[b, a] += sign * h * 0.5
                    copy_ = atoms.copy()
                    copy_.set_cell(np.asarray(atoms.cell) @ strain, scale_atoms=True)
                    strained.append(copy_)
        energies = _energies(model, strained).reshape(3, 3, 2)
        numeric = (energies[..., 0] - energies[..., 1]) / (2 * h) / atoms.get_volume()
        assert np.abs(stress).max() > 1e-4
        np.testing.assert_allclose(stress, numeric, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(stress, stress.T, rtol=0, atol=1e-12)


# --- conformer models ---------------------------------------------------------------------------
@dataclass
class CoordinateMap:
    """An equivariant part of a model as a function of coordinates alone: ``function(x [B, N,
    3]) -> [B, N, 3]`` with every other input fixed; ``coordinates`` the x it sees in the model,
    ``mask`` [B, N] the real (not padding) atoms. It must commute with x -> x R^T + t."""

    function: Callable[[torch.Tensor], torch.Tensor]
    coordinates: torch.Tensor
    mask: torch.Tensor


def permuted_graph(graph, order: torch.Tensor):
    """A 2D molecular graph with its atoms reordered: atom k of the result is atom order[k]."""
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    new = graph.clone()
    for key in (G.Z, G.ATOM_FEATURES, G.POS, G.POS_START):
        if key in graph and graph[key] is not None:
            new[key] = graph[key][order]
    new[G.BOND_INDEX] = inverse[graph[G.BOND_INDEX]]
    return new


def graph_with_positions(smiles: str, seed: int = 0):
    """The 2D graph of ``smiles`` with an RDKit (ETKDG) conformer as its ``pos`` target."""
    from rdkit.Chem import AllChem

    graph, mol = smiles_to_graph(smiles)
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    graph[G.POS] = torch.from_numpy(mol.GetConformer().GetPositions())
    return graph


class ConformerModelTests(_ModelTests):
    """Tests of a conformer model (kind ``conformer``: 2D graph -> coordinates), in float64,
    eval mode.

    Hooks:

    * fixture ``model_config`` (class scope): the :class:`ModelConfig`.
    * ``coordinate_outputs``: the outputs that are coordinates [N, 3].
    * ``deterministic``: eval-mode outputs are a function of the graph, compared directly; else
      only their distance matrices are compared (the coordinates are then free up to a rigid
      motion).
    * ``smiles``, ``larger_smiles``: the molecules of the permutation and padding tests;
      ``smiles`` has no automorphism, its Laplacian no repeated eigenvalue and no eigenvector
      whose sum of cubed entries vanishes (so the positional encoding, eigenvectors signed by
      that sum, is a function of the graph: no pair of atoms with the same neighbours, as two
      H on one carbon or O and H of an aldehyde, which give sign-symmetric eigenvectors),
      ``larger_smiles`` has more atoms.
    * ``loss(model, outputs, batch)``: the training loss (default: the conformer task's).
    * ``equivariant_part(model, batch)``: a :class:`CoordinateMap` of a part the model claims
      E(3)-equivariant, or None.
    * ``graph(smiles, target_seed)``: the model's input for ``smiles`` (default its 2D graph,
      with an ETKDG conformer as the ``pos`` target when ``target_seed`` is given).
    """

    kind = "conformer"
    coordinate_outputs: tuple[str, ...] = (G.POS,)
    deterministic = True
    smiles = "N#Cc1ccc(O)c(C#CC#N)c1"
    larger_smiles = "CC(=O)Nc1ccc(O)cc1"

    def loss(self, model, outputs: dict, batch) -> torch.Tensor:
        from molfold.tasks.conformer import ConformerSettings, ConformerTask

        return ConformerTask(model, ConformerSettings()).loss(outputs, batch)[0]

    def equivariant_part(self, model, batch) -> CoordinateMap | None:
        return None

    def graph(self, smiles: str, target_seed: int | None = None):
        if target_seed is None:
            return smiles_to_graph(smiles)[0]
        return graph_with_positions(smiles, target_seed)

    def _predict(self, model, graphs) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = model(Batch.from_data_list(graphs))
        for key in self.coordinate_outputs:
            assert out[key].shape == (sum(g.num_nodes for g in graphs), 3)
            assert out[key].dtype == torch.float64 and torch.isfinite(out[key]).all()
        return out

    def _assert_same(self, got: torch.Tensor, expected: torch.Tensor, key: str) -> None:
        if not self.deterministic:
            got, expected = torch.cdist(got, got), torch.cdist(expected, expected)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9, msg=lambda m: f"{key}: {m}")

    def test_permutation_equivariance(self, model):
        """Permuting the atoms of a graph (and the order of the molecules in the batch) permutes
        the predicted coordinates."""
        graph, other = self.graph(self.smiles), self.graph(self.larger_smiles)
        n = graph.num_nodes
        order = torch.from_numpy(np.random.default_rng(2).permutation(n))
        out = self._predict(model, [graph, other])
        out_perm = self._predict(model, [other, permuted_graph(graph, order)])
        for key in self.coordinate_outputs:
            expected = out[key][:n][order]
            assert (expected - out[key][:n]).abs().max() > 1e-3  # the permutation matters
            self._assert_same(out_perm[key][-n:], expected, key)
            self._assert_same(out_perm[key][:-n], out[key][n:], key)

    def test_prediction_is_independent_of_batch_padding(self, model):
        """A molecule alone, or batched before or after a larger one (so padded to its size),
        gets the same prediction; so does the larger one in either place."""
        graph, larger = self.graph(self.smiles), self.graph(self.larger_smiles)
        n, m = graph.num_nodes, larger.num_nodes
        assert m > n
        alone, alone_larger = self._predict(model, [graph]), self._predict(model, [larger])
        first, second = self._predict(model, [graph, larger]), self._predict(model, [larger, graph])
        for key in self.coordinate_outputs:
            self._assert_same(first[key][:n], alone[key], key)
            self._assert_same(second[key][m:], alone[key], key)
            self._assert_same(first[key][n:], alone_larger[key], key)
            self._assert_same(second[key][:m], alone_larger[key], key)

    @pytest.mark.parametrize("transformation", ["rotation", "reflection", "translation"])
    def test_loss_is_invariant_to_moving_the_target(self, model, transformation):
        """Rotating, reflecting or translating each target conformer leaves the loss and the
        D-MAE / D-RMSE sums of the prediction as they are; stretching it does not."""
        graphs = [self.graph(s, target_seed=k) for k, s in enumerate(("CCO", "c1ccncc1"))]
        batch = Batch.from_data_list(graphs)
        with torch.no_grad():
            outputs = model(batch)
        rng = np.random.default_rng(TRANSFORMATIONS.index(transformation))
        moved_pos = []
        for graph in graphs:
            matrix, shift = np.eye(3), np.zeros(3)
            if transformation == "translation":
                shift = rng.normal(size=3) * 3.0
            else:
                matrix = random_orthogonal(rng, reflect=transformation == "reflection")
            moved_pos.append(graph[G.POS] @ torch.from_numpy(matrix).T + torch.from_numpy(shift))
        moved = batch.clone()
        moved[G.POS] = torch.cat(moved_pos)
        assert (moved[G.POS] - batch[G.POS]).abs().max() > 0.1
        loss = self.loss(model, outputs, batch)
        torch.testing.assert_close(self.loss(model, outputs, moved), loss, rtol=1e-12, atol=1e-12)
        pos, index = outputs[G.POS], batch[G.BATCH]
        sums = distance_errors(pos, batch[G.POS], index)
        torch.testing.assert_close(distance_errors(pos, moved[G.POS], index), sums)
        d_mae = metrics_from_sums(sums)["d_mae"]
        assert d_mae == pytest.approx(float(distance_l1_loss(pos, batch[G.POS], index)), rel=1e-12)
        stretched = batch.clone()
        stretched[G.POS] = 2.0 * batch[G.POS]
        assert float(loss) > 0.01
        assert abs(float(self.loss(model, outputs, stretched) - loss)) > 1e-3  # control

    @pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
    def test_equivariant_part(self, model, reflect):
        """The part the model claims equivariant (``equivariant_part``), on the inputs it gets
        from a padded batch: moving its coordinates by x -> x R^T + t moves its output alike."""
        graphs = [self.graph(s) for s in (self.smiles, self.larger_smiles)]
        part = self.equivariant_part(model, Batch.from_data_list(graphs))
        if part is None:
            pytest.skip("the model has no equivariant part")
        rng = np.random.default_rng(4)
        matrix = torch.from_numpy(random_orthogonal(rng, reflect)).to(part.coordinates)
        shift = torch.from_numpy(rng.normal(size=3)).to(part.coordinates)
        x, mask = part.coordinates, part.mask
        assert not mask.all()  # padding is present
        with torch.no_grad():
            out = part.function(x)
            moved = part.function(x @ matrix.T + shift)
        torch.testing.assert_close(
            moved[mask], (out @ matrix.T + shift)[mask], rtol=1e-9, atol=1e-9
        )
        assert (out - x)[mask].abs().max() > 1e-6  # the part does move atoms


# --- property models ----------------------------------------------------------------------------
class PropertyModelTests(_ModelTests):
    """Tests of a property model (kind ``property``: graph or atom targets of a 3D structure):
    scalar outputs are invariant, vector outputs rotate (v -> R v) under rotations, reflections
    (polar vectors, such as a dipole) and translations, in float64.

    Used by the Equiformer issue; no property model exists yet, so nothing inherits it so far.

    Hooks:

    * fixture ``model_config`` (class scope): the :class:`ModelConfig`.
    * ``scalar_outputs``, ``vector_outputs``: names of the outputs that are scalars (any shape)
      and vectors (last axis 3), per graph or per atom.
    * ``reflections``: the model claims O(3), not only SO(3), symmetry.
    * ``evaluate(model, atoms)``: the outputs, numpy (default ``model(atoms_to_graph(atoms,
      model.r_max))``).
    * fixture ``structures``: ``{"molecule": Atoms, "crystal": Atoms}`` (default ethanol and a
      triclinic Cu cell with one O); return fewer for a model of molecules only.
    """

    kind = "property"
    scalar_outputs: tuple[str, ...] = ()
    vector_outputs: tuple[str, ...] = ()
    reflections = True

    def evaluate(self, model, atoms: Atoms) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = model(atoms_to_graph(atoms, model.r_max))
        return {k: v.detach().cpu().numpy() for k, v in out.items()}

    @pytest.fixture
    def structures(self, ethanol, triclinic_cu) -> dict[str, Atoms]:
        return default_structures(ethanol, triclinic_cu)

    def test_outputs_are_declared(self, model, structures):
        assert self.scalar_outputs or self.vector_outputs, "name the scalar and vector outputs"
        for atoms in structures.values():
            out = self.evaluate(model, atoms)
            for key in (*self.scalar_outputs, *self.vector_outputs):
                assert key in out, f"no output {key!r}; the model gives {sorted(out)}"
                assert np.isfinite(out[key]).all()
            for key in self.vector_outputs:
                assert out[key].shape[-1] == 3

    @pytest.mark.parametrize("structure", STRUCTURES)
    @pytest.mark.parametrize("transformation", ["rotation", "reflection", "translation"])
    def test_symmetry(self, model, structures, transformation, structure):
        if structure not in structures:
            pytest.skip(f"no {structure} for this model")
        if transformation == "reflection" and not self.reflections:
            pytest.skip("the model claims SO(3), not O(3), symmetry")
        atoms = structures[structure]
        rng = np.random.default_rng(TRANSFORMATIONS.index(transformation))
        matrix, shift = np.eye(3), np.zeros(3)
        if transformation == "translation":
            shift = rng.normal(size=3) * 3.0
        else:
            matrix = random_orthogonal(rng, reflect=transformation == "reflection")
        reference = self.evaluate(model, atoms)
        out = self.evaluate(model, transformed(atoms, matrix, shift, np.arange(len(atoms))))
        tol = TOLERANCE[torch.float64]
        for key in (*self.scalar_outputs, *self.vector_outputs):
            expected = reference[key] @ matrix.T if key in self.vector_outputs else reference[key]
            scale = max(1.0, float(np.abs(reference[key]).max()))
            error = float(np.abs(out[key] - expected).max()) / scale
            assert error < tol, f"{key} under {transformation}: error {error:.3g}"
            if key in self.vector_outputs and transformation != "translation":
                # control: the vectors are not zero, so rotating them changes them
                assert np.abs(expected - reference[key]).max() > 1e3 * tol, key
