"""The methods, by CLI name, and building a validated TrainConfig for one of them.

Methods outside raysup join through the ``raysup.methods`` entry point group of their package
(``[project.entry-points."raysup.methods"] mine = "my_package.my_method"``), found in every
process that looks a name up (the CLI, Tune trials, Ray Train workers), or, within one
process, through :func:`register`. docs/adding-a-method.md shows both.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from raysup.config import ConfigError, TrainConfig, from_dict, nested_update
from raysup.methods import cpfs, cpfs_direct, cross_and_learn, gdt, supervised, xdc
from raysup.methods.base import MethodModule

ENTRY_POINTS = "raysup.methods"

METHODS: dict[str, MethodModule] = {
    "cpfs": cpfs,
    "cpfs_direct": cpfs_direct,
    "cross_and_learn": cross_and_learn,
    "gdt": gdt,
    "supervised": supervised,
    "xdc": xdc,
}


def register(name: str, module: ModuleType | str) -> None:
    """Add a method (a module, or its import path) under ``name`` in this process."""
    if name in METHODS and METHODS[name] is not module:
        raise ConfigError(f"method: {name!r} is already a method ({METHODS[name].__name__})")
    METHODS[name] = importlib.import_module(module) if isinstance(module, str) else module


def method_names() -> list[str]:
    """Every method's name: raysup's, registered ones and the installed packages' entry points."""
    return sorted(set(METHODS) | {ep.name for ep in entry_points(group=ENTRY_POINTS)})


def method_module(name: str) -> MethodModule:
    if name not in METHODS:
        found = [ep for ep in entry_points(group=ENTRY_POINTS) if ep.name == name]
        if not found:
            raise ConfigError(f"method: unknown {name!r} (known: {', '.join(method_names())})")
        METHODS[name] = found[0].load()
    return METHODS[name]


def make_config(name: str, preset: str = "tiny", overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The method's defaults, then its preset, then ``overrides`` (``{"optim.lr": "0.1"}``)."""
    mod = method_module(name)
    for key in ("method_name", "preset"):
        if any(k == key or k.startswith(f"{key}.") for k in overrides or {}):
            raise ConfigError(f"{key}: set by the command (the method argument, --preset), not by --set")
    if preset not in mod.PRESETS:
        raise ConfigError(f"preset: expected one of {sorted(mod.PRESETS)}, got {preset!r}")
    d = nested_update({"method_name": name, "preset": preset, "method": {}}, mod.PRESETS[preset])
    d = nested_update(d, overrides or {})
    return load_config(d)


def load_config(d: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from its nested dict form (as saved in checkpoints and config.json)."""
    d = dict(d)
    mod = method_module(d.get("method_name", ""))
    method = d.pop("method", None) or {}
    if not isinstance(method, dict):
        raise ConfigError(f"method: a section of method settings (--set method.<field>=value), got {method!r}")
    method_cfg = from_dict(mod.Config, method, "method")
    return from_dict(TrainConfig, {**d, "method": method_cfg})
