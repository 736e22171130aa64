"""Frozen features of every clip, extracted by a pool of Ray Data actors (the run's GPUs, or CPUs).

The features are a dataset, never an array in one process: :func:`embed` maps the clips to rows
of ``video_id``, ``clip_index`` and one ``fixed_size_list<float32>`` column per encoder, named
after it (``video``, ``audio``, ...), and :func:`write_features` streams them to Parquet (a
folder or URI), which :mod:`raysup.cluster_features` clusters and ``raysup features`` writes.

Below the methods: the caller hands over the method's ``build`` function, so this module
never imports the method registry.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from raysup.checkpoint import load_checkpoint_file
from raysup.config import Build, TrainConfig
from raysup.data.ingest import ClipCollate
from raysup.data.schema import TensorSpec, vectors
from raysup.data.storage import ensure_empty, resolve
from raysup.progress import dataset_progress
from raysup.video_sums import added, sum_per_video

CPU_BATCH = 64  # clips per Embedder call on a CPU
GPU_BATCH = 256  # … on a GPU: a large batch keeps it busy (8×224²×3 uint8 clips: ~300 MB of input per call)
FILE_BYTES = 128 << 20  # features per Parquet file, at least (Ray Data's own target block size): not one file per block


class Embedder:
    """Ray Data actor: clip batches → ``video_id``, ``clip_index`` (and the clips' ``path``, the
    prepared shard each was read from, when the batch has one) and one vector column per encoder
    (all of the model's, or ``encoders``) of a (possibly untrained) model. On a GPU (``gpu``) the
    batch goes through pinned host memory with non-blocking copies and runs under autocast
    (bfloat16, or float16 where the GPU has no bfloat16); on the CPU in float32."""

    def __init__(self, cfg: TrainConfig, build: Build, specs: dict[str, TensorSpec], checkpoint: str | None,
                 encoders: tuple[str, ...] | None = None, gpu: bool = False):
        torch.manual_seed(cfg.seed)
        self.method = build(cfg, specs)
        if checkpoint is not None:
            self.method.load_state_dict(load_checkpoint_file(checkpoint)["model"])
        self.device = torch.device("cuda" if gpu else "cpu")
        self.method.to(self.device).eval()
        self.collate = ClipCollate(specs)
        self.encoders = encoders

    @torch.no_grad()
    def __call__(self, batch: pa.Table) -> pa.Table:
        cuda = self.device.type == "cuda"
        tensors = {k: v.pin_memory().to(self.device, non_blocking=True) if cuda else v for k, v in self.collate(batch).items()}
        half = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
        with torch.autocast(self.device.type, dtype=half, enabled=cuda):
            feats = self.method.embed(tensors, train=False)
        out = {"video_id": batch.column("video_id"), "clip_index": pa.array(tensors["clip_index"].cpu().numpy().astype(np.int32))}
        if "path" in batch.column_names:
            out["path"] = batch.column("path")
        out.update({name: vectors(feats[name].float().cpu().numpy()) for name in (self.encoders or sorted(feats))})
        return pa.table(out)


def embed(ds, cfg: TrainConfig, build: Build, specs: dict[str, TensorSpec], checkpoint: str | None, *,
          encoders: tuple[str, ...] | None = None, actors: int | None = None, batch_size: int | None = None):
    """The features of every clip of ``ds`` as a lazy Ray Dataset: ``map_batches`` over an actor
    pool that starts with one actor and grows to ``actors`` (default: the run's ``workers``),
    each with the run's ``gpus_per_worker``: the GPUs the run asks for, whether or not their
    nodes are up yet (the autoscaler adds them). Batches of ``batch_size`` clips (default
    :data:`GPU_BATCH` on GPUs, :data:`CPU_BATCH` on CPUs)."""
    import ray

    gpus = cfg.gpus_per_worker
    return ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"cfg": cfg, "build": build, "specs": specs, "checkpoint": checkpoint, "encoders": encoders, "gpu": gpus > 0},
        batch_size=batch_size or (GPU_BATCH if gpus else CPU_BATCH),
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors or cfg.workers),
        num_gpus=gpus,
        num_cpus=1,
    )


@dataset_progress("features", "clips")
def write_features(ds, out: str, cfg: TrainConfig, build: Build, specs: dict[str, TensorSpec], checkpoint: str | None, *,
                   encoders: tuple[str, ...] | None = None, actors: int | None = None, batch_size: int | None = None) -> None:
    """Stream the features of ``ds``'s clips (:func:`embed`) into Parquet files of at least
    :data:`FILE_BYTES` in ``out`` (a new or empty folder or URI); no process holds more than a
    file's worth of batches."""
    ensure_empty(out)
    if encoders:  # refused here, before the actors start, rather than inside one
        names = build(cfg, specs).encoders()
        missing = sorted(set(encoders) - set(names))
        if missing:
            raise ValueError(f"encoders: the model has no encoder {', '.join(missing)} (it has {', '.join(sorted(names))})")
    write_files(embed(ds, cfg, build, specs, checkpoint, encoders=encoders, actors=actors, batch_size=batch_size), out)


def write_files(ds, out: str) -> None:
    """``ds`` as Parquet files of at least :data:`FILE_BYTES` in the folder or URI ``out`` (Ray
    Data's own default: a file per block)."""
    fs, root = resolve(out)
    ds.write_parquet(root, filesystem=fs, min_bytes_per_file=FILE_BYTES)


# --- per-video averages without gathering the clips ------------------------------------------------


def video_means(features, *, batch_size: int = 4096) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every vector column of a feature dataset (:func:`embed`'s rows) averaged per video →
    (video ids [V] sorted, {name: [V,D] float32}). Ray Data tasks sum each ``batch_size`` clips
    per video (:func:`video_sums`); this process adds those partial sums up one batch at a time,
    so it holds [V,D] per column and never the clips. Features written to Parquet:
    :func:`raysup.cluster_features.read_video_means`."""
    return added(video_sums(features, batch_size=batch_size))


def video_sums(features, *, batch_size: int = 4096):
    """Lazy Ray Dataset of per-video partial sums: for each batch of ``batch_size`` clips, one row
    per video in it with ``video_id``, ``clips`` (how many) and each vector column summed in
    float64 (:func:`sum_per_video`). A video's clips lie in one prepared shard, so its rows number
    about the videos plus the batches, whatever the clips per video."""
    return features.map_batches(sum_per_video, batch_format="pyarrow", batch_size=batch_size)
