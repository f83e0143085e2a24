"""A LAMMPS input script with molfold's two lines, as a LAMMPS user writes them::

    pair_style  molfold  model.ckpt  [dtype float64]  [device cuda]
    pair_coeff  * *  Cu O

like ``pair_style allegro`` / ``pair_coeff * * model.pth Cu O``. :func:`read_script` splits the
script at these lines: the parts between them go to LAMMPS unchanged, the two lines are carried out
by :mod:`molfold.lammps.driver` (a zero pair style whose cutoff sets the ghost shell, then a
``fix external`` that adds molfold's energy, forces and virial).

LAMMPS's own syntax is kept: ``#`` comments, ``&`` continuation lines, triple-quoted strings,
``${name}`` / ``$x`` variables (expanded by LAMMPS itself when the line is reached). The two molfold
lines must be in the main script, once each and outside loops (``label`` / ``jump``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from molfold.errors import ConfigError, MissingFileError

PAIR_KEYWORDS = {"dtype": ("float32", "float64"), "device": None}
"""``pair_style molfold MODEL`` keywords and their allowed values (None: any)."""


@dataclass
class Line:
    """One logical LAMMPS command: ``text`` without comment or continuations, starting on
    physical line ``number`` (1-based) of the script."""

    number: int
    text: str

    @property
    def words(self) -> list[str]:
        return self.text.split()


@dataclass
class Script:
    """A script split at the molfold lines: ``before`` (up to ``pair_style molfold``),
    ``between`` (up to ``pair_coeff``) and ``after``, each a list of physical lines for LAMMPS."""

    path: Path
    pair_style: Line
    pair_coeff: Line
    before: list[str] = field(default_factory=list)
    between: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)

    def where(self, line: Line) -> str:
        return f"{self.path}:{line.number}"


@dataclass
class PairStyle:
    """``pair_style molfold MODEL [dtype D] [device X]`` after variable expansion."""

    model: str
    dtype: str | None = None
    device: str | None = None


def logical_lines(lines: list[str]) -> list[tuple[int, int, str]]:
    """(first, last, text) of each command: physical lines ``first..last`` (0-based), ``&``
    continuations joined, ``#`` comments (outside quotes) dropped."""
    commands, start, parts, in_triple = [], 0, [], False
    for number, raw in enumerate(lines):
        if not parts:
            start = number
        text = raw.rstrip("\n")
        if in_triple or text.count('"""') % 2 == 1:
            in_triple = in_triple != (text.count('"""') % 2 == 1)
            parts.append(text)
            if not in_triple:
                commands.append((start, number, " ".join(parts)))
                parts = []
            continue
        text = _strip_comment(text)
        if text.rstrip().endswith("&"):
            parts.append(text.rstrip()[:-1])
            continue
        parts.append(text)
        commands.append((start, number, " ".join(parts).strip()))
        parts = []
    if parts:
        commands.append((start, len(lines) - 1, " ".join(parts).strip()))
    return commands


def _strip_comment(text: str) -> str:
    """``text`` up to a ``#`` that is not inside single or double quotes."""
    quote = None
    for k, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#":
            return text[:k]
    return text


def read_script(path: str | Path) -> Script:
    """Split the LAMMPS input ``path`` at its ``pair_style molfold`` and ``pair_coeff`` lines.

    ConfigError, naming the file and line, when there is no ``pair_style molfold`` or more than
    one, when no ``pair_coeff`` follows it, or when molfold is combined with another pair style.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"LAMMPS input script {path} does not exist")
    lines = path.read_text().splitlines(keepends=True)
    style, coeff = None, None
    for first, last, text in logical_lines(lines):
        words = text.split()
        if not words:
            continue
        where = f"{path}:{first + 1}"
        if words[0] == "pair_style" and "molfold" in words[1:]:
            if words[1] != "molfold":
                raise ConfigError(
                    f"{where}: pair_style {words[1]} with molfold is not supported: molfold must "
                    "be the only pair style (`pair_style molfold MODEL`)"
                )
            if style is not None:
                raise ConfigError(
                    f"{where}: a second `pair_style molfold` (the first is on line "
                    f"{style[2].number}); molfold lammps runs one molfold model per script"
                )
            style = (first, last, Line(first + 1, text))
        elif words[0] == "pair_style" and style is not None and coeff is None:
            raise ConfigError(f"{where}: pair_style {words[1]} replaces `pair_style molfold`")
        elif words[0] == "pair_coeff" and style is not None and coeff is None:
            coeff = (first, last, Line(first + 1, text))
    if style is None:
        raise ConfigError(
            f"{path}: no `pair_style molfold MODEL` line; molfold lammps runs a molfold model "
            "given as `pair_style molfold model.ckpt` and `pair_coeff * * <element per type>`"
        )
    if coeff is None:
        raise ConfigError(
            f"{path}:{style[2].number}: `pair_style molfold` needs a `pair_coeff * * <element per "
            "atom type>` line after it"
        )
    return Script(
        path=path,
        pair_style=style[2],
        pair_coeff=coeff[2],
        before=lines[: style[0]],
        between=lines[style[1] + 1 : coeff[0]],
        after=lines[coeff[1] + 1 :],
    )


def parse_pair_style(words: list[str], where: str) -> PairStyle:
    """``pair_style molfold MODEL [keyword value ...]`` (expanded) as a :class:`PairStyle`."""
    if len(words) < 3:
        raise ConfigError(f"{where}: `pair_style molfold` needs the model file: pair_style molfold "
                          "model.ckpt")  # fmt: skip
    options = words[3:]
    if len(options) % 2:
        raise ConfigError(f"{where}: keyword {options[-1]!r} of pair_style molfold has no value")
    style = PairStyle(model=words[2])
    for key, value in zip(options[::2], options[1::2]):
        if key not in PAIR_KEYWORDS:
            raise ConfigError(
                f"{where}: unknown pair_style molfold keyword {key!r}; known: "
                f"{', '.join(PAIR_KEYWORDS)}"
            )
        allowed = PAIR_KEYWORDS[key]
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{where}: {key} must be one of {', '.join(allowed)}, got {value!r}")
        setattr(style, key, value)
    return style


def parse_pair_coeff(words: list[str], ntypes: int, where: str) -> list[str]:
    """The element symbol of each LAMMPS atom type from ``pair_coeff * * El1 El2 ...``."""
    if words[1:3] != ["*", "*"]:
        raise ConfigError(
            f"{where}: molfold's pair_coeff maps every atom type at once: pair_coeff * * "
            f"<element of type 1> ... <element of type {ntypes}>"
        )
    elements = words[3:]
    if len(elements) != ntypes:
        raise ConfigError(
            f"{where}: pair_coeff names {len(elements)} elements for {ntypes} atom types; give "
            "one element symbol per type, in type order"
        )
    return elements
