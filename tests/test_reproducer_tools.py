"""The tools a reproducer checks a preset with before spending GPU hours: ``raysup config``
(the resolved config as JSON) and ``max_steps`` (a run that ends after N optimiser steps:
tests/test_train.py::test_train_probe_resume_and_refuse_to_overwrite)."""
from __future__ import annotations

import json

from raysup.cli import main
from raysup.methods import load_config, make_config


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
