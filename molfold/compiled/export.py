"""``molfold export ckpt=... output=model.pt2``: a checkpoint's potential as an AOTInductor package.

Writes the package (:func:`molfold.compiled.package.export_potential`), then, unless
``check=false``, loads it back and compares it with the eager model on a random periodic structure
of the model's elements, printing the largest differences next to :data:`TOLERANCES`; a package
outside them is deleted and reported as an error, so a written file is one that agrees.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from molfold.compiled.package import export_potential, load_package
from molfold.data.neighbors import atoms_to_graph
from molfold.errors import ConfigError, MolfoldError
from molfold.models.checkpoint import load_model
from molfold.models.potential import Potential

TOLERANCES = {
    torch.float32: {"energy_per_atom": 1e-5, "forces": 1e-4},
    torch.float64: {"energy_per_atom": 1e-12, "forces": 1e-11},
}
"""Largest differences between a compiled model and its eager original (eV/atom, eV/A) that
:func:`run_export` and ``tests/test_compiled.py`` accept: the two sum the same terms in other
orders, so they agree to a few float roundings of the largest terms."""


def random_structure(species: list[int], r_max: float, seed: int = 0) -> Atoms:
    """A periodic cubic cell (side 1.5 r_max) of 24 atoms of ``species``, at least 1.2 A apart."""
    rng = np.random.default_rng(seed)
    side = 1.5 * r_max
    positions: list[np.ndarray] = []
    while len(positions) < 24:
        trial = rng.uniform(0.0, side, 3)
        gaps = [np.abs(((trial - p) + side / 2) % side - side / 2) for p in positions]
        if all(np.linalg.norm(g) >= 1.2 for g in gaps):
            positions.append(trial)
    numbers = [species[k % len(species)] for k in range(len(positions))]
    return Atoms(numbers=numbers, positions=positions, cell=[side] * 3, pbc=True)


def compare(eager: Potential, compiled, atoms: Atoms) -> dict[str, float]:
    """Largest differences (energy per atom, eV; forces, eV/A; stress, eV/A^3) of two potentials
    on ``atoms``."""
    graph = atoms_to_graph(atoms, eager.r_max).to(eager.scales.device)
    with torch.enable_grad():
        expected = eager(graph, compute_forces=True, compute_stress=True)
    got = compiled(graph, compute_forces=True, compute_stress=True)
    difference = {
        key: float((got[key].detach().double() - expected[key].detach().double()).abs().max())
        for key in ("energy", "forces", "stress")
    }
    difference["energy_per_atom"] = difference.pop("energy") / len(atoms)
    return difference


def run_export(config: dict) -> Path:
    """Export ``config["ckpt"]`` to ``config["output"]`` for ``config["device"]``, and check it."""
    unknown = set(config) - {"ckpt", "output", "device", "check"}
    if unknown:
        raise ConfigError(f"unknown key(s) for `molfold export`: {', '.join(sorted(unknown))}")
    output = Path(config["output"])
    if output.suffix != ".pt2":
        raise ConfigError(f"output must end in .pt2 (an AOTInductor package), got {output}")
    potential = load_model(config["ckpt"], config["device"])
    if not isinstance(potential, Potential):
        raise ConfigError(f"{config['ckpt']} is not a potential; only potentials are exported")
    print(f"molfold export: tracing and compiling {config['ckpt']} ({potential.dtype}, "
          f"{config['device']}); this takes a minute", flush=True)  # fmt: skip
    start = time.perf_counter()
    export_potential(potential, output, source=str(config["ckpt"]), device=config["device"])
    print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB) in "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    if config.get("check", True):
        difference = compare(
            potential,
            load_package(output, config["device"]),
            random_structure(potential.species, potential.r_max),
        )
        tolerance = TOLERANCES[potential.dtype]
        print("check against the eager model (24-atom random cell), largest differences:")
        for key, value in difference.items():
            bound = tolerance.get(key)
            print(f"  {key:16s} {value:.2e}" + (f"  (tolerance {bound:.0e})" if bound else ""))
        if any(difference[key] > bound for key, bound in tolerance.items()):
            output.unlink()
            raise MolfoldError(f"the compiled model disagrees with the eager one; {output} removed")
    return output
