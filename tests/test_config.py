"""Structured config sections: conversion, unknown keys, bad values, choices."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from molfold.config import parse, parse_choice
from molfold.errors import ConfigError
from molfold.tasks.optim import SCHEDULERS, Cosine, OptimConfig, Plateau


@dataclass(frozen=True)
class Example:
    count: int
    rate: float = 0.5
    flag: bool = False
    label: str | None = None
    sizes: list[int] = field(default_factory=list)
    size: int | float | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")


def test_values_are_converted_to_the_field_types():
    parsed = parse(
        Example,
        {"count": "3", "rate": "1e-3", "flag": "true", "label": 7, "sizes": ["1", 2], "size": 0.8},
        "example",
    )
    assert parsed == Example(3, 1e-3, True, "7", [1, 2], 0.8)
    assert parse(Example, {"count": 2.0, "size": 12}, "x").size == 12
    assert parse(Example, {"count": 1, "label": None}, "x").label is None


@pytest.mark.parametrize(
    "values, message",
    [
        ({"count": 1, "colour": "red"}, "unknown key example.colour; valid keys: count, flag,"),
        ({"rate": 1.0}, "example: missing key(s) count"),
        ({"count": "three"}, "example.count must be an integer, got 'three'"),
        ({"count": 1.5}, "example.count must be an integer, got 1.5"),
        ({"count": True}, "example.count must be an integer, got True"),
        ({"count": 1, "rate": "fast"}, "example.rate must be a number, got 'fast'"),
        ({"count": 1, "flag": "maybe"}, "example.flag must be true or false, got 'maybe'"),
        ({"count": 1, "sizes": 3}, "example.sizes must be a list, got 3"),
        ({"count": 1, "rate": None}, "example.rate must be set"),
        ({"count": -1}, "example: count must be >= 0, got -1"),
    ],
)
def test_bad_sections_name_the_key(values, message):
    with pytest.raises(ConfigError) as caught:
        parse(Example, values, "example")
    assert message in str(caught.value)


def test_a_choice_is_parsed_by_its_own_schema():
    assert parse_choice(SCHEDULERS, {"name": "cosine", "min_lr": "0"}, "s") == Cosine(min_lr=0.0)
    with pytest.raises(ConfigError, match="unknown key s.patience"):
        parse_choice(SCHEDULERS, {"name": "cosine", "patience": 3}, "s")
    with pytest.raises(ConfigError, match="s.name='adagrad' is not one of cosine"):
        parse_choice(SCHEDULERS, {"name": "adagrad"}, "s")
    with pytest.raises(ConfigError, match="s.name is not set"):
        parse_choice(SCHEDULERS, {}, "s")


def test_optim_section_defaults_and_checks():
    assert OptimConfig.from_dict({}).scheduler == Plateau()
    optim = OptimConfig.from_dict(
        {"name": "adamw", "betas": [0.9, 0.99], "scheduler": {"name": "none"}}
    )
    assert optim.betas == (0.9, 0.99) and optim.scheduler.name == "none"
    with pytest.raises(ConfigError, match="betas must be two numbers"):
        OptimConfig.from_dict({"betas": [0.9]})


def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    """Equiformer's schedule: linear from warmup_lr to lr over the warm-up steps, then a cosine
    half-period to min_lr; checked at its landmarks (start, end of warm-up, half-way, end)."""
    import torch

    from molfold.tasks.optim import configure_optimizer

    parameter = torch.nn.Parameter(torch.zeros(1))
    config = OptimConfig.from_dict(
        {
            "name": "adamw",
            "lr": 5e-4,
            "scheduler": {
                "name": "cosine",
                "min_lr": 1e-6,
                "warmup_fraction": 0.1,
                "warmup_lr": 2e-6,
            },
        }
    )
    scheduler = configure_optimizer([parameter], config, lambda: 100)["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(101):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(2e-6)
    assert rates[5] == pytest.approx(2e-6 + 0.5 * (5e-4 - 2e-6))
    assert rates[10] == pytest.approx(5e-4)
    assert rates[55] == pytest.approx(0.5 * (5e-4 + 1e-6))  # half-way through the 90 cosine steps
    assert rates[100] == pytest.approx(1e-6)
