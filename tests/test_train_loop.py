"""The training loop's pure parts: per-step learning-rate schedules, weight-decay groups,
the resume check, the non-finite guard and checkpoint loading (no Ray needed)."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from raysup.checkpoint import CHECKPOINT_FILE
from raysup.config import ConfigError, OptimConfig, to_dict
from raysup.methods import make_config, method_module
from raysup.train import FiniteCheck, NonFiniteLoss, config_changes, load_weights, lr_factor, make_optimizer, make_scheduler


def test_warmup_and_cosine_are_per_step():
    cfg = OptimConfig(lr=1.0, schedule="cosine", warmup_epochs=1)
    steps, epochs = 10, 5  # 50 steps, the first 10 warm up
    f = [lr_factor(cfg, s, steps, epochs) for s in range(steps * epochs)]
    assert f[0] == pytest.approx(1 / 11) and f[9] == pytest.approx(10 / 11)  # linear within the first epoch
    assert all(a < b for a, b in zip(f[:10], f[1:11]))
    assert f[10] == pytest.approx(1.0)  # cosine starts at the peak
    assert f[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert all(a > b for a, b in zip(f[10:-1], f[11:]))  # decays at every step, not once per epoch
    assert f[-1] < 0.01


def test_step_schedule_milestones_are_fractions_of_the_run():
    cfg = OptimConfig(schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    f = [lr_factor(cfg, s, 4, 10) for s in range(40)]  # 40 steps
    assert f[19] == 1.0 and f[20] == pytest.approx(0.1) and f[29] == pytest.approx(0.1) and f[30] == pytest.approx(0.01)


def test_scheduler_steps_the_optimizer_lr():
    model = torch.nn.Linear(2, 2)
    opt = make_optimizer(OptimConfig(lr=0.1, schedule="constant", warmup_epochs=0.5), model)
    sched = make_scheduler(OptimConfig(lr=0.1, schedule="constant", warmup_epochs=0.5), opt, steps_per_epoch=4, epochs=2)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1])


def test_no_weight_decay_on_norm_and_bias_unless_asked():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    groups = make_optimizer(OptimConfig(name="sgd", weight_decay=1e-4), model).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    groups = make_optimizer(OptimConfig(name="sgd", weight_decay=1e-4, decay_norm_and_bias=True), model).param_groups
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-4


def test_gradient_clipping_is_a_setting():
    from raysup.config import from_dict

    assert from_dict(OptimConfig, {"clip_grad_norm": "1.5"}).clip_grad_norm == 1.5
    with pytest.raises(ConfigError, match="clip_grad_norm: must be >= 0"):
        from_dict(OptimConfig, {"clip_grad_norm": "-1"})


def test_config_changes_name_nested_fields():
    a = to_dict(make_config("supervised", "tiny"))
    b = to_dict(make_config("supervised", "tiny", {"optim.lr": "0.5", "epochs": "30", "optim.milestones": "0.5"}))
    assert set(config_changes(a, b)) == {"optim.lr", "epochs", "optim.milestones"}
    assert config_changes(a, to_dict(make_config("supervised", "tiny"))) == {}


def test_non_finite_output_names_the_metric_epoch_and_steps():
    """The check waits for the device only when asked (every FINITE_CHECK_STEPS steps and before
    each checkpoint) and names the steps since the previous check."""
    finite = FiniteCheck(3, 10)
    finite.add({"loss": torch.tensor(1.0), "acc": torch.tensor(0.5)})
    finite.check(11)
    for value in (1.0, float("nan"), 2.0):
        finite.add({"loss": torch.tensor(1.0), "loss_audio": torch.tensor(value)})
    with pytest.raises(NonFiniteLoss, match="loss_audio is not finite at epoch 3, steps 11-13; the run stopped"):
        finite.check(14)
    finite = FiniteCheck(0, 0)
    finite.add({"loss": torch.tensor(float("inf"))})
    with pytest.raises(NonFiniteLoss, match="loss is not finite at epoch 0, step 0;"):
        finite.check(1)


def test_checkpoint_of_another_architecture_is_a_config_error(tmp_path):
    from raysup.data.schema import TensorSpec

    specs = {"frames": TensorSpec((8, 32, 32, 3), "uint8"), "audio": TensorSpec((40, 99), "float16")}
    tiny = method_module("xdc").build(make_config("xdc", "tiny"), specs)
    torch.save({"model": tiny.state_dict()}, tmp_path / CHECKPOINT_FILE)
    other = method_module("xdc").build(make_config("xdc", "tiny", {"method.k": "8"}), specs)  # heads of another size
    load_weights(other, str(tmp_path), pretrained=True)  # the next XDC round: encoders only, fresh heads
    with pytest.raises(ConfigError, match="checkpoint: .* does not fit this model"):
        load_weights(other, str(tmp_path))


def test_json_lines_are_replaced_whole_and_a_torn_last_line_is_named(tmp_path, capsys):
    """``metrics.jsonl``: a crash while appending leaves the old file (it used to be truncated
    first: a line that cannot be written emptied the history); a last line cut short by an
    older crash or a full disk is left out, naming the file; a broken line before it is an
    error naming the file and line."""
    import pyarrow.fs as pafs

    from raysup.train import append_line, read_lines

    fs, path = pafs.LocalFileSystem(), str(tmp_path / "metrics.jsonl")
    append_line(fs, path, {"epoch": 0})
    loop: dict = {}
    loop["self"] = loop  # cannot be written (circular)
    with pytest.raises(ValueError, match="Circular"):
        append_line(fs, path, loop)
    assert read_lines(fs, path) == [{"epoch": 0}] and os.listdir(tmp_path) == ["metrics.jsonl"]
    with open(path, "a") as f:
        f.write('{"epoch": 1, "lo')  # a full disk cut this line short
    assert read_lines(fs, path) == [{"epoch": 0}]
    assert f"{path}:2: leaving out a line cut short" in capsys.readouterr().err
    append_line(fs, path, {"epoch": 1})
    assert read_lines(fs, path) == [{"epoch": 0}, {"epoch": 1}]
    with open(path, "a") as f:
        f.write('{"epoch": 2, "lo\n{"epoch": 3}\n')
    with pytest.raises(ValueError, match=f"{path}:3: not a JSON line"):
        read_lines(fs, path)


def test_latest_checkpoint_skips_a_checkpoint_cut_short(tmp_path, capsys):
    """A kill or a full disk during a checkpoint write leaves a newer, truncated
    ``checkpoint.pt``: the newest complete one is used, the broken one named."""
    from raysup.checkpoint import latest_checkpoint, load_checkpoint_file

    good, cut = tmp_path / "train" / "checkpoint_2026-12-06_10-00-00.000000", tmp_path / "train" / "checkpoint_2026-12-06_10-05-00.000000"
    good.mkdir(parents=True)
    cut.mkdir()
    torch.save({"epoch": 0, "model": {"w": torch.zeros(1000)}}, good / CHECKPOINT_FILE)
    data = (good / CHECKPOINT_FILE).read_bytes()
    (cut / CHECKPOINT_FILE).write_bytes(data[: len(data) // 2])
    assert latest_checkpoint(str(tmp_path)) == str(good)
    assert f"checkpoint: skipping {cut}: {CHECKPOINT_FILE} is cut short" in capsys.readouterr().err
    assert load_checkpoint_file(latest_checkpoint(str(tmp_path)))["epoch"] == 0
    with pytest.raises(ValueError, match=f"checkpoint: {cut}/{CHECKPOINT_FILE} is incomplete or corrupt"):
        load_checkpoint_file(str(cut))
    # the next run there removes it (nothing else in its folder: it is Ray's upload of raysup's file)
    from raysup.train import start_run

    start_run(str(tmp_path), make_config("supervised", "tiny"), "train", True)
    assert f"checkpoint: removing {cut}: {CHECKPOINT_FILE} is cut short" in capsys.readouterr().err
    assert not cut.exists() and (good / CHECKPOINT_FILE).exists()
    (good / CHECKPOINT_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint under"):
        latest_checkpoint(str(tmp_path))


def test_a_run_that_stopped_before_its_first_checkpoint_starts_anew(tmp_path, capsys):
    """config.json (and Ray's folder) of a run that died before training: a new run with other
    settings starts, saying so, instead of the resume message; once a checkpoint exists the
    settings are fixed and a rerun without ``--resume`` is refused."""
    from raysup.train import check_resumable, start_run

    run = str(tmp_path / "run")
    start_run(run, make_config("supervised", "tiny"), "train", False)
    (tmp_path / "run" / "train").mkdir()  # Ray's run folder, no checkpoint
    other = make_config("supervised", "tiny", {"optim.lr": "0.5"})
    start_run(run, other, "train", False)
    assert "stopped before its first checkpoint; starting anew with these settings" in capsys.readouterr().err
    assert json.load(open(f"{run}/config.json"))["optim"]["lr"] == 0.5
    check_resumable(run)  # --resume of it: from the beginning, saying so
    assert "has no checkpoint (its run stopped before the end of its first epoch); starting it from the beginning" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="holds no run to resume"):
        check_resumable(str(tmp_path / "empty"))
    (tmp_path / "run" / "train" / "checkpoint_2026-12-06_10-00-00.000000").mkdir()
    torch.save({"epoch": 0}, tmp_path / "run" / "train" / "checkpoint_2026-12-06_10-00-00.000000" / CHECKPOINT_FILE)
    with pytest.raises(FileExistsError, match="already holds a run; pass --resume"):
        start_run(run, other, "train", False)
    with pytest.raises(ConfigError, match="resume: the run was made with other settings"):
        start_run(run, make_config("supervised", "tiny"), "train", True)


def test_supervised_counts_classes_over_prepared_videos_and_reports_dropped_rows(capsys):
    from raysup.data.labels import LabelRow
    from raysup.methods.supervised import train_labels

    rows = [LabelRow("a/1", "a", "train"), LabelRow("b/1", "b", "train"), LabelRow("b/2", "b", "test")]
    rows += [LabelRow(f"gone/{i}", f"c{i}", "train") for i in range(10)]  # classes of videos never prepared
    assert train_labels(rows, {"a/1", "b/1", "b/2"}, "labels.csv") == ({"a/1": 0, "b/1": 1}, 2)
    assert "labels: 10 of 13 rows of labels.csv name videos that are not in the prepared data (10 of them train videos)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="labels: the prepared videos in labels.csv have 1 class; the supervised baseline needs at least 2"):
        train_labels(rows, {"a/1"}, "labels.csv")


def test_a_command_without_an_address_starts_its_own_ray(monkeypatch):
    """Without ``--address`` and ``$RAY_ADDRESS`` a command starts a local Ray (``ray.init()``
    alone would join any ``ray start`` cluster on the machine and refuse ``num_cpus``)."""
    from raysup.runtime import ray_address

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address(None) == "local" and ray_address("auto") == "auto"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_address(None) == "10.0.0.1:6379" and ray_address("auto") == "auto"


def test_run_lock_refuses_a_live_holder_and_breaks_a_dead_one(tmp_path, capsys):
    import subprocess
    import sys

    from raysup.locks import RunLock

    run = str(tmp_path / "run")
    with RunLock(run):
        with pytest.raises(FileExistsError, match=f"{run} is being trained by pid {os.getpid()} on .*; wait for it to finish or use another --out"):
            RunLock(run).__enter__()
    assert not os.path.exists(f"{run}/lock.json")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    with RunLock(run):  # a holder killed without cleaning up
        with open(f"{run}/lock.json") as f:
            stamp = json.load(f)
        with open(f"{run}/lock.json", "w") as f:
            json.dump({**stamp, "pid": int(dead), "token": "x"}, f)
        with RunLock(run):
            pass
    assert f"breaking the stale lock of {run} held by pid {dead}" in capsys.readouterr().err
