"""``molfold data inspect``: what a dataset holds, as a table and as JSON.

:func:`inspect_dataset` reads a ``data`` config section the way training does
(:func:`molfold.data.datamodule.load_structures`, no transforms) and summarises every structure,
in molfold units (:mod:`molfold.data.graph`):

============  ===============================================================================
key           what
============  ===============================================================================
format        ``data.format``; ``layout``: the file layout the source found (its registered
              ``layout(path, options)``, else the format's name)
structures    number of structures; ``atoms``: total and min / mean / max per structure
elements      atoms per element, by atomic number
periodic      structures with a periodic direction, and their cell volumes (Angstrom^3)
energy        mean / std / min / max of ``energy`` (eV), and of energy per atom
forces        RMS of the force components and the largest atomic |F| (eV/Angstrom)
tags          atoms per tag (OC20: 0 sub-surface, 1 surface, 2 adsorbate); ``fixed``: fixed atoms
targets       every graph-level float field (QM9's 19 targets, ...): unit where known, count,
              mean / std / min / max
molecules     structures with a SMILES (and unique SMILES), with a bond graph, and the molecule
              fields present
fields        the fields every structure carries by the source's declaration
              (``source.fields(options)``); ``fields_found``: those every structure read has
============  ===============================================================================

Standard deviations are population ones (ddof 0). Sources may return a list or a lazy sequence
(``len`` and ``seq[i]``): structures are visited once each, in order, with a progress bar on a
terminal. :func:`format_summary` renders the summary as text, :func:`run` is the command.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols
from tqdm import tqdm

from molfold.data import graph as G
from molfold.data.datamodule import load_structures, parse_data_config
from molfold.data.molgraph import MOLECULE_FIELDS
from molfold.data.sources import source
from molfold.data.sources.qm9_targets import TARGETS
from molfold.data.statistics import ScanTally
from molfold.io import atomic_write
from molfold.tasks.metrics import format_table

TAG_NAMES = {0: "sub-surface", 1: "surface", 2: "adsorbate"}
"""OC20's tags (fairchem ``tags``: 0 sub-surface slab, 1 surface slab, 2 adsorbate)."""

FIELD_UNITS: dict[str, str] = {
    G.ENERGY: "eV",
    G.FORCES: "eV/Angstrom",
    G.STRESS: "eV/Angstrom^3",
    G.ENERGY_INIT: "eV",
    **{name: row[1] for name, row in TARGETS.items()},
}
"""Unit of each graph field, by name (QM9's targets: :data:`~molfold.data.sources.qm9.TARGETS`)."""

MOLECULE_KEYS = ("smiles", "name", *(f for f in MOLECULE_FIELDS if f not in (G.Z, G.POS)))
"""Fields of a molecule (:mod:`molfold.data.molgraph`) reported under ``molecules``."""

NOT_TARGETS = {G.ENERGY}
"""Graph-level float fields with their own section."""


def _stats(values: Iterable[float]) -> dict[str, float]:
    """mean / std / min / max of the finite ``values`` (``non_finite``: how many are not)."""
    array = np.asarray(list(values), dtype=np.float64)
    finite = array[np.isfinite(array)]
    out: dict[str, float] = {}
    if len(finite):
        out = {
            "mean": float(finite.mean()),
            "std": float(finite.std()),
            "min": float(finite.min()),
            "max": float(finite.max()),
        }
    if len(finite) < len(array):
        out["non_finite"] = int(len(array) - len(finite))
    return out


def _scalar(value: Any) -> float | None:
    """``value`` as a float if it is one float number (a [1] or [] float tensor, a float)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.numel() == 1:
            return float(value.reshape(-1)[0])
        return None
    if isinstance(value, (float, np.floating)):
        return float(value)
    return None


class _Tally:
    """Running totals over the structures, one :meth:`add` each."""

    def __init__(self) -> None:
        self.scan = ScanTally()  # atoms, elements, energies, force sums: as the statistics
        self.force_max = 0.0
        self.volumes: list[float] = []
        self.tags: dict[int, int] = {}
        self.fixed: int | None = None
        self.targets: dict[str, list[float]] = {}
        self.per_atom: set[str] = set()
        self.smiles: list[str] = []
        self.bonded, self.bonds = 0, 0
        self.molecule_keys: set[str] = set()
        self.found: set[str] | None = None

    def add(self, data: Any) -> None:
        keys = set(data.keys())
        self.found = keys if self.found is None else self.found & keys
        self.scan.add(data)
        if G.FORCES in keys and data[G.FORCES].numel():
            norms = data[G.FORCES].double().reshape(-1, 3).norm(dim=1)
            self.force_max = max(self.force_max, float(norms.max()))
        if G.PBC in keys and bool(data[G.PBC].any()):
            cell = data[G.CELL].double().reshape(3, 3)
            self.volumes.append(abs(float(torch.linalg.det(cell))))
        if G.TAGS in keys:
            values, counts = torch.unique(data[G.TAGS].reshape(-1).long(), return_counts=True)
            for tag, count in zip(values.tolist(), counts.tolist()):
                self.tags[tag] = self.tags.get(tag, 0) + count
        if G.FIXED in keys:
            self.fixed = (self.fixed or 0) + int((data[G.FIXED].reshape(-1) != 0).sum())
        for key in keys - NOT_TARGETS - self.per_atom:
            value = _scalar(data[key])
            if value is not None:
                self.targets.setdefault(key, []).append(value)
            elif isinstance(data[key], torch.Tensor) and data[key].is_floating_point():
                self.per_atom.add(key)  # more than one value somewhere: not graph-level
                self.targets.pop(key, None)
        self.molecule_keys |= keys & set(MOLECULE_KEYS)
        if "smiles" in keys and isinstance(data["smiles"], str):
            self.smiles.append(data["smiles"])
        if G.BOND_INDEX in keys:
            self.bonded += 1
            self.bonds += int(data[G.BOND_INDEX].shape[1]) // 2


def inspect_dataset(values: dict[str, Any]) -> dict[str, Any]:
    """Summary of the structures of the ``data`` config section ``values`` (see the module
    docstring for its keys); plain Python values, ready for JSON.

    Raises :class:`~molfold.errors.MolfoldError` subclasses for a bad section, a missing path
    or an unreadable file, as :func:`~molfold.data.datamodule.load_structures` does.
    """
    config, options = parse_data_config(values)
    src = source(config.format)
    structures = load_structures(values, transforms=[])
    tally = _Tally()
    for k in tqdm(range(len(structures)), desc="inspecting", unit="structure", disable=None):
        tally.add(structures[k])
    found = tally.scan.result()
    n_atoms = found.num_atoms
    with_energy = [k for k, e in enumerate(tally.scan.energies) if e is not None]
    energies = np.array([tally.scan.energies[k] for k in with_energy])
    summary: dict[str, Any] = {
        "format": config.format,
        "name": config.name,
        "path": config.path,
        "layout": src.layout(config.path, options) if src.layout else config.format,
        "structures": len(n_atoms),
        "atoms": {
            "total": int(n_atoms.sum()),
            "min": int(n_atoms.min()),
            "mean": float(n_atoms.mean()),
            "max": int(n_atoms.max()),
        },
        "elements": {
            chemical_symbols[z]: int(count)
            for z, count in zip(found.species, found.composition.sum(axis=0))
        },
        "periodic": {"structures": len(tally.volumes), "cell_volume": _stats(tally.volumes)},
        "energy": None,
        "forces": None,
        "tags": None,
        "fixed": tally.fixed,
        "targets": {},
        "molecules": None,
        "fields": list(src.fields(options)),
        "fields_found": sorted(tally.found or ()),
    }
    if with_energy:
        summary["energy"] = {
            "unit": "eV",
            "count": len(with_energy),
            **_stats(energies.tolist()),
            "per_atom": _stats((energies / n_atoms[with_energy]).tolist()),
        }
    if found.force_components:
        summary["forces"] = {
            "unit": "eV/Angstrom",
            "rms": (found.force_squares / found.force_components) ** 0.5,
            "max_norm": tally.force_max,
        }
    if tally.tags:
        summary["tags"] = {str(tag): count for tag, count in sorted(tally.tags.items())}
    for name in sorted(tally.targets, key=_target_order):
        found = tally.targets[name]
        unit = FIELD_UNITS.get(name, "")
        summary["targets"][name] = {"unit": unit, "count": len(found), **_stats(found)}
    if tally.molecule_keys:
        summary["molecules"] = {
            "smiles": len(tally.smiles),
            "unique_smiles": len(set(tally.smiles)),
            "with_bonds": tally.bonded,
            "bonds": tally.bonds,
            "fields": [key for key in MOLECULE_KEYS if key in tally.molecule_keys],
        }
    return summary


def _target_order(name: str) -> tuple[int, str]:
    """QM9's targets in their table's order, then every other field by name."""
    order = list(TARGETS)
    return (order.index(name), "") if name in order else (len(order), name)


def _stats_rows(prefix: str, stats: dict[str, float]) -> dict[str, float]:
    return {f"{prefix} {name}".strip(): value for name, value in stats.items()}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary of :func:`inspect_dataset` as readable text: header lines of counts, then
    tables (:func:`molfold.tasks.metrics.format_table`) of energies, forces, cells and targets."""
    atoms, periodic = summary["atoms"], summary["periodic"]
    where = f" at {summary['path']}" if summary["path"] else ""
    lines = [
        f"{summary['format']} data (layout {summary['layout']}){where}",
        f"structures      {summary['structures']}",
        f"atoms           {atoms['total']} (per structure min {atoms['min']}, "
        f"mean {atoms['mean']:.4g}, max {atoms['max']})",
        "elements        " + ", ".join(f"{s} {n}" for s, n in summary["elements"].items()),
        f"periodic        {periodic['structures']} of {summary['structures']} structures",
    ]
    if summary["tags"]:
        names = (f"{TAG_NAMES.get(int(t), 'tag ' + t)} {n}" for t, n in summary["tags"].items())
        lines.append("tags (atoms)    " + ", ".join(names))
    if summary["fixed"] is not None:
        lines.append(f"fixed atoms     {summary['fixed']} of {atoms['total']}")
    molecules = summary["molecules"]
    if molecules:
        lines.append(
            f"molecules       {molecules['smiles']} SMILES ({molecules['unique_smiles']} unique), "
            f"{molecules['with_bonds']} with bonds; fields {', '.join(molecules['fields'])}"
        )
    lines.append(f"fields          {', '.join(summary['fields'])}")
    tables = []
    if summary["energy"]:
        energy = summary["energy"]
        stats = {k: v for k, v in energy.items() if k not in ("unit", "count", "per_atom")}
        rows = {**_stats_rows("", stats), **_stats_rows("per atom", energy["per_atom"])}
        tables.append(format_table(rows, "energy", dict.fromkeys(rows, energy["unit"])))
    if summary["forces"]:
        forces = summary["forces"]
        rows = {"RMS component": forces["rms"], "max |F|": forces["max_norm"]}
        tables.append(format_table(rows, "forces", dict.fromkeys(rows, forces["unit"])))
    if periodic["cell_volume"]:
        rows = _stats_rows("", periodic["cell_volume"])
        tables.append(format_table(rows, "cell volume", dict.fromkeys(rows, "Angstrom^3")))
    if summary["targets"]:
        rows, units = {}, {}
        for name, target in summary["targets"].items():
            stats = {k: v for k, v in target.items() if k not in ("unit", "count")}
            part = _stats_rows(name, stats)
            rows.update(part)
            units.update(dict.fromkeys(part, target["unit"]))
        tables.append(format_table(rows, "targets (graph-level fields)", units))
    return "\n".join(lines + [""] + tables)


def run(config: dict[str, Any]) -> dict[str, Any]:
    """``molfold data inspect``: print the summary of ``config["data"]`` and, when
    ``config["output"]`` is set, write it there as JSON (atomically)."""
    summary = inspect_dataset(config["data"])
    print(format_summary(summary))
    output = config.get("output")
    if output:
        atomic_write(output, json.dumps(summary, indent=2) + "\n")
        print(f"wrote {output}")
    return summary
