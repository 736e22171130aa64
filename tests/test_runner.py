"""The runner (raysup/runner.py): the one place a method's stages are decoded, so no method can
train on centre crops by accident, and the data is opened at the run's crop_size once."""
from __future__ import annotations

import numpy as np
import pytest

from raysup import runner
from raysup.config import ConfigError
from raysup.methods import make_config, method_module


def _frames(ds) -> dict[tuple[str, int], np.ndarray]:
    rows = ds.take_all()
    return {(r["video_id"], int(r["clip_index"])): r["frames"] for r in rows}


def test_stages_train_on_random_crops_and_validate_on_centre_crops(small_prepared):
    data, labels = small_prepared
    cfg = make_config("cpfs", "tiny", {"crop_size": 24, "method.val_fraction": 0.5, "batch_size": 8})  # frames stored at 32: 24 crops
    opened = runner.check(cfg, data)
    assert opened.specs["frames"].shape[1:3] == (24, 24)
    stage = method_module("cpfs").datasets(cfg, opened, labels)
    streams = runner.stage_datasets(stage, opened)
    centre = _frames(opened.dataset(["video_id", "clip_index", "frames"], crop="centre"))
    train, val = _frames(streams["train"]), _frames(streams["val"])
    assert train and val and not set(train) & set(val)  # held-out videos only validate
    assert all(np.array_equal(x, centre[k]) for k, x in val.items())
    moved = [not np.array_equal(x, centre[k]) for k, x in train.items()]
    assert sum(moved) > len(moved) / 2  # a centre crop has 1 chance in 81 per clip


def test_a_crop_above_the_prepared_size_is_refused_naming_crop_size(small_prepared):
    with pytest.raises(ConfigError, match="crop_size: 48 exceeds the prepared frame size 32"):
        runner.check(make_config("gdt", "tiny", {"crop_size": 48}), small_prepared[0])
