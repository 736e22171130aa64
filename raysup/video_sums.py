"""Per-video sums of feature vectors: run inside Ray Data's map tasks
(:func:`raysup.features.video_sums`, :func:`raysup.cluster_features.read_video_means`) and added
up in the driver (:class:`VideoSums`). No torch: a worker importing :mod:`raysup.features`
imported torch with it (~500 MB of a worker's ~760 MB peak RSS in experiments/bench/scale.py's
``video_average``)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa


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


def vector_columns(schema: pa.Schema) -> list[str]:
    """The ``fixed_size_list`` (feature vector) columns of a feature table."""
    return [f.name for f in schema if pa.types.is_fixed_size_list(f.type)]


def matrix(column: pa.ChunkedArray | pa.Array, dtype=np.float32) -> np.ndarray:
    """A ``fixed_size_list`` column → [N,D] of ``dtype``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size).astype(dtype, copy=False)


def added(sums) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The per-video means of a Ray Dataset of :func:`sum_per_video` rows, added up here as they stream in."""
    total = VideoSums()
    for part in sums.iter_batches(batch_format="pyarrow", batch_size=None):
        total.add(part)
    return total.means()


class VideoSums:
    """Running per-video sums of :func:`sum_per_video` rows (a video may come in several)."""

    def __init__(self):
        self.index: dict[str, int] = {}  # video id → row
        self.clips = np.zeros(0, np.int64)
        self.sums: dict[str, np.ndarray] = {}

    def add(self, part: pa.Table) -> None:
        rows = np.array([self.index.setdefault(v, len(self.index)) for v in part.column("video_id").to_pylist()], np.int64)
        if len(self.index) > len(self.clips):  # grown by doubling: each row copied O(1) times on average
            size = max(len(self.index), 2 * len(self.clips))
            self.clips = np.concatenate([self.clips, np.zeros(size - len(self.clips), np.int64)])
            for name in vector_columns(part.schema):
                old = self.sums.get(name, np.zeros((0, part.schema.field(name).type.list_size)))
                self.sums[name] = np.concatenate([old, np.zeros((size - len(old), old.shape[1]))])
        # a part may name a video twice: Ray Data puts a task's consecutive outputs in one block
        np.add.at(self.clips, rows, part.column("clips").to_numpy())
        for name in self.sums:
            np.add.at(self.sums[name], rows, matrix(part.column(name), np.float64))

    def means(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if not self.index:
            raise ValueError("no clips to extract features from")
        ids = np.array(list(self.index), dtype=str)
        order = np.argsort(ids)
        n = len(ids)
        return ids[order], {name: (s[:n][order] / self.clips[:n][order, None]).astype(np.float32) for name, s in self.sums.items()}
