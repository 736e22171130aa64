"""Decoding a jpeg set's clips in Ray Data tasks (``decode_on: tasks``) vs on the train worker's device (``decode_on: device``).

Real footage (bikes.mp4 of docs/performance.md, extracted into the test cache by
tests/conftest.py's ``real_videos_dir``) at --size 128 --fps 25 --clip-frames 8 --flow dis,
encoded by ``raysup.data.codec``; per batch of ``--batch`` clips, random crops:

- tasks: what a Ray Data decode task and the worker's collate do
  (``codec.decode_clips`` + ``ClipCollate``);
- device: what the worker does instead (``JpegCollate`` + ``DeviceDecode.decode``:
  ``torchvision.io.decode_jpeg`` on the device — batched nvjpeg on CUDA, libjpeg-turbo on CPU).

for the whole clip (8 frames, 7 fields) and what a draw uses (Cross and Learn's tiny preset:
1 frame, 6 fields; cross-pixel's k = 5: 1 frame, 5 fields). Reported: CPU ms per clip of this
process (the cores it costs; one torch and OpenCV thread) and wall ms per clip (on CUDA after a
synchronize). No goal: on CPU the two paths run the same libjpeg-turbo; the point is the CUDA row.

    python experiments/bench/decode_device.py            # ~1 min on 2 quiet cores
    python experiments/bench/decode_device.py --quick    # 64 px, one repeat
"""
from __future__ import annotations

import os
import sys
import time

import cv2
import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common import header, median, parse, parser, print_table  # noqa: E402

from raysup.data import codec  # noqa: E402
from raysup.data.decode import open_media, video_samples, windows  # noqa: E402
from raysup.data.device_decode import DeviceDecode  # noqa: E402
from raysup.data.flow import compute_flow  # noqa: E402
from raysup.data.ingest import ClipCollate  # noqa: E402
from raysup.data.prepare import PrepareConfig  # noqa: E402
from raysup.data.schema import TensorSpec  # noqa: E402
from tests.conftest import real_videos_dir  # noqa: E402

CACHE = os.environ.get("RAYSUP_TEST_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "raysup-tests"))
DRAWS = {  # what a batch decodes: None (all), or the map that picks a draw's images before decoding
    "whole clip: 8 frames, 7 fields": None,
    "Cross and Learn: 1 frame, 6 fields": lambda b: codec.pick_images(b, frames=[3], flow=list(range(6))),
    "cross-pixel (k = 5): 1 frame, 5 fields": lambda b: codec.draw_window(b, clip_frames=8, step=5, fields=5),
}


def clip_cells(size: int, clips: int) -> pa.Table:
    """``clips`` clips of bikes.mp4 (repeated as needed) as a jpeg set stores them."""
    with open_media(os.path.join(real_videos_dir(CACHE), "bikes.mp4")) as c:
        real = [np.stack([img for _, img in w]) for w in windows(video_samples(c, 25, size, square=False), 8, 8)]
    cells = [(codec.encode_frames(f, PrepareConfig.jpeg_quality), codec.encode_flow(compute_flow(f, "dis"), codec.FLOW_RANGE_PX)) for f in real]
    rows = [cells[i % len(cells)] for i in range(clips)]
    return pa.table({"frames": pa.array([r[0] for r in rows], pa.list_(pa.binary())), "flow": pa.array([r[1] for r in rows], pa.list_(pa.binary()))})


def per_clip(fn, clips: int, repeats: int, sync) -> tuple[float, float]:
    """(CPU ms, wall ms) per clip of ``fn`` (one batch of ``clips``), medians of ``repeats`` runs after a warm-up."""
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        sync()
        cpu.append(1000 * (time.process_time() - c) / clips)
        wall.append(1000 * (time.perf_counter() - w) / clips)
    return median(cpu), median(wall)


def main(argv: list[str] | None = None) -> list[dict]:
    p = parser(__doc__, repeats=5)
    p.add_argument("--size", type=int, default=128, help="prepared short side (S); crops S×S")
    p.add_argument("--batch", type=int, default=32, help="clips per batch")
    args = parse(p, argv)
    size = 64 if args.quick else args.size
    header("decode in Ray Data tasks vs on the train worker's device", args)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; size {size}, batch {args.batch}\n")
    table = clip_cells(size, args.batch)
    specs = {"frames": TensorSpec((8, size, size, 3), "uint8"), "flow": TensorSpec((7, size, size, 2), "float16")}
    layout = {"size": size, "flow_range": codec.FLOW_RANGE_PX, "frames": list(specs["frames"].shape), "flow": list(specs["flow"].shape)}
    decoder, collate = DeviceDecode(layout), ClipCollate(specs)
    jpeg_collate = decoder.collate(specs, pin=device.type == "cuda")
    rows = []
    for what, pick in DRAWS.items():
        batch = table if pick is None else pick(table)
        tasks = per_clip(lambda b=batch: collate(codec.decode_clips(b, layout=layout, crop="random")), args.batch, args.repeats, sync)
        on_device = per_clip(lambda b=batch: decoder.decode(jpeg_collate(b), "random", device), args.batch, args.repeats, sync)
        rows.append({"decoded": what, "tasks CPU ms/clip": tasks[0], "tasks wall ms/clip": tasks[1],
                     f"{device.type} CPU ms/clip": on_device[0], f"{device.type} wall ms/clip": on_device[1],
                     "CPU per clip, device / tasks": on_device[0] / tasks[0]})
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
