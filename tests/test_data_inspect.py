"""`molfold data inspect` on every source: counts and statistics checked against the files read
independently (numpy, csv, msgpack), the JSON written, and one-line errors."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass

import msgpack
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.data import chemical_symbols
from torch_geometric.data import Data

from molfold.cli import main
from molfold.data.inspect import format_summary, inspect_dataset
from molfold.data.sources import _SOURCES, Source, qm9

from .conftest import DATA

KCAL_PER_MOL_IN_EV = 0.0433641  # /work/shared/REFERENCES.md, "Data formats"
HARTREE_IN_EV = 27.211386  # CODATA 2014 (27.211386245 in CODATA 2018: same at this precision)


def inspect(tmp_path, capsys, *overrides: str) -> tuple[dict, str]:
    """Run the command with ``overrides``; the JSON summary it wrote and what it printed."""
    output = tmp_path / "summary.json"
    assert main(["data", "inspect", *overrides, f"output={output}"]) == 0
    printed = capsys.readouterr().out
    return json.loads(output.read_text()), printed


def test_md17_counts_and_statistics_match_the_npz(tmp_path, capsys):
    summary, printed = inspect(tmp_path, capsys, "data=md17")
    npz = np.load(DATA / "aspirin_xtb_500K.npz")
    energy = npz["E"].reshape(-1) * KCAL_PER_MOL_IN_EV
    forces = npz["F"] * KCAL_PER_MOL_IN_EV
    frames, n = npz["R"].shape[:2]
    assert summary["format"] == summary["layout"] == "md17"
    assert summary["structures"] == frames
    assert summary["atoms"] == {"total": frames * n, "min": n, "mean": n, "max": n}
    counts = Counter(chemical_symbols[z] for z in npz["z"])
    assert summary["elements"] == {s: c * frames for s, c in counts.items()}
    stats = summary["energy"]
    assert stats["unit"] == "eV"
    for name, value in (("mean", energy.mean()), ("min", energy.min()), ("max", energy.max())):
        assert stats[name] == pytest.approx(value, rel=1e-6)
    assert stats["std"] == pytest.approx(energy.std(), rel=1e-5)
    assert stats["per_atom"]["mean"] == pytest.approx(energy.mean() / n, rel=1e-6)
    assert summary["forces"]["rms"] == pytest.approx(np.sqrt((forces**2).mean()), rel=1e-5)
    norms = np.linalg.norm(forces, axis=-1)
    assert summary["forces"]["max_norm"] == pytest.approx(norms.max(), rel=1e-5)
    assert summary["periodic"]["structures"] == 0
    assert summary["targets"] == {} and summary["molecules"] is None
    assert summary["fields"] == ["pos", "z", "energy", "forces"]
    assert {"pos", "z", "energy", "forces", "frame"} <= set(summary["fields_found"])
    assert f"structures      {frames}" in printed and "max |F|" in printed


def test_ase_extxyz_periodic(tmp_path, capsys):
    import ase.io

    frames = []
    for k, atoms in enumerate([bulk("Cu", cubic=True) * (2, 1, 1), bulk("Au", "fcc", a=4.1)]):
        atoms = atoms.copy()
        atoms.rattle(0.05, seed=k)
        atoms.calc = EMT()
        atoms.get_forces()
        frames.append(atoms)
    path = tmp_path / "frames.extxyz"
    ase.io.write(path, frames, format="extxyz")

    summary, printed = inspect(tmp_path, capsys, "data=ase", f"data.path={path}")
    assert summary["format"] == "ase" and summary["structures"] == 2
    assert summary["atoms"] == {"total": 9, "min": 1, "mean": 4.5, "max": 8}
    assert summary["elements"] == {"Cu": 8, "Au": 1}
    assert summary["periodic"]["structures"] == 2
    volumes = [a.get_volume() for a in frames]
    assert summary["periodic"]["cell_volume"]["max"] == pytest.approx(max(volumes))
    energies = [a.get_potential_energy() for a in frames]
    assert summary["energy"]["mean"] == pytest.approx(np.mean(energies))
    per_atom = [e / len(a) for e, a in zip(energies, frames)]
    assert summary["energy"]["per_atom"]["min"] == pytest.approx(min(per_atom))
    forces = np.concatenate([a.get_forces() for a in frames])
    assert summary["forces"]["rms"] == pytest.approx(np.sqrt((forces**2).mean()))
    assert "2 of 2 structures" in printed and "cell volume" in printed


def test_geom_shipped_set(tmp_path, capsys):
    summary, printed = inspect(tmp_path, capsys, "data=geom")
    molecules = {}
    with open(DATA / "geom_xtb" / "drugs_crude.msgpack", "rb") as f:
        for chunk in msgpack.Unpacker(f, raw=False):
            molecules.update(chunk)
    sizes = [len(m["conformers"][0]["xyz"]) for m in molecules.values()]
    elements = Counter(
        chemical_symbols[int(row[0])]
        for m in molecules.values()
        for row in m["conformers"][0]["xyz"]
    )
    assert summary["layout"] == "geom" and summary["structures"] == len(molecules) == 24
    assert summary["atoms"]["total"] == sum(sizes)
    assert (summary["atoms"]["min"], summary["atoms"]["max"]) == (min(sizes), max(sizes))
    assert summary["elements"] == dict(elements)
    assert summary["molecules"]["smiles"] == 24 == summary["molecules"]["with_bonds"]
    assert {"smiles", "bond_index", "chiral_tag"} <= set(summary["molecules"]["fields"])
    assert summary["energy"] is None and summary["forces"] is None
    assert "24 SMILES" in printed


@pytest.mark.skipif(qm9.qm9pack_dir() is None, reason="qm9pack is not installed")
def test_qm9_targets_match_the_qm9pack_csv(tmp_path, capsys):
    summary, printed = inspect(tmp_path, capsys, "data=qm9", "data.max_structures=200")
    with open(qm9.qm9pack_dir() / "qm9_part1.csv", newline="") as handle:
        rows = [row for _, row in zip(range(200), csv.DictReader(handle))]
    assert summary["structures"] == 200
    assert summary["atoms"]["total"] == sum(int(r["N_atoms"]) for r in rows)
    assert list(summary["targets"]) == list(qm9.TARGETS)
    expected = {
        "mu": ([float(r["Dipole_debye"]) for r in rows], "Debye"),
        "gap": ([float(r["HOMO_LUMO_gap_au"]) * HARTREE_IN_EV for r in rows], "eV"),
        "U0": ([float(r["InternalEnergy_0K_au"]) * HARTREE_IN_EV for r in rows], "eV"),
        "Cv": ([float(r["Heatcapacity_Cv_cal_mol_K"]) for r in rows], "cal/mol/K"),
    }
    for name, (values, unit) in expected.items():
        target = summary["targets"][name]
        assert target["unit"] == unit and target["count"] == 200
        for stat, value in (("mean", np.mean(values)), ("min", min(values)), ("max", max(values))):
            assert target[stat] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, stat)
        assert target["std"] == pytest.approx(np.std(values), rel=1e-5)
    assert summary["molecules"]["smiles"] == 200
    assert "U0_atom mean" in printed


def test_oc20_raw_s2ef_pair(tmp_path, capsys):
    """An OC20 raw S2EF pair (uncompressed ``0.extxyz`` + ``0.txt``): Cu(111) slabs with an O
    adsorbate, OC20 tags, the sub-surface fixed; energies are adsorption energies."""
    import ase.io
    from ase.build import add_adsorbate, fcc111
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms

    frames, lines, adsorption = [], [], []
    for k in range(3):
        atoms = fcc111("Cu", size=(2, 2, 3), vacuum=6.0, a=3.6)
        top = atoms.get_tags() == 1  # ASE: layer numbers from the top
        add_adsorbate(atoms, "O", 1.5 + 0.1 * k, "fcc")
        del atoms.info["adsorbate_info"]  # extxyz cannot store it
        tags = np.where(top, 1, 0).tolist() + [2]
        atoms.set_tags(tags)
        atoms.pbc = True
        atoms.set_constraint(FixAtoms(mask=np.asarray(tags) == 0))
        forces = np.random.default_rng(k).normal(0, 0.5, (len(atoms), 3)).round(6)
        atoms.calc = SinglePointCalculator(atoms, energy=-50.0 - k, forces=forces)
        frames.append(atoms)
        lines.append(f"random{100 + k},frame{k},{-40.0 + 0.5 * k}")
        adsorption.append(-50.0 - k - (-40.0 + 0.5 * k))
    folder = tmp_path / "s2ef"
    folder.mkdir()
    ase.io.write(folder / "0.extxyz", frames, format="extxyz")
    (folder / "0.txt").write_text("\n".join(lines) + "\n")

    summary, printed = inspect(tmp_path, capsys, "data=oc20", f"data.path={folder}")
    assert summary["format"] == "oc20" and summary["layout"] == "raw"
    assert summary["structures"] == 3 and summary["atoms"]["total"] == 3 * 13
    assert summary["elements"] == {"O": 3, "Cu": 36}
    assert summary["tags"] == {"0": 24, "1": 12, "2": 3} and summary["fixed"] == 24
    assert summary["periodic"]["structures"] == 3
    assert summary["energy"]["mean"] == pytest.approx(np.mean(adsorption))
    forces = np.concatenate([a.get_forces(apply_constraint=False) for a in frames])
    assert summary["forces"]["rms"] == pytest.approx(np.sqrt((forces**2).mean()), rel=1e-6)
    assert {"tags", "fixed", "energy", "forces"} <= set(summary["fields"])
    assert "sub-surface 24, surface 12, adsorbate 3" in printed


class LazyStructures:
    """A lazy sequence (``len`` and ``seq[i]``, a new graph each time), as OC20's loader gives."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, k: int) -> Data:
        n = 2 + k
        return Data(
            z=torch.tensor([29] * (n - 1) + [8]),
            pos=torch.rand(n, 3),
            cell=torch.eye(3).mul(10.0).unsqueeze(0),
            pbc=torch.ones(1, 3, dtype=torch.bool),
            energy=torch.tensor([-1.0 * k]),
            forces=torch.ones(n, 3),
            tags=torch.tensor([0] * (n - 2) + [1, 2]),
            fixed=torch.tensor([True] * (n - 2) + [False, False]),
            y_relaxed=torch.tensor([float(k)]),
            charges=torch.zeros(k + 1),  # one value in the first structure only: per atom
        )


@dataclass(frozen=True)
class NoOptions:
    pass


def test_a_lazy_source_with_tags_fixed_atoms_and_graph_level_fields(tmp_path, monkeypatch):
    lazy = Source(
        "lazy_test",
        NoOptions,
        lambda path, options, max_structures: LazyStructures(),
        ("pos", "z", "energy", "forces", "tags", "fixed"),
        layout=lambda path, options: "lazy-layout",
    )
    monkeypatch.setitem(_SOURCES, "lazy_test", lazy)
    summary = inspect_dataset({"format": "lazy_test", "path": str(tmp_path)})
    assert summary["layout"] == "lazy-layout" and summary["structures"] == 3
    assert summary["elements"] == {"O": 3, "Cu": 6}
    assert summary["tags"] == {"0": 3, "1": 3, "2": 3} and summary["fixed"] == 3
    assert summary["periodic"]["structures"] == 3
    assert summary["periodic"]["cell_volume"]["mean"] == pytest.approx(1000.0)
    assert summary["forces"] == {"unit": "eV/Angstrom", "rms": 1.0, "max_norm": 3**0.5}
    assert list(summary["targets"]) == ["y_relaxed"]
    assert summary["targets"]["y_relaxed"]["max"] == 2.0
    text = format_summary(summary)
    assert "sub-surface 3, surface 3, adsorbate 3" in text and "fixed atoms     3 of 9" in text


def error_line(capsys, *argv: str) -> str:
    """The one line a failing command writes to stderr (exit code 2, nothing on stdout)."""
    assert main(list(argv)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_missing_path_corrupt_file_and_bad_subcommand_are_one_line_errors(tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    assert "does not exist" in error_line(capsys, "data", "inspect", f"data.path={missing}")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip archive" * 10)
    line = error_line(capsys, "data", "inspect", f"data.path={corrupt}")
    assert str(corrupt) in line and "corrupt" in line
    assert "unknown data.format" in error_line(capsys, "data", "inspect", "data.format=nope")
    assert "unknown subcommand 'peek'" in error_line(capsys, "data", "peek")
    assert "no subcommand" in error_line(capsys, "data")
