"""``decode_on: device``: a jpeg set's cells decoded by the train worker (``torchvision.io.decode_jpeg``;
on CPU here, nvjpeg on CUDA) give the tensors the Ray Data decode stage gives; a set it cannot
decode is refused in one line naming the field. (End to end: a resume of
tests/test_train.py::test_train_probe_resume_and_refuse_to_overwrite trains with it.)"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
import torch

from raysup import runner
from raysup.cli import main
from raysup.config import ConfigError, TrainConfig, from_dict
from raysup.data import codec
from raysup.data.device_decode import DeviceDecode
from raysup.data.ingest import ClipCollate
from raysup.data.prepare import PrepareConfig, outcome_table, write_metadata
from raysup.data.schema import TensorSpec
from raysup.methods import make_config

T, SIZE, RANGE = 4, 24, codec.FLOW_RANGE_PX
SPECS = {"frames": TensorSpec((T, SIZE, SIZE, 3), "uint8"), "flow": TensorSpec((T - 1, SIZE, SIZE, 2), "float16"),
         "audio": TensorSpec((2, 3), "float16")}
LAYOUT = {"size": SIZE, "flow_range": RANGE, "frames": list(SPECS["frames"].shape), "flow": list(SPECS["flow"].shape)}


def smooth(rng, shape: tuple[int, ...]) -> np.ndarray:
    """float32 [..., H, W, C] in [0, 1): 6×6 noise resized bicubic (textured, compresses like footage)."""
    *lead, h, w, c = shape
    low = rng.random((int(np.prod(lead)), 6, 6, c), dtype=np.float32)
    return np.stack([cv2.resize(x, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, c) for x in low]).reshape(shape)


def clips() -> pa.Table:
    """Five clips of codec-encoded cells at two aspects (28×40 and 36×28: random crops move both
    ways), flow up to ±40 px; clip 1 has no flow, clip 3 no frames, clip 4 no audio."""
    rng = np.random.default_rng(0)
    frames, flow, audio = [], [], []
    for i, (h, w) in enumerate([(28, 40), (36, 28), (28, 40), (36, 28), (28, 40)]):
        frames.append(None if i == 3 else codec.encode_frames((smooth(rng, (T, h, w, 3)) * 255).astype(np.uint8), 92))
        flow.append(None if i == 1 else codec.encode_flow((smooth(rng, (T - 1, h, w, 2)) - 0.5) * 80, RANGE))
        audio.append(None if i == 4 else rng.standard_normal((2, 3)).astype(np.float16).tobytes())
    return pa.table({"video_id": [f"v{i}" for i in range(5)], "frames": pa.array(frames, pa.list_(pa.binary())),
                     "flow": pa.array(flow, pa.list_(pa.binary())), "audio": pa.array(audio, pa.binary(12))})


def levels(flow: torch.Tensor) -> np.ndarray:
    """float16 flow pixels → the codec's uint8 levels they are (every level's pixels differ in float16)."""
    table = torch.from_numpy(codec.flow_levels(RANGE)).half().float().numpy()
    return np.abs(flow.float().numpy()[..., None] - table).argmin(-1)


def assert_same(device: dict, tasks: dict) -> None:
    """Equal keys, dtypes, shapes and validity; frames within 2 grey levels and flow within 2 of
    the codec's levels (libjpeg builds and nvjpeg may round a pixel differently)."""
    assert {k: (v.dtype, v.shape) for k, v in device.items()} == {k: (v.dtype, v.shape) for k, v in tasks.items()}
    for k in tasks:
        if k == "frames":
            assert (device[k].int() - tasks[k].int()).abs().max() <= 2
        elif k == "flow":
            assert np.abs(levels(device[k]) - levels(tasks[k])).max() <= 2
        else:
            assert device[k].equal(tasks[k]), k


def test_device_decode_gives_the_decode_stages_tensors():
    table, decoder = clips(), DeviceDecode(LAYOUT)
    tasks = ClipCollate(SPECS)(codec.decode_clips(table, layout=LAYOUT, crop="centre"))
    device = decoder.decode(decoder.collate(SPECS, pin=False)(table), "centre", torch.device("cpu"))
    assert_same(device, tasks)
    assert device["frames_valid"].tolist() == [True, True, True, False, True] and device["flow_valid"].tolist() == [True, False, True, True, True]
    assert not device["frames"][3].any() and not device["flow"][1].any() and device["flow"].abs().max() > 20  # nulls zero; fast motion kept
    # picks (cpfs's draw_window: frame t=1 and fields 1, 2), from a slice of the batch: only those decoded, the rest zero
    part = codec.draw_window(table.slice(1), clip_frames=T, step=2, fields=2, t=1)
    tasks = ClipCollate(SPECS)(codec.decode_clips(part, layout=LAYOUT, crop="centre"))
    device = decoder.decode(decoder.collate(SPECS, pin=False)(part), "centre", torch.device("cpu"))
    assert_same(device, tasks)
    assert device["t"].tolist() == [1] * 4 and device["frames"][[0, 1, 3]][:, 1].bool().any(dim=(1, 2, 3)).all()
    assert not device["frames"][:, [0, 2, 3]].any() and not device["flow"][:, 0].any() and device["flow"][[1, 2, 3]][:, 1:].bool().any(dim=(2, 3, 4)).all()
    # training: a random box per clip, the same for its frames and flow, anywhere in the image
    full = decoder.decode(decoder.collate(SPECS, pin=False)(table), "centre", torch.device("cpu"))  # for shapes only
    rng = np.random.default_rng(1)
    boxes = set()
    for _ in range(3):
        out = decoder.decode(decoder.collate(SPECS, pin=False)(table), "random", torch.device("cpu"), rng)
        assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in full.items()}
        for i, cells in enumerate(zip(table["frames"].to_pylist(), table["flow"].to_pylist())):
            boxes.add((i, find_box(cells, out["frames"][i].numpy(), levels(out["flow"][i]))))
    assert len(boxes) > 5  # the crops moved


def find_box(cells, frames: np.ndarray, flow_levels: np.ndarray) -> tuple[int, int]:
    """The one (top, left) where the clip's decoded frames and flow levels both lie in its stored images."""
    imgs = [np.stack([cv2.imdecode(np.frombuffer(j, np.uint8), flag) for j in c]) if c else None
            for c, flag in zip(cells, (cv2.IMREAD_COLOR_RGB, cv2.IMREAD_GRAYSCALE))]
    h, w = imgs[0].shape[1:3] if imgs[0] is not None else (imgs[1].shape[1] // 2, imgs[1].shape[2])
    fields = None if imgs[1] is None else imgs[1].reshape(T - 1, 2, h, w).transpose(0, 2, 3, 1)  # [T−1,H,W,2] levels
    hits = [(y, x) for y in range(h - SIZE + 1) for x in range(w - SIZE + 1)
            if (imgs[0] is None or np.abs(imgs[0][:, y : y + SIZE, x : x + SIZE].astype(int) - frames).max() <= 2)
            and (fields is None or np.abs(fields[:, y : y + SIZE, x : x + SIZE].astype(int) - flow_levels).max() <= 2)]
    assert len(hits) == 1, hits
    return hits[0]


def test_decode_on_is_a_config_field_refused_where_it_cannot_apply(tmp_path, capsys):
    assert TrainConfig(method_name="supervised", method=None).decode_on == "tasks"
    with pytest.raises(ConfigError, match=r"decode_on: expected one of \['tasks', 'device'\], got 'gpu'"):
        from_dict(TrainConfig, {"method_name": "supervised", "method": None, "decode_on": "gpu"})
    raw, old = str(tmp_path / "raw"), str(tmp_path / "old")
    for out, enc in ((raw, "raw"), (old, "jpeg")):
        os.makedirs(out)
        write_metadata(pafs.LocalFileSystem(), out, "here", PrepareConfig(clip_frames=T, encoding=enc), outcome_table([]), {})
    manifest = json.loads(open(f"{old}/manifest.json").read())
    manifest["encoding"]["frames"]["layout"] = "[T·H, W, 3] RGB, frames top to bottom"  # as sets before 2026-12-06 say
    open(f"{old}/manifest.json", "w").write(json.dumps(manifest))
    device = make_config("supervised", "tiny", {"decode_on": "device"})
    with pytest.raises(ConfigError, match="decode_on: device decodes one JPEG per frame and per flow field, but .* holds one JPEG per clip"):
        runner.check(device, old)
    assert runner.check(make_config("supervised", "tiny"), old).encoding["format"] == "jpeg"  # in tasks: as before
    assert main(["train", "supervised", "--data", raw, "--out", str(tmp_path / "run"), "--set", "decode_on=device"]) == 2
    err = capsys.readouterr().err
    assert f"decode_on: device decodes JPEG cells on the train worker, but {raw} is a raw set" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
