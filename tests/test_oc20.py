"""data.format=oc20: every OC20 layout, read from files written here by independent code.

Raw S2EF pairs are written with ASE's extxyz writer and lzma; LMDBs with py-lmdb and
``pickle.dumps`` of real torch-geometric ``Data`` (PyG 2.x, installed) and of hand-made PyG 1.x
and 2.0 objects (classes named ``torch_geometric.data.data.Data`` in stand-in modules);
``.aselmdb`` files with ``ase.db.connect``.
"""

from __future__ import annotations

import io
import lzma
import os
import pickle
import sys
import types
from pathlib import Path

import ase.db
import ase.io
import lmdb
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, fcc111
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from omegaconf import OmegaConf
from torch_geometric.data import Data

from molfold.data import graph as G
from molfold.data.datamodule import data_fields, load_structures, parse_data_config
from molfold.data.sources import lmdb_envs, oc20_lmdb, source
from molfold.data.sources.oc20 import OC20Options, layout
from molfold.errors import ConfigError, DataError, MolfoldError

OC20 = source("oc20")
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data" / "oc20.yaml"


def load(path, max_structures=None, **options):
    return OC20.load(str(path), OC20Options(**options), max_structures)


@pytest.fixture(autouse=True)
def _close_lmdb_files():
    yield
    lmdb_envs.close_all()


# ---------------------------------------------------------------- independent writers


def slab(seed: int, fixed: bool = True) -> Atoms:
    """A Cu(111) slab with an O adsorbate, OC20 tags (0 sub-surface, 1 surface, 2 adsorbate),
    the sub-surface fixed, total energy and forces; values rounded to 6 decimals so that the
    extxyz text (8 decimals) holds them exactly."""
    rng = np.random.default_rng(seed)
    atoms = fcc111("Cu", size=(2, 2, 3), vacuum=6.0, a=3.6 + 0.01 * seed)
    layer = atoms.get_tags()  # ASE: 1 = top layer
    add_adsorbate(atoms, "O", 1.6 + 0.05 * seed, "fcc")
    del atoms.info["adsorbate_info"]  # not extxyz-writable
    tags = np.where(layer == 1, 1, 0).tolist() + [2]
    atoms.set_tags(tags)
    atoms.positions = np.round(atoms.positions + rng.normal(0, 0.02, (len(atoms), 3)), 6)
    atoms.pbc = True
    if fixed:
        atoms.set_constraint(FixAtoms(mask=np.asarray(tags) == 0))
    forces = np.round(rng.normal(0, 0.5, (len(atoms), 3)), 6)
    atoms.calc = SinglePointCalculator(atoms, energy=-50.0 - seed * 1.234567, forces=forces)
    return atoms


def write_raw(folder, frames_per_file, compress=True, ids=None):
    """``<n>.extxyz(.xz)`` + ``<n>.txt(.xz)``; returns [(atoms, sid, fid, ref)] in order."""
    folder.mkdir(parents=True, exist_ok=True)
    written, seed = [], 0
    for n, count in enumerate(frames_per_file):
        frames, lines = [], []
        for _ in range(count):
            atoms = slab(seed, fixed=seed % 3 != 2)
            sid, fid, ref = 1000 + seed, 7 * seed, -40.0 + 0.5 * seed
            frames.append(atoms)
            lines.append(f"random{sid},frame{fid},{ref!r}")
            written.append((atoms, sid, fid, ref))
            seed += 1
        text = io.StringIO()
        ase.io.write(text, frames, format="extxyz")
        ids_text = "\n".join(lines if ids is None else ids) + "\n"
        pack = lzma.compress if compress else (lambda b: b)
        suffix = ".xz" if compress else ""
        (folder / f"{n}.extxyz{suffix}").write_bytes(pack(text.getvalue().encode()))
        (folder / f"{n}.txt{suffix}").write_bytes(pack(ids_text.encode()))
    return written


def write_lmdb(path, values: dict[bytes, bytes]):
    env = lmdb.open(str(path), subdir=False, map_size=1 << 26)
    with env.begin(write=True) as txn:
        for key, value in values.items():
            txn.put(key, value)
    env.close()


def pickled_lmdb(path, objects, length=True):
    values = {str(i).encode(): pickle.dumps(o, protocol=-1) for i, o in enumerate(objects)}
    if length:
        values[b"length"] = pickle.dumps(len(objects), protocol=-1)
    write_lmdb(path, values)


def s2ef_attributes(seed: int, new_names: bool = False) -> dict:
    """What fairchem's preprocess_ef.py stores (float atomic numbers and fixed, float32)."""
    atoms = slab(seed)
    n = len(atoms)
    fixed = torch.zeros(n)
    fixed[atoms.constraints[0].get_indices()] = 1.0
    energy = float(np.float32(-1.5 - 0.25 * seed))
    return {
        "pos": torch.tensor(atoms.positions, dtype=torch.float32),
        "cell": torch.tensor(np.asarray(atoms.cell), dtype=torch.float32).view(1, 3, 3),
        "atomic_numbers": torch.tensor(atoms.numbers, dtype=torch.float32),
        "natoms": n,
        "tags": torch.tensor(atoms.get_tags(), dtype=torch.long),
        "fixed": fixed,
        "sid": 500 + seed,
        "fid": seed,
        ("energy" if new_names else "y"): energy,
        ("forces" if new_names else "force"): torch.tensor(
            atoms.calc.results["forces"], dtype=torch.float32
        ),
        "edge_index": None,
    }


def is2re_attributes(seed: int) -> dict:
    attributes = s2ef_attributes(seed)
    del attributes["y"], attributes["force"], attributes["fid"]
    pos = attributes["pos"]
    return {
        **attributes,
        "y_init": 2.5 + seed,
        "y_relaxed": torch.tensor(-0.75 - seed, dtype=torch.float64),
        "pos_relaxed": pos + 0.125,
    }


def pyg_1x_data(attributes: dict, monkeypatch) -> bytes:
    """A pickle as PyG 1.x wrote it: a class torch_geometric.data.data.Data whose attributes
    sit flat in its __dict__."""
    module = types.ModuleType("torch_geometric.data.data")

    class Data:  # noqa: D401 - the PyG 1.x class, by name only
        pass

    Data.__module__, Data.__qualname__ = module.__name__, "Data"
    module.Data = Data
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, module.__name__, module)
        old = Data()
        old.__dict__.update(attributes, __num_nodes__=None)
        return pickle.dumps(old, protocol=2)


def pyg_20_data(attributes: dict, monkeypatch) -> bytes:
    """A pickle as PyG 2.0 wrote it: Data.__dict__ = {'_store': GlobalStorage}."""
    data_module = types.ModuleType("torch_geometric.data.data")
    storage_module = types.ModuleType("torch_geometric.data.storage")

    class Data:
        pass

    class GlobalStorage:
        pass

    for cls, module in ((Data, data_module), (GlobalStorage, storage_module)):
        cls.__module__, cls.__qualname__ = module.__name__, cls.__name__
        setattr(module, cls.__name__, cls)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, data_module.__name__, data_module)
        patch.setitem(sys.modules, storage_module.__name__, storage_module)
        data, store = Data(), GlobalStorage()
        store.__dict__.update(_mapping=attributes, _parent=data)
        data.__dict__["_store"] = store
        return pickle.dumps(data, protocol=4)


def write_aselmdb(path, frames):
    with ase.db.connect(str(path)) as db:
        for atoms, sid, fid, ref in frames:
            db.write(atoms, data={"sid": sid, "fid": fid, "ref_energy": ref})


# ---------------------------------------------------------------- checks


def assert_frame(data, atoms, sid, fid, energy):
    assert torch.equal(data[G.Z], torch.as_tensor(atoms.numbers, dtype=torch.long))
    assert torch.equal(data[G.POS], torch.as_tensor(atoms.positions))
    assert torch.equal(data[G.CELL], torch.as_tensor(np.asarray(atoms.cell)).view(1, 3, 3))
    assert data[G.PBC].tolist() == [[True, True, True]]
    assert data[G.TAGS].dtype == torch.long
    assert data[G.TAGS].tolist() == atoms.get_tags().tolist()
    fixed = np.zeros(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        fixed[constraint.get_indices()] = True
    assert data[G.FIXED].dtype == torch.bool and data[G.FIXED].tolist() == fixed.tolist()
    assert data[G.SID].tolist() == [sid] and data[G.FID].tolist() == [fid]
    assert data[G.ENERGY].dtype == torch.float64 and data[G.ENERGY].tolist() == [energy]
    assert torch.equal(data[G.FORCES], torch.as_tensor(atoms.calc.results["forces"]))


@pytest.fixture(scope="module")
def raw_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw") / "s2ef"
    return folder, write_raw(folder, [3, 2])


def test_raw_frames_survive_exactly(raw_folder):
    folder, written = raw_folder
    assert layout(folder) == "raw"
    frames = load(folder)
    assert len(frames) == 5
    assert not written[2][0].constraints  # a frame without move_mask: nothing fixed
    for data, (atoms, sid, fid, ref) in zip(frames, written):
        assert_frame(data, atoms, sid, fid, atoms.calc.results["energy"] - ref)
    totals = load(folder, energy="total")
    for data, (atoms, sid, fid, _) in zip(totals, written):
        assert_frame(data, atoms, sid, fid, atoms.calc.results["energy"])
    assert [d[G.SID].item() for d in load(folder / "1.txt.xz")] == [w[1] for w in written[3:]]
    assert frames[-1][G.SID].item() == written[-1][1] and len(frames[1:4]) == 3


def test_uncompressed_pair_and_max_structures(tmp_path):
    written = write_raw(tmp_path, [2, 2], compress=False)
    frames = load(tmp_path / "0.extxyz", energy="total")
    assert len(frames) == 2 and frames[1][G.FID].item() == written[1][2]
    (tmp_path / "1.txt").write_text("garbage\n")  # past max_structures: never read
    assert len(load(tmp_path, max_structures=2)) == 2
    with pytest.raises(DataError, match=r"1\.txt line 1"):
        load(tmp_path)
    (tmp_path / "1.txt").unlink()
    with pytest.raises(MolfoldError, match=r"no 1\.txt\.xz or 1\.txt, the other file of pair"):
        load(tmp_path)


def test_raw_damage_is_refused_naming_the_file(tmp_path):
    write_raw(tmp_path / "bad", [2])
    frames_file = tmp_path / "bad" / "0.extxyz.xz"
    frames_file.write_bytes(frames_file.read_bytes()[:-40])  # truncated xz
    with pytest.raises(DataError, match=rf"{frames_file}: cannot decode"):
        load(tmp_path / "bad")[0]
    frames_file.write_bytes(b"not xz at all")
    with pytest.raises(DataError, match=rf"{frames_file}: cannot decode"):
        load(tmp_path / "bad")[0]

    write_raw(tmp_path / "short", [3], ids=["random1,frame0,1.0", "random1,frame1,2.0"])
    with pytest.raises(DataError, match=r"0\.extxyz\.xz holds 3 frames but .*0\.txt\.xz lists 2"):
        load(tmp_path / "short")[0]
    write_raw(tmp_path / "atoms", [2], compress=False)
    frames_file = tmp_path / "atoms" / "0.extxyz"
    lines = frames_file.read_text().splitlines()
    frames_file.write_text("\n".join(lines[:5] + lines[6:]) + "\n")  # 13 atoms announced, 12
    with pytest.raises(DataError, match=rf"{frames_file}: not a readable extxyz"):
        load(tmp_path / "atoms")[0]
    write_raw(tmp_path / "nan", [1], ids=["random1,frame0,abc"])
    with pytest.raises(DataError, match=r"0\.txt\.xz line 1: reference energy 'abc'"):
        load(tmp_path / "nan")
    write_raw(tmp_path / "noref", [1], ids=["random1,frame0"])
    assert len(load(tmp_path / "noref", energy="total")) == 1
    with pytest.raises(DataError, match=r"no reference energy; .*data\.energy=total"):
        load(tmp_path / "noref")[0]


def test_raw_reads_one_file_at_a_time(tmp_path):
    write_raw(tmp_path, [2, 2])
    (tmp_path / "1.extxyz.xz").write_bytes(b"damaged")
    frames = load(tmp_path)
    assert len(frames) == 4 and frames[1][G.SID].item() == 1001  # file 1 not decoded
    with pytest.raises(DataError, match=r"1\.extxyz\.xz: cannot decode"):
        frames[2]


# ---------------------------------------------------------------- pickled LMDBs


@pytest.fixture(scope="module")
def s2ef_lmdb(tmp_path_factory):
    folder = tmp_path_factory.mktemp("s2ef_lmdb")
    attributes = [s2ef_attributes(seed) for seed in range(5)]
    pickled_lmdb(folder / "data.0000.lmdb", [Data(**a) for a in attributes[:3]])
    pickled_lmdb(folder / "data.0001.lmdb", [Data(**a) for a in attributes[3:]])
    (folder / "data_log.0000.txt").write_text("random500,frame0\n")  # as preprocess_ef.py
    return folder, attributes


def assert_entry(data, attributes):
    assert data[G.Z].dtype == torch.long
    assert data[G.Z].tolist() == attributes["atomic_numbers"].long().tolist()
    assert torch.equal(data[G.POS], attributes["pos"].double())
    assert torch.equal(data[G.CELL], attributes["cell"].double())
    assert data[G.PBC].tolist() == [[True, True, True]]
    assert torch.equal(data[G.TAGS], attributes["tags"])
    assert torch.equal(data[G.FIXED], attributes["fixed"].bool())
    assert data[G.SID].tolist() == [attributes["sid"]]
    assert data[G.FID].tolist() == [attributes.get("fid", -1)]


def test_s2ef_lmdb_of_pyg2_data(s2ef_lmdb):
    folder, attributes = s2ef_lmdb
    assert layout(folder) == "lmdb"
    frames = load(folder, allow_pickle=True)
    assert len(frames) == 5
    for data, stored in zip(frames, attributes):
        assert_entry(data, stored)
        assert data[G.ENERGY].tolist() == [stored["y"]]
        assert torch.equal(data[G.FORCES], stored["force"].double())
    assert len(load(folder, max_structures=4, allow_pickle=True)) == 4


def test_old_pyg_layouts_and_field_names(tmp_path, monkeypatch):
    old = s2ef_attributes(1)
    new = s2ef_attributes(2, new_names=True)
    path = tmp_path / "old.lmdb"
    stored = [pyg_1x_data(old, monkeypatch), pyg_20_data(new, monkeypatch)]
    assert b"torch_geometric.data.data" in stored[0] and b"_store" in stored[1]
    write_lmdb(path, {b"0": stored[0], b"1": stored[1]})
    first, second = load(path, allow_pickle=True)
    assert_entry(first, old)
    assert first[G.ENERGY].tolist() == [old["y"]]
    assert torch.equal(first[G.FORCES], old["force"].double())
    assert_entry(second, new)
    assert second[G.ENERGY].tolist() == [new["energy"]]
    assert torch.equal(second[G.FORCES], new["forces"].double())


def test_is2re_lmdb_targets(tmp_path):
    path = tmp_path / "data.lmdb"
    attributes = [is2re_attributes(seed) for seed in range(3)]
    pickled_lmdb(path, [Data(**a) for a in attributes], length=False)
    structures = load(path, task="is2re", allow_pickle=True)
    assert len(structures) == 3
    for data, stored in zip(structures, attributes):
        assert_entry(data, stored)
        assert data[G.TARGET].shape == (1, 1) and data[G.TARGET].dtype == torch.float64
        assert data[G.TARGET].item() == stored["y_relaxed"].item()
        assert data[G.ENERGY_INIT].tolist() == [stored["y_init"]]
        assert torch.equal(data[G.POS_RELAXED], stored["pos_relaxed"].double())
        assert G.ENERGY not in data and G.FORCES not in data
    with pytest.raises(DataError, match=r"entry 0: no energy or y .*data\.task=is2re"):
        load(path, allow_pickle=True)[0]


def test_pickles_need_the_opt_in(s2ef_lmdb):
    folder, _ = s2ef_lmdb
    with pytest.raises(DataError, match=r"OC20 LMDBs store pickles.*data\.allow_pickle=true"):
        load(folder)
    with pytest.raises(ConfigError, match="energy=total"):
        load(folder, allow_pickle=True, energy="total")


class RunsCode:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("how", ["os.system", "exec", "nested in a tensor storage"])
def test_a_malicious_pickle_never_runs(tmp_path, how):
    marker = tmp_path / "ran"
    command = f"open({str(marker)!r}, 'w').close()"
    payload = {
        "os.system": RunsCode(os.system, f"touch {marker}"),
        "exec": RunsCode(exec, command),
        "nested in a tensor storage": RunsCode(
            torch.storage._load_from_bytes, pickle.dumps(RunsCode(exec, command))
        ),
    }[how]
    attributes = {**s2ef_attributes(0), "pos": payload}
    path = tmp_path / "evil.lmdb"
    pickled_lmdb(path, [Data(**attributes)])
    expected = {
        "os.system": r"refusing to unpickle posix\.system",
        "exec": r"refusing to unpickle builtins\.exec",
        "nested in a tensor storage": r"a tensor storage holds more than tensor data",
    }[how]
    with pytest.raises(DataError, match=rf"evil\.lmdb entry 0: {expected}"):
        load(path, allow_pickle=True)[0]
    assert not marker.exists()


def test_damaged_lmdb_files_are_refused(tmp_path, s2ef_lmdb):
    source_file = s2ef_lmdb[0] / "data.0000.lmdb"
    stored = source_file.read_bytes()
    truncated = tmp_path / "truncated.lmdb"
    truncated.write_bytes(stored[: len(stored) // 2])
    with pytest.raises(DataError, match=rf"{truncated}: truncated LMDB file"):
        load(truncated, allow_pickle=True)
    garbage = tmp_path / "garbage.lmdb"
    garbage.write_bytes(os.urandom(3 * 4096))
    with pytest.raises(DataError, match=rf"{garbage}: not a readable LMDB file"):
        load(garbage, allow_pickle=True)
    short = tmp_path / "short.lmdb"
    write_lmdb(short, {b"0": stored[:0] + b"\x80\x04K\x01.", b"length": pickle.dumps(5)})
    with pytest.raises(DataError, match=rf"{short}: its 'length' says 5 entries but .* holds 1"):
        load(short, allow_pickle=True)
    damaged = tmp_path / "damaged.lmdb"
    write_lmdb(damaged, {b"0": pickle.dumps(Data(**s2ef_attributes(0)))[:-30]})
    with pytest.raises(DataError, match=rf"{damaged} entry 0: not a readable pickle"):
        load(damaged, allow_pickle=True)[0]
    mismatched = tmp_path / "mismatched.lmdb"
    pickled_lmdb(mismatched, [Data(**{**s2ef_attributes(0), "natoms": 3})])
    with pytest.raises(DataError, match=rf"{mismatched} entry 0: natoms is 3 but 13"):
        load(mismatched, allow_pickle=True)[0]


# ---------------------------------------------------------------- laziness


def test_lmdb_reading_is_lazy_and_per_process(s2ef_lmdb, monkeypatch):
    folder, attributes = s2ef_lmdb
    files = sorted(folder.glob("*.lmdb"))
    unpickled = []
    real = oc20_lmdb.unpickle_entry
    monkeypatch.setattr(oc20_lmdb, "unpickle_entry", lambda *a: unpickled.append(a[1]) or real(*a))
    structures = load(folder, allow_pickle=True)
    assert len(structures) == 5 and not unpickled  # counted from 'length', nothing read
    assert not any(lmdb_envs.is_open(f) for f in files)  # and nothing left open
    copy = pickle.loads(pickle.dumps(structures))
    assert len(pickle.dumps(structures)) < 2000
    assert copy[4][G.SID].item() == attributes[4]["sid"]
    assert lmdb_envs.is_open(files[1]) and not lmdb_envs.is_open(files[0])
    assert len(unpickled) == 1
    first = lmdb_envs.environment(files[1])

    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)  # as in a forked worker
    assert not lmdb_envs.is_open(files[1])
    assert structures[3][G.SID].item() == attributes[3]["sid"]
    assert lmdb_envs.environment(files[1]) is not first


def test_a_forked_process_reads_the_same_files(s2ef_lmdb):
    folder, attributes = s2ef_lmdb
    structures = load(folder, allow_pickle=True)
    assert structures[0][G.SID].item() == attributes[0]["sid"]  # the parent holds the file
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.write(write, str(structures[1][G.SID].item()).encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 100).decode()
    os.waitpid(child, 0)
    assert answer == str(attributes[1]["sid"])
    assert structures[2][G.SID].item() == attributes[2]["sid"]


# ---------------------------------------------------------------- aselmdb


def test_aselmdb_rows(tmp_path, raw_folder):
    _, written = raw_folder
    path = tmp_path / "oc20.aselmdb"
    write_aselmdb(path, written)
    assert layout(path) == "aselmdb" and layout(tmp_path) == "aselmdb"
    rows = load(path)
    assert len(rows) == 5
    for data, (atoms, sid, fid, ref) in zip(rows, written):
        assert_frame(data, atoms, sid, fid, atoms.calc.results["energy"] - ref)
    for data, (atoms, sid, fid, _) in zip(load(tmp_path, energy="total"), written):
        assert_frame(data, atoms, sid, fid, atoms.calc.results["energy"])
    assert len(pickle.dumps(rows)) < 2000
    copy = pickle.loads(pickle.dumps(rows))
    assert torch.equal(copy[4][G.FORCES], rows[4][G.FORCES])

    lmdb_envs.close_all()  # py-lmdb: the writer below may not open a file this process reads
    with ase.db.connect(str(path)) as db:
        db.delete([2])
    rows = load(path, energy="total")
    assert len(rows) == 4 and rows[1][G.SID].item() == written[2][1]


def test_an_ase_database_named_lmdb_is_recognised(tmp_path, raw_folder):
    _, written = raw_folder
    path = tmp_path / "data.lmdb"
    with ase.db.connect(str(path), type="aselmdb") as db:
        db.write(written[0][0], data={"sid": 3})
    assert layout(path) == "aselmdb" and layout(tmp_path) == "aselmdb"
    (row,) = load(path, energy="total")
    assert_frame(row, written[0][0], 3, -1, written[0][0].calc.results["energy"])


def test_damaged_aselmdb_rows_are_refused(tmp_path):
    path = tmp_path / "damaged.aselmdb"
    with ase.db.connect(str(path)) as db:
        db.write(slab(0))
        db.write(slab(1))
    env = lmdb.open(str(path), subdir=False)
    with env.begin(write=True) as txn:
        txn.put(b"2", b"not zlib")
    env.close()
    rows = load(path, energy="total")
    assert len(rows) == 2 and rows[0][G.Z].numel() == 13
    with pytest.raises(DataError, match=rf"{path} row id 2: not a readable ASE LMDB value"):
        rows[1]


def test_aselmdb_without_reference_energy(tmp_path):
    path = tmp_path / "total.aselmdb"
    with ase.db.connect(str(path)) as db:
        db.write(slab(0))
    assert load(path, energy="total")[0][G.SID].item() == -1
    with pytest.raises(DataError, match=r"total\.aselmdb row id 1: no ref_energy"):
        load(path)[0]


# ---------------------------------------------------------------- config and datamodule


def test_load_structures_and_fields(raw_folder, s2ef_lmdb):
    folder, written = raw_folder
    structures = load_structures({"format": "oc20", "path": str(folder), "max_structures": 4})
    assert len(structures) == 4 and structures[3][G.SID].item() == written[3][1]
    values = {"format": "oc20", "path": str(s2ef_lmdb[0]), "allow_pickle": True}
    assert len(load_structures(values)) == 5
    assert data_fields({"format": "oc20"}) == (
        *(G.POS, G.Z, G.CELL, G.PBC, G.TAGS, G.FIXED, G.SID, G.FID),
        *(G.ENERGY, G.FORCES),
    )
    assert G.TARGET in data_fields({"format": "oc20", "task": "is2re"})
    assert OC20.target_units(OC20Options(task="is2re")) == [("relaxed_energy", "eV")]
    assert OC20.target_units(OC20Options()) == []
    with pytest.raises(ConfigError, match="task must be one of s2ef, is2re"):
        load_structures({"format": "oc20", "path": str(folder), "task": "s2e"})
    with pytest.raises(ConfigError, match="data.task=is2re reads IS2RE LMDBs"):
        load(folder, task="is2re")
    with pytest.raises(MolfoldError, match="no OC20 files"):
        layout(folder.parent.parent)


def test_shipped_config_parses():
    config = OmegaConf.to_container(OmegaConf.load(CONFIG), resolve=False)
    shared, options = parse_data_config(config)
    assert shared.format == "oc20" and shared.batch_size == 8
    assert options == OC20Options()  # task s2ef, layout auto, no pickles, adsorption energies


def test_download_checks_the_published_md5_and_unpacks(tmp_path, monkeypatch):
    """A local archive served through a file:// URL: unpacked when its MD5 is the listed one,
    refused (and not unpacked) when it is not."""
    import hashlib
    import io
    import tarfile

    from molfold.data.sources import oc20_download

    server = tmp_path / "server"
    server.mkdir()
    payload = b"random1,frame0,-1.5\n"
    with tarfile.open(server / "s2ef_val_id.tar", "w") as tar:
        info = tarfile.TarInfo("s2ef_val_id/0.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    checksum = hashlib.md5((server / "s2ef_val_id.tar").read_bytes()).hexdigest()
    monkeypatch.setitem(oc20_download.OC20_ARCHIVES, "s2ef_val_id", ("s2ef_val_id.tar", checksum))
    root = oc20_download.download_oc20("s2ef_val_id", tmp_path / "oc20", f"file://{server}/")
    assert (root / "s2ef_val_id" / "0.txt").read_bytes() == payload
    monkeypatch.setitem(oc20_download.OC20_ARCHIVES, "s2ef_val_id", ("s2ef_val_id.tar", "0" * 32))
    with pytest.raises(DataError, match="MD5"):
        oc20_download.download_oc20("s2ef_val_id", tmp_path / "oc20", f"file://{server}/")
