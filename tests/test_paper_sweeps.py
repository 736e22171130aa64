"""The experiment scripts' ``--paper`` mode: each row trained with its paper's recipe and scored
as the paper's table scores it, the published numbers beside ours."""
from __future__ import annotations

import os
import runpy

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
