"""Radius graphs (vesin) against ASE's neighbour list, and the errors of build_graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list
from torch_geometric.data import Batch

from molfold.data import graph as G
from molfold.data.neighbors import atoms_to_graph, build_graph, neighbor_list
from molfold.errors import DataError


def random_atoms(seed: int, n_atoms: int, length: float, pbc) -> Atoms:
    """Random atoms in a random triclinic cell of edge ~``length`` A, at least 0.5 A apart."""
    rng = np.random.default_rng(seed)
    cell = length * (np.eye(3) + rng.uniform(-0.3, 0.3, size=(3, 3)))
    while True:
        atoms = Atoms(
            numbers=rng.integers(1, 30, size=n_atoms),
            scaled_positions=rng.uniform(0, 1, size=(n_atoms, 3)),
            cell=cell,
            pbc=pbc,
        )
        if (
            n_atoms == 1
            or atoms.get_all_distances(mic=any(pbc))[np.triu_indices(n_atoms, 1)].min() > 0.5
        ):
            return atoms


def random_molecule(seed: int, n_atoms: int) -> Atoms:
    """A non-periodic cluster with no cell, atoms at least 0.5 A apart."""
    rng = np.random.default_rng(seed)
    positions = [np.zeros(3)]
    while len(positions) < n_atoms:
        candidate = positions[rng.integers(len(positions))] + rng.normal(scale=1.2, size=3)
        if np.linalg.norm(np.asarray(positions) - candidate, axis=1).min() > 0.5:
            positions.append(candidate)
    return Atoms(numbers=rng.integers(1, 10, size=n_atoms), positions=positions)


def ase_reference(atoms: Atoms, r_max: float):
    """ASE's pairs, sorted by (i, j, shift): (triples [E, 5], distances [E], vectors [E, 3])."""
    i, j, shift, distance, vector = ase_neighbor_list("ijSdD", atoms, r_max)
    triples = np.column_stack([i, j, shift]).astype(np.int64)
    order = np.lexsort(triples.T[::-1])
    return triples[order], distance[order], vector[order]


def molfold_triples(edge_index: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, j, shift) rows [E, 5] in sorted order and the permutation that sorts them."""
    triples = np.column_stack([edge_index[1], edge_index[0], shift]).astype(np.int64)
    order = np.lexsort(triples.T[::-1])
    return triples[order], order


CASES = [
    # (seed, n_atoms, cell edge A, pbc, r_max A)
    (0, 12, 6.0, [True, True, True], 3.5),
    (1, 20, 7.0, [True, True, True], 4.0),
    (2, 3, 2.5, [True, True, True], 5.0),  # r_max > cell: several images of each neighbour
    (3, 1, 2.0, [True, True, True], 4.5),  # one atom: all neighbours are its own images
    (4, 8, 4.0, [True, False, True], 4.5),  # mixed periodicity
    (5, 8, 3.0, [False, True, False], 5.0),
    (6, 10, 5.0, [False, False, False], 3.0),  # cell present but not periodic
]


@pytest.mark.parametrize(("seed", "n_atoms", "length", "pbc", "r_max"), CASES)
def test_neighbor_list_matches_ase(seed, n_atoms, length, pbc, r_max):
    atoms = random_atoms(seed, n_atoms, length, pbc)
    expected, expected_distance, _ = ase_reference(atoms, r_max)
    assert len(expected) > 0

    edge_index, shift, distance = neighbor_list(
        atoms.get_positions(), r_max, np.asarray(atoms.get_cell()), atoms.get_pbc()
    )
    triples, order = molfold_triples(edge_index, shift)
    np.testing.assert_array_equal(triples, expected)
    np.testing.assert_allclose(distance[order], expected_distance, rtol=0, atol=1e-10)


def test_small_cell_has_several_images_of_one_neighbour():
    atoms = random_atoms(2, 3, 2.5, [True] * 3)
    edge_index, _, _ = neighbor_list(atoms.get_positions(), 5.0, atoms.get_cell()[:], [True] * 3)
    pairs, counts = np.unique(edge_index.T, axis=0, return_counts=True)
    assert counts.max() > 1, "the test case should exercise several images per pair"
    assert (pairs[:, 0] == pairs[:, 1]).any(), "an atom should see its own images"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_molecule_matches_ase(seed):
    atoms = random_molecule(seed, 15)
    expected, expected_distance, _ = ase_reference(atoms, 2.5)
    edge_index, shift, distance = neighbor_list(atoms.get_positions(), 2.5)
    triples, order = molfold_triples(edge_index, shift)
    np.testing.assert_array_equal(triples, expected)
    np.testing.assert_allclose(distance[order], expected_distance, rtol=0, atol=1e-10)
    assert not shift.any()


@pytest.mark.parametrize(("seed", "n_atoms", "length", "pbc", "r_max"), CASES[:5])
def test_edge_vectors_match_ase(seed, n_atoms, length, pbc, r_max):
    atoms = random_atoms(seed, n_atoms, length, pbc)
    expected, _, expected_vectors = ase_reference(atoms, r_max)
    data = atoms_to_graph(atoms, r_max)
    triples, order = molfold_triples(data[G.EDGE_INDEX].numpy(), data[G.EDGE_CELL_SHIFT].numpy())
    np.testing.assert_array_equal(triples, expected)
    vectors = G.edge_vectors(data).numpy()[order]
    np.testing.assert_allclose(vectors, expected_vectors, rtol=0, atol=1e-10)


def test_edge_vectors_of_a_batch_use_each_graphs_cell():
    structures = [random_atoms(0, 12, 6.0, [True] * 3), random_atoms(2, 3, 2.5, [True] * 3)]
    batch = Batch.from_data_list([atoms_to_graph(atoms, 4.0) for atoms in structures])
    assert batch[G.CELL].shape == (2, 3, 3)
    expected = []
    for offset, atoms in zip((0, len(structures[0])), structures, strict=True):
        triples, _, vectors = ase_reference(atoms, 4.0)
        triples[:, :2] += offset
        expected.append((triples, vectors))
    expected_triples = np.concatenate([t for t, _ in expected])
    triples, order = molfold_triples(batch[G.EDGE_INDEX].numpy(), batch[G.EDGE_CELL_SHIFT].numpy())
    np.testing.assert_array_equal(triples, expected_triples)
    vectors = G.edge_vectors(batch).numpy()[order]
    np.testing.assert_allclose(vectors, np.concatenate([v for _, v in expected]), atol=1e-10)


def test_edge_vectors_are_differentiable_in_pos_and_cell():
    data = atoms_to_graph(random_atoms(1, 6, 4.0, [True] * 3), 3.0)
    data[G.POS].requires_grad_(True)
    data[G.CELL].requires_grad_(True)
    G.edge_vectors(data).norm(dim=1).sum().backward()
    assert data[G.POS].grad is not None and data[G.CELL].grad.abs().sum() > 0


def test_build_graph_stores_targets_with_graph_dimension():
    atoms = random_molecule(0, 5)
    forces = np.arange(15.0).reshape(5, 3)
    data = build_graph(atoms.numbers, atoms.positions, 5.0, energy=-1.5, forces=forces)
    assert data[G.ENERGY].shape == (1,) and data[G.ENERGY].item() == -1.5
    assert torch.equal(data[G.FORCES], torch.as_tensor(forces))
    assert data[G.CELL].shape == (1, 3, 3) and not data[G.CELL].any()
    assert data[G.PBC].shape == (1, 3) and not data[G.PBC].any()


def test_nan_position_is_rejected():
    atoms = random_molecule(0, 4)
    pos = atoms.get_positions()
    pos[2, 1] = np.nan
    with pytest.raises(DataError, match=r"mol\.xyz frame 3: positions contain NaN.*\[2\]"):
        build_graph(atoms.numbers, pos, 5.0, where="mol.xyz frame 3")


def test_nan_target_is_rejected():
    atoms = random_molecule(0, 4)
    with pytest.raises(DataError, match="energy contains NaN"):
        build_graph(atoms.numbers, atoms.positions, 5.0, energy=np.nan)


def test_atoms_too_close_are_rejected():
    pos = np.array([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [1.0, 0.0, 0.0]])
    with pytest.raises(DataError, match=r"atoms (0 and 1|1 and 0) are 0\.05 A apart"):
        build_graph(np.array([1, 1, 8]), pos, 3.0)


def test_image_too_close_is_rejected():
    cell = np.diag([5.0, 5.0, 5.0])
    pos = np.array([[0.02, 0.0, 0.0], [4.99, 0.0, 0.0], [2.5, 2.5, 2.5]])
    with pytest.raises(DataError, match="apart"):
        build_graph(np.array([1, 1, 1]), pos, 3.0, cell=cell, pbc=[True] * 3)


def test_isolated_atom_is_rejected():
    pos = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    with pytest.raises(DataError, match=r"atoms \[2\] have no neighbour within r_max = 3\.0"):
        build_graph(np.array([1, 1, 1]), pos, 3.0)


@pytest.mark.parametrize(
    ("z", "pos", "kwargs", "message"),
    [
        (np.array([1, 1]), np.zeros((2, 2)), {}, r"positions must have shape \[2, 3\]"),
        (np.array([1, 1, 1]), np.zeros((2, 3)), {}, r"positions must have shape \[3, 3\]"),
        (np.array([[1, 1]]), np.zeros((2, 3)), {}, r"atomic numbers must have shape \[N\]"),
        (np.array([], dtype=int), np.zeros((0, 3)), {}, "N > 0"),
        (np.array([1, 0]), np.eye(2, 3), {}, r"atomic numbers must be integers in 1\.\.118"),
        (np.array([1.0, 1.0]), np.eye(2, 3), {}, "atomic numbers must be integers"),
        (np.array([1, 1]), np.eye(2, 3), {"forces": np.zeros((3, 3))}, "forces must have shape"),
        (np.array([1, 1]), np.eye(2, 3), {"cell": np.eye(2)}, r"cell must be a finite \[3, 3\]"),
        (
            np.array([1, 1]),
            np.eye(2, 3),
            {"cell": np.zeros((3, 3)), "pbc": [True] * 3},
            "no volume",
        ),
    ],
)
def test_bad_shapes_are_rejected(z, pos, kwargs, message):
    with pytest.raises(DataError, match=message):
        build_graph(z, pos, 3.0, **kwargs)
