"""molfold.lammps without LAMMPS: reading input scripts, and the per-rank evaluation of a
decomposed periodic system against the whole-cell calculator (the MPI runs are in
test_lammps.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase.build import bulk

from molfold import MolfoldCalculator
from molfold.errors import ConfigError, MissingFileError
from molfold.lammps.evaluation import VIRIAL_ORDER, Box, RankEvaluator, strictly_local
from molfold.lammps.model import species_of_types
from molfold.lammps.script import logical_lines, parse_pair_coeff, parse_pair_style, read_script

from .common import make_potential

SCRIPT = """units metal   # a comment
read_data data.lmp
pair_style molfold ${model} &
    dtype float64
neighbor 1.0 bin
pair_coeff * * Cu O  # types 1 and 2
print \"\"\"
pair_style molfold not.this # inside a string
\"\"\"
run 10
"""


def test_script_is_split_at_the_molfold_lines(tmp_path):
    path = tmp_path / "in.lammps"
    path.write_text(SCRIPT)
    script = read_script(path)
    assert script.pair_style.number == 3
    assert script.pair_style.words == ["pair_style", "molfold", "${model}", "dtype", "float64"]
    assert script.pair_coeff.number == 6
    assert script.pair_coeff.words == ["pair_coeff", "*", "*", "Cu", "O"]
    assert "".join(script.before) == "units metal   # a comment\nread_data data.lmp\n"
    assert "".join(script.between) == "neighbor 1.0 bin\n"
    assert "".join(script.after).startswith('print """')
    assert script.after[-1] == "run 10\n"


def test_logical_lines_keep_strings_and_continuations():
    lines = logical_lines(SCRIPT.splitlines(keepends=True))
    assert [first for first, _, _ in lines] == [0, 1, 2, 4, 5, 6, 9]
    assert lines[2][:2] == (2, 3)
    assert "not.this # inside a string" in lines[5][2]


@pytest.mark.parametrize(
    "text, message",
    [
        ("units metal\nrun 0\n", "no `pair_style molfold MODEL` line"),
        ("pair_style molfold m.ckpt\nrun 0\n", ":1: `pair_style molfold` needs a `pair_coeff"),
        ("pair_style hybrid/overlay molfold m zbl 1 2\n", ":1: pair_style hybrid/overlay with"),
        ("pair_style molfold a\npair_style molfold b\n", ":2: a second `pair_style molfold`"),
        ("pair_style molfold a\npair_style eam\npair_coeff * * Cu\n", ":2: pair_style eam repl"),
    ],
)
def test_bad_scripts_name_the_line(tmp_path, text, message):
    path = tmp_path / "in.bad"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace("(", r"\(")):
        read_script(path)
    with pytest.raises(MissingFileError, match="does not exist"):
        read_script(tmp_path / "in.missing")


def test_pair_style_and_pair_coeff_options():
    style = parse_pair_style(["pair_style", "molfold", "m.ckpt", "dtype", "float64"], "in:1")
    assert (style.model, style.dtype, style.device) == ("m.ckpt", "float64", None)
    for words, message in [
        (["pair_style", "molfold"], "needs the model file"),
        (["pair_style", "molfold", "m", "dtype"], "'dtype' of pair_style molfold has no value"),
        (["pair_style", "molfold", "m", "dtype", "half"], "dtype must be one of float32"),
        (["pair_style", "molfold", "m", "skin", "2"], "unknown pair_style molfold keyword 'skin'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_pair_style(words, "in:1")
    assert parse_pair_coeff(["pair_coeff", "*", "*", "Cu", "O"], 2, "in:5") == ["Cu", "O"]
    with pytest.raises(ConfigError, match="in:5: pair_coeff names 1 elements for 2 atom types"):
        parse_pair_coeff(["pair_coeff", "*", "*", "Cu"], 2, "in:5")
    with pytest.raises(ConfigError, match="maps every atom type at once"):
        parse_pair_coeff(["pair_coeff", "1", "1", "Cu"], 1, "in:5")


def test_elements_of_types():
    potential = make_potential([8, 29])
    assert species_of_types(potential, ["Cu", "O", "Cu"], "in:5") == [29, 8, 29]
    with pytest.raises(ConfigError, match="in:5: the model was not trained on Fe; it knows O, Cu"):
        species_of_types(potential, ["Cu", "Fe"], "in:5")
    with pytest.raises(ConfigError, match="'Xx' in pair_coeff is not an element symbol"):
        species_of_types(potential, ["Xx"], "in:5")


def decomposed(atoms, slabs: int, images: int = 2):
    """Each 'rank' owns the atoms whose fractional coordinate along a lies in its slab, and sees
    every periodic image of every atom within ``images`` cells as a ghost (more than the
    2 r_max shell LAMMPS would give: the evaluation must ignore what it does not need)."""
    cell = np.asarray(atoms.cell)
    fractional = atoms.get_scaled_positions(wrap=True)
    wrapped = fractional @ cell
    shifts = np.array(list(itertools.product(range(-images, images + 1), repeat=3)))
    for rank in range(slabs):
        own = np.flatnonzero((fractional[:, 0] * slabs).astype(int) == rank)
        everything = (wrapped[None, :, :] + (shifts @ cell)[:, None, :]).reshape(-1, 3)
        atom_of = np.tile(np.arange(len(atoms)), len(shifts))
        is_original = np.repeat((shifts == 0).all(axis=1), len(atoms))
        ghosts = ~(is_original & np.isin(atom_of, own))
        yield own, np.concatenate([wrapped[own], everything[ghosts]]), atom_of[ghosts]


@pytest.mark.parametrize("slabs", [1, 3])
@pytest.mark.parametrize("fold", [False, True])
def test_domains_add_up_to_the_whole_cell(float64, slabs, fold):
    """Per-rank energies, forces and virials of a triclinic Cu/O cell cut into slabs thinner
    than r_max equal the ASE calculator's energy, forces and -V * stress: with every ghost in
    the graph, or with the images along the unsplit directions folded into a periodic graph
    (b and c; a too for a single slab)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (3, 2, 2)
    atoms.set_cell(np.asarray(atoms.cell) + [[0, 0, 0], [0.6, 0, 0], [0.4, -0.5, 0]], True)
    atoms.numbers[::7] = 8
    atoms.rattle(0.1, seed=3)
    potential = make_potential([8, 29], r_max=4.0).double()
    assert strictly_local(potential)
    atoms.calc = MolfoldCalculator(potential)
    stress = atoms.get_stress(voigt=False)
    expected_virial = -atoms.get_volume() * np.array([stress[a, b] for a, b in VIRIAL_ORDER])
    types_of = np.where(atoms.numbers == 29, 1, 2)
    evaluator = RankEvaluator(potential, np.array([0, 29, 8]))
    energy, virial, forces = 0.0, np.zeros(6), np.full((len(atoms), 3), np.nan)
    for own, positions, ghost_atoms in decomposed(atoms, slabs):
        types = np.concatenate([types_of[own], types_of[ghost_atoms]])
        box = Box(np.asarray(atoms.cell), np.zeros(3), np.array([slabs == 1, True, True]))
        tags = np.concatenate([own, ghost_atoms])
        if fold:
            result = evaluator.domain(positions, types, len(own), box, tags)
        else:
            result = evaluator.domain(positions, types, len(own))
        energy, virial = energy + result.energy, virial + result.virial
        forces[own] = result.forces
        np.testing.assert_allclose(result.atom_virials.sum(0), result.virial, atol=1e-12)
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    scale = np.abs(atoms.get_forces()).max()
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-11 * scale)
    np.testing.assert_allclose(virial, expected_virial, rtol=0, atol=1e-11 * abs(virial).max())
    whole = evaluator.whole(atoms.positions, types_of, np.asarray(atoms.cell), atoms.pbc)
    assert whole.energy == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(whole.forces, atoms.get_forces(), atol=1e-11 * scale)
    np.testing.assert_allclose(whole.atom_energies, atoms.get_potential_energies(), atol=1e-12)
    np.testing.assert_allclose(whole.virial, expected_virial, atol=1e-11 * abs(virial).max())


class TwoRanks:
    """A stand-in communicator for rank 0 of two, whose rank 1 reports ``other``."""

    size = 2

    def __init__(self, other: str | None) -> None:
        self.other = other

    def allgather(self, message):
        return [message, self.other]


def test_errors_on_one_rank_stop_all_ranks():
    from molfold.lammps.driver import agree

    assert agree(TwoRanks(None), lambda: 42) == 42
    with pytest.raises(ConfigError, match="^rank 1: checkpoint m.ckpt does not exist$"):
        agree(TwoRanks("checkpoint m.ckpt does not exist"), lambda: 42)

    def broken():
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(ConfigError, match="^rank 0: RuntimeError: CUDA out of memory$"):
        agree(TwoRanks(None), broken)
    with pytest.raises(ConfigError, match="^RuntimeError: CUDA out of memory$"):
        agree(TwoRanks("RuntimeError: CUDA out of memory"), broken)
