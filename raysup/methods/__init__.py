"""The methods, by CLI name, and building a validated TrainConfig for one of them."""
from __future__ import annotations

from typing import Any

from raysup.config import ConfigError, TrainConfig, from_dict, nested_update
from raysup.methods import cpfs, cpfs_direct, cross_and_learn, gdt, supervised, xdc
from raysup.methods.base import MethodModule

METHODS: dict[str, MethodModule] = {
    "cpfs": cpfs,
    "cpfs_direct": cpfs_direct,
    "cross_and_learn": cross_and_learn,
    "gdt": gdt,
    "supervised": supervised,
    "xdc": xdc,
}


def method_module(name: str) -> MethodModule:
    if name not in METHODS:
        raise ConfigError(f"method: unknown {name!r} (known: {', '.join(sorted(METHODS))})")
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
