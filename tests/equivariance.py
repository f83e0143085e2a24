"""Symmetry checks of any potential: rotation, reflection, translation, permutation.

A structure is given as ASE Atoms; each transformed copy is rebuilt as a graph from scratch (so the
neighbour list is part of what is tested) and every output is compared with how it must transform:
energy invariant, atomic energies permuted, forces rotated and permuted, stress R sigma R^T.

:func:`assert_symmetry` checks one transformation at a time (so that each is reported on its own);
:func:`assert_equivariant` checks all of them at once, for a quick check at float32 precision.
A helper module, not a test module: test modules import it, never each other.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from scipy.spatial.transform import Rotation

from molfold.data.neighbors import atoms_to_graph

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}
TRANSFORMATIONS = ("rotation", "reflection", "translation", "permutation")


def evaluate(potential, atoms: Atoms, allow_isolated: bool = False) -> dict[str, np.ndarray]:
    """Every output of ``potential`` for ``atoms`` (stress where the cell is periodic), numpy."""
    graph = atoms_to_graph(atoms, potential.r_max, allow_isolated=allow_isolated)
    out = potential(graph, compute_forces=True, compute_stress=bool(atoms.pbc.any()))
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def random_orthogonal(rng: np.random.Generator, reflect: bool) -> np.ndarray:
    """A random rotation (scipy, seeded from ``rng``), times -1 (an improper rotation) if
    ``reflect``."""
    matrix = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
    return -matrix if reflect else matrix


def transformed(
    atoms: Atoms,
    matrix: np.ndarray,
    shift: np.ndarray,
    order: np.ndarray,
    cell_shifts: np.ndarray | None = None,
) -> Atoms:
    """Atoms with positions r -> R r + t, cell rows rotated, atoms reordered by ``order``;
    ``cell_shifts`` [N, 3] (integers) first moves each atom by that lattice vector, which changes
    the neighbour list's periodic images but not the structure."""
    positions = atoms.positions
    if cell_shifts is not None:
        positions = positions + cell_shifts @ np.asarray(atoms.cell)
    new = atoms[order]
    new.positions = positions[order] @ matrix.T + shift
    if atoms.pbc.any():
        new.set_cell(np.asarray(atoms.cell) @ matrix.T, scale_atoms=False)
    return new


def expected_outputs(reference: dict, matrix: np.ndarray, order: np.ndarray) -> dict:
    """How the outputs of a structure must look after r -> R r + t and reordering the atoms."""
    expected = {
        "energy": reference["energy"],
        "atomic_energy": reference["atomic_energy"][order],
        "forces": reference["forces"][order] @ matrix.T,
    }
    if "stress" in reference:
        expected["stress"] = matrix @ reference["stress"][0] @ matrix.T
    return expected


def _errors(potential, atoms, reference, matrix, shift, order, cell_shifts, label):
    """Largest relative error of each output of the transformed structure; asserts each is within
    the tolerance of the potential's dtype."""
    tol = TOLERANCE[potential.dtype]
    out = evaluate(potential, transformed(atoms, matrix, shift, order, cell_shifts))
    if "stress" in out:
        out["stress"] = out["stress"][0]
    expected = expected_outputs(reference, matrix, order)
    errors = {}
    for key, value in expected.items():
        scale = max(1.0, float(np.abs(reference[key]).max()))
        error = float(np.abs(out[key] - value).max()) / scale
        errors[f"{key} ({label})"] = error
        assert error < tol, f"{key} not equivariant under {label}: error {error:.3g}"
    return errors


def assert_symmetry(potential, atoms: Atoms, transformation: str, seed: int = 0) -> dict:
    """Check every output under one random ``transformation`` of :data:`TRANSFORMATIONS`.

    ``rotation`` is a random proper rotation, ``reflection`` a random improper one (-R),
    ``translation`` a random shift (for a periodic cell also every atom moved by a random lattice
    vector), ``permutation`` a random reordering of the atoms. Each must change what it acts on,
    so the check can fail: rotations change the forces (and stress), a permutation the order of
    the atomic energies, a lattice translation the periodic images of the neighbour list.
    Returns the largest relative error of each output.
    """
    if transformation not in TRANSFORMATIONS:
        raise ValueError(f"transformation must be one of {TRANSFORMATIONS}, got {transformation!r}")
    rng = np.random.default_rng(seed)
    n = len(atoms)
    matrix, shift, order, cell_shifts = np.eye(3), np.zeros(3), np.arange(n), None
    reference = evaluate(potential, atoms)
    tol = TOLERANCE[potential.dtype]
    if transformation in ("rotation", "reflection"):
        matrix = random_orthogonal(rng, reflect=transformation == "reflection")
        assert np.sign(np.linalg.det(matrix)) == (-1 if transformation == "reflection" else 1)
        expected = expected_outputs(reference, matrix, order)
        for key in ("forces", "stress"):
            if key in reference:
                moved = np.abs(expected[key] - reference[key].reshape(expected[key].shape)).max()
                assert moved > 1e3 * tol, f"the {transformation} does not change the {key}"
    elif transformation == "translation":
        shift = rng.normal(size=3) * 3.0
        assert np.abs(reference["forces"]).max() > 1e3 * tol, "zero forces: nothing to compare"
        if atoms.pbc.any():
            cell_shifts = rng.integers(-2, 3, size=(n, 3)) * atoms.pbc
            assert np.abs(cell_shifts).sum() > 0
    else:
        order = rng.permutation(n)
        while (order == np.arange(n)).all():
            order = rng.permutation(n)
        moved = np.abs(reference["atomic_energy"][order] - reference["atomic_energy"]).max()
        assert moved > 1e3 * tol, "the permutation does not change the atomic energies"
    return _errors(potential, atoms, reference, matrix, shift, order, cell_shifts, transformation)


def assert_equivariant(potential, atoms: Atoms, seed: int = 0, reflections: bool = True) -> dict:
    """Check every output under random O(3) (or SO(3)) maps, translations and permutations at
    once, for each of a rotation and (with ``reflections``) a reflection.

    Returns the largest error of each output over the cases, for reporting.
    """
    rng = np.random.default_rng(seed)
    reference = evaluate(potential, atoms)
    errors: dict[str, float] = {}
    for reflect in (False, True) if reflections else (False,):
        matrix = random_orthogonal(rng, reflect)
        shift = rng.normal(size=3) * 3.0
        order = rng.permutation(len(atoms))
        label = "reflection" if reflect else "rotation"
        errors.update(_errors(potential, atoms, reference, matrix, shift, order, None, label))
    return errors
