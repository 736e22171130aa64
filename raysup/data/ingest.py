"""Prepared Parquet → Ray Data datasets → torch batches in the train workers."""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata
from ray.data.collate_fn import ArrowBatchCollateFn

from raysup.config import ConfigError
from raysup.data.codec import CROPS, ENCODINGS, decode_batch_rows, decode_clips
from raysup.data.schema import DATA_DIR, INDEX_SCHEMA, MANIFEST, OUTPUT_BLOCK_BYTES, TENSOR_COLUMNS, TensorSpec, column_to_numpy
from raysup.data.storage import exists, read_json, redact, resolve
from raysup.data.tables import HASH_BUCKETS, bucket_held_out, draw_shard_clips, hash_counts, read_files, read_units, shard_in_split, split_rows

PER_VIDEO = ("index", "video_clips", "video_ids", "no_audio")  # PreparedData's members read from the index
BLOCK_BYTES = 32 * 1024**2  # tensor bytes per Ray Data read task
MIN_BLOCKS = 16
WHOLE_VIDEO_SHARDS = 4  # the manifest version from which prepare closes shards only between videos
PER_IMAGE = "one JPEG per"  # how the manifest's encoding layout of one JPEG per frame (per field) begins
TASK_SHARD = re.compile(r"(.*/part-[0-9a-f]{32})(-\d+)?\.parquet")  # prepare's k-th file of one task: part-<id>-<k>.parquet


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
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k in ("manifest", "hash_counts", *PER_VIDEO)})  # read once
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

    @cached_property
    def hash_counts(self) -> dict[str, np.ndarray]:
        """Per hash bucket (:func:`raysup.data.tables.hash_bucket`), the prepared videos, their
        clips, and the videos with audio and their clips (``videos``, ``clips``, ``audio_videos``,
        ``audio_clips``: [HASH_BUCKETS] each): from the manifest (version 5 on), else the index."""
        counts = self.manifest.get("hash_counts") or hash_counts(self.index)
        return {k: np.asarray(v, np.int64) for k, v in counts.items()}

    def split_counts(self, fraction: float, held: bool) -> dict[str, int]:
        """:attr:`hash_counts` summed over the held-out split of ``fraction`` of the videos
        (``held``, :func:`raysup.data.tables.is_held_out`) or over the others: no per-video list."""
        mask = bucket_held_out(np.arange(HASH_BUCKETS), fraction)
        return {k: int(v[mask if held else ~mask].sum()) for k, v in self.hash_counts.items()}

    def index_of(self, video_ids) -> pa.Table:
        """The index rows of those of ``video_ids`` that were prepared (status ``ok``), read from
        ``index.parquet`` through a filter: memory grows with ``video_ids``, not with the set."""
        keep = pc.field("video_id").isin(pa.array(sorted(set(video_ids)), pa.string())) & (pc.field("status") == "ok")
        if "index" not in self.manifest or "index" in self.__dict__:
            return self.index.filter(keep)
        fs, root = resolve(self.uri)
        return pq.read_table(f"{root}/{self.manifest['index']}", filesystem=fs, filters=keep)

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

    def dataset(self, columns: list[str] | None = None, *, crop: str | None = "centre", shuffle: int | None = None, paths: bool = False,
                held: bool | None = None, fraction: float = 0.0):
        """The clips as a streaming Ray Dataset (only ``columns`` are read, if given), with the
        cells of a compressed set decoded to ``specs`` by :meth:`decode` (``crop``: "centre" for
        evaluation and features, "random" for training; None: the stored cells). ``shuffle``
        (a seed): the files are read in another order every time the dataset runs (every
        epoch), with no step that waits for the whole read (train.py's local shuffle buffer
        mixes the clips of the files being read). ``paths``: with a ``path`` column, the shard
        each clip was read from. ``held`` (True/False): only the clips of the videos in (outside)
        the held-out split of ``fraction`` of the videos (:func:`raysup.data.tables.is_held_out`),
        reading only the shards that hold such videos (:meth:`shards`).

        Shards are grouped into read tasks of about ``BLOCK_BYTES`` (at least ``MIN_BLOCKS``
        blocks, for parallel reads): one task per small shard cost ~4x the CPU and ran at ~1/3
        the samples/s (experiments/bench/ingest.py). The shards and their sizes come from the
        manifest (:class:`ShardFiles`): building the dataset opens no file; Ray's Parquet reader
        listed every file and sampled ~1% of them in Ray tasks on every build, which made the
        first batch of a set of 391 files come ~1.6x later than of 25 (docs/performance.md).
        """
        import ray

        fs, root = resolve(self.uri)
        if columns is not None:
            columns = [c for c in columns if c not in TENSOR_COLUMNS or c in self.stored_specs]
        shards = self.shards(held, fraction)
        source = ShardFiles([(f"{root}/{s}",) for s in shards], filesystem=fs, columns=columns, seed=shuffle, paths=paths,
                            unit_bytes=self.stored_bytes(columns) * self.manifest["counts"]["clips"] / max(1, len(shards)))
        ds = ray.data.read_datasource(source, override_num_blocks=self.read_blocks(columns, len(shards)))
        ds.context.target_max_block_size = OUTPUT_BLOCK_BYTES  # this dataset's and those made from it
        if held is not None:  # the rows of the videos on the other side within a boundary shard
            ds = ds.map_batches(split_rows, batch_format="pyarrow", fn_kwargs={"fraction": fraction, "held": held})
        return ds if crop is None else self.decode(ds, crop=crop)

    def read_blocks(self, columns: list[str] | None, files: int) -> int:
        """Read tasks for ``files`` files: about ``BLOCK_BYTES`` each, at least ``MIN_BLOCKS``."""
        blocks = math.ceil(self.stored_bytes(columns) * self.manifest["counts"]["clips"] / BLOCK_BYTES)
        return max(1, min(files, max(blocks, MIN_BLOCKS)))

    def decode(self, ds, *, crop: str, on: str = "tasks"):
        """``ds`` (rows of this set's stored cells, e.g. clips drawn from :meth:`videos`) with
        compressed frames and flow decoded to the raw encoding's tensors of ``specs``, cropped to
        size×size (:func:`raysup.data.codec.decode_clips`): a ``map_batches`` stage of CPU tasks
        that Ray may run on any node. Raw sets come back unchanged unless :meth:`cropped`.
        ``on`` "device" (``TrainConfig.decode_on``): ``ds`` unchanged, its JPEG cells left for
        the train worker to decode (:mod:`raysup.data.device_decode`; :meth:`check_decode_on`)."""
        if crop not in CROPS:
            raise ValueError(f"crop: must be one of {', '.join(CROPS)}, got {crop!r}")
        self.check_decode_on(on)
        if on == "device" or self.encoding["format"] == "raw" and not self.crop_size:
            return ds
        layout = self.layout()
        return ds.map_batches(decode_clips, batch_format="pyarrow", batch_size=decode_batch_rows(layout),
                              fn_kwargs={"layout": layout, "crop": crop}, zero_copy_batch=True)

    def check_decode_on(self, on: str) -> None:
        """``decode_on`` "device" decodes one JPEG per frame and per flow field: a ConfigError
        naming the field for a raw set or a jpeg set of one JPEG per clip (before 2026-12-06)."""
        if on != "device":
            return
        enc = self.encoding
        if enc["format"] != "jpeg":
            raise ConfigError(f"decode_on: device decodes JPEG cells on the train worker, but {redact(self.uri)} is a {enc['format']} set "
                              "(set decode_on=tasks, or prepare with --encoding jpeg)")
        if any(not enc[c]["layout"].startswith(PER_IMAGE) for c in ("frames", "flow") if c in enc):
            raise ConfigError(f"decode_on: device decodes one JPEG per frame and per flow field, but {redact(self.uri)} holds one JPEG "
                              "per clip (prepared before 2026-12-06): re-prepare it, or set decode_on=tasks")

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

    def shards(self, held: bool | None = None, fraction: float = 0.0) -> list[str]:
        """The committed Parquet shards, relative to the folder: those the manifest lists, never
        a half-written one or another program's file; with ``held`` (True/False) only those
        holding a video in (outside) the held-out split of ``fraction`` of the videos, by the
        range of hash buckets of each shard's videos (manifest ``shard_ranges``, version 5 on;
        earlier sets: every shard). Manifests before version 2 list none: their writer left only
        committed ``*.parquet`` files in ``data/``."""
        if "shards" in self.manifest:
            shards = self.manifest["shards"]
        else:
            fs, root = resolve(self.uri)
            files = fs.get_file_info(pafs.FileSelector(f"{root}/{DATA_DIR}"))
            shards = sorted(f"{DATA_DIR}/{f.base_name}" for f in files if f.type == pafs.FileType.File and f.base_name.endswith(".parquet"))
        if held is None:
            return shards
        ranges = self.manifest.get("shard_ranges") or [(0, HASH_BUCKETS - 1)] * len(shards)
        return [s for s, (lo, hi) in zip(shards, ranges, strict=True) if shard_in_split(lo, hi, fraction, held)]

    def video_draws(self, columns: list[str], *, seed: int, require: tuple[str, ...] = (), exclude: tuple[str, ...] = (), **draw):
        """Every epoch, clips drawn per video (stored cells; :func:`raysup.data.tables.draw_video_clips`
        with ``draw``, e.g. ``draws=1``), from every video with a clip whose ``require`` columns
        are not null, except those in ``exclude`` (each unit is told only its own,
        :meth:`unit_exclusions`: a task's arguments grow with its units, not with ``exclude``).
        Each read task reads whole :func:`task_shards` units (every clip of their videos), packs each video's clips and draws from them: no
        grouping, shuffle or materialised copy, so the first batch comes after one unit's read
        (a unit: one shard for sets whose shards hold whole videos, manifest version 4 on).
        The units are read in another order every epoch (seeded by ``seed`` and the epoch)."""
        import ray

        fs, root = resolve(self.uri)
        shards = self.shards()
        whole = self.manifest.get("version", 1) >= WHOLE_VIDEO_SHARDS  # each file holds whole videos
        units = [(s,) for s in shards] if whole else task_shards(shards)
        source = VideoShards([tuple(f"{root}/{s}" for s in unit) for unit in units], filesystem=fs, columns=columns, seed=seed,
                             unit_bytes=self.stored_bytes(columns) * self.manifest["counts"]["clips"] / max(1, len(units)),
                             fn_kwargs={"require": require, **draw}, excludes=self.unit_exclusions(units, exclude))
        return ray.data.read_datasource(source, override_num_blocks=self.read_blocks(columns, len(units)))

    def unit_exclusions(self, units: list[tuple[str, ...]], exclude) -> list[tuple[str, ...]]:
        """Per unit (a tuple of shards), the ids of ``exclude`` whose clips it holds (the index's
        ``shard``; ids of videos whose shard is not recorded, in sets of manifest version 1-3, go
        to every unit)."""
        if not exclude:
            return [()] * len(units)
        rows = self.index_of(exclude)
        by_shard: dict[str | None, list[str]] = {}
        for v, s in zip(rows["video_id"].to_pylist(), rows["shard"].to_pylist()):
            by_shard.setdefault(s, []).append(v)
        unknown = by_shard.get(None, [])
        return [tuple(sorted(unknown + [v for s in unit for v in by_shard.get(s, ())])) for unit in units]


def task_shards(shards: list[str]) -> list[tuple[str, ...]]:
    """The shards grouped by the prepare task that wrote them (``part-<id>.parquet`` and its
    ``part-<id>-<k>.parquet`` continuations, :class:`raysup.data.prepare.ShardWriter`): every
    clip of a video goes to the files of the one task that prepared it (a video may straddle
    two of them), so a group holds whole videos. Any other file is a group of its own."""
    groups: dict[str, list[str]] = {}
    for s in shards:
        m = TASK_SHARD.fullmatch(s)
        groups.setdefault(m.group(1) if m else s, []).append(s)
    return [tuple(g) for g in groups.values()]


class VideoShards(Datasource):
    """Units of whole videos (:func:`task_shards`) read by :func:`raysup.data.tables.read_units`
    through :func:`raysup.data.tables.draw_shard_clips`. The units are dealt to the read tasks
    in a permutation seeded by ``seed`` and the execution's index, which Ray advances after
    every run of the dataset: Ray Train runs a dataset once per epoch, so every epoch reads in
    another order (a resumed run starts its count again); ``seed`` None: in their given order.
    The first read task holds one unit alone: a task's output is one block (Ray merges a task's
    output up to its 128 MB target), so an epoch's first batch comes after one unit's read,
    not a task's share of the set."""

    def __init__(self, units: list[tuple[str, ...]], *, filesystem, columns: list[str] | None, seed: int | None, unit_bytes: float,
                 fn_kwargs: dict | None = None, excludes: list[tuple[str, ...]] | None = None):
        super().__init__()
        self.units, self.fs, self.columns, self.seed, self.unit_bytes, self.fn_kwargs = units, filesystem, columns, seed, unit_bytes, fn_kwargs
        self.excludes = excludes or [()] * len(units)  # per unit, the video ids its draws leave out

    def estimate_inmemory_data_size(self) -> int:
        return int(self.unit_bytes * len(self.units))

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        epoch = data_context._execution_idx if data_context is not None else 0  # Ray advances it after every execution
        n = len(self.units)
        order = np.arange(n) if self.seed is None else np.random.default_rng([self.seed, epoch]).permutation(n)
        k = max(1, min(parallelism, n))
        tasks = []
        for part in [order] if k == 1 else [order[:1], *np.array_split(order[1:], k - 1)]:
            units = [self.units[i] for i in part]
            read = self.reader(part, epoch)
            meta = BlockMetadata(num_rows=None, size_bytes=int(self.unit_bytes * len(units)), input_files=[f for u in units for f in u], exec_stats=None)
            tasks.append(ReadTask(read, meta, per_task_row_limit=per_task_row_limit))
        return tasks

    def reader(self, part: np.ndarray, epoch: int):
        """The read function of one task: the units numbered ``part`` read and drawn from."""
        return functools.partial(read_units, [self.units[i] for i in part], filesystem=self.fs, columns=self.columns, fn=draw_shard_clips,
                                 fn_kwargs=self.fn_kwargs, seed=(self.seed, epoch), unit_kwargs=[{"exclude": self.excludes[i]} for i in part])


class ShardFiles(VideoShards):
    """Prepared shards (each a unit of one file) read whole, row group by row group, with their
    ``path`` if ``paths`` (:func:`raysup.data.tables.read_files`); in a seeded order per
    execution as :class:`VideoShards` deals them (``seed`` None: the manifest's order)."""

    def __init__(self, units: list[tuple[str, ...]], *, paths: bool, **kw):
        super().__init__(units, **kw)
        self.paths = paths

    def reader(self, part: np.ndarray, epoch: int):
        return functools.partial(read_files, [f for i in part for f in self.units[i]], filesystem=self.fs, columns=self.columns, include_paths=self.paths)


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


