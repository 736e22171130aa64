"""The synthetic dataset: real decodable mp4s with audio, UCF101-like lists, determinism,
and a class signal that crude motion/audio features find but pixel means do not."""
from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from raysup.data.synthetic import (
    _MOTIONS,
    CLASS_NAMES,
    PATTERNS,
    SynthConfig,
    event_times,
    make_synthetic,
    trajectory,
)

# 6 videos per class in 2 groups of 3; non-default fps and sample rate to check they are written.
CFG = SynthConfig(videos=36, classes=6, size=32, seconds=2.0, fps=8, sample_rate=16000, seed=0)
TINY = SynthConfig(videos=4, classes=2, size=16, seconds=1.0, fps=8, sample_rate=16000, seed=0)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("synth"), CFG)


def decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Frames float32 [T,H,W,3] in [0,1] and mono audio float32 [N]."""
    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)[0]
    return frames.astype(np.float32) / 255, audio


def labels(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_videos_have_video_and_audio_streams_of_the_configured_format(synth):
    files = sorted((synth / "videos").rglob("*.mp4"))
    assert len(files) == CFG.videos
    for path in files[:: CFG.videos // CFG.classes]:  # one per class
        with av.open(str(path)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert (v.codec_context.name, v.width, v.height, v.average_rate) == ("h264", 32, 32, 8)
            assert v.codec_context.pix_fmt == "yuv420p"
            assert (a.codec_context.name, a.sample_rate, a.channels) == ("aac", 16000, 1)
            assert c.duration / 1e6 == pytest.approx(CFG.seconds, abs=1 / CFG.fps)
            assert float(v.duration * v.time_base) == pytest.approx(CFG.seconds, abs=1e-6)
        frames, audio = decode(path)
        assert frames.shape == (CFG.frames, 32, 32, 3)
        assert CFG.samples <= len(audio) < CFG.samples + 1024  # AAC pads the last frame
        assert 0.05 < np.abs(audio).max() <= 1.0


def test_labels_csv_is_balanced_split_by_group_and_matches_files(synth):
    rows = labels(synth)
    assert list(rows[0]) == ["video_id", "label", "split"]
    files = {p.relative_to(synth / "videos").with_suffix("").as_posix() for p in (synth / "videos").rglob("*.mp4")}
    assert {r["video_id"] for r in rows} == files and len(rows) == len(files)
    names = CLASS_NAMES[: CFG.classes]
    for name in names:
        mine = [r for r in rows if r["label"] == name]
        assert len(mine) == CFG.videos // CFG.classes
        assert all(r["video_id"].startswith(f"{name}/v_{name}_g") for r in mine)
        assert {r["split"] for r in mine} == {"train", "test"}
        groups = {s: {r["video_id"].rsplit("_", 2)[1] for r in mine if r["split"] == s} for s in ("train", "test")}
        assert not groups["train"] & groups["test"]  # split by group, as UCF101
    assert json.loads((synth / "synthetic.json").read_text())["complete"] is True


def test_split_files_agree_with_labels_csv(synth):
    rows = labels(synth)
    class_ind = (synth / "splits" / "classInd.txt").read_text().split("\n")
    assert class_ind[:-1] == [f"{i + 1} {n}" for i, n in enumerate(CLASS_NAMES[: CFG.classes])]
    index = {n: i + 1 for i, n in enumerate(CLASS_NAMES)}
    train = (synth / "splits" / "trainlist01.txt").read_text().splitlines()
    test = (synth / "splits" / "testlist01.txt").read_text().splitlines()
    assert train == [f"{r['video_id']}.mp4 {index[r['label']]}" for r in rows if r["split"] == "train"]
    assert test == [f"{r['video_id']}.mp4" for r in rows if r["split"] == "test"]


def test_same_seed_same_dataset_other_seed_other_videos(tmp_path):
    a = make_synthetic(tmp_path / "a", TINY)
    b = make_synthetic(tmp_path / "b", TINY, workers=2)  # a process pool changes nothing
    c = make_synthetic(tmp_path / "c", replace(TINY, seed=1))
    assert (a / "labels.csv").read_bytes() == (b / "labels.csv").read_bytes() == (c / "labels.csv").read_bytes()
    for row in labels(a):
        name = f"videos/{row['video_id']}.mp4"
        (fa, aa), (fb, ab), (fc, ac) = decode(a / name), decode(b / name), decode(c / name)
        assert np.array_equal(fa, fb) and np.array_equal(aa, ab)
        assert np.abs(fa - fc).mean() > 0.02 and not np.allclose(aa, ac, atol=1e-2)


def test_rewrites_an_earlier_output_but_refuses_other_directories(tmp_path):
    out = make_synthetic(tmp_path / "s", replace(TINY, videos=6, classes=3))
    make_synthetic(out, TINY)
    assert len(list((out / "videos").rglob("*.mp4"))) == TINY.videos  # no stale videos left
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="other"):
        make_synthetic(tmp_path / "other", TINY)
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


def test_a_rerun_deletes_only_what_synth_wrote(tmp_path):
    """The user's files under videos/, splits/ and the output folder survive a rerun with another
    config; the earlier run's videos and lists are replaced."""
    out = make_synthetic(tmp_path / "s", replace(TINY, videos=6, classes=3))
    mine = {"videos/notes.txt": "mine", "videos/bounce_h_circle/my_clip.mp4": "my video", "videos/extra/x.mp4": "x",
            "splits/my_split.txt": "mine", "notebook.ipynb": "{}"}
    for name, text in mine.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    make_synthetic(out, TINY)
    assert {name: (out / name).read_text() for name in mine} == mine
    ours = {p.relative_to(out / "videos").with_suffix("").as_posix() for p in (out / "videos").rglob("*.mp4")} - {"bounce_h_circle/my_clip", "extra/x"}
    assert ours == {r["video_id"] for r in labels(out)} and len(ours) == TINY.videos
    assert sorted(p.name for p in (out / "splits").iterdir()) == ["classInd.txt", "my_split.txt", "testlist01.txt", "trainlist01.txt"]
    assert not (out / "videos" / CLASS_NAMES[2]).exists()  # the earlier run's third class: its folder went with its videos


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"classes": len(PATTERNS) + 1}, "classes"),
        ({"classes": 1}, "classes"),
        ({"videos": 13}, "videos"),
        ({"videos": 6}, "videos"),  # one group per class: no train/test split
        ({"size": 33}, "size"),
        ({"seconds": 0.1}, "seconds"),
        ({"fps": 0}, "fps"),
        ({"sample_rate": 20000}, "sample_rate"),
        ({"test_fraction": 1.0}, "test_fraction"),
    ],
)
def test_config_errors_name_the_field(changes, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        SynthConfig(**changes)


@pytest.mark.parametrize("motion", sorted(_MOTIONS))
def test_sound_events_fall_on_the_sprites_turning_points(motion):
    """Audio onsets are synced to the video: at every event time the position or scale turns."""
    phase0, freq, eps = 0.37, 0.8, 1e-3
    times = event_times(motion, phase0, freq, seconds=4.0, lead=0.0)
    assert len(times) >= 3 and times.min() >= 0 and times.max() < 4.0
    for t in times:
        before, at, after = (np.stack(trajectory(motion, np.array([phase0 + freq * s]), 1.0))[:, 0]
                             for s in (t - eps, t, t + eps))
        assert np.any((at - before) * (after - at) < 0), (motion, t)


def _nearest_centroid_loo(x: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out accuracy of a nearest-centroid classifier on standardised features."""
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    classes = sorted(set(y))
    hits = 0
    for i in range(len(x)):
        rest = np.arange(len(x)) != i
        centroids = np.stack([x[rest & (y == k)].mean(0) for k in classes])
        hits += classes[int(np.argmin(((centroids - x[i]) ** 2).sum(1)))] == y[i]
    return hits / len(x)


def _motion_feature(frames: np.ndarray) -> list[float]:
    """Spread and speed of the motion centroid along x and y, from frame differences."""
    diff = np.abs(np.diff(frames, axis=0)).sum(-1)  # [T-1,H,W]
    w = np.maximum(diff - np.median(diff, axis=(1, 2), keepdims=True), 0)
    w = w / (w.sum((1, 2), keepdims=True) + 1e-6)
    pos = np.arange(frames.shape[1])
    mx, my = (w.sum(1) * pos).sum(-1), (w.sum(2) * pos).sum(-1)  # [T-1] each
    return [mx.std(), my.std(), np.abs(np.diff(mx)).mean(), np.abs(np.diff(my)).mean()]


def _audio_feature(audio: np.ndarray, sample_rate: int) -> list[float]:
    """Log power in 32 log-spaced bands from 150 Hz to 6 kHz."""
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / sample_rate)
    edges = np.geomspace(150, 6000, 33)
    return [np.log(power[(freqs >= lo) & (freqs < hi)].sum() + 1e-9) for lo, hi in zip(edges[:-1], edges[1:])]


def test_class_is_in_motion_and_in_audio_but_not_in_pixel_means(synth):
    rows = labels(synth)
    motion, sound, means = [], [], []
    for row in rows:
        frames, audio = decode(synth / "videos" / f"{row['video_id']}.mp4")
        motion.append(_motion_feature(frames))
        sound.append(_audio_feature(audio, CFG.sample_rate))
        means.append(frames.mean((0, 1, 2)))
    y = np.array([r["label"] for r in rows])
    acc = {name: _nearest_centroid_loo(np.array(x, dtype=np.float64), y)
           for name, x in (("motion", motion), ("audio", sound), ("pixel_mean", means))}
    assert acc["motion"] > 0.45 and acc["audio"] > 0.45, acc  # chance: 1/6
    assert acc["pixel_mean"] < 0.35, acc
    assert min(acc["motion"], acc["audio"]) > acc["pixel_mean"] + 0.2, acc
