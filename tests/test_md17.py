"""MD17 / rMD17 reading: both layouts, units, and clear errors for broken files.

The shipped GFN2-xTB files in data/ (see data/README.md) are in the original MD17 layout; the rMD17
layout is written from them here.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import units
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molfold.data import graph as G
from molfold.data.sources.md17 import KCAL_PER_MOL_TO_EV, load_md17, read_md17
from molfold.errors import DataError

DATA = Path(__file__).resolve().parents[1] / "data"
SHIPPED = {
    # file: sorted atomic numbers of the molecule
    "ethanol_xtb_500K.npz": [1] * 6 + [6] * 2 + [8],
    "aspirin_xtb_500K.npz": [1] * 8 + [6] * 9 + [8] * 4,
}
# kcal/mol in eV from the CODATA 2014 constants, independently of ase.units:
# 4184 J / (N_A e), N_A = 6.022140857e23 /mol, e = 1.6021766208e-19 C.
KCAL_PER_MOL_IN_EV = 4184.0 / (6.022140857e23 * 1.6021766208e-19)


def raw_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {key: npz[key] for key in npz.files}


def at(path: Path) -> str:
    """``path`` as a regular expression that matches it literally."""
    return re.escape(str(path))


@pytest.fixture(params=sorted(SHIPPED))
def shipped(request) -> Path:
    path = DATA / request.param
    assert path.is_file(), f"{path} is missing: run scripts/make_md17_xtb.py (data/README.md)"
    return path


@pytest.fixture
def ethanol_npz() -> Path:
    return DATA / "ethanol_xtb_500K.npz"


@pytest.fixture
def small_md17(ethanol_npz, tmp_path) -> Path:
    """The first 10 frames of the shipped ethanol file, MD17 layout, compressed."""
    raw = raw_arrays(ethanol_npz)
    path = tmp_path / "small.npz"
    np.savez_compressed(path, z=raw["z"], R=raw["R"][:10], E=raw["E"][:10], F=raw["F"][:10])
    return path


def test_conversion_factor_is_codata_kcal_per_mol():
    assert pytest.approx(0.0433641, rel=1e-6) == KCAL_PER_MOL_TO_EV
    assert pytest.approx(KCAL_PER_MOL_IN_EV, rel=1e-9) == KCAL_PER_MOL_TO_EV
    assert units.kcal / units.mol == KCAL_PER_MOL_TO_EV  # to the last bit, as ASE converts


def test_shipped_file_matches_its_md5(shipped):
    raw = raw_arrays(shipped)
    digest = hashlib.md5(b"".join(raw[k].tobytes() for k in ("z", "R", "E", "F"))).hexdigest()
    assert digest == str(raw["md5"])


def test_shipped_file_is_read_in_ev(shipped):
    raw = raw_arrays(shipped)
    data = read_md17(shipped)
    assert data["layout"] == "md17"
    assert data["source_units"] == {
        "pos": "Angstrom",
        "energy": "kcal/mol",
        "forces": "kcal/mol/Angstrom",
    }
    assert sorted(data["z"].tolist()) == SHIPPED[shipped.name]
    assert data["z"].dtype == np.int64
    n_frames, n_atoms = len(raw["R"]), len(raw["z"])
    assert n_frames == 1500
    assert data["pos"].shape == data["forces"].shape == (n_frames, n_atoms, 3)
    assert data["energy"].shape == (n_frames,)
    np.testing.assert_array_equal(data["pos"], raw["R"])
    np.testing.assert_allclose(data["energy"], raw["E"][:, 0] * KCAL_PER_MOL_IN_EV, rtol=1e-6)
    np.testing.assert_allclose(data["forces"], raw["F"] * KCAL_PER_MOL_IN_EV, rtol=1e-6)
    ase_kcal = units.kcal / units.mol
    np.testing.assert_array_equal(data["energy"], raw["E"][:, 0].astype(np.float64) * ase_kcal)
    np.testing.assert_array_equal(data["forces"], raw["F"].astype(np.float64) * ase_kcal)


def test_shipped_forces_have_no_net_force(shipped):
    forces = read_md17(shipped)["forces"]
    assert np.abs(forces.sum(axis=1)).max() < 1e-3  # eV/A; an isolated molecule feels no net force


def test_rmd17_layout_gives_identical_arrays(ethanol_npz, tmp_path):
    raw = raw_arrays(ethanol_npz)
    revised = tmp_path / "rmd17_ethanol.npz"
    np.savez(
        revised,
        nuclear_charges=raw["z"],
        coords=raw["R"],
        energies=raw["E"][:, 0],
        forces=raw["F"],
        old_indices=np.arange(len(raw["R"])),
    )
    original, from_revised = read_md17(ethanol_npz), read_md17(revised)
    assert (original["layout"], from_revised["layout"]) == ("md17", "rmd17")
    for key in ("z", "pos", "energy", "forces"):
        np.testing.assert_array_equal(from_revised[key], original[key])
    assert from_revised["source_units"] == original["source_units"]


def test_energy_of_shape_frames_by_one_and_flat_agree(small_md17, tmp_path):
    raw = raw_arrays(small_md17)
    flat = tmp_path / "flat.npz"
    np.savez(flat, **{**raw, "E": raw["E"][:, 0]})
    np.testing.assert_array_equal(read_md17(flat)["energy"], read_md17(small_md17)["energy"])


def test_load_md17_graphs(small_md17):
    data = read_md17(small_md17)
    graphs = load_md17(small_md17, r_max=4.0, max_frames=6)
    assert len(graphs) == 6
    assert [int(g.frame) for g in graphs] == list(range(6))
    for k, graph in enumerate(graphs):
        assert graph.frame.dtype == torch.long and graph.frame.shape == (1,)
        np.testing.assert_array_equal(graph[G.Z].numpy(), data["z"])
        np.testing.assert_array_equal(graph[G.POS].numpy(), data["pos"][k])
        np.testing.assert_array_equal(graph[G.ENERGY].numpy(), data["energy"][k : k + 1])
        np.testing.assert_array_equal(graph[G.FORCES].numpy(), data["forces"][k])
        distances = np.linalg.norm(data["pos"][k][:, None] - data["pos"][k][None], axis=-1)
        assert graph[G.EDGE_INDEX].shape[1] == (distances < 4.0).sum() - 9  # ordered pairs i != j
    assert len(load_md17(small_md17, r_max=4.0)) == 10
    assert len(load_md17(small_md17, r_max=4.0, max_frames=100)) == 10


def test_load_md17_names_file_and_frame_of_a_bad_graph(small_md17):
    with pytest.raises(DataError, match=rf"{at(small_md17)} frame 0: atoms .* no neighbour"):
        load_md17(small_md17, r_max=0.5)


def test_load_md17_rejects_zero_max_frames(small_md17):
    with pytest.raises(DataError, match="max_frames must be a positive integer"):
        load_md17(small_md17, r_max=4.0, max_frames=0)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "md17_ethanol.npz"
    with pytest.raises(FileNotFoundError, match=at(missing)):
        read_md17(missing)


def test_random_bytes_are_not_an_npz(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match=rf"{at(path)}: not a readable \.npz archive"):
        read_md17(path)


def test_truncated_file_is_reported(shipped, tmp_path):
    blob = shipped.read_bytes()
    path = tmp_path / shipped.name
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(
        DataError, match=rf"{at(path)}: not a readable .* \(corrupt or truncated\?\)"
    ):
        read_md17(path)


def test_empty_file_is_reported(tmp_path):
    path = tmp_path / "empty.npz"
    path.touch()
    with pytest.raises(DataError, match="not a readable"):
        read_md17(path)


def test_npy_instead_of_npz_is_reported(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(DataError, match=r"single \.npy array, not an \.npz archive"):
        read_md17(path)


def test_pickled_object_array_is_refused(small_md17, tmp_path):
    raw = raw_arrays(small_md17)
    path = tmp_path / "objects.npz"
    np.savez(path, **{**raw, "F": np.array([None, {"forces": 1}], dtype=object)})
    with pytest.raises(DataError, match="allow_pickle"):
        read_md17(path)


def test_missing_keys_name_both_layouts_and_found_keys(small_md17, tmp_path):
    raw = raw_arrays(small_md17)
    path = tmp_path / "no_forces.npz"
    np.savez(path, z=raw["z"], R=raw["R"], E=raw["E"])
    with pytest.raises(DataError) as info:
        read_md17(path)
    message = str(info.value)
    assert str(path) in message and "missing MD17 keys" in message
    assert "md17: ['E', 'F', 'R', 'z']" in message
    assert "rmd17: ['coords', 'energies', 'forces', 'nuclear_charges']" in message
    assert "found ['E', 'R', 'z']" in message


def test_nan_and_inf_frames_are_named(small_md17, tmp_path):
    raw = raw_arrays(small_md17)
    raw["R"][3, 0, 0] = np.nan
    raw["F"][7, 2, 1] = np.inf
    raw["E"][8, 0] = -np.inf
    path = tmp_path / "nan.npz"
    np.savez(path, **raw)
    with pytest.raises(DataError, match=r"NaN or inf in 3 of 10 frames, frame indices \[3, 7, 8\]"):
        read_md17(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"R": lambda r: r[:, :5]}, r"positions must have shape \[F, 9, 3\], got \(10, 5, 3\)"),
        ({"R": lambda r: r[..., :2]}, r"positions must have shape \[F, 9, 3\]"),
        ({"E": lambda e: e[:7]}, r"energies must have shape \[10\] or \[10, 1\], got \(7, 1\)"),
        ({"E": lambda e: np.repeat(e, 2, axis=1)}, r"got \(10, 2\)"),
        ({"F": lambda f: f[:9]}, r"forces must have shape \(10, 9, 3\) like positions"),
        ({"z": lambda z: z[None]}, r"atomic numbers must be integers of shape \[N\]"),
        ({"z": lambda z: z.astype(float)}, r"atomic numbers must be integers"),
        ({"z": lambda z: z * 0}, r"atomic numbers must be in 1\.\.118"),
        ({"F": lambda f: f.astype(str)}, r"forces must be numbers"),
        ({k: (lambda a: a[:0]) for k in "REF"}, "zero frames"),
    ],
)
def test_inconsistent_arrays_are_reported(small_md17, tmp_path, change, message):
    raw = raw_arrays(small_md17)
    raw.update({key: edit(raw[key]) for key, edit in change.items()})
    path = tmp_path / "bad.npz"
    np.savez(path, **raw)
    with pytest.raises(DataError, match=rf"{at(path)}: .*{message}"):
        read_md17(path)


RANDOM_FILES = st.one_of(
    st.binary(max_size=2048),
    st.binary(max_size=2048).map(lambda b: b"PK\x03\x04" + b),  # zip magic, garbage after
    st.binary(max_size=2048).map(lambda b: b"\x93NUMPY" + b),  # npy magic, garbage after
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blob=RANDOM_FILES)
def test_random_bytes_raise_data_error(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("random") / "random.npz"
    path.write_bytes(blob)
    with pytest.raises(DataError, match=at(path)):
        read_md17(path)


@pytest.fixture(scope="module")
def tiny_npz_bytes(tmp_path_factory) -> bytes:
    """A 3-frame MD17-layout archive (compressed) as bytes, from the shipped ethanol file."""
    raw = raw_arrays(DATA / "ethanol_xtb_500K.npz")
    path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
    np.savez_compressed(path, z=raw["z"], R=raw["R"][:3], E=raw["E"][:3], F=raw["F"][:3])
    return path.read_bytes()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_archives_read_correctly_or_raise_data_error(
    tmp_path_factory, tiny_npz_bytes, data
):
    blob = bytearray(tiny_npz_bytes)
    if data.draw(st.booleans(), label="truncate"):
        blob = blob[: data.draw(st.integers(0, len(blob) - 1), label="length")]
    else:
        start = data.draw(st.integers(0, len(blob) - 1), label="start")
        patch = data.draw(st.binary(min_size=1, max_size=8), label="patch")
        blob[start : start + len(patch)] = patch
    path = tmp_path_factory.mktemp("damaged") / "damaged.npz"
    path.write_bytes(bytes(blob))
    try:
        result = read_md17(path)
    except DataError as error:
        assert str(path) in str(error)
        return
    # Damage that spares the four arrays (e.g. in a file comment) may leave a readable archive.
    assert result["pos"].shape == (3, 9, 3) and np.isfinite(result["energy"]).all()
