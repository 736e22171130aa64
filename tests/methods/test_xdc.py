"""XDC end to end on the synthetic set: two clustering rounds through Ray Data features,
a faiss Ray task and TorchTrainers; the cluster analysis is logged and resume skips work."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raysup import runner
from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.cluster_features import parquet_files
from raysup.data.ingest import PreparedData
from raysup.data.tables import is_held_out
from raysup.methods import make_config
from raysup.methods.xdc import XDC


def test_uniform_cluster_sampling():
    """Each clip's draws come from the cluster sizes alone: both clusters of a 90/10 split get
    half of an epoch, and the epoch has about the asked size."""
    import numpy as np

    from raysup.cluster_features import draw_rates

    labels = np.array([0] * 90 + [1] * 10)
    rates = draw_rates({"video": np.bincount(labels).tolist()}, 10000)
    draws = rates["video"][labels]  # expected draws per clip
    assert draws[:90].sum() == pytest.approx(5000) and draws[90:].sum() == pytest.approx(5000)
    # two heads: the weights average over both label sets
    rates = draw_rates({"video": [90, 10], "audio": [50, 50]}, 10000)
    assert (rates["video"][labels] + rates["audio"][labels % 2]).sum() == pytest.approx(10000)


def test_heads_reset_between_rounds():
    cfg = make_config("xdc", "tiny", {"method.variant": "mdc", "method.k": 5})
    a, b = XDC(cfg.method), XDC(cfg.method)
    assert set(a.heads) == {"video", "audio", "video_cross", "audio_cross"}
    b.load_pretrained(a.state_dict())
    assert torch.equal(a.video.body[0].weight, b.video.body[0].weight)  # encoders carried over
    assert not torch.equal(a.heads["video"].weight, b.heads["video"].weight)  # heads fresh


def test_two_rounds_with_cluster_analysis_and_resume(small_prepared, tmp_path):
    data, labels = PreparedData(small_prepared[0]), small_prepared[1]
    run_dir = str(tmp_path / "xdc")
    cfg = make_config("xdc", "tiny", {"method.k": 8, "method.rounds": 2, "epochs": 2, "method.epoch_size": 1.0, "batch_size": 8})
    metrics = runner.train(cfg, data, run_dir, labels=labels)
    assert metrics["round"] == 1 and "val_loss" in metrics
    for e in ("video", "audio"):  # the clusters each encoder learns from
        assert {f"nmi_previous_{e}", f"purity_{e}", f"nmi_truth_{e}", f"empty_clusters_{e}"} <= set(metrics)
        assert len(metrics[f"cluster_sizes_{e}"]) == 8
    stats = json.load(open(os.path.join(run_dir, "clusters", "round_1_stats.json")))
    for st in stats.values():
        assert len(st["cluster_sizes"]) == 8 and sum(st["cluster_sizes"]) > 0
        assert 0 <= st["nmi_truth"] <= 1 and 0 < st["purity"] <= 1
    assert "round_1" in latest_checkpoint(run_dir)
    logged = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [m["round"] for m in logged] == [0, 0, 1, 1]
    # uniform sampling over clusters: every epoch draws about epoch_size × the train split's clips
    saved = pq.read_table(parquet_files(os.path.join(run_dir, "clusters", "round_0")))  # labels Parquet, keyed by clip
    assert saved.num_rows == PreparedData(small_prepared[0]).manifest["counts"]["clips"]
    n_train = sum(not is_held_out(v, cfg.method.val_fraction) for v in saved["video_id"].to_pylist())
    expected = cfg.method.epoch_size * n_train / cfg.batch_size
    assert all(abs(m["steps"] - expected) <= 2 for m in logged), (expected, [m["steps"] for m in logged])
    assert sorted(os.listdir(os.path.join(run_dir, "features"))) == ["round_1"]  # round 0's removed once round 1 clustered
    features = pq.read_table(parquet_files(os.path.join(run_dir, "features", "round_1")))
    dims = {e: getattr(XDC(cfg.method), e).out_dim for e in ("video", "audio")}
    assert {e: features.schema.field(e).type for e in dims} == {e: pa.list_(pa.float32(), d) for e, d in dims.items()}
    assert features.num_rows == saved.num_rows
    saved = load_checkpoint_file(latest_checkpoint(run_dir))
    assert saved["model"]["heads.video.weight"].shape[0] == 8
    with pytest.raises(FileExistsError, match="--resume"):
        runner.train(cfg, data, run_dir, labels=labels)
    again = runner.train(cfg, data, run_dir, labels=labels, resume=True)  # both rounds done: nothing redone
    assert again == metrics
    assert len(open(os.path.join(run_dir, "metrics.jsonl")).readlines()) == 4


@pytest.mark.slow
def test_xdc_video_features_beat_random_init(prepared, tmp_path):
    """The tiny preset learns: the video encoder trained on audio clusters probes far above
    its random init on the synthetic set's hidden classes (measured: see README)."""
    from raysup.evaluate import probe

    data, labels = prepared
    cfg = make_config("xdc", "tiny")
    runner.train(cfg, data, str(tmp_path / "xdc"), labels=labels)
    trained = probe(cfg, data, labels, latest_checkpoint(str(tmp_path / "xdc")))
    random_init = probe(cfg, data, labels, None)
    print(f"video probe: XDC {trained['video']:.3f} vs random init {random_init['video']:.3f}")
    assert trained["video"] >= random_init["video"] + 0.2
