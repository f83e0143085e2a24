"""One helper for symmetry tests of any potential: rotation, reflection, translation, permutation.

A structure is given as ASE Atoms; each transformed copy is rebuilt as a graph from scratch (so the
neighbour list is part of what is tested) and every output is compared with how it must transform:
energy invariant, atomic energies permuted, forces rotated and permuted, stress R sigma R^T.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from scipy.spatial.transform import Rotation

from molfold.data.neighbors import atoms_to_graph

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


def evaluate(potential, atoms: Atoms) -> dict[str, np.ndarray]:
    graph = atoms_to_graph(atoms, potential.r_max)
    out = potential(graph, compute_forces=True, compute_stress=bool(atoms.pbc.any()))
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def random_orthogonal(rng: np.random.Generator, reflect: bool) -> np.ndarray:
    matrix = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
    return -matrix if reflect else matrix


def transformed(atoms: Atoms, matrix: np.ndarray, shift: np.ndarray, order: np.ndarray) -> Atoms:
    """Atoms with positions r -> R r + t, cell rows rotated, atoms reordered by ``order``."""
    new = atoms[order]
    new.positions = atoms.positions[order] @ matrix.T + shift
    if atoms.pbc.any():
        new.set_cell(np.asarray(atoms.cell) @ matrix.T, scale_atoms=False)
    return new


def assert_equivariant(potential, atoms: Atoms, seed: int = 0, reflections: bool = True) -> dict:
    """Check every output under random O(3) (or SO(3)) maps, translations and permutations.

    Returns the largest error of each output over the cases, for reporting.
    """
    rng = np.random.default_rng(seed)
    dtype = potential.dtype
    tol = TOLERANCE[dtype]
    reference = evaluate(potential, atoms)
    scale = {k: max(1.0, float(np.abs(v).max())) for k, v in reference.items()}
    errors: dict[str, float] = {}
    for reflect in (False, True) if reflections else (False,):
        matrix = random_orthogonal(rng, reflect)
        shift = rng.normal(size=3) * 3.0
        order = rng.permutation(len(atoms))
        out = evaluate(potential, transformed(atoms, matrix, shift, order))
        expected = {
            "energy": reference["energy"],
            "atomic_energy": reference["atomic_energy"][order],
            "forces": reference["forces"][order] @ matrix.T,
        }
        if "stress" in reference:
            expected["stress"] = matrix @ reference["stress"][0] @ matrix.T
            out["stress"] = out["stress"][0]
        for key, value in expected.items():
            error = float(np.abs(out[key] - value).max()) / scale[key]
            errors[f"{key} ({'reflection' if reflect else 'rotation'})"] = error
            assert error < tol, (
                f"{key} not equivariant under {'reflection' if reflect else 'rotation'}: "
                f"error {error:.3g}"
            )
    return errors
