"""The TorchTrainer loop on a real local Ray cluster: ``--resume``, safe checkpoints, errors.
(Two workers with DDP and a worker killed mid-run: tests/methods/test_supervised.py.)"""
from __future__ import annotations

import json
import os
import re
import time

import pytest
import torch

from raysup import runner
from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.cli import main
from raysup.config import ConfigError
from raysup.data.ingest import PreparedData
from raysup.methods import make_config


def test_train_probe_resume_and_refuse_to_overwrite(small_prepared, tmp_path, capsys):
    """``raysup train`` prints JSON and ``max_steps`` ends it with a checkpoint mid-epoch;
    ``raysup probe`` reads the run (linear, CV, random init; finetuned: the slow test below); the run resumes,
    allowing only resumable changes (``raysup train`` of every other method:
    tests/test_method_contract.py)."""
    data, labels = PreparedData(small_prepared[0]), small_prepared[1]
    run_dir = str(tmp_path / "run")
    base = {"epochs": 4, "batch_size": 4, "optim.schedule": "cosine"}
    sets = [a for k, v in {**base, "max_steps": 3, "checkpoint_every_steps": 2}.items() for a in ("--set", f"{k}={v}")]
    assert main(["train", "supervised", "--data", data.uri, "--out", run_dir, "--labels", labels, *sets]) == 0
    printed = capsys.readouterr()
    r = json.loads(printed.out)
    assert (r["epoch"], r["steps"], r["total_steps"]) == (0, 3, 3)  # stopped inside the first epoch
    # its progress off a terminal: a line per ~10% of all epochs' steps (raysup.progress), here where it stopped
    assert re.search(r"^train: \d+/\d+ steps \(\d+%\), ", printed.err, re.M), printed.err
    saved = load_checkpoint_file(latest_checkpoint(run_dir))
    assert saved["epoch"] == 0 and saved["state"]["step"] == 3 and saved["scheduler"]["last_epoch"] == 3
    # the data position: epoch 0 not finished, 3 of its steps taken; a step checkpoint after 2
    assert (saved["state"]["epoch"], saved["state"]["epoch_step"]) == (-1, 3)
    step_report = json.loads(open(os.path.join(run_dir, "metrics.jsonl")).readline())
    assert (step_report["epoch"], step_report["epoch_step"], step_report["total_steps"]) == (0, 2, 2)
    assert load_checkpoint_file(step_report["checkpoint"])["state"]["epoch_step"] == 2
    # the schedule still spans `epochs`: after 3 steps the cosine lr has barely moved
    assert 0.9 * make_config("supervised", "tiny").optim.lr < r["lr"] < make_config("supervised", "tiny").optim.lr

    probe = ["probe", run_dir, "--data", data.uri, "--labels", labels]
    assert main([*probe, "--json"]) == 0
    acc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(acc) == {"video", "audio"} and all(0 <= v <= 1 for v in acc.values())
    assert main([*probe, "--random-init", "--folds", "3"]) == 0
    assert "linear probe (3-fold CV) (random init)" in capsys.readouterr().out
    # every probe is recorded in the run (raysup export copies them into its card)
    probes = [json.loads(line) for line in open(f"{run_dir}/probes.jsonl")]
    assert [(p["protocol"], p["random_init"]) for p in probes] == [("linear probe", False), ("3-fold linear probe", True)]
    assert probes[0]["top1"] == acc

    run = runner.train
    with pytest.raises(FileExistsError, match="--resume"):
        run(make_config("supervised", "tiny", base), data, run_dir, labels=labels)
    # resumed with the JPEG cells decoded by the worker (tests/test_device_decode.py): a resumable change
    r = run(make_config("supervised", "tiny", {**base, "epochs": 5, "max_steps": 5, "decode_on": "device"}), data, run_dir, labels=labels, resume=True)
    assert (r["epoch"], r["steps"], r["total_steps"]) == (0, 2, 5)  # epoch 0 continued where it stopped, 2 more steps
    lines = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [(m["epoch"], m.get("epoch_step"), m["total_steps"]) for m in lines] == [(0, 2, 2), (0, None, 3), (0, None, 5)]
    resumes = [json.loads(line) for line in open(os.path.join(run_dir, "resumes.jsonl"))]
    assert [r["changed"] for r in resumes] == [{"epochs": [4, 5], "max_steps": [3, 5], "checkpoint_every_steps": [2, 0], "decode_on": ["tasks", "device"]}]
    # a resume may train longer, but not change what the run is
    with pytest.raises(ConfigError, match=r"method.video_encoder: .r2plus1d_tiny. -> .r2plus1d_18., optim.lr: 0.003 -> 0.1"):
        run(make_config("supervised", "tiny", {**base, "optim.lr": 0.1, "method.video_encoder": "r2plus1d_18"}), data, run_dir, labels=labels, resume=True)

    saved = load_checkpoint_file(latest_checkpoint(run_dir))  # weights_only=True inside
    assert saved["epoch"] == 0 and saved["scheduler"]["last_epoch"] == 5 and set(saved) >= {"model", "optimizer", "scheduler", "config", "epoch"}
    assert saved["config"]["method_name"] == "supervised"
    assert all(isinstance(v, torch.Tensor) for v in saved["model"].values())
    assert os.path.isdir(os.path.join(run_dir, "tensorboard"))


def _error_line(capsys) -> str:
    """The one error line of a command (Ray Data's own progress bars may share stderr)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("raysup ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_user_errors_stop_before_training_in_one_line(small_prepared, tmp_path, capsys):
    data, labels = small_prepared
    train = ["train", "supervised", "--data", data, "--out", str(tmp_path / "run"), "--labels", labels]
    assert main([*train, "--set", "batch_size=4096"]) == 2
    assert "batch_size: 4096 is more than the" in _error_line(capsys)
    other = tmp_path / "other.csv"
    other.write_text("video_id,label,split\nnot/there,a,train\nnor/here,b,test\n")
    assert main([*train[:-1], str(other)]) == 2
    assert "labels: none of the 1 train videos" in _error_line(capsys)
    assert main(["train", "xdc", "--data", data, "--out", str(tmp_path / "x"), "--set", "method.k=1000"]) == 2
    assert "method.k: 1000 clusters need at least as many clips" in _error_line(capsys)
    assert main([*train, "--set", "method.num_classes=2"]) == 2  # the labels have 6 classes
    assert "method.num_classes: 2 is fewer than the 6 classes of the prepared videos in" in _error_line(capsys)
    assert main(["train", "gdt", "--data", data, "--out", str(tmp_path / "g"), "--set", "batch_size=1"]) == 2
    assert "batch_size: GDT contrasts each clip with the others of its batch" in _error_line(capsys)
    assert not os.path.exists(tmp_path / "run" / "train")  # nothing started
    # requests no node of the session's Ray (4 CPUs, no GPU) can meet would wait forever
    nowhere = ["train", "supervised", "--data", data, "--out", str(tmp_path / "hang"), "--labels", labels]
    assert main([*nowhere, "--gpus-per-worker", "1"]) == 2
    assert "cpus_per_worker/gpus_per_worker: a train worker needs {'CPU': 1.0, 'GPU': 1.0}, more than any node has" in _error_line(capsys)
    assert main([*nowhere, "--workers", "5"]) == 2
    assert "workers: 5 train workers need {'CPU': 5.0, 'GPU': 0.0} at once, more than all nodes have together" in _error_line(capsys)
    assert not os.path.exists(tmp_path / "hang")  # nothing written: the corrected command starts cleanly
    assert main([*nowhere, "--resume"]) == 2
    assert f"--resume: {tmp_path / 'hang'} holds no run to resume (no config.json); drop --resume to start one" in _error_line(capsys)


def test_one_train_per_run_folder_and_a_resume_on_other_data_is_refused(small_prepared, real_prepared, tmp_path, capsys):
    """A second ``raysup train`` into a folder being trained is refused, naming the holder; a
    ``--resume`` with other data or another labels mapping is refused, naming what changed."""
    from raysup.locks import RunLock
    from raysup.train import data_identity, record_data, start_run

    data, labels = small_prepared
    run = str(tmp_path / "run")
    train = ["train", "supervised", "--data", data, "--out", run, "--labels", labels]
    with RunLock(run):
        assert main(train) == 2
    assert f"{run} is being trained by pid {os.getpid()} on" in _error_line(capsys)
    assert not os.path.exists(f"{run}/train") and not os.path.exists(f"{run}/config.json")

    # a run trained on the small set (its config and a checkpoint) ...
    start_run(run, make_config("supervised", "tiny"), "train", False)
    record_data(run, data_identity(PreparedData(data), labels), resume=False)
    ckpt = tmp_path / "run" / "train" / "checkpoint_2026-12-06_10-00-00.000000"
    ckpt.mkdir(parents=True)
    torch.save({"epoch": 0}, ckpt / "checkpoint.pt")
    # ... resumed with the same rows labelled otherwise
    lines = open(labels).read().splitlines()
    swapped = tmp_path / "swapped.csv"
    first = lines[1].split(",")
    other = next(line.split(",") for line in lines[2:] if line.split(",")[1] != first[1])
    swapped.write_text("\n".join([lines[0], ",".join([first[0], other[1], first[2]])] + lines[2:]) + "\n")
    assert main([*train[:-1], str(swapped), "--resume"]) == 2
    assert "resume: the run was trained on other data (labels_sha256:" in _error_line(capsys)
    assert main([*train, "--resume", "--data", real_prepared.uri]) == 2
    assert "resume: the run was trained on other data (clips: 48 ->" in _error_line(capsys)
    moved = {**json.load(open(f"{run}/data.json")), "data": "/elsewhere/prepared"}  # the same data, moved
    record_data(run, moved, resume=True)
    assert json.loads(open(f"{run}/resumes.jsonl").read())["changed"] == {"data": [data, "/elsewhere/prepared"]}


def test_non_finite_loss_stops_the_run_without_retries(small_prepared, tmp_path, capsys):
    data, labels = small_prepared
    sets = ["optim.name=sgd", "optim.lr=1e38", "optim.schedule=constant", "epochs=3", "batch_size=8", "max_failures=2"]
    started = time.time()
    code = main(["train", "supervised", "--data", data, "--out", str(tmp_path / "run"), "--labels", labels, *[a for s in sets for a in ("--set", s)]])
    assert code == 2 and "is not finite at epoch 0, step" in _error_line(capsys)
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert len(lines) == 1 and "raysup_error" in lines[0]  # one attempt: not retried max_failures times
    assert time.time() - started < 120


def test_ray_address_is_respected(ray_session):
    import subprocess
    import sys

    address = ray_session.get_runtime_context().gcs_address
    code = "from raysup.runtime import init_ray; import ray; init_ray(); print(ray.get_runtime_context().gcs_address)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "RAY_ADDRESS": address}, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == address, out.stderr[-2000:]


@pytest.mark.slow  # a Ray Train finetuning per encoder (~40 s)
def test_probe_finetunes_each_encoder_through_fit(small_prepared, tmp_path, capsys):
    """``raysup probe --finetune``: each encoder with a new linear head, trained by ``fit`` in
    ``RUN_DIR.finetune/<encoder>`` and recorded in ``probes.jsonl``."""
    data, labels = small_prepared
    run_dir = str(tmp_path / "run")
    sets = [a for k, v in {"epochs": 1, "batch_size": 4, "max_steps": 2}.items() for a in ("--set", f"{k}={v}")]
    assert main(["train", "supervised", "--data", data, "--out", run_dir, "--labels", labels, *sets]) == 0
    capsys.readouterr()
    assert main(["probe", run_dir, "--data", data, "--labels", labels, "--finetune", "--epochs", "1", "--batch-size", "8", "--json"]) == 0
    tuned = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(tuned) == {"video", "audio"} and all(0 <= v <= 1 for v in tuned.values())
    assert latest_checkpoint(f"{run_dir}.finetune/video") and latest_checkpoint(f"{run_dir}.finetune/audio")
    probes = [json.loads(line) for line in open(f"{run_dir}/probes.jsonl")]
    assert probes[-1]["protocol"] == "finetune" and probes[-1]["top1"] == tuned
