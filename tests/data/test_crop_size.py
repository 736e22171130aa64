"""``crop_size``: clips read as crop_size² crops of the stored frames and flow, at a random
position to train and centred to evaluate, on real footage of three aspect ratios (jpeg) and on a
raw set's stored squares; refused above the prepared size; a probe uses the run's crop."""
from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa
import pytest
import torch

from raysup import runner
from raysup.checkpoint import CHECKPOINT_FILE, latest_checkpoint, load_checkpoint_file
from raysup.cli import main
from raysup.config import ConfigError, to_dict
from raysup.data.codec import flow_levels
from raysup.data.ingest import ClipCollate, PreparedData
from raysup.data.prepare import PrepareConfig, prepare
from raysup.data.transforms import random_resized_crop_flip
from raysup.methods import load_config, make_config, method_module
from tests.conftest import stacked_cell

CROP = 16  # of the 32 px short side of ``real_prepared``


def table(ds) -> pa.Table:
    """Every row of ``ds``, sorted by (video, clip)."""
    t = pa.concat_tables(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    return t.sort_by([("video_id", "ascending"), ("clip_index", "ascending")])


def rows(ds) -> list[dict]:
    return table(ds).to_pylist()


def stored_frames(data: PreparedData) -> dict[tuple[str, int], np.ndarray]:
    """(video, clip) → the stored frames decoded whole: uint8 [T,H,W,3] at the video's aspect."""
    t = data.stored_specs["frames"].shape[0]
    out = {}
    for r in rows(data.dataset(["video_id", "clip_index", "frames"], crop=None)):
        img = stacked_cell(r["frames"])
        out[r["video_id"], r["clip_index"]] = img.reshape(t, -1, *img.shape[1:])
    return out


def find_box(full: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """The (top, left) where ``crop`` [T,S,S,3] lies in ``full`` [T,H,W,3] (textured real
    footage: a unique place); asserts there is one."""
    s = crop.shape[1]
    windows = np.lib.stride_tricks.sliding_window_view(full, (s, s), axis=(1, 2))  # [T,H−S+1,W−S+1,3,S,S]
    hits = np.argwhere((windows == crop.transpose(0, 3, 1, 2)[:, None, None]).all(axis=(0, 3, 4, 5)))
    assert len(hits) >= 1, "the crop is no window of the stored frames"
    return int(hits[0][0]), int(hits[0][1])


@pytest.fixture(scope="module")
def stored_flow(real_prepared):
    """(video, clip) → the stored flow cell (one grayscale JPEG) of ``real_prepared``."""
    return {(r["video_id"], r["clip_index"]): r["flow"] for r in rows(real_prepared.dataset(["video_id", "clip_index", "flow"], crop=None))}


def test_crop_size_crops_at_random_positions_to_train_and_at_the_centre_to_evaluate(real_prepared, stored_flow):
    data = real_prepared.cropped(CROP)
    assert data.specs["frames"].shape == (8, CROP, CROP, 3) and data.specs["flow"].shape == (7, CROP, CROP, 2)
    assert data.specs["audio"] == real_prepared.specs["audio"] and real_prepared.specs["frames"].shape == (8, 32, 32, 3)
    full = stored_frames(real_prepared)
    assert {f.shape[1:3] for f in full.values()} == {(32, 57), (32, 75)}  # 16:9 and 640×272 at a short side of 32
    columns = ["video_id", "clip_index", "frames", "flow"]
    centre = table(data.dataset(columns))
    collated = ClipCollate(data.specs)(centre)
    assert collated["frames"].shape == (22, 8, CROP, CROP, 3) and collated["flow"].shape == (22, 7, CROP, CROP, 2)
    for i, r in enumerate(centre.select(["video_id", "clip_index"]).to_pylist()):
        f = full[r["video_id"], r["clip_index"]]
        top, left = (f.shape[1] - CROP) // 2, (f.shape[2] - CROP) // 2
        np.testing.assert_array_equal(collated["frames"][i].numpy(), f[:, top : top + CROP, left : left + CROP])
    # training: a random box per clip and pass, anywhere in the frame (both sides are longer than the crop)
    train = [table(data.dataset(columns, crop="random")) for _ in range(2)]
    boxes = []
    for t in train:
        out = ClipCollate(data.specs)(t)
        for i, r in enumerate(t.select(["video_id", "clip_index"]).to_pylist()):
            f = full[r["video_id"], r["clip_index"]]
            top, left = find_box(f, out["frames"][i].numpy())
            assert 0 <= top <= f.shape[1] - CROP and 0 <= left <= f.shape[2] - CROP
            boxes.append((r["video_id"], r["clip_index"], top, left))
            if stored_flow[r["video_id"], r["clip_index"]] is not None:  # the flow of the same clip at the same box
                h, w = f.shape[1:3]
                levels = stacked_cell(stored_flow[r["video_id"], r["clip_index"]], cv2.IMREAD_GRAYSCALE)
                levels = levels.reshape(7, 2, h, w)[:, :, top : top + CROP, left : left + CROP].transpose(0, 2, 3, 1)
                expected = flow_levels(real_prepared.encoding["flow"]["range_px"])[levels].astype(np.float16)
                np.testing.assert_array_equal(out["flow"][i].numpy(), expected)
    assert len({b[2] for b in boxes}) > 3 and len({b[3] for b in boxes}) > 3  # tops and lefts vary
    assert len(set(boxes)) > len(boxes) // 2 + 1  # the same clip gets other boxes in the second pass


def test_a_raw_set_crops_its_stored_square(ray_session, real_videos, tmp_path):
    """The raw encoding stores a centre square: crop_size takes its crops from it, frames and flow at one box."""
    prepare(real_videos, str(tmp_path / "raw"), PrepareConfig(clip_frames=8, fps=8.0, size=32, encoding="raw", max_clips_per_video=1))
    raw = PreparedData(str(tmp_path / "raw"))
    data = raw.cropped(CROP)
    columns = ["video_id", "clip_index", "frames", "flow"]
    square = ClipCollate(raw.specs)(table(raw.dataset(columns)))  # [3,8,32,32,3], [3,7,32,32,2]
    centre = ClipCollate(data.specs)(table(data.dataset(columns)))
    np.testing.assert_array_equal(centre["frames"].numpy(), square["frames"][:, :, 8:24, 8:24].numpy())
    np.testing.assert_array_equal(centre["flow"].numpy(), square["flow"][:, :, 8:24, 8:24].numpy())
    lefts = set()
    for _ in range(3):
        out = ClipCollate(data.specs)(table(data.dataset(columns, crop="random")))
        for i in range(3):
            top, left = find_box(square["frames"][i].numpy(), out["frames"][i].numpy())
            np.testing.assert_array_equal(out["flow"][i].numpy(), square["flow"][i, :, top : top + CROP, left : left + CROP].numpy())
            lefts.add(left)
    assert len(lefts) > 1


def test_crop_size_above_the_prepared_size_is_refused(real_prepared, tmp_path, capsys):
    with pytest.raises(ConfigError, match="^crop_size: 33 exceeds the prepared frame size 32 of .*--size 33"):
        real_prepared.cropped(33)
    assert real_prepared.cropped(32).specs == real_prepared.specs and real_prepared.cropped(0).crop_size == 0
    code = main(["train", "gdt", "--data", real_prepared.uri, "--out", str(tmp_path / "run"), "--set", "crop_size=48"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "crop_size: 48 exceeds the prepared frame size 32" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_probe_uses_the_crop_size_of_the_run(real_prepared, tmp_path):
    """A run's checkpoint (as ``fit`` writes it: the model and its config, here crop_size 16):
    the probe's features are the model's embeddings of the centre 16² crops, averaged per video."""
    from raysup.evaluate import _video_features

    cfg = make_config("gdt", "tiny", {"crop_size": CROP})
    torch.manual_seed(1)
    model = method_module("gdt").build(cfg, real_prepared.cropped(CROP).specs).eval()
    ckpt = tmp_path / "run" / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "config": to_dict(cfg)}, ckpt / CHECKPOINT_FILE)
    path = latest_checkpoint(str(tmp_path / "run"))
    saved = load_config(load_checkpoint_file(path)["config"])
    assert saved.crop_size == CROP
    ids, feats = _video_features(saved, runner.open_data(real_prepared, saved), set(real_prepared.video_ids), path, actors=1)
    # by hand: the stored frames' centre crops, the stored audio, the model's embeddings, per-video means
    full = stored_frames(real_prepared)
    audio_table = table(real_prepared.dataset(["video_id", "clip_index", "audio"], crop=None))
    batch = ClipCollate(real_prepared.specs)(audio_table)
    audio = audio_table.select(["video_id", "clip_index"]).to_pylist()
    frames = []
    for r in audio:
        f = full[r["video_id"], r["clip_index"]]
        top, left = (f.shape[1] - CROP) // 2, (f.shape[2] - CROP) // 2
        frames.append(f[:, top : top + CROP, left : left + CROP])
    batch["frames"] = torch.from_numpy(np.stack(frames))  # [22,8,16,16,3]
    with torch.no_grad():
        embedded = model.embed(batch)
    videos = np.array([r["video_id"] for r in audio])
    assert list(ids) == sorted(set(videos))
    for name in ("video", "audio"):
        expected = np.stack([embedded[name][torch.from_numpy(videos == v)].mean(0).numpy() for v in ids])
        np.testing.assert_allclose(feats[name], expected, rtol=1e-4, atol=1e-5)


def test_a_unit_crop_scale_is_a_flip_only():
    """crop_scale (1, 1) (the paper presets of GDT and Cross and Learn, cpfs' min_crop 1): the
    random resized crop is the whole image, exactly, and only the flip remains."""
    torch.manual_seed(0)
    x = torch.rand(64, 3, 4, 16, 16)  # [B,C,T,H,W]
    y = random_resized_crop_flip(x, (1.0, 1.0))
    same = (y == x).flatten(1).all(1)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert (same | flipped).all() and same.any() and flipped.any()
