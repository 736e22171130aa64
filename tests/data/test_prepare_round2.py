"""prepare under the second round of attacks (issue 26): racing S3 locks, retried tasks, inputs
skipped earlier, failures inside tasks, absurd options, timestamp jumps back."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import threading
import time

import cv2
import numpy as np
import pyarrow.fs as pafs
import pytest

from raysup.cli import main
from raysup.config import to_dict
from raysup.data.ingest import PreparedData
from raysup.data.prepare import DATA_DIR, LOCK, TMP_DIR, OutputLock, PrepareConfig, committed, prepare, prepare_shard
from tests.conftest import stacked_cell, write_media
from tests.data.test_prepare_reliability import clips_of

CFG = PrepareConfig(clip_frames=8, fps=8.0, size=32, videos_per_shard=2, flow="none")


def test_s3_lock_race_has_exactly_one_winner(s3_server):
    """Two prepares take the lock of one S3 output in the same instant, five times over: the
    conditional PUT (If-None-Match) lets exactly one win each time (check-then-write let several)."""
    s3_server.make_bucket("race")
    fs, root = pafs.FileSystem.from_uri(s3_server.uri("race/out"))
    for attempt in range(5):
        barrier, won, locks = threading.Barrier(2), [], []

        def take(out, barrier=barrier, won=won, locks=locks):
            lock = OutputLock(fs, out, out)
            barrier.wait()
            try:
                locks.append(lock.__enter__())
                won.append(lock)
            except FileExistsError:
                pass

        threads = [threading.Thread(target=take, args=(f"{root}{attempt}",)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for lock in locks:
            lock.__exit__(None, None, None)
        assert len(won) == 1, f"attempt {attempt}: {len(won)} prepares took the lock"


@pytest.mark.parametrize("option, value, field", [("--cpus-per-task", "100", "cpus_per_task"), ("--audio-seconds", "1e6", "audio_seconds"),
                                                  ("--fps", "1e5", "fps"), ("--size", "100000", "size")])
def test_absurd_options_are_refused_in_one_line(ray_session, tmp_path, capsys, option, value, field):
    """--cpus-per-task above every node's CPUs waited for ever; --audio-seconds 1e6 allocated
    24e9 samples per clip. Each is refused before anything is written, naming the option."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"x")
    assert main(["prepare", str(src), str(tmp_path / "out"), option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"raysup prepare: error: {field}: ") and "Traceback" not in err[0], err
    assert not (tmp_path / "out").exists()


# 2: a task retried after it committed


def test_a_retried_task_finds_its_own_commit(tmp_path):
    """Ray retries a task whose worker died after the commit: the retry returns that commit
    instead of storing the clips a second time; a retry after an interrupted commit redoes it."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    write_media(src / "a.mp4", seconds=2.0)
    (out / TMP_DIR).mkdir(parents=True)
    (out / DATA_DIR).mkdir()
    fs = pafs.LocalFileSystem()
    batch = {"path": np.array([str(src / "a.mp4")]), "video_id": np.array(["a"])}
    with OutputLock(fs, str(out), str(out)) as lock:
        kwargs = {"src": str(src), "out": str(out), "cfg_dict": to_dict(CFG), "lock_token": lock.token}
        first = prepare_shard(batch, **kwargs)
        again = prepare_shard(batch, **kwargs)
        assert {k: v.tolist() for k, v in again.items()} == {k: v.tolist() for k, v in first.items()} == {
            "video_id": ["a"], "status": ["ok"], "clips": [2]}
        assert len(committed(fs, str(out)).shards) == 1 and len(list((out / DATA_DIR).iterdir())) == 1
        next((out / DATA_DIR).iterdir()).unlink()  # the commit was cut before its shard arrived
        prepare_shard(batch, **kwargs)
        shards = list(committed(fs, str(out)).shards)
    assert len(shards) == 1 and [p.name for p in (out / DATA_DIR).iterdir()] == [shards[0].split("/")[1]]


# 3: inputs skipped by an earlier run


def test_a_rerun_retries_skipped_inputs_whose_file_changed(ray_session, tmp_path, capfd):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    write_media(src / "a.mp4", seconds=2.0)
    for name in ("b.mp4", "c.mp4"):
        (src / name).write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))  # corrupt
    prepare(str(src), str(out), CFG)
    data = PreparedData(str(out))
    assert data.video_clips == {"a": 2} and [s["video_id"] for s in data.skipped] == ["b", "c"]
    capfd.readouterr()
    write_media(src / "b.mp4", seconds=1.0)  # fixed; c is not
    m = prepare(str(src), str(out), CFG)
    data = PreparedData(str(out))
    assert data.video_clips == {"a": 2, "b": 1} and [s["video_id"] for s in data.skipped] == ["c"] and m["counts"]["inputs"] == 3
    err = capfd.readouterr().err
    assert f"{out}: reusing the outcomes of 2 inputs from earlier runs (1 prepared, 1 skipped: retried once their file changes); retrying 1 skipped" in err
    prepare(str(src), str(out), CFG)
    assert PreparedData(str(out)).video_clips == {"a": 2, "b": 1}
    assert "reusing the outcomes of 3 inputs from earlier runs (2 prepared, 1 skipped: retried once their file changes); retrying 0" in capfd.readouterr().err


# 4: failures inside a task


def test_a_lock_taken_over_mid_run_is_a_one_line_error(ray_session, tmp_path, capfd, caplog):
    """Another run takes the lock while this one's tasks decode (a stale-lock takeover): the task
    refuses to commit, and the CLI says why in one line (no traceback on the terminal), exit 2,
    leaving the other run's lock."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    write_media(src / "a.mp4", seconds=2.0)
    other = {"pid": 1, "host": "elsewhere", "token": "other", "heartbeat": time.time() + 60}

    def take_over():
        deadline = time.time() + 60
        while not (out / "_progress" / "params.json").exists() and time.time() < deadline:
            time.sleep(0.001)
        (out / LOCK).write_text(json.dumps(other))

    thief = threading.Thread(target=take_over)
    thief.start()
    code = main(["prepare", str(src), str(out), "--flow", "none"])
    thief.join()
    err = capfd.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert not [r.name for r in caplog.records if r.levelno >= logging.ERROR], "Ray Data logged the task's traceback"
    assert err.strip().splitlines()[-1].startswith(f"raysup prepare: error: {out}: another prepare took over this output's lock while this one ran")
    assert json.loads((out / LOCK).read_text()) == other and not list((out / DATA_DIR).iterdir())


def test_a_full_disk_in_a_task_is_a_one_line_error(ray_session, tmp_path, capsys):
    """The output on a real 12 KiB filesystem: the lock and params.json fit, the task's shard does not."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    write_media(src / "a.mp4", seconds=2.0)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12k", "tmpfs", str(out)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        code = main(["prepare", str(src), str(out), "--encoding", "raw"])
    finally:
        subprocess.run(["umount", "-l", str(out)], check=True)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith(f"raysup prepare: error: out: no space left writing {out} "), err


# 6: a jump back in time (two MPEG-TS recordings joined byte-wise)

SEGMENTS = ((2.0, 440.0, 0), (3.0, 1760.0, 255))  # (seconds, tone Hz, background brightness) of each recording


def write_joined_ts(path, sr=24000, fps=16, size=(48, 64)):
    """Real MPEG-TS files (libx264 + aac), one per segment, joined byte for byte (as `cat a.ts
    b.ts` does): the timestamps of the second start again where the first's did."""
    import av

    parts = []
    for i, (seconds, tone, bright) in enumerate(SEGMENTS):
        part = f"{path}.{i}"
        with av.open(part, "w", format="mpegts") as c:
            v = c.add_stream("libx264", rate=fps)
            v.width, v.height, v.pix_fmt = size[1], size[0], "yuv420p"
            a = c.add_stream("aac", rate=sr)
            a.layout = "mono"
            for j in range(int(seconds * fps)):
                img = np.full((*size, 3), bright, np.uint8)
                img[18:30, 2 * j % 48 : 2 * j % 48 + 12] = 128
                c.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            c.mux(v.encode())
            wav = (0.3 * np.sin(2 * np.pi * tone * np.arange(int(seconds * sr)) / sr)).astype(np.float32)
            for k in range(0, len(wav), 1024):
                frame = av.AudioFrame.from_ndarray(wav[None, k : k + 1024], format="flt", layout="mono")
                frame.sample_rate = sr
                c.mux(a.encode(frame))
            c.mux(a.encode())
        with open(part, "rb") as f:
            parts.append(f.read())
        os.remove(part)
    with open(path, "wb") as f:
        f.write(b"".join(parts))
    return path


def segment_of(row, cfg=CFG) -> tuple[int | None, int]:
    """(segment by the frames' brightness (None: no frames), segment by the audio's loudest mel
    band: 440 Hz is band 6, 1760 Hz band 17) of a clip row."""
    mel = np.frombuffer(row["audio"], np.float16).reshape(cfg.n_mels, -1).astype(np.float32)  # [n_mels, frames]
    if row.get("frames") is None:
        return None, int(mel.mean(axis=1).argmax() > 10)
    frames = stacked_cell(row["frames"], cv2.IMREAD_GRAYSCALE)
    return int(frames.mean() > 128), int(mel.mean(axis=1).argmax() > 10)


@pytest.mark.parametrize("audio_only", [False, True])
def test_after_a_jump_back_each_clip_gets_its_own_segments_audio(tmp_path, audio_only):
    cfg = dataclasses.replace(CFG, audio_only=audio_only)
    outcome, rows = clips_of(write_joined_ts(tmp_path / "joined.ts"), cfg, tmp_path)
    video = None if audio_only else 0
    assert outcome.clips == 5 and outcome.gaps == 1
    assert [segment_of(r) for r in rows] == [(video, 0)] * 2 + [(None if audio_only else 1, 1)] * 3


def test_max_clips_spreads_over_every_segment(tmp_path):
    """--max-clips 3 of 5 clips (2 + 3 across a jump back): clips 0, 2 and 4, not the first three
    by sorted timestamps (which mixed both segments' times into one)."""
    path = write_joined_ts(tmp_path / "joined.ts")
    cfg = dataclasses.replace(CFG, max_clips_per_video=3)
    outcome, rows = clips_of(path, cfg, tmp_path)
    assert outcome.clips == 3 and [segment_of(r, cfg) for r in rows] == [(0, 0), (1, 1), (1, 1)]
    assert [r["start_s"] for r in rows] == [0.0, 0.0, 2.0]  # start_s counts from its own segment's first clip
