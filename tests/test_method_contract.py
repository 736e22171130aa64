"""The method contract (:class:`raysup.methods.base.MethodModule`) for every method, raysup's and
a sixth from another package (tests/plugins/raysup_toy_method.py, found through its
``raysup.methods`` entry point): what the module provides, that ``raysup train M`` runs it and
prints its final metrics as JSON, and that the plugin is configured, trained and probed without
any raysup file knowing it (tests/test_sweep_resume.py sweeps it with Tune)."""
from __future__ import annotations

import dataclasses
import inspect
import json
import math

import pytest
import torch

from raysup import runner
from raysup.cli import main
from raysup.data.ingest import ClipCollate
from raysup.methods import make_config, method_module, method_names
from raysup.methods.base import MethodModule, Stage

# per method: the least that trains one short epoch on the 24-video set (cpfs: with its draws'
# frames and flow fields decoded by the train worker, validation too: tests/test_device_decode.py)
SHORT_SETS = {"xdc": {"method.k": 4}, "cross_and_learn": {"method.pairs_per_video": 2}, "cpfs": {"decode_on": "device"}}
SHORT = {name: [f"{k}={v}" for k, v in sets.items()] for name, sets in SHORT_SETS.items()}


def test_the_plugin_is_a_method_like_the_others():
    assert method_names() == ["cpfs", "cpfs_direct", "cross_and_learn", "gdt", "supervised", "toy", "xdc"]


@pytest.mark.parametrize("name", method_names())
def test_module_provides_the_contract(name, small_prepared):
    mod = method_module(name)
    assert dataclasses.is_dataclass(mod.Config) and mod.Config.__dataclass_params__.frozen
    assert isinstance(mod.COLUMNS, tuple) and {"video_id", "clip_index"} <= set(mod.COLUMNS)
    assert {"tiny", "paper"} <= set(mod.PRESETS)
    for preset in mod.PRESETS:
        cfg = make_config(name, preset)
        assert isinstance(cfg.method, mod.Config)
        assert all(isinstance(k, str) and set(v) <= {"CPU", "GPU"} for k, v in runner.side_tasks(cfg).items())
    stage_fn = "stages" if hasattr(mod, "stages") else "datasets"
    for fn in ("check", "build", stage_fn) + (("side_tasks",) if hasattr(mod, "side_tasks") else ()):
        want = [p for p in inspect.signature(getattr(MethodModule, fn)).parameters if p != "self"]
        assert list(inspect.signature(getattr(mod, fn)).parameters) == want, fn
    # the model names its encoders as embed does, with their feature widths
    cfg = make_config(name, "tiny", {**SHORT_SETS.get(name, {}), "batch_size": 8})
    data = runner.check(cfg, small_prepared[0])
    model = mod.build(cfg, data.specs).eval()
    batch = ClipCollate(data.specs)(data.dataset(list(mod.COLUMNS), crop="centre").take_batch(4, batch_format="pyarrow"))
    with torch.no_grad():
        feats = model.embed(batch)
    assert {k: v.shape[1] for k, v in feats.items()} == {k: e.dim for k, e in model.encoders().items()}
    if stage_fn == "datasets":  # one stage of stored cells: the runner decodes them, with random crops to train
        stage = mod.datasets(cfg, data, small_prepared[1])
        assert isinstance(stage, Stage) and stage.rows_per_epoch > 0


def test_a_method_from_another_package_is_configured_trained_and_probed(small_prepared, tmp_path, capsys):
    data, labels = small_prepared
    assert main(["methods"]) == 0
    assert "raysup_toy_method" in capsys.readouterr().out
    assert main(["config", "toy", "--set", "method.temperature=0.2"]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == {"dim": 32, "temperature": 0.2}
    run = str(tmp_path / "toy")
    assert main(["train", "toy", "--data", data, "--out", run, "--set", "epochs=1"]) == 0
    assert json.loads(capsys.readouterr().out)["epoch"] == 0
    assert main(["probe", run, "--data", data, "--labels", labels, "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out.strip().splitlines()[-1])) == {"video", "audio"}


# supervised: tests/test_train.py; toy: above; cpfs_direct is cpfs with target=direct (tests/methods/test_cpfs.py builds and steps it): slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "cpfs_direct" else n
                                  for n in sorted(set(method_names()) - {"supervised", "toy"})])
def test_train_prints_json_metrics(name, small_prepared, tmp_path, capsys):
    data, labels = small_prepared
    sets = ["epochs=1", "max_steps=2", "batch_size=8", *SHORT.get(name, [])]
    code = main(["train", name, "--data", data, "--out", str(tmp_path / "run"), "--labels", labels, *[a for s in sets for a in ("--set", s)]])
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads(out)
    assert metrics["epoch"] == 0 and math.isfinite(metrics["loss"]) and metrics["total_steps"] == 2
