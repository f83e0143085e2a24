"""Relaxing and scoring predicted conformers: MMFF94, GFN2-xTB or a molfold potential.

``make_refiner(method)`` gives ``refine(mol, conf_id, deadline) -> Relaxation``, which relaxes one
conformer of an RDKit molecule in place and returns whether it converged and its energy at the
end (eV), all for the molecule's total formal charge:

* ``mmff``: RDKit's MMFF94 (up to :data:`MMFF_STEPS` steps of its own minimiser; energy from
  kcal/mol with :data:`molfold.units.KCAL_PER_MOL_TO_EV`); a molecule MMFF94 has no parameters
  for is left as it is and reported as not converged, with no energy;
* ``xtb``: GFN2-xTB through tblite's ASE calculator and ASE's BFGS (fmax :data:`FMAX` eV/A, at
  most :data:`ASE_STEPS` steps);
* a path to a molfold potential checkpoint: that potential through
  :class:`~molfold.calculator.MolfoldCalculator` and BFGS (same limits).

``make_scorer(method)`` gives ``score(mol, conf_ids) -> [eV]``, the same energy without moving
the atoms (single points), for ranking conformers that were not relaxed with it.

``deadline`` (a ``time.monotonic()`` value, or None) bounds the wall clock: minimisers are run in
short stretches and stopped, unconverged, once it has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from molfold.errors import ConfigError
from molfold.units import KCAL_PER_MOL_TO_EV

MMFF_STEPS = 2000
ASE_STEPS = 500
FMAX = 0.05  # eV/Angstrom
MMFF_STRETCH = 100  # MMFF steps between deadline checks

ENERGY_NAMES = {"mmff": "MMFF94", "xtb": "GFN2-xTB (tblite)"}


@dataclass
class Relaxation:
    """How a relaxation ended: ``converged`` and the final energy (eV; None if not computed)."""

    converged: bool
    energy: float | None


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def _charge(mol) -> int:
    return sum(a.GetFormalCharge() for a in mol.GetAtoms())


def _mmff_field(mol, conf_id: int):
    from rdkit.Chem import AllChem

    properties = AllChem.MMFFGetMoleculeProperties(mol)
    if properties is None:
        return None
    return AllChem.MMFFGetMoleculeForceField(mol, properties, confId=conf_id)


def relax_mmff(mol, conf_id: int, deadline: float | None = None) -> Relaxation:
    field = _mmff_field(mol, conf_id)
    if field is None:
        return Relaxation(False, None)  # kept unrefined, flagged and reported like a stuck run
    field.Initialize()
    converged, steps = False, 0
    while not converged and steps < MMFF_STEPS:  # one stretch even past the deadline
        converged = field.Minimize(maxIts=MMFF_STRETCH) == 0
        steps += MMFF_STRETCH
        if _past(deadline):
            break
    return Relaxation(converged, field.CalcEnergy() * KCAL_PER_MOL_TO_EV)


def _atoms(mol, conf_id: int):
    from ase import Atoms

    positions = mol.GetConformer(conf_id).GetPositions()
    return Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=positions)


def relax_with_ase(mol, conf_id: int, calculator, deadline: float | None = None) -> Relaxation:
    """BFGS with ``calculator`` from conformer ``conf_id``, written back in place."""
    from ase.optimize import BFGS

    atoms = _atoms(mol, conf_id)
    atoms.calc = calculator
    converged = False
    for converged in BFGS(atoms, logfile=None).irun(fmax=FMAX, steps=ASE_STEPS):
        if converged or _past(deadline):
            break
    conformer = mol.GetConformer(conf_id)
    for i, p in enumerate(atoms.positions):
        conformer.SetAtomPosition(i, p.tolist())
    return Relaxation(bool(converged), float(atoms.get_potential_energy()))


def _xtb_calculator(mol):
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", charge=_charge(mol), verbosity=0)


def _potential_calculator(path: str) -> Callable:
    from molfold.calculator import MolfoldCalculator
    from molfold.models.checkpoint import load_model

    potential = load_model(path)
    if potential.model_info["kind"] != "potential":
        kind = potential.model_info["kind"]
        raise ConfigError(f"{path} is a {kind} model, not a potential")
    return lambda mol: MolfoldCalculator(potential)


def _calculator_factory(method: str, key: str) -> Callable:
    """``mol -> ASE calculator`` for ``xtb`` or a potential checkpoint path."""
    if method == "xtb":
        try:
            import tblite.ase  # noqa: F401
        except ImportError:
            raise ConfigError(f"{key}=xtb needs tblite: pip install 'molfold[xtb]'") from None
        return _xtb_calculator
    if Path(method).is_file():
        return _potential_calculator(method)
    raise ConfigError(
        f"{key} must be none, mmff, xtb or a path to a molfold potential checkpoint; "
        f"got {method!r} (no such file)"
    )


def make_refiner(method: str | None, key: str = "refine") -> Callable | None:
    """``refine(mol, conf_id, deadline=None) -> Relaxation`` (module docstring); None for
    ``none``. ``key`` names the setting in error messages."""
    if method in ("none", "", None):
        return None
    if method == "mmff":
        return relax_mmff
    calculator = _calculator_factory(method, key)

    def refine(mol, conf_id: int, deadline: float | None = None) -> Relaxation:
        return relax_with_ase(mol, conf_id, calculator(mol), deadline)

    return refine


def _potential_scorer(path: str) -> Callable:
    """Energies of many conformers of one molecule in one batched call of the potential."""
    from torch_geometric.data import Batch

    calculator = _potential_calculator(path)(None)

    def score(mol, conf_ids: list[int]) -> list[float]:
        graphs = [calculator.atoms_to_graph(_atoms(mol, c)) for c in conf_ids]
        with torch.no_grad():
            energy = calculator.potential(Batch.from_data_list(graphs), compute_forces=False)
        return (energy["energy"].double().cpu() * calculator.energy_units_to_eV).tolist()

    return score


def make_scorer(method: str, key: str = "rank") -> Callable:
    """``score(mol, conf_ids) -> [eV]``: single points (atoms not moved) of the conformers
    ``conf_ids``, None where the method has no parameters for the molecule (MMFF94); a
    potential scores them all in one batch."""
    if method == "mmff":

        def mmff(mol, conf_ids: list[int]) -> list[float | None]:
            fields = [_mmff_field(mol, c) for c in conf_ids]
            return [None if f is None else f.CalcEnergy() * KCAL_PER_MOL_TO_EV for f in fields]

        return mmff
    if method != "xtb" and Path(method).is_file():
        return _potential_scorer(method)
    calculator = _calculator_factory(method, key)

    def score(mol, conf_ids: list[int]) -> list[float]:
        energies = []
        for conf_id in conf_ids:
            atoms = _atoms(mol, conf_id)
            atoms.calc = calculator(mol)
            energies.append(float(atoms.get_potential_energy()))
        return energies

    return score


def energy_name(method: str) -> str:
    """How the SDF names the energy of ``method``."""
    return ENERGY_NAMES.get(method, f"molfold potential {method}")
