"""Sweeps survive: a sweep whose driver is killed mid-way continues with ``--resume``
(Tuner.restore) without redoing its finished trial, and the unfinished trial, which fails, is
retried (FailureConfig) and its error reported, not swallowed. The sweep is of the method from
another package (tests/plugins/raysup_toy_method.py): Tune trials, their Train workers and the
probe find it through its entry point alone."""
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


def _trial_dirs(sweep_dir: str) -> dict[float, str]:
    """Tune's trial folders by the trial's learning rate."""
    return {json.load(open(p))["optim.lr"]: os.path.dirname(p) for p in glob.glob(f"{sweep_dir}/*/params.json")}


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


@pytest.mark.slow  # ~2 min: a killed driver, a restored Tuner and a retried trial (run by hand when the sweep code changes)
def test_killed_sweep_resumes_and_reports_a_failing_trial(ray_session, small_prepared, tmp_path):
    data, labels = small_prepared
    # the plugin method: the cheapest trials; lr 1e38: that trial's loss is not finite at its first steps, every time
    s = Sweep("toy", {"optim.lr": [0.002, 1e38]}, data, labels, str(tmp_path), "survive",
              base={"epochs": 1, "batch_size": 8, "max_failures": 0, "optim.name": "sgd"},
              max_concurrent=1, max_failures=1)
    sweep_dir = str(tmp_path / "survive")
    address = ray_session.get_runtime_context().gcs_address
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}  # Tune saves its state every second, not every 10+ s
    driver = subprocess.Popen([sys.executable, DRIVER, json.dumps(asdict(s)), "--address", address],
                              env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "driver.err", "w"))
    try:  # kill the driver once the saved state has the first trial finished
        deadline = time.time() + 600
        while "TERMINATED" not in _saved_trials(sweep_dir).values():
            assert driver.poll() is None, "the driver ended before it could be killed: " + (tmp_path / "driver.err").read_text()[-3000:]
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.5)
    finally:
        driver.kill()
        driver.wait()
    saved = _saved_trials(sweep_dir)
    (done_before,) = [t for t, status in saved.items() if status == "TERMINATED"]  # killed mid-sweep

    with pytest.raises(RuntimeError, match=r"(?s)1 trial\(s\) failed.*is not finite at epoch 0"):
        run_sweep(s, resume=True)

    trials = _trial_dirs(sweep_dir)
    assert sorted(trials) == [0.002, 1e38]
    probes = [r for r in _results(trials[0.002]) if "probe_video" in r]
    assert len(probes) == 1 and probes[0]["trial_id"] == done_before, probes  # the finished trial was not redone
    assert glob.glob(f"{sweep_dir}/runs/{done_before}/train/checkpoint_*/checkpoint.pt")
    with open(os.path.join(trials[1e38], "error.txt")) as f:
        errors = f.read()
    assert "Failure # 2" in errors and "is not finite at epoch 0" in errors  # retried once, then reported
