"""``raysup probe --protocol paper``: GDT's full-finetuning protocol (appendix A.2) through the
project's Ray Train ``fit``, with 10-clip averaging at test time. Slow (Ray Train runs on the
180-video set: the protocol's batch of 32 needs more training clips than the 24-video set has):
``pytest -m slow tests/test_paper_protocol.py``."""
from __future__ import annotations

import json
import os

import pytest

from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.cli import main
from raysup.evaluate import PAPER_PROTOCOLS

pytestmark = pytest.mark.slow


def test_gdt_paper_protocol_finetunes_through_fit(prepared, tmp_path, capsys):
    data, labels = prepared[0].uri, prepared[1]
    run = str(tmp_path / "gdt")
    assert main(["train", "gdt", "--data", data, "--out", run, "--set", "epochs=1", "--set", "batch_size=8"]) == 0
    pretrained = latest_checkpoint(run)
    capsys.readouterr()
    probe = ["probe", run, "--data", data, "--labels", labels, "--protocol", "paper", "--paper-epochs", "2", "--json"]
    assert main(probe) == 0
    acc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(acc) == {"video"} and 0 <= acc["video"] <= 1
    ft = f"{run}.paper_protocol/video"
    lines = [json.loads(line) for line in open(os.path.join(ft, "metrics.jsonl"))]
    assert [m["epoch"] for m in lines] == [0, 1] and all(0 <= m["acc"] <= 1 for m in lines)
    saved = load_checkpoint_file(latest_checkpoint(ft))
    p = PAPER_PROTOCOLS["gdt"]
    assert saved["config"]["optim"]["lr"] == p.optim.lr and saved["config"]["batch_size"] == p.batch_size
    assert list(saved["config"]["optim"]["milestones"]) == [0.6, 0.8] and saved["config"]["optim"]["weight_decay"] == 5e-3
    # the finetuned encoder started from the pretrained one; the pretraining run is untouched
    assert latest_checkpoint(run) == pretrained
    # rerunning resumes the finished finetuning (no epoch trained twice) and scores again
    assert main(probe) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == acc
    assert len(open(os.path.join(ft, "metrics.jsonl")).read().splitlines()) == 2


def test_paper_protocol_of_a_method_without_one_is_one_line(small_prepared, tmp_path, capsys):
    data, labels = small_prepared
    run = str(tmp_path / "cpfs")
    assert main(["train", "cpfs", "--data", data, "--out", run, "--set", "epochs=1", "--set", "batch_size=8"]) == 0
    capsys.readouterr()
    assert main(["probe", run, "--data", data, "--labels", labels, "--protocol", "paper"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--protocol paper: not implemented for cpfs yet (only gdt)" in err[0]
