"""The quick XDC sweep the way it runs on a cluster (the ``xdc_sweep_job`` fixture in conftest.py:
a Ray job reading its Parquet from S3 and writing Tune's results and Train's checkpoints to S3,
a real S3-compatible server), watched the way users look: `raysup dashboard s3://…` with the keys
in the URI. The Ray dashboard's HTTP API lists the job and its Train runs, TensorBoard serves the
trials' curves (XDC's NMI and cluster statistics included), and headless Chromium shows both
pages; nothing it prints carries the URI's secret. Object keys that would be mirrored outside the
local folder are skipped (issue 15 items 14 and 15)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs as pafs
import pytest
import requests

from raysup.dashboard import mirror_events, mirror_path
from tests.chromium import CHROMIUM, look
from tests.s3server import SECRET_KEY


def _token() -> str:
    return (Path.home() / ".ray" / "auth_token").read_text().strip()


@pytest.fixture(scope="module")
def watched(xdc_sweep_job, tmp_path_factory):
    # as a user would: raysup dashboard SWEEP_URI, with endpoint and keys in the URI
    cmd = [sys.executable, "-m", "raysup.cli", "dashboard", xdc_sweep_job.uri, "--port", "0", "--address", xdc_sweep_job.address]
    stderr = tmp_path_factory.mktemp("dashboard") / "stderr.txt"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        urls, printed = {}, []
        while len(urls) < 2 and (line := proc.stdout.readline()):
            printed.append(line)
            name, _, rest = line.partition(": ")
            if name in ("TensorBoard", "Ray dashboard"):
                urls[name] = rest.split()[0].rstrip("/")
        yield SimpleNamespace(tb=urls["TensorBoard"], dashboard=urls["Ray dashboard"], job=xdc_sweep_job.job, fs=xdc_sweep_job.fs,
                              printed=lambda: "".join(printed) + stderr.read_text())
    finally:
        proc.kill()
        proc.wait()


def test_results_and_checkpoints_are_on_s3(watched):
    files = [f.path for f in watched.fs.get_file_info(pafs.FileSelector("sweeps/results/xdc_k_sweep", recursive=True))]
    assert any(os.path.basename(f).startswith("experiment_state") for f in files)  # what --resume restores
    assert any(f.endswith("result.json") for f in files) and any("tfevents" in f for f in files)
    assert any("/round_0/checkpoint_" in f and f.endswith("checkpoint.pt") for f in files)


def test_dashboard_never_prints_the_secret(watched):
    printed = watched.printed()
    assert "in s3://sweeps/results/xdc_k_sweep?endpoint_override=" in printed, printed  # the URI, redacted
    assert SECRET_KEY not in printed, printed


def test_dashboard_api_lists_the_job_and_its_train_runs(watched):
    auth = {"Authorization": f"Bearer {_token()}"}
    jobs = requests.get(f"{watched.dashboard}/api/jobs/", headers=auth, timeout=30).json()
    (job,) = [j for j in jobs if j["submission_id"] == watched.job]
    assert job["status"] == "SUCCEEDED" and "xdc_k_sweep.py" in job["entrypoint"]
    runs = requests.get(f"{watched.dashboard}/api/train/v2/runs/v1", headers=auth, timeout=30).json()["train_runs"]
    ours = [r for r in runs if r["job_id"] == job["job_id"]]
    assert [r["name"] for r in ours] == ["round_0"] * 2 and all(r["status"] == "FINISHED" for r in ours), ours  # k = 4 and 8


def _tags(tb: str, plugin: str = "scalars") -> dict[str, list[str]]:
    """TensorBoard's tags per run, waiting for it to load the events (it reloads every 5 s)."""
    deadline = time.time() + 60
    while True:
        tags = requests.get(f"{tb}/data/plugin/{plugin}/tags", timeout=30).json()
        if any(tags.values()) or time.time() > deadline:
            return {run: sorted(t) for run, t in tags.items()}
        time.sleep(1)


def test_tensorboard_serves_every_metric_of_the_trial(watched):
    tags = _tags(watched.tb)
    trials = sorted(tags)
    assert trials == ["method.k=4", "method.k=8"], tags  # one entry per trial, named by its settings
    histograms = _tags(watched.tb, "histograms")
    for run in trials:
        for metric in ("loss", "acc_video", "val_loss", "nmi_truth_video", "purity_audio", "largest_cluster_fraction_video",
                       "empty_clusters_video", "probe_video"):
            assert f"ray/tune/{metric}" in tags[run], tags[run]
        assert "ray/tune/cluster_sizes_video" in histograms[run]  # cluster-size histograms
        points = requests.get(f"{watched.tb}/data/plugin/scalars/scalars", params={"run": run, "tag": "ray/tune/loss"}, timeout=30).json()
        assert len(points) == 2  # [wall_time, step, value] per epoch (one), then the final report repeats the last epoch's (for Tune's searchers)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_pages_show_the_run(watched, tmp_path):
    from PIL import Image

    job_page = look(f"{watched.dashboard}/#/jobs/{watched.job}", str(tmp_path / "ray_job.png"), expect=[watched.job, "SUCCEEDED"],
                    cookie={"name": "ray-authentication-token", "value": _token()})
    assert watched.job in job_page and "SUCCEEDED" in job_page, job_page[:2000]
    _tags(watched.tb)
    tb_page = look(f"{watched.tb}/?tagFilter=nmi_truth#timeseries", str(tmp_path / "tensorboard.png"), expect=["/nmi_truth_video", "method.k=4"])
    assert "/nmi_truth_video" in tb_page and "method.k=4" in tb_page, tb_page[:2000]
    for png in ("ray_job.png", "tensorboard.png"):
        lo, hi = Image.open(tmp_path / png).convert("L").getextrema()
        assert hi - lo > 100, f"{png} is blank"  # a rendered page, not an empty one


def test_mirror_path_keeps_keys_inside_the_folder(tmp_path):
    local = str(tmp_path / "mirror")
    os.makedirs(local)
    assert mirror_path(local, "b/run", "b/run/trial_0/events.out.tfevents.1") == f"{local}/trial_0/events.out.tfevents.1"
    assert mirror_path(local, "b/run/", "b/run/..x/%2e%2e/...") == f"{local}/..x/%2e%2e/..."  # names, not steps up
    hostile = ["b/run/../x.tfevents", "b/run/a/../../x.tfevents", "b/run/..", "b/run/./x.tfevents", "b/run//etc/x.tfevents",
               "b/run/a//x.tfevents", "b/other/x.tfevents", "b/run2/x.tfevents", "b/run", "/etc/x.tfevents"]
    for key in hostile:
        assert mirror_path(local, "b/run", key) is None, key
    os.symlink(tmp_path, os.path.join(local, "link"))  # a link inside the folder that leads out of it
    assert mirror_path(local, "b/run", "b/run/link/x.tfevents") is None


def test_mirror_skips_keys_that_lead_outside(s3_server, tmp_path, capfd):
    """Event files on a real S3 server mirrored into a folder holding a symlink that leads out: the
    key through it is named in one warning and never written. (SeaweedFS refuses keys with `..`
    segments; any it accepts must be skipped too, which test_mirror_path_keeps_keys_inside_the_folder
    checks on the mapping itself.)"""
    s3_server.make_bucket("mirror")
    fs, _ = pafs.FileSystem.from_uri(s3_server.uri("mirror"))
    keys = ["run/trial_0/events.out.tfevents.1", "run/%2e%2e/events.out.tfevents.2", "run/link/events.out.tfevents.3",
            "run/../../events.out.tfevents.4", "run/a/../../../events.out.tfevents.5"]
    for key in keys:
        try:
            with fs.open_output_stream(f"mirror/{key}") as f:
                f.write(b"events")
        except OSError:  # refused by the server
            pass
    listed = [f.path for f in fs.get_file_info(pafs.FileSelector("mirror/run", recursive=True)) if f.type == pafs.FileType.File]
    good = ["mirror/run/trial_0/events.out.tfevents.1", "mirror/run/%2e%2e/events.out.tfevents.2"]
    hostile = sorted(set(listed) - set(good))
    assert "mirror/run/link/events.out.tfevents.3" in hostile
    local, outside = tmp_path / "mirror", tmp_path / "outside"
    local.mkdir()
    outside.mkdir()
    os.symlink(outside, local / "link")
    rejected: set[str] = set()
    assert mirror_events(s3_server.uri("mirror/run"), str(local), rejected) == 2
    assert (local / "trial_0/events.out.tfevents.1").read_bytes() == b"events"
    assert (local / "%2e%2e/events.out.tfevents.2").read_bytes() == b"events"
    assert sorted(os.listdir(tmp_path)) == ["mirror", "outside"] and not os.listdir(outside)  # nothing written outside
    skipped = [line for line in capfd.readouterr().err.splitlines() if "skipped" in line]
    assert len(skipped) == len(hostile) and all(any(repr(k) in line for line in skipped) for k in hostile), skipped
    assert mirror_events(s3_server.uri("mirror/run"), str(local), rejected) == 0  # a refresh: nothing new, each warned once
    assert "skipped" not in capfd.readouterr().err
