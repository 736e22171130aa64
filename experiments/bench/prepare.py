"""Stage 1, prepare: clips/s of ``raysup.data.prepare.prepare`` (Ray Data, videos → Parquet) for
1 and 2 tasks at a time and with raysup's default (more tasks than cores) vs. the raw per-core
limit: a hand-written single-threaded loop (PyAV decode + resize, torchaudio log-mel, OpenCV
flow; no Ray, no Parquet) over the same synthetic mp4s.
Also compares the flow methods (Farneback, DIS, TV-L1): ms per frame pair and end-point error
on a known sub-pixel shift, at the tiny (32 px) and paper (112 px) sizes.

    python experiments/bench/prepare.py            # ~2-3 min on 2 quiet cores
    python experiments/bench/prepare.py --quick    # seconds (the test suite runs this)

Goal: end-to-end clips/s >= 0.8 x raw per-core limit x cores used.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import replace

import av
import cv2
import numpy as np
import torch
import torchaudio
from av.video.reformatter import VideoReformatter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from raysup.data.prepare import PrepareConfig, list_inputs, prepare  # noqa: E402
from raysup.data.synthetic import SynthConfig, make_synthetic, synth_clip  # noqa: E402

FLOWS = ("farneback", "dis", "tvl1")


def flow_fn(method: str):
    """(gray a, gray b) → float32 [H,W,2], constructed as a user would (same parameters as
    ``raysup.data.flow``)."""
    if method == "farneback":
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        return lambda a, b: dis.calc(a, b, None)
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    return lambda a, b: tvl1.calc(a, b, None)


class Clock:
    """Wall and CPU (process) seconds per named component: ``with clock("decode"): ...``."""

    def __init__(self):
        self.wall, self.cpu, self.name = {}, {}, None

    def __call__(self, name: str) -> Clock:
        self.name = name
        return self

    def __enter__(self):
        self.t, self.c = time.perf_counter(), time.process_time()

    def __exit__(self, *exc):
        self.wall[self.name] = self.wall.get(self.name, 0.0) + time.perf_counter() - self.t
        self.cpu[self.name] = self.cpu.get(self.name, 0.0) + time.process_time() - self.c


def raw_video(path: str, cfg: PrepareConfig, mel, flows: dict, clock: Clock, flow_clips: list[int]) -> int:
    """The per-core limit for one video, single-threaded: one demux pass (video frames at
    ``cfg.fps``, resized and centre-cropped by one reused swscale context; mono audio
    resampled), then per clip a log-mel and each flow method (only while ``flow_clips[0]`` > 0,
    which counts down). Returns the number of clips."""
    with clock("decode"):
        frames, chunks = [], []
        with av.open(path) as c:
            vs, aus = c.streams.video[0], c.streams.audio[0]
            vs.thread_type = "NONE"
            step = max(1, round(float(vs.average_rate) / cfg.fps))
            reformatter = VideoReformatter()
            resampler = av.AudioResampler(format="flt", layout="mono", rate=cfg.sample_rate)
            i = 0
            for packet in c.demux(vs, aus):
                for frame in packet.decode():
                    if packet.stream.type == "video":
                        if i % step == 0:
                            scale = cfg.size / min(frame.width, frame.height)
                            w, h = max(cfg.size, round(frame.width * scale)), max(cfg.size, round(frame.height * scale))
                            img = reformatter.reformat(frame, width=w, height=h, format="rgb24").to_ndarray()  # [H',W',3]
                            top, left = (h - cfg.size) // 2, (w - cfg.size) // 2
                            frames.append(img[top : top + cfg.size, left : left + cfg.size])
                        i += 1
                    else:
                        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
        video = np.stack(frames)  # [N,H,W,3]
        audio = np.concatenate(chunks)

    n_samples = int(round(cfg.clip_seconds * cfg.sample_rate))
    starts = range(0, len(video) - cfg.clip_frames + 1, cfg.clip_frames)
    for s in starts:
        with clock("log-mel"):
            a0 = int(round(s / cfg.fps * cfg.sample_rate))
            wav = np.zeros(n_samples, np.float32)
            piece = audio[a0 : a0 + n_samples]
            wav[: len(piece)] = piece
            with torch.no_grad():
                torch.log(mel(torch.from_numpy(wav)) + 1e-6).numpy().astype(np.float16)
        if flow_clips[0] > 0:
            flow_clips[0] -= 1
            clip = video[s : s + cfg.clip_frames]
            with clock("grey"):
                gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in clip]
            for name, fn in flows.items():
                with clock(name):
                    flow = np.stack([fn(gray[j], gray[j + 1]) for j in range(len(gray) - 1)])  # [T-1,H,W,2]
                    flow.astype(np.float16), float(np.hypot(flow[..., 0], flow[..., 1]).mean())
    return len(starts)


def raw_limit(paths: list[str], cfg: PrepareConfig, flow_clips: int) -> tuple[dict, dict]:
    """(wall, CPU) seconds per clip of each component, single-threaded; flow includes the
    grey conversion and is timed on the first ``flow_clips`` clips."""
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        a = cfg.audio
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=a.sample_rate, n_fft=a.n_fft, win_length=a.n_fft, hop_length=a.hop, n_mels=a.n_mels, center=False
        )
        flows = {m: flow_fn(m) for m in FLOWS}
        clock, left = Clock(), [flow_clips]
        clips = sum(raw_video(p, cfg, mel, flows, clock, left) for p in paths)
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
    n_flow = flow_clips - left[0]
    out = []
    for d in (clock.wall, clock.cpu):
        per_clip = {"decode": d["decode"] / clips, "log-mel": d["log-mel"] / clips}
        per_clip.update({m: (d[m] + d["grey"]) / n_flow for m in FLOWS})
        out.append(per_clip)
    return out[0], out[1]


def flow_quality(size: int, pairs: int) -> list[dict]:
    """ms per pair and end-point error (px) on a synthetic frame shifted by a known sub-pixel
    (dx, dy), per method."""
    frames, _ = synth_clip(0, 1, 1, SynthConfig(videos=12, size=size, seconds=1.0, fps=8))
    rng = np.random.default_rng(0)
    rows = []
    tests = []
    for i in range(pairs):
        a = cv2.cvtColor(frames[i % len(frames)], cv2.COLOR_RGB2GRAY)
        dx, dy = rng.uniform(-2, 2, 2) * size / 32  # ~same motion in frame widths at every size
        b = cv2.warpAffine(a, np.float32([[1, 0, dx], [0, 1, dy]]), (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        tests.append((a, b, dx, dy))
    m = max(2, size // 8)  # ignore the border, where the shift invents content
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for method in FLOWS:
            fn = flow_fn(method)
            times, cpus, errs = [], [], []
            for a, b, dx, dy in tests:
                t, c = time.perf_counter(), time.process_time()
                f = fn(a, b)
                times.append(time.perf_counter() - t)
                cpus.append(time.process_time() - c)
                # b(x) = a(x - d): the flow from a to b is +d
                errs.append(float(np.hypot(f[m:-m, m:-m, 0] - dx, f[m:-m, m:-m, 1] - dy).mean()))
            rows.append({"method": method, "size": size, "ms/pair": 1000 * common.median(times),
                         "CPU ms/pair": 1000 * common.median(cpus), "EPE px": float(np.mean(errs))})
    finally:
        cv2.setNumThreads(threads)
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    p = common.parser(__doc__)
    args = common.parse(p, argv)
    common.header("Stage 1: prepare (videos → Parquet clips)", args)
    import ray

    started = common.ray_start(args.address)
    try:
        total_cpus = ray.cluster_resources()["CPU"]
        with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
            if args.quick:
                synth = SynthConfig(videos=4, classes=2, size=48, seconds=2.0, fps=16)
                cfg = PrepareConfig(videos_per_shard=1)
                flow_clips, pairs = 2, 2
            else:
                synth = SynthConfig()  # the embedded default set: 240 videos, 64 px, 4 s
                cfg = PrepareConfig()
                flow_clips, pairs = 24, 20
            src = make_synthetic(os.path.join(tmp, "synth"), synth, workers=1 if args.quick else 2) / "videos"
            paths = list_inputs(str(src), False)[0]["path"].to_pylist()
            print(f"input: {len(paths)} synthetic mp4s, {synth.size}x{synth.size} px, {synth.seconds:g} s at {synth.fps} fps with AAC audio; "
                  f"clips: {cfg.clip_frames} frames at {cfg.fps:g} fps, {cfg.size} px, log-mel {cfg.n_mels} mels, flow {cfg.flow} (default)\n")

            # --- raw per-core limit, per component
            with common.ray_worker_niceness():
                raws = [raw_limit(paths, cfg, flow_clips) for _ in range(args.repeats)]
            raw = {k: common.median([r[0][k] for r in raws]) for k in raws[0][0]}
            cpu = {k: common.median([r[1][k] for r in raws]) for k in raws[0][1]}
            limit = {m: 1.0 / (raw["decode"] + raw["log-mel"] + raw[m]) for m in FLOWS}
            rows = [{"component (one core, no Ray)": k, "ms/clip": 1000 * v, "CPU ms/clip": 1000 * cpu[k]} for k, v in raw.items()]
            for m in FLOWS:
                rows.append({"component (one core, no Ray)": f"raw limit, flow={m}", "ms/clip": 1000 / limit[m],
                             "CPU ms/clip": 1000 * (cpu["decode"] + cpu["log-mel"] + cpu[m]), "clips/s": limit[m]})
            print("Raw per-core limit (decode = PyAV demux + video decode + resize/crop + audio resample; flow incl. grey conversion;\n"
                  "CPU = process CPU time, what an idle core would take):")
            common.print_table(rows)

            # --- flow methods: speed and accuracy
            print("Flow methods on one core: ms per frame pair and mean end-point error on a known shift:")
            common.print_table([r for size in (cfg.size, 112) for r in flow_quality(size, pairs)])

            # --- end to end through Ray Data
            results = []
            fixed_src = os.path.join(tmp, "one")
            os.makedirs(fixed_src)
            os.symlink(paths[0], os.path.join(fixed_src, "v.mp4"))
            # the first call starts Ray Data's worker processes (imports torch, cv2, av): not timed below
            cold = common.timed(lambda: prepare(fixed_src, os.path.join(tmp, "cold"), cfg))[0]
            meter = common.CpuMeter()
            raw_cpu_per_clip = cpu["decode"] + cpu["log-mel"] + cpu[cfg.flow]
            n_cores = os.cpu_count() or 1
            # 1 and 2 tasks at a time (cpus_per_task = CPUs / tasks), then raysup's default: one logical
            # CPU per task on a Ray started with more logical CPUs than cores (runtime.init_ray), so more
            # tasks than cores are in flight and one task's start or Parquet write leaves no core idle
            runs = [(1, total_cpus, 1), (2, total_cpus / 2, 2), (f"default ({total_cpus:g} tasks)", cfg.cpus_per_task, n_cores)]
            prepare(str(src), os.path.join(tmp, "warm"), cfg)  # starts as many Ray workers as the default uses
            for i, (workers, cpus_per_task, cores_used) in enumerate(runs):
                run_cfg = replace(cfg, cpus_per_task=cpus_per_task)
                secs, busy, cpus, clips = [], [], [], 0
                for rep in range(args.repeats):
                    meter.start()
                    dt, manifest = common.timed(lambda: prepare(str(src), os.path.join(tmp, f"out-{i}-{rep}"), run_cfg))
                    cpu_s, cores = meter.stop()
                    busy.append(cores)
                    cpus.append(cpu_s)
                    secs.append(dt)
                    clips = manifest["counts"]["clips"]
                rate = clips / common.median(secs)
                target = limit[cfg.flow] * cores_used
                results.append({
                    "workers": workers, "clips": clips, "median s": common.median(secs), "clips/s": rate,
                    "cores busy": common.median(busy), "raw limit x cores used": target, "ratio": common.ratio(rate, target),
                    "goal >= 0.8": common.goal(common.ratio(rate, target), 0.8),
                    "CPU ms/clip": 1000 * common.median(cpus) / clips,
                    "CPU efficiency": raw_cpu_per_clip / (common.median(cpus) / clips),
                })
            fixed = [common.timed(lambda: prepare(fixed_src, os.path.join(tmp, f"fixed-{rep}"), cfg))[0] for rep in range(args.repeats)]
            print(f"End to end, raysup.data.prepare.prepare (Ray Data, {total_cpus:g} logical CPUs on {n_cores} cores; workers = tasks at a time), flow={cfg.flow};\n"
                  "cores busy = CPU seconds of this process and the Ray node's processes / wall seconds; CPU efficiency = raw CPU ms/clip\n"
                  "/ end-to-end CPU ms/clip (1.0: no overhead; independent of load). The raw loop runs at Ray's worker niceness.")
            common.print_table(results)
            print(f"first prepare() call in a fresh Ray instance (one video; starts workers): {cold:.2f} s; fixed cost of "
                  f"a later call (one video, median): {common.median(fixed):.2f} s; load average now {common.load_average()}\n")
    finally:
        common.ray_stop(started)
    return results


if __name__ == "__main__":
    main()
