"""What several test modules share (test modules never import each other): the tiny
Allegro settings of the command-line runs, scripts loaded as modules, an NVE energy check."""

from __future__ import annotations

import importlib.util
import sys

import torch
from ase import Atoms

from molfold.models.allegro import Allegro
from molfold.models.potential import Potential

from .conftest import DATA, REPO

TINY = [
    f"data.path={DATA / 'aspirin_xtb_500K.npz'}",
    "data.max_structures=40",
    "data.n_train=24",
    "data.n_val=8",
    "data.batch_size=8",
    "model.num_scalar_features=16",
    "model.num_tensor_features=4",
    "model.radial_chemical_embed_dim=16",
    "model.two_body_mlp_hidden=[16]",
    "model.allegro_mlp_hidden=[16]",
    "model.readout_mlp_hidden=[16]",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def load_script(name: str):
    """A script of ``scripts/`` as a module (``scripts`` is not a package; it is put on
    ``sys.path``, as when a script runs, so that scripts can import each other)."""
    if str(REPO / "scripts") not in sys.path:
        sys.path.append(str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location(
        f"_script_{name}", REPO / "scripts" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_md_script = load_script("run_md")
relax_script = load_script("relax")


def nve_energy_error(
    calculator, atoms: Atoms, timestep_fs: float, steps: int, seed: int = 0
) -> float:
    """Largest |E_tot(t) - E_tot(0)| per atom, eV, over ``steps`` velocity-Verlet steps from
    Maxwell-Boltzmann velocities at 300 K. Takes any ASE calculator."""
    summary = run_md_script.run_md(
        atoms.copy(), calculator, "nve", 300.0, timestep_fs, steps, seed=seed, verbose=False
    )
    return summary["max_deviation_eV_per_atom"]


# small Allegro hyperparameters for tests that need a potential but not a particular one
SMALL = dict(
    num_scalar_features=16,
    num_tensor_features=8,
    radial_chemical_embed_dim=16,
    two_body_mlp_hidden=[16],
    allegro_mlp_hidden=[16],
    readout_mlp_hidden=[16],
)


def make_potential(species, seed=0, **hparams) -> Potential:
    torch.manual_seed(seed)
    kwargs = {**SMALL, "r_max": 4.0, "avg_num_neighbors": 10.0, **hparams}
    shifts = torch.linspace(-3.0, -1.0, len(species))
    return Potential(Allegro(len(species), **kwargs), species, scales=0.7, shifts=shifts)


def tiny_equiformer_potential() -> Potential:
    """A one-layer float64 Equiformer potential for O and Cu: a model that is not strictly
    local (for the refusals of the compiled paths)."""
    from molfold.models.registry import build_model

    hparams = dict(
        r_max=3.0, num_layers=1, num_heads=2, num_basis=8, radial_hidden=[8, 8],
        readout_irreps="16x0e", avg_num_nodes=40.0, avg_num_neighbors=12.0,
        irreps_node="8x0e+4x1e", irreps_head="4x0e+2x1e", irreps_ffn="16x0e+8x1e",
    )  # fmt: skip
    return build_model("equiformer", hparams, {"species": [8, 29]}, "float64", "potential")
