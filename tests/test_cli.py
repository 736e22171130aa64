"""The ``raysup`` console script, called the way a user calls it."""
from __future__ import annotations

import subprocess
import sys

import pytest

from raysup import __version__
from raysup.cli import main, parser
from raysup.data.labels import read_labels_csv


def test_synth_and_labels(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", str(out), "--videos", "12", "--classes", "3", "--seconds", "1", "--size", "32"]) == 0
    assert len(list((out / "videos").rglob("*.mp4"))) == 12
    assert main(["labels", "ucf101", str(out / "splits"), str(tmp_path / "ucf.csv")]) == 0
    assert set(read_labels_csv(tmp_path / "ucf.csv")) == set(read_labels_csv(out / "labels.csv"))


def test_bad_config_names_the_field(small_prepared, tmp_path, capsys):
    data, labels = small_prepared
    code = main(["train", "supervised", "--data", data, "--out", str(tmp_path / "r"), "--labels", labels, "--set", "optim.lrr=1"])
    assert code == 2 and "unknown field 'optim.lrr'" in capsys.readouterr().err
    code = main(["train", "supervised", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    assert code == 2 and "not a prepared dataset" in capsys.readouterr().err


def test_version_help_and_python_m(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"raysup {__version__}"
    out = subprocess.run([sys.executable, "-m", "raysup", "--help"], capture_output=True, text=True, check=True).stdout
    assert "prepare" in out and "--version" in out
    # every option of every command says what it does
    subparsers = next(a for a in parser()._actions if a.dest == "command").choices
    missing = [f"{name} {a.dest}" for name, sp in subparsers.items() for a in sp._actions if a.dest != "help" and not a.help]
    assert not missing, missing


def test_errors_are_one_line_with_the_traceback_in_a_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAYSUP_LOG_DIR", str(tmp_path / "logs"))
    code = main(["train", "supervised", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r"), "--set", "method_name=xdc"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "method_name: set by the command" in err[0], err
    log = err[0].rsplit("(details: ", 1)[1].rstrip(")")
    assert "Traceback" in open(log).read()
