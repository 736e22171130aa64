"""k-means over a features dataset (raysup.cluster_features) on the session's Ray: agreement with
in-memory faiss k-means, the sample-size edge cases, statistics from counts equal to those of
gathered arrays, and the `raysup features` / `raysup cluster` commands end to end."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raysup.cli import main
from raysup.cluster_features import Clustering, cluster_features, parquet_files, priorities
from raysup.clustering import KMeansConfig, cluster_stats, contingency, kmeans, nmi, project
from raysup.data.schema import to_numpy, vectors

K = 8


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """4,000 rows of 16-d features around 8 well-separated centres, in three Parquet files, 4 clips
    per video, 100 clips per shard (``path``, as XDC writes them); returns (folder, features [N,D]
    in key order, true cluster [N], video ids [N])."""
    rng = np.random.default_rng(0)
    n, d = 4000, 16
    truth = rng.integers(0, K, n)
    x = (rng.normal(size=(K, d)) * 4)[truth] + rng.normal(size=(n, d))
    vid = np.array([f"v{i // 4:05d}" for i in range(n)])
    clip = (np.arange(n) % 4).astype(np.int32)
    path = np.array([f"/data/prepared/data/part-{i // 100:03d}.parquet" for i in range(n)])
    out = tmp_path_factory.mktemp("features")
    for i, s in enumerate(np.array_split(np.arange(n), 3)):
        pq.write_table(pa.table({"video_id": vid[s], "clip_index": clip[s], "path": path[s], "video": vectors(x[s])}), out / f"part-{i}.parquet")
    return str(out), x.astype(np.float32), truth, vid


def _labels(folder: str) -> pa.Table:
    return pq.read_table(parquet_files(folder)).sort_by([("video_id", "ascending"), ("clip_index", "ascending")])


def test_agrees_with_in_memory_faiss(ray_session, blobs, tmp_path):
    """The dataset path is faiss k-means on the sample (in the order of its hashes), then every row
    to its nearest centroid: exactly what in-memory faiss gives on the same rows."""
    folder, x, truth, vid = blobs
    keys = pa.table({"video_id": vid, "clip_index": pa.array(np.arange(len(x)) % 4, pa.int32())})
    order = np.argsort(priorities(keys, 1), kind="stable")  # the sample's order
    stats = cluster_features(folder, str(tmp_path / "all"), [Clustering("label", ("video",))], KMeansConfig(K, sample=10**6), seed=1)
    assert stats["sample"] == stats["rows"] == len(x)  # a sample larger than the set: all rows
    labels = _labels(str(tmp_path / "all"))
    assert labels.column_names == ["video_id", "clip_index", "label", "label_distance"] and labels.num_rows == len(x)
    ref = kmeans(x[order], K, seed=1)
    assert np.array_equal(labels["label"].to_numpy()[order], ref.labels)
    assert stats["label"]["objective"] == pytest.approx(ref.objective / len(x), rel=1e-4)
    assert np.allclose(np.load(tmp_path / "all" / "centroids.npy"), ref.centroids)
    # centroids trained on 1,000 rows: every row goes to its nearest one; sizes as counted
    stats = cluster_features(folder, str(tmp_path / "sample"), [Clustering("label", ("video",))], KMeansConfig(K, sample=1000), seed=1)
    labels = _labels(str(tmp_path / "sample"))["label"].to_numpy()
    ref = kmeans(x[order[:1000]], K, seed=1)
    nearest = ((project(x, None)[:, None, :] - ref.centroids[None]) ** 2).sum(-1).argmin(1)
    assert stats["sample"] == 1000 and (labels == nearest).mean() > 0.999  # float ties aside
    assert stats["label"]["cluster_sizes"] == np.bincount(labels, minlength=K).tolist()
    assert nmi(contingency(labels, truth, (K, K))) > 0.8  # and they are the blobs, up to a k-means local optimum


def test_statistics_from_counts_equal_those_of_gathered_arrays(ray_session, blobs, tmp_path):
    """NMI with a previous round (joined by key), purity and NMI against classes, training sizes
    and the PCA-whitened joint clustering of two columns, from counts summed over the tasks."""
    from sklearn.metrics import normalized_mutual_info_score

    folder, x, truth, vid = blobs
    first = cluster_features(folder, str(tmp_path / "r0"), [Clustering("label", ("video",))], KMeansConfig(5), seed=0)
    classes = {v: int(t) % 3 for v, t in zip(vid[::4], truth[::4], strict=True)}
    second = cluster_features(folder, str(tmp_path / "r1"), [Clustering("label", ("video",))], KMeansConfig(5, pca_dim=8), seed=7,
                              previous=str(tmp_path / "r0"), truth=classes, val_fraction=0.3, item_bytes=1)  # a task per file: counts summed
    assert len(parquet_files(str(tmp_path / "r1"))) == 3
    a, b = _labels(str(tmp_path / "r0"))["label"].to_numpy(), _labels(str(tmp_path / "r1"))["label"].to_numpy()
    y = np.array([classes[v] for v in vid])
    expected = cluster_stats(b, 5, previous=a, truth=y)
    for key in ("cluster_sizes", "empty_clusters", "nmi_previous", "nmi_truth", "purity"):
        assert second["label"][key] == pytest.approx(expected[key]), key
    assert expected["nmi_truth"] == pytest.approx(normalized_mutual_info_score(y, b))
    assert sum(second["label"]["train_sizes"]) < second["rows"] and first["label"]["iterations"] > 0
    assert set(os.listdir(tmp_path / "r1")) >= {"centroids.npy", "pca.npz", "stats.json"}


def test_sample_and_k_edge_cases(ray_session, blobs, tmp_path):
    folder, x, _, _ = blobs
    few = tmp_path / "few"
    few.mkdir()
    pq.write_table(pa.table({"video_id": [f"v{i}" for i in range(12)], "clip_index": pa.array([0] * 12, pa.int32()), "video": vectors(x[:12])}),
                   few / "part.parquet")
    stats = cluster_features(str(few), str(tmp_path / "k12"), [Clustering("label", ("video",))], KMeansConfig(12))  # k = N: one row each
    assert stats["sample"] == 12 and stats["label"]["cluster_sizes"] == [1] * 12
    stats = cluster_features(str(few), str(tmp_path / "k11"), [Clustering("label", ("video",))], KMeansConfig(11))  # k close to N
    assert sum(stats["label"]["cluster_sizes"]) == 12 and stats["label"]["empty_clusters"] == 0
    with pytest.raises(ValueError, match="k: 13 clusters need at least 13 rows; .* has 12"):
        cluster_features(str(few), str(tmp_path / "k13"), [Clustering("label", ("video",))], KMeansConfig(13))
    with pytest.raises(ValueError, match="sample: 5 rows cannot train 8 centroids"):
        cluster_features(folder, str(tmp_path / "s5"), [Clustering("label", ("video",))], KMeansConfig(8, sample=5))
    with pytest.raises(ValueError, match="pca_dim: 13 is more than the .* feature dimensions or the 12 sampled rows"):  # the task's PCA would fail
        cluster_features(str(few), str(tmp_path / "p13"), [Clustering("label", ("video",))], KMeansConfig(4, pca_dim=13))
    with pytest.raises(ValueError, match="no column audio"):
        cluster_features(folder, str(tmp_path / "a"), [Clustering("label", ("audio",))], KMeansConfig(8))
    # files that are not features are named before any task runs: one without the column, one
    # with variable-length lists
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(pq.read_table(few / "part.parquet"), mixed / "a.parquet")
    pq.write_table(pa.table({"video_id": ["x"], "clip_index": pa.array([0], pa.int32())}), mixed / "b.parquet")
    with pytest.raises(ValueError, match=r"b\.parquet: no column video \(it has video_id, clip_index\)"):
        cluster_features(str(mixed), str(tmp_path / "m"), [Clustering("label", ("video",))], KMeansConfig(4))
    (mixed / "b.parquet").unlink()
    pq.write_table(pa.table({"video_id": ["x"], "clip_index": pa.array([0], pa.int32()), "video": [[0.5, 1.0]]}), mixed / "c.parquet")
    with pytest.raises(ValueError, match=r"c\.parquet: column video is list<element: double>, not a fixed_size_list"):
        cluster_features(str(mixed), str(tmp_path / "m"), [Clustering("label", ("video",))], KMeansConfig(4))
    with pytest.raises(FileExistsError, match="not empty"):
        cluster_features(str(few), str(tmp_path / "k12"), [Clustering("label", ("video",))], KMeansConfig(4))


def test_features_and_cluster_commands(ray_session, small_prepared, tmp_path, capsys):
    """`raysup features` on a run's checkpoint writes one fixed-size float32 vector column per
    encoder, equal to the model's embeddings; `raysup cluster` labels every clip; bad input is one
    line and exit 2."""
    from raysup.config import to_dict
    from raysup.data.ingest import ClipCollate, PreparedData
    from raysup.methods import make_config, method_module

    data = PreparedData(small_prepared[0])
    cfg = make_config("xdc", "tiny", {"method.k": 4})
    model = method_module("xdc").build(cfg, data.specs)
    ckpt = tmp_path / "run" / "round_0" / "checkpoint_000000"
    ckpt.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "config": to_dict(cfg)}, ckpt / "checkpoint.pt")
    feats = str(tmp_path / "features")
    assert main(["features", str(tmp_path / "run"), "--data", small_prepared[0], "--out", feats, "--encoders", "video", "audio"]) == 0
    table = pq.read_table(parquet_files(feats)).sort_by([("video_id", "ascending"), ("clip_index", "ascending")])
    clips = data.manifest["counts"]["clips"]
    assert table.num_rows == clips and table.column_names == ["video_id", "clip_index", "video", "audio"]
    assert table.schema.field("video").type == pa.list_(pa.float32(), model.video.out_dim)
    first = data.dataset().limit(4).take_batch(4, batch_format="pyarrow")  # four clips (decoded, centre crops), embedded here
    with torch.no_grad():
        expected = model.eval().embed(ClipCollate(data.specs)(first))["video"].numpy()
    keys = list(zip(table["video_id"].to_pylist(), table["clip_index"].to_pylist(), strict=True))
    rows = [keys.index(k) for k in zip(first["video_id"].to_pylist(), first["clip_index"].to_pylist(), strict=True)]
    assert np.allclose(to_numpy(table.take(rows)["video"]), expected, atol=1e-4)
    shown = [line for line in capsys.readouterr().err.splitlines() if line.startswith("features")]  # stderr is not a terminal here
    assert 1 <= len(shown) <= 10 and shown[-1].startswith(f"features: {clips}/{clips} clips (100%)"), shown

    labels = str(tmp_path / "labels")
    assert main(["cluster", feats, "--column", "video", "--column", "audio", "--k", "4", "--out", labels, "--sample", "1000"]) == 0
    out, err = capsys.readouterr()
    assert f"{clips} rows in 4 clusters (centroids trained on {clips})" in out
    shown = [line for line in err.splitlines() if line.startswith("cluster")]  # its sample and assignment passes
    assert 2 <= len(shown) <= 20 and "parts (100%)" in shown[-1] and shown[-1].startswith("cluster (pass 2): "), shown
    assert re.search(r"stats\.json: .* \([\d.]+ s: sample [\d.]+, train [\d.]+, assign [\d.]+\)", out), out
    lab = pq.read_table(parquet_files(labels))
    assert lab.num_rows == clips and set(lab["label"].to_pylist()) <= set(range(4))
    assert np.load(os.path.join(labels, "centroids.npy")).shape == (4, model.video.out_dim + model.audio.out_dim)
    assert json.load(open(os.path.join(labels, "stats.json")))["label"]["columns"] == ["video", "audio"]
    for argv, message in [
        (["cluster", feats, "--column", "video", "--k", str(clips + 1), "--out", str(tmp_path / "x")], f"k: {clips + 1} clusters need at least"),
        (["cluster", feats, "--column", "video", "--k", "4", "--out", labels], "not empty"),
        (["features", str(tmp_path / "run"), "--data", small_prepared[0], "--out", feats], "not empty"),
        (["features", str(tmp_path / "run"), "--data", small_prepared[0], "--out", str(tmp_path / "f2"), "--encoders", "video", "rgb"],
         "encoders: the model has no encoder rgb (it has audio, video)"),
    ]:
        assert main(argv) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("raysup ")]  # not Ray Data's progress
        assert len(err) == 1 and message in err[0], err


def test_feature_actors_grow_to_the_gpus_the_run_asks_for(ray_session):
    """XDC's features run on an actor pool from one actor up to the run's workers, each with the
    run's gpus_per_worker (requested, so an autoscaler adds GPU nodes that are not up yet), in
    large batches on GPUs; a CPU run's pool has CPU actors. Read from the plan: nothing runs."""
    import ray

    from raysup.features import CPU_BATCH, GPU_BATCH, embed
    from raysup.methods import make_config, method_module

    for over, gpus, batch in [({"workers": 4, "gpus_per_worker": 1.0}, 1.0, GPU_BATCH), ({"workers": 2}, 0.0, CPU_BATCH)]:
        cfg = make_config("xdc", "tiny", over)
        op = embed(ray.data.range(8), cfg, method_module("xdc").build, {}, None)._logical_plan.dag
        assert (op.compute.min_size, op.compute.max_size) == (1, cfg.workers)
        assert (op.ray_remote_args["num_gpus"], op.batch_size) == (gpus, batch)


def test_features_are_written_in_files_of_a_target_size(ray_session, tmp_path):
    """Ten blocks of features → one file (Ray Data writes one file per block unless told: at 65M
    videos, millions of objects per round)."""
    import ray

    from raysup.features import write_files

    write_files(ray.data.range(1000, override_num_blocks=10), str(tmp_path / "f"))
    assert len(parquet_files(str(tmp_path / "f"))) == 1 and pq.read_table(parquet_files(str(tmp_path / "f"))).num_rows == 1000


def test_training_rows_join_labels_by_key(tmp_path):
    """XDC's training rows: each clip gets the labels of its own key from its shard's labels (video
    head ← audio clusters for xdc), held-out videos go to validation only, and a training clip is
    drawn rates-many times; labels with the index of older raysup (shards.json) join the same."""
    from raysup.cluster_features import Labels, round_rows, write_index
    from raysup.clustering import HEADS
    from raysup.data.tables import held_out

    vid = np.array([f"v{i // 2}" for i in range(20)])
    clip = pa.array(np.arange(20) % 2, pa.int32())
    shard = np.where(np.arange(20) < 10, "a.parquet", "b.parquet")  # videos 0-4 in shard a, 5-9 in b
    with pq.ParquetWriter(tmp_path / "part.parquet", pa.schema({"video_id": pa.string(), "clip_index": pa.int32(), "video": pa.int32(),
                                                                "audio": pa.int32()})) as w:
        for rows in (slice(0, 10), slice(10, 20)):  # a row group per shard
            w.write_table(pa.table({"video_id": vid[rows], "clip_index": clip[rows], "video": pa.array(np.arange(20)[rows] % 3, pa.int32()),
                                    "audio": pa.array(np.arange(20)[rows] % 5, pa.int32())}))
    perm = np.random.default_rng(0).permutation(20)
    batch = pa.table({"video_id": vid[perm], "clip_index": clip.take(pa.array(perm)), "frames": pa.array([b"x"] * 20, pa.binary(1)),
                      "path": [f"/prepared/data/{s}" for s in shard[perm]]})
    write_index(str(tmp_path), pa.table({"shard": ["a.parquet", "b.parquet"], "file": ["part.parquet"] * 2, "row_group": pa.array([0, 1], pa.int32())}))
    labels = Labels.open(str(tmp_path))
    kw = {"labels": labels, "heads": HEADS["xdc"], "val_fraction": 0.5}
    val = round_rows(batch, **kw, rates=None)
    row = {(v, c): i for i, (v, c) in enumerate(zip(vid, np.arange(20) % 2, strict=True))}
    for v, c, pv, pa_ in zip(*(val[n].to_pylist() for n in ("video_id", "clip_index", "pl_video", "pl_audio")), strict=True):
        assert (pv, pa_) == (row[v, c] % 5, row[v, c] % 3)  # video learns audio's clusters and vice versa
    held = held_out(vid, 0.5)
    assert 0 < held.sum() < 20 and val.num_rows == held.sum() and set(val["video_id"].to_pylist()) == set(vid[held])
    train = round_rows(batch, **kw, rates={"video": np.full(5, 1.0), "audio": np.full(3, 1.0)})  # 1 + 1 draws per clip
    assert train.num_rows == 2 * (~held).sum() and "frames" in train.column_names and not set(train["video_id"].to_pylist()) & set(vid[held])
    assert "path" not in train.column_names
    # labels of a run in progress, written before the index had buckets (shards.json, whole): read as before
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    os.link(tmp_path / "part.parquet", legacy / "part.parquet")
    (legacy / "shards.json").write_text(json.dumps({"a.parquet": [["part.parquet", 0]], "b.parquet": [["part.parquet", 1]]}))
    assert round_rows(batch, **kw | {"labels": Labels.open(str(legacy))}, rates=None).equals(val)


def _rchar() -> int:
    """Bytes this process has read through read() calls so far (Linux /proc/self/io)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def _shard_labels_of(folder, shards: int, seed: int = 0, clips: int = 100, per_file: int = 40, shards_per_bucket: int = 256):
    """Labels written by assign_fragments and write_index (the real writers) for ``shards``
    prepared shards of ``clips`` clips, whose videos (4 clips each) are drawn at random from all
    (prepare shuffles videos over shards), from features files of ``per_file`` shards each, the index in
    buckets of ``shards_per_bucket`` shards; returns the Labels and the clips' keys."""
    from raysup.cluster_features import INDEX, INDEX_SCHEMA, KEY, Labels, Model, assign_fragments, fragments, write_index

    rng = np.random.default_rng(seed)
    n = clips * shards
    vid = np.array([f"v{i:07d}" for i in rng.permutation(n // 4)]).repeat(4)
    clip = np.tile(np.arange(4, dtype=np.int32), n // 4)
    path = np.array([f"/prepared/data/part-{i // clips:05d}.parquet" for i in range(n)])
    feats, out = folder / "features", folder / "labels"
    feats.mkdir()
    out.mkdir()
    for f, rows in enumerate(np.array_split(np.arange(n), max(1, shards // per_file))):
        pq.write_table(pa.table({"video_id": vid[rows], "clip_index": clip[rows], "path": path[rows], "video": vectors(rng.normal(size=(len(rows), 4)))}),
                       feats / f"part-{f}.parquet")
    items, _ = fragments(str(feats), ["video"], item_bytes=1)  # a labels file per features file
    model = Model(rng.normal(size=(4, 4)).astype(np.float32), None, 0.0, 0)
    written = assign_fragments(pa.Table.from_pylist(items), uri=str(feats), columns=[*KEY, "path", "video"], out=str(out), token="t",
                               clusterings=[Clustering("label", ("video",), 4)], models={"label": model}, ks={"label": 4}, val_fraction=0.0,
                               previous=None, truth=None, classes=0)
    write_index(str(out), pa.table(json.loads(written[INDEX][0]), schema=INDEX_SCHEMA), shards_per_bucket)
    return Labels.open(str(out)), pa.table({"video_id": vid, "clip_index": clip, "path": path})


def test_label_lookup_reads_the_same_whatever_the_labels_size(tmp_path):
    """The pseudo-label join of a batch (XDC's training and validation rows, the previous-round
    comparison) reads its shard's bucket of the index and its shard's labels only, and what a
    read task is sent to join (its pickled Labels) is the same size, when the shards grow 16x
    (joined by video id, every row group's id range spanned all ids: each lookup read nearly all
    labels; then the whole shard index went to every read task, ~100 B a shard)."""
    import pickle

    from raysup.cluster_features import LABELS, _footer, lookup, shard_labels, shard_names

    sets = []
    for shards in (20, 320):
        (tmp_path / f"{shards:04d}").mkdir()  # folder names of one length: the pickled uris too
        labels, keys = _shard_labels_of(tmp_path / f"{shards:04d}", shards, clips=24, per_file=10, shards_per_bucket=8)
        sets.append((labels, keys.slice(24 * (shards // 2), 24)))  # a batch: one shard's clips
    cost = []
    for labels, batch in [sets[0], *sets]:  # the first, untimed: the process' first lookup also imports
        LABELS.clear()
        _footer.cache_clear()
        before = _rchar()
        joined = lookup(batch.select(["video_id", "clip_index"]), shard_names(batch["path"]), labels, ["label"])
        cost.append((_rchar() - before, sum(shard_labels(labels.uri, labels.places(s), ("label",)).num_rows
                                            for s in set(shard_names(batch["path"]).to_pylist())), len(pickle.dumps(labels))))
        assert joined.num_rows == 24
    cost = cost[1:]
    (bytes_small, rows_small, sent_small), (bytes_large, rows_large, sent_large) = cost
    print(f"per lookup: {rows_small} rows, {bytes_small} B at 480 labels (20 shards); {rows_large} rows, {bytes_large} B at 7,680 (320); "
          f"sent to each task: {sent_small} B, {sent_large} B")
    assert rows_small == rows_large == 24
    assert bytes_large < 1.5 * bytes_small
    assert sent_small == sent_large < 400


def test_label_cache_stays_within_its_bytes(tmp_path, monkeypatch):
    """A process joining many shards (an XDC read task, the previous-round comparison) keeps no
    more shard labels than :data:`raysup.cluster_features.LABELS` holds: here 3 shards' worth
    while 40 shards are joined; a shard dropped is read again, with the same labels."""
    from raysup.cluster_features import LABELS, lookup, shard_labels, shard_names

    labels, keys = _shard_labels_of(tmp_path, 40)
    one = shard_labels(labels.uri, labels.places("part-00000.parquet"), ("label",))
    LABELS.clear()
    monkeypatch.setattr(LABELS, "limit", 3 * one.nbytes)
    first = None
    for s in range(40):
        batch = keys.slice(100 * s, 100)
        joined = lookup(batch.select(["video_id", "clip_index"]), shard_names(batch["path"]), labels, ["label"])
        first = first or joined
        assert joined.num_rows == 100 and LABELS.nbytes <= LABELS.limit and len(LABELS.tables) <= 3
    assert lookup(keys.slice(0, 100).select(["video_id", "clip_index"]), shard_names(keys.slice(0, 100)["path"]), labels, ["label"]).equals(first)
    LABELS.clear()
