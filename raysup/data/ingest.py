"""Prepared Parquet → Ray Data datasets → torch batches in the train workers."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from raysup.config import ConfigError
from raysup.data.codec import CROPS, ENCODINGS, decode_batch_rows, decode_clips
from raysup.data.schema import DATA_DIR, INDEX_SCHEMA, MANIFEST, TENSOR_COLUMNS, TensorSpec, column_to_numpy
from raysup.data.storage import exists, read_json, redact, resolve
from raysup.data.tables import pack_video

PER_VIDEO = ("index", "video_clips", "video_ids", "no_audio")  # PreparedData's members read from the index
BLOCK_BYTES = 32 * 1024**2  # tensor bytes per Ray Data read task / block
MIN_BLOCKS = 16


@dataclass(frozen=True)
class PreparedData:
    """A folder (or URI) written by ``raysup prepare``: manifest + Parquet shards, read as
    ``crop_size``×``crop_size`` crops of the stored frames and flow (0: the prepared ``size``;
    :meth:`cropped`)."""

    uri: str
    crop_size: int = 0

    @cached_property
    def manifest(self) -> dict:
        fs, root = resolve(self.uri)
        path = f"{root}/{MANIFEST}"
        if not exists(fs, path):
            raise FileNotFoundError(f"{redact(self.uri)} is not a prepared dataset (no {MANIFEST}); run `raysup prepare` first")
        return read_json(fs, path)

    @property
    def stored_specs(self) -> dict[str, TensorSpec]:
        """The manifest's tensor shapes: frames and flow as prepared (S×S, S = ``--size``)."""
        return {k: TensorSpec.from_dict(v) for k, v in self.manifest["columns"].items()}

    @property
    def specs(self) -> dict[str, TensorSpec]:
        """The tensors readers get: frames [T,C,C,3] and flow [T−1,C,C,2] at the crop size C."""
        specs, c = self.stored_specs, self.crop_size
        if not c:
            return specs
        return {k: TensorSpec((v.shape[0], c, c, *v.shape[3:]), v.dtype) if k in ("frames", "flow") else v for k, v in specs.items()}

    def cropped(self, size: int) -> PreparedData:
        """This set read as size×size crops of its stored frames and flow (0: the prepared size):
        :meth:`decode` takes them at a random position for training, centred for evaluation
        (the papers' e.g. random 112 crops of 128-short-side frames). A ``raw`` set's stored
        square is cropped the same way. ``size`` above the prepared size is a ConfigError
        naming ``crop_size``."""
        frames = self.stored_specs.get("frames")
        stored = frames.shape[1] if frames is not None else 0  # audio-only sets: nothing to crop
        if size > stored > 0:
            raise ConfigError(f"crop_size: {size} exceeds the prepared frame size {stored} of {redact(self.uri)} "
                              f"(prepare with --size {size} or more, or lower crop_size; 0: the prepared size)")
        new = PreparedData(self.uri, 0 if size in (0, stored) or not stored else size)
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k in ("manifest", *PER_VIDEO)})  # read once
        return new

    def __getstate__(self) -> dict:
        """Pickled (to Ray tasks and actors) without the per-video members: a task that needs
        them reads the index itself."""
        return {k: v for k, v in self.__dict__.items() if k not in PER_VIDEO}

    @cached_property
    def index(self) -> pa.Table:
        """One row per input (:data:`raysup.data.schema.INDEX_COLUMNS`: video_id, status,
        clips, shard, has_audio, gaps, reason, path), read on first use from ``index.parquet``;
        for a set prepared before the index existed (manifest version 1-3), from its manifest."""
        if "index" not in self.manifest:
            return legacy_index(self.manifest)
        fs, root = resolve(self.uri)
        return pq.read_table(f"{root}/{self.manifest['index']}", filesystem=fs)

    @cached_property
    def video_clips(self) -> dict[str, int]:
        """Prepared video id → its number of clips."""
        ok = self.index.filter(pc.equal(self.index["status"], "ok"))
        return dict(zip(ok["video_id"].to_pylist(), ok["clips"].to_pylist()))

    @cached_property
    def video_ids(self) -> list[str]:
        """The prepared video ids, sorted (as the index is)."""
        return self.index.filter(pc.equal(self.index["status"], "ok"))["video_id"].to_pylist()

    @cached_property
    def no_audio(self) -> list[str]:
        """The prepared video ids without an audio track (their ``audio`` cells are null)."""
        ok = self.index.filter(pc.and_(pc.equal(self.index["status"], "ok"), pc.invert(self.index["has_audio"])))
        return ok["video_id"].to_pylist()

    @property
    def skipped(self) -> list[dict]:
        """``{video_id, path, reason}`` of every skipped input."""
        return self.index.filter(pc.equal(self.index["status"], "skipped")).select(["video_id", "path", "reason"]).to_pylist()

    @property
    def encoding(self) -> dict:
        """How the cells are stored (manifest ``encoding``); sets prepared before it existed are raw."""
        enc = self.manifest.get("encoding", {"format": "raw"})
        if enc.get("format") not in ENCODINGS:
            raise ConfigError(f"{redact(self.uri)}: unknown encoding {enc.get('format')!r} (prepared by a newer raysup?); re-prepare it with `raysup prepare`")
        return enc

    def dataset(self, columns: list[str] | None = None, *, crop: str | None = "centre", paths: bool = False):
        """The clips as a streaming Ray Dataset (only ``columns`` are read, if given), with the
        cells of a compressed set decoded to ``specs`` by :meth:`decode` (``crop``: "centre" for
        evaluation and features, "random" for training; None: the stored cells); ``paths``: with
        a ``path`` column, the shard each clip was read from.

        Shards are grouped into read tasks of about ``BLOCK_BYTES`` (at least ``MIN_BLOCKS``
        blocks, for block-order shuffling and parallel reads): one task per small shard cost
        ~4x the CPU and ran at ~1/3 the samples/s (experiments/bench/ingest.py).
        """
        import ray

        # Ray 2.60's DataSourceV2 Parquet listing idles ~3-10 s per execution here (thread-pool
        # shutdown joins in its file indexer); the V1 reader takes ~0.6 s per epoch.
        ray.data.DataContext.get_current().use_datasource_v2 = False
        fs, root = resolve(self.uri)
        if columns is not None:
            columns = [c for c in columns if c not in TENSOR_COLUMNS or c in self.stored_specs]
        shards = self.shards()
        blocks = math.ceil(self.stored_bytes(columns) * self.manifest["counts"]["clips"] / BLOCK_BYTES)
        blocks = max(1, min(len(shards), max(blocks, MIN_BLOCKS)))
        ds = ray.data.read_parquet([f"{root}/{s}" for s in shards], filesystem=fs, columns=columns, override_num_blocks=blocks,
                                  include_paths=paths)
        return ds if crop is None else self.decode(ds, crop=crop)

    def decode(self, ds, *, crop: str):
        """``ds`` (rows of this set's stored cells, e.g. clips drawn from :meth:`videos`) with
        compressed frames and flow decoded to the raw encoding's tensors of ``specs``, cropped to
        size×size (:func:`raysup.data.codec.decode_clips`): a ``map_batches`` stage of CPU tasks
        that Ray may run on any node. Raw sets come back unchanged unless :meth:`cropped`."""
        if crop not in CROPS:
            raise ValueError(f"crop: must be one of {', '.join(CROPS)}, got {crop!r}")
        if self.encoding["format"] == "raw" and not self.crop_size:
            return ds
        layout = self.layout()
        return ds.map_batches(decode_clips, batch_format="pyarrow", batch_size=decode_batch_rows(layout),
                              fn_kwargs={"layout": layout, "crop": crop}, zero_copy_batch=True)

    def layout(self) -> dict:
        """What :func:`raysup.data.codec.decode_clips` needs to decode and crop this set's cells."""
        specs = self.specs
        layout = {"size": self.crop_size or self.manifest["params"]["size"], "flow_range": self.encoding.get("flow", {}).get("range_px", 0.0),
                  "frames": list(specs["frames"].shape) if "frames" in specs else None,
                  "flow": list(specs["flow"].shape) if "flow" in specs else None}
        if self.encoding["format"] == "raw":
            layout["raw_side"] = self.stored_specs["frames"].shape[1]
        return layout

    def stored_bytes(self, columns: list[str] | None = None) -> float:
        """About how many bytes of tensor cells a clip holds on disk (for block sizes)."""
        if self.encoding["format"] == "raw" or "bytes" not in self.manifest:
            return sum(s.nbytes for name, s in self.stored_specs.items() if columns is None or name in columns)
        return self.manifest["bytes"] / max(1, self.manifest["counts"]["clips"])

    def shards(self) -> list[str]:
        """The committed Parquet shards, relative to the folder: those the manifest lists, never
        a half-written one or another program's file. Manifests before version 2 list none:
        their writer left only committed ``*.parquet`` files in ``data/``."""
        if "shards" in self.manifest:
            return self.manifest["shards"]
        fs, root = resolve(self.uri)
        files = fs.get_file_info(pafs.FileSelector(f"{root}/{DATA_DIR}"))
        return sorted(f"{DATA_DIR}/{f.base_name}" for f in files if f.type == pafs.FileType.File and f.base_name.endswith(".parquet"))

    def videos(self, columns: list[str], *, require: tuple[str, ...] = ()):
        """One row per video (:func:`raysup.data.tables.pack_video`: a list of its clips' stored
        cells per column), in random order, materialised in the object store (Ray spills it to
        disk when it does not fit in memory). Methods that draw clips per video every epoch map
        :func:`raysup.data.tables.draw_video_clips` over it, then :meth:`decode` the drawn clips. Grouping the clips afresh every
        epoch instead (a groupby and a random_shuffle, two all-to-all exchanges) made a GDT epoch
        ~12 s in a two-trial sweep on 2 cores; with this, 1.7 s."""
        return (
            self.dataset(columns, crop=None)
            .groupby("video_id", num_partitions=self.group_partitions(columns))
            .map_groups(pack_video, batch_format="pyarrow", fn_kwargs={"require": require})
            .random_shuffle()  # groups come out sorted by video id (often by class) within a partition
            .materialize()
        )

    def group_partitions(self, columns: list[str], target_bytes: int = 64 * 1024**2) -> int:
        """Hash-shuffle partitions for grouping clips by video, about ``target_bytes`` each
        (Ray's default of 200 partitions cost ~20 s on the 720-clip test set)."""
        per_clip = self.stored_bytes(columns)
        return int(min(200, max(1, -(-self.manifest["counts"]["clips"] * per_clip // target_bytes))))


def legacy_index(manifest: dict) -> pa.Table:
    """The index of a manifest written before ``index.parquet`` (version 1-3), from its
    per-video entries (``videos``, ``no_audio``, ``timestamp_gaps``, ``stopped_early``,
    ``skipped``); shards are not known there (null)."""
    no_audio, gaps, stopped = set(manifest.get("no_audio", [])), manifest.get("timestamp_gaps", {}), manifest.get("stopped_early", {})
    rows = [{"video_id": v, "status": "ok", "clips": n, "has_audio": v not in no_audio, "gaps": gaps.get(v, 0), "reason": stopped.get(v, "")}
            for v, n in manifest["videos"].items()]
    rows += [{**s, "status": "skipped", "clips": 0, "has_audio": False, "gaps": gaps.get(s["video_id"], 0)} for s in manifest.get("skipped", [])]
    return pa.Table.from_pylist(rows, schema=INDEX_SCHEMA).sort_by("video_id")


class ClipCollate(ArrowBatchCollateFn):
    """Arrow batch → dict of tensors: each tensor column as [B,*shape] plus ``<name>_valid`` [B]
    (False where the cell is null), numeric columns as [B]; string columns are dropped."""

    def __init__(self, specs: dict[str, TensorSpec]):
        self.specs = specs

    def __call__(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        out = {}
        for name in batch.column_names:
            col = batch.column(name)
            if name in self.specs:
                values, valid = column_to_numpy(col, self.specs[name])
                out[name] = torch.from_numpy(values)
                out[f"{name}_valid"] = torch.from_numpy(valid)
            elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
                out[name] = torch.from_numpy(np.array(col.to_numpy(zero_copy_only=False)))
        return out


