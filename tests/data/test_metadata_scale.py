"""Prepared-set metadata that does not grow with the number of videos (issue 27 item 6) and
buffered reads from object storage (item 7): what each step lists and reads is counted on the
real filesystems (local disk, the SeaweedFS S3 server) through :class:`Counting`, which only
counts calls and passes each one to the real filesystem."""
from __future__ import annotations

import json
import os
import pickle
from collections import Counter

import av
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from raysup.checkpoint import CHECKPOINT_FILE, checkpoint_dirs, latest_checkpoint
from raysup.data.ingest import PER_VIDEO, PreparedData
from raysup.data.prepare import (
    MAX_TASK_INPUTS,
    TMP_DIR,
    PrepareConfig,
    ShardWriter,
    commit_task,
    committed,
    inputs_per_task,
    process_file,
    write_manifest,
)
from raysup.data.schema import DATA_DIR
from raysup.data.storage import resolve
from raysup.resources import node_shapes

CFG = PrepareConfig(clip_frames=8, fps=8.0, size=32, audio_only=True, flow="none")


class Counting(pafs.FileSystemHandler):
    """A filesystem (for ``pafs.PyFileSystem``) that passes every call to ``fs`` and counts
    listings, path look-ups (a HEAD each on S3) and reads of opened files (a GET each on S3)."""

    def __init__(self, fs: pafs.FileSystem):
        self.fs, self.calls = fs, Counter()

    def get_type_name(self):
        return "counting"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        self.calls["look-ups"] += len(paths)
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        infos = self.fs.get_file_info(selector)
        self.calls["listings"] += 1
        self.calls["listed"] += len(infos)
        return infos

    def open_input_file(self, path):
        return pa.PythonFile(Reads(self.fs.open_input_file(path), self.calls), mode="r")

    def open_input_stream(self, path):
        return pa.PythonFile(Reads(self.fs.open_input_stream(path), self.calls), mode="r")

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.fs.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_output_stream(self, path, metadata):
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path, metadata=metadata)


class Reads:
    """A file object over a pyarrow file that counts its reads."""

    def __init__(self, f, calls: Counter):
        self.f, self.calls = f, calls

    def read(self, n=-1):
        self.calls["reads"] += 1
        return self.f.read() if n is None or n < 0 else self.f.read(n)

    def __getattr__(self, name):
        return getattr(self.f, name)


def counting(fs: pafs.FileSystem) -> tuple[pafs.FileSystem, Counter]:
    handler = Counting(fs)
    return pafs.PyFileSystem(handler), handler.calls


def committed_output(root: str, videos: int, tasks: int = 4) -> None:
    """An output as ``tasks`` prepare tasks leave it: each a committed record and a shard (a
    tiny real Parquet file) holding ``videos / tasks`` one-clip videos."""
    fs = pafs.LocalFileSystem()
    fs.create_dir(f"{root}/{TMP_DIR}")
    fs.create_dir(f"{root}/{DATA_DIR}")
    for t in range(tasks):
        name, ids = f"part-{t:04d}", [f"class{v % 7}/v{v:07d}" for v in range(t, videos, tasks)]
        pq.write_table(pa.table({"video_id": ids}), f"{root}/{TMP_DIR}/{name}.parquet")
        outcomes = [{"video_id": v, "path": f"/src/{v}.mp4", "status": "ok", "reason": "", "clips": 1, "has_audio": True, "gaps": 0,
                     "size": 1000, "mtime_ns": 1, "shard": f"{DATA_DIR}/{name}.parquet"} for v in ids]
        commit_task(fs, root, name, outcomes, [f"{DATA_DIR}/{name}.parquet"])


def test_manifest_does_not_grow_with_videos_and_old_manifests_still_read(tmp_path):
    """100 and 5,000 videos in 4 shards: manifests of the same size; the per-video facts are in
    index.parquet, which PreparedData reads once, on first use; a version-3 manifest (per-video
    dicts) reads the same."""
    sizes = {}
    for videos in (100, 5_000):
        root = str(tmp_path / str(videos))
        committed_output(root, videos)
        m = write_manifest(pafs.LocalFileSystem(), root, "/src", CFG)
        assert json.loads(open(f"{root}/manifest.json").read()) == m
        sizes[videos] = len(json.dumps({k: v for k, v in m.items() if k != "hash_counts"}))  # hash_counts: 4 × 1000 counts, at any size
        assert m["counts"]["videos"] == m["counts"]["clips"] == videos and len(m["shards"]) == 4 and sum(m["hash_counts"]["videos"]) == videos
    assert abs(sizes[5_000] - sizes[100]) < 16, sizes  # only the counts' digits differ
    data = PreparedData(root)
    assert len(data.video_ids) == 5_000 and data.video_ids == sorted(data.video_ids)
    assert data.index["shard"][0].as_py() == f"{DATA_DIR}/part-0000.parquet" and not data.no_audio
    legacy = tmp_path / "v3"
    legacy.mkdir()
    (legacy / "manifest.json").write_text(json.dumps({**m, "version": 3, "index": None, "videos": {"b": 2, "a": 1}, "no_audio": ["b"],
                                                      "skipped": [{"video_id": "c", "path": "/src/c.mp4", "reason": "empty file (0 bytes)"}]}))
    (legacy / "manifest.json").write_text((legacy / "manifest.json").read_text().replace('"index": null, ', ""))
    old = PreparedData(str(legacy))
    assert old.video_clips == {"a": 1, "b": 2} and old.video_ids == ["a", "b"] and old.no_audio == ["b"]
    assert old.skipped == [{"video_id": "c", "path": "/src/c.mp4", "reason": "empty file (0 bytes)"}]


def test_opening_a_prepared_set_reads_no_per_video_data(small_prepared):
    """Readers get the shards and counts from the manifest; the per-video index is read only by
    what asks for it, and never travels with a pickled PreparedData (to Ray tasks)."""
    data = PreparedData(small_prepared[0])
    data.dataset(["video_id", "clip_index"])
    assert not set(PER_VIDEO) & set(data.__dict__) and not {"videos", "no_audio", "skipped"} & set(data.manifest)
    assert len(data.video_ids) == data.manifest["counts"]["videos"] == 24
    assert not set(PER_VIDEO) & set(pickle.loads(pickle.dumps(data)).__dict__)
    for shard in data.shards():  # every video's clips are consecutive rows of the one shard the index names
        ids = pq.read_table(os.path.join(small_prepared[0], shard), columns=["video_id"])["video_id"].to_pylist()
        runs = [v for i, v in enumerate(ids) if i == 0 or ids[i - 1] != v]
        assert len(runs) == len(set(runs)) and all(data.index.filter(pa.compute.equal(data.index["video_id"], v))["shard"][0].as_py() == shard for v in runs)


def test_committed_lists_each_folder_once_and_looks_up_no_shard(tmp_path):
    """100 committed tasks: three listings (_progress/, data/, _progress/tmp/), no look-up per
    shard (the listing of data/ gave their sizes); an interrupted commit is still dropped."""
    committed_output(str(tmp_path), 1000, tasks=100)
    (tmp_path / DATA_DIR / "part-0007.parquet").unlink()  # a commit cut before its shard arrived
    fs, calls = counting(pafs.LocalFileSystem())
    commits = committed(fs, str(tmp_path))
    assert calls["listings"] == 3 and not calls["look-ups"] and calls["reads"] <= 2 * 100, calls  # a record is read to its end
    assert len(commits.shards) == 99 and commits.outcomes.num_rows == 990 and not (tmp_path / "_progress" / "part-0007.json").exists()
    assert commits.outcomes["video_id"].to_pylist() == sorted(commits.outcomes["video_id"].to_pylist())


def test_shards_hold_whole_videos_and_fill_shard_mb(ray_session, tmp_path):
    """30 videos of 3 clips (8 kB of cells each) with a 50 kB bound: every shard holds whole
    videos and reaches the bound (but the last); tasks are sized to fill shards, not 8 inputs."""
    writer = ShardWriter(pafs.LocalFileSystem(), str(tmp_path / "part-x.parquet"), CFG.tensor_specs(), CFG.encoding, 50_000)
    spec = CFG.tensor_specs()["audio"]
    for v in range(30):
        for c in range(3):
            writer.write({"video_id": f"v{v:02d}", "clip_index": c, "start_s": float(c), "motion": 0.0, "audio": np.zeros(spec.shape, spec.dtype)})
    writer.close()
    rows = [pq.read_table(p).column("video_id").to_pylist() for p in writer.paths]
    assert all(len(ids) == 3 * len(set(ids)) for ids in rows) and sum(map(len, rows)) == 90  # whole videos
    assert all(len(ids) * spec.nbytes >= 50_000 for ids in rows[:-1]) and max(map(len, rows)) * spec.nbytes < 50_000 + 3 * spec.nbytes
    assert inputs_per_task(65_000_000, PrepareConfig()) == MAX_TASK_INPUTS  # 254k tasks, not 8M
    assert inputs_per_task(65_000_000, PrepareConfig(videos_per_shard=8)) == 8
    cpus = sum(s["CPU"] for s in node_shapes())
    assert inputs_per_task(int(40 * cpus), PrepareConfig()) == 20


def test_latest_checkpoint_lists_only_checkpoint_folders(tmp_path):
    """A run with 500 feature files: finding its checkpoint lists the run's folders, not them."""
    ckpt = tmp_path / "round_1" / "checkpoint_2026-12-06_10-00-00.000000"
    ckpt.mkdir(parents=True)
    torch.save({"epoch": 0}, ckpt / CHECKPOINT_FILE)
    features = tmp_path / "features" / "round_1"
    features.mkdir(parents=True)
    for i in range(500):
        (features / f"part-{i:05d}.parquet").touch()
    fs, calls = counting(pafs.LocalFileSystem())
    assert checkpoint_dirs(fs, str(tmp_path)) == [str(ckpt)]
    assert calls["listed"] < 10, calls
    assert latest_checkpoint(str(tmp_path)) == str(ckpt)


def test_an_input_on_s3_is_read_with_one_get(s3_server, tmp_path, monkeypatch):
    """A 0.5 MB video on the S3 server: prepare reads it with one GET (PyAV's 32 kB buffer made
    that 20-380 GETs per input on the three real test videos); one over ``WHOLE_OBJECT_BYTES``
    is read 4 MB per GET."""
    path = tmp_path / "noise.mp4"
    with av.open(str(path), "w") as c:  # random pixels: ~0.5 MB in 8 frames
        v = c.add_stream("libx264", rate=8, options={"crf": "0"})
        v.width, v.height, v.pix_fmt = 240, 160, "yuv420p"
        for frame in np.random.default_rng(0).integers(0, 256, (8, 160, 240, 3), dtype=np.uint8):
            c.mux(v.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(v.encode())
    size = path.stat().st_size
    s3, _ = resolve(s3_server.uri("ready"))  # the bucket the server made at start (a new one takes seconds)
    pafs.copy_files(str(path), "ready/reads/noise.mp4", destination_filesystem=s3)
    cfg = PrepareConfig(clip_frames=8, fps=8.0, size=32, flow="none")
    for whole in (True, False):
        if not whole:
            monkeypatch.setattr("raysup.data.prepare.WHOLE_OBJECT_BYTES", 0)
        fs, calls = counting(s3)
        writer = ShardWriter(pafs.LocalFileSystem(), str(tmp_path / f"part-{whole}.parquet"), cfg.tensor_specs(), cfg.encoding)
        outcome = process_file("ready/reads/noise.mp4", "noise", fs, cfg, writer)
        writer.close()
        assert outcome.clips == 1, outcome
        assert calls["reads"] <= (1 if whole else 2 * (size // (4 * 1024**2) + 2)), (size, calls)  # two handles: audio and video
