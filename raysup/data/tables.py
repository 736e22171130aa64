"""Table operations that Ray Data runs inside its read and map tasks: pyarrow and numpy only.

They live apart from the torch code on purpose: a Ray Data task imports the module of the
function it runs, and a fresh worker process importing torch and ray.data costs ~4 s of CPU; on a 2-core
machine running a sweep, those imports were a large share of every epoch's start.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ASYNC_AUDIO = "audio_async"  # GDT's extra tensor column when sync=False: audio of another clip


def join_columns(ds, key: list[str], table: pa.Table):
    """Inner-join per-key columns (e.g. labels per ``video_id`` or pseudo-labels per
    ``video_id, clip_index``) onto the clips; clips without a key match are dropped."""
    return ds.map_batches(join_batch, batch_format="pyarrow", fn_kwargs={"key": key, "table": table}, zero_copy_batch=True)


def join_batch(batch: pa.Table, *, key: list[str], table: pa.Table) -> pa.Table:
    return batch.join(table, keys=key, join_type="inner")


def labels_table(mapping: dict[str, int], column: str = "label") -> pa.Table:
    """A ``video_id → int`` mapping as a table for :func:`join_columns`."""
    ids = sorted(mapping)
    return pa.table({"video_id": pa.array(ids, pa.string()), column: pa.array([mapping[i] for i in ids], pa.int64())})


def clip_table(video_ids: np.ndarray, clip_index: np.ndarray, **columns: np.ndarray) -> pa.Table:
    """Per-clip values keyed by (video_id, clip_index) for :func:`join_columns`."""
    cols = {"video_id": pa.array(video_ids, pa.string()), "clip_index": pa.array(clip_index, pa.int32())}
    cols.update({k: pa.array(v) for k, v in columns.items()})
    return pa.table(cols)


def repeat_rows(batch: pa.Table) -> pa.Table:
    """Each row ``repeat`` times, in random order (copies of a clip from a small cluster must
    not sit next to each other, or they would share a batch)."""
    rows = np.repeat(np.arange(batch.num_rows), batch.column("repeat").to_numpy())
    return batch.take(pa.array(np.random.default_rng().permutation(rows))).drop_columns(["repeat"])


def sample_video_clips(group: pa.Table, *, temporal_jitter: bool, async_audio: bool, rng=None) -> pa.Table:
    """All clips of one video → the one row it contributes this epoch (see the module docstring).

    With ``async_audio`` the row gets an ``audio_async`` column: the audio of a random other
    clip of the video (the same clip if it has only one). ``rng`` defaults to an unseeded
    generator, so every epoch's re-execution draws anew.
    """
    rng = rng if rng is not None else np.random.default_rng()
    group = group.filter(pc.is_valid(group["audio"]))  # no audio, no positive
    n = group.num_rows
    if n == 0:
        return group.append_column(ASYNC_AUDIO, group["audio"]) if async_audio else group
    clip_index = group["clip_index"].to_numpy()
    i = int(rng.integers(n)) if temporal_jitter else int(np.argmin(clip_index))
    row = group.take([i])
    if async_audio:
        others = [j for j in range(n) if j != i] or [i]
        j = int(rng.choice(others))
        row = row.append_column(ASYNC_AUDIO, group["audio"].take([j]))
    return row
