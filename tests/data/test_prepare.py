"""prepare: real mp4s and every kind of broken input through Ray Data → Parquet + manifest."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysup.config import ConfigError
from raysup.data.decode import DecodeError, decode
from raysup.data.prepare import PrepareConfig, clip_starts, prepare
from tests.conftest import write_media

CFG = PrepareConfig(clip_frames=8, fps=8.0, size=32, videos_per_shard=2)


@pytest.fixture()
def messy_source(tmp_path):
    """3 good videos (one without audio) + one of each broken kind."""
    src = tmp_path / "src"
    (src / "good").mkdir(parents=True)
    write_media(src / "good" / "a.mp4", seconds=2.0)  # 2 clips
    write_media(src / "good" / "b.mp4", seconds=3.0)  # 3 clips
    write_media(src / "silent.mp4", seconds=2.0, audio=False)  # 2 clips, audio null
    write_media(src / "short.mp4", seconds=0.5)  # shorter than one clip
    write_media(src / "soundonly.mp4", seconds=2.0, video=False)  # no video stream
    (src / "zero.mp4").write_bytes(b"")
    (src / "notavideo.mp4").write_text("this is a text file, not a video\n" * 50)
    whole = (src / "good" / "b.mp4").read_bytes()
    (src / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (src / "README.txt").write_text("ignored: not a media extension")
    return src


def test_decode_samples_fps_and_size(tmp_path):
    path = write_media(tmp_path / "v.mp4", seconds=2.0, fps=16, size=(48, 64))
    d = decode(str(path), fps=8, size=32, sample_rate=24000)
    assert d.frames.shape == (16, 32, 32, 3) and d.frames.dtype == np.uint8
    # the white bar moves 2 px per source frame → every other source frame is kept
    assert d.audio is not None and abs(len(d.audio) / 24000 - 2.0) < 0.1
    assert d.duration_s == pytest.approx(2.0)


def test_decode_errors_are_clear(tmp_path):
    (tmp_path / "x.mp4").write_text("nope")
    with pytest.raises(DecodeError, match="not a media file"):
        decode(str(tmp_path / "x.mp4"), fps=8, size=32, sample_rate=24000)


def test_clip_starts():
    assert clip_starts(24, 8, 8, 0) == [0, 8, 16]
    assert clip_starts(7, 8, 8, 0) == []
    assert clip_starts(100, 8, 4, 3) == [0, 48, 92]


def test_prepare_counts_reasons_and_columns(ray_session, messy_source, tmp_path):
    out = tmp_path / "out"
    m = prepare(str(messy_source), str(out), CFG)
    assert m["counts"] == {"inputs": 8, "videos": 3, "clips": 7, "skipped": 5, "no_audio": 1}
    reasons = {s["video_id"]: s["reason"] for s in m["skipped"]}
    assert reasons["zero"].startswith("empty file")
    assert reasons["short"].startswith("shorter than one clip")
    assert reasons["soundonly"] == "no video stream"
    assert reasons["notavideo"].startswith("not a media file")
    assert reasons["truncated"].startswith("corrupt or truncated")
    assert m["no_audio"] == ["silent"]
    assert m["videos"] == {"good/a": 2, "good/b": 3, "silent": 2}
    assert json.loads((out / "manifest.json").read_text()) == m

    table = pq.read_table(out / "data")
    assert table.num_rows == 7
    assert set(table.column_names) == {"video_id", "clip_index", "start_s", "frames", "audio", "flow", "motion"}
    rows = {(r["video_id"], r["clip_index"]): r for r in table.to_pylist()}
    assert rows[("good/b", 2)]["start_s"] == pytest.approx(2.0)
    assert rows[("silent", 0)]["audio"] is None and rows[("good/a", 0)]["audio"] is not None
    meta = json.loads(table.schema.metadata[b"raysup"])
    assert meta["frames"] == {"shape": [8, 32, 32, 3], "dtype": "uint8"}
    assert meta["audio"] == {"shape": [40, 99], "dtype": "float16"}
    flow = np.frombuffer(rows[("good/a", 0)]["flow"], np.float16).reshape(7, 32, 32, 2)
    assert rows[("good/a", 0)]["motion"] == pytest.approx(np.linalg.norm(flow.astype(np.float32), axis=-1).mean(), rel=1e-2)
    assert rows[("good/a", 0)]["motion"] > 0  # the bar moves
    assert flow[..., 0].max() > 1.0 and flow[..., 0].max() > 4 * np.abs(flow[..., 1]).max()  # to the right


def test_prepare_resumes_without_redoing(ray_session, messy_source, tmp_path):
    out = tmp_path / "out"
    prepare(str(messy_source), str(out), CFG)
    shards = sorted(p.name for p in (out / "data").iterdir())
    # an interrupted task leaves a shard without its record: it must be discarded
    (out / "data" / "part-orphan.parquet").write_bytes(b"half written")
    write_media(messy_source / "new.mp4", seconds=1.0)
    m = prepare(str(messy_source), str(out), CFG)
    after = sorted(p.name for p in (out / "data").iterdir())
    assert "part-orphan.parquet" not in after
    assert set(shards) < set(after) and len(after) == len(shards) + 1  # only the new input was processed
    assert m["counts"]["inputs"] == 9 and m["counts"]["clips"] == 8
    assert pq.read_table(out / "data").num_rows == 8


def test_prepare_rejects_changed_parameters(ray_session, messy_source, tmp_path):
    out = tmp_path / "out"
    shutil.rmtree(messy_source / "good")
    prepare(str(messy_source), str(out), CFG)
    with pytest.raises(ConfigError, match="size"):
        prepare(str(messy_source), str(out), PrepareConfig(size=48))


def test_prepare_audio_only(ray_session, tmp_path):
    src = tmp_path / "esc"
    (src / "audio").mkdir(parents=True)
    write_media(src / "audio" / "1-100-A-0.mp4", seconds=2.0, video=False)
    write_media(src / "audio" / "silent-video.mp4", seconds=2.0, audio=False)
    m = prepare(str(src), str(tmp_path / "out"), PrepareConfig(audio_only=True, flow="none"))
    assert m["counts"]["videos"] == 1 and m["counts"]["clips"] == 2
    assert m["skipped"][0]["reason"] == "no audio stream"
    table = pq.read_table(tmp_path / "out" / "data")
    assert "frames" not in table.column_names and table.column("audio").null_count == 0


def test_videos_groups_every_clip_once_in_clip_order(prepared):
    """``PreparedData.videos`` (what GDT and Cross and Learn draw their clips from): one row per
    video holding exactly that video's clips, in clip order, frames included byte for byte."""
    data, _ = prepared
    columns = ["video_id", "clip_index", "frames"]
    clips = pa.concat_tables(data.dataset(columns).iter_batches(batch_size=None, batch_format="pyarrow"))
    packed = pa.concat_tables(data.videos(columns).iter_batches(batch_size=None, batch_format="pyarrow"))
    assert sorted(packed["video_id"].to_pylist()) == data.video_ids
    assert packed["video_id"].to_pylist() != data.video_ids  # shuffled, not sorted by class
    by_clip = {(v, i): f for v, i, f in zip(clips["video_id"].to_pylist(), clips["clip_index"].to_pylist(), clips["frames"].to_pylist())}
    for row in packed.to_pylist():
        assert row["clip_index"] == list(range(data.manifest["videos"][row["video_id"]]))
        assert row["frames"] == [by_clip[(row["video_id"], i)] for i in row["clip_index"]]
