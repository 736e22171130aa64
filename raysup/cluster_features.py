"""k-means over a features dataset of any size (XDC §3; DeepCluster's faiss k-means), with no
process holding more than the sample plus a few batches:

1. **sample**: a streaming pass keeps the rows whose hash of (seed, ``video_id``, ``clip_index``)
   falls below a threshold, and of those the ``sample`` with the smallest hashes (a uniform sample
   without replacement, the same for the same seed whatever the files);
2. **train**: one Ray task (GPU faiss when it has a GPU) fits the optional PCA-whitening and
   k-means on the sample (:func:`raysup.clustering.kmeans`);
3. **assign**: a second pass gives every row its nearest centroid (faiss ``IndexFlatL2``) and its
   squared distance, writes them as Parquet ``video_id, clip_index, <name>, <name>_distance``
   (one file per task), and returns the counts the statistics need (sizes,
   objective, and the contingency tables with the previous round's labels and with ground-truth
   classes), summed in the driver as they stream in.

Both passes are Ray Data ``map_batches`` over the features' Parquet row groups (:func:`fragments`),
each read in bounded batches by the task that processes it: across the cluster, streaming, and
without Ray Data's Parquet reader, whose fixed cost per pass (~2 s on 2 cores) was most of the
time at a million rows. The functions that Ray Data runs in its tasks import no torch (see
raysup/data/tables.py).

Features with a ``path`` column (each clip's prepared shard, as XDC writes them) give labels
joined by shard (:func:`lookup`): each task writes its labels sorted by shard, one row group per
shard, and the driver writes the index shard → (file, row group) in buckets of about
:data:`SHARDS_PER_BUCKET` shards by a hash of the shard's name, a small Parquet file each
(:data:`INDEX_DIR`, :func:`write_index`). A batch of clips (XDC's training and validation rows,
the next round's comparison with these labels) then reads its shards' buckets and its shards'
labels only: neither its cost nor what its task is sent grows with the dataset. (Joined by video
id instead, every row group's id range spanned nearly all ids, as prepare shuffles videos over
shards: each lookup read nearly all labels; with the whole index in one JSON, every read task
got all of it, ~50 MB at a million shards.)
"""
from __future__ import annotations

import json
import math
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysup.clustering import KMeansConfig, import_faiss, joint, kmeans, project, stats_from_counts
from raysup.data.schema import OUTPUT_BLOCK_BYTES, to_numpy
from raysup.data.storage import ensure_empty, exists, read_json, resolve, write_json
from raysup.data.tables import held_out, join_batch, repeat_rows
from raysup.progress import dataset_progress
from raysup.video_sums import added, sum_per_video, vector_columns

KEY = ["video_id", "clip_index"]
# faiss' rule is up to 256 (its default max_points_per_centroid); twice that found k-means optima
# within 0.5% of k-means on all points, 256 within 1.3% (experiments/bench/cluster_scale.py)
POINTS_PER_CENTROID = 512
STATS = "stats.json"
INDEX_DIR = "_shards"  # labels of features with a path: their index, bucket files shard → (file, row group) (write_index)
INDEX_FILE = f"{INDEX_DIR}/index.json"  # {"buckets": B, "shards": S}, written after the buckets
LEGACY_INDEX = "shards.json"  # the index of labels written before it had buckets (2026-12-06), whole: shard → [[file, row group], ...]
# a bucket holds ~256 shards' rows (a ~3.5 kB file): what a lookup reads of the index, whatever the shards
SHARDS_PER_BUCKET = 256
INDEX = "index"  # the column of assign_fragments' output that carries its part of the index
INDEX_SCHEMA = pa.schema({"shard": pa.string(), "file": pa.string(), "row_group": pa.int32()})
SHARD = "shard"  # the column of assign_batch's output: each clip's prepared shard (shard_names)
BATCH = 65_536  # rows a task holds at a time: 32 MB of 128-d float32 features
ITEM_BYTES = 128 << 20  # a task's share of the features (Ray Data's own target block size)


@dataclass(frozen=True)
class Clustering:
    """One k-means: its name (the labels' column) and the feature columns it clusters (several:
    each L2-normalised, then concatenated, as CDC does)."""

    name: str
    columns: tuple[str, ...]
    k: int = 0  # its clusters; 0: the KMeansConfig's k (XDC's clusterings may differ: method.k_video, k_audio)


@dataclass(frozen=True)
class Model:
    """A trained clustering: centroids [k,d] in the space :func:`raysup.clustering.project` maps
    the features to, with the PCA-whitening fitted on the sample (or None)."""

    centroids: np.ndarray
    pca: tuple[np.ndarray, np.ndarray] | None
    sample_objective: float  # mean squared distance over the sample
    iterations: int


def matrix(table: pa.Table, c: Clustering) -> np.ndarray:
    return joint([to_numpy(table.column(name)) for name in c.columns])


def parquet_files(uri: str) -> list[str]:
    fs, root = resolve(uri)
    return sorted(f.path for f in fs.get_file_info(pafs.FileSelector(root)) if f.type == pafs.FileType.File and f.base_name.endswith(".parquet"))


def fragments(uri: str, vectors: list[str], item_bytes: int = ITEM_BYTES) -> tuple[list[dict], pa.Schema]:
    """The Parquet folder or URI as work items of consecutive non-empty row groups of about
    ``item_bytes`` each (``index``, ``parts``: row-group ranges {path, start, stop}, ``rows``,
    ``bytes``), and its schema, from the files' footers (no data read; read 32 at a time: on
    object storage each is a request). Each footer is folded into the items as it arrives: the
    driver keeps a range per file, not the footers. A file without the key columns or one of
    the ``vectors`` columns as ``fixed_size_list`` is a ValueError naming it."""
    from concurrent.futures import ThreadPoolExecutor

    fs, root = resolve(uri)
    if not exists(fs, root):
        raise FileNotFoundError(f"{uri}: no such folder")

    def footer(path: str) -> tuple[pa.Schema, list[tuple[int, int]]]:
        """The file's schema and its row groups' (rows, bytes)."""
        with fs.open_input_file(path) as f:
            meta = pq.ParquetFile(f).metadata
        return meta.schema.to_arrow_schema(), [(meta.row_group(g).num_rows, meta.row_group(g).total_byte_size) for g in range(meta.num_row_groups)]

    items, item, first = [], None, None
    paths = parquet_files(uri)
    with ThreadPoolExecutor(32) as pool:
        for path, (schema, groups) in zip(paths, pool.map(footer, paths), strict=True):
            check_features(path, schema, vectors)
            first = schema if first is None else first
            for g, (rows, size) in enumerate(groups):
                if not rows:
                    continue
                if item is None or item["bytes"] >= item_bytes:
                    item = {"index": len(items), "parts": [], "rows": 0, "bytes": 0}
                    items.append(item)
                if item["parts"] and item["parts"][-1]["path"] == path and item["parts"][-1]["stop"] == g:
                    item["parts"][-1]["stop"] = g + 1  # the range goes on
                else:
                    item["parts"].append({"path": path, "start": g, "stop": g + 1})
                item["rows"] += rows
                item["bytes"] += size
    return items, first or pa.schema([])


def check_features(path: str, schema: pa.Schema, vectors: list[str]) -> None:
    """A ValueError naming ``path`` when its ``schema`` lacks the key or a ``vectors`` column, or
    has one that is not a ``fixed_size_list``."""
    missing = [c for c in KEY + vectors if c not in schema.names]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)} (it has {', '.join(schema.names)})")
    for c in vectors:
        if not pa.types.is_fixed_size_list(schema.field(c).type):
            raise ValueError(f"{path}: column {c} is {schema.field(c).type}, not a fixed_size_list of floats (raysup features writes those)")


def read_fragment(uri: str, item: dict, columns: list[str], batch_size: int = BATCH) -> Iterator[pa.Table]:
    """An item of :func:`fragments` in tables of ``batch_size`` rows (the last one fewer), read
    one row group at a time: a task holds a batch and a row group. (pyarrow's reader over a
    range of row groups buffered the whole range: 72 MB of Arrow memory for a 73 MB features
    file read 4,096 rows at a time.)"""
    fs, _ = resolve(uri)
    held, rows = [], 0
    for part in item["parts"]:
        with fs.open_input_file(part["path"]) as f:
            file = pq.ParquetFile(f)
            for group in range(part["start"], part["stop"]):
                for b in file.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns):
                    held.append(b)
                    rows += b.num_rows
                    while rows >= batch_size:
                        table = pa.Table.from_batches(held)
                        yield table.slice(0, batch_size)
                        held, rows = table.slice(batch_size).to_batches(), rows - batch_size
    if rows:
        yield pa.Table.from_batches(held)


def over_fragments(items: list[dict], fn, **kw):
    """A Ray Dataset of ``fn(items, **kw)`` with one task per item of :func:`fragments`
    (``items``: a table of one), run wherever the cluster has a free CPU."""
    import ray

    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    return ds.map_batches(fn, fn_kwargs=kw, batch_format="pyarrow", batch_size=None)


# ---- per-video means of written features -------------------------------------------------------

def sum_fragments(items: pa.Table, *, uri: str, columns: list[str], batch_size: int) -> Iterator[pa.Table]:
    """:func:`sum_per_video` of each ``batch_size`` clips (``columns``) of the ``items``' row
    groups (:func:`fragments` of the features at ``uri``)."""
    for item in items.to_pylist():
        for batch in read_fragment(uri, item, columns, batch_size):
            yield sum_per_video(batch)


def read_video_means(uri: str, *, batch_size: int = 4096, item_bytes: int = ITEM_BYTES) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`raysup.features.video_means` of the features written in the folder or URI ``uri``
    (:func:`raysup.features.write_features`): one Ray task per ~``item_bytes`` of the files' row groups
    (:func:`fragments`), each reading ``batch_size`` clips at a time, so
    a task holds a row group and a batch, not a file (files are of at least :data:`raysup.features.FILE_BYTES`;
    Ray's Parquet reader made a whole file one task's block)."""
    items, schema = fragments(uri, [], item_bytes)
    sums = over_fragments(items, sum_fragments, uri=uri, columns=["video_id", *vector_columns(schema)], batch_size=batch_size)
    sums.context.target_max_block_size = OUTPUT_BLOCK_BYTES  # a task's sums leave it in small blocks too
    return added(sums)


# ---- 1. sample ---------------------------------------------------------------------------------

def priorities(table: pa.Table, seed: int) -> np.ndarray:
    """A uniform number in [0,1) per row, a hash of (seed, video_id, clip_index): the same for a
    row whatever batch it is in."""
    import pandas as pd

    df = pd.DataFrame({"v": table.column("video_id").to_numpy(zero_copy_only=False), "c": table.column("clip_index").to_numpy()})
    h = pd.util.hash_pandas_object(df, index=False, hash_key=f"raysup{seed % 10**10:010d}").to_numpy()
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def sample_fragments(items: pa.Table, *, uri: str, columns: list[str], seed: int, threshold: float) -> pa.Table:
    """The rows of the ``items``' row groups whose priority is below ``threshold``, with it."""
    parts = []
    for item in items.to_pylist():
        for batch in read_fragment(uri, item, KEY + columns):
            u = priorities(batch, seed)
            keep = u < threshold
            parts.append(batch.filter(pa.array(keep)).append_column("priority", pa.array(u[keep])))
    return pa.concat_tables(parts) if parts else pa.table({})


def sample_threshold(n: int, rows: int) -> float:
    """Hash threshold that lets ~n + 4√n + 16 of ``rows`` through: fewer than n with probability
    < 1e-4 (then the sample is a little smaller), so the train task receives little more than n."""
    return 1.0 if n >= rows else min(1.0, (n + 4 * math.sqrt(n) + 16) / rows)


# ---- 2. train ----------------------------------------------------------------------------------

def train(clusterings: list[Clustering], n: int, k: int, niter: int, nredo: int, seed: int, pca_dim: int, gpu: bool,
          *parts: pa.Table) -> dict[str, Model]:
    """The ``n`` rows of the smallest priority among ``parts`` → one :class:`Model` per clustering."""
    table = pa.concat_tables([p for p in parts if p.num_rows])
    table = table.take(np.argsort(table.column("priority").to_numpy(), kind="stable")[:n])
    out = {}
    for c in clusterings:
        r = kmeans(matrix(table, c), c.k or k, niter=niter, nredo=nredo, seed=seed, pca_dim=pca_dim, gpu=gpu)
        out[c.name] = Model(r.centroids, r.pca, r.objective / table.num_rows, r.iterations)
    return out


# ---- 3. assign, write the labels, count ---------------------------------------------------------

def assign_fragments(items: pa.Table, *, uri: str, columns: list[str], out: str, token: str, clusterings: list[Clustering],
                     models: dict[str, Model], **counting) -> dict[str, np.ndarray]:
    """Labels every row of the ``items``' row groups (read: ``columns``, the clusterings'
    features and the clips' ``path`` if the features have one; :func:`assign_batch`), writes
    them to ``out`` as ``part-<token>-<index>.parquet`` (a retried task rewrites its own file;
    the call's ``token`` keeps a redone round's files apart from the killed one's, which
    processes may have cached) and returns their counts (:func:`count_batch`) summed, as one
    row, with column :data:`INDEX`: the JSON of {"shard": [...], "file": [...], "row_group":
    [...]} for what it wrote (:func:`write_index`). Each batch is written sorted by shard, one
    row group per shard."""
    fs, root = resolve(out)
    total: dict[str, np.ndarray] = {}
    index: dict[str, list] = {"shard": [], "file": [], "row_group": []}
    for item in items.to_pylist():
        name = f"part-{token}-{item['index']:06d}.parquet"
        with fs.open_output_stream(f"{root}/{name}") as sink:
            writer, groups = None, 0
            for batch in read_fragment(uri, item, columns):
                labels = assign_batch(batch, clusterings=clusterings, models=models)
                stored = labels.drop_columns([SHARD]) if SHARD in labels.column_names else labels
                writer = writer or pq.ParquetWriter(sink, stored.schema)
                for shard, start, stop in shard_runs(labels):
                    writer.write_table(stored.slice(start, stop - start), row_group_size=stop - start)
                    if shard is not None:
                        for column, value in zip(index, (shard, name, groups), strict=True):
                            index[column].append(value)
                    groups += 1
                for key, v in count_batch(labels, **counting).items():
                    total[key] = total.get(key, 0) + v
            if writer:
                writer.close()
    return {key: v[None] for key, v in total.items()} | {INDEX: np.array([json.dumps(index)])}


def assign_batch(batch: pa.Table, *, clusterings: list[Clustering], models: dict[str, Model]) -> pa.Table:
    """Nearest centroid and squared distance of every row, per clustering, with the row's
    :data:`SHARD` when the batch has a ``path``; rows sorted by shard, then key."""
    faiss = import_faiss()
    out = {"video_id": batch.column("video_id"), "clip_index": batch.column("clip_index")}
    for c in clusterings:
        m = models[c.name]
        index = faiss.IndexFlatL2(m.centroids.shape[1])
        index.add(m.centroids)
        dist, label = index.search(project(matrix(batch, c), m.pca), 1)
        out[c.name] = pa.array(label[:, 0].astype(np.int32))
        out[f"{c.name}_distance"] = pa.array(dist[:, 0])
    order = [("video_id", "ascending"), ("clip_index", "ascending")]
    if "path" in batch.column_names:
        out[SHARD] = shard_names(batch.column("path"))
        order.insert(0, (SHARD, "ascending"))
    return pa.table(out).sort_by(order)


def shard_names(paths: pa.ChunkedArray) -> pa.ChunkedArray:
    """The prepared shard of each clip: its ``path`` (Ray Data's ``include_paths``) without the
    folders, so a run resumed with its data at another address finds its labels."""
    return pc.replace_substring_regex(paths, pattern="^.*/", replacement="")


def shard_runs(labels: pa.Table) -> Iterator[tuple[str | None, int, int]]:
    """(shard, start, stop) of each run of one shard in ``labels`` sorted by :data:`SHARD`; one
    run of None for labels without shards."""
    if SHARD not in labels.column_names:
        yield None, 0, labels.num_rows
        return
    values = labels.column(SHARD).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if len(values) else np.zeros(0, np.int64)
    for start, stop in zip(starts, np.r_[starts[1:], len(values)], strict=True):
        yield str(values[start]), int(start), int(stop)


@dataclass(frozen=True)
class Labels:
    """A clustering's labels folder or URI and the size of its index (:data:`INDEX_DIR`):
    what every read task that joins them is sent, the same whatever the number of shards. Labels
    written before the index had buckets carry their whole index (``legacy``, from :data:`LEGACY_INDEX`)."""

    uri: str
    buckets: int
    legacy: dict[str, tuple[tuple[str, int], ...]] | None = None

    @classmethod
    def open(cls, uri: str) -> Labels:
        """The labels :func:`cluster_features` wrote to ``uri`` from features with a ``path``
        (a ValueError otherwise: a join by shard needs its index)."""
        fs, root = resolve(uri)
        if exists(fs, f"{root}/{INDEX_FILE}"):
            return cls(uri, int(read_json(fs, f"{root}/{INDEX_FILE}")["buckets"]))
        if exists(fs, f"{root}/{LEGACY_INDEX}"):
            return cls(uri, 0, {shard: tuple(map(tuple, places)) for shard, places in read_json(fs, f"{root}/{LEGACY_INDEX}").items()})
        raise ValueError(f"{uri}: no {INDEX_FILE}; its labels are of features without a path column, which cannot be joined by shard")

    def places(self, shard: str) -> tuple[tuple[str, int], ...]:
        """The (file, row group) of ``shard``'s labels: its bucket of the index, read once while
        it stays in :data:`LABELS`."""
        if self.legacy is not None:
            return self.legacy.get(shard, ())
        b = bucket_of(shard, self.buckets)
        table = LABELS.get((self.uri, INDEX_DIR, b), lambda: read_bucket(self.uri, b))
        rows = table.filter(pc.equal(table.column("shard"), shard))
        return tuple(zip(rows.column("file").to_pylist(), rows.column("row_group").to_pylist(), strict=True))


def bucket_of(shard: str, buckets: int) -> int:
    """The index bucket of a shard: a hash of its name (CRC-32, the same in every process)."""
    return zlib.crc32(shard.encode()) % buckets


def bucket_path(root: str, bucket: int) -> str:
    return f"{root}/{INDEX_DIR}/{bucket:06d}.parquet"


def read_bucket(uri: str, bucket: int) -> pa.Table:
    fs, root = resolve(uri)
    with fs.open_input_file(bucket_path(root, bucket)) as f:
        return pq.ParquetFile(f).read()


def write_index(out: str, index: pa.Table, shards_per_bucket: int = SHARDS_PER_BUCKET) -> None:
    """The labels' ``index`` (``shard``, ``file``, ``row_group``: :func:`assign_fragments`' parts)
    written to ``out`` as B = ⌈shards / ``shards_per_bucket``⌉ Parquet files (bucket
    :func:`bucket_of`, rows sorted by shard), then :data:`INDEX_FILE`; 32 files at a time (on
    object storage each is a request)."""
    from concurrent.futures import ThreadPoolExecutor

    fs, root = resolve(out)
    shards = pc.count_distinct(index.column("shard")).as_py()
    buckets = max(1, math.ceil(shards / shards_per_bucket))
    of = np.fromiter((bucket_of(s, buckets) for s in index.column("shard").to_pylist()), np.int64, index.num_rows)
    index = index.append_column("bucket", pa.array(of)).sort_by([("bucket", "ascending"), ("shard", "ascending")])
    bounds = np.searchsorted(index.column("bucket").to_numpy(), np.arange(buckets + 1))
    index = index.drop_columns(["bucket"])
    fs.create_dir(f"{root}/{INDEX_DIR}", recursive=True)

    def write(b: int) -> None:
        with fs.open_output_stream(bucket_path(root, b)) as f:
            pq.write_table(index.slice(bounds[b], bounds[b + 1] - bounds[b]), f)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(write, range(buckets)))
    write_json(fs, f"{root}/{INDEX_FILE}", {"buckets": buckets, "shards": shards})


@lru_cache(maxsize=64)
def _footer(uri: str, file: str) -> pq.FileMetaData:
    fs, root = resolve(uri)
    with fs.open_input_file(f"{root}/{file}") as f:
        return pq.ParquetFile(f).metadata


class LabelCache:
    """Tables by key, the least recently used dropped once they hold more than ``limit`` bytes
    (the newest is always kept)."""

    def __init__(self, limit: int):
        self.limit, self.tables, self.nbytes = limit, OrderedDict(), 0

    def get(self, key, read) -> pa.Table:
        """The table of ``key``, ``read()`` if not cached."""
        if key in self.tables:
            self.tables.move_to_end(key)
            return self.tables[key]
        table = self.tables[key] = read()
        self.nbytes += table.nbytes
        while self.nbytes > self.limit and len(self.tables) > 1:
            self.nbytes -= self.tables.popitem(last=False)[1].nbytes
        return table

    def clear(self) -> None:
        self.tables.clear()
        self.nbytes = 0


# a process's shard labels: a batch needs its 1-2 shards' and a read task's consecutive batches
# mostly come from the same shards; a shard's labels are ~40 B a clip (2,000 clips at most
# ~80 kB here, a 256 MB shard of the smallest cells ~25 MB), so 64 MB holds a task's working set
LABELS = LabelCache(64 << 20)


def shard_labels(uri: str, places: tuple[tuple[str, int], ...], columns: tuple[str, ...]) -> pa.Table:
    """The key and ``columns`` of one shard's labels: the row groups ``places`` of the labels
    at ``uri`` (file names are unique per clustering, so the cache never serves another's),
    read once while they stay in :data:`LABELS`."""
    return LABELS.get((uri, places, columns), lambda: read_shard_labels(uri, places, columns))


def read_shard_labels(uri: str, places: tuple[tuple[str, int], ...], columns: tuple[str, ...]) -> pa.Table:
    fs, root = resolve(uri)
    tables = []
    for file, group in places:
        with fs.open_input_file(f"{root}/{file}") as f:
            tables.append(pq.ParquetFile(f, metadata=_footer(uri, file)).read_row_group(group, columns=KEY + list(columns)))
    return pa.concat_tables(tables) if tables else pa.table({"video_id": pa.array([], pa.string()), "clip_index": pa.array([], pa.int32()),
                                                             **{c: pa.array([], pa.int32()) for c in columns}})


def lookup(keys: pa.Table, shards: pa.ChunkedArray, labels: Labels, columns: list[str], prefix: str = "") -> pa.Table:
    """``keys`` (with ``video_id``, ``clip_index``; ``shards``: each row's shard,
    :func:`shard_names`) inner-joined with the label ``columns`` (int32) of ``labels``
    (renamed ``prefix + column``). Only the labels of the batch's shards are read: the cost of
    a batch does not grow with the dataset."""
    names = pc.unique(shards).to_pylist()
    found = pa.concat_tables([shard_labels(labels.uri, labels.places(s), tuple(columns)) for s in names] or
                             [shard_labels(labels.uri, (), tuple(columns))])
    found = pa.table({"video_id": found.column("video_id").cast(keys.schema.field("video_id").type),
                      "clip_index": found.column("clip_index").cast(keys.schema.field("clip_index").type),
                      **{prefix + c: found.column(c) for c in columns}})
    return join_batch(keys, key=KEY, table=found)  # keys may carry the clips' jpeg cells


def count_batch(batch: pa.Table, *, ks: dict[str, int], val_fraction: float, previous: Labels | None,
                truth: dict[str, int] | None, classes: int) -> dict[str, np.ndarray]:
    """One batch's counts: per clustering (``ks``: name → its k) its sizes [k], sizes among training rows (not held out)
    [k], the sum of squared distances, and the contingency tables with the ``previous`` labels
    [k,k] (joined by shard: :func:`lookup`) and the ground-truth classes [k,classes] (plus the
    rows without a class)."""
    vid = batch.column("video_id").to_numpy(zero_copy_only=False)
    train = ~held_out(vid, val_fraction)
    cls = None if truth is None else np.array([truth.get(v, -1) for v in vid], np.int64)
    names = list(ks)
    prev = lookup(batch.select([*KEY, *names]), batch.column(SHARD), previous, names, "previous_") if previous else None
    out = {}
    for name, k in ks.items():
        lab = batch.column(name).to_numpy().astype(np.int64)
        out[f"{name}/sizes"] = np.bincount(lab, minlength=k)
        out[f"{name}/train_sizes"] = np.bincount(lab[train], minlength=k)
        out[f"{name}/distance"] = np.array([batch.column(f"{name}_distance").to_numpy().astype(np.float64).sum()])
        if prev is not None:
            c = np.zeros((k, k), np.int64)
            np.add.at(c, (prev.column(name).to_numpy(), prev.column(f"previous_{name}").to_numpy()), 1)
            out[f"{name}/previous"] = c
        if cls is not None:
            c = np.zeros((k, classes), np.int64)
            known = cls >= 0
            np.add.at(c, (lab[known], cls[known]), 1)
            out[f"{name}/truth"] = c
            out[f"{name}/unlabelled"] = np.array([int((~known).sum())])
    return out


# ---- 4. statistics -----------------------------------------------------------------------------

def summed(rows) -> tuple[dict[str, np.ndarray], pa.Table]:
    """The rows of a Ray Dataset of counts (:func:`assign_fragments`' output), summed as they
    stream in, and the index of the labels written (``shard``, ``file``, ``row_group``; ~80 B a
    shard)."""
    total: dict[str, np.ndarray] = {}
    index = []
    for b in rows.iter_batches(batch_format="numpy", batch_size=None):
        index += [pa.table(json.loads(part), schema=INDEX_SCHEMA) for part in b.pop(INDEX)]
        for key, v in b.items():
            total[key] = total.get(key, 0) + v.sum(0)
    return total, pa.concat_tables(index or [INDEX_SCHEMA.empty_table()])


def statistics(counts: dict[str, np.ndarray], name: str) -> dict:
    """The cluster analysis of one clustering (:func:`raysup.clustering.stats_from_counts`)."""
    sizes = counts[f"{name}/sizes"]
    labelled = f"{name}/truth" in counts and counts[f"{name}/unlabelled"][0] == 0  # some rows unlabelled: no truth analysis
    out = stats_from_counts(sizes, previous=counts.get(f"{name}/previous"), truth=counts[f"{name}/truth"] if labelled else None)
    out["train_sizes"] = counts[f"{name}/train_sizes"].tolist()
    out["objective"] = float(counts[f"{name}/distance"][0] / max(1, sizes.sum()))
    return out


# ---- 5. pseudo-labelled clips (XDC's training rows) ------------------------------------------

def draw_rates(train_sizes: dict[str, list[int]], n: int) -> dict[str, np.ndarray]:
    """Per head and cluster, the expected draws per clip in an epoch of ``n`` clips so that every
    cluster is sampled about equally (DeepCluster): a clip's weight is 1/|its cluster| among the
    training clips, averaged over the heads' label sets; the weights of all clips sum to the mean
    number of non-empty clusters, so a clip's expected draws are n · weight / that sum. Only the
    cluster sizes are needed: each clip's draws are made where it is read (:func:`round_rows`)."""
    sizes = {h: np.asarray(s, np.float64) for h, s in train_sizes.items()}
    total = np.mean([(s > 0).sum() for s in sizes.values()])
    return {h: np.where(s > 0, n / (len(sizes) * total * np.maximum(s, 1)), 0.0) for h, s in sizes.items()}


def round_rows(batch: pa.Table, *, labels: Labels, heads: dict[str, str], val_fraction: float,
               rates: dict[str, np.ndarray] | None, rng=None) -> pa.Table:
    """Clips of one batch (read with their ``path``) with their pseudo-labels ``pl_<head>``
    (joined by key from the round's ``labels`` of the batch's shards: :func:`lookup`), without
    the ``path``: the held-out videos' clips when ``rates`` is None (validation), else the
    training clips, each repeated a random number of times with mean Σ_head rates[head][label]
    (stochastic rounding), in random order (copies of a clip from a small cluster must not sit
    next to each other, or they would share a batch)."""
    sources = sorted(set(heads.values()))
    joined = lookup(batch.drop_columns(["path"]), shard_names(batch.column("path")), labels, sources, prefix="cluster_")
    held = held_out(joined.column("video_id").to_numpy(zero_copy_only=False), val_fraction)
    joined = joined.filter(pa.array(held if rates is None else ~held))
    label = {h: joined.column(f"cluster_{src}").to_numpy().astype(np.int64) for h, src in heads.items()}
    joined = joined.drop_columns([f"cluster_{src}" for src in sources])
    for h in heads:
        joined = joined.append_column(f"pl_{h}", pa.array(label[h]))
    if rates is None:
        return joined
    mean = sum(rates[h][label[h]] for h in heads) if joined.num_rows else np.zeros(0)
    return repeat_rows(joined, rate=mean, rng=rng)


# ---- all of it ---------------------------------------------------------------------------------

@dataset_progress("cluster", "parts", tasks=True)
def cluster_features(
    features: str,
    out: str,
    clusterings: list[Clustering],
    settings: KMeansConfig,
    *,
    seed: int = 0,
    previous: str | None = None,
    truth: dict[str, int] | None = None,
    val_fraction: float = 0.0,
    item_bytes: int = ITEM_BYTES,
) -> dict:
    """k-means (``settings``) of the features Parquet at ``features`` (``video_id``, ``clip_index``
    and vector columns), one per clustering, trained on ``settings.sample`` rows (0: up to
    :data:`POINTS_PER_CENTROID` per centroid, all rows if fewer) in one Ray task with
    ``settings.cpus`` and ``settings.gpus``. Writes to ``out`` (a new folder or URI) the labels as Parquet, each clustering's
    centroids (``centroids.npy`` for one clustering, else ``centroids_<name>.npy``; PCA-whitening
    in ``pca.npz`` / ``pca_<name>.npz``) and ``stats.json``, written last. ``previous`` (labels
    written by an earlier call with the same names) and ``truth`` (``video_id`` → class) add
    NMI and purity; ``val_fraction`` splits the training sizes off the held-out videos. Each
    task of the two passes reads about ``item_bytes`` of features. Features with a ``path``
    column (the prepared shard of each clip, as XDC writes them) give labels indexed by shard
    (:func:`write_index`, :class:`Labels`), which ``previous`` must be too. Returns the statistics."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    settings.validate()
    niter, nredo, pca_dim, cpus, gpus = settings.niter, settings.nredo, settings.pca_dim, settings.cpus, settings.gpus
    ks = {c.name: c.k or settings.k for c in clusterings}
    k = max(ks.values())  # the largest clustering sets the sample
    ensure_empty(out)
    columns = sorted({c for cl in clusterings for c in cl.columns})
    items, schema = fragments(features, columns, item_bytes)
    prev = None if previous is None else Labels.open(previous)
    if prev is not None and "path" not in schema.names:
        raise ValueError(f"{features}: no column path; the previous round's labels are joined by the clips' shards")
    rows = sum(i["rows"] for i in items)
    if k > rows:
        raise ValueError(f"k: {k} clusters need at least {k} rows; {features} has {rows}")
    n = min(rows, settings.sample or POINTS_PER_CENTROID * k)
    if n < k:
        raise ValueError(f"sample: {n} rows cannot train {k} centroids; use a sample of at least k rows")
    if pca_dim:
        dim = min(sum(schema.field(c).type.list_size for c in cl.columns) for cl in clusterings)
        if pca_dim > min(dim, n):
            raise ValueError(f"pca_dim: {pca_dim} is more than the {dim} feature dimensions or the {n} sampled rows")

    clock = [time.perf_counter()]
    parts = over_fragments(items, sample_fragments, uri=features, columns=columns, seed=seed, threshold=sample_threshold(n, rows)).materialize()
    clock.append(time.perf_counter())
    # placement_group=None: schedule on the cluster, not inside a Tune trial's bundle
    task = ray.remote(train).options(num_cpus=cpus, num_gpus=gpus, scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    models = ray.get(task.remote(clusterings, n, settings.k, niter, nredo, seed, pca_dim, gpus > 0, *parts.to_arrow_refs()))
    del parts
    clock.append(time.perf_counter())
    fs, root = resolve(out)
    fs.create_dir(root, recursive=True)
    read = KEY + columns + (["path"] if "path" in schema.names else [])
    counts, index = summed(over_fragments(items, assign_fragments, uri=features, columns=read, out=out, token=uuid.uuid4().hex[:8],
                                          clusterings=clusterings, models=models, ks=ks, val_fraction=val_fraction, previous=prev,
                                          truth=truth or None, classes=1 + max(truth.values(), default=0) if truth else 0))
    if index.num_rows:
        write_index(out, index)
    clock.append(time.perf_counter())
    for c in clusterings:
        suffix = "" if len(clusterings) == 1 else f"_{c.name}"
        _save(fs, f"{root}/centroids{suffix}.npy", models[c.name].centroids)
        if models[c.name].pca is not None:
            A, b = models[c.name].pca
            _save(fs, f"{root}/pca{suffix}.npz", A=A, b=b)
    stats = {"rows": rows, "sample": n, "k": settings.k, "seconds": dict(zip(["sample", "train", "assign"], np.diff(clock).round(2).tolist(), strict=True))}
    for c in clusterings:
        m = models[c.name]
        stats[c.name] = statistics(counts, c.name) | {"columns": list(c.columns), "k": ks[c.name], "sample_objective": m.sample_objective, "iterations": m.iterations}
    write_json(fs, f"{root}/{STATS}", stats)
    return stats


def _save(fs, path: str, array: np.ndarray | None = None, **arrays: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, array) if array is not None else np.savez(buf, **arrays)
    with fs.open_output_stream(path) as f:
        f.write(buf.getvalue())
