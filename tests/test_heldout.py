"""Held-out videos in their own shards, and per-video lists that do not grow with the set.

Prepare writes videos in the held-out hash order (``tables.hash_order``), so each shard spans a
narrow range of hash buckets (manifest ``shard_ranges``); a validation stream reads only the
shards that hold held-out videos, training only the others (plus a boundary shard, filtered per
row). Methods take what they need from counts (manifest ``counts``, ``hash_counts``) or from
the index rows of the ids they name, never from a list of every prepared video."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pyarrow as pa
import pytest

from raysup.data.ingest import PreparedData
from raysup.data.tables import HASH_BUCKETS, hash_bucket, hash_counts, held_out
from raysup.methods import make_config


def _shards_of(data: PreparedData) -> dict[str, set[int]]:
    """Each shard's videos' hash buckets, from the index."""
    ok = data.index.filter(pa.compute.equal(data.index["status"], "ok"))
    out: dict[str, set[int]] = {}
    for v, s in zip(ok["video_id"].to_pylist(), ok["shard"].to_pylist()):
        out.setdefault(s, set()).add(hash_bucket(v))
    return out


def _files(ds, data: PreparedData) -> set[str]:
    """The shards (relative to the set) a dataset's plan reads: no execution."""
    return {os.path.relpath(f, data.uri) for f in ds.input_files()}


def test_a_split_reads_only_the_shards_of_its_videos(small_prepared):
    """Each shard spans a contiguous range of hash buckets; with a fraction that holds out the
    first shard's videos whole, validation reads no other full shard and training never reads
    it; the rows are exactly each split's clips (filtered per row in a boundary shard)."""
    data = PreparedData(small_prepared[0])
    buckets = _shards_of(data)
    ranges = dict(zip(data.shards(), map(tuple, data.manifest["shard_ranges"])))
    assert data.manifest["version"] == 5 and ranges == {s: (min(b), max(b)) for s, b in buckets.items()}
    spans = sorted(ranges.values())
    assert len(spans) >= 3 and all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))  # contiguous, not interleaved
    fraction = (spans[0][1] + 1) / HASH_BUCKETS  # the first shard wholly held out, the second just past it
    first = next(s for s, r in ranges.items() if r == spans[0])
    val = data.dataset(["video_id"], crop=None, held=True, fraction=fraction)
    train = data.dataset(["video_id"], crop=None, shuffle=0, held=False, fraction=fraction)
    assert _files(val, data) == {s for s, (lo, _) in ranges.items() if lo < fraction * HASH_BUCKETS} == {first}
    assert first not in _files(train, data) and len(_files(train, data)) == len(ranges) - 1
    ids = np.array(data.video_ids)
    held = set(ids[held_out(ids, fraction)])
    rows = pa.concat_tables(val.iter_batches(batch_size=None, batch_format="pyarrow"))["video_id"].to_pylist()
    assert set(rows) == held and len(rows) == data.split_counts(fraction, held=True)["clips"] == sum(data.video_clips[v] for v in held)
    assert data.split_counts(fraction, held=False)["clips"] == data.manifest["counts"]["clips"] - len(rows)


def test_methods_validation_streams_read_only_held_out_shards(small_prepared):
    """cross-pixel similarity's and XDC's validation streams read the held-out shards only, their
    training streams none that is wholly held out."""
    from raysup.methods import cpfs, xdc

    data = PreparedData(small_prepared[0])
    spans = sorted(map(tuple, data.manifest["shard_ranges"]))
    fraction = (spans[0][1] + 1) / HASH_BUCKETS
    held_only = {s for s, (lo, hi) in zip(data.shards(), data.manifest["shard_ranges"]) if hi < fraction * HASH_BUCKETS}
    cfg = make_config("cpfs", "tiny", {"method.val_fraction": fraction})
    stage = cpfs.datasets(cfg, data, None)
    assert _files(stage.val, data) == held_only and not held_only & _files(stage.train, data)
    assert stage.rows_per_epoch == data.split_counts(fraction, held=False)["clips"]
    val, train = (xdc.audio_clips(data, held=h, fraction=fraction) for h in (True, False))
    assert _files(val, data) == held_only and not held_only & _files(train, data)


def test_older_sets_without_shard_ranges_read_every_shard(small_prepared, tmp_path):
    """A set prepared before shard ranges (version 4): every shard is read by both splits, rows
    still filtered; the per-bucket counts come from its index."""
    data = PreparedData(small_prepared[0])
    old = {k: v for k, v in data.manifest.items() if k not in ("shard_ranges", "hash_counts")} | {"version": 4}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    (tmp_path / "data").symlink_to(os.path.join(data.uri, "data"))
    (tmp_path / "index.parquet").symlink_to(os.path.join(data.uri, "index.parquet"))
    legacy = PreparedData(str(tmp_path))
    assert legacy.shards(held=True, fraction=0.1) == legacy.shards(held=False, fraction=0.1) == data.shards()
    assert {k: v.tolist() for k, v in legacy.hash_counts.items()} == data.manifest["hash_counts"] == hash_counts(data.index)


def test_methods_open_a_set_without_its_per_video_index(small_prepared, tmp_path):
    """The methods' checks and streams take counts from the manifest: a set whose index.parquet
    is not there still opens (the old path built dicts over every prepared video from it)."""
    from raysup.methods import cpfs, cross_and_learn, gdt, xdc

    data = PreparedData(small_prepared[0])
    bare = _without_index(data, tmp_path)
    for method, more in ((cpfs, {}), (gdt, {}), (xdc, {"method.k": 2, "method.pca_dim": 0}), (cross_and_learn, {})):
        cfg = make_config(method.__name__.rsplit(".", 1)[1], "tiny", {"batch_size": 2, **more})
        method.check(cfg, bare)
    assert cpfs.datasets(make_config("cpfs", "tiny"), bare, None).rows_per_epoch == data.split_counts(0.1, held=False)["clips"]
    cal = make_config("cross_and_learn", "tiny")
    assert cross_and_learn.datasets(cal, bare, None).rows_per_epoch == len(data.video_ids) * cal.method.pairs_per_video
    with pytest.raises(FileNotFoundError):
        bare.index  # noqa: B018 - the index is really absent


def _without_index(data: PreparedData, folder) -> PreparedData:
    """``data`` opened from ``folder``: its manifest and shards, no index.parquet."""
    (folder / "manifest.json").write_text(json.dumps(data.manifest))
    (folder / "data").symlink_to(os.path.join(data.uri, "data"))
    return PreparedData(str(folder))


def test_xdc_first_training_batch_reads_no_per_video_index(small_prepared, tmp_path):
    """XDC's round streams (clips with audio, the training split's shards, the pseudo-label join
    by shard) build and yield their first batch from a set whose index.parquet is not there:
    nothing before the first batch reads a per-video table (it was read for the videos without
    audio, ~0.1-0.3 s at 100k videos)."""
    import pyarrow.parquet as pq

    from raysup.cluster_features import Labels, write_index
    from raysup.clustering import HEADS
    from raysup.methods import xdc

    data = PreparedData(small_prepared[0])
    (tmp_path / "set").mkdir()
    bare = _without_index(data, tmp_path / "set")
    ok = data.index.filter(pa.compute.equal(data.index["status"], "ok")).sort_by("shard")
    labels, shards, groups = tmp_path / "labels", [], []
    labels.mkdir()
    with pq.ParquetWriter(labels / "part.parquet", pa.schema({"video_id": pa.string(), "clip_index": pa.int32(), "video": pa.int32(),
                                                              "audio": pa.int32()})) as w:
        for shard in sorted(set(ok["shard"].to_pylist())):  # every clip labelled 0, a row group per shard, as cluster_features writes them
            videos = ok.filter(pa.compute.equal(ok["shard"], shard))
            ids = [v for v, n in zip(videos["video_id"].to_pylist(), videos["clips"].to_pylist()) for _ in range(n)]
            clips = [i for n in videos["clips"].to_pylist() for i in range(n)]
            w.write_table(pa.table({"video_id": ids, "clip_index": pa.array(clips, pa.int32()), "video": pa.array([0] * len(ids), pa.int32()),
                                    "audio": pa.array([0] * len(ids), pa.int32())}))
            shards.append(os.path.basename(shard))
            groups.append(len(groups))
    write_index(str(labels), pa.table({"shard": shards, "file": ["part.parquet"] * len(shards), "row_group": pa.array(groups, pa.int32())}))
    cfg = make_config("xdc", "tiny")
    train, _ = xdc.labelled_streams(cfg, bare, str(labels), HEADS["xdc"], {"video": np.ones(1), "audio": np.ones(1)}, val=True)
    first = next(iter(train.iter_batches(batch_size=4, batch_format="pyarrow")))
    assert first.num_rows == 4 and {"pl_video", "pl_audio", "frames", "audio"} <= set(first.column_names)
    assert Labels.open(str(labels)).buckets == 1
    with pytest.raises(FileNotFoundError):
        bare.index  # noqa: B018 - the index is really absent


def test_xdc_audio_filter_does_not_list_videos(small_prepared):
    """XDC's videos without audio are left out by their null audio cells: the filter expression
    is the same for any number of such videos (it listed every one of their ids)."""
    from raysup.methods import xdc

    data = PreparedData(small_prepared[0])
    sizes = []
    for n in (10, 160):
        fake = PreparedData(data.uri)
        fake.__dict__["manifest"] = data.manifest | {"counts": data.manifest["counts"] | {"no_audio": n}}
        fake.__dict__["no_audio"] = [f"silent/{i}" for i in range(n)]  # what the old filter listed
        sizes.append(len(pickle.dumps(xdc.audio_clips(fake)._logical_plan.dag.predicate_expr)))
    assert sizes[0] == sizes[1]


def test_each_read_unit_is_told_only_its_own_left_out_videos(small_prepared):
    """Cross and Learn's videos of other splits: each read task's arguments name the left-out
    videos of its own units only (every task got the whole list), and none is drawn."""
    data = PreparedData(small_prepared[0])
    left = data.video_ids[::3]
    ds = data.video_draws(["video_id", "clip_index", "motion"], seed=0, exclude=left, draws=1)
    tasks = ds._logical_plan.dag.datasource.get_read_tasks(8)
    where = dict(zip(data.index["video_id"].to_pylist(), data.index["shard"].to_pylist()))
    told = []
    for t in tasks:
        kw = t.read_fn.keywords
        for unit, own in zip(t.metadata.input_files, kw["unit_kwargs"]):
            assert all(where[v] == os.path.relpath(unit, data.uri) for v in own["exclude"])
            told += own["exclude"]
        assert "exclude" not in kw["fn_kwargs"]
    assert sorted(told) == sorted(left)
    t = tasks[0]  # its units read and drawn here, in-process: their videos but the left-out ones
    drawn = pa.concat_tables(list(t.read_fn()))["video_id"].to_pylist()
    own = {v for v, s in where.items() if os.path.join(data.uri, s) in t.metadata.input_files}
    assert sorted(drawn) == sorted(own - set(left)) and own & set(left)


def test_index_of_reads_only_the_named_rows(small_prepared):
    data = PreparedData(small_prepared[0])
    some = data.video_ids[:3] + ["not/prepared"]
    rows = data.index_of(some)
    assert rows["video_id"].to_pylist() == sorted(some[:3]) and set(rows["status"].to_pylist()) == {"ok"}
