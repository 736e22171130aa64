"""Cross and Learn: the pairs (centre frame + stack), the motion-weighted draw, augmentations
that keep RGB and flow aligned, every variant in-process, collapse detection, config errors,
and learning end to end through Ray (RGB probe beats random init)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from raysup import runner
from raysup.config import ConfigError
from raysup.data.pairs import augment_pair, centre_pair, pair_input
from raysup.data.schema import TensorSpec
from raysup.data.tables import draw_video_clips, pack_videos
from raysup.methods import cross_and_learn as cal
from raysup.methods import make_config
from tests.conftest import SYNTH

SPECS = {"frames": TensorSpec((8, 32, 32, 3), "uint8"), "flow": TensorSpec((7, 32, 32, 2), "float16")}


def build(specs=SPECS, **overrides):
    torch.manual_seed(0)
    return cal.build(make_config("cross_and_learn", "tiny", overrides), specs)


def random_batch(b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "frames": torch.randint(0, 256, (b, 8, 32, 32, 3), dtype=torch.uint8, generator=g),  # [B,T,H,W,3]
        "flow": torch.randn(b, 7, 32, 32, 2, generator=g).half(),  # [B,T-1,H,W,2]
    }


# --- sampling -----------------------------------------------------------------------------------
def packed_videos(motion_per_video: dict[str, list[float]]) -> pa.Table:
    clips = pa.table({
        "video_id": [v for v, m in motion_per_video.items() for _ in m],
        "clip_index": pa.array([i for m in motion_per_video.values() for i in range(len(m))], pa.int32()),
        "motion": pa.array([x for m in motion_per_video.values() for x in m], pa.float32()),
    })
    return pa.concat_tables([pack_videos(clips.filter(pc.equal(clips["video_id"], v))) for v in motion_per_video])


def test_sampling_weights_follow_motion():
    videos = packed_videos({"a": [1.0, 3.0], "b": [0.0, 0.0, 0.0], "c": [5.0]})  # b: no motion at all → uniform
    rows = draw_video_clips(videos, draws=4000, weights="motion", rng=np.random.default_rng(0))
    drawn = Counter(zip(rows["video_id"].to_pylist(), rows["clip_index"].to_pylist()))
    assert sum(drawn[("a", i)] for i in range(2)) == sum(drawn[("b", i)] for i in range(3)) == drawn[("c", 0)] == 4000
    assert drawn[("a", 1)] / drawn[("a", 0)] == pytest.approx(3.0, rel=0.1)
    assert all(abs(drawn[("b", i)] - 4000 / 3) < 150 for i in range(3))
    still = draw_video_clips(packed_videos({"a": [0.0, 1.0, 1.0]}), draws=300, weights="motion", rng=np.random.default_rng(1))
    assert 0 not in still["clip_index"].to_pylist()  # a clip without motion is never drawn beside moving ones
    epochs = [draw_video_clips(videos, draws=20, weights="motion")["clip_index"].to_pylist() for _ in range(2)]
    assert epochs[0] != epochs[1]  # unseeded: every epoch draws anew


def test_tiny_preset_shuffles_a_whole_epoch_of_the_test_set():
    """A video's 16 pairs arrive together, in its read unit's block: the tiny preset's local
    shuffle buffer holds a whole epoch of the 180-video test set, so batches mix as fully as when
    an epoch's draws came in one block (16 batches: RGB probe margin ~+9, not ~+13; docs/results.md)."""
    cfg = make_config("cross_and_learn", "tiny")
    assert cfg.shuffle_batches * cfg.batch_size >= SYNTH.videos * cfg.method.pairs_per_video


# --- pairs and augmentations ---------------------------------------------------------------------
def numbered_clip(b=2, t=8, size=32):
    """Frame k has every pixel k; flow field k is (dx, dy) = (k, −k)."""
    k = torch.arange(t, dtype=torch.uint8)
    frames = k[None, :, None, None, None].expand(b, t, size, size, 3).clone()
    f = torch.arange(t - 1, dtype=torch.float32)
    flow = torch.stack([f, -f], -1)[None, :, None, None, :].expand(b, t - 1, size, size, 2).half()
    return frames, flow


def test_centre_pair_takes_the_stack_around_the_frame():
    frames, flow = numbered_clip()
    rgb, stack = centre_pair(frames, flow, "flow", 6)  # 7 fields → fields 0..5, centre frame 3
    assert rgb.shape == (2, 3, 32, 32) and stack.shape == (2, 12, 32, 32)
    assert torch.all(rgb == 3 / 255)
    assert stack[0, :, 0, 0].tolist() == [0, 0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5]  # dx₀,dy₀,dx₁,…
    rgb, stack = centre_pair(frames, flow, "diff", 4)  # differences 1..4 (frames 1..5), centre frame 3
    assert stack.shape == (2, 12, 32, 32) and torch.allclose(stack, torch.full_like(stack, 1 / 255))
    assert torch.all(rgb == 3 / 255)
    frames11, flow11 = numbered_clip(t=11)
    rgb, stack = centre_pair(frames11, flow11, "flow", 10)  # the paper's 10 fields of an 11-frame clip
    assert torch.all(rgb == 5 / 255) and stack[0, ::2, 0, 0].tolist() == list(range(10))
    with pytest.raises(ValueError, match="at least 9 frames"):
        centre_pair(frames, flow, "flow", 8)


def test_augmentations_keep_rgb_and_flow_aligned():
    """A square moving right: RGB channel 1 is the square, channel 0 a left-to-right ramp;
    flow is (1, 0.5) inside the square. After crop + flip the flow still sits on the square,
    dx is negated exactly when the frame was flipped, dy never, and crops that zoom in scale
    the flow up with the image."""
    b, size = 64, 32
    ramp = torch.linspace(0, 1, size).expand(size, size)
    square = torch.zeros(size, size)
    square[8:20, 4:14] = 1.0
    rgb = torch.stack([ramp, square, torch.zeros(size, size)])[None].repeat(b, 1, 1, 1)  # [B,3,H,W]
    stack = torch.stack([square, 0.5 * square])[None].repeat(b, 3, 1, 1)  # [B,6,H,W] 3 fields
    torch.manual_seed(0)
    rgb_a, stack_a = augment_pair(rgb, stack, "flow", size=size, time_flip=False, channel_split=False)
    flipped = rgb_a[:, 0, :, -1].mean(1) < rgb_a[:, 0, :, 0].mean(1)  # the ramp now falls to the right
    assert 10 < flipped.sum() < b - 10
    for i in range(b):
        on_square = rgb_a[i, 1] > 0.5
        moving = stack_a[i, 1].abs() > 0.25  # dy of field 0
        iou = (on_square & moving).sum() / (on_square | moving).sum()
        assert iou > 0.8, (i, iou)
        dx, dy = stack_a[i, 0][on_square], stack_a[i, 1][on_square]
        assert torch.all(torch.sign(dx) == (-1.0 if flipped[i] else 1.0))
        assert torch.all(dy > 0) and dx.abs().median() >= 0.95 and dy.median() >= 0.95 * 0.5  # zoomed in, never shrunk
        torch.testing.assert_close(stack_a[i, 2:], stack_a[i, :2].repeat(2, 1, 1))  # every field moved alike


def test_temporal_flip_reverses_and_negates_the_stack():
    b, n = 64, 4
    fields = torch.arange(1, n + 1, dtype=torch.float32)  # constant fields 1..4
    diff = fields.repeat_interleave(3)[None, :, None, None].expand(b, 3 * n, 32, 32).clone()  # [B,12,H,W]
    flow = torch.stack([torch.zeros(n), fields], 1).reshape(-1)[None, :, None, None].expand(b, 2 * n, 32, 32).clone()
    rgb = torch.rand(b, 3, 32, 32)
    torch.manual_seed(0)
    _, d = augment_pair(rgb, diff, "diff", size=32, channel_split=False)
    seen = set()
    for i in range(b):
        per_field = d[i].view(n, 3, -1).mean(-1)  # [n,3]
        assert torch.allclose(per_field, per_field[:, :1].expand(n, 3), atol=1e-5)
        seen.add(tuple(round(v) for v in per_field[:, 0].tolist()))
    assert seen == {(1, 2, 3, 4), (-4, -3, -2, -1)}
    _, f = augment_pair(rgb, flow, "flow", size=32, channel_split=False)
    dy = f[:, 1::2].mean((2, 3))  # [B,n]; unaffected by the horizontal flip, scaled by the zoom
    shape = dy / dy.abs().amax(1, keepdim=True)  # [B,n]
    forward, backward = fields / n, -(fields / n).flip(0)  # (¼,½,¾,1) or (−1,−¾,−½,−¼)
    is_forward = (shape - forward).abs().amax(1) < 1e-4
    is_backward = (shape - backward).abs().amax(1) < 1e-4
    assert (is_forward | is_backward).all() and 10 < is_backward.sum() < b - 10


def test_channel_split_in_training_and_channel_average_at_test():
    b = 32
    rgb = torch.tensor([0.2, 0.5, 0.8])[None, :, None, None].expand(b, 3, 32, 32)
    torch.manual_seed(0)
    split, _ = augment_pair(rgb, torch.zeros(b, 12, 32, 32), "flow", size=32)
    assert torch.equal(split[:, 0], split[:, 1]) and torch.equal(split[:, 1], split[:, 2])  # one channel copied
    assert {round(v, 3) for v in split[:, 0, 0, 0].tolist()} == {0.2, 0.5, 0.8}  # each channel gets picked
    ramp = torch.linspace(0, 1, 32).expand(32, 32)
    frames = (torch.stack([ramp * 0.2, ramp * 0.5, ramp * 0.8], -1) * 255).round().to(torch.uint8)  # [H,W,3]
    frames = frames[None, None].expand(4, 8, 32, 32, 3)
    rgb_test, _ = pair_input(frames, torch.zeros(4, 7, 32, 32, 2), "flow", 6, size=32, train=False)
    expected = frames[:, 3].float().mean(-1)  # the channel average, then standardised per frame
    expected = (expected - expected.mean((1, 2), keepdim=True)) / expected.std((1, 2), keepdim=True)
    for c in range(3):
        torch.testing.assert_close(rgb_test[:, c], expected, rtol=1e-3, atol=1e-3)


def test_flow_fields_lose_their_mean():
    frames, flow = numbered_clip(b=4)
    flow = flow.float() + torch.randn(4, 7, 32, 32, 2)
    for train in (False, True):
        _, stack = pair_input(frames, flow, "flow", 6, size=28, train=train)
        assert stack.shape == (4, 12, 28, 28)
        assert stack.mean((2, 3)).abs().max() < 1e-5  # camera motion removed per field and axis


# --- the method in-process ----------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["cross_and_learn", "only_div", "concat"])
@pytest.mark.parametrize("modality", ["flow", "diff"])
def test_forward_backward_every_variant(variant, modality):
    model = build(**{"method.variant": variant, "method.modality": modality}).train()
    out = model(random_batch())
    expected = {"loss", "loss_cross", "loss_div", "spread_rgb", f"spread_{modality}", "std_rgb", f"std_{modality}"}
    assert set(out) == expected | ({"acc_concat"} if variant == "concat" else set())
    assert all(torch.isfinite(v) for v in out.values())
    if variant == "only_div":
        assert out["loss"].item() == pytest.approx(-out["loss_div"].item(), rel=1e-5)
    elif variant == "cross_and_learn":
        assert out["loss"].item() == pytest.approx(out["loss_cross"].item() - out["loss_div"].item(), abs=1e-5)
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    feats = model.eval().embed(random_batch(b=3))  # probe batches may be odd
    assert set(feats) == {"rgb", modality} and all(v.shape == (3, 256) for v in feats.values())
    assert hasattr(model, "concat_head") == (variant == "concat")


def test_feature_spread_detects_collapse():
    """The logged collapse metrics: mean pairwise cosine distance and per-dimension std."""
    spread, std = cal.feature_spread(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # orthogonal rows
    assert spread.item() == pytest.approx(1.0) and std.item() == pytest.approx(2**-0.5)
    spread, std = cal.feature_spread(torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
    # distances: 1 − 1/√2 (twice) and 1 → mean over the 6 ordered pairs
    assert spread.item() == pytest.approx((2 * (1 - 2**-0.5) + 1) / 3)
    torch.manual_seed(0)
    healthy = cal.feature_spread(torch.relu(torch.randn(64, 32)))
    collapsed = cal.feature_spread(torch.relu(torch.randn(1, 32)).expand(64, 32) + 1e-4 * torch.randn(64, 32))
    dead = cal.feature_spread(torch.zeros(64, 32))
    assert healthy[0] > 0.4 and healthy[1] > 0.4
    assert collapsed[0] < 1e-4 and collapsed[1] < 1e-3
    assert dead[1] == 0  # all-zero features: the std catches what the cosine cannot


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="method.variant"):
        make_config("cross_and_learn", "tiny", {"method.variant": "siamese"})
    with pytest.raises(ConfigError, match="method.div_weight"):
        make_config("cross_and_learn", "tiny", {"method.div_weight": "-1"})
    with pytest.raises(ConfigError, match="method.flow_fields: .*--clip-frames 11"):
        build(**{"method.flow_fields": 10})  # the paper's stack on 8-frame clips
    with pytest.raises(ConfigError, match="batch_size: must be even"):
        build(batch_size=31)
    with pytest.raises(ConfigError, match="method.modality: flow needs prepared flow"):
        build({"frames": SPECS["frames"]})
    assert isinstance(build({"frames": SPECS["frames"]}, **{"method.modality": "diff"}), cal.CrossAndLearn)


# --- learning, end to end through Ray -------------------------------------------------------------
@pytest.mark.slow
def test_rgb_probe_beats_random_init(prepared, tmp_path):
    """The tiny preset on the synthetic set: L_cross falls, the features do not collapse, and
    the RGB network (trained only to agree with the flow network) beats its random init on a
    linear probe (5-fold CV over all videos: one 48-video test split is too noisy)."""
    import json
    import os

    from raysup.checkpoint import latest_checkpoint
    from raysup.evaluate import cv_probe

    data, labels = prepared
    cfg = make_config("cross_and_learn", "tiny")
    run_dir = str(tmp_path / "cal")
    runner.train(cfg, data, run_dir)
    logged = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert logged[-1]["loss_cross"] < logged[0]["loss_cross"], logged
    assert logged[-1]["spread_rgb"] > 0.05 and logged[-1]["spread_flow"] > 0.05, logged[-1]  # no collapse
    trained, random = cv_probe(cfg, data, labels, latest_checkpoint(run_dir)), cv_probe(cfg, data, labels, None)
    print(f"cross_and_learn probe (5-fold): {trained} vs random init {random}; per epoch {logged}")
    assert trained["rgb"] > random["rgb"] + 0.08, (trained, random)


def test_frame_differences_get_crops_and_flips_only():
    """papers/cross-and-learn.md L185: no temporal flip of the frame differences (flow stacks keep theirs)."""
    levels = torch.tensor([t * t * 5 for t in range(8)], dtype=torch.uint8)  # frame t is uniformly t²·5
    batch = {"frames": levels[None, :, None, None, None].expand(64, 8, 32, 32, 3).clone()}
    model = build(**{"method.modality": "diff"})
    assert model.cfg.time_flip
    torch.manual_seed(0)
    _, stack = model.inputs(batch, train=True)  # [B,12,S,S]
    per_field = stack.view(64, 4, 3, -1).mean((2, 3)) * 255  # [B,4]: frames 1..5's differences
    assert torch.allclose(per_field, torch.tensor([15.0, 25.0, 35.0, 45.0]).expand(64, 4), atol=1e-3)


def test_paper_presets_pretrain_on_the_train_split(small_prepared):
    """L97, L113: UCF-101's train split only; with a labels CSV, its test videos never enter pretraining."""
    from raysup.data.ingest import PreparedData
    from raysup.data.labels import read_labels_csv

    data, labels = PreparedData(small_prepared[0]), small_prepared[1]
    test = {r.video_id for r in read_labels_csv(labels) if r.split == "test"}
    paper = make_config("cross_and_learn", "paper")
    assert paper.method.pretrain_split == "train" and make_config("cross_and_learn", "paper_vgg16").method.pretrain_split == "train"
    left = cal.left_out_videos(paper, data, labels)
    assert test and set(left) == set(data.video_ids) & test
    assert cal.left_out_videos(paper, data, None) == []  # no labels: all prepared videos
    assert cal.left_out_videos(make_config("cross_and_learn", "tiny"), data, labels) == []


@pytest.mark.slow  # ~20 s: groups the clips by video with Ray Data
def test_train_split_pretraining_draws_only_train_videos(small_prepared):
    from raysup.data.ingest import PreparedData

    data, labels = PreparedData(small_prepared[0]), small_prepared[1]
    kept = set(data.video_ids) - set(cal.left_out_videos(make_config("cross_and_learn", "paper"), data, labels))
    stage = cal.datasets(make_config("cross_and_learn", "tiny", {"method.pretrain_split": "train", "method.pairs_per_video": 1}), data, labels)
    drawn = set(stage.train.to_pandas()["video_id"])
    assert stage.rows_per_epoch == len(kept) and drawn == set(kept)


def test_only_the_pairs_frame_and_stack_are_decoded(small_prepared):
    """Training decodes a pair's frame and flow stack, nothing else of the clip (the other frames
    and fields stay zero), and the network gets the same inputs as from the whole clip."""
    import pyarrow.parquet as pq

    from raysup.data.codec import decode_clips, pick_images
    from raysup.data.ingest import ClipCollate, PreparedData

    data = PreparedData(small_prepared[0])
    cfg = make_config("cross_and_learn", "tiny")
    rows = pq.read_table(f"{data.uri}/{data.shards()[0]}", columns=list(cal.COLUMNS)).slice(0, 4)
    picks = cal.decoded_images(cfg.method, data.specs)
    assert picks == {"frames": [3], "flow": [0, 1, 2, 3, 4, 5]}  # 8 frames, a stack of 6 of the 7 fields
    collate = ClipCollate(data.specs)
    full = collate(decode_clips(rows, layout=data.layout()))
    drawn = collate(decode_clips(pick_images(rows, **picks), layout=data.layout()))
    assert drawn["frames"][:, 3].equal(full["frames"][:, 3]) and full["frames"].bool().any(dim=(2, 3, 4)).all()
    assert not drawn["frames"][:, [0, 1, 2, 4, 5, 6, 7]].any() and not drawn["flow"][:, 6].any()
    model = cal.build(cfg, data.specs).eval()
    for a, b in zip(model.inputs(drawn, train=False), model.inputs(full, train=False)):
        assert a.equal(b)
