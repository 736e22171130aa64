"""prepare under hostile conditions (issue 15): files it did not write, a second writer, another
source, hostile timestamps, long inputs, links, vanishing files, an empty source, secrets."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from raysup.cli import main
from raysup.config import ConfigError
from raysup.data.ingest import PreparedData
from raysup.data.prepare import LOCK, TMP_DIR, PrepareConfig, ShardWriter, list_inputs, prepare, process_file
from tests.conftest import stacked_cell, write_media
from tests.s3server import SECRET_KEY

CFG = PrepareConfig(clip_frames=8, fps=8.0, size=32, videos_per_shard=2)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_timed(path, times, size=(48, 64)):
    """A real mkv (libx264) whose frames carry the given timestamps (seconds); the square
    moves 2 px per frame, so no two neighbouring frames are alike."""
    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=16)
        v.width, v.height, v.pix_fmt = size[1], size[0], "yuv420p"
        v.codec_context.time_base = v.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            img = np.zeros((*size, 3), np.uint8)
            x = (2 * i) % (size[1] - 12)
            img[18:30, x : x + 12] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
    return path


def clips_of(path, cfg=CFG, tmp=None):
    """(outcome, clip rows) of one input through the task's code path (no Ray)."""
    out = os.path.join(str(tmp), "shard.parquet")
    writer = ShardWriter(pafs.LocalFileSystem(), out, cfg.tensor_specs(), cfg.encoding)
    outcome = process_file(str(path), "v", pafs.LocalFileSystem(), cfg, writer)
    rows = pq.read_table(out).to_pylist() if writer.close() else []
    return outcome, rows


@pytest.fixture()
def two_videos(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_media(src / "a.mp4", seconds=2.0)
    write_media(src / "b.mp4", seconds=3.0)
    return src


# 1 + 4: only its own files, and readers read only committed shards


def test_prepare_leaves_files_it_did_not_write_alone(ray_session, two_videos, tmp_path):
    out = tmp_path / "out"
    (out / "data" / "sub").mkdir(parents=True)
    (out / "data" / "notes.txt").write_text("mine")
    (out / "data" / "sub" / "x.parquet").write_bytes(b"not yours")
    pq.write_table(pa.table({"x": [1, 2, 3]}), out / "data" / "other.parquet")
    m = prepare(str(two_videos), str(out), CFG)
    assert (out / "data" / "notes.txt").read_text() == "mine" and (out / "data" / "sub" / "x.parquet").exists()
    assert pq.read_table(out / "data" / "other.parquet").num_rows == 3
    assert m["counts"]["clips"] == 5 and len(m["shards"]) == 1
    data = PreparedData(str(out))
    assert data.dataset(["video_id"]).count() == 5  # other.parquet and sub/ are not read

    # an interrupted run: a temporary shard, and a record whose shard never arrived
    write_media(two_videos / "c.mp4", seconds=1.0)
    (out / TMP_DIR / "part-dead.parquet").write_bytes(b"half written")
    (out / "_progress" / "part-lost.json").write_text(json.dumps({"shards": ["data/part-lost.parquet"], "outcomes": [
        {"video_id": "c", "path": str(two_videos / "c.mp4"), "status": "ok", "reason": "", "clips": 1, "has_audio": True}]}))
    before = PreparedData(str(out)).dataset(["video_id"]).count()
    m = prepare(str(two_videos), str(out), CFG)
    assert before == 5 and PreparedData(str(out)).video_clips == {"a": 2, "b": 3, "c": 1} and len(m["shards"]) == 2
    assert not (out / TMP_DIR / "part-dead.parquet").exists() and not (out / "_progress" / "part-lost.json").exists()
    assert sorted(p.name for p in (out / "data").iterdir() if not p.name.startswith("part-")) == ["notes.txt", "other.parquet", "sub"]
    assert PreparedData(str(out)).dataset(["video_id"]).count() == 6


# 2: one writer at a time


def test_a_second_writer_is_refused_and_a_killed_one_resumed(ray_session, tmp_path, capfd):
    """Run A (a real `raysup prepare` process) holds the output: run B is refused. A is killed
    mid-way: the next run breaks its lock and finishes with every clip exactly once."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for i in range(16):
        write_media(src / f"v{i:02d}.mp4", seconds=3.0)
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address, "PYTHONPATH": REPO}
    # one task at a time (4 CPUs each on the 4-CPU test instance), one video per task
    args = ["prepare", str(src), str(out), "--videos-per-shard", "1", "--cpus-per-task", "4", "--flow", "tvl1"]
    first = subprocess.Popen([sys.executable, "-c", "import sys; from raysup.cli import main; sys.exit(main(sys.argv[1:]))", *args],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((out / "data").glob("part-*.parquet")) and first.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    holder = json.loads((out / LOCK).read_text())
    assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
    cfg = PrepareConfig(videos_per_shard=1, cpus_per_task=4, flow="tvl1")
    with pytest.raises(FileExistsError, match=f"being prepared by pid {first.pid} on {socket.gethostname()}"):
        prepare(str(src), str(out), cfg)
    first.kill()
    first.wait()
    assert 0 < len(list((out / "data").glob("part-*.parquet"))) < 16, "run A was not killed mid-way: the test proves nothing"
    m = prepare(str(src), str(out), cfg)
    assert f"breaking the stale lock of {out} held by pid {first.pid}" in capfd.readouterr().err
    assert m["counts"]["clips"] == 48 and len(m["shards"]) == 16 and not (out / LOCK).exists()
    rows = pq.read_table([str(out / s) for s in m["shards"]], columns=["video_id", "clip_index"]).to_pylist()
    assert sorted((r["video_id"], r["clip_index"]) for r in rows) == [(f"v{i:02d}", k) for i in range(16) for k in range(3)]


def test_live_lock_is_a_one_line_cli_error(ray_session, two_videos, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "_progress").mkdir(parents=True)
    (out / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "token": "t", "heartbeat": time.time()}))
    assert main(["prepare", str(two_videos), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"is being prepared by pid {os.getpid()}" in err and "Traceback" not in err


def test_stale_locks_are_broken_with_a_message(ray_session, two_videos, tmp_path, capfd):
    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "out"
    (out / "_progress").mkdir(parents=True)
    (out / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "token": "t", "heartbeat": time.time()}))
    assert prepare(str(two_videos), str(out), CFG)["counts"]["clips"] == 5
    assert f"breaking the stale lock of {out} held by pid {dead.pid}" in capfd.readouterr().err
    (out / LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "token": "t", "heartbeat": time.time() - 3600}))
    prepare(str(two_videos), str(out), CFG)
    assert "no heartbeat for 3600 s" in capfd.readouterr().err and not (out / LOCK).exists()


# 3: another source


def test_another_source_is_refused(ray_session, two_videos, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    write_media(other / "a.mp4", seconds=1.0)
    out = tmp_path / "out"
    prepare(str(two_videos), str(out), CFG)
    with pytest.raises(ConfigError, match=f"source: {out} was prepared from {two_videos}, not {other}"):
        prepare(str(other), str(out), CFG)
    assert json.loads((out / "manifest.json").read_text())["source"] == str(two_videos)


# 5: timestamps and memory


def test_clips_honour_the_start_time(tmp_path):
    """2 s of frames starting at 30 s: 2 clips of distinct frames, not 32 of repeats."""
    outcome, rows = clips_of(write_timed(tmp_path / "late.mkv", [30 + i / 16 for i in range(32)]), tmp=tmp_path)
    assert outcome.clips == 2 and [r["start_s"] for r in rows] == [0.0, 1.0]
    frames = np.concatenate([stacked_cell(r["frames"]).reshape(8, 32, 43, 3) for r in rows])
    assert all((a != b).any() for a, b in zip(frames, frames[1:]))


def test_timestamp_gaps_are_cut_and_recorded(ray_session, tmp_path):
    """A 3 kB file with a 20,000 s gap: the clips on either side, nothing invented across it."""
    src = tmp_path / "src"
    src.mkdir()
    write_timed(src / "gap.mkv", [i / 16 for i in range(32)] + [20000 + i / 16 for i in range(32)])
    write_timed(src / "sparse.mkv", [5.0 * i for i in range(10)])  # no clip-long stretch at all
    m = prepare(str(src), str(tmp_path / "out"), CFG)
    index = PreparedData(str(tmp_path / "out")).index.to_pylist()
    assert {r["video_id"]: (r["clips"], r["gaps"]) for r in index} == {"gap": (4, 1), "sparse": (0, 9)} and m["max_gap_s"] == 1.0
    assert index[1]["reason"] == "no 1.00 s without a timestamp gap (9 gaps over 1.0 s)" and m["counts"]["timestamp_gaps"] == 2
    table = pq.read_table(tmp_path / "out" / m["shards"][0])
    assert table.column("start_s").to_pylist() == [0.0, 1.0, 20000.0, 20001.0]


MEMORY_SCRIPT = """
import resource, sys
import pyarrow.fs as pafs
from raysup.data.prepare import PrepareConfig, ShardWriter, process_file
cfg = PrepareConfig(clip_frames=8, fps=8.0, size=64, flow="none", encoding="raw")
fs = pafs.LocalFileSystem()
def run(path, out):
    w = ShardWriter(fs, out, cfg.tensor_specs(), cfg.encoding)
    o = process_file(path, "v", fs, cfg, w)
    w.close()
    return o
run(sys.argv[1], sys.argv[3] + "/warm.parquet")  # imports, caches, first allocations
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
o = run(sys.argv[2], sys.argv[3] + "/long.parquet")
print(o.clips, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


def test_task_memory_is_bounded_on_an_hour_long_video(tmp_path):
    """An hour of video (2 fps source, 8 fps out, 64 px: 3599 clips, 354 MB of frames) through
    a task's code path: the peak RSS grows by a row group's worth, not by the video's length."""
    short = write_timed(tmp_path / "short.mkv", [i / 2 for i in range(8)], size=(96, 128))
    long = write_timed(tmp_path / "long.mkv", [i / 2 for i in range(7200)], size=(96, 128))
    res = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(short), str(long), str(tmp_path)],
                         env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    clips, growth_mb = res.stdout.split()
    assert int(clips) == 3599  # the last frame covers half an interval: 3599.75 s
    print(f"peak RSS growth: {growth_mb} MB")
    assert float(growth_mb) < 100, f"peak RSS grew by {growth_mb} MB"


# 6: links and vanishing files


def test_links_are_listed_once_and_dangling_ones_recorded(tmp_path):
    src, ext = tmp_path / "src", tmp_path / "ext"
    (src / "sub").mkdir(parents=True)
    ext.mkdir()
    write_media(src / "a.mp4", seconds=1.0)
    write_media(src / "sub" / "b.mp4", seconds=1.0)
    write_media(ext / "c.mp4", seconds=1.0)
    os.symlink(src, src / "loop")  # a loop
    os.symlink("..", src / "sub" / "up")  # another
    os.symlink(src / "a.mp4", src / "link.mp4")  # a second name for a.mp4
    os.symlink(src / "gone.mp4", src / "dangling.mp4")
    os.symlink(ext, src / "ext")  # outside the source: followed, once
    os.symlink(ext, src / "ext2")
    (src / os.fsdecode(b"bad\xff.mp4")).write_bytes(b"")  # a name that is not UTF-8: skipped and named, not a crash
    inputs, skipped = list_inputs(str(src), audio_only=False)
    assert inputs["video_id"].to_pylist() == ["a", "ext/c", "sub/b"]
    assert {o.video_id: o.reason for o in skipped} == {
        "dangling": f"dangling link (target {src / 'gone.mp4'} not found)",
        "link": "link to a file already listed (a)",
        "bad\\xff": "file name is not valid UTF-8 (rename it to prepare it)",
    }


def test_a_vanished_file_is_recorded_as_such(two_videos, tmp_path):
    (two_videos / "a.mp4").unlink()
    outcome, _ = clips_of(two_videos / "a.mp4", tmp=tmp_path)
    assert outcome.status == "skipped" and outcome.reason == "vanished during prepare (file not found)"


# 7: an empty source


def test_a_source_without_media_is_an_error(ray_session, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "README.txt").write_text("no videos here")
    with pytest.raises(ValueError, match=f"no media files under {src}"):
        prepare(str(src), str(tmp_path / "out"), CFG)
    assert main(["prepare", str(src), str(tmp_path / "out")]) == 2
    assert "no media files under" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# 14: no credential in anything prepare writes


def test_prepare_to_s3_writes_no_secret(ray_session, s3_server, two_videos, capfd):
    s3_server.make_bucket("secret")
    fs, _ = pafs.FileSystem.from_uri(s3_server.uri("secret"))
    pafs.copy_files(str(two_videos), "secret/videos", destination_filesystem=fs)
    m = prepare(s3_server.uri("secret/videos"), s3_server.uri("secret/out"), CFG)
    assert m["source"] == "s3://secret/videos" and m["counts"]["clips"] == 5
    written = [f.path for f in fs.get_file_info(pafs.FileSelector("secret/out", recursive=True)) if f.type == pafs.FileType.File]
    assert "secret/out/manifest.json" in written and len(written) >= 4
    for path in written:
        with fs.open_input_stream(path) as f:
            assert SECRET_KEY.encode() not in f.read(), path
    assert SECRET_KEY not in "".join(capfd.readouterr())
    assert PreparedData(s3_server.uri("secret/out")).dataset(["video_id"]).count() == 5
