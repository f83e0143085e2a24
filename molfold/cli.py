"""The ``molfold`` command: ``molfold <command> key=value ...``.

Hydra lives here and nowhere else: overrides are composed with the YAML files in ``configs/``
into a plain dict, which the training and evaluation code take as their only input.
Commands: ``train`` (configs/train.yaml), ``eval`` (configs/eval.yaml), ``predict``
(configs/predict.yaml), ``data inspect`` (configs/data_inspect.yaml), ``export``
(configs/export.yaml); ``lammps`` takes LAMMPS's
own command line instead (:mod:`molfold.lammps.driver`).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

from molfold.errors import ConfigError, MolfoldError

USAGE = """usage: molfold <command> [key=value ...]

commands:
  train   train a model          molfold train model=allegro data=md17 trainer.max_epochs=10
  eval    evaluate a checkpoint  molfold eval ckpt=runs/x/checkpoints/best.ckpt data.path=file.npz
  predict conformers from SMILES molfold predict smiles="CC(=O)Nc1ccc(O)cc1" output=out.sdf
  data    inspect a dataset      molfold data inspect data=ase data.path=f.extxyz output=s.json
  export  compile a potential    molfold export ckpt=runs/x/checkpoints/best.ckpt output=m.pt2
  lammps  run a LAMMPS script    mpirun -np 4 molfold lammps in.lammps -var T 300
          (LAMMPS options, not key=value; see molfold.lammps.driver)

Config groups and defaults live in {configs}; `molfold <command> --cfg` prints the composed config.
"""


def config_dir() -> Path:
    """``configs/`` of a source checkout, or the copy inside an installed wheel."""
    for candidate in (Path(__file__).parent / "configs", Path(__file__).parents[1] / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise ConfigError("molfold's configs/ folder was not found next to the package")


def _register_resolvers() -> None:
    """``${shipped_data:NAME}``: a file that ships with molfold; ``${statistics:NAME}`` is kept
    as written, to be resolved by :func:`molfold.train.run.train` from the training split."""
    from omegaconf import OmegaConf

    from molfold.shipped import shipped_data

    OmegaConf.register_new_resolver("shipped_data", shipped_data, replace=True)
    OmegaConf.register_new_resolver(
        "statistics", lambda name: "${statistics:" + name + "}", replace=True
    )


def _group_overrides(overrides: list[str], folder: Path) -> list[str]:
    """Let ``a.b=option`` choose a config group option where ``configs/a/b/option.yaml`` exists
    (``optim.scheduler=cosine`` is ``optim/scheduler=cosine``): the whole section is swapped, so
    no key of the previous option is left behind."""
    result = []
    for override in overrides:
        key, _, value = override.partition("=")
        group = folder.joinpath(*key.split("."))
        if "." in key and not key.startswith(("+", "~")) and group.is_dir():
            options = sorted(p.stem for p in group.glob("*.yaml"))
            if value not in options:
                raise ConfigError(f"{key}={value!r} is not one of {', '.join(options)}")
            override = f"{key.replace('.', '/')}={value}"
        result.append(override)
    return result


def _trainer_overrides(overrides: list[str]) -> list[str]:
    """Let ``trainer.<any Trainer argument>=value`` set keys whether the YAML lists them or not."""
    from lightning import Trainer

    allowed = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    result = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.startswith("trainer."):
            name = key.split(".", 2)[1]
            if name not in allowed:
                raise ConfigError(f"trainer.{name} is not a Lightning Trainer argument")
            if not override.startswith(("+", "~")):
                override = "++" + override  # Hydra: add the key, or override it if present
        result.append(override)
    return result


def _task_override(command: str, config: Any, overrides: list[str]) -> str | None:
    """``task=<name>`` when the model's kinds and the data pick another task than the composed
    one (:func:`molfold.tasks.selection.task_for_data`: Equiformer on MD17 is a potential, on QM9
    targets a property model), unless the command line names the task."""
    if command != "train" or any(o.split("=", 1)[0].lstrip("+~") == "task" for o in overrides):
        return None
    from omegaconf import OmegaConf

    from molfold.tasks.selection import task_for_data

    plain = OmegaConf.to_container(config, resolve=True)
    chosen = task_for_data(plain["model"]["name"], plain["data"]).name
    return None if chosen == plain["task"]["name"] else f"task={chosen}"


RAW_KEYS = {"predict": ("smiles", "name")}
"""Keys whose values are taken verbatim, not parsed by Hydra: SMILES hold ``()=#[]``."""


def compose(command: str, overrides: list[str]) -> dict[str, Any]:
    """The composed, resolved config of ``command`` as a plain dict."""
    raw = {}
    for key in RAW_KEYS.get(command, ()):
        for override in [o for o in overrides if o.startswith(f"{key}=")]:
            raw[key] = override.split("=", 1)[1]
            overrides = [o for o in overrides if o is not override]
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register_resolvers()
    folder = config_dir()
    if command == "train":
        overrides = _group_overrides(_trainer_overrides(overrides), folder)
    try:
        with initialize_config_dir(str(folder), version_base=None):
            # first without task keys, which only the task the data picks may have
            first = [o for o in overrides if not o.lstrip("+~").startswith("task.")]
            config = hydra_compose(command, overrides=first)
            task = _task_override(command, config, overrides)
            if task is not None or len(first) < len(overrides):
                config = hydra_compose(command, overrides=[*overrides, *([task] if task else [])])
        return {**OmegaConf.to_container(config, resolve=True, throw_on_missing=True), **raw}
    except (HydraException, OmegaConfBaseException) as error:
        message = str(error).split("\n")[0]
        shown = command.replace("_", " ")  # data_inspect: `molfold data inspect`
        raise ConfigError(f"bad configuration for `molfold {shown}`: {message}") from error


DATA_SUBCOMMANDS = ("inspect",)
"""``molfold data <subcommand>``: each composes configs/data_<subcommand>.yaml."""


def _config_name(command: str, overrides: list[str]) -> tuple[str, list[str]]:
    """The config that ``command`` composes and its overrides: ``data inspect k=v`` composes
    ``data_inspect`` with ``k=v``; ConfigError for a missing or unknown subcommand."""
    if command != "data":
        return command, overrides
    if not overrides or overrides[0] not in DATA_SUBCOMMANDS:
        given = f"unknown subcommand {overrides[0]!r}" if overrides else "no subcommand given"
        raise ConfigError(
            f"{given}; usage: molfold data {'|'.join(DATA_SUBCOMMANDS)} data=<group> "
            "data.path=... [output=FILE.json]"
        )
    return f"data_{overrides[0]}", overrides[1:]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(configs=config_dir()))
        return 0
    command, overrides = argv[0], argv[1:]
    if command == "lammps":  # LAMMPS's own command line, no Hydra
        from molfold.lammps.driver import main as lammps_main

        return lammps_main(overrides)
    if command not in ("train", "eval", "predict", "data", "export"):
        print(f"molfold: unknown command {command!r}\n\n" + USAGE.format(configs=config_dir()))
        return 2
    try:
        name, overrides = _config_name(command, overrides)
        if "--cfg" in overrides:
            import yaml

            config = compose(name, [o for o in overrides if o != "--cfg"])
            print(yaml.safe_dump(config, sort_keys=False))
            return 0
        config = compose(name, overrides)
        if command == "data":
            from molfold.data.inspect import run

            run(config)
        elif command == "train":
            from molfold.train.run import train

            train(config)
        elif command == "export":
            from molfold.compiled.export import run_export

            run_export(config)
        elif command == "predict":
            from molfold.conformers.command import predict_to_sdf

            return 1 if predict_to_sdf(config) else 0
        else:
            from molfold.train.run import evaluate

            evaluate(config)
    except MolfoldError as error:
        print(f"molfold {command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"molfold {command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
