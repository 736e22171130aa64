"""The Parquet contract between ``prepare`` and ``ingest``: one row per clip.

| column       | Arrow type                 | meaning                                          |
|--------------|----------------------------|--------------------------------------------------|
| video_id     | string                     | path under the source root, no extension, '/'    |
| clip_index   | int32                      | index of the clip within its video               |
| start_s      | float32                    | clip start in seconds                            |
| frames       | raw: fixed_size_binary     | uint8 [T,S,S,3] (null for audio-only sets)       |
|              | jpeg: binary               | JPEG of [T·H,W,3]: short side S, video's aspect  |
| audio        | fixed_size_binary, null ok | float16 log-mel [n_mels, n_frames] (null: no audio) |
| flow         | raw: fixed_size_binary     | float16 [T-1,S,S,2] pixels/frame (null: flow off) |
|              | jpeg: binary               | 8-bit JPEG of [(T-1)·2H,W] (raysup.data.codec)   |
| motion       | float32                    | mean flow magnitude (pixels/frame), 0 w/o flow   |

Raw tensor columns are little-endian bytes of a fixed shape; shapes and dtypes (for jpeg
sets: the shapes the cells decode to) are in the Parquet schema metadata (key ``raysup``)
and in ``manifest.json``. Reading them is a zero-parse ``np.frombuffer`` over the Arrow
data buffer; jpeg cells are decoded by a Ray Data stage (:func:`raysup.data.codec.decode_clips`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# a read's output blocks (Ray's default, 128 MB, made a whole read task's output one block): a
# worker holds a block, not its task's share, and the first batch comes after one block
# (experiments/bench/scale.py at 800k clips: label_join worker peak 451 -> 327-373 MB; docs/performance.md)
OUTPUT_BLOCK_BYTES = 4 * 1024**2

MANIFEST = "manifest.json"  # a prepared set's manifest, at its root
INDEX = "index.parquet"  # its per-input index (manifests of version 4 on), at its root
# the index: one row per input (an input skipped as a duplicate shares its video_id), sorted by video_id
INDEX_SCHEMA = pa.schema([("video_id", pa.string()), ("status", pa.string()), ("clips", pa.int32()), ("shard", pa.string()),
                          ("has_audio", pa.bool_()), ("gaps", pa.int32()), ("reason", pa.string()), ("path", pa.string())])
INDEX_COLUMNS = INDEX_SCHEMA.names
DATA_DIR = "data"  # its Parquet shards
TENSOR_COLUMNS = ("frames", "audio", "flow")
ENCODED_COLUMNS = ("frames", "flow")  # list<binary>: one image per frame or field in the jpeg encoding


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_dict(d: dict) -> TensorSpec:
        return TensorSpec(tuple(int(x) for x in d["shape"]), str(d["dtype"]))


def arrow_schema(specs: dict[str, TensorSpec], encoding: str = "raw") -> pa.Schema:
    """Arrow schema for clips with the given tensor columns (name → spec). With the ``jpeg``
    encoding, frames and flow are lists of binary (one encoded image per frame or field:
    :mod:`raysup.data.codec`); ``specs`` are then the shapes they decode to."""
    fields = [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("clip_index", pa.int32(), nullable=False),
        pa.field("start_s", pa.float32(), nullable=False),
    ]
    for name in TENSOR_COLUMNS:
        if name in specs and encoding == "jpeg" and name in ENCODED_COLUMNS:
            fields.append(pa.field(name, pa.list_(pa.binary()), nullable=True))
        elif name in specs:
            fields.append(pa.field(name, pa.binary(specs[name].nbytes), nullable=True))
    fields.append(pa.field("motion", pa.float32(), nullable=False))
    meta = {"raysup": json.dumps({k: v.to_dict() for k, v in specs.items()})}
    return pa.schema(fields, metadata=meta)


def tensor_bytes(value: np.ndarray | None, spec: TensorSpec) -> bytes | None:
    """Encode one tensor cell; checks shape so a wrong clip never reaches Parquet."""
    if value is None:
        return None
    if tuple(value.shape) != spec.shape:
        raise ValueError(f"tensor shape {tuple(value.shape)} != schema shape {spec.shape}")
    return np.ascontiguousarray(value, dtype=spec.dtype).tobytes()


def column_to_numpy(column: pa.ChunkedArray | pa.Array, spec: TensorSpec) -> tuple[np.ndarray, np.ndarray]:
    """Decode a fixed-size-binary column into ([N, *shape] array, [N] validity mask).

    Null cells come back as zeros. The array is a fresh, writable copy. Any other column type
    is a bug upstream (TypeError: an internal error, not the user's data).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    width = spec.nbytes
    if column.type != pa.binary(width):
        raise TypeError(f"a {spec.dtype} {list(spec.shape)} tensor column must be {pa.binary(width)}, got {column.type}")
    if n == 0:
        return np.zeros((0, *spec.shape), spec.dtype), np.zeros(0, bool)
    data = column.buffers()[1]
    flat = np.frombuffer(data, dtype=np.uint8, count=n * width, offset=column.offset * width)
    out = flat.view(spec.dtype).reshape(n, *spec.shape).copy()
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    if not valid.all():
        out[~valid] = 0
    return out, valid


def vectors(x: np.ndarray) -> pa.FixedSizeListArray:
    """[N,D] float32 → Arrow ``fixed_size_list<float32, D>`` (zero-copy): a features column."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def to_numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A ``fixed_size_list<float32, D>`` column → [N,D] float32."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size).astype(np.float32, copy=False)
