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
``make_scorer("mmff+PATH")`` scores with MMFF94 plus a Delta potential trained on the
difference of a reference method and MMFF94 (Delta learning: the force field keeps the
long-range physics a strictly local model cannot see, the potential corrects it).
``make_scorer("auto")`` is that with the shipped drug-like Delta potential
(:data:`DRUGLIKE_POTENTIAL`, Allegro trained on GFN2-xTB minus MMFF94 forces and energies of
drug-like conformers, the energies relative within each molecule,
``scripts/train_druglike_potential.py``), so that
energy differences between conformers approximate GFN2-xTB's (the absolute value is MMFF94's
plus a correction, no GFN2-xTB total energy); it returns None for a molecule outside the
potential's domain (an element it was not trained on, or a net charge: its training molecules
are neutral), which is then ranked by its refinement's energy.

``deadline`` (a ``time.monotonic()`` value, or None) bounds the wall clock: the ASE minimisers
stop, unconverged, at the first step past it; an MMFF94 relaxation (at most :data:`MMFF_STEPS`,
tens of milliseconds for a drug-sized molecule) runs to its end in one call of RDKit's
minimiser, since restarting it in stretches discards its Hessian estimate and made it 2.5 times
slower (the caller checks the deadline between conformers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from molfold.errors import ConfigError, DataError, MissingFileError
from molfold.shipped import shipped_data
from molfold.units import KCAL_PER_MOL_TO_EV

MMFF_STEPS = 2000
ASE_STEPS = 500
FMAX = 0.05  # eV/Angstrom

DRUGLIKE_POTENTIAL = "allegro_druglike_xtb.ckpt"
DELTA_PREFIX = "mmff+"  # rank=mmff+PATH: MMFF94 plus the Delta potential PATH
ENERGY_NAMES = {
    "mmff": "MMFF94",
    "xtb": "GFN2-xTB (tblite)",
    "auto": f"MMFF94 + molfold Delta potential {DRUGLIKE_POTENTIAL} (GFN2-xTB-corrected)",
}


@dataclass
class Relaxation:
    """How a relaxation ended: ``converged`` and the final energy (eV; None if not computed)."""

    converged: bool
    energy: float | None


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def _charge(mol) -> int:
    return sum(a.GetFormalCharge() for a in mol.GetAtoms())


def _mmff_fields(mol, conf_ids: list[int]) -> list | None:
    """MMFF94 force fields of conformers ``conf_ids`` (the molecule's parameters worked out
    once); None if MMFF94 has no parameters for it."""
    from rdkit.Chem import AllChem

    properties = AllChem.MMFFGetMoleculeProperties(mol)
    if properties is None:
        return None
    return [AllChem.MMFFGetMoleculeForceField(mol, properties, confId=c) for c in conf_ids]


def relax_mmff(mol, conf_id: int, deadline: float | None = None) -> Relaxation:
    fields = _mmff_fields(mol, [conf_id])
    if fields is None:
        return Relaxation(False, None)  # kept unrefined, flagged and reported like a stuck run
    (field,) = fields
    field.Initialize()
    converged = field.Minimize(maxIts=MMFF_STEPS) == 0  # ``deadline``: module docstring
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


def _load_potential(path: str):
    from molfold.models.checkpoint import load_model

    potential = load_model(path)
    if potential.model_info["kind"] != "potential":
        kind = potential.model_info["kind"]
        raise ConfigError(f"{path} is a {kind} model, not a potential")
    return potential


def _potential_calculator(path: str) -> Callable:
    from molfold.calculator import MolfoldCalculator

    potential = _load_potential(path)
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


def _potential_scorer(path: str, domain_only: bool = False) -> Callable:
    """Energies of many conformers of one molecule in one batched call of the potential; with
    ``domain_only``, None for a charged molecule, one with an element it does not know, or a
    conformer it refuses (atoms on top of each other, as an untrained conformer model makes)."""
    from torch_geometric.data import Batch

    from molfold.calculator import MolfoldCalculator

    potential = _load_potential(path)
    calculator = MolfoldCalculator(potential)
    known = set(potential.model_info["statistics"].get("species", []))

    def score(mol, conf_ids: list[int]) -> list[float] | None:
        outside = {a.GetAtomicNum() for a in mol.GetAtoms()} - known if known else set()
        if domain_only and (outside or _charge(mol) != 0):
            return None
        try:
            graphs = [calculator.atoms_to_graph(_atoms(mol, c)) for c in conf_ids]
        except DataError:
            if domain_only:
                return None
            raise
        with torch.no_grad():
            energy = calculator.potential(Batch.from_data_list(graphs), compute_forces=False)
        return (energy["energy"].double().cpu() * calculator.energy_units_to_eV).tolist()

    return score


def _delta_scorer(path: str, domain_only: bool = False) -> Callable:
    """MMFF94 plus the Delta potential ``path``; None for a molecule MMFF94 has no parameters
    for (or, with ``domain_only``, outside the potential's domain)."""
    correction = _potential_scorer(path, domain_only)

    def score(mol, conf_ids: list[int]) -> list[float] | None:
        fields = _mmff_fields(mol, conf_ids)
        delta = None if fields is None else correction(mol, conf_ids)
        if delta is None:
            return None
        return [f.CalcEnergy() * KCAL_PER_MOL_TO_EV + d for f, d in zip(fields, delta)]

    return score


def make_scorer(method: str, key: str = "rank") -> Callable | None:
    """``score(mol, conf_ids) -> [eV]``: single points (atoms not moved) of the conformers
    ``conf_ids``, None where the method has no parameters for the molecule (MMFF94); a
    potential scores them all in one batch. ``mmff+PATH`` and ``auto`` (module docstring): the
    whole list None for a molecule they do not apply to; ``auto`` is None where the shipped
    potential is not installed."""
    if method == "auto":
        try:
            return _delta_scorer(shipped_data(DRUGLIKE_POTENTIAL), domain_only=True)
        except MissingFileError:
            return None
    if method.startswith(DELTA_PREFIX):
        path = method.removeprefix(DELTA_PREFIX)
        if not Path(path).is_file():
            raise ConfigError(f"{key}={method}: no potential checkpoint {path!r}")
        return _delta_scorer(path)
    if method == "mmff":

        def mmff(mol, conf_ids: list[int]) -> list[float | None]:
            fields = _mmff_fields(mol, conf_ids)
            if fields is None:
                return [None] * len(conf_ids)
            return [f.CalcEnergy() * KCAL_PER_MOL_TO_EV for f in fields]

        return mmff
    if method != "xtb" and Path(method).is_file():
        return _potential_scorer(method)
    calculator = _calculator_factory(method, key)

    def score(mol, conf_ids: list[int]) -> list[float]:
        energies, calc = [], calculator(mol)  # one calculator: xTB restarts from the last SCF
        for conf_id in conf_ids:
            atoms = _atoms(mol, conf_id)
            atoms.calc = calc
            energies.append(float(atoms.get_potential_energy()))
        return energies

    return score


def energy_name(method: str) -> str:
    """How the SDF names the energy of ``method``."""
    if method.startswith(DELTA_PREFIX):
        return f"MMFF94 + molfold Delta potential {method.removeprefix(DELTA_PREFIX)}"
    return ENERGY_NAMES.get(method, f"molfold potential {method}")
