"""prepare: real mp4s and every kind of broken input through Ray Data → Parquet + manifest."""
from __future__ import annotations

import json
import os
import shutil
import tracemalloc

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from raysup.config import ConfigError
from raysup.data.codec import decode_clip
from raysup.data.decode import AudioTrack, DecodeError, Gap, audio_chunks, open_media, resample, video_samples, windows
from raysup.data.ingest import PreparedData, VideoShards, task_shards
from raysup.data.prepare import PrepareConfig, list_inputs, plan, prepare, thin
from raysup.data.tables import hash_bucket, hash_order
from tests.conftest import stacked_cell, write_media

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
    with open_media(str(path)) as c:
        samples = list(video_samples(c, 8, 32))
    frames = np.stack([img for _, img in samples])
    assert frames.shape == (16, 32, 32, 3) and frames.dtype == np.uint8
    assert [t for t, _ in samples] == pytest.approx([j / 8 for j in range(16)])
    # the white bar moves 2 px per source frame → every other source frame is kept: no repeats
    assert all((a != b).any() for a, b in zip(frames, frames[1:]))
    with open_media(str(path)) as c:
        audio = np.concatenate([x for _, x in audio_chunks(c, 24000)])
    assert abs(len(audio) / 24000 - 2.0) < 0.1


def test_decode_errors_are_clear(tmp_path):
    (tmp_path / "x.mp4").write_text("nope")
    with pytest.raises(DecodeError, match="not a media file"):
        with open_media(str(tmp_path / "x.mp4")):
            pass


def test_resample_follows_timestamps():
    """From the first timestamp on, at most MAX_GAP_S * fps repeats of one item, a Gap across longer gaps."""
    items = [(30 + i / 16, i) for i in range(32)]  # 2 s starting at 30 s
    out = list(resample(items, fps=8))
    assert [t for t, _ in out] == pytest.approx([30 + j / 8 for j in range(16)]) and [x for _, x in out] == list(range(0, 32, 2))
    gap = [(i / 4, i) for i in range(8)] + [(20000 + i / 4, 8 + i) for i in range(8)]
    out = list(resample(gap, fps=8))
    assert len(out) == 2 * 16 + 1 and out[16] == Gap(1.75, 20000.0)
    assert out[17][0] == 20000.0  # the grid restarts at the first item after the gap
    back = list(resample([(5.0, "a"), (5.125, "b"), (1.0, "c")], fps=8))
    assert back == [(5.0, "a"), (5.125, "b"), Gap(5.125, 1.0), (1.0, "c")]


def test_windows_never_span_a_gap():
    samples = [(float(i), i) for i in range(5)] + [Gap(4, 9)] + [(float(i), i) for i in range(9, 12)]
    assert [[x for _, x in w] for w in windows(samples, 2, 2)] == [[0, 1], [2, 3], [9, 10]]
    assert [[x for _, x in w] for w in windows(samples, 2, 3)] == [[0, 1], [3, 4], [9, 10]]


def test_audio_track_places_chunks_at_their_timestamps():
    """Small gaps become silence; the audio after a long one waits for reads to get there; only
    what is still needed is held."""
    sr = 10
    ones, twos = np.ones(10, np.float32), np.full(10, 2, np.float32)
    track = AudioTrack([(30.0, ones), (31.5, ones), (100.0, twos)], sr)
    assert track.first_time() == 30.0
    assert track.read(30.5, 1.5).tolist() == [1] * 5 + [0] * 5 + [1] * 5  # 31.0-31.5 silent
    assert track.read(31.6, 1.0).tolist() == [1] * 9 + [0]  # 32.5-100 s: nothing
    assert track.read(99.5, 1.0).tolist() == [0] * 5 + [2] * 5
    assert track.start == 100.0 and len(track.buf) == 10


def test_thin():
    assert thin(3, 0) == {0, 1, 2}
    assert thin(24, 3) == {0, 12, 23}


def test_prepare_counts_reasons_and_columns(ray_session, messy_source, tmp_path):
    out = tmp_path / "out"
    m = prepare(str(messy_source), str(out), CFG)
    data = PreparedData(str(out))
    assert m["counts"] == {"inputs": 8, "videos": 3, "clips": 7, "skipped": 5, "no_audio": 1, "timestamp_gaps": 0, "stopped_early": 0}
    reasons = {s["video_id"]: s["reason"] for s in data.skipped}
    assert reasons["zero"].startswith("empty file")
    assert reasons["short"].startswith("shorter than one clip")
    assert reasons["soundonly"] == "no video stream"
    assert reasons["notavideo"].startswith("not a media file")
    assert reasons["truncated"].startswith("corrupt or truncated")
    assert data.no_audio == ["silent"]
    assert data.video_clips == {"good/a": 2, "good/b": 3, "silent": 2}
    assert json.loads((out / "manifest.json").read_text()) == m

    table = pq.read_table(out / "data")
    assert table.num_rows == 7
    assert set(table.column_names) == {"video_id", "clip_index", "start_s", "frames", "audio", "flow", "motion"}
    rows = {(r["video_id"], r["clip_index"]): r for r in table.to_pylist()}
    assert rows[("good/b", 2)]["start_s"] == pytest.approx(2.0)
    assert rows[("silent", 0)]["audio"] is None and rows[("good/a", 0)]["audio"] is not None
    meta = json.loads(table.schema.metadata[b"raysup"])
    assert meta["frames"] == {"shape": [8, 32, 32, 3], "dtype": "uint8"}  # what readers get: size×size crops
    assert meta["audio"] == {"shape": [40, 99], "dtype": "float16"}
    # stored: a JPEG per frame (8 48×64 frames at a short side of 32), one per flow field (dx above dy)
    a0 = rows[("good/a", 0)]
    assert len(a0["frames"]) == 8 and stacked_cell(a0["frames"]).shape == (8 * 32, 43, 3)
    assert len(a0["flow"]) == 7 and stacked_cell(a0["flow"], cv2.IMREAD_GRAYSCALE).shape == (7 * 2 * 32, 43)
    flow = np.zeros((7, 32, 32, 2), np.float32)
    decode_clip(None, a0["flow"], 32, CFG.flow_range, "centre", np.random.default_rng(), flow_out=flow)
    assert a0["motion"] > 0  # the bar moves
    assert flow[..., 0].max() > 1.0 and flow[..., 0].max() > 4 * np.abs(flow[..., 1]).max()  # to the right


def test_prepare_resumes_without_redoing(ray_session, messy_source, tmp_path):
    out = tmp_path / "out"
    prepare(str(messy_source), str(out), CFG)
    shards = sorted(p.name for p in (out / "data").iterdir())
    # a file in data/ that prepare did not write is neither deleted nor read
    (out / "data" / "part-orphan.parquet").write_bytes(b"half written")
    write_media(messy_source / "new.mp4", seconds=1.0)
    m = prepare(str(messy_source), str(out), CFG)
    after = sorted(p.name for p in (out / "data").iterdir())
    assert "part-orphan.parquet" in after
    assert set(shards) < set(after) and len(after) == len(shards) + 2  # only the new input was processed
    assert m["counts"]["inputs"] == 9 and m["counts"]["clips"] == 8
    ranges = dict(zip(m["shards"], m["shard_ranges"]))  # a later prepare's shards get their own hash range
    (added,) = set(after) - set(shards) - {"part-orphan.parquet"}
    assert ranges[f"data/{added}"] == [hash_bucket("new")] * 2
    assert m["hash_counts"]["clips"][hash_bucket("new")] >= 1 and sum(m["hash_counts"]["clips"]) == 8
    assert PreparedData(str(out)).dataset(["video_id"]).count() == 8


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
    assert PreparedData(str(tmp_path / "out")).skipped[0]["reason"] == "no audio stream"
    table = pq.read_table(tmp_path / "out" / "data")
    assert "frames" not in table.column_names and table.column("audio").null_count == 0
    assert table.column("start_s").to_pylist() == [0.0, 1.0]


def test_video_draws_read_whole_videos_in_a_new_order_every_epoch(small_prepared):
    """``PreparedData.video_draws`` (what GDT and Cross and Learn train on): every video drawn
    once per epoch (its first clip here, stored frames byte for byte), read tasks of whole
    prepare tasks' shards in a new order every epoch, and nothing in the plan that waits for
    the whole set (the old path grouped, shuffled and materialised every clip)."""
    import ray

    from raysup.runner import barriers

    data = PreparedData(small_prepared[0])
    columns = ["video_id", "clip_index", "frames"]
    clips = pa.concat_tables(data.dataset(columns, crop=None).iter_batches(batch_size=None, batch_format="pyarrow"))
    first = {v: f for v, i, f in zip(clips["video_id"].to_pylist(), clips["clip_index"].to_pylist(), clips["frames"].to_pylist()) if i == 0}
    ds = data.video_draws(columns, seed=0, draws=1, first_only=True)
    assert barriers(ds) == []
    for _ in range(2):  # every epoch: each video once
        drawn = pa.concat_tables(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
        assert sorted(drawn["video_id"].to_pylist()) == data.video_ids and set(drawn["clip_index"].to_pylist()) == {0}
        assert all(f == first[v] for v, f in zip(drawn["video_id"].to_pylist(), drawn["frames"].to_pylist()))
    # the read tasks' units in another order every epoch (Ray advances the execution index)
    units = [(f"u{i}",) for i in range(8)]
    source = VideoShards(units, filesystem=None, columns=None, seed=0, unit_bytes=1.0, fn_kwargs={})
    orders = []
    for epoch in range(2):
        ctx = ray.data.DataContext.get_current().copy()
        ctx._execution_idx = epoch
        orders.append([f for t in source.get_read_tasks(4, data_context=ctx) for f in t.metadata.input_files])
    assert sorted(orders[0]) == sorted(orders[1]) == [u for (u,) in units] and orders[0] != orders[1]
    shuffled = data.dataset(["video_id"], crop=None, shuffle=0)  # rows: every clip once per epoch, files in a seeded order
    rows = pa.concat_tables(shuffled.iter_batches(batch_size=None, batch_format="pyarrow"))["video_id"].to_pylist()
    assert sorted(rows) == sorted(clips["video_id"].to_pylist())


def test_task_shards_group_the_files_of_one_prepare_task():
    stem = "data/part-" + "0a" * 16
    other = "data/part-" + "1b" * 16
    shards = [f"{stem}.parquet", f"{other}.parquet", f"{stem}-1.parquet", f"{stem}-2.parquet", "data/old_000000.parquet"]
    assert task_shards(shards) == [(f"{stem}.parquet", f"{stem}-1.parquet", f"{stem}-2.parquet"), (f"{other}.parquet",), ("data/old_000000.parquet",)]




def empty_inputs(root, folders: int, per_folder: int) -> list[str]:
    """``folders`` × ``per_folder`` empty .mp4 files under ``root``; their video_ids."""
    ids = []
    for f in range(folders):
        os.makedirs(root / f"f{f:03d}")
        for i in range(per_folder):
            ids.append(f"f{f:03d}/v{i:04d}")
            open(root / f"{ids[-1]}.mp4", "w").close()
    return ids


def test_the_plan_holds_no_python_object_per_input(tmp_path, monkeypatch):
    """5,000 inputs in 50 folders: listing and planning hold them as Arrow columns (the Python
    heap peaks at one folder's listing and one chunk of ids, < 40 B per input; before, ~530 B:
    a tuple per input, a dict per task row, their sort keys), in the held-out hash order, with
    reused and duplicate video_ids left out of the tasks."""
    monkeypatch.setattr("raysup.data.tables.CRC_CHUNK", 256)
    ids = empty_inputs(tmp_path, 50, 100)
    open(tmp_path / "f000" / "v0000.webm", "w").close()  # a second file of f000/v0000
    tracemalloc.start()
    inputs, skipped = list_inputs(str(tmp_path), audio_only=False)
    todo, duplicates = plan(inputs, kept=pa.array(ids[-10:]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 * len(ids), peak / len(ids)
    assert inputs.num_rows == len(ids) + 1 and not skipped and inputs["size"].to_pylist() == [0] * inputs.num_rows
    assert todo["video_id"].to_pylist() == sorted(ids[:-10], key=hash_order)
    assert todo["path"][0].as_py() == str(tmp_path / f"{todo['video_id'][0].as_py()}.mp4")
    assert duplicates.to_pylist() == [{"video_id": "f000/v0000", "path": str(tmp_path / "f000" / "v0000.webm"), "status": "skipped",
                                       "reason": "duplicate video_id (another file has the same name)", "clips": 0, "has_audio": False,
                                       "gaps": 0, "size": None, "mtime_ns": None, "shard": None, "written": 0.0}]


def test_an_s3_source_is_listed_as_a_local_one(s3_server, tmp_path):
    """A source with media at its top level and two folders deep, names with spaces and accents,
    a duplicate id and a non-media file: listed on the S3 server (its top level, then each folder
    in threads) as on the local disk."""
    src = tmp_path / "src"
    for name in ["top.mp4", "a/x.mp4", "a/x.webm", "a/b/caf\u00e9 1.mkv", "c/d/e/deep.MP4", "c/notes.txt"]:
        os.makedirs((src / name).parent, exist_ok=True)
        (src / name).write_bytes(b"x" * len(name))
    s3, _ = pafs.FileSystem.from_uri(s3_server.uri("ready"))
    pafs.copy_files(str(src), "ready/listing", destination_filesystem=s3)
    local, _ = list_inputs(str(src), audio_only=False)
    remote, _ = list_inputs(s3_server.uri("ready/listing"), audio_only=False)
    assert remote["video_id"].to_pylist() == local["video_id"].to_pylist() == ["a/b/caf\u00e9 1", "a/x", "a/x", "c/d/e/deep", "top"]
    assert remote["path"].to_pylist() == [p.replace(str(src), "ready/listing") for p in local["path"].to_pylist()]
    assert remote["size"].to_pylist() == local["size"].to_pylist() and None not in remote["mtime_ns"].to_pylist()
