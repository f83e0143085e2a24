"""The package's shape: no import cycles, nothing imports the package root, files under 400
lines, no import-time global side effects; units and atomic writes have one home each."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ase.units
import pytest

import molfold.units as units
from molfold.io import atomic_write

PACKAGE = Path(__file__).resolve().parents[1] / "molfold"


def _imports() -> dict[str, set[str]]:
    """Module name -> molfold modules it imports (at any depth of the file)."""
    modules = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = file
    graph = {}
    for name, file in modules.items():
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                found = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in found:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if module.startswith(target + "."):  # a module importing its own package's face
                continue
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target] if target in path else [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_nothing_below_imports_the_package_root():
    offenders = [m for m, targets in _imports().items() if "molfold" in targets and m != "molfold"]
    assert offenders in ([], ["molfold.cli"]), offenders


def test_files_stay_under_400_lines():
    long = {
        str(f): n for f in PACKAGE.rglob("*.py") if (n := len(f.read_text().splitlines())) > 400
    }
    assert not long


def test_importing_molfold_modules_changes_no_global_state():
    code = (
        "import csv, matplotlib\n"
        "limit, backend = csv.field_size_limit(), matplotlib.get_backend()\n"
        "import molfold.data.sources.qm9, molfold.train.plots, molfold.train.run, molfold.cli\n"
        "assert csv.field_size_limit() == limit, 'csv.field_size_limit changed'\n"
        "assert matplotlib.get_backend() == backend, 'matplotlib backend changed'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_unit_table_matches_codata_2014_through_ase():
    codata_2014 = ase.units.create_units("2014")
    assert pytest.approx(codata_2014["Hartree"], rel=1e-15) == units.HARTREE_TO_EV
    assert pytest.approx(codata_2014["Bohr"], rel=1e-15) == units.BOHR_TO_ANGSTROM
    kcal = codata_2014["kcal"] / codata_2014["mol"]
    assert pytest.approx(kcal, rel=1e-15) == units.KCAL_PER_MOL_TO_EV
    assert pytest.approx(27.211386, abs=1e-6) == units.HARTREE_TO_EV  # CODATA 2014 by hand
    assert pytest.approx(0.0433641, abs=1e-7) == units.KCAL_PER_MOL_TO_EV


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out" / "file.txt"
    atomic_write(target, "old")

    def failing(file):
        file.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"


def test_test_modules_do_not_import_each_other():
    tests = Path(__file__).resolve().parent
    offenders = []
    for file in tests.glob("test_*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                ("test_", "tests.test_")
            ):
                offenders.append(f"{file.name} imports {node.module}")
    assert not offenders
