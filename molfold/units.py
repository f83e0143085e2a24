"""Every unit conversion molfold uses, in one table, from the CODATA 2014 constants.

molfold works in Angstrom, eV, eV/Angstrom and eV/Angstrom^3; every dataset is converted to these
units on load with the factors below. The constants are the CODATA 2014 recommended values
(P. J. Mohr, D. B. Newell, B. N. Taylor, Rev. Mod. Phys. 88, 035009 (2016)), the set ASE uses by
default (``ase.units``), so that energies through molfold and through ASE agree to the last bit.
torch-geometric's ``HAR2EV`` (27.211386246) is CODATA 2018; it differs from ours by 8e-9 relative.

=======================  ======================  ============================================
name                     value                   meaning
=======================  ======================  ============================================
``HARTREE_TO_EV``        27.211386024...         eV per Hartree, m_e e^3 / (16 pi^2 eps0^2 hbar^2)
``BOHR_TO_ANGSTROM``     0.529177210...          Angstrom per Bohr, 4 pi eps0 hbar^2 / (m_e e^2)
``KCAL_PER_MOL_TO_EV``   0.043364103...          eV per kcal/mol (thermochemical calorie, 4.184 J)
``KJ_PER_MOL_TO_EV``     0.010364269...          eV per kJ/mol
``NM_TO_ANGSTROM``       10                      Angstrom per nanometre
``EV_TO_MEV``            1000                    meV per eV (reported errors)
=======================  ======================  ============================================
"""

from __future__ import annotations

import math

# CODATA 2014 (Mohr, Newell & Taylor 2016), SI units
SPEED_OF_LIGHT = 299792458.0  # m/s, exact
MAGNETIC_CONSTANT = 4e-7 * math.pi  # N/A^2, exact before the 2019 SI
PLANCK = 6.626070040e-34  # J s
ELEMENTARY_CHARGE = 1.6021766208e-19  # C
ELECTRON_MASS = 9.10938356e-31  # kg
AVOGADRO = 6.022140857e23  # 1/mol
THERMOCHEMICAL_CALORIE = 4.184  # J, exact by definition

_EPSILON0 = 1.0 / MAGNETIC_CONSTANT / SPEED_OF_LIGHT**2
_HBAR = PLANCK / (2 * math.pi)

HARTREE_TO_EV = ELECTRON_MASS * ELEMENTARY_CHARGE**3 / 16 / math.pi**2 / _EPSILON0**2 / _HBAR**2
BOHR_TO_ANGSTROM = 4e10 * math.pi * _EPSILON0 * _HBAR**2 / ELECTRON_MASS / ELEMENTARY_CHARGE**2
KJ_PER_MOL_TO_EV = 1000.0 / ELEMENTARY_CHARGE / AVOGADRO
KCAL_PER_MOL_TO_EV = THERMOCHEMICAL_CALORIE * KJ_PER_MOL_TO_EV
NM_TO_ANGSTROM = 10.0
EV_TO_MEV = 1000.0

ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "meV": 1.0 / EV_TO_MEV,
    "Hartree": HARTREE_TO_EV,
    "kcal/mol": KCAL_PER_MOL_TO_EV,
    "kJ/mol": KJ_PER_MOL_TO_EV,
}
"""eV per unit of energy, by the names configs use (``data.energy_unit``)."""

LENGTH_UNITS: dict[str, float] = {"Angstrom": 1.0, "Bohr": BOHR_TO_ANGSTROM, "nm": NM_TO_ANGSTROM}
"""Angstrom per unit of length, by the names configs use (``data.length_unit``)."""
