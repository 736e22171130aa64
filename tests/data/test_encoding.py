"""The jpeg encoding: real footage in, the raw encoding's tensors out of the Ray Data stream;
frames at their own aspect, the audio window, byte-bounded shards, sets prepared before it."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysup.config import ConfigError
from raysup.data import codec
from raysup.data.decode import open_media, video_samples, windows
from raysup.data.flow import compute_flow
from raysup.data.ingest import ClipCollate, PreparedData, task_shards
from raysup.data.prepare import PrepareConfig, prepare
from raysup.data.tables import join_batch, labels_table
from tests.conftest import stacked_cell, write_media


def batches(ds) -> dict:
    """Every row of ``ds`` as one Arrow table."""
    table = pa.concat_tables(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    return table


def cell_bytes(cell) -> int:
    return sum(map(len, cell)) if isinstance(cell, list) else len(cell or b"")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / ((a.astype(np.float64) - b) ** 2).mean()))


def test_codec_keeps_real_frames_and_flow(real_videos):
    """Two clips of bigbuckbunny at 128 px (the goal's size): JPEG q92 frames ≥ 35 dB, stored flow within 0.1 px;
    a random crop takes frames and flow at the same box."""
    with open_media(f"{real_videos}/bigbuckbunny.mp4") as c:
        clips = [np.stack([img for _, img in w]) for _, w in zip(range(2), windows(video_samples(c, 25, 128, square=False), 8, 8))]
    assert clips[0].shape == (8, 128, 228, 3)  # 1280×720 at a short side of 128
    rng = np.random.default_rng(0)
    for frames in clips:
        flow = compute_flow(frames, "dis")
        full = np.zeros((8, 128, 228, 3), np.uint8)
        full[:] = stacked_cell(codec.encode_frames(frames, 92)).reshape(8, 128, 228, 3)
        assert psnr(frames, full) >= 35
        f_out, fl_out = np.zeros((8, 128, 128, 3), np.uint8), np.zeros((7, 128, 128, 2), np.float16)
        top, left = codec.decode_clip(codec.encode_frames(frames, 92), codec.encode_flow(flow, 128.0), 128, 128.0, "random", rng, f_out, fl_out)
        assert top == 0 and 0 <= left <= 100
        np.testing.assert_array_equal(f_out, full[:, :, left : left + 128])
        err = np.hypot(*(fl_out.astype(np.float32) - flow[:, :, left : left + 128]).transpose(3, 0, 1, 2))
        assert err.mean() <= 0.1 and np.abs(flow).max() > 1  # real motion, kept to a tenth of a pixel
        # picks: only the frames and fields a draw uses are decoded, the rest stays zero
        f_pick, fl_pick = np.zeros_like(f_out), np.zeros_like(fl_out)
        codec.decode_clip(codec.encode_frames(frames, 92), codec.encode_flow(flow, 128.0), 128, 128.0, "centre", rng, f_pick, fl_pick,
                          picks={"frames": [3], "flow": [2, 3, 4]})
        left = (228 - 128) // 2
        np.testing.assert_array_equal(f_pick[3], full[3, :, left : left + 128])
        assert not f_pick[[0, 1, 2, 4, 5, 6, 7]].any() and not fl_pick[[0, 1, 5, 6]].any() and fl_pick[[2, 3, 4]].any()
        # sets prepared before one JPEG per image: a clip's frames in one JPEG, stacked top to bottom
        old = cv2.imencode(".jpg", cv2.cvtColor(frames.reshape(-1, 228, 3), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()
        f_old = np.zeros_like(f_out)
        codec.decode_clip(old, None, 128, 128.0, "centre", rng, f_old, picks={"frames": [3]})
        assert psnr(f_old[3], full[3, :, left : left + 128]) > 40 and not f_old[:3].any()


def test_joins_carry_the_jpeg_cells():
    """Labels joined onto clips by key (probes, protocols, XDC's pseudo-labels) keep the clips'
    list-of-JPEG cells, which Arrow's hash join refuses as payload."""
    cells = pa.array([[b"f0", b"f1"], [b"g0"], [b"h0"]], pa.list_(pa.binary()))
    clips = pa.table({"video_id": ["a", "b", "c"], "clip_index": pa.array([0, 0, 1], pa.int32()), "frames": cells})
    joined = join_batch(clips, key=["video_id"], table=labels_table({"c": 2, "a": 1}))
    rows = sorted(joined.to_pylist(), key=lambda r: r["video_id"])
    assert rows == [{"video_id": "a", "clip_index": 0, "frames": [b"f0", b"f1"], "label": 1}, {"video_id": "c", "clip_index": 1, "frames": [b"h0"], "label": 2}]


def test_real_footage_reads_as_raw_tensors(real_prepared, tmp_path):
    """The three real files: compressed on disk (a fraction of the raw encoding), decoded in
    the stream to centre crops of exactly the raw encoding's shapes."""
    data = real_prepared
    m = data.manifest
    assert m["encoding"]["format"] == "jpeg" and data.video_clips == {"bigbuckbunny": 5, "bikes": 10, "cityCC0": 7}
    assert data.no_audio == ["bikes", "cityCC0"]
    raw_bytes = m["counts"]["clips"] * sum(s.nbytes for s in data.specs.values())
    assert m["bytes"] < raw_bytes / 2
    table = batches(data.dataset())
    out = ClipCollate(data.specs)(table)
    assert out["frames"].shape == (22, 8, 32, 32, 3) and out["flow"].shape == (22, 7, 32, 32, 2)
    assert out["audio"].shape == (22, 40, 99) and int(out["audio_valid"].sum()) == 5
    stored = batches(data.dataset(["video_id", "clip_index", "frames"], crop=None))
    row = stored.filter(pa.compute.equal(stored["video_id"], "bikes")).to_pylist()[0]
    img = stacked_cell(row["frames"]).reshape(8, 32, -1, 3)
    assert img.shape[2] == 75  # 640×272: the frame's own aspect
    i = [k for k, (v, c) in enumerate(zip(table["video_id"].to_pylist(), table["clip_index"].to_pylist())) if (v, c) == ("bikes", row["clip_index"])][0]
    np.testing.assert_array_equal(out["frames"][i].numpy(), img[:, :, 21:53])  # the centre crop


def test_mixed_aspects_random_crops_and_byte_bounded_shards(ray_session, tmp_path):
    """Landscape, portrait and 2:1 videos in one set; training crops move along the long side;
    shards hold whole videos and close at the first video past --shard-mb."""
    src = tmp_path / "src"
    src.mkdir()
    for name, size in (("wide", (48, 96)), ("tall", (64, 48)), ("four_three", (48, 64))):
        write_media(src / f"{name}.mp4", seconds=3.0, size=size)
    cfg = PrepareConfig(clip_frames=8, fps=8.0, size=32, videos_per_shard=3, shard_mb=0.03)
    m = prepare(str(src), str(tmp_path / "out"), cfg)
    assert m["counts"]["clips"] == 9 and len(m["shards"]) > 1  # one task, several shards
    shard_of = {}
    for s in m["shards"]:
        t = pq.read_table(tmp_path / "out" / s)
        ids = t["video_id"].to_pylist()
        shard_of.update((v, shard_of.get(v, set()) | {s}) for v in ids)
        before_last = sum(cell_bytes(v) for c in ("frames", "flow", "audio") for v, i in zip(t[c].to_pylist(), ids) if v and i != ids[-1])
        assert before_last < 0.03 * 1024**2  # closed with the video that reached the bound
        stored = {v: stacked_cell(f).shape for v, f in zip(t["video_id"].to_pylist(), t["frames"].to_pylist())}
        assert all(shape == {"wide": (256, 64, 3), "tall": (8 * 43, 32, 3), "four_three": (256, 43, 3)}[v] for v, shape in stored.items())
    assert all(len(s) == 1 for s in shard_of.values())  # whole videos
    data = PreparedData(str(tmp_path / "out"))
    assert task_shards(m["shards"]) == [tuple(m["shards"])]  # one task's files, read together: videos straddle them
    drawn = data.video_draws(["video_id", "clip_index"], seed=0, draws=1, first_only=True).take_all()
    assert sorted((r["video_id"], r["clip_index"]) for r in drawn) == [("four_three", 0), ("tall", 0), ("wide", 0)]
    centre = batches(data.dataset())
    assert ClipCollate(data.specs)(centre)["frames"].shape == (9, 8, 32, 32, 3)
    # the random crop moves along the long side: 33 positions of the wide video's 64 px
    crops = [batches(data.dataset(["video_id", "clip_index", "frames"], crop="random")) for _ in range(3)]
    wide = [np.stack([np.frombuffer(f, np.uint8) for v, f in sorted(zip(zip(t["video_id"].to_pylist(), t["clip_index"].to_pylist()), t["frames"].to_pylist())) if v[0] == "wide"]) for t in crops]
    assert not (np.array_equal(wide[0], wide[1]) and np.array_equal(wide[1], wide[2]))
    with pytest.raises(ValueError, match="crop"):
        data.dataset(crop="middle")


def test_fixed_width_resizes_every_video_to_one_shape(ray_session, tmp_path):
    """--width: every frame resized to size×width whatever its aspect (GDT's and VMZ's 128×171,
    here 32×43); flow is computed on the resized frames; a width under the size is refused."""
    src = tmp_path / "src"
    src.mkdir()
    for name, size in (("wide", (48, 96)), ("tall", (64, 48))):
        write_media(src / f"{name}.mp4", seconds=2.0, size=size)
    m = prepare(str(src), str(tmp_path / "out"), PrepareConfig(clip_frames=8, fps=8.0, size=32, width=43))
    t = pa.concat_tables([pq.read_table(tmp_path / "out" / s) for s in m["shards"]])
    assert {stacked_cell(f).shape for f in t["frames"].to_pylist()} == {(8 * 32, 43, 3)}
    data = PreparedData(str(tmp_path / "out"))
    assert ClipCollate(data.specs)(batches(data.dataset()))["flow"].shape == (m["counts"]["clips"], 7, 32, 32, 2)
    with pytest.raises(ValueError, match=r"width: must be 0 \(own aspect\) or >= size \(32\), got 31"):
        PrepareConfig(size=32, width=31).validate()


def test_audio_window_is_centred_on_the_clip(ray_session, tmp_path):
    """A tone from 1.5 s on; 1 s clips; --audio-seconds 2 at a 20 ms hop (XDC's 40×100): the
    window of clip 1 (1-2 s) starts at 0.5 s, so the tone starts in its middle column; clip 0's
    window overhangs the start (zero padding), clip 2's the end."""
    src = tmp_path / "src"
    src.mkdir()
    write_media(src / "tone.mp4", seconds=3.0, tone_from=1.5)
    cfg = PrepareConfig(clip_frames=8, fps=8.0, size=32, flow="none", audio_seconds=2.0, hop_ms=20.0)
    m = prepare(str(src), str(tmp_path / "out"), cfg)
    assert m["columns"]["audio"]["shape"] == [40, 100] and m["encoding"]["audio"]["seconds"] == 2.0
    data = PreparedData(str(tmp_path / "out"))
    t = batches(data.dataset(["clip_index", "audio"]))
    audio = ClipCollate(data.specs)(t)["audio"].float().numpy()[np.argsort(t["clip_index"].to_numpy())]  # [3,40,100]
    loud = audio.max(1) > np.log(1e-6) + 8  # [3,100] columns with sound (the 440 Hz band)
    assert not loud[0].any()  # [-0.5, 1.5): padding, then silence
    onset = int(np.argmax(loud[1]))
    assert abs(onset - 50) <= 2 and loud[1][onset + 2 :].all()
    ends = int(np.argmin(loud[2][3:])) + 3  # [1.5, 3.5): the tone (from ~40 ms after 1.5 s, as in clip 1) until the video ends at 3.0
    assert loud[2][3:45].all() and 0 <= ends - 75 <= 4  # (AAC pads its last frame: up to ~80 ms more) and not loud[2][ends + 2 :].any()


def test_sets_prepared_before_encodings_are_read_as_raw(ray_session, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_media(src / "a.mp4", seconds=2.0)
    out = tmp_path / "out"
    raw = PrepareConfig(clip_frames=8, fps=8.0, size=32, encoding="raw")
    prepare(str(src), str(out), raw)
    # as the previous version wrote it: no encoding, bytes or new parameters
    params_path = out / "_progress" / "params.json"
    params = json.loads(params_path.read_text())
    for k in ("encoding", "jpeg_quality", "flow_range", "audio_seconds", "shard_mb"):
        params.pop(k)
    params_path.write_text(json.dumps(params))
    manifest = json.loads((out / "manifest.json").read_text())
    for k in ("encoding", "bytes"):
        manifest.pop(k)
    manifest["version"] = 2
    (out / "manifest.json").write_text(json.dumps(manifest))
    data = PreparedData(str(out))
    assert data.encoding == {"format": "raw"}
    t = batches(data.dataset(["clip_index", "frames"]))
    frames = ClipCollate(data.specs)(t)["frames"]
    assert frames.shape == (2, 8, 32, 32, 3) and frames.float().mean() > 0
    with pytest.raises(ConfigError, match="encoding: .* was prepared with encoding='raw', not 'jpeg'"):
        prepare(str(src), str(out), PrepareConfig(clip_frames=8, fps=8.0, size=32))
    assert prepare(str(src), str(out), raw)["counts"]["clips"] == 2  # resumes as raw
    manifest["encoding"] = {"format": "webp"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="unknown encoding 'webp'.*re-prepare"):
        PreparedData(str(out)).dataset()
    # a jpeg output of one JPEG per clip (before 2026-12-06) cannot take today's per-image cells
    params = {**json.loads(params_path.read_text()), "encoding": "jpeg"}
    params.pop("jpeg_cells")
    params_path.write_text(json.dumps(params))
    with pytest.raises(ConfigError, match="jpeg_cells: .* was prepared with jpeg_cells=None, not 'per-image'; use a new output folder"):
        prepare(str(src), str(out), PrepareConfig(clip_frames=8, fps=8.0, size=32))


@pytest.mark.slow
def test_real_footage_trains_and_probes(ray_session, real_videos, tmp_path, capsys):
    """The three real files (each twice: the probe's classifier needs two training videos per
    class), prepared with the default encoding: a tiny Cross and Learn run and a linear probe
    read them through the decode stage."""
    import shutil

    from raysup.cli import main

    src = tmp_path / "src"
    for copy in ("1", "2"):
        (src / copy).mkdir(parents=True)
        for name in ("bigbuckbunny.mp4", "bikes.mp4", "cityCC0.mpg"):
            shutil.copy(f"{real_videos}/{name}", src / copy / name)
    data = str(tmp_path / "prepared")
    prepare(str(src), data, PrepareConfig(clip_frames=8, fps=8.0, size=32, videos_per_shard=2))
    labels = tmp_path / "labels.csv"
    labels.write_text("video_id,label,split\n" + "".join(f"{c}/bigbuckbunny,animation,train\n{c}/bikes,street,train\n{c}/cityCC0,street,test\n" for c in "12"))
    run = str(tmp_path / "run")
    assert main(["train", "cross_and_learn", "--data", data, "--out", run, "--preset", "tiny", "--set", "epochs=1", "--set", "batch_size=8"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["steps"] >= 1 and np.isfinite(metrics["loss"])
    assert main(["probe", run, "--data", data, "--labels", str(labels), "--json"]) == 0
    accuracy = json.loads(capsys.readouterr().out)
    assert set(accuracy) and all(0 <= v <= 1 for v in accuracy.values())
