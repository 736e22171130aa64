"""Frozen features of every clip, extracted by Ray Data actors (a GPU each when there is one).

Below the methods: the caller hands over the method's ``build`` function, so this module
never imports the method registry.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from raysup.checkpoint import load_checkpoint_file
from raysup.config import TrainConfig
from raysup.data.ingest import ClipCollate
from raysup.data.schema import TensorSpec

Build = Callable[[TrainConfig, dict[str, TensorSpec]], torch.nn.Module]


@dataclass(frozen=True)
class Features:
    """Per-clip features: ``video_id`` [N], ``clip_index`` [N], ``feats[name]`` [N,D]."""

    video_id: np.ndarray
    clip_index: np.ndarray
    feats: dict[str, np.ndarray]


class Embedder:
    """Ray Data actor: clip batches → features of every encoder of a (possibly untrained) model."""

    def __init__(self, cfg: TrainConfig, build: Build, specs: dict[str, TensorSpec], checkpoint: str | None):
        torch.manual_seed(cfg.seed)
        self.method = build(cfg, specs)
        if checkpoint is not None:
            self.method.load_state_dict(load_checkpoint_file(checkpoint)["model"])
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.method.to(self.device).eval()
        self.collate = ClipCollate(specs)

    @torch.no_grad()
    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        tensors = {k: v.to(self.device) for k, v in self.collate(batch).items()}
        feats = self.method.embed(tensors, train=False)
        out = {"video_id": batch.column("video_id").to_numpy(zero_copy_only=False), "clip_index": tensors["clip_index"].cpu().numpy()}
        out.update({f"feat_{k}": v.float().cpu().numpy() for k, v in feats.items()})
        return out


def extract_features(
    ds, cfg: TrainConfig, build: Build, specs: dict[str, TensorSpec], checkpoint: str | None, *, actors: int = 1, batch_size: int = 64
) -> Features:
    """Features of every clip in ``ds`` as a Ray Data ``map_batches`` over an actor pool
    (one GPU per actor when the cluster has GPUs)."""
    import ray

    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    out = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"cfg": cfg, "build": build, "specs": specs, "checkpoint": checkpoint},
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=gpus,
        num_cpus=1,
    )
    parts = list(out.iter_batches(batch_format="numpy", batch_size=None))
    if not parts:
        raise ValueError("no clips to extract features from")
    names = [k[5:] for k in parts[0] if k.startswith("feat_")]
    vid = np.concatenate([p["video_id"] for p in parts]).astype(str)
    clip = np.concatenate([p["clip_index"] for p in parts])
    order = np.lexsort((clip, vid))  # deterministic order: by video, then clip
    feats = {n: np.concatenate([p[f"feat_{n}"] for p in parts])[order] for n in names}
    return Features(vid[order], clip[order], feats)


def video_average(f: Features) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Average clip features per video → (video ids [V], {name: [V,D]})."""
    ids, inverse = np.unique(f.video_id, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(ids))[:, None]
    out = {}
    for name, x in f.feats.items():
        acc = np.zeros((len(ids), x.shape[1]), np.float64)
        np.add.at(acc, inverse, x)
        out[name] = (acc / counts).astype(np.float32)
    return ids, out
