"""GEOM reading: the shipped set in both layouts, pickle opt-in, ground state, damaged files.

The shipped ``data/geom_xtb`` set (GFN2-xTB ensembles, see data/README.md) is written in both
GEOM layouts from the same numbers; damaged and edited copies are written here.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import msgpack
import numpy as np
import pytest
from ase import units
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdkit import Chem

from molfold.data.sources.geom import (
    GeomMolecule,
    GeomReading,
    load_geom,
    read_msgpack,
    read_pickle,
    read_rdkit_folder,
)
from molfold.errors import DataError, MissingFileError, MolfoldError
from molfold.units import HARTREE_TO_EV

GEOM = Path(__file__).resolve().parents[1] / "data" / "geom_xtb"
FOLDER = GEOM / "rdkit_folder"
MSGPACK = GEOM / "drugs_crude.msgpack"
N_MOLECULES = 24
# Hartree in eV from the CODATA 2014 constants, independently of ase.units:
# E_h = 2 R_inf h c, R_inf = 10973731.568508 /m, h = 6.626070040e-34 J s, c = 299792458 m/s,
# e = 1.6021766208e-19 C.
HARTREE_IN_EV = 2 * 10973731.568508 * 6.626070040e-34 * 299792458 / 1.6021766208e-19


def at(path: Path) -> str:
    """``path`` as a regular expression that matches it literally."""
    return re.escape(str(path))


def unpack(path: Path) -> dict:
    """All molecules of a msgpack stream, merged into one dict keyed by SMILES."""
    merged = {}
    with open(path, "rb") as f:
        for chunk in msgpack.Unpacker(f, raw=False):
            merged.update(chunk)
    return merged


def write_msgpack(path: Path, *chunks: dict) -> Path:
    path.write_bytes(b"".join(msgpack.packb(c, use_bin_type=True) for c in chunks))
    return path


@pytest.fixture(scope="module")
def from_pickles() -> list[GeomMolecule]:
    assert FOLDER.is_dir(), f"{FOLDER} is missing: run scripts/make_geom_xtb.py (data/README.md)"
    return load_geom(FOLDER, allow_pickle=True, all_conformers=True)


@pytest.fixture(scope="module")
def from_msgpack() -> list[GeomMolecule]:
    return load_geom(MSGPACK, all_conformers=True)


@pytest.fixture
def folder_copy(tmp_path) -> Path:
    return Path(shutil.copytree(FOLDER, tmp_path / "rdkit_folder"))


def test_hartree_is_codata_2014():
    assert pytest.approx(HARTREE_IN_EV, rel=1e-9) == HARTREE_TO_EV
    assert units.Hartree == HARTREE_TO_EV  # to the last bit, as ASE converts


def test_both_layouts_hold_the_same_molecules(from_pickles, from_msgpack):
    assert len(from_pickles) == len(from_msgpack) == N_MOLECULES
    for a, b in zip(from_pickles, from_msgpack):
        assert a.smiles == b.smiles
        np.testing.assert_array_equal(a.z, b.z)
        np.testing.assert_array_equal(a.pos, b.pos)
        np.testing.assert_array_equal(a.energies, b.energies)
        np.testing.assert_array_equal(a.weights, b.weights)
        np.testing.assert_array_equal(a.geom_ids, b.geom_ids)
        np.testing.assert_array_equal(a.positions, b.positions)
        assert Chem.MolToSmiles(a.mol) == Chem.MolToSmiles(b.mol)


def test_shipped_molecules_are_consistent(from_msgpack):
    summary = json.loads((FOLDER / "summary_drugs.json").read_text())
    assert list(summary) == [m.smiles for m in from_msgpack]
    for m in from_msgpack:
        reference = Chem.AddHs(Chem.MolFromSmiles(m.smiles))
        assert m.mol.GetNumAtoms() == reference.GetNumAtoms()  # explicit Hs
        assert m.mol.GetNumConformers() == 1 and m.mol.GetConformer().Is3D()
        assert np.all(np.diff(m.energies) >= 0)
        assert m.energies[0] == pytest.approx(summary[m.smiles]["lowestenergy"] * HARTREE_IN_EV)
        assert m.weights.sum() == pytest.approx(1.0)
        assert len(m.energies) == summary[m.smiles]["uniqueconfs"]
        np.testing.assert_array_equal(m.pos, m.positions[0])
        bonds = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in m.mol.GetBonds()]
        lengths = [np.linalg.norm(m.pos[i] - m.pos[j]) for i, j in bonds]
        assert min(lengths) > 0.9 and max(lengths) < 2.2  # bonded atoms at bond distances


def test_folder_prefers_pickles_only_when_allowed():
    assert load_geom(GEOM, max_molecules=2)[0].source == str(MSGPACK)
    with_pickles = load_geom(GEOM, allow_pickle=True, max_molecules=2)
    assert len(with_pickles) == 2 and with_pickles[0].source.endswith(".pickle")
    assert load_geom(FOLDER / "summary_drugs.json", allow_pickle=True, max_molecules=1)[0].z.size


def test_pickles_are_refused_without_opt_in():
    for call in (
        lambda: load_geom(FOLDER),
        lambda: read_rdkit_folder(FOLDER),
        lambda: read_pickle(FOLDER / "drugs" / "000.pickle"),
    ):
        with pytest.raises(DataError, match=r"allow_pickle=True .*data\.allow_pickle=true"):
            call()


def test_pickle_with_foreign_globals_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w')",)

    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps({"conformers": [Payload()]}))
    with pytest.raises(DataError, match=rf"{at(path)}: refusing to unpickle builtins\.exec"):
        read_pickle(path, allow_pickle=True)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_pickle_names_the_file(folder_copy, damage):
    path = folder_copy / "drugs" / "003.pickle"
    blob = path.read_bytes()
    path.write_bytes(
        {"truncate": blob[: len(blob) // 2], "garbage": b"\x80\x04junk", "empty": b""}[damage]
    )
    with pytest.raises(DataError, match=at(path)):
        load_geom(folder_copy, allow_pickle=True)


def test_missing_files(folder_copy, tmp_path):
    (folder_copy / "drugs" / "005.pickle").unlink()
    with pytest.raises(DataError, match=rf"{at(folder_copy / 'drugs' / '005.pickle')}.* missing"):
        load_geom(folder_copy, allow_pickle=True)
    (folder_copy / "summary_drugs.json").unlink()
    with pytest.raises(DataError, match=rf"{at(folder_copy)}: no GEOM summary"):
        load_geom(folder_copy, allow_pickle=True)
    with pytest.raises(MissingFileError, match=at(tmp_path / "nope")):
        load_geom(tmp_path / "nope")
    (folder_copy / "summary_drugs.json").write_text('{"C": {"pickle_path": "../../x.pickle"}}')
    with pytest.raises(DataError, match="leaves"):
        load_geom(folder_copy, allow_pickle=True)


def test_corrupt_summary(folder_copy):
    path = folder_copy / "summary_drugs.json"
    path.write_text(path.read_text()[:100])
    with pytest.raises(DataError, match=rf"{at(path)}: not a readable JSON summary"):
        load_geom(folder_copy, allow_pickle=True)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_msgpack_names_the_file(tmp_path, keep):
    blob = MSGPACK.read_bytes()
    path = tmp_path / "drugs_crude.msgpack"
    path.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(DataError, match=rf"{at(path)}: .*truncated"):
        read_msgpack(path)


def test_msgpack_stream_of_several_chunks(tmp_path):
    records = list(unpack(MSGPACK).items())
    path = write_msgpack(tmp_path / "x.msgpack", dict(records[:10]), dict(records[10:]))
    assert [m.smiles for m in read_msgpack(path)] == [s for s, _ in records]
    assert len(read_msgpack(path, GeomReading(max_molecules=12))) == 12


def edited(tmp_path: Path, edit) -> Path:
    """The shipped msgpack with ``edit(record)`` applied to its first molecule."""
    records = unpack(MSGPACK)
    edit(next(iter(records.values())))
    return write_msgpack(tmp_path / "edited.msgpack", records)


def test_molecule_without_conformers(tmp_path):
    path = edited(tmp_path, lambda r: r.update(conformers=[]))
    with pytest.raises(DataError, match=rf"{at(path)} molecule .*no conformers"):
        read_msgpack(path)
    assert len(read_msgpack(path, GeomReading(skip_invalid=True))) == N_MOLECULES - 1
    # a dropped molecule does not count towards max_molecules
    kept = read_msgpack(path, GeomReading(max_molecules=3, skip_invalid=True))
    assert [m.smiles for m in kept] == list(unpack(MSGPACK))[1:4]


def test_max_molecules_reads_no_further(tmp_path):
    """The molecules before a damaged chunk are read when max_molecules stops before it."""
    records = list(unpack(MSGPACK).items())
    path = write_msgpack(tmp_path / "x.msgpack", dict(records[:10]))
    path.write_bytes(path.read_bytes() + b"\xdf\xff\xff")  # a truncated second chunk
    with pytest.raises(DataError, match="truncated"):
        read_msgpack(path)
    assert [m.smiles for m in read_msgpack(path, GeomReading(max_molecules=10))] == [
        s for s, _ in records[:10]
    ]
    assert read_msgpack(path, GeomReading(max_molecules=0)) == []


def test_atoms_that_disagree_with_the_smiles(tmp_path, folder_copy):
    def swap_heavy_and_h(record):
        xyz = record["conformers"][1]["xyz"]
        xyz[0], xyz[-1] = xyz[-1], xyz[0]  # the first atom is heavy, the last an H

    path = edited(tmp_path, swap_heavy_and_h)
    with pytest.raises(DataError, match=rf"{at(path)} molecule .* conformer 1 .*disagree"):
        read_msgpack(path)

    pickle_path = folder_copy / "drugs" / "000.pickle"
    record = pickle.loads(pickle_path.read_bytes())
    record["conformers"][0]["rd_mol"] = Chem.RemoveHs(record["conformers"][0]["rd_mol"])
    pickle_path.write_bytes(pickle.dumps(record))
    with pytest.raises(DataError, match=rf"{at(pickle_path)} molecule .* disagree with the SMILES"):
        load_geom(folder_copy, allow_pickle=True)


def test_nan_coordinates(tmp_path):
    path = edited(tmp_path, lambda r: r["conformers"][0]["xyz"][2].__setitem__(1, float("nan")))
    with pytest.raises(DataError, match=rf"{at(path)} molecule .*NaN"):
        read_msgpack(path)


@pytest.mark.parametrize("seed", range(4))
def test_ground_state_is_the_lowest_energy_conformer_in_any_order(tmp_path, seed):
    records = unpack(MSGPACK)
    rng = np.random.default_rng(seed)
    for record in records.values():
        rng.shuffle(record["conformers"])
    path = write_msgpack(tmp_path / "shuffled.msgpack", records)
    for m, record in zip(read_msgpack(path), records.values()):
        lowest = min(record["conformers"], key=lambda c: c["totalenergy"])
        np.testing.assert_array_equal(m.pos, np.array(lowest["xyz"])[:, 1:])
        assert m.energies[0] == lowest["totalenergy"] * HARTREE_TO_EV
        assert m.geom_ids[0] == lowest["geom_id"]


def test_shipped_pickles_are_stored_unsorted(from_pickles):
    # So that the test above is not the only evidence that sorting happens.
    stored = [read_pickle(FOLDER / "drugs" / f"{i:03d}.pickle", True) for i in range(N_MOLECULES)]
    energies = [[c["totalenergy"] for c in r["conformers"]] for r in stored]
    assert any(e != sorted(e) for e in energies)
    for m, e in zip(from_pickles, energies):
        assert m.energies[0] == min(e) * HARTREE_TO_EV


RANDOM_FILES = st.one_of(
    st.binary(max_size=256),
    st.binary(max_size=64).map(lambda b: b"\x80\x04" + b),  # pickle protocol 4 header
    st.binary(max_size=64).map(lambda b: b"\x81" + b),  # msgpack map of one entry
    st.binary(max_size=64).map(lambda b: b"\xdf" + b),  # msgpack map32
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=RANDOM_FILES)
def test_random_bytes_raise_only_molfold_errors(tmp_path_factory, blob):
    folder = tmp_path_factory.mktemp("random")
    for path, read in (
        (folder / "x.msgpack", read_msgpack),
        (folder / "x.pickle", lambda p: read_pickle(p, allow_pickle=True)),
    ):
        path.write_bytes(blob)
        with pytest.raises(MolfoldError, match=at(path)):
            read(path)


@pytest.fixture(scope="module")
def small_msgpack_bytes() -> bytes:
    records = dict(list(unpack(MSGPACK).items())[:2])
    return msgpack.packb(records, use_bin_type=True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_msgpack_reads_correctly_or_raises_data_error(
    tmp_path_factory, small_msgpack_bytes, data
):
    blob = bytearray(small_msgpack_bytes)
    start = data.draw(st.integers(0, len(blob) - 1), label="start")
    patch = data.draw(st.binary(min_size=1, max_size=8), label="patch")
    blob[start : start + len(patch)] = patch
    path = tmp_path_factory.mktemp("damaged") / "damaged.msgpack"
    path.write_bytes(bytes(blob))
    try:
        molecules = read_msgpack(path)
    except DataError as error:
        assert str(path) in str(error)
        return
    # Damage to a number (a coordinate, an energy) can leave a readable, still consistent file.
    for m in molecules:
        assert np.isfinite(m.pos).all() and np.isfinite(m.energies).all()
        assert m.z.tolist() == [
            a.GetAtomicNum() for a in Chem.AddHs(Chem.MolFromSmiles(m.smiles)).GetAtoms()
        ]
