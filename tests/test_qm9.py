"""QM9 loading: known values against the source files, units, atomization energies, the
torch-geometric raw layout (written here from qm9pack molecules), errors, cache and split.

Most tests need the optional qm9pack package (``pip install 'molfold[qm9]'``; the dev extra
installs it) and are skipped without it.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import units
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from molfold.data.sources import qm9
from molfold.data.sources.qm9_files import QM9PACK_COLUMNS, SYMBOL_TO_Z
from molfold.errors import DataError
from molfold.units import HARTREE_TO_EV

QM9PACK = qm9.qm9pack_dir()
needs_qm9pack = pytest.mark.skipif(
    QM9PACK is None, reason="qm9pack is not installed: pip install 'molfold[qm9]'"
)

# eV per Hartree, CODATA 2014 (2 R_inf h c / e), independently of ase.units.
HARTREE_IN_EV = 27.21138602
N_SAMPLE = 60  # GDB indices 1..62 minus 58 and 61, which are uncharacterized


@pytest.fixture(scope="module")
def sample() -> dict:
    """The first molecules of qm9pack (every test using it is skipped without qm9pack)."""
    if QM9PACK is None:
        pytest.skip("qm9pack is not installed: pip install 'molfold[qm9]'")
    return qm9.read_qm9(None, max_molecules=N_SAMPLE)


@pytest.fixture(scope="module")
def sample_data(sample) -> list:
    return qm9.to_data_list(sample)


def csv_row(index: int) -> dict:
    """The qm9pack CSV row of GDB molecule ``index`` (in qm9_part1.csv), as strings."""
    with open(QM9PACK / "qm9_part1.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if int(row["Index"]) == index:
                return row
    raise AssertionError(f"molecule {index} not in qm9_part1.csv")


def test_methane_against_source_line(sample_data):
    row = csv_row(1)
    assert row["XYZ_file"] == "dsgdb9nsd_000001.xyz" and row["SMILES"] == "C"
    assert row["InternalEnergy_0K_au"] == "-40.47893"
    methane = sample_data[0]
    assert int(methane.idx) == 1 and methane.smiles == "C"
    assert methane.z.tolist() == [6, 1, 1, 1, 1]
    assert methane.pos[0].tolist() == pytest.approx([-0.0126981359, 1.0858041578, 0.0080009958])
    assert float(methane.U0) == pytest.approx(-40.47893 * HARTREE_IN_EV, rel=1e-8)
    assert float(methane.homo) == pytest.approx(-0.3877 * HARTREE_IN_EV, rel=1e-8)
    assert float(methane.gap) == pytest.approx(0.5048 * HARTREE_IN_EV, rel=1e-8)
    assert float(methane.zpve) == pytest.approx(0.044749 * HARTREE_IN_EV, rel=1e-8)
    assert float(methane.mu) == 0.0  # Debye, unconverted
    assert float(methane.alpha) == pytest.approx(13.21)  # a0^3
    assert float(methane.r2) == pytest.approx(35.3641)  # a0^2
    assert float(methane.Cv) == pytest.approx(6.469)  # cal/mol/K
    assert float(methane.A) == pytest.approx(157.7118)  # GHz
    # the RDKit graph: four C-H bonds, carbon first as in the geometry
    assert sorted(methane.bond_index[:, methane.bond_index[0] == 0][1].tolist()) == [1, 2, 3, 4]


def test_every_target_against_source_line(sample_data):
    """Molecule 40 (qm9pack row 39), every column of the table, in the stated units."""
    row = csv_row(40)
    data = next(d for d in sample_data if int(d.idx) == 40)
    for name, column in QM9PACK_COLUMNS.items():
        expected = float(row[column]) * qm9.TARGETS[name][3]
        assert float(data[name]) == pytest.approx(expected, rel=1e-12), name
        assert qm9.TARGETS[name][1] == ("eV" if qm9.TARGETS[name][2] == "Hartree" else "") or (
            qm9.TARGETS[name][1] == qm9.TARGETS[name][2]
        )
    elements = [SYMBOL_TO_Z[s] for s in eval(row["Elements"])]  # noqa: S307 (test data)
    assert data.z.tolist() == elements


def test_units_and_atomization_of_methane(sample_data):
    assert pytest.approx(HARTREE_IN_EV, rel=1e-9) == HARTREE_TO_EV
    assert units.Hartree == HARTREE_TO_EV  # to the last bit, as ASE converts
    assert qm9.TARGETS["U0"][3] == HARTREE_TO_EV
    # atomref table of Ramakrishnan et al. 2014, Hartree: C -37.846772, H -0.500273 (U0)
    expected = -40.47893 - (-37.846772 + 4 * -0.500273)  # -0.631066 Hartree, about -396 kcal/mol
    assert float(sample_data[0].U0_atom) == pytest.approx(expected * HARTREE_IN_EV, rel=1e-8)
    for key in ("U0", "U", "H", "G"):
        data = sample_data[5]
        refs = sum(qm9.ATOMREF[key][int(k)] for k in data.z) * HARTREE_TO_EV
        assert float(data[f"{key}_atom"]) == pytest.approx(float(data[key]) - refs, rel=1e-10)
    # torch-geometric's atomrefs (eV, CODATA 2018 Hartree) are the same table
    assert qm9.ATOMREF["U0"][6] * 27.211386246 == pytest.approx(-1029.86312267, abs=1e-4)


def test_uncharacterized_indices_are_dropped(sample):
    idx = sample["idx"].tolist()
    assert idx == [i for i in range(1, N_SAMPLE + 3) if i not in (58, 61)]


def test_graph_in_geometry_order(sample_data):
    from rdkit import Chem

    for data in sample_data:
        i, j = data.bond_index
        lengths = (data.pos[i] - data.pos[j]).norm(dim=1)
        assert lengths.max() < 1.8, int(data.idx)  # every bond is a short contact
        if int(data.graph_source) == 1:  # SMILES mapped onto the geometry
            mol = qm9.to_rdkit_mol(data)
            Chem.SanitizeMol(mol)
            expected = Chem.CanonSmiles(data.smiles)
            assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == expected, int(data.idx)
    assert [int(d.graph_source) for d in sample_data] == [1] * len(sample_data)


# --------------------------------------------------------------------------- graph perception


def molecules(*indices: int) -> dict:
    """``{index: (z, pos, smiles)}`` of the given GDB molecules, read from the qm9pack CSVs."""
    wanted, out = set(indices), {}
    for name in qm9.QM9PACK_FILES:
        with open(QM9PACK / name, newline="") as handle:
            for row in csv.DictReader(handle):
                if int(row["Index"]) in wanted:
                    z = [SYMBOL_TO_Z[s] for s in eval(row["Elements"])]  # noqa: S307
                    xyz = row["XYZ_Ang"].replace("[", " ").replace("]", " ").split(",")
                    pos = np.array([float(v) for v in xyz]).reshape(-1, 3)
                    out[int(row["Index"])] = (np.array(z), pos, row["SMILES"])
        if len(out) == len(wanted):
            return out
    raise AssertionError(f"molecules {sorted(wanted - set(out))} not in qm9pack")


def check_valid(mol, index: int) -> None:
    """Sanitizes, neutral, closed-shell, every bond a short contact, standard valences."""
    from rdkit import Chem

    Chem.SanitizeMol(mol)
    assert Chem.GetFormalCharge(mol) == 0, index
    pos = mol.GetConformer().GetPositions()
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        assert np.linalg.norm(pos[i] - pos[j]) < 1.75, (index, i, j)
    valence = {(1, 0): 1, (6, 0): 4, (6, -1): 3, (7, 0): 3, (7, 1): 4, (8, 0): 2, (8, -1): 1}
    for atom in mol.GetAtoms():
        key = (atom.GetAtomicNum(), atom.GetFormalCharge())
        assert atom.GetNumRadicalElectrons() == 0, (index, atom.GetIdx())
        assert atom.GetTotalValence() == valence[key], (index, atom.GetIdx(), key)


# strained cages whose cross-cage contacts RDKit's connectivity bonds (graph_source 3 before):
# bicyclo[1.1.1]pentane (105), 2-oxabicyclo[2.1.1]hexane (650), a bicyclo[1.1.1]pentane diol
# (1152), and cages where a real bond is longer than a cross-cage contact (37494, 66495)
CAGES = (105, 650, 1152, 37494, 66495)


@needs_qm9pack
def test_strained_cages_get_their_smiles():
    from rdkit import Chem

    found = molecules(*CAGES)
    for index in CAGES:
        z, pos, smiles = found[index]
        mol, code = qm9.geometry_graph(z, pos, smiles)
        assert code == 1, index
        check_valid(mol, index)
        assert [a.GetAtomicNum() for a in mol.GetAtoms()] == z.tolist()
        assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == Chem.CanonSmiles(smiles), index
    z, pos, smiles = found[105]
    mol, _ = qm9.geometry_graph(z, pos, smiles)
    heads = [
        a.GetIdx()
        for a in mol.GetAtoms()
        if a.GetAtomicNum() == 6 and a.GetTotalNumHs(includeNeighbors=True) == 1
    ]
    assert len(heads) == 2 and mol.GetBondBetweenAtoms(*heads) is None
    assert 1.8 < np.linalg.norm(pos[heads[0]] - pos[heads[1]]) < 1.95  # a contact, not a bond


@needs_qm9pack
def test_zwitterions_keep_their_charges():
    """GDB 271 ([NH3+]CCC([O-])=O) and 282: the template's charges, on the right atoms; and the
    same graph perceived from the geometry alone (no SMILES), charges included."""
    from rdkit import Chem

    found = molecules(271, 282)
    for index, (z, pos, smiles) in found.items():
        assert "+" in smiles and "-" in smiles
        for template in (smiles, ""):
            mol, code = qm9.geometry_graph(z, pos, template)
            assert code == (1 if template else 2), index
            check_valid(mol, index)
            charges = sorted(a.GetFormalCharge() for a in mol.GetAtoms() if a.GetFormalCharge())
            assert charges == [-1, 1], index
            assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == Chem.CanonSmiles(smiles), index
    z, pos, smiles = found[271]
    mol, _ = qm9.geometry_graph(z, pos, smiles)
    nitrogen = next(a for a in mol.GetAtoms() if a.GetAtomicNum() == 7)
    assert nitrogen.GetFormalCharge() == 1 and nitrogen.GetTotalNumHs(includeNeighbors=True) == 3
    oxygens = [a for a in mol.GetAtoms() if a.GetAtomicNum() == 8]
    assert sorted(a.GetFormalCharge() for a in oxygens) == [-1, 0]
    orders = sorted(str(b.GetBondType()) for a in oxygens for b in a.GetBonds())
    assert orders == ["DOUBLE", "SINGLE"]


def test_geometry_perception_matches_template(sample_data):
    """Without its SMILES every sample molecule gets the same graph from its geometry alone
    (bond orders, charges and aromaticity, e.g. pyrrole, GDB 50)."""
    from rdkit import Chem

    for data in sample_data:
        mol, code = qm9.geometry_graph(data.z.numpy(), data.pos.numpy(), "")
        assert code == 2, int(data.idx)
        check_valid(mol, int(data.idx))
        assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == Chem.CanonSmiles(data.smiles)
    pyrrole = next(d for d in sample_data if int(d.idx) == 50)
    assert pyrrole.smiles == "N1C=CC=C1"
    assert sorted(pyrrole.bond_type.tolist()).count(4) == 2 * 5  # both directions
    mol = qm9.to_rdkit_mol(pyrrole)
    Chem.SanitizeMol(mol)
    assert sum(a.GetIsAromatic() for a in mol.GetAtoms()) == 5


@needs_qm9pack
def test_smiles_that_disagrees_with_the_geometry():
    """GDB 133857: the geometry's bonds differ from its SMILES' (same count, one moved), so the
    graph is perceived from the geometry: a valid neutral hydrocarbon, not the SMILES."""
    from rdkit import Chem

    z, pos, smiles = molecules(133857)[133857]
    assert smiles == "CC1C2C3C4=CCC13C24"
    mol, code = qm9.geometry_graph(z, pos, smiles)
    assert code == 2
    check_valid(mol, 133857)
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == Chem.CanonSmiles("CC1C2C3C4=CCC12C43")
    assert Chem.CanonSmiles(smiles) != Chem.CanonSmiles("CC1C2C3C4=CCC12C43")
    assert Chem.MolToSmiles(mol) == Chem.MolToSmiles(mol, isomericSmiles=False)  # no stereo


def test_fallback_is_connectivity_only():
    """A methyl radical has no closed-shell neutral graph: connectivity with single bonds,
    no charges (graph_source 3), whatever SMILES is given."""
    z = np.array([6, 1, 1, 1])
    angles = np.arange(3) * 2 * np.pi / 3
    pos = np.zeros((4, 3))
    pos[1:, 0], pos[1:, 1] = 1.08 * np.cos(angles), 1.08 * np.sin(angles)
    for smiles in ("", "C", "[CH3]", "not a smiles"):
        mol, code = qm9.geometry_graph(z, pos, smiles)
        assert code == 3, smiles
        assert qm9.GRAPH_SOURCES[code] == "connectivity"
        pairs = sorted(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx())) for b in mol.GetBonds())
        assert pairs == [[0, 1], [0, 2], [0, 3]]
        assert {str(b.GetBondType()) for b in mol.GetBonds()} == {"SINGLE"}
        assert [a.GetFormalCharge() for a in mol.GetAtoms()] == [0, 0, 0, 0]


# --------------------------------------------------------------------------- raw layout


def write_raw_layout(folder: Path, data_list: list, uncharacterized: int = 58) -> None:
    """gdb9.sdf, gdb9.sdf.csv and uncharacterized.txt in the formats of the real files, holding
    the given molecules plus a placeholder for the uncharacterized GDB index."""
    from rdkit import Chem

    header = "mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,"
    header += "u0_atom,u298_atom,h298_atom,g298_atom"
    raw_names = ["A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve"]
    raw_names += ["U0", "U", "H", "G", "Cv"]
    blocks, lines = [], [header]
    entries = sorted([(int(d.idx), d) for d in data_list] + [(uncharacterized, data_list[0])])
    for idx, data in entries:
        mol, _ = qm9.geometry_graph(data.z.numpy(), data.pos.numpy(), data.smiles)
        mol.SetProp("_Name", f"gdb_{idx}")
        blocks.append(Chem.MolToMolBlock(mol) + "$$$$\n")
        values = [float(data[name]) / qm9.TARGETS[name][3] for name in raw_names]
        values += [
            float(data[f"{k}_atom"]) / HARTREE_TO_EV * 627.509 for k in ["U0", "U", "H", "G"]
        ]
        lines.append(f"gdb_{idx}," + ",".join(repr(v) for v in values))
    (folder / "gdb9.sdf").write_text("".join(blocks))
    (folder / "gdb9.sdf.csv").write_text("\n".join(lines) + "\n")
    unchar = ["Uncharacterized molecules of QM9 (test copy)"] + ["header"] * 7
    unchar += ["  Index    GDB17 SMILES    B3LYP SMILES"]
    unchar += [f"  {uncharacterized:7d}   C   C", "-" * 40]
    (folder / "uncharacterized.txt").write_text("\n".join(unchar) + "\n")


@pytest.fixture
def raw_root(tmp_path, sample_data) -> Path:
    folder = tmp_path / "qm9" / "raw"
    folder.mkdir(parents=True)
    write_raw_layout(folder, sample_data[:20])
    return tmp_path / "qm9"


def test_raw_layout_matches_qm9pack(raw_root, sample_data):
    raw = qm9.read_qm9(raw_root)
    assert raw["source"] == "raw"
    assert raw["idx"].tolist() == [int(d.idx) for d in sample_data[:20]]
    for data, expected in zip(qm9.to_data_list(raw), sample_data[:20]):
        assert data.z.tolist() == expected.z.tolist()
        torch.testing.assert_close(data.pos, expected.pos, atol=1e-4, rtol=0)  # molfile: 4 dp
        for name in qm9.TARGET_NAMES:
            assert float(data[name]) == pytest.approx(float(expected[name]), rel=1e-9), name
        assert sorted(map(tuple, data.bond_index.t().tolist())) == sorted(
            map(tuple, expected.bond_index.t().tolist())
        )


def test_raw_layout_one_based_uncharacterized(tmp_path, sample_data):
    """uncharacterized.txt lists 1-based GDB indices: listing 3 drops water (gdb_3), not
    gdb_4 (what a 0-based reading of the same number would drop)."""
    folder = tmp_path / "raw"
    folder.mkdir()
    kept = [d for d in sample_data[:6] if int(d.idx) != 3]
    write_raw_layout(folder, kept, uncharacterized=3)  # gdb_3 is the 3rd block of gdb9.sdf
    raw = qm9.read_qm9(tmp_path)
    assert raw["idx"].tolist() == [1, 2, 4, 5, 6]
    assert qm9.read_uncharacterized(folder / "uncharacterized.txt").tolist() == [3]


def test_source_order_prefers_raw_layout(raw_root, tmp_path):
    assert qm9.read_qm9(raw_root, max_molecules=3)["source"] == "raw"
    assert qm9.read_qm9(tmp_path / "empty", max_molecules=3)["source"] == "qm9pack"


@pytest.mark.parametrize("name", ["gdb9.sdf", "gdb9.sdf.csv"])
def test_truncated_raw_files_raise(raw_root, name):
    path = raw_root / "raw" / name
    text = path.read_text()
    path.write_text(text[: len(text) // 2 + 7])
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        qm9.read_qm9(raw_root)


def test_corrupt_raw_files_raise(raw_root):
    csv_path = raw_root / "raw" / "gdb9.sdf.csv"
    lines = csv_path.read_text().splitlines()
    lines[3] = lines[3].replace(",", ",x", 1)
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="not a number"):
        qm9.read_qm9(raw_root)
    unchar = raw_root / "raw" / "uncharacterized.txt"
    unchar.write_text("\n" * 9 + "  12  C\n  oops\n  14  C\n")
    with pytest.raises(DataError, match="expected a molecule index"):
        qm9.read_uncharacterized(unchar)


@needs_qm9pack
def test_truncated_qm9pack_raises(tmp_path):
    with open(QM9PACK / "qm9_part1.csv", newline="") as handle:
        head = [next(handle) for _ in range(6)]
    head[-1] = head[-1][: len(head[-1]) // 2] + "\n"
    (tmp_path / "qm9_part1.csv").write_text("".join(head))
    for name in qm9.QM9PACK_FILES[1:]:
        (tmp_path / name).write_text(head[0])
    with pytest.raises(DataError, match=r"qm9_part1\.csv:6"):
        qm9.read_qm9pack(tmp_path)
    bad = head[:5]
    bad[1] = bad[1].replace("-40.47893", "-40.4x893")
    (tmp_path / "qm9_part1.csv").write_text("".join(bad))
    with pytest.raises(DataError, match="InternalEnergy_0K_au"):
        qm9.read_qm9pack(tmp_path)


def test_long_csv_fields_are_read_and_the_field_limit_is_restored(tmp_path):
    """A field longer than csv's default limit (131,072 characters) is read; the process-wide
    limit is raised only while the files are read, not at import."""
    default = csv.field_size_limit()
    assert default == 131_072
    header = ["Index", "SMILES", "Elements", "XYZ_Ang", *QM9PACK_COLUMNS.values()]
    xyz = "[[0.0, 0.0, 0.0]" + " " * 200_000 + "]"  # one carbon atom, padded
    row = ["1", "C", "['C']", xyz, *["-40.5" if "Energy" in c else "1.0" for c in header[4:]]]
    with open(tmp_path / qm9.QM9PACK_FILES[0], "w", newline="") as handle:
        csv.writer(handle).writerows([header, row])
    for name in qm9.QM9PACK_FILES[1:]:
        (tmp_path / name).write_text(",".join(header) + "\n")
    tensors = qm9.read_qm9pack(tmp_path)
    assert tensors["idx"].tolist() == [1] and tensors["z"].tolist() == [6]
    assert csv.field_size_limit() == default
    (tmp_path / qm9.QM9PACK_FILES[1]).write_text("")
    with pytest.raises(DataError, match="empty file"):
        qm9.read_qm9pack(tmp_path)
    assert csv.field_size_limit() == default


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory, sample_data) -> dict[str, bytes]:
    """The three raw-layout files of 5 molecules, as bytes."""
    folder = tmp_path_factory.mktemp("raw_bytes")
    write_raw_layout(folder, sample_data[:5])
    return {name: (folder / name).read_bytes() for name in qm9.RAW_FILES}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_garbage_in_any_source_file_raises_data_error(tmp_path_factory, raw_files, data):
    """Random bytes, or a valid file with a random patch, in one raw-layout file or a qm9pack CSV:
    the reader returns consistent molecules or raises DataError, never anything else."""
    layout = data.draw(st.sampled_from(["raw", "qm9pack"]), label="layout")
    folder = tmp_path_factory.mktemp("garbage")
    if layout == "raw":
        files = dict(raw_files)
        victim = data.draw(st.sampled_from(qm9.RAW_FILES), label="file")
    else:
        with open(QM9PACK / "qm9_part1.csv", "rb") as handle:
            files = {"qm9_part1.csv": b"".join(next(handle) for _ in range(4))}
        header = files["qm9_part1.csv"].split(b"\n")[0] + b"\n"
        files.update({name: header for name in qm9.QM9PACK_FILES[1:]})
        victim = "qm9_part1.csv"
    if data.draw(st.booleans(), label="random"):
        files[victim] = data.draw(st.binary(max_size=1024), label="bytes")
    else:
        blob = bytearray(files[victim])
        start = data.draw(st.integers(0, len(blob) - 1), label="start")
        patch = data.draw(st.binary(min_size=1, max_size=16), label="patch")
        blob[start : start + len(patch)] = patch
        files[victim] = bytes(blob)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    try:
        tensors = qm9.read_raw(folder) if layout == "raw" else qm9.read_qm9pack(folder)
    except DataError:
        return
    assert len(tensors["idx"]) == len(tensors["n_atoms"]) > 0
    assert tensors["pos"].shape == (int(tensors["n_atoms"].sum()), 3)
    assert torch.isfinite(tensors["pos"]).all()


# --------------------------------------------------------------------------- cache and split


def test_cache_round_trip(tmp_path, sample):
    path = qm9.cache_path(None, 30, tmp_path)
    assert not path.exists()
    fresh = qm9.load_qm9(max_molecules=30, cache_dir=tmp_path)
    assert sorted(tmp_path.iterdir()) == [path]  # no temporary file left
    start = time.perf_counter()
    cached = qm9.load_qm9(max_molecules=30, cache_dir=tmp_path)
    assert time.perf_counter() - start < 2.0
    assert len(cached) == len(fresh) == 30
    for a, b in zip(cached, fresh):
        assert a.keys() == b.keys()
        for key in a.keys():  # noqa: SIM118 (Data iterates over (key, value) pairs)
            if torch.is_tensor(a[key]):
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key], key
    stored = torch.load(path, weights_only=True)
    assert torch.equal(stored["targets"], sample["targets"][:30])


@needs_qm9pack
def test_corrupt_cache_is_rebuilt(tmp_path):
    path = qm9.cache_path(None, 5, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a torch file")
    data = qm9.load_qm9(max_molecules=5, cache_dir=tmp_path)
    assert [int(d.idx) for d in data] == [1, 2, 3, 4, 5]
    assert torch.load(path, weights_only=True)["version"] == qm9.CACHE_VERSION


def test_default_cache_location(monkeypatch, tmp_path, raw_root):
    monkeypatch.setenv("MOLFOLD_CACHE_DIR", str(tmp_path / "c"))
    assert qm9.cache_path().parent == tmp_path / "c" / "qm9"
    assert qm9.cache_path(raw_root).parent == raw_root / "processed"


@needs_qm9pack
def test_qm9pack_holds_the_characterized_molecules():
    """130,831 rows, GDB indices 1..133,885 with exactly 3,054 missing (fast: CSV only)."""
    indices = []
    for name in qm9.QM9PACK_FILES:
        with open(QM9PACK / name, newline="") as handle:
            reader = csv.reader(handle)
            column = next(reader).index("Index")
            indices += [int(row[column]) for row in reader]
    assert len(indices) == qm9.N_CHARACTERIZED == 130_831
    assert indices == sorted(set(indices)) and indices[0] == 1 and indices[-1] == qm9.N_GDB
    missing = np.setdiff1d(np.arange(1, qm9.N_GDB + 1), indices)
    assert len(missing) == qm9.N_UNCHARACTERIZED and 58 in missing


@pytest.mark.slow
@needs_qm9pack
def test_full_conversion(tmp_path):
    data = qm9.load_qm9(cache_dir=tmp_path)
    assert len(data) == 130_831
    sources = [int(d.graph_source) for d in data]
    assert sources.count(1) >= 130_800 and sources.count(3) == 0
    assert all(int(d.formal_charge.sum()) == 0 for d in data)
