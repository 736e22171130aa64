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
from raysup.cluster_features import INDEX_FILE, parquet_files
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
    # each clustering its own k: the audio features' 8 clusters teach the video encoder, the
    # video features' 6 the audio encoder; epochs of a fixed number of clips
    cfg = make_config("xdc", "tiny", {"method.k_audio": 8, "method.k_video": 6, "method.rounds": 2, "epochs": 2, "method.epoch_size": 1.0,
                                      "method.epoch_clips": 80, "batch_size": 8})
    metrics = runner.train(cfg, data, run_dir, labels=labels)
    assert metrics["round"] == 1 and "val_loss" in metrics
    for e, k in (("video", 8), ("audio", 6)):  # the clusters each encoder learns from
        assert {f"nmi_previous_{e}", f"purity_{e}", f"nmi_truth_{e}", f"empty_clusters_{e}"} <= set(metrics)
        assert len(metrics[f"cluster_sizes_{e}"]) == k
    stats = json.load(open(os.path.join(run_dir, "clusters", "round_1_stats.json")))
    for e, k in (("video", 8), ("audio", 6)):
        st = stats[e]
        assert len(st["cluster_sizes"]) == k and sum(st["cluster_sizes"]) > 0
        assert 0 <= st["nmi_truth"] <= 1 and 0 < st["purity"] <= 1
    clustered = json.load(open(os.path.join(run_dir, "clusters", "round_1", "stats.json")))
    assert (clustered["audio"]["k"], clustered["video"]["k"]) == (8, 6)
    assert "round_1" in latest_checkpoint(run_dir)
    logged = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [m["round"] for m in logged] == [0, 0, 1, 1]
    # uniform sampling over clusters: every epoch draws about epoch_clips clips, more than the train split holds
    saved = pq.read_table(parquet_files(os.path.join(run_dir, "clusters", "round_0")))  # labels Parquet, keyed by clip
    assert saved.num_rows == PreparedData(small_prepared[0]).manifest["counts"]["clips"]
    n_train = sum(not is_held_out(v, cfg.method.val_fraction) for v in saved["video_id"].to_pylist())
    expected = cfg.method.epoch_clips / cfg.batch_size
    assert n_train < cfg.method.epoch_clips
    assert all(abs(m["steps"] - expected) <= 2 for m in logged), (expected, [m["steps"] for m in logged])
    assert sorted(os.listdir(os.path.join(run_dir, "features"))) == ["round_1"]  # round 0's removed once round 1 clustered
    features = pq.read_table(parquet_files(os.path.join(run_dir, "features", "round_1")))
    dims = {e: getattr(XDC(cfg.method), e).out_dim for e in ("video", "audio")}
    assert {e: features.schema.field(e).type for e in dims} == {e: pa.list_(pa.float32(), d) for e, d in dims.items()}
    assert features.num_rows == saved.num_rows
    # labels joined by the clips' shards: each labels folder indexes its row groups by shard
    assert "path" in features.column_names and os.path.exists(os.path.join(run_dir, "clusters", "round_0", INDEX_FILE))
    saved = load_checkpoint_file(latest_checkpoint(run_dir))
    assert saved["model"]["heads.video.weight"].shape[0] == 8 and saved["model"]["heads.audio.weight"].shape[0] == 6
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


def test_paper_schedules_follow_table_10():
    """Table 10 (papers/xdc.md L393-395): warm-up over `we` epochs, then lr ×0.01 every `se`
    epochs after it, `te` epochs; an epoch is `es` clips."""
    from raysup.train import lr_factor

    spe = 100  # steps per epoch
    for preset, (we, se, te, es) in {"paper": (10, 10, 30, 1_000_000), "paper_audioset": (10, 10, 45, 2_000_000),
                                     "paper_ig": (1, 3, 10, 10_000_000)}.items():
        cfg = make_config("xdc", preset)
        assert (cfg.epochs, cfg.optim.warmup_epochs, cfg.method.epoch_clips) == (te, we, es)
        lr = [lr_factor(cfg.optim, e * spe + spe // 2, spe, cfg.epochs) for e in range(te)]  # mid-epoch factors
        assert all(0 < f < 1 for f in lr[:we]) and lr[:we] == sorted(lr[:we])  # rising
        expected = [0.01 ** ((e - we) // se) for e in range(we, te)]
        assert lr[we:] == pytest.approx(expected, rel=1e-9), preset


def test_per_clustering_k_and_epoch_clips_are_checked():
    from raysup.config import ConfigError

    paper = make_config("xdc", "paper").method
    assert (paper.cluster_k("video"), paper.cluster_k("audio")) == (64, 128)  # Table 6 (L187-193)
    assert make_config("xdc", "tiny", {"method.variant": "cdc", "method.k_video": 5}).method.cluster_k("joint") == 16  # CDC: k
    with pytest.raises(ConfigError, match="method.k_video: must be 0"):
        make_config("xdc", "tiny", {"method.k_video": 1})
    with pytest.raises(ConfigError, match="method.epoch_clips: .* both set"):
        make_config("xdc", "tiny", {"method.epoch_clips": 100})  # tiny sets epoch_size 3


@pytest.mark.parametrize("script", ["xdc_k_sweep.py", "xdc_variants.py"])
def test_paper_grids_cluster_at_the_grid_k(script):
    """The Table 1 and 2 sweeps' --paper trials cluster both modalities at the k they name (the
    paper preset's own k_video/k_audio would otherwise override method.k)."""
    import runpy

    ns = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "..", "experiments", script))
    key, values = ("method.k", ns["PAPER_K"]) if script == "xdc_k_sweep.py" else ("method.variant", ns["GRID"]["method.variant"])
    cfgs = [make_config("xdc", "paper", {**ns["BASE"], key: v}) for v in values]
    ks = [(c.method.cluster_k("video"), c.method.cluster_k("audio")) for c in cfgs]
    if key == "method.k":
        assert ks == [(k, k) for k in values]
    else:
        assert set(ks) == {(128, 128)} and [c.method.variant for c in cfgs] == values


def test_epoch_clips_far_beyond_the_data_is_refused(small_prepared):
    """The paper preset's 1M clips per epoch on 48 clips would copy each ~20000 times into the stream."""
    from raysup.config import ConfigError
    from raysup.methods import xdc

    data = PreparedData(small_prepared[0])
    small = {"method.k_video": 0, "method.k_audio": 0, "method.k": 4, "method.pca_dim": 0}
    with pytest.raises(ConfigError, match=r"method.epoch_clips: 1000000 clips per epoch .* method.epoch_clips=0"):
        xdc.check(make_config("xdc", "paper", small), data)
    xdc.check(make_config("xdc", "paper", {**small, "method.epoch_clips": 0}), data)
    with pytest.raises(ConfigError, match="method.k_video: 64 clusters need at least as many clips; the prepared data has 48"):
        xdc.check(make_config("xdc", "paper", {"method.epoch_clips": 0}), data)


@pytest.mark.parametrize(("variant", "names"), [("xdc_2video", ("video", "video2")), ("xdc_2audio", ("audio", "audio2"))])
def test_same_modality_xdc_learns_the_other_encoders_clusters(variant, names):
    """same-modality-XDC (papers/xdc.md L105-115, Table 1): two encoders of one modality, each
    head learning the clusters of the other encoder's features; both encoders get gradients."""
    from raysup.clustering import CLUSTERINGS, HEADS

    torch.manual_seed(0)
    cfg = make_config("xdc", "tiny", {"method.variant": variant, "method.k": 4})
    model = XDC(cfg.method)
    a, b = names
    assert tuple(model.encoders()) == names and HEADS[variant] == {a: b, b: a} and CLUSTERINGS[variant] == {a: (a,), b: (b,)}
    batch = {"frames": torch.randint(0, 255, (2, 4, 16, 16, 3), dtype=torch.uint8), "audio": torch.randn(2, 40, 50),
             **{f"pl_{h}": torch.randint(0, 4, (2,)) for h in model.heads}}
    out = model(batch)
    out["loss"].backward()
    assert {f"loss_{a}", f"loss_{b}"} <= set(out)
    for name in names:
        assert all(p.grad is not None for p in getattr(model, name).parameters())
    first = next(getattr(model, a).parameters())
    assert not torch.equal(first, next(getattr(model, b).parameters()))  # two random inits, not one network twice


@pytest.mark.slow
def test_same_modality_xdc_round_clusters_the_second_encoder(small_prepared, tmp_path):
    """A round of xdc_2video writes both video encoders' features and clusters each (run by hand: ~1 min)."""
    data, labels = PreparedData(small_prepared[0]), small_prepared[1]
    run_dir = str(tmp_path / "xdc_2video")
    cfg = make_config("xdc", "tiny", {"method.variant": "xdc_2video", "method.k": 4, "method.rounds": 1, "epochs": 1, "batch_size": 8})
    metrics = runner.train(cfg, data, run_dir, labels=labels)
    assert {"nmi_truth_video", "nmi_truth_video2"} <= set(metrics)
    clustered = json.load(open(os.path.join(run_dir, "clusters", "round_0", "stats.json")))
    assert {"video", "video2"} <= set(clustered)
    from raysup.evaluate import probe

    assert set(probe(cfg, data, labels, latest_checkpoint(run_dir))) == {"video", "video2"}


@pytest.mark.slow
def test_finetune_lr_cross_validation_picks_on_validation_then_tests(small_prepared, tmp_path):
    """experiments/xdc_finetune_lr_cv.py: a 2-value lr grid as parallel Tune trials on held-out
    train videos, then the best lr finetuned and tested (run by hand; a few minutes)."""
    import runpy

    data, labels = small_prepared
    run_dir = str(tmp_path / "xdc")
    runner.train(make_config("xdc", "tiny", {"method.k": 4, "epochs": 1, "batch_size": 8}), PreparedData(data), run_dir, labels=labels)
    script = runpy.run_path(os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "xdc_finetune_lr_cv.py"))
    result = script["main"]([run_dir, "--data", data, "--labels", labels, "--lrs", "0.001,0.01", "--epochs", "1", "--val-fraction", "0.3",
                              "--batch-size", "4"])
    assert set(result["val_top1"]) == {"0.001", "0.01"} and result["best_lr"] in (0.001, 0.01)
    assert 0 <= result["test_top1"] <= 1
    assert json.load(open(f"{run_dir}.lr_cv/lr_cv.json")) == result
    assert os.path.isdir(f"{run_dir}.lr_cv/test_lr_{result['best_lr']:g}/video")


@pytest.mark.slow
def test_long_clip_run_retrains_the_video_encoder_on_the_last_clusters(small_prepared, tmp_path):
    """paper_32f's shape (papers/xdc.md L199, L400): rounds on a frame window, then a follow-up run
    (method.long_clips_of) on whole clips with its own batch and lr, the video encoder only (run by hand)."""
    from raysup.config import ConfigError
    from raysup.evaluate import probe

    data, labels = PreparedData(small_prepared[0]), small_prepared[1]
    rounds, long = str(tmp_path / "xdc"), str(tmp_path / "xdc_long")
    small = {"method.k": 4, "method.rounds": 1, "epochs": 1}
    runner.train(make_config("xdc", "tiny", {**small, "batch_size": 8, "method.window_frames": 4}), data, rounds, labels=labels)
    with pytest.raises(ConfigError, match="method.long_clips_of: .* holds no clustered XDC round"):
        runner.train(make_config("xdc", "tiny", {**small, "batch_size": 4, "method.long_clips_of": str(tmp_path)}), data, str(tmp_path / "x"))
    cfg = make_config("xdc", "tiny", {**small, "batch_size": 4, "optim.lr": 5e-4, "method.long_clips_of": rounds})
    runner.train(cfg, data, long, labels=labels)
    assert "long_clips" in latest_checkpoint(long)
    state = load_checkpoint_file(latest_checkpoint(long))["model"]
    assert {k.split(".")[0] for k in state} == {"video", "heads"} and {k.split(".")[1] for k in state if k.startswith("heads.")} == {"video"}
    before = load_checkpoint_file(latest_checkpoint(rounds))["model"]
    assert not torch.equal(before["video.body.0.weight"], state["video.body.0.weight"])  # trained on from the rounds' encoder
    assert set(probe(cfg, data, labels, latest_checkpoint(long))) == {"video"}
