"""Inspection the way users look: a tiny XDC sweep submitted as a Ray job (what `ray job submit`
does) to a cluster with the dashboard, watched with `raysup dashboard` on its storage folder.
The dashboard's HTTP API lists the job and its Train runs, TensorBoard serves the trial's curves
(XDC's NMI and cluster statistics included), and headless Chromium shows both pages."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from tests.chromium import CHROMIUM, look

DRIVER = os.path.join(os.path.dirname(__file__), "sweep_driver.py")


def _token() -> str:
    return (Path.home() / ".ray" / "auth_token").read_text().strip()


@pytest.fixture(scope="module")
def watched(ray_session, small_prepared, tmp_path_factory):
    from ray.job_submission import JobStatus, JobSubmissionClient

    data, labels = small_prepared
    storage = tmp_path_factory.mktemp("dashboard")
    (storage / "watched").mkdir()
    gcs = ray_session.get_runtime_context().gcs_address
    # `raysup dashboard SWEEP_DIR` first, as a user watching the sweep would
    cmd = [sys.executable, "-m", "raysup.cli", "dashboard", str(storage / "watched"), "--port", "0", "--address", gcs]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        urls = {}
        while len(urls) < 2 and (line := proc.stdout.readline()):
            name, _, rest = line.partition(": ")
            if name in ("TensorBoard", "Ray dashboard"):
                urls[name] = rest.split()[0].rstrip("/")
        tb, dashboard = urls["TensorBoard"], urls["Ray dashboard"]
        sweep = {"method": "xdc", "grid": {"method.k": [4]}, "data": data, "labels": labels, "storage": str(storage),
                 "name": "watched", "base": {"epochs": 2, "batch_size": 8, "method.rounds": 1}}
        client = JobSubmissionClient(dashboard)
        deadline = time.time() + 180
        while True:
            try:
                job = client.submit_job(
                    entrypoint=f"{shlex.quote(sys.executable)} {DRIVER} {shlex.quote(json.dumps(sweep))}",
                    runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_STATE_TRACKING": "1"}},  # Train runs in the dashboard's API
                )
                break
            except RuntimeError as e:  # a just-started cluster: "No available agent to submit job, please try again later"
                if "try again" not in str(e) or time.time() > deadline:
                    raise
                time.sleep(1)
        deadline = time.time() + 600
        while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED} and time.time() < deadline:
            time.sleep(1)
        assert client.get_job_status(job) == JobStatus.SUCCEEDED, client.get_job_logs(job)[-3000:]
        yield SimpleNamespace(tb=tb, dashboard=dashboard, job=job)
    finally:
        proc.kill()
        proc.wait()


def test_dashboard_api_lists_the_job_and_its_train_runs(watched):
    auth = {"Authorization": f"Bearer {_token()}"}
    jobs = requests.get(f"{watched.dashboard}/api/jobs/", headers=auth, timeout=30).json()
    (job,) = [j for j in jobs if j["submission_id"] == watched.job]
    assert job["status"] == "SUCCEEDED" and "sweep_driver.py" in job["entrypoint"]
    runs = requests.get(f"{watched.dashboard}/api/train/v2/runs/v1", headers=auth, timeout=30).json()["train_runs"]
    ours = [r for r in runs if r["job_id"] == job["job_id"]]
    assert [r["name"] for r in ours] == ["round_0"] and ours[0]["status"] == "FINISHED", ours


def _scalars(tb: str) -> dict[str, list[str]]:
    """TensorBoard's scalar tags per run, waiting for it to load the events (it reloads every 5 s)."""
    deadline = time.time() + 60
    while True:
        tags = requests.get(f"{tb}/data/plugin/scalars/tags", timeout=30).json()
        if any("ray/tune/probe_video" in t for t in tags.values()) or time.time() > deadline:
            return {run: sorted(t) for run, t in tags.items()}
        time.sleep(1)


def test_tensorboard_serves_every_metric_of_the_trial(watched):
    tags = _scalars(watched.tb)
    (run,) = [r for r, t in tags.items() if "ray/tune/loss" in t]  # the one trial (beside it: the Train run's own events)
    for metric in ("loss", "acc_video", "nmi_truth", "largest_cluster_fraction", "empty_clusters", "val_loss", "probe_video"):
        assert f"ray/tune/{metric}" in tags[run], tags[run]
    points = requests.get(f"{watched.tb}/data/plugin/scalars/scalars", params={"run": run, "tag": "ray/tune/loss"}, timeout=30).json()
    assert len(points) == 2  # one per epoch: [wall_time, step, value]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_pages_show_the_run(watched, tmp_path):
    from PIL import Image

    job_page = look(f"{watched.dashboard}/#/jobs/{watched.job}", str(tmp_path / "ray_job.png"), expect=[watched.job, "SUCCEEDED"],
                    cookie={"name": "ray-authentication-token", "value": _token()})
    assert watched.job in job_page and "SUCCEEDED" in job_page, job_page[:2000]
    _scalars(watched.tb)
    tb_page = look(f"{watched.tb}/#scalars", str(tmp_path / "tensorboard.png"), expect=["nmi_truth", "loss"])
    assert "ray/tune/nmi_truth" in tb_page, tb_page[:2000]
    for png in ("ray_job.png", "tensorboard.png"):
        lo, hi = Image.open(tmp_path / png).convert("L").getextrema()
        assert hi - lo > 100, f"{png} is blank"  # a rendered page, not an empty one
