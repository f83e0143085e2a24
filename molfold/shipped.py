"""Files that ship with molfold: the ``data/`` folder of a source checkout, or its copy inside an
installed wheel (``molfold/shipped_data``, see ``pyproject.toml``). Imports nothing heavy."""

from __future__ import annotations

from pathlib import Path

from molfold.errors import MissingFileError

SHIPPED_FOLDERS = (
    Path(__file__).resolve().parents[1] / "data",  # source checkout
    Path(__file__).resolve().parent / "shipped_data",  # installed wheel
)


def shipped_data(name: str) -> str:
    """Path of the shipped dataset or model file (or folder) ``name``, e.g. ``rebind_qm9.pt``."""
    for folder in SHIPPED_FOLDERS:
        if (folder / name).exists():
            return str(folder / name)
    folders = ", ".join(str(f) for f in SHIPPED_FOLDERS)
    raise MissingFileError(f"no shipped file named {name!r} in {folders}")
