"""Frozen dataclass configs: strict ``from_dict`` and ``--set a.b=value`` overrides.

Every error names the offending field with its dotted path, e.g.
``method.k: expected int, got 'many'`` or ``unknown field 'optim.lrr'``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A config value or key is invalid; the message starts with the field path."""


def _bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    return {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}.get(v.strip().lower()) if isinstance(v, str) else None


def _int(v: Any) -> int | None:
    if isinstance(v, str) and v.strip().lstrip("+-").isdigit():
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _float(v: Any) -> float | None:
    try:
        f = float(v) if isinstance(v, (int, float, str)) and not isinstance(v, bool) else None
    except ValueError:
        return None
    return f if f is not None and math.isfinite(f) else None


# scalar field type → (what the error says it expected, parser returning None when it cannot)
SCALARS = {bool: ("bool", _bool), int: ("int", _int), float: ("a finite float", _float), str: ("str", lambda v: v if isinstance(v, str) else None)}


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Return ``value`` converted to ``tp`` (strings from the CLI are parsed)."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):  # X | None, or float | Literal[...]
        if type(None) in args and (value is None or str(value).lower() in ("none", "null")):
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(" or ".join(errors))
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{path}: expected one of {list(args)}, got {value!r}")
    if origin is tuple:  # tuple[X, ...] from a list or "a,b,c"
        items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0] if args else Any, f"{path}[{i}]") for i, v in enumerate(items))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return from_dict(tp, value, path)
    if tp not in SCALARS:
        raise ConfigError(f"{path}: unsupported field type {getattr(tp, '__name__', tp)}")
    expected, parse = SCALARS[tp]
    result = parse(value)
    if result is None:
        raise ConfigError(f"{path}: expected {expected}, got {value!r}")
    return result


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad values raise ConfigError."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else key
        if key not in fields:
            raise ConfigError(f"unknown field '{full}' (known: {', '.join(sorted(fields))})")
        kwargs[key] = _coerce(value, hints[key], full)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{path or cls.__name__}: {e}") from None
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(f"{path + '.' if path else ''}{e}") from None
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain (JSON-able) nested dict of a dataclass config."""
    return dataclasses.asdict(obj)


def nested_update(base: dict[str, Any], dotted: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``base`` with ``{"a.b": v}`` entries set at ``base["a"]["b"]``."""
    out = _deepcopy(base)
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else child
                if not isinstance(child, dict):
                    raise ConfigError(f"{key}: '{part}' is not a section")
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def parse_overrides(items: typing.Iterable[str]) -> dict[str, str]:
    """Parse ``["a.b=1", "c=x"]`` into ``{"a.b": "1", "c": "x"}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _deepcopy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule, applied per optimiser step (``raysup.train.lr_factor``)."""

    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 1e-3
    lr_batch: int = 0  # > 0: lr is for a global batch of this many clips, scaled linearly to workers × batch_size
    momentum: float = 0.9
    weight_decay: float = 0.0
    decay_norm_and_bias: bool = False  # weight decay on normalisation weights and biases too
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    milestones: tuple[float, ...] = ()  # step schedule: fractions of the run where lr *= gamma
    gamma: float = 0.1
    warmup_epochs: float = 0.0  # linear warm-up, in epochs (fractions allowed), per step
    warmup_from: float = 0.0  # the warm-up's first lr, as a fraction of lr (0: from about 0)
    clip_grad_norm: float = 0.0  # clip the global gradient norm to this; 0: off

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        for name in ("lr_batch", "momentum", "weight_decay", "warmup_epochs", "clip_grad_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.warmup_from <= 1:
            raise ValueError(f"warmup_from: must be in [0, 1], got {self.warmup_from}")
        if self.momentum >= 1:
            raise ValueError(f"momentum: must be < 1, got {self.momentum}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma: must be in (0, 1], got {self.gamma}")
        if any(not 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones: fractions in (0, 1), got {self.milestones}")

    def scaled_lr(self, global_batch: int) -> float:
        """The learning rate a run with ``global_batch`` clips per step uses: ``lr``, or with
        ``lr_batch`` > 0 ``lr · global_batch / lr_batch`` (the linear scaling rule, Goyal et al.
        2017; GDT's official code scales its lr with the number of GPUs)."""
        return self.lr * global_batch / self.lr_batch if self.lr_batch else self.lr


MAX_SEED = 2**30


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: the method's own config under ``method``, the loop's settings here.

    ``batch_size`` is per worker; ``max_steps`` > 0 ends each ``fit`` (each XDC round) after that
    many optimiser steps, with the checkpoint and metrics of a normal end (the learning-rate
    schedule still spans ``epochs``, so the steps taken are the full run's first ones; a resumed
    run continues the epoch where it stopped); ``checkpoint_every_steps`` > 0 also checkpoints
    every that many optimiser steps inside an epoch, with the data position, so a restarted or
    resumed run loses at most that many steps (0: only at epoch ends); ``crop_size`` > 0: the clips' frames and flow are
    crop_size×crop_size crops of the prepared frames (random position for training, centred for
    evaluation, probes and features; :meth:`raysup.data.ingest.PreparedData.cropped`), 0: the
    prepared ``--size``; ``patience`` > 0 stops early when ``val_loss`` has not
    improved for that many epochs (needs a validation dataset). Clips stream from the
    Parquet shards read in a new order every epoch, then through a local shuffle buffer of
    ``shuffle_batches`` batches per worker: too small a buffer fills batches with the clips of
    a few videos (and biases BatchNorm); each clip held costs its tensor bytes in memory.
    ``decode_on`` "device": the JPEG cells of a jpeg set reach the train worker compressed and
    are decoded there before each step (:mod:`raysup.data.device_decode`: nvjpeg on CUDA),
    instead of in Ray Data CPU tasks ("tasks"); the same tensors either way.
    """

    method_name: str
    method: Any
    preset: Literal["tiny", "paper", "paper_vgg16", "paper_audioset", "paper_ig", "paper_32f", "paper_32f_long"] = "tiny"  # paper_vgg16: Cross and Learn; paper_audioset, paper_ig, paper_32f(_long): XDC (supervised: paper_audioset)
    epochs: int = 10
    max_steps: int = 0  # end after this many optimiser steps; 0: no limit
    batch_size: int = 32
    crop_size: int = 0  # frames and flow as crop_size² crops of the stored frames; 0: the prepared --size
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    amp: bool = True
    seed: int = 0
    max_failures: int = 2
    patience: int = 0
    shuffle_batches: int = 16
    checkpoint_every_steps: int = 0  # also checkpoint every this many optimiser steps; 0: at epoch ends only
    decode_on: Literal["tasks", "device"] = "tasks"  # a jpeg set's frames and flow decoded in Ray Data CPU tasks, or on the train worker's device
    optim: OptimConfig = OptimConfig()

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "shuffle_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.workers < 1:
            raise ValueError(f"workers: must be >= 1, got {self.workers}")
        for name in ("max_failures", "patience", "max_steps", "crop_size", "checkpoint_every_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 0:
            raise ValueError("gpus_per_worker/cpus_per_worker: must be >= 0")
        if not 0 <= self.seed <= MAX_SEED:  # offsets are added (per worker, epoch, round); faiss takes a C int
            raise ValueError(f"seed: must be an integer from 0 to {MAX_SEED}, got {self.seed}")


# A method module's ``build``: (config, tensor specs) → its model (a ``raysup.methods.base.Method``).
Build = Callable[[TrainConfig, dict[str, Any]], Any]
