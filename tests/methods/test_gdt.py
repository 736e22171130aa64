"""GDT: both negative modes in-process, the memory queue (FIFO, wrap-around, checkpointing),
the momentum update, SpecAugment and volume jitter, the per-video clip sampling, the
distributed helpers on two real gloo processes, and learning end to end through Ray."""
from __future__ import annotations

import itertools
import json
import math
import os
import runpy
import socket

import numpy as np
import pyarrow as pa
import pytest
import torch

from raysup import runner
from raysup.cli import main
from raysup.config import ConfigError, from_dict, to_dict
from raysup.data import tables
from raysup.data.specaugment import SPECAUGMENT_PRESETS, SpecAugmentParams, spec_augment, volume_jitter
from raysup.methods import gdt, make_config
from raysup.models import parts

B = 4
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(**method):
    torch.manual_seed(0)
    cfg = make_config("gdt", "tiny", {f"method.{k}": v for k, v in method.items()})
    return gdt.build(cfg, {"frames": None, "audio": None})


def random_batch(b=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "frames": torch.randint(0, 256, (b, 8, 32, 32, 3), dtype=torch.uint8, generator=g),  # [B,T,H,W,3]
        "audio": torch.randn(b, 40, 99, generator=g).half(),  # [B,M,F] log-mel
        "audio_async": torch.randn(b, 40, 99, generator=g).half(),
    }


@pytest.mark.parametrize(
    "method",
    [
        {"negatives": "batch"},
        {"negatives": "queue", "queue_size": 16, "sync": False, "specaugment": "strong", "volume_jitter_db": 3.0},
    ],
    ids=["batch", "queue-async-augmented"],
)
def test_forward_backward_both_modes(method):
    model = build(**method).train()
    out = model(random_batch())
    assert set(out) == {"loss", "reid_top1"}
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 0
    assert 0.0 <= out["reid_top1"].item() <= 1.0
    out["loss"].backward()
    grads = [p.grad for p in model._query_modules().parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if method["negatives"] == "queue":
        assert all(p.grad is None and not p.requires_grad for p in model._key_modules().parameters())
        assert int(model.queue_ptr) == B  # this batch's keys were enqueued
    feats = model.eval().embed(random_batch())
    assert feats["video"].shape == (B, 128) and feats["audio"].shape == (B, 128)  # encoder features


def test_batch_mode_has_no_queue_or_key_encoders():
    model = build(negatives="batch")
    assert not any("queue" in k or k.startswith("key_") for k in model.state_dict())
    model.after_step(1, 1)  # a no-op


def onehot_keys(start, n, dim=8):
    """Distinct unit vectors: key i = e_(i mod dim) + (i // dim)·e_0 direction-tagged by i."""
    k = torch.zeros(n, dim)
    for j in range(n):
        i = start + j
        k[j, i % dim] = 1.0
        k[j, (i + 1) % dim] = 0.1 * (i + 1)  # makes every key distinct after normalisation
    return torch.nn.functional.normalize(k, dim=1)


def test_queue_fifo_and_wrap_around():
    model = build(negatives="queue", queue_size=5, head_out=8)
    keys = onehot_keys(0, 20)
    model.enqueue(keys[:3], -keys[:3])
    assert int(model.queue_ptr) == 3
    torch.testing.assert_close(model.queue_video[:3], keys[:3])
    torch.testing.assert_close(model.queue_audio[:3], -keys[:3])
    model.enqueue(keys[3:7], -keys[3:7])  # wraps: slots 3, 4, 0, 1
    assert int(model.queue_ptr) == 2
    torch.testing.assert_close(model.queue_video, keys[[5, 6, 2, 3, 4]])
    model.enqueue(keys[7:19], -keys[7:19])  # 12 > K=5: only the newest 5 survive
    assert int(model.queue_ptr) == (2 + 12) % 5
    ptr = int(model.queue_ptr)
    oldest_first = torch.stack([model.queue_video[(ptr + i) % 5] for i in range(5)])
    torch.testing.assert_close(oldest_first, keys[14:19])  # FIFO order, newest at ptr − 1
    torch.testing.assert_close(model.queue_audio[(ptr - 1) % 5], -keys[18])


def test_forward_enqueues_only_in_training():
    model = build(negatives="queue", queue_size=6)
    before = model.queue_video.clone()
    with torch.no_grad():
        model.eval()(random_batch())
    assert int(model.queue_ptr) == 0 and torch.equal(model.queue_video, before)
    with torch.no_grad():
        model.train()(random_batch())
        model(random_batch(seed=1))
    assert int(model.queue_ptr) == (2 * B) % 6
    assert torch.allclose(model.queue_video.norm(dim=1), torch.ones(6))


def test_queue_survives_state_dict_round_trip():
    model = build(negatives="queue", queue_size=7, head_out=8)
    model.enqueue(onehot_keys(0, 9), onehot_keys(30, 9))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert {"queue_video", "queue_audio", "queue_ptr"} <= set(state)
    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    resumed = gdt.GDT(model.cfg)
    assert not torch.equal(resumed.queue_video, model.queue_video)
    resumed.load_state_dict(state)
    assert int(resumed.queue_ptr) == int(model.queue_ptr) == 2
    for m in (model, resumed):  # the resumed run continues the same queue
        m.enqueue(onehot_keys(50, 3), onehot_keys(60, 3))
    torch.testing.assert_close(resumed.queue_video, model.queue_video)
    torch.testing.assert_close(resumed.queue_audio, model.queue_audio)
    assert int(resumed.queue_ptr) == int(model.queue_ptr) == 5


def test_momentum_update_moves_keys_by_one_minus_m_times_difference():
    m = 0.9
    model = build(negatives="queue", momentum=m)
    with torch.no_grad():  # pretend an optimiser step moved the query encoders
        for p in model._query_modules().parameters():
            p.add_(torch.randn_like(p))
    q = [p.detach().clone() for p in model._query_modules().parameters()]
    k0 = [p.detach().clone() for p in model._key_modules().parameters()]
    model.after_step(1, 1)
    k1 = [p.detach().clone() for p in model._key_modules().parameters()]
    assert len(q) == len(k0) > 10
    for qi, a, b in zip(q, k0, k1):
        torch.testing.assert_close(b - a, (1 - m) * (qi - a), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(q, [p.detach() for p in model._query_modules().parameters()]))


# --- augmentations ----------------------------------------------------------------------------
def masked_counts(x, y):
    """Per sample: (#mel rows, #time columns) set entirely to 0 in y; checks that nothing else changed."""
    zero = y == 0
    rows = zero.all(dim=-1)  # [B,C,M]
    cols = zero.all(dim=-2)  # [B,C,F]
    explained = rows[..., :, None] | cols[..., None, :]
    assert torch.equal(zero, explained), "a masked value outside a whole row/column"
    assert torch.equal(y[~zero], x[~zero]), "an unmasked value changed"
    return rows.sum(dim=(1, 2)), cols.sum(dim=(1, 2))


@pytest.mark.parametrize("preset", ["mild", "strong"])
def test_specaugment_presets_mask_what_they_claim(preset):
    p = SPECAUGMENT_PRESETS[preset]
    torch.manual_seed(0)
    x = torch.randn(512, 1, 40, 99)  # standardised spectrograms: no exact zeros
    y = spec_augment(x, p, mask_value=0.0)
    rows, cols = masked_counts(x, y)
    # each of nf (nt) masks covers floor(U[0, f)) ≤ f − 1 rows (frames)
    assert rows.max() <= p.freq_masks * (p.freq_width - 1) and cols.max() <= p.time_masks * (p.time_width - 1)
    # without overlaps the mean is n·(f − 1)/2; overlaps only lower it a little
    exp_rows, exp_cols = p.freq_masks * (p.freq_width - 1) / 2, p.time_masks * (p.time_width - 1) / 2
    assert 0.75 * exp_rows < rows.float().mean() <= exp_rows * 1.15
    assert 0.75 * exp_cols < cols.float().mean() <= exp_cols * 1.15
    assert rows.max() == p.freq_masks * (p.freq_width - 1) and cols.max() == p.time_masks * (p.time_width - 1)


def test_specaugment_none_explicit_and_config():
    x = torch.randn(3, 40, 99)
    assert torch.equal(spec_augment(x, SPECAUGMENT_PRESETS["none"]), x)
    assert gdt.Config(specaugment="mild").specaugment_params == SpecAugmentParams(1, 2, 1, 5)
    assert gdt.Config(specaugment="strong").specaugment_params == SpecAugmentParams(2, 3, 2, 6)
    assert gdt.Config(specaugment_masks=(3, 4, 0, 0)).specaugment_params == SpecAugmentParams(3, 4, 0, 0)
    torch.manual_seed(1)
    rows, cols = masked_counts(x.unsqueeze(1), spec_augment(x, SpecAugmentParams(3, 4, 0, 0)).unsqueeze(1))  # [B,M,F] works too
    assert cols.sum() == 0 and rows.max() <= 9 and rows.sum() > 0
    with pytest.raises(ConfigError, match="method.specaugment_masks"):
        make_config("gdt", "tiny", {"method.specaugment_masks": "1,2,3"})
    with pytest.raises(ConfigError, match="method.specaugment_masks: .*specaugment='mild' both set"):  # neither silently wins
        make_config("gdt", "tiny", {"method.specaugment": "mild", "method.specaugment_masks": "3,4,0,0"})


def test_paper_preset_takes_the_specaugment_level_it_is_given(capsys):
    """`raysup config gdt --preset paper --set method.specaugment=…` resolves Table 1b's levels
    (papers/gdt.md L170); the preset's own level is the official script's medium."""
    resolved = {}
    for level in ("none", "mild", "strong", None):
        assert main(["config", "gdt", "--preset", "paper", *(["--set", f"method.specaugment={level}"] if level else [])]) == 0
        resolved[level] = from_dict(gdt.Config, json.loads(capsys.readouterr().out)["method"]).specaugment_params
    assert resolved == {"none": SpecAugmentParams(), "mild": SpecAugmentParams(1, 2, 1, 5),
                        "strong": SpecAugmentParams(2, 3, 2, 6), None: SpecAugmentParams(1, 3, 1, 6)}


@pytest.mark.parametrize("script", ["gdt_specaugment_sweep.py", "gdt_temporal_jitter.py"])
def test_table_1_paper_grids_train_distinct_configs(script):
    """Every point of the Table 1 sweeps' --paper grid resolves to its own training config, with
    A.1's ablation settings (papers/gdt.md L318: 100 epochs, no audio augmentation but the SA under study)."""
    ns = runpy.run_path(os.path.join(ROOT, "experiments", script))
    points = [dict(zip(ns["GRID"], v)) for v in itertools.product(*ns["GRID"].values())]
    cfgs = [make_config("gdt", "paper", {**ns["PAPER_BASE"], **p}) for p in points]
    assert len({json.dumps(to_dict(c), sort_keys=True) for c in cfgs}) == len(points)
    assert all(c.epochs == 100 and c.method.volume_jitter_db == 0 for c in cfgs)
    if script == "gdt_specaugment_sweep.py":  # each point its own audio augmentation and sampling
        assert len({(c.method.specaugment_params, c.method.sync) for c in cfgs}) == len(points)
    else:  # subtable (a): synchronised, no audio augmentation
        assert all(c.method.sync and not c.method.specaugment_params.active for c in cfgs)


def test_volume_jitter_is_a_bounded_additive_gain():
    torch.manual_seed(0)
    x = torch.rand(64, 40, 99) * 6 - 3  # log power well above the log floor (ln 1e-6 ≈ −13.8)
    y = volume_jitter(x, 6.0)
    shift = y - x
    per_clip = shift[:, :1, :1]
    assert torch.allclose(shift, per_clip.expand_as(shift), atol=1e-4)  # one constant per clip
    bound = 6.0 * math.log(10) / 10
    assert per_clip.abs().max() <= bound + 1e-5 and per_clip.std() > bound / 4  # uses the range
    floor = torch.full((2, 40, 99), math.log(1e-6))
    torch.testing.assert_close(volume_jitter(floor, 6.0), floor)  # silence stays silent
    assert torch.equal(volume_jitter(x, 0.0), x)


# --- data sampling -----------------------------------------------------------------------------
def video_group(n_clips, with_audio=None, video_id="v"):
    """One video's clips, stored out of clip order; clip i's frames are bytes 100+i, its audio
    three bytes i and the video id's last character."""
    order = list(range(n_clips))[::-1]
    audio = [bytes([i]) * 3 + video_id[-1].encode() if (with_audio is None or with_audio[i]) else None for i in order]
    return pa.table({
        "video_id": pa.array([video_id] * n_clips),
        "clip_index": pa.array(order, pa.int32()),
        "frames": pa.array([bytes([100 + i]) * 2 for i in order], pa.binary(2)),
        "audio": pa.array(audio, pa.binary(4)),
    })


def test_pack_videos_keeps_clips_with_audio_in_clip_order():
    packed = tables.pack_videos(video_group(4, [True, False, True, True]), require=("audio",))
    assert packed.num_rows == 1 and packed["video_id"][0].as_py() == "v"
    assert packed["clip_index"][0].as_py() == [0, 2, 3]
    assert packed["frames"][0].as_py() == [bytes([100 + i]) * 2 for i in (0, 2, 3)]
    assert tables.pack_videos(video_group(2, [False, False]), require=("audio",)).num_rows == 0  # no audio, no positive
    assert tables.pack_videos(video_group(2, [False, False]))["clip_index"][0].as_py() == [0, 1]  # nothing required
    # a shard's clips, videos interleaved: one row per video, each with exactly its own clips
    mixed = pa.concat_tables([video_group(3, video_id="b"), video_group(2, video_id="a"), video_group(1, video_id="c")]).take([0, 3, 5, 1, 4, 2])
    packed = tables.pack_videos(mixed)
    assert packed["video_id"].to_pylist() == ["a", "b", "c"]
    assert packed["clip_index"].to_pylist() == [[0, 1], [0, 1, 2], [0]]
    assert [a[-1:] for a in packed["audio"][1].as_py()] == [b"b"] * 3


def test_draw_jitter_and_async_audio():
    rng = np.random.default_rng(0)
    videos = pa.concat_tables([tables.pack_videos(video_group(n, video_id=f"v{n}")) for n in (4, 1, 3)])
    fixed = tables.draw_video_clips(videos, draws=2, first_only=True, rng=rng)
    assert fixed["video_id"].to_pylist() == ["v4", "v4", "v1", "v1", "v3", "v3"]
    assert fixed["clip_index"].to_pylist() == [0] * 6 and "audio_async" not in fixed.column_names
    chosen = {"v4": set(), "v3": set()}
    for _ in range(40):
        rows = tables.draw_video_clips(videos, draws=1, async_audio=True, rng=rng)
        assert rows.num_rows == 3 and rows.schema.field("audio_async").type == pa.binary(4)  # same fixed-size encoding
        for r in rows.to_pylist():
            i = r["clip_index"]
            assert r["frames"] == bytes([100 + i]) * 2 and r["audio"][:3] == bytes([i]) * 3  # one clip's frames and audio
            if r["video_id"] == "v1":
                assert r["audio_async"] == r["audio"]  # a single clip is its own async partner
            else:
                assert r["audio_async"] != r["audio"] and r["audio_async"][3:] == r["audio"][3:]  # another clip, same video
                chosen[r["video_id"]].add(i)
    assert chosen == {"v4": {0, 1, 2, 3}, "v3": {0, 1, 2}}  # temporal jitter reaches every clip
    # a slice of the packed table (as Ray Data hands over blocks) draws from its own videos only
    tail = tables.draw_video_clips(videos.slice(1, 2), draws=1, first_only=True, async_audio=True, rng=rng)
    assert tail["video_id"].to_pylist() == ["v1", "v3"] and tail["frames"].to_pylist() == [bytes([100]) * 2] * 2


# --- distributed helpers on two real processes ---------------------------------------------------
def other_rows_reference(b, w, r):
    return [[j for j in range(w * b) if j != r * b + i] for i in range(b)]


def test_other_rows_and_single_process_shuffle_identity():
    for b, w in [(1, 1), (3, 1), (2, 3)]:
        for r in range(w):
            assert gdt.other_rows(b, w, r, "cpu").tolist() == other_rows_reference(b, w, r)
    x = torch.randn(4, 3)
    (y,), unshuffle = parts.shuffle_across_workers([x])
    assert y is x and unshuffle(x) is x


def _two_worker_main(rank, port, out_dir):
    import torch.distributed as tdist

    from raysup.losses import gdt_nce_loss
    from raysup.methods import gdt as g

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    v_all, a_all = torch.randn(6, 5, requires_grad=True), torch.randn(6, 5, requires_grad=True)  # global batch
    v, a = v_all[3 * rank : 3 * rank + 3], a_all[3 * rank : 3 * rank + 3]  # this worker's rows
    audio_neg, video_neg = g.batch_negatives(v, a)
    loss = gdt_nce_loss(v, a, a, v, audio_neg, video_neg, tau=0.2)
    loss.backward()
    torch.manual_seed(100 + rank)  # the permutation must come from rank 0 only
    x = torch.arange(3 * rank, 3 * rank + 3).float()[:, None].repeat(1, 2)  # [3,2] row id per row
    frames = torch.arange(3 * rank, 3 * rank + 3, dtype=torch.uint8)[:, None, None].repeat(1, 2, 2)  # [3,2,2] uint8 rows
    (xs, fs), unshuffle = parts.shuffle_across_workers([x, frames])
    torch.save(
        {"loss": loss.detach(), "grad_v": v_all.grad, "grad_a": a_all.grad, "shuffled": xs, "frames": fs, "restored": unshuffle(xs * 10)},
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    tdist.destroy_process_group()


def test_batch_negatives_and_shuffled_bn_on_two_processes(tmp_path):
    import torch.multiprocessing as mp

    from raysup.losses import gdt_nce_loss

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_two_worker_main, args=(port, str(tmp_path)), nprocs=2, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # the mean of the workers' losses (what DDP optimises) = one process on the global batch
    torch.manual_seed(0)
    v_all, a_all = torch.randn(6, 5, requires_grad=True), torch.randn(6, 5, requires_grad=True)
    audio_neg, video_neg = gdt.batch_negatives(v_all, a_all)
    ref = gdt_nce_loss(v_all, a_all, a_all, v_all, audio_neg, video_neg, tau=0.2)
    ref.backward()
    assert ((res[0]["loss"] + res[1]["loss"]) / 2).item() == pytest.approx(ref.item(), rel=1e-5)
    # gradients reach the other worker's rows: summed over workers and averaged (DDP) they match
    torch.testing.assert_close((res[0]["grad_v"] + res[1]["grad_v"]) / 2, v_all.grad)
    torch.testing.assert_close((res[0]["grad_a"] + res[1]["grad_a"]) / 2, a_all.grad)
    assert res[0]["grad_v"][3:].abs().sum() == 0 and res[0]["grad_v"][:3].abs().sum() > 0  # each worker owns its rows
    # shuffled BN: rank 0's permutation of the global batch (moved by all-to-all, each tensor
    # alike whatever its dtype), and outputs come back to their rows
    torch.manual_seed(100)
    perm = torch.randperm(6)
    assert torch.cat([r["shuffled"][:, 0] for r in res]).tolist() == perm.tolist()
    assert torch.cat([r["frames"][:, 0, 0] for r in res]).tolist() == perm.tolist() and res[0]["frames"].dtype == torch.uint8
    for r in range(2):
        expected = torch.arange(3 * r, 3 * r + 3).float()[:, None].repeat(1, 2) * 10
        torch.testing.assert_close(res[r]["restored"], expected)


# --- learning, end to end through Ray -------------------------------------------------------------
@pytest.mark.slow
def test_gdt_probe_beats_random_init(prepared, tmp_path):
    import time

    from raysup.checkpoint import latest_checkpoint
    from raysup.evaluate import probe

    data, labels = prepared
    cfg = make_config("gdt", "tiny")
    run_dir = str(tmp_path / "run")
    t0 = time.time()
    runner.train(cfg, data, run_dir)
    t_train = time.time() - t0
    trained = probe(cfg, data, labels, latest_checkpoint(run_dir))
    random = probe(cfg, data, labels, None)
    print(f"gdt probe {trained} vs random init {random}; training {t_train:.0f} s")
    assert trained["video"] >= random["video"] + 0.10, (trained, random)
