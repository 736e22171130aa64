"""Per-video sums of feature vectors, run inside Ray Data's map tasks (:func:`raysup.features.video_sums`,
:func:`raysup.features.read_video_means`): no torch. A worker importing :mod:`raysup.features`
imported torch with it (~500 MB of a worker's ~760 MB peak RSS in experiments/bench/scale.py's
``video_average``)."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from raysup.cluster_features import read_fragment


def sum_per_video(batch: pa.Table) -> pa.Table:
    """Clip rows → one row per video: ``video_id``, ``clips`` and the float64 sum of each
    ``fixed_size_list`` column."""
    ids, inverse, counts = np.unique(batch.column("video_id").to_numpy(zero_copy_only=False).astype(str), return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    out = {"video_id": pa.array(ids, pa.string()), "clips": pa.array(counts, pa.int64())}
    for name in vector_columns(batch.schema):
        x = matrix(batch.column(name), np.float64)
        sums = np.add.reduceat(x[order], starts, axis=0) if len(x) else x
        out[name] = pa.FixedSizeListArray.from_arrays(pa.array(sums.reshape(-1)), x.shape[1])
    return pa.table(out)


def sum_fragments(items: pa.Table, *, uri: str, columns: list[str], batch_size: int) -> Iterator[pa.Table]:
    """:func:`sum_per_video` of each ``batch_size`` clips (``columns``) of the ``items``' row
    groups (:func:`raysup.cluster_features.fragments` of the features at ``uri``)."""
    for item in items.to_pylist():
        for batch in read_fragment(uri, item, columns, batch_size):
            yield sum_per_video(batch)


def vector_columns(schema: pa.Schema) -> list[str]:
    """The ``fixed_size_list`` (feature vector) columns of a feature table."""
    return [f.name for f in schema if pa.types.is_fixed_size_list(f.type)]


def matrix(column: pa.ChunkedArray | pa.Array, dtype=np.float32) -> np.ndarray:
    """A ``fixed_size_list`` column → [N,D] of ``dtype``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size).astype(dtype, copy=False)
