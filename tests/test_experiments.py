"""The sweep scripts run end to end (``--quick``) on a real local Ray cluster with Tune."""
from __future__ import annotations

import os
import runpy
import sys

import pandas as pd


def test_xdc_k_sweep_quick(prepared, tmp_path, monkeypatch, capsys):
    data, labels = prepared
    argv = ["xdc_k_sweep.py", "--quick", "--data", data.uri, "--labels", labels, "--storage", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "experiments", "xdc_k_sweep.py"), run_name="__main__")
    out_dir = tmp_path / "xdc_k_sweep"
    table = pd.read_csv(out_dir / "results.csv")
    assert table["method.k"].astype(str).tolist() == ["4", "8", "random init"]
    assert table[["video", "audio"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (out_dir / "results.png").stat().st_size > 1000 and (out_dir / "results.md").exists()
    assert "XDC: number of clusters k" in capsys.readouterr().out
    # Tune's own results (progress.csv, TensorBoard events) are there for the dashboard
    assert any(f.startswith("events.out.tfevents") for _, _, fs in os.walk(out_dir) for f in fs)
    # the stage-5 benchmark's breakdown of this sweep's wall time (experiments/bench/sweep.py)
    rows = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "experiments", "bench", "sweep.py"))["breakdown"](str(out_dir))
    trials, share = rows[:-1], rows[-1]
    assert len(trials) == 2 and share["goal"].startswith("next bottleneck"), rows
    for r in trials:
        assert r["features s"] > 0 and r["k-means s"] > 0 and r["train steps s"] > 0 and r["probe s"] > 0, r
        assert r["trial total s"] > r["features s"] + r["k-means s"] + r["train steps s"] + r["probe s"], r
    assert "Sweep wall time by stage" in capsys.readouterr().out


def test_gdt_specaugment_sweep_quick(prepared, tmp_path, monkeypatch, capsys):
    """A two-key grid: --quick keeps two SpecAugment settings at sync=True."""
    data, labels = prepared
    argv = ["gdt_specaugment_sweep.py", "--quick", "--data", data.uri, "--labels", labels, "--storage", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "experiments", "gdt_specaugment_sweep.py"), run_name="__main__")
    table = pd.read_csv(tmp_path / "gdt_specaugment_sweep" / "results.csv")
    assert table["method.specaugment"].tolist() == ["mild", "none", "random init"]
    assert table["method.sync"].tolist()[:2] == [True, True]
    assert table[["video", "audio"]].apply(lambda c: c.between(0, 1)).all().all()
    assert "GDT: SpecAugment x sync/async" in capsys.readouterr().out
