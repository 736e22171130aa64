"""The TorchTrainer loop on a real local Ray cluster: 2 workers with DDP, a worker killed
mid-run that resumes from its checkpoint, ``--resume``, and safe checkpoints."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch

from raysup.methods import make_config, method_module
from raysup.train import latest_checkpoint, load_checkpoint_file


def _epochs(run_dir):
    return [json.loads(line)["epoch"] for line in open(os.path.join(run_dir, "metrics.jsonl"))]


def _alive_train_workers():
    import ray
    from ray.util.state import list_actors

    return list_actors(
        address=ray.get_runtime_context().gcs_address,  # this session's cluster, not any other on the host
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
    )


def test_two_workers_survive_a_killed_worker(prepared, tmp_path):
    data, labels = prepared
    run_dir = str(tmp_path / "run")
    cfg = make_config("supervised", "tiny", {"workers": 2, "epochs": 4, "batch_size": 16, "max_failures": 1})
    result, error = {}, []

    def train():
        try:
            result["r"] = method_module("supervised").run(cfg, data, run_dir, labels=labels)
        except Exception as e:  # noqa: BLE001 - re-raised in the test thread
            error.append(e)

    t = threading.Thread(target=train)
    t.start()
    killed = None
    deadline = time.time() + 240
    while time.time() < deadline and killed is None and t.is_alive():
        if os.path.exists(os.path.join(run_dir, "metrics.jsonl")):  # epoch 0 is checkpointed
            workers = _alive_train_workers()
            if len(workers) == 2:
                killed = workers[1].pid
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    t.join(timeout=400)
    assert not error, error
    assert killed is not None, "the run finished before a worker could be killed"
    epochs = _epochs(run_dir)
    # the restarted group continued from the last checkpoint: no epoch was trained twice from scratch
    assert epochs[-1] == 3 and epochs.count(0) == 1, epochs
    assert result["r"]["epoch"] == 3


def test_resume_continues_and_refuses_to_overwrite(prepared, tmp_path):
    data, labels = prepared
    run_dir = str(tmp_path / "run")
    run = method_module("supervised").run
    run(make_config("supervised", "tiny", {"epochs": 2}), data, run_dir, labels=labels)
    with pytest.raises(FileExistsError, match="--resume"):
        run(make_config("supervised", "tiny", {"epochs": 2}), data, run_dir, labels=labels)
    r = run(make_config("supervised", "tiny", {"epochs": 3}), data, run_dir, labels=labels, resume=True)
    assert _epochs(run_dir) == [0, 1, 2] and r["epoch"] == 2

    saved = load_checkpoint_file(latest_checkpoint(run_dir))  # weights_only=True inside
    assert saved["epoch"] == 2 and set(saved) >= {"model", "optimizer", "scheduler", "config", "epoch"}
    assert saved["config"]["method_name"] == "supervised"
    assert all(isinstance(v, torch.Tensor) for v in saved["model"].values())
    assert os.path.isdir(os.path.join(run_dir, "tensorboard"))
