"""Run configuration: defaults, then a YAML file, then ``--set key=value`` and flags.

The resolved configuration is saved next to the run's results, so every run
can be repeated from its own folder.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading exponent numbers the way YAML 1.2 and people write them.

    YAML 1.1 (PyYAML's) takes a float only with a dot and a signed exponent, so ``1e-3`` and
    ``60e6`` (the README's own ``constraint.max_flops=60e6``) would load as strings and fail
    far from the config, or not at all.
    """


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text: str) -> Any:
    """``text`` as YAML with :class:`ConfigLoader` (exponent numbers are floats)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def load_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    try:
        data = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_sets(config: dict, assignments: Iterable[str]) -> dict:
    """``a.b=value`` assignments; values are parsed as YAML scalars (``1e-3``, ``true``, ``[1, 2]``)."""
    out = copy.deepcopy(config)
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"--set: bad key {key!r}")
        node = out
        for part in parts[:-1]:
            if node.get(part) is None:  # absent, or null in a YAML file: an empty section
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {part!r} is not a section")
        try:
            node[parts[-1]] = parse_yaml(raw)
        except yaml.YAMLError as err:
            reason = " ".join(str(err).split())
            raise ValueError(f"--set {key.strip()}: cannot read {raw!r} as a YAML value ({reason})") from None
    return out


def save_yaml(path: Path, config: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The process id keeps concurrent writers (data-parallel ranks) from renaming each other's half-written file.
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(yaml.safe_dump(_plain(config), sort_keys=False))
    tmp.replace(path)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
