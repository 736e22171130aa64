"""Small real sets (``real_prepared``: bigbuckbunny with audio, bikes and cityCC0 without, 8
frames at 8 fps): the methods build their datasets from them, and every refusal of a set too
small for a config names the field and what to do, before any work starts."""
from __future__ import annotations

import pyarrow as pa
import pytest

from raysup.config import ConfigError
from raysup.data.ingest import ClipCollate
from raysup.data.schema import TensorSpec, column_to_numpy
from raysup.data.tables import is_held_out
from raysup.errors import USER_ERRORS
from raysup.methods import cpfs, make_config, method_module, xdc


def test_cpfs_splits_clips_when_no_video_is_held_out(real_prepared):
    """With 3 videos none falls in the 10% held-out split: an empty id list once made the
    filter fail (ArrowTypeError: string vs null)."""
    assert not [v for v in real_prepared.video_ids if is_held_out(v, 0.1)]
    stage = cpfs.datasets(make_config("cpfs", "tiny"), real_prepared, None)
    assert stage.val is None and stage.train.count() == stage.rows_per_epoch == real_prepared.manifest["counts"]["clips"]
    fraction = next(f for f in (0.3, 0.5, 0.7) if 0 < sum(is_held_out(v, f) for v in real_prepared.video_ids) < 3)
    stage = cpfs.datasets(make_config("cpfs", "tiny", {"method.val_fraction": fraction}), real_prepared, None)
    held = {v for v in real_prepared.video_ids if is_held_out(v, fraction)}
    assert {r["video_id"] for r in stage.val.take_all()} == held and not held & {r["video_id"] for r in stage.train.take_all()}


def test_xdc_clips_with_audio_keep_their_tensor_columns(real_prepared):
    """XDC leaves out videos without audio; a row-wise filter once turned the fixed-size audio
    cells into variable-size binary, and feature extraction failed on real footage ("buffer is
    smaller than requested size", reported as a user error)."""
    assert set(real_prepared.no_audio) == {"bikes", "cityCC0"}
    batch = real_prepared.decode(xdc.audio_clips(real_prepared), crop="centre").take_batch(3, batch_format="pyarrow")
    assert batch.schema.field("audio").type == pa.binary(real_prepared.specs["audio"].nbytes)
    tensors = ClipCollate(real_prepared.specs)(batch)
    assert set(batch.column("video_id").to_pylist()) == {"bigbuckbunny"} and tensors["audio_valid"].all()


def test_a_tensor_column_of_the_wrong_type_is_an_internal_error():
    """Variable-size cells reaching the collate function are a bug, not the user's data: a
    TypeError (exit 1, "internal error"), not numpy's ValueError (exit 2, "error")."""
    with pytest.raises(TypeError, match=r"fixed_size_binary\[4\], got binary") as e:
        column_to_numpy(pa.array([b"abcd", b"efgh"], pa.binary()), TensorSpec((2,), "float16"))
    assert not isinstance(e.value, USER_ERRORS)


# (method, overrides, what the refusal must say); real_prepared has 3 videos (1 with audio, 5
# clips), clips of 8 frames
TOO_SMALL = [
    ("cpfs", {"method.flow_step": 8}, ["method.flow_step:", "--clip-frames 9 or more, or lower method.flow_step"]),
    ("cpfs", {"batch_size": 64}, ["batch_size: 64 is more than the 22 training clips", "lower batch_size"]),
    ("cpfs", {"method.val_fraction": 0.9}, ["method.val_fraction: all 3 videos fall in the held-out split", "lower method.val_fraction"]),
    ("cpfs_direct", {"batch_size": 64}, ["batch_size: 64 is more than", "lower batch_size"]),
    ("cross_and_learn", {"method.flow_fields": 8}, ["method.flow_fields:", "--clip-frames 9", "lower method.flow_fields"]),
    ("cross_and_learn", {"batch_size": 64}, ["batch_size: 64 is more than the 48 training clips", "raise method.pairs_per_video"]),
    ("gdt", {"batch_size": 4}, ["batch_size: 4 is more than the 3 training clips", "raise method.draws_per_epoch"]),
    ("xdc", {"method.k": 16}, ["method.k: 16 clusters", "5 with audio", "lower method.k"]),
    ("xdc", {"method.k": 2, "method.pca_dim": 8}, ["method.pca_dim: PCA to 8", "lower method.pca_dim"]),
    ("xdc", {"method.k": 2, "method.epoch_size": 1.0, "batch_size": 8}, ["batch_size: 8 is more than the 5 training clips", "raise method.epoch_size"]),
    ("xdc", {"method.k": 2, "method.val_fraction": 0.9}, ["method.val_fraction: all 1 videos with audio fall in the held-out", "lower"]),
]


@pytest.mark.parametrize(("method", "overrides", "says"), TOO_SMALL, ids=[f"{m}-{'-'.join(o)}" for m, o, _ in TOO_SMALL])
def test_a_set_too_small_is_refused_naming_the_field_and_the_remedy(real_prepared, method, overrides, says):
    cfg = make_config(method, "tiny", overrides)
    with pytest.raises(ConfigError) as e:
        method_module(method).check(cfg, real_prepared)
    assert all(s in str(e.value) for s in says), str(e.value)


def test_xdc_refuses_a_set_without_audio(real_prepared):
    no_audio = type(real_prepared)(real_prepared.uri)
    counts = real_prepared.manifest["counts"]
    no_audio.__dict__["manifest"] = real_prepared.manifest | {"counts": counts | {"no_audio": counts["videos"]}}
    with pytest.raises(ConfigError, match="no prepared video has an audio track; prepare videos with audio"):
        xdc.check(make_config("xdc", "tiny", {"method.k": 2}), no_audio)
