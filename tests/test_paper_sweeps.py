"""The experiment scripts' ``--paper`` mode: each row trained with its paper's recipe and scored
as the paper's table scores it, the published numbers beside ours."""
from __future__ import annotations

import itertools
import os
import runpy
import sys

import pandas as pd
import pytest

from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.sweep.experiment import parser, sweep_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def experiment(name: str):
    return runpy.run_path(os.path.join(ROOT, "experiments", f"{name}.py"))["EXPERIMENT"]


def test_cpfs_paper_sweep_trains_the_direct_baseline_at_its_own_lr(tmp_path):
    exp = experiment("cpfs_sigma_sweep")

    def sweep(*args):
        return sweep_of(parser(exp).parse_args(["--storage", str(tmp_path), *args]), exp)

    direct, learned = {"method.target": "direct"}, {"method.target": "learned"}
    s = sweep("--paper")
    assert s.config(direct).optim.lr == 0.01  # papers/cpfs.md L171: "a faster initial learning rate of 0.01"
    assert s.config(learned).optim.lr == 1e-4  # the similarity rows: the cpfs paper preset's Adam 1e-4
    assert s.config(direct).method.target == "direct" and s.record()["row_base"] == [[direct, {"optim.lr": 0.01}]]
    assert sweep("--paper", "--set", "optim.lr=0.003").config(direct).optim.lr == 0.003  # a --set wins
    assert sweep().config(direct).optim.lr == sweep().config(learned).optim.lr  # the tiny grid: one lr


def row_names(exp) -> set[tuple]:
    """The ``--paper`` table's row keys: each grid point's values, then the baselines' names
    (:func:`raysup.sweep.results.baselines`)."""
    grid = exp.paper_grid
    points = set(itertools.product(*grid.values()))
    randoms = {("random init" + "".join(f" ({v})" for v in values),) for values in itertools.product(*(grid[k] for k in exp.random_per))}
    return points | randoms | ({("supervised",)} if exp.supervised else set())


SWEEPS = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "experiments"))
                if f.endswith(".py") and "EXPERIMENT = Experiment(" in open(os.path.join(ROOT, "experiments", f)).read())


@pytest.mark.parametrize("name", SWEEPS)
def test_every_published_number_sits_on_a_row_of_the_paper_table(name):
    exp = experiment(name)
    assert exp.published, f"{name}: no published numbers for its --paper table"
    assert set(exp.published) <= row_names(exp), set(exp.published) - row_names(exp)
    for match, _ in exp.paper_rows:
        assert any(all(dict(zip(exp.paper_grid, point))[k] == v for k, v in match.items()) for point in row_names(exp))


@pytest.mark.slow  # a --paper sweep end to end: two pretrainings, then three rows × two CaffeNet finetunings (Ray Train)
def test_cal_paper_sweep_finetunes_each_row_and_prints_the_published_column(prepared, tmp_path, monkeypatch, capsys):
    """cal_loss_weight_sweep.py --paper on the 180-video set, shrunk by --set to its clips (the tiny
    CaffeNet, 6 flow fields of the 8-frame clips) and one finetuning epoch (--paper-epochs 1):
    every row finetuned as Table 3 (L181-189) finetunes, the paper's column beside ours."""
    data, labels = prepared[0].uri, prepared[1]
    shrink = ["method.encoder=caffenet_tiny", "crop_size=0", "method.flow_fields=6"]
    argv = ["cal_loss_weight_sweep.py", "--paper", "--quick", "--paper-epochs", "1", "--data", data, "--labels", labels, "--storage", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv + [x for kv in shrink for x in ("--set", kv)])
    runpy.run_path(os.path.join(ROOT, "experiments", "cal_loss_weight_sweep.py"), run_name="__main__")
    table = pd.read_csv(tmp_path / "cal_loss_weight_sweep" / "results.csv")
    assert table["method.div_weight"].astype(str).tolist() == ["0.0", "0.25", "random init"]  # --quick: two points of the paper grid
    assert table[["rgb", "flow"]].apply(lambda c: c.between(0, 1)).all().all()  # the RGB and OF networks finetuned, each row
    published = table.set_index("method.div_weight").loc["random init"]  # Table 3 L180, L182: random weights
    assert (published["paper UCF101 rgb"], published["paper HMDB51 rgb"], published["paper UCF101 flow"], published["paper HMDB51 flow"]) == (49.1, 19.2, 76.4, 47.1)
    assert table["paper UCF101 rgb"].iloc[:2].isna().all()  # w = 0, 0.25: the paper has no number
    runs = sorted((tmp_path / "cal_loss_weight_sweep" / "runs").glob("*/paper_protocol/flow"))
    assert len(runs) == 3  # the two trials and the random-init row
    saved = load_checkpoint_file(latest_checkpoint(str(runs[0])))
    assert saved["config"]["epochs"] == 1 and saved["config"]["batch_size"] == 128 and saved["config"]["optim"]["lr"] == 0.01
    assert "paper protocol top-1 (finetuning where the paper finetunes)" in capsys.readouterr().out
