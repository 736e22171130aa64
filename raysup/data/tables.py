"""Table operations that Ray Data runs inside its read and map tasks: pyarrow and numpy only.

They live apart from the torch code on purpose: a Ray Data task imports the module of the
function it runs, and a fresh worker process importing torch and ray.data costs ~4 s of CPU; on a 2-core
machine running a sweep, those imports were a large share of every epoch's start.
"""
from __future__ import annotations

import itertools
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ASYNC_AUDIO = "audio_async"  # GDT's extra tensor column when sync=False: audio of another clip


HASH_BUCKETS = 1000  # the held-out split's resolution: a video's bucket is its id's crc32 mod this


def hash_bucket(video_id: str) -> int:
    """A video's place in the held-out hash order, 0..HASH_BUCKETS−1 (crc32 of its id)."""
    return zlib.crc32(video_id.encode()) % HASH_BUCKETS


def hash_order(video_id: str) -> tuple[int, int, str]:
    """The order prepare writes videos in: by :func:`hash_bucket` (so a shard holds a narrow
    range of buckets and the held-out split lies in its own shards), then by the whole crc32
    (a pseudo-random order that mixes class folders), then by id."""
    crc = zlib.crc32(video_id.encode())
    return crc % HASH_BUCKETS, crc, video_id


def hash_keys(video_ids) -> np.ndarray:
    """:func:`hash_order` of each id as one uint64 (bucket above crc32), to sort by with the id."""
    crc = crc32s(video_ids).astype(np.uint64)
    return (crc % HASH_BUCKETS) << np.uint64(32) | crc


CRC_CHUNK = 8192  # ids converted to Python strings at a time


def crc32s(video_ids) -> np.ndarray:
    """crc32 of each id (Arrow strings, or an iterable of str) as uint32 [N]; Arrow ids are
    converted ``CRC_CHUNK`` at a time, never all to Python strings at once."""
    if isinstance(video_ids, pa.ChunkedArray | pa.Array):
        arrow = video_ids
        video_ids = itertools.chain.from_iterable(arrow.slice(i, CRC_CHUNK).to_pylist() for i in range(0, len(arrow), CRC_CHUNK))
    return np.fromiter((zlib.crc32(v.encode()) for v in video_ids), np.uint32)


def bucket_held_out(bucket, fraction: float):
    """Whether hash bucket(s) ``bucket`` fall in the held-out split of ``fraction`` of the videos."""
    return bucket < fraction * HASH_BUCKETS


def is_held_out(video_id: str, fraction: float) -> bool:
    """Whether a video is in a method's held-out validation split (a stable hash of its id)."""
    return bool(bucket_held_out(hash_bucket(video_id), fraction))


def hash_buckets(video_ids) -> np.ndarray:
    """:func:`hash_bucket` of each id (Arrow strings, or an iterable of str), as int64 [N]."""
    return (crc32s(video_ids) % HASH_BUCKETS).astype(np.int64)


def held_out(video_ids: np.ndarray, fraction: float) -> np.ndarray:
    """Per row, whether its video is in the held-out split (:func:`is_held_out`, hashed once per video)."""
    if not len(video_ids):
        return np.zeros(0, bool)
    uniq, inv = np.unique(video_ids, return_inverse=True)
    return bucket_held_out(hash_buckets(uniq), fraction)[inv]


def split_rows(batch: pa.Table, *, fraction: float, held: bool) -> pa.Table:
    """The rows of ``batch`` whose video is (``held``) or is not in the held-out split; a map
    over the stream, so no list of ids travels and an empty split is simply no rows."""
    mask = held_out(batch.column("video_id").to_numpy(zero_copy_only=False), fraction)
    return batch.filter(pa.array(mask if held else ~mask))


def join_columns(ds, key: list[str], table: pa.Table):
    """Inner-join per-key columns (e.g. labels per ``video_id`` or pseudo-labels per
    ``video_id, clip_index``) onto the clips; clips without a key match are dropped."""
    return ds.map_batches(join_batch, batch_format="pyarrow", fn_kwargs={"key": key, "table": table}, zero_copy_batch=True)


def join_batch(batch: pa.Table, *, key: list[str], table: pa.Table) -> pa.Table:
    """Inner join of ``batch`` and ``table`` on ``key``. Arrow's hash join sees only the keys
    and a row number (it refuses list columns such as the jpeg cells, and need not copy them);
    the matching rows of ``batch`` are then taken and ``table``'s other columns appended."""
    row = "__raysup_row"
    left = batch.select(key).append_column(row, pa.array(np.arange(batch.num_rows, dtype=np.int64)))
    joined = left.join(table, keys=key, join_type="inner")
    out = batch.take(joined.column(row))
    for name in table.column_names:
        if name not in key:
            out = out.append_column(table.schema.field(name), joined.column(name))
    return out


def labels_table(mapping: dict[str, int], column: str = "label") -> pa.Table:
    """A ``video_id → int`` mapping as a table for :func:`join_columns`."""
    ids = sorted(mapping)
    return pa.table({"video_id": pa.array(ids, pa.string()), column: pa.array([mapping[i] for i in ids], pa.int64())})


def pack_videos(clips: pa.Table, *, require: tuple[str, ...] = ()) -> pa.Table:
    """Clips of whole videos → one row per video: ``video_id`` and, per other column, the list
    of its clips' values in clip order. Clips with a null in a ``require`` column are left out
    (e.g. GDT's audio, its positive); a video left without clips gives no row."""
    for name in require:
        clips = clips.filter(pc.is_valid(clips[name]))
    clips = clips.sort_by([("video_id", "ascending"), ("clip_index", "ascending")])
    ids = clips["video_id"].to_numpy(zero_copy_only=False)  # [N]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, np.int64)  # [V] first clip of each video
    offsets = pa.array(np.r_[starts, len(ids)], pa.int32())  # [V+1]
    packed = {"video_id": clips["video_id"].take(pa.array(starts))}
    for name in clips.column_names:
        if name != "video_id":
            packed[name] = pa.ListArray.from_arrays(offsets, clips[name].combine_chunks())
    return pa.table(packed)


def draw_shard_clips(clips: pa.Table, *, rng, require: tuple[str, ...] = (), exclude: tuple[str, ...] = (), **draw) -> pa.Table:
    """One read unit's clips (whole videos: :func:`read_units`) → this epoch's draws from each of
    its videos (:func:`pack_videos`, then :func:`draw_video_clips` with ``draw``); the videos in
    ``exclude`` are left out. The draws come in random order (packed, they are sorted by video
    id, often by class)."""
    if exclude:
        clips = clips.filter(pc.invert(pc.is_in(clips["video_id"], pa.array(exclude, pa.string()))))
    drawn = draw_video_clips(pack_videos(clips, require=require), rng=rng, **draw)
    return drawn.take(pa.array(rng.permutation(drawn.num_rows)))


def read_units(units: list[tuple[str, ...]], *, filesystem, columns: list[str] | None, fn, fn_kwargs: dict, seed: tuple[int, ...],
               unit_kwargs: list[dict] | None = None):
    """A Ray Data read task: per unit (the Parquet files of whole videos), its clips read whole
    and passed through ``fn(table, rng=…, **fn_kwargs, **unit_kwargs[i])`` (``unit_kwargs``: the
    unit's own arguments, e.g. the videos it leaves out); one block per unit, so no block ever
    holds part of a video. ``rng`` is seeded by ``seed`` (the run's seed and the epoch) and the
    unit, so an epoch's draws are reproducible and every epoch's differ."""
    import pyarrow.parquet as pq

    for unit, own in zip(units, unit_kwargs or [{}] * len(units), strict=True):
        table = pa.concat_tables([pq.read_table(path, columns=columns, filesystem=filesystem) for path in unit])
        yield fn(table, rng=np.random.default_rng([*seed, zlib.crc32(unit[0].encode())]), **fn_kwargs, **own)


def read_files(paths: list[str], *, filesystem, columns: list[str] | None, include_paths: bool):
    """A Ray Data read task: the Parquet files ``paths`` read one row group at a time (no more
    than a row group and Ray's output block in memory), each with a ``path`` column naming its
    file if ``include_paths`` (as Ray's own Parquet reader names it)."""
    import pyarrow.parquet as pq

    for path in paths:
        with filesystem.open_input_file(path) as f:
            file = pq.ParquetFile(f)
            for group in range(file.num_row_groups):
                table = file.read_row_group(group, columns=columns)
                yield table.append_column("path", pa.array([path] * table.num_rows, pa.string())) if include_paths else table


def draw_video_clips(
    videos: pa.Table,
    *,
    draws: int,
    first_only: bool = False,
    weights: str | None = None,
    async_audio: bool = False,
    rng=None,
) -> pa.Table:
    """Packed videos (:func:`pack_videos`) → this epoch's clips: ``draws`` rows per video, each
    one of its clips drawn uniformly, with probability ∝ the ``weights`` column (non-negative;
    uniform for a video whose weights are all 0), or always its first clip (``first_only``).

    With ``async_audio`` each row also gets ``audio_async``: the audio of a uniformly random
    *other* clip of the video (the same clip if it has only one). ``rng`` defaults to an
    unseeded generator, so every epoch's re-execution draws anew.
    """
    rng = rng if rng is not None else np.random.default_rng()
    lists = [c for c in videos.column_names if c != "video_id"]
    flat = {c: pc.list_flatten(videos[c]) for c in lists}
    n_clips = pc.list_value_length(videos["clip_index"]).to_numpy(zero_copy_only=False)  # [V], each >= 1
    first = np.concatenate([[0], np.cumsum(n_clips)[:-1]]).astype(np.int64)  # [V] flat row of each video's clip 0
    video = np.repeat(np.arange(videos.num_rows), draws)  # [V·draws]
    n = n_clips[video]
    if first_only:
        i = np.zeros_like(n)
    else:
        i = rng.integers(n)  # [V·draws] uniform clip within its video
        if weights is not None and len(video):
            w = np.clip(np.nan_to_num(flat[weights].to_numpy(zero_copy_only=False).astype(np.float64)), 0, None)  # [N]
            cum = np.cumsum(w)  # [N]
            before = cum[first] - w[first]  # [V] weight of all earlier videos
            total = np.add.reduceat(w, first)  # [V]
            target = before[video] + rng.random(len(video)) * total[video]
            weighted = np.minimum(np.searchsorted(cum, target, side="right") - first[video], n - 1)
            i = np.where(total[video] > 0, weighted, i)
    out = {"video_id": videos["video_id"].take(video)}
    out.update({c: flat[c].take(first[video] + i) for c in lists})
    if async_audio:
        j = np.where(n > 1, (i + rng.integers(1, np.maximum(n, 2))) % n, i)  # another clip
        out[ASYNC_AUDIO] = flat["audio"].take(first[video] + j)
    return pa.table(out)


def repeat_rows(batch: pa.Table, *, rate, rng=None) -> pa.Table:
    """Each row repeated floor(rate) or floor(rate) + 1 times (stochastic rounding, mean
    ``rate``: one for all rows, or one per row), in random order."""
    rng = rng if rng is not None else np.random.default_rng()
    rate = np.asarray(rate, np.float64)
    repeat = np.floor(rate).astype(np.int64) + (rng.random(batch.num_rows) < rate % 1)
    return batch.take(pa.array(rng.permutation(np.repeat(np.arange(batch.num_rows), repeat))))


def hash_counts(index: pa.Table) -> dict[str, list[int]]:
    """Per hash bucket (:func:`hash_bucket`), the prepared videos of ``index`` (a prepared set's
    index: ``video_id``, ``status``, ``clips``, ``has_audio``), their clips, and the videos with
    audio and their clips: any split's counts, without a per-video list."""
    ok = index.select(["video_id", "clips", "has_audio"]).filter(pc.equal(index["status"], "ok"))
    b = hash_buckets(ok["video_id"])  # [V]
    clips = ok["clips"].to_numpy(zero_copy_only=False).astype(np.int64)  # [V]
    audio = ok["has_audio"].to_numpy(zero_copy_only=False).astype(bool)  # [V]
    return {"videos": _per_bucket(b), "clips": _per_bucket(b, clips), "audio_videos": _per_bucket(b[audio]), "audio_clips": _per_bucket(b[audio], clips[audio])}


def _per_bucket(buckets: np.ndarray, weights: np.ndarray | None = None) -> list[int]:
    return np.bincount(buckets, weights, minlength=HASH_BUCKETS).astype(np.int64).tolist()


def shard_ranges(index: pa.Table, shards: list[str]) -> list[list[int]]:
    """Per shard of ``shards``, the lowest and highest :func:`hash_bucket` of the videos ``index``
    puts in it; ``[0, HASH_BUCKETS − 1]`` (read by every split) where the index does not say."""
    ok = index.select(["video_id", "shard"]).filter(pc.and_(pc.equal(index["status"], "ok"), pc.is_valid(index["shard"])))
    t = pa.table({"shard": ok["shard"], "b": hash_buckets(ok["video_id"])}).group_by("shard").aggregate([("b", "min"), ("b", "max")])
    found = dict(zip(t["shard"].to_pylist(), zip(t["b_min"].to_pylist(), t["b_max"].to_pylist())))
    return [list(found.get(s, (0, HASH_BUCKETS - 1))) for s in shards]


def shard_in_split(lo: int, hi: int, fraction: float, held: bool) -> bool:
    """Whether a shard whose videos' hash buckets span ``lo``..``hi`` holds a video of the
    held-out split of ``fraction`` (``held``) or one outside it."""
    return bool(bucket_held_out(lo, fraction)) if held else not bucket_held_out(hi, fraction)
