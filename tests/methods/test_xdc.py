"""XDC end to end on the synthetic set: two clustering rounds through Ray Data features,
a faiss Ray task and TorchTrainers; the cluster analysis is logged and resume skips work."""
from __future__ import annotations

import json
import os

import pytest
import torch

from raysup.methods import make_config, method_module
from raysup.methods.xdc import XDC, uniform_cluster_counts
from raysup.train import latest_checkpoint, load_checkpoint_file


def test_uniform_cluster_sampling():
    import numpy as np

    labels = {"video": np.array([0] * 90 + [1] * 10)}
    counts = uniform_cluster_counts(labels, 10000, seed=0)
    assert abs(counts[:90].sum() - 5000) < 300 and abs(counts[90:].sum() - 5000) < 300


def test_heads_reset_between_rounds():
    cfg = make_config("xdc", "tiny", {"method.variant": "mdc", "method.k": 5})
    a, b = XDC(cfg.method), XDC(cfg.method)
    assert set(a.heads) == {"video", "audio", "video_cross", "audio_cross"}
    b.load_pretrained(a.state_dict())
    assert torch.equal(a.video.body[0].weight, b.video.body[0].weight)  # encoders carried over
    assert not torch.equal(a.heads["video"].weight, b.heads["video"].weight)  # heads fresh


def test_two_rounds_with_cluster_analysis_and_resume(prepared, tmp_path):
    data, labels = prepared
    run_dir = str(tmp_path / "xdc")
    cfg = make_config("xdc", "tiny", {"method.k": 8, "method.rounds": 2, "epochs": 2})
    metrics = method_module("xdc").run(cfg, data, run_dir, labels=labels)
    assert metrics["round"] == 1 and "nmi_previous" in metrics and "purity" in metrics and "val_loss" in metrics
    stats = json.load(open(os.path.join(run_dir, "clusters", "round_1_stats.json")))
    assert len(stats["cluster_sizes"]) == 8 and sum(stats["cluster_sizes"]) > 0
    assert 0 <= stats["nmi_truth"] <= 1 and 0 < stats["purity"] <= 1
    assert "round_1" in latest_checkpoint(run_dir)
    logged = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [m["round"] for m in logged] == [0, 0, 1, 1]
    saved = load_checkpoint_file(latest_checkpoint(run_dir))
    assert saved["model"]["heads.video.weight"].shape[0] == 8
    with pytest.raises(FileExistsError, match="--resume"):
        method_module("xdc").run(cfg, data, run_dir, labels=labels)
    again = method_module("xdc").run(cfg, data, run_dir, labels=labels, resume=True)  # both rounds done: nothing redone
    assert again == metrics
    assert len(open(os.path.join(run_dir, "metrics.jsonl")).readlines()) == 4
