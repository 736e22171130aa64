"""Scale curves: every stage of raysup's data path run through the real code at sizes 16x apart,
with its seconds per clip and peak memory, to show which stages grow linearly (flat per clip)
and which do not.

The data are tiny cells (2-frame 8x8 clips, 4x4 audio, 8-d features), so a 2-core machine
holds 800k clips: metadata and row counts grow as at paper scale, the compute per clip does not.
Each (stage, size) runs in its own child process with its own local Ray instance, so its peak
RSS (``VmHWM``) is that driver's and its Ray workers' alone; the table's ``peak_rss_mb`` is the
largest of the driver and any one Ray worker process (a task or an actor).

    python experiments/bench/scale.py --clips 50000,200000,800000 --json   # the issue's curve (~30 min on 2 cores)
    python experiments/bench/scale.py --quick                               # 4k and 16k clips: the test suite runs this

Goals (from 50k to 800k clips, 16x): every stage's seconds per clip and peak RSS grow <= 1.5x,
and the first batch of an epoch arrives in <= 1.5x the time.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

# no module-level import of torch or of bench/common.py (which imports it): a child driver's RSS must be its stage's
CLIPS_PER_VIDEO = 8
DIM = 8
GOAL = 1.5


# ---- data, written as raysup writes it -----------------------------------------------------------

def tiny_prepare_config():
    from raysup.data.prepare import PrepareConfig

    # 2 frames of 8x8, 4 mels x 4 frames of audio: ~400 bytes a clip
    return PrepareConfig(clip_frames=2, size=8, flow="none", encoding="raw", n_mels=4, sample_rate=800, window_ms=20.0, hop_ms=10.0,
                         audio_seconds=0.05, shard_mb=256.0)


def write_prepared(work: str, clips: int, seed: int = 0) -> None:
    """``work/prepared``: ``clips`` tiny clips (CLIPS_PER_VIDEO a video) written and committed as
    ``raysup prepare``'s tasks write and commit them (its ShardWriter, one task per
    MAX_TASK_INPUTS videos, :func:`raysup.data.prepare.commit_task`), but not yet its manifest:
    that is :func:`stage_commit`'s work (:func:`write_manifest` builds it untimed when another stage needs it)."""
    import dataclasses
    import hashlib

    import pyarrow.fs as pafs

    from raysup.data.prepare import MAX_TASK_INPUTS, TMP_DIR, Outcome, ShardWriter, commit_task, shard_name
    from raysup.data.schema import DATA_DIR

    cfg = tiny_prepare_config()
    specs = cfg.tensor_specs()
    fs, root = pafs.LocalFileSystem(), os.path.join(work, "prepared")
    fs.create_dir(f"{root}/{TMP_DIR}", recursive=True)
    fs.create_dir(f"{root}/{DATA_DIR}")
    rng = np.random.default_rng(seed)
    videos = [f"c{v % 10}/v{v:07d}" for v in rng.permutation(clips // CLIPS_PER_VIDEO)]  # prepare shuffles its inputs
    for start in range(0, len(videos), MAX_TASK_INPUTS):
        batch = videos[start : start + MAX_TASK_INPUTS]
        name = "part-" + hashlib.sha256("\0".join(batch).encode()).hexdigest()[:32]
        writer = ShardWriter(fs, f"{root}/{TMP_DIR}/{name}.parquet", specs, cfg.encoding, cfg.shard_mb * 1024**2)
        outcomes = []
        for v in batch:
            for i in range(CLIPS_PER_VIDEO):
                writer.write({"video_id": v, "clip_index": i, "start_s": i * cfg.clip_seconds, "motion": 1.0,
                              **{k: rng.integers(0, 255, s.shape).astype(s.dtype) for k, s in specs.items()}})
            outcomes.append(dataclasses.asdict(Outcome(v, f"{v}.mp4", "ok", clips=CLIPS_PER_VIDEO, has_audio=True, shard=shard_name(writer.paths[-1]))))
        writer.close()
        commit_task(fs, root, name, outcomes, [shard_name(p) for p in writer.paths])


def write_manifest(work: str, clips: int) -> dict:
    import pyarrow.fs as pafs

    from raysup.data import prepare

    return prepare.write_manifest(pafs.LocalFileSystem(), os.path.join(work, "prepared"), "videos", tiny_prepare_config())


def stage_commit(work: str, clips: int) -> dict:
    """Prepare's commit: every task's record read, the index and the manifest written."""
    m = write_manifest(work, clips)
    assert m["counts"]["clips"] == clips, m["counts"]
    return {"files": len(m["shards"])}


def stage_open(work: str, clips: int) -> dict:
    """Opening a prepared set as a run does (manifest, the per-video index the methods' checks
    read) and its first batch of clips."""
    from raysup.data.ingest import PreparedData

    data = PreparedData(os.path.join(work, "prepared"))
    assert len(data.video_ids) * CLIPS_PER_VIDEO == clips
    next(iter(data.dataset(["video_id", "clip_index", "frames", "audio"], crop=None).iter_batches(batch_size=32)))


def inputs_of(clips: int) -> int:
    """Input files of the ``prepare`` stage at ``clips`` clips: one per video."""
    return clips // CLIPS_PER_VIDEO


def write_inputs(work: str, clips: int) -> None:
    """``work/inputs``: one empty ``.mp4`` per video, 1000 a folder (prepare skips each as empty:
    its listing, planning, tasks' records and commit run, no decoding)."""
    for i in range(inputs_of(clips)):
        folder = os.path.join(work, "inputs", f"f{i // 1000:05d}")
        if not i % 1000:
            os.makedirs(folder, exist_ok=True)
        open(os.path.join(folder, f"v{i:08d}.mp4"), "w").close()


def stage_prepare(work: str, clips: int) -> dict:
    """``raysup prepare``'s driver (the real :func:`raysup.data.prepare.prepare`) on one empty
    input per video: the listing, the plan, a task per 256 inputs, the commit; then a rerun on
    the same output (every outcome reused: the resume path)."""
    from raysup.data.prepare import prepare

    src, out = os.path.join(work, "inputs"), os.path.join(work, "prepare_out")
    cfg = tiny_prepare_config()
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    m = prepare(src, out, cfg)
    first = time.perf_counter() - t
    assert m["counts"]["inputs"] == m["counts"]["skipped"] == inputs_of(clips), m["counts"]
    prepare(src, out, cfg)
    return {"inputs": inputs_of(clips), "first_run_s": first, "rerun_s": time.perf_counter() - t - first}


# ---- XDC's rounds and the probe, on features written as XDC writes them ----------------------

def xdc_config():
    from raysup.methods import make_config

    return make_config("xdc", "tiny", {"method": {"k": 16, "sample": 4096}})


def clusterings(cfg) -> list:
    from raysup.cluster_features import Clustering
    from raysup.clustering import CLUSTERINGS

    return [Clustering(name, columns, cfg.method.cluster_k(name)) for name, columns in CLUSTERINGS[cfg.method.variant].items()]


def clip_features(batch):
    """Stand-in encoders (no model: compute-light): ``video`` and ``audio`` vectors of DIM
    around one of 16 centres picked by the clip's key, with the columns XDC's features carry."""
    import pyarrow as pa

    from raysup.data.schema import vectors

    key = np.array([zlib.crc32(f"{v}/{c}".encode()) % 16 for v, c in zip(batch.column("video_id").to_pylist(), batch.column("clip_index").to_pylist())])
    rng = np.random.default_rng(int(key.sum()) if len(key) else 0)
    centres = np.random.default_rng(0).standard_normal((16, DIM)).astype(np.float32)
    noise = lambda: rng.standard_normal((len(key), DIM)).astype(np.float32) * 0.3  # noqa: E731
    return pa.table({"video_id": batch.column("video_id"), "clip_index": batch.column("clip_index"), "path": batch.column("path"),
                     "video": vectors(centres[key] + noise()), "audio": vectors(centres[(key + 1) % 16] + noise())})


def write_xdc_features(work: str, clips: int) -> None:
    """``work/run/features/round_0``: features written as an XDC round writes them
    (:func:`raysup.features.write_files` of the audio clips with their shard ``path``)."""
    from raysup.data.ingest import PreparedData
    from raysup.features import write_files
    from raysup.methods import xdc

    clips_ds = xdc.audio_clips(PreparedData(os.path.join(work, "prepared")))
    write_files(clips_ds.map_batches(clip_features, batch_format="pyarrow"), os.path.join(work, "run", "features", "round_0"))


def cluster(work: str, out: str, previous: str | None = None) -> dict:
    from raysup.cluster_features import cluster_features

    cfg = xdc_config()
    run = os.path.join(work, "run")
    shutil.rmtree(os.path.join(run, "clusters", out), ignore_errors=True)
    return cluster_features(os.path.join(run, "features", "round_0"), os.path.join(run, "clusters", out), clusterings(cfg), cfg.method.kmeans,
                            seed=0, val_fraction=cfg.method.val_fraction, previous=previous and os.path.join(run, "clusters", previous))


def write_labels(work: str, clips: int) -> None:
    """``work/run/clusters/round_0``: XDC's round-0 pseudo-labels, as its first round writes them."""
    cluster(work, "round_0")


def stage_cluster(work: str, clips: int) -> dict:
    """``raysup cluster`` (XDC's k-means of both modalities) on features written as XDC writes them."""
    return {"seconds_inside": cluster(work, "bench")["seconds"]}


def stage_previous(work: str, clips: int) -> dict:
    """The same clustering with the previous round's comparison (NMI with round 0's labels)."""
    return {"seconds_inside": cluster(work, "bench_previous", previous="round_0")["seconds"]}


def xdc_train(work: str):
    """The training dataset of XDC's first round, built by the real ``xdc.stages`` (its features
    and k-means found done: only the pseudo-labelled clips' dataset is built)."""
    from raysup.data.ingest import PreparedData
    from raysup.methods import xdc
    from raysup.methods.base import StageLog

    stage = next(xdc.stages(xdc_config(), PreparedData(os.path.join(work, "prepared")), StageLog(os.path.join(work, "run"), resume=True)))
    return stage.train


def stage_xdc_first_batch(work: str, clips: int) -> dict:
    """XDC's first training batch of an epoch: the round's dataset built, its first batch read."""
    next(iter(xdc_train(work).iter_batches(batch_size=32, batch_format="pyarrow")))


def stage_label_join(work: str, clips: int) -> dict:
    """A whole epoch of XDC's pseudo-labelled clips: every clip read and joined with its labels."""
    rows = sum(b.num_rows for b in xdc_train(work).iter_batches(batch_size=1024, batch_format="pyarrow"))
    return {"rows": rows}


def stage_video_average(work: str, clips: int) -> dict:
    """Per-video feature means of XDC's written features (:func:`raysup.cluster_features.read_video_means`)."""
    from raysup.cluster_features import read_video_means

    ids, means = read_video_means(os.path.join(work, "run", "features", "round_0"))
    assert len(ids) * CLIPS_PER_VIDEO == clips


# ---- measurement ---------------------------------------------------------------------------------

def vm_hwm_mb(pid: int | str = "self") -> float:
    """Peak RSS of a process (``VmHWM``), MB; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def ray_worker_peak_mb() -> float:
    """The largest peak RSS of this process's descendant Ray workers (``ray::`` processes: tasks
    and actors; the raylet, GCS and dashboard are not counted)."""
    parent: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    me, peak = os.getpid(), 0.0
    for pid in parent:
        p = pid
        while p in parent and p not in (me, 0, 1):
            p = parent[p]
        if p != me or pid == me:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if not f.read().startswith(b"ray::"):
                    continue
        except OSError:
            continue
        peak = max(peak, vm_hwm_mb(pid))
    return peak


def child(stage: str, work: str, clips: int) -> dict:
    """Run one stage in this (child) process with a fresh local Ray: seconds, per-clip seconds, peaks."""
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "300")  # a busy machine
    import ray

    build = stage.startswith("build:")
    fn = BUILDERS[stage[6:]] if build else STAGES[stage]["run"]
    if build or STAGES[stage].get("ray", True):
        ray.init(address="local", num_cpus=max(4, os.cpu_count() or 1), log_to_driver=False, include_dashboard=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        t = time.perf_counter()
        extra = fn(work, clips) or {}
        seconds = time.perf_counter() - t
        return {"seconds": seconds, "seconds_per_clip": seconds / clips, "driver_mb": vm_hwm_mb(), "worker_mb": ray_worker_peak_mb(), **extra}
    finally:
        ray.shutdown()


def run_child(stage: str, work: str, clips: int) -> dict:
    import raysup

    here = os.path.dirname(os.path.dirname(raysup.__file__))  # the child imports the raysup this process imports
    env = {**os.environ, "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, __file__, "--child", stage, "--work", work, "--clips", str(clips)],
                       capture_output=True, text=True, env=env, check=False)
    if p.returncode:
        raise RuntimeError(f"stage {stage} at {clips} clips failed:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", default="50000,200000,800000", help="comma-separated dataset sizes in clips")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of: {', '.join(STAGES)}")
    p.add_argument("--json", action="store_true", help="also print one JSON object (the curves) as the last line")
    p.add_argument("--quick", action="store_true", help="4k and 16k clips (the test suite runs this)")
    p.add_argument("--work", help="folder for the generated data, reused by later runs (default: a temporary folder, removed after)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.work, int(a.clips))))
        return {}
    sizes = [4000, 16000] if a.quick else [int(x) for x in a.clips.split(",")]
    stages = [s for s in a.stages.split(",") if s]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        p.error(f"--stages: unknown {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    print(f"## Scale curves{' (--quick)' if a.quick else ''}\nmachine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
          f"date: {datetime.datetime.now():%Y-%m-%d %H:%M}; load average: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    base = a.work or tempfile.mkdtemp(prefix="raysup-scale-")
    curves: dict = {"stages": {}}
    try:
        rows = []
        for n in sizes:
            work = os.path.join(base, str(n))
            built: set[str] = set()
            for stage in stages:
                for need in STAGES[stage]["needs"]:
                    done = os.path.join(work, f".built-{need}")  # with --work, data built by an earlier run are reused
                    if need not in built and not (a.work and os.path.exists(done)):
                        run_child(f"build:{need}", work, n)
                        open(done, "w").close()
                    built.add(need)
                r = run_child(stage, work, n)
                c = curves["stages"].setdefault(stage, {"clips": [], "seconds_per_clip": [], "peak_rss_mb": [], "seconds": []})
                c["clips"].append(n)
                c["seconds"].append(r["seconds"])
                c["seconds_per_clip"].append(r["seconds_per_clip"])
                c["peak_rss_mb"].append(max(r["driver_mb"], r["worker_mb"]))
                rows.append({"stage": stage, "clips": n, "s": r["seconds"], "µs/clip": r["seconds_per_clip"] * 1e6,
                             "driver MB": r["driver_mb"], "worker MB": r["worker_mb"]})
                print(rows[-1], flush=True)
            if not a.work:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        if not a.work:
            shutil.rmtree(base, ignore_errors=True)
    from tabulate import tabulate

    print(tabulate(rows, headers="keys", tablefmt="github", floatfmt=".3g"))
    print()
    summary = []
    for stage, c in curves["stages"].items():
        key = "seconds" if STAGES[stage].get("first_batch") else "seconds_per_clip"
        growth = c[key][-1] / c[key][0] if c[key][0] else float("nan")
        mem = c["peak_rss_mb"][-1] / c["peak_rss_mb"][0] if c["peak_rss_mb"][0] else float("nan")
        c["growth"], c["rss_growth"] = growth, mem
        summary.append({"stage": stage, f"{'time' if key == 'seconds' else 's/clip'} x{sizes[-1] / sizes[0]:g} data": growth, "peak RSS": mem,
                        "goal": "met" if growth <= GOAL and mem <= GOAL else f"MISSED (<= {GOAL}x)"})
    print(tabulate(summary, headers="keys", tablefmt="github", floatfmt=".3g"))
    if a.json:
        print(json.dumps(curves))
    return curves


# what each stage needs built first (untimed, in this process), and its function
BUILDERS = {"inputs": write_inputs, "prepared": write_prepared, "manifest": write_manifest, "features": write_xdc_features, "labels": write_labels}
DATA = ("prepared", "manifest")
STAGES = {
    "prepare": {"needs": ("inputs",), "run": stage_prepare},
    "commit": {"needs": ("prepared",), "run": stage_commit, "ray": False},
    "open": {"needs": DATA, "run": stage_open, "first_batch": True},
    "cluster": {"needs": (*DATA, "features"), "run": stage_cluster},
    "previous": {"needs": (*DATA, "features", "labels"), "run": stage_previous},
    "xdc_first_batch": {"needs": (*DATA, "features", "labels"), "run": stage_xdc_first_batch, "first_batch": True},
    "label_join": {"needs": (*DATA, "features", "labels"), "run": stage_label_join},
    "video_average": {"needs": (*DATA, "features"), "run": stage_video_average},
}

if __name__ == "__main__":
    main()
