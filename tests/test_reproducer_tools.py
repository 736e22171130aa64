"""The tools a reproducer checks a preset with before spending GPU hours: ``raysup config``
(the resolved config as JSON) and ``max_steps`` (a run that ends after N optimiser steps)."""
from __future__ import annotations

import json
import os

from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.cli import main
from raysup.data.ingest import PreparedData
from raysup.methods import load_config, make_config, method_module


def test_config_prints_the_config_a_run_would_use(capsys):
    assert main(["config", "gdt", "--preset", "paper", "--set", "optim.lr=0.02", "--set", "max_steps=2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    # exactly what `raysup train gdt --preset paper --set …` builds, and loadable as such
    assert load_config(printed) == make_config("gdt", "paper", {"optim.lr": "0.02", "max_steps": "2"})
    assert printed["preset"] == "paper" and printed["optim"]["lr"] == 0.02 and printed["max_steps"] == 2
    assert printed["method"]["video_encoder"] == "r2plus1d_18"
    assert main(["config", "cpfs"]) == 0
    assert json.loads(capsys.readouterr().out)["method"]["backbone"] == "alexnet_tiny"  # --preset tiny by default


def test_config_errors_are_one_line_and_exit_2(capsys):
    for argv, message in [
        (["config", "gdt", "--set", "optim.lrr=1"], "unknown field 'optim.lrr'"),
        (["config", "gdt", "--set", "max_steps=-1"], "max_steps: must be >= 0"),
        (["config", "nope"], "method: unknown 'nope'"),
        (["config", "gdt", "--preset", "paper_vgg16"], "preset: expected one of ['paper', 'tiny']"),  # Cross and Learn's only
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("raysup config: error: ") and message in err[0], err


def test_max_steps_ends_the_run_with_a_checkpoint_and_resume_continues(small_prepared, tmp_path):
    data, labels = PreparedData(small_prepared[0]), small_prepared[1]
    run_dir = str(tmp_path / "run")
    run = method_module("supervised").run
    base = {"epochs": 4, "batch_size": 4, "optim.schedule": "cosine"}
    r = run(make_config("supervised", "tiny", {**base, "max_steps": 3}), data, run_dir, labels=labels)
    assert (r["epoch"], r["steps"], r["total_steps"]) == (0, 3, 3)  # stopped inside the first epoch
    saved = load_checkpoint_file(latest_checkpoint(run_dir))
    assert saved["epoch"] == 0 and saved["state"]["step"] == 3 and saved["scheduler"]["last_epoch"] == 3
    # the schedule still spans `epochs`: after 3 steps the cosine lr has barely moved
    assert 0.9 * make_config("supervised", "tiny").optim.lr < r["lr"] < make_config("supervised", "tiny").optim.lr

    r = run(make_config("supervised", "tiny", {**base, "max_steps": 5}), data, run_dir, labels=labels, resume=True)
    assert (r["epoch"], r["steps"], r["total_steps"]) == (1, 2, 5)  # the next epoch, 2 more steps
    lines = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [(m["epoch"], m["total_steps"]) for m in lines] == [(0, 3), (1, 5)]
    assert load_checkpoint_file(latest_checkpoint(run_dir))["scheduler"]["last_epoch"] == 5
