"""ASE calculator over any molfold potential: energy, per-atom energies, forces and stress.

Usage::

    from molfold import MolfoldCalculator

    atoms.calc = MolfoldCalculator("model.ckpt", device="cuda")
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

Compiled models
---------------
``MolfoldCalculator("model.pt2")`` loads a model compiled ahead of time by ``molfold export``
(:mod:`molfold.compiled.package`); ``MolfoldCalculator("model.ckpt", compile=True)`` compiles the
checkpoint's potential in this process on the first call (:func:`molfold.compiled.potential
.compile_potential`; tens of seconds, cached on disk for later runs), and falls back to the eager
model with a one-line warning where compilation is impossible. Both give the eager model's
energies and forces to within float rounding (``tests/test_compiled.py``) at a fraction of the
cost; only strictly local potentials (Allegro) compile. The eager model stays the default here,
as tests and one-off evaluations need no compiler; molfold's MD entry points compile by default.

The structure goes through the same transform as the training data
(:func:`molfold.data.neighbors.atoms_to_graph`), in small hooks that a subclass can override, as in
mir-group/nequip ``nequip/integrations/ase.py``:

* :meth:`MolfoldCalculator.atoms_to_graph` -- ASE Atoms (Angstrom) -> graph in model units on the
  device;
* :meth:`MolfoldCalculator.call_model` -- graph -> dict of output tensors (model units);
* :meth:`MolfoldCalculator.save_results` -- output tensors -> ``self.results`` (ASE units).

Units
-----
ASE works in eV and Angstrom. A model trained on data in other units (say kcal/mol and Angstrom)
is described by two factors, ``energy_units_to_eV`` (one model energy unit in eV) and
``length_units_to_A`` (one model length unit in Angstrom). Positions and cell are divided by
``length_units_to_A`` before the model sees them (so the model's ``r_max`` stays in its own units);
outputs are multiplied by

=================  ===================  ==============================================
result             ASE unit             factor applied to the model output
=================  ===================  ==============================================
``energy``         eV                   ``energy_units_to_eV``
``energies``       eV (per atom)        ``energy_units_to_eV``
``forces``         eV/Angstrom          ``energy_units_to_eV / length_units_to_A``
``stress``         eV/Angstrom^3        ``energy_units_to_eV / length_units_to_A**3``
=================  ===================  ==============================================

molfold's own datasets are converted to eV and Angstrom on load, so both factors are 1 for models
trained with molfold.

Stress follows ASE's convention, sigma = (1/V) dE/d(strain) (positive under tension), in Voigt
order (xx, yy, zz, yz, xz, xy). It is only defined for cells periodic in all three directions;
asking for it otherwise raises :class:`~ase.calculators.calculator.PropertyNotImplementedError`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from torch_geometric.data import Data

from molfold.compiled.package import load_package
from molfold.compiled.potential import CompiledPotential, compile_potential
from molfold.data import graph as G
from molfold.data.neighbors import atoms_to_graph
from molfold.errors import ConfigError
from molfold.models.checkpoint import load_model, torch_device
from molfold.models.potential import Potential


class MolfoldCalculator(Calculator):
    """ASE calculator for a molfold :class:`~molfold.models.potential.Potential`.

    Parameters
    ----------
    model : path to a molfold checkpoint (loaded with :func:`molfold.models.checkpoint.load_model`),
        to a compiled model (``.pt2``, from ``molfold export``), or a :class:`Potential` or
        :class:`~molfold.compiled.potential.CompiledPotential` instance. An instance is moved to
        ``device`` and put in eval mode in place.
    device : torch device the model runs on, e.g. ``"cpu"`` or ``"cuda"``
    compile : compile a checkpoint's potential in this process (see "Compiled models" above);
        ``"auto"`` where the model can be compiled, else eager (True: ConfigError if it cannot)
    energy_units_to_eV : one model energy unit in eV (see the module docstring)
    length_units_to_A : one model length unit in Angstrom (see the module docstring)
    **kwargs : passed to :class:`ase.calculators.calculator.Calculator` (``label``, ...)

    The model's float dtype is kept: a float32 model computes in float32 (positions are rounded
    to it), and all results are returned as float64 numpy arrays.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model: str | os.PathLike | Potential | CompiledPotential,
        device: str | torch.device = "cpu",
        compile: bool | str = False,
        energy_units_to_eV: float = 1.0,
        length_units_to_A: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.device = torch_device(device)
        for name, factor in (("energy", energy_units_to_eV), ("length", length_units_to_A)):
            if not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 0:
                raise ConfigError(f"{name} unit factor must be a positive number, got {factor!r}")
        if isinstance(model, (str, os.PathLike)) and str(model).endswith(".pt2"):
            model = load_package(model, self.device)
        elif isinstance(model, (str, os.PathLike)):
            model = load_model(model, self.device)
        network = getattr(model, "model", None)
        compilable = compile != "auto" or getattr(network, "strictly_local", False)
        if compile and isinstance(model, Potential) and compilable:
            model = compile_potential(model.to(self.device).eval())
        if not isinstance(model, (Potential, CompiledPotential)):
            info = getattr(model, "model_info", {})
            what = f"a {info['kind']} model ({info['name']})" if info else type(model).__name__
            raise ConfigError(f"MolfoldCalculator needs a potential (energy model), got {what}")
        self.potential = model.to(self.device).eval()
        self.energy_units_to_eV = float(energy_units_to_eV)
        self.length_units_to_A = float(length_units_to_A)
        self.force_units_to_eV_per_A = self.energy_units_to_eV / self.length_units_to_A
        self.stress_units_to_eV_per_A3 = self.energy_units_to_eV / self.length_units_to_A**3

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        properties = ["energy"] if properties is None else properties
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        # element check first: a clearer error than anything the graph could raise
        self.potential.atom_types(torch.as_tensor(atoms.numbers, device=self.device))
        periodic = bool(atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                f"stress needs a cell periodic in all three directions; this structure has "
                f"pbc={atoms.pbc.tolist()}"
            )
        graph = self.atoms_to_graph(atoms)
        # stress costs one strain derivative more; always computed for fully periodic cells so
        # that get_forces() followed by get_stress() (NPT, cell filters) evaluates the model once
        outputs = self.call_model(graph, compute_stress=periodic)
        self.results = {}
        self.save_results(outputs)

    def atoms_to_graph(self, atoms: Atoms) -> Data:
        """The graph of ``atoms`` in model length units, on the model's device.

        Raises :class:`molfold.errors.DataError` for NaN positions and atoms closer than
        :data:`molfold.data.neighbors.MIN_DISTANCE`. An atom with no neighbour within ``r_max``
        (say, one dissociating in MD) is allowed: it contributes its species' energy shift.
        """
        if self.length_units_to_A != 1.0:
            atoms = atoms.copy()
            atoms.set_cell(np.asarray(atoms.cell) / self.length_units_to_A, scale_atoms=False)
            atoms.positions = atoms.positions / self.length_units_to_A
        return atoms_to_graph(
            atoms, self.potential.r_max, where="MolfoldCalculator", allow_isolated=True
        ).to(self.device)

    def call_model(self, graph: Data, compute_stress: bool = False) -> dict[str, torch.Tensor]:
        """Model outputs (``energy`` [1], ``atomic_energy`` [N], ``forces`` [N, 3], and ``stress``
        [1, 3, 3] when ``compute_stress``), in model units."""
        with torch.enable_grad():
            return self.potential(graph, compute_forces=True, compute_stress=compute_stress)

    def save_results(self, outputs: dict[str, torch.Tensor]) -> None:
        """Convert model outputs to float64 numpy arrays in ASE units and store them."""

        def numpy(key: str) -> np.ndarray:
            return outputs[key].detach().cpu().to(torch.float64).numpy()

        energy = float(numpy(G.ENERGY).reshape(())) * self.energy_units_to_eV
        self.results["energy"] = energy
        self.results["free_energy"] = energy  # no electronic entropy in a potential
        self.results["energies"] = numpy(G.ATOMIC_ENERGY).reshape(-1) * self.energy_units_to_eV
        self.results["forces"] = numpy(G.FORCES).reshape(-1, 3) * self.force_units_to_eV_per_A
        if G.STRESS in outputs:
            stress = numpy(G.STRESS).reshape(3, 3) * self.stress_units_to_eV_per_A3
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
