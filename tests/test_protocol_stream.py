"""Probes without gathering the clips in one process (issue 27 item 1): per-video feature means
summed inside Ray Data (the driver receives a row per video, whatever the clips per video), and
the frozen protocols' linear layers trained from the features on disk, a few batches at a time."""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysup.data.schema import vectors
from raysup.features import video_means, video_sums
from raysup.methods import METHODS
from raysup.protocols import SHUFFLE_BYTES, FeatureStream, frozen_classifiers, frozen_scores, video_top1


def feature_shards(videos: int, clips: int, dim: int, per_shard: int, seed: int = 0) -> list[pa.Table]:
    """Feature rows as a prepared set holds them: each video's clips in one shard."""
    rng = np.random.default_rng(seed)
    ids = [f"v{i:03d}" for i in range(videos)]
    x = rng.normal(size=(videos * clips, dim)).astype(np.float32)
    table = pa.table({"video_id": pa.array(np.repeat(ids, clips)), "clip_index": pa.array(np.tile(np.arange(clips, dtype=np.int32), videos)),
                      "video": vectors(x)})  # fmt: skip
    return [table.slice(s * clips, per_shard * clips) for s in range(0, videos, per_shard)]


def test_video_means_hand_the_driver_one_row_per_video_whatever_the_clips(ray_session):
    import ray

    for clips in (4, 32):  # 8× the clips per video
        shards = feature_shards(videos=12, clips=clips, dim=8, per_shard=3)
        ds = ray.data.from_arrow(shards)
        received = sum(b.num_rows for b in video_sums(ds).iter_batches(batch_format="pyarrow", batch_size=None))
        assert received == 12  # the arrays this process receives: [videos, dim], not [clips, dim]
        ids, means = video_means(ds)
        whole = pa.concat_tables(shards)
        x = whole.column("video").combine_chunks().flatten().to_numpy().reshape(-1, 8)
        assert list(ids) == sorted(set(whole.column("video_id").to_pylist()))
        np.testing.assert_allclose(means["video"], x.reshape(12, clips, 8).mean(1), rtol=1e-6, atol=1e-6)


def test_a_layer_probe_trained_from_the_features_on_disk_scores_as_in_memory(tmp_path):
    """cpfs' per-layer probe (Zhang et al.'s SGD softmax layer on standardised features,
    papers/cpfs.md L236) from Parquet files read a few batches at a time, against the same
    probe trained on the arrays in memory: the same test accuracy per layer."""
    rng = np.random.default_rng(0)
    videos, clips, classes = 60, 4, 3
    ids = [f"v{i:03d}" for i in range(videos)]
    y = np.arange(videos) % classes
    centres = {name: rng.normal(size=(classes, 16)) * 0.45 for name in ("conv1", "conv2")}
    row_y = np.repeat(y, clips)
    feats = {name: (c[row_y] + rng.normal(size=(len(row_y), 16)) + 50).astype(np.float32) for name, c in centres.items()}  # far from the origin
    train = np.repeat(np.arange(videos) < 40, clips)
    table = pa.table({"video_id": pa.array(np.repeat(ids, clips)), "clip_index": pa.array(np.tile(np.arange(clips, dtype=np.int32), videos)),
                      **{n: vectors(x) for n, x in feats.items()}}).filter(pa.array(train))  # fmt: skip
    for i in range(0, table.num_rows, 16):  # 10 files, as write_features writes blocks
        pq.write_table(table.slice(i, 16), tmp_path / f"part-{i:04d}.parquet")
    probe = METHODS["cpfs"].PAPER_PROTOCOLS[0]
    probe = dataclasses.replace(probe, linear=dataclasses.replace(probe.linear, batch_size=16, epochs=5))  # 160 rows: 10 steps an epoch
    tested = np.arange(videos) >= 40
    test_video = np.repeat(np.arange(videos), clips)[~train]

    def top1(scores):
        total = np.zeros((videos, classes))
        np.add.at(total, test_video, scores)
        return video_top1(total, y, tested)

    memory = {name: top1(frozen_scores(probe, "linear", x[train], row_y[train], x[~train], classes, seed=0)) for name, x in feats.items()}
    assert min(memory.values()) >= 0.85, memory
    streamed = {}
    for shuffle_bytes in (SHUFFLE_BYTES, 1):  # every row in one shuffle; 2 batches of rows at a time
        streamed[shuffle_bytes] = frozen_classifiers(probe, "linear", FeatureStream(str(tmp_path), ids, y, shuffle_bytes=shuffle_bytes), classes, seed=0)
        for name, x in feats.items():
            assert top1(streamed[shuffle_bytes][name](x[~train])) >= memory[name] - 0.1, (shuffle_bytes, name, memory)  # 2 of 20 test videos
    # the same rows cut into other files, in another order (as another run of Ray Data may write
    # them): the same layers, so a rerun scores the same
    recut = tmp_path / "recut"
    recut.mkdir()
    for i, part in enumerate((table.slice(100), table.slice(0, 100))):
        pq.write_table(part, recut / f"part-{i}.parquet")
    again = frozen_classifiers(probe, "linear", FeatureStream(str(recut), ids, y), classes, seed=0)
    for name, x in feats.items():
        np.testing.assert_array_equal(again[name](x), streamed[SHUFFLE_BYTES][name](x))
