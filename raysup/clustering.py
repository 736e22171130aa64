"""k-means pseudo-labels for deep clustering (XDC, Alwassel et al. 2020, §3) with faiss.

:func:`pseudo_labels` is the one place where the four variants differ:

| variant | video encoder learns                | audio encoder learns                |
|---------|-------------------------------------|-------------------------------------|
| ``sdc`` | clusters of video features          | clusters of audio features          |
| ``xdc`` | clusters of audio features          | clusters of video features          |
| ``mdc`` | both (two heads: ``video``, ``video_cross``) | both (``audio``, ``audio_cross``) |
| ``cdc`` | clusters of [v/‖v‖, a/‖a‖]          | the same clusters                    |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Variant = Literal["sdc", "mdc", "cdc", "xdc"]


@dataclass(frozen=True)
class KMeansResult:
    labels: np.ndarray  # int64 [N]
    sizes: np.ndarray  # int64 [k] clips per cluster
    objective: float
    iterations: int = 0  # k-means iterations run, over all restarts (faiss stops a restart once converged)


def import_faiss():
    """``import faiss``, first pointing its bundled OpenBLAS at the right kernels.

    The faiss-cpu wheel ships OpenBLAS 0.3.15, which does not recognise CPUs newer than ~2021
    (e.g. Sapphire Rapids) and falls back to generic SSE3 kernels: k-means iterations ran at ~0.2x
    the machine's matmul rate (experiments/bench/clustering.py). OpenBLAS reads
    ``OPENBLAS_CORETYPE`` when it loads, so it is set (unless the user set it) from the CPU's
    flags: SKYLAKEX with AVX-512, HASWELL with AVX2+FMA. No effect once faiss is imported.
    """
    import os
    import platform

    if "OPENBLAS_CORETYPE" not in os.environ and platform.machine() in ("x86_64", "AMD64"):
        try:
            with open("/proc/cpuinfo") as f:
                flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
        except OSError:
            flags = []
        if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= set(flags):
            os.environ["OPENBLAS_CORETYPE"] = "SKYLAKEX"
        elif {"avx2", "fma"} <= set(flags):
            os.environ["OPENBLAS_CORETYPE"] = "HASWELL"
    import faiss

    return faiss


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kmeans(
    x: np.ndarray, k: int, *, niter: int = 20, nredo: int = 1, seed: int = 0, pca_dim: int = 0, gpu: bool = False
) -> KMeansResult:
    """faiss k-means on L2-normalised features (optionally PCA-whitened to ``pca_dim`` first,
    as DeepCluster does), best of ``nredo`` initialisations (DeepCluster's faiss settings: 20
    iterations, one initialisation; each restart costs a whole k-means). faiss re-seeds empty
    clusters by splitting large ones; all-equal (degenerate) features get one cluster, which is
    reported, not an error."""
    faiss = import_faiss()

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if k > n:
        raise ValueError(f"k: {k} clusters need at least {k} clips, got {n}")
    if k < 2:
        raise ValueError(f"k: must be >= 2, got {k}")
    if pca_dim:
        pca = faiss.PCAMatrix(d, min(pca_dim, d), -0.5)  # eigen_power −0.5 = whitening
        pca.train(x)
        x = pca.apply(x)
    x = l2_normalize(x)
    if np.ptp(x, axis=0).max() < 1e-6:  # every clip has the same feature
        labels = np.zeros(n, np.int64)
        return KMeansResult(labels, np.bincount(labels, minlength=k), 0.0)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, gpu=gpu, min_points_per_centroid=1, max_points_per_centroid=1 << 20, verbose=False)
    km.train(x)
    _, assign = km.index.search(x, 1)
    labels = assign[:, 0].astype(np.int64)
    return KMeansResult(labels, np.bincount(labels, minlength=k), float(km.obj[-1]) if len(km.obj) else 0.0, len(km.iteration_stats))


def pseudo_labels(
    video_feats: np.ndarray,
    audio_feats: np.ndarray,
    *,
    k: int,
    variant: Variant,
    seed: int = 0,
    niter: int = 20,
    nredo: int = 1,
    pca_dim: int = 0,
    gpu: bool = False,
) -> dict[str, np.ndarray]:
    """Pseudo-labels per clip for each classification head (keys: ``video``, ``audio``; MDC
    adds ``video_cross`` and ``audio_cross``). Features are [N,D] with rows aligned."""
    if len(video_feats) != len(audio_feats):
        raise ValueError(f"video and audio features differ in length: {len(video_feats)} vs {len(audio_feats)}")
    km = lambda x: kmeans(x, k, niter=niter, nredo=nredo, seed=seed, pca_dim=pca_dim, gpu=gpu).labels  # noqa: E731
    if variant == "sdc":
        return {"video": km(video_feats), "audio": km(audio_feats)}
    if variant == "xdc":
        return {"video": km(audio_feats), "audio": km(video_feats)}
    if variant == "mdc":
        v, a = km(video_feats), km(audio_feats)
        return {"video": v, "audio": a, "video_cross": a, "audio_cross": v}
    if variant == "cdc":
        joint = km(np.concatenate([l2_normalize(video_feats), l2_normalize(audio_feats)], axis=1))
        return {"video": joint, "audio": joint}
    raise ValueError(f"variant: expected one of sdc, mdc, cdc, xdc, got {variant!r}")


def pseudo_labels_task(video_feats, audio_feats, *, cpus: float = 1, gpus: float = 0, **kw) -> dict[str, np.ndarray]:
    """:func:`pseudo_labels` as a Ray task with its own CPU/GPU resources (so a cluster can run
    it on a big node); faiss uses as many OpenMP threads as CPUs requested."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    # placement_group=None: schedule on the cluster, not inside a Tune trial's bundle
    @ray.remote(num_cpus=cpus, num_gpus=gpus, scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    def task(v, a):
        faiss = import_faiss()
        faiss.omp_set_num_threads(max(1, int(cpus)))
        return pseudo_labels(v, a, gpu=gpus > 0, **kw)

    return ray.get(task.remote(video_feats, audio_feats))


def cluster_stats(labels: np.ndarray, k: int, *, previous: np.ndarray | None = None, truth: np.ndarray | None = None) -> dict[str, float | list]:
    """The paper's cluster analysis: sizes histogram, empty clusters, NMI with the previous
    round's labels, and purity / NMI against ground-truth labels when given (Table 6)."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    sizes = np.bincount(labels, minlength=k)
    out: dict[str, float | list] = {
        "cluster_sizes": sizes.tolist(),
        "empty_clusters": int((sizes == 0).sum()),
        "largest_cluster_fraction": float(sizes.max() / max(1, sizes.sum())),
    }
    if previous is not None:
        out["nmi_previous"] = float(nmi(previous, labels))
    if truth is not None:
        out["nmi_truth"] = float(nmi(truth, labels))
        purity = sum(np.bincount(truth[labels == c]).max() for c in np.unique(labels))
        out["purity"] = float(purity / len(labels))
    return out
