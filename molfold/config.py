"""Structured configs: every config section is a dataclass, and every key a user sets is read.

Hydra composes ``configs/*.yaml`` and the command-line overrides into a plain dict
(:mod:`molfold.cli`); the code that takes a section turns it into its dataclass with
:func:`parse`, which

* rejects a key the dataclass does not have, naming it and the valid keys
  (``unknown key optim.foo; valid keys: betas, lr, name, ...``);
* converts values to the field's type (``"1e-3"`` -> 1e-3) and rejects those that do not convert
  (``optim.lr must be a number, got 'abc'``);
* reports the ``ValueError`` of the dataclass's own ``__post_init__`` checks as a
  :class:`~molfold.errors.ConfigError` that names the section.

Sections that choose among alternatives (a scheduler, a task, a data format) carry a ``name`` and
are parsed by the dataclass registered under that name (:func:`parse_choice`), so that a key one
choice reads and another ignores cannot slip through.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from molfold.errors import ConfigError

T = TypeVar("T")


def _convert(value: Any, kind: Any, where: str) -> Any:
    """``value`` as the type annotation ``kind`` says, or ConfigError."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if kind is Any:
        return value
    if value is None:
        raise ConfigError(f"{where} must be set (got null)")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item,) = typing.get_args(kind)[:1] or (Any,)
        converted = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict or kind is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
        if not number.is_integer():
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return int(number)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if kind is str:
        if isinstance(value, (dict, list, tuple)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"config fields of type {kind} are not supported ({where})")


def parse(schema: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """The dataclass ``schema`` filled from ``values`` (see the module docstring).

    ``where`` is the section's dotted path in the config (``optim``, ``data``), used in messages.
    """
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        keys = ", ".join(f"{where}.{k}" if where else k for k in unknown)
        raise ConfigError(
            f"unknown key{'s' * (len(unknown) > 1)} {keys}; valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _convert(value, hints[name], f"{where}.{name}" if where else name)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where or 'config'}: missing key(s) {', '.join(missing)}")
    try:
        return schema(**kwargs)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}" if where else str(error)) from None


def parse_choice(choices: Mapping[str, type[T]], values: Mapping[str, Any] | None, where: str) -> T:
    """Parse a section whose ``name`` key picks its dataclass among ``choices``."""
    values = dict(values or {})
    name = values.get("name")
    if name not in choices:
        raise ConfigError(
            f"{where}.name={name!r} is not one of {', '.join(sorted(choices))}"
            if name is not None
            else f"{where}.name is not set; choose one of {', '.join(sorted(choices))}"
        )
    return parse(choices[name], values, where)
