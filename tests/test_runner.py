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


def _frame(cell: bytes, t: int, shape: tuple[int, ...]) -> np.ndarray:
    """Frame t of a decoded frames cell (the fixed-size binary of a [T,H,W,3] uint8 tensor)."""
    return np.frombuffer(cell, np.uint8).reshape(shape)[t]


def _drawn(ds, shape: tuple[int, ...]) -> dict[tuple[str, int], tuple[int, np.ndarray]]:
    """cpfs' streams: per clip its drawn frame t (the only one decoded) and that frame."""
    return {(r["video_id"], int(r["clip_index"])): (int(r["t"]), _frame(r["frames"], int(r["t"]), shape)) for r in ds.take_all()}


def test_stages_train_on_random_crops_and_validate_on_centre_crops(small_prepared):
    data, labels = small_prepared
    cfg = make_config("cpfs", "tiny", {"crop_size": 24, "method.val_fraction": 0.5, "batch_size": 8})  # frames stored at 32: 24 crops
    opened = runner.check(cfg, data)
    assert opened.specs["frames"].shape[1:3] == (24, 24)
    stage = method_module("cpfs").datasets(cfg, opened, labels)
    streams = runner.stage_datasets(stage, opened)
    centre = _frames(opened.dataset(["video_id", "clip_index", "frames"], crop="centre"))
    shape = opened.specs["frames"].shape
    train, val = _drawn(streams["train"], shape), _drawn(streams["val"], shape)
    assert train and val and not set(train) & set(val)  # held-out videos only validate
    assert all(np.array_equal(x, _frame(centre[k], t, shape)) for k, (t, x) in val.items())
    moved = [not np.array_equal(x, _frame(centre[k], t, shape)) for k, (t, x) in train.items()]
    assert sum(moved) > len(moved) / 2  # a centre crop has 1 chance in 81 per clip


def test_a_crop_above_the_prepared_size_is_refused_naming_crop_size(small_prepared):
    with pytest.raises(ConfigError, match="crop_size: 48 exceeds the prepared frame size 32"):
        runner.check(make_config("gdt", "tiny", {"crop_size": 48}), small_prepared[0])


@pytest.mark.parametrize("method", ["gdt", "cross_and_learn", "cpfs", "supervised"])
def test_an_epoch_streams_with_no_step_that_waits_for_the_whole_set(small_prepared, method):
    """Every method's train and val streams (as fit gets them) have no all-to-all operator and
    nothing materialised: Ray reruns them every epoch, so the first batch of each epoch comes
    after a few files, not after the whole set. (XDC's rounds pass the same check in
    :func:`raysup.runner.stage_datasets` in tests/methods/test_xdc.py.)"""
    data, labels = small_prepared
    cfg = make_config(method, "tiny", {"batch_size": 4, "method.val_fraction": 0.5} if method == "cpfs" else {"batch_size": 4})
    opened = runner.check(cfg, data)
    streams = runner.stage_datasets(method_module(method).datasets(cfg, opened, labels), opened)
    assert set(streams) == ({"train", "val"} if method == "cpfs" else {"train"})
    assert all(runner.barriers(ds) == [] for ds in streams.values())


def test_a_stream_that_waits_for_the_whole_set_is_refused(small_prepared):
    from raysup.methods.base import Stage

    data = runner.open_data(small_prepared[0], make_config("cpfs", "tiny"))
    clips = data.dataset(["video_id", "clip_index"], crop=None)
    assert runner.barriers(clips.randomize_block_order()) == ["RandomizeBlocks"]
    assert runner.barriers(clips.random_shuffle().map_batches(lambda b: b)) == ["RandomShuffle"]
    assert runner.barriers(clips.groupby("video_id").count()) == ["Aggregate"]
    assert runner.barriers(clips.materialize()) == ["materialize"]
    with pytest.raises(ValueError, match="stage train: the train stream has RandomizeBlocks, which wait for the whole input"):
        runner.stage_datasets(Stage(train=clips.randomize_block_order(), rows_per_epoch=48), data)

