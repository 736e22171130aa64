"""Config parsing: defaults, presets, --set overrides, and errors that name the field."""
from __future__ import annotations

import dataclasses

import pytest

from raysup.config import ConfigError, OptimConfig, from_dict, parse_overrides
from raysup.data.prepare import PrepareConfig
from raysup.methods import make_config


def test_overrides_are_typed_and_nested():
    cfg = make_config("supervised", "tiny", parse_overrides(["epochs=3", "optim.lr=0.5", "method.num_classes=7", "amp=false"]))
    assert cfg.epochs == 3 and cfg.optim.lr == 0.5 and cfg.method.num_classes == 7 and cfg.amp is False
    assert cfg.optim.name == "adam"  # from the tiny preset
    assert make_config("supervised", "paper").method.video_encoder == "r2plus1d_18"


@pytest.mark.parametrize(
    "override, message",
    [
        ({"optim.lrr": "1"}, "unknown field 'optim.lrr'"),
        ({"method.video_encodr": "x"}, "unknown field 'method.video_encodr'"),
        ({"epochs": "many"}, "epochs: expected int, got 'many'"),
        ({"optim.name": "lion"}, "optim.name: expected one of"),
        ({"batch_size": "0"}, "batch_size: must be >= 1"),
        ({"optim.lr": "-1"}, "optim.lr: must be > 0"),
        ({"amp": "maybe"}, "amp: expected bool"),
        ({"optim.lr": "nan"}, "optim.lr: expected a finite float, got 'nan'"),
        ({"optim.lr": "inf"}, "optim.lr: expected a finite float"),
        ({"optim.weight_decay": "-0.1"}, "optim.weight_decay: must be >= 0"),
        ({"optim.momentum": "-0.9"}, "optim.momentum: must be >= 0"),
        ({"optim.momentum": "1"}, "optim.momentum: must be < 1"),
        ({"optim.warmup_epochs": "-2"}, "optim.warmup_epochs: must be >= 0"),
        ({"max_failures": "-1"}, "max_failures: must be >= 0"),
        ({"seed": 1e20}, "seed: must be an integer from 0 to 1073741824, got 100000000000000000000"),
        ({"seed": "-1"}, "seed: must be an integer from 0 to"),
        ({"method_name": "xdc"}, "method_name: set by the command"),
        ({"preset": "paper"}, "preset: set by the command"),
        ({"method": "foo"}, "method: a section of method settings"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        make_config("supervised", "tiny", override)


def test_unknown_method_and_preset():
    with pytest.raises(ConfigError, match="method: unknown 'byol'"):
        make_config("byol")
    with pytest.raises(ConfigError, match="preset"):
        make_config("supervised", "huge")


def test_set_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])


def test_from_dict_tuples_and_frozen():
    opt = from_dict(OptimConfig, {"schedule": "step", "milestones": "0.5,0.75"})
    assert opt.milestones == (0.5, 0.75)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opt.lr = 3  # frozen
    with pytest.raises(ConfigError, match="fps: must be > 0"):
        from_dict(PrepareConfig, {"fps": 0})
