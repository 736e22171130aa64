"""Sweeps survive: a sweep whose driver is killed mid-way continues with ``--resume``
(Tuner.restore) without redoing finished trials, a failing trial is retried (FailureConfig) and
its error reported, and every trial's results and checkpoints are on the storage path after."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

from raysup.sweep import Sweep, run_sweep

DRIVER = os.path.join(os.path.dirname(__file__), "sweep_driver.py")


def _results(trial_dir: str) -> list[dict]:
    with open(os.path.join(trial_dir, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _trial_dirs(sweep_dir: str) -> dict[int, str]:
    """Tune's trial folders by the trial's k."""
    return {json.load(open(p))["params"]["method.k"]: os.path.dirname(p) for p in glob.glob(f"{sweep_dir}/*/params.json")}


def _saved_trials(sweep_dir: str) -> dict[str, str]:
    """Trial id → status in the experiment state Tune has saved to the storage path (what a
    resume starts from)."""
    try:
        (path,) = glob.glob(f"{sweep_dir}/experiment_state-*.json")
        with open(path) as f:
            state = json.load(f)
    except ValueError:  # not there yet, or being written
        return {}
    return {t["trial_id"]: t["status"] for t in (json.loads(js) for js, _ in state["trial_data"])}


def test_killed_sweep_resumes_and_reports_a_failing_trial(ray_session, small_prepared, tmp_path):
    data, labels = small_prepared
    # k=1000 > 48 clips: that trial fails in its k-means task, every time
    s = Sweep("xdc", {"method.k": [4, 6, 1000]}, data, labels, str(tmp_path), "survive",
              base={"epochs": 1, "batch_size": 8, "method.rounds": 1, "max_failures": 0}, max_concurrent=1, max_failures=1)
    sweep_dir = str(tmp_path / "survive")
    address = ray_session.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, DRIVER, json.dumps(asdict(s)), "--address", address],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # kill the driver once the saved state has the first trial finished
        deadline = time.time() + 600
        while "TERMINATED" not in _saved_trials(sweep_dir).values():
            assert driver.poll() is None, "the driver ended before it could be killed"
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.5)
    finally:
        driver.kill()
        driver.wait()
    saved = _saved_trials(sweep_dir)
    done_before = [t for t, status in saved.items() if status == "TERMINATED"]
    assert len(done_before) == 1 and len(saved) == 3, saved  # killed mid-sweep

    with pytest.raises(RuntimeError, match=r"1 trial\(s\) failed.*k: 1000 clusters need at least 1000 clips"):
        run_sweep(s, resume=True)

    trials = _trial_dirs(sweep_dir)
    assert sorted(trials) == [4, 6, 1000]
    for k in (4, 6):
        probes = [r for r in _results(trials[k]) if "probe_video" in r]
        assert len(probes) == 1, f"k={k} reported its probe {len(probes)} times"  # the finished trial was not redone
        trial_id = probes[0]["trial_id"]
        assert (trial_id in done_before) == (k == 4)
        assert glob.glob(f"{sweep_dir}/runs/{trial_id}/round_0/checkpoint_*/checkpoint.pt"), f"no checkpoint for k={k}"
    with open(os.path.join(trials[1000], "error.txt")) as f:
        errors = f.read()
    assert "Failure # 2" in errors and "k: 1000 clusters need at least 1000 clips" in errors  # retried once, then reported
