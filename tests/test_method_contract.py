"""The method contract (:class:`raysup.methods.base.MethodModule`) for every method in METHODS:
what the module provides, and that ``raysup train M`` runs it and prints its final metrics as JSON."""
from __future__ import annotations

import dataclasses
import inspect
import json
import math

import pytest

from raysup.cli import main
from raysup.methods import METHODS, make_config
from raysup.methods.base import MethodModule

# per method: the least that trains one short epoch on the 24-video set
SHORT = {"xdc": ["method.k=4"], "cross_and_learn": ["method.pairs_per_video=2"]}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_module_provides_the_contract(name):
    mod = METHODS[name]
    assert dataclasses.is_dataclass(mod.Config) and mod.Config.__dataclass_params__.frozen
    assert isinstance(mod.COLUMNS, tuple) and {"video_id", "clip_index"} <= set(mod.COLUMNS)
    assert {"tiny", "paper"} <= set(mod.PRESETS) <= {"tiny", "paper", "paper_vgg16"}  # paper_vgg16: Cross and Learn
    for preset in mod.PRESETS:
        cfg = make_config(name, preset)
        assert isinstance(cfg.method, mod.Config)
        tasks = mod.side_tasks(cfg)
        assert all(isinstance(k, str) and set(v) <= {"CPU", "GPU"} for k, v in tasks.items())
    for fn in ("check", "build", "run", "side_tasks"):
        want = [p for p in inspect.signature(getattr(MethodModule, fn)).parameters if p != "self"]
        assert list(inspect.signature(getattr(mod, fn)).parameters) == want, fn


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"supervised"}))  # supervised: tests/test_train.py
def test_train_prints_json_metrics(name, small_prepared, tmp_path, capsys):
    data, labels = small_prepared
    sets = ["epochs=1", "max_steps=2", "batch_size=8", *SHORT.get(name, [])]
    code = main(["train", name, "--data", data, "--out", str(tmp_path / "run"), "--labels", labels, *[a for s in sets for a in ("--set", s)]])
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads(out)
    assert metrics["epoch"] == 0 and math.isfinite(metrics["loss"]) and metrics["total_steps"] == 2
