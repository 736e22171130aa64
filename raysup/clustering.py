"""k-means pseudo-labels for deep clustering (XDC, Alwassel et al. 2020, §3) with faiss.

:data:`CLUSTERINGS` and :data:`HEADS` are the one place where the four variants differ:

| variant | video encoder learns                | audio encoder learns                |
|---------|-------------------------------------|-------------------------------------|
| ``sdc`` | clusters of video features          | clusters of audio features          |
| ``xdc`` | clusters of audio features          | clusters of video features          |
| ``mdc`` | both (two heads: ``video``, ``video_cross``) | both (``audio``, ``audio_cross``) |
| ``cdc`` | clusters of [v/‖v‖, a/‖a‖]          | the same clusters                    |

and the same-modality-XDC baselines (papers/xdc.md L105-115, Table 1): ``xdc_2video``, two video
encoders (``video``, ``video2``) each learning the other's clusters; ``xdc_2audio`` the same with
two audio encoders (``audio``, ``audio2``).

In memory (:func:`kmeans`, :func:`pseudo_labels`) for small sets and baselines; XDC clusters its
features dataset with :mod:`raysup.cluster_features`, which trains these same k-means on a sample.
The cluster statistics are computed from counts (:func:`stats_from_counts`), which that module
sums over the batches of a dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Variant = Literal["sdc", "mdc", "cdc", "xdc", "xdc_2video", "xdc_2audio"]


# variant → {clustering: the feature columns it clusters (several: each L2-normalised, then
# concatenated)}, and {classification head: the clustering whose labels it learns}
CLUSTERINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "sdc": {"video": ("video",), "audio": ("audio",)},
    "xdc": {"video": ("video",), "audio": ("audio",)},
    "mdc": {"video": ("video",), "audio": ("audio",)},
    "cdc": {"joint": ("video", "audio")},
    "xdc_2video": {"video": ("video",), "video2": ("video2",)},
    "xdc_2audio": {"audio": ("audio",), "audio2": ("audio2",)},
}
HEADS: dict[str, dict[str, str]] = {
    "sdc": {"video": "video", "audio": "audio"},
    "xdc": {"video": "audio", "audio": "video"},
    "mdc": {"video": "video", "audio": "audio", "video_cross": "audio", "audio_cross": "video"},
    "cdc": {"video": "joint", "audio": "joint"},
    "xdc_2video": {"video": "video2", "video2": "video"},
    "xdc_2audio": {"audio": "audio2", "audio2": "audio"},
}


@dataclass(frozen=True)
class KMeansConfig:
    """How to cluster: XDC's rounds (:attr:`raysup.methods.xdc.Config.kmeans`) and ``raysup
    cluster`` both build one; :func:`raysup.cluster_features.cluster_features` runs it."""

    k: int = 64  # clusters
    niter: int = 20  # k-means iterations (DeepCluster's faiss settings)
    nredo: int = 1  # initialisations, the best kept
    sample: int = 0  # rows the centroids train on (0: up to 512 per centroid); every row is then assigned
    pca_dim: int = 0  # PCA-whitening to this dimension before k-means (0: off)
    cpus: float = 1.0  # resources of the k-means Ray task (faiss threads)
    gpus: float = 0.0  # > 0: GPU faiss

    def validate(self) -> None:
        """ValueError naming the field for settings no data could serve."""
        if self.k < 2:
            raise ValueError(f"k: must be >= 2, got {self.k}")
        if self.niter < 1 or self.nredo < 1:
            raise ValueError(f"niter/nredo: must be >= 1, got {self.niter}/{self.nredo}")
        if self.sample and self.sample < self.k:
            raise ValueError(f"sample: {self.sample} rows cannot train {self.k} centroids; use 0 (the default) or at least k")
        if self.pca_dim < 0 or self.cpus <= 0 or self.gpus < 0:
            raise ValueError(f"pca_dim/cpus/gpus: must be >= 0, > 0, >= 0, got {self.pca_dim}/{self.cpus}/{self.gpus}")


@dataclass(frozen=True)
class KMeansResult:
    labels: np.ndarray  # int64 [N]
    sizes: np.ndarray  # int64 [k] clips per cluster
    objective: float  # sum of squared distances to the assigned centroids
    iterations: int = 0  # k-means iterations run, over all restarts (faiss stops a restart once converged)
    centroids: np.ndarray | None = None  # float32 [k,d] in the (whitened, normalised) space clustered
    pca: tuple[np.ndarray, np.ndarray] | None = None  # PCA-whitening y = A x + b: A [d,D], b [d]


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


def joint(columns: list[np.ndarray]) -> np.ndarray:
    """The matrix one clustering sees: one column's features as they are, several (CDC) each
    L2-normalised, then concatenated."""
    return columns[0] if len(columns) == 1 else np.concatenate([l2_normalize(c) for c in columns], axis=1)


def project(x: np.ndarray, pca: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """PCA-whitening (if fitted), then L2 normalisation: the space k-means works in."""
    x = np.asarray(x, np.float32)
    if pca is not None:
        x = x @ pca[0].T + pca[1]
    return np.ascontiguousarray(l2_normalize(x), dtype=np.float32)


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
    pca = None
    if pca_dim:
        p = faiss.PCAMatrix(d, min(pca_dim, d), -0.5)  # eigen_power −0.5 = whitening
        p.train(x)
        pca = (faiss.vector_to_array(p.A).reshape(p.d_out, p.d_in), faiss.vector_to_array(p.b))
    x = project(x, pca)
    if np.ptp(x, axis=0).max() < 1e-6:  # every clip has the same feature: one cluster
        centroids = np.concatenate([x[:1], np.repeat(-x[:1], k - 1, axis=0)])  # the others antipodal, never nearest
        labels = np.zeros(n, np.int64)
        return KMeansResult(labels, np.bincount(labels, minlength=k), 0.0, centroids=centroids, pca=pca)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, gpu=gpu, min_points_per_centroid=1, max_points_per_centroid=1 << 30, verbose=False)
    km.train(x)
    dist, assign = km.index.search(x, 1)
    labels = assign[:, 0].astype(np.int64)
    return KMeansResult(labels, np.bincount(labels, minlength=k), float(dist.sum()), len(km.iteration_stats), km.centroids.copy(), pca)


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
    """In memory: pseudo-labels per clip for each classification head (:data:`HEADS`: ``video``,
    ``audio``; MDC adds ``video_cross`` and ``audio_cross``). Features are [N,D] with rows
    aligned. XDC runs the same clusterings over a features dataset
    (:func:`raysup.cluster_features.cluster_features`)."""
    if variant not in ("sdc", "mdc", "cdc", "xdc"):  # the same-modality baselines: a second encoder's features (XDC's stages)
        raise ValueError(f"variant: expected one of sdc, mdc, cdc, xdc, got {variant!r}")
    if len(video_feats) != len(audio_feats):
        raise ValueError(f"video and audio features differ in length: {len(video_feats)} vs {len(audio_feats)}")
    feats = {"video": video_feats, "audio": audio_feats}
    labels = {
        name: kmeans(joint([feats[c] for c in columns]), k, niter=niter, nredo=nredo, seed=seed, pca_dim=pca_dim, gpu=gpu).labels
        for name, columns in CLUSTERINGS[variant].items()
    }
    return {head: labels[source] for head, source in HEADS[variant].items()}


def pseudo_labels_task(video_feats, audio_feats, *, cpus: float = 1, gpus: float = 0, **kw) -> dict[str, np.ndarray]:
    """:func:`pseudo_labels` as a Ray task with its own CPU/GPU resources (the in-memory baseline
    of experiments/bench/clustering.py); faiss uses as many OpenMP threads as CPUs requested."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    # placement_group=None: schedule on the cluster, not inside a Tune trial's bundle
    @ray.remote(num_cpus=cpus, num_gpus=gpus, scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    def task(v, a):
        faiss = import_faiss()
        faiss.omp_set_num_threads(max(1, int(cpus)))
        return pseudo_labels(v, a, gpu=gpus > 0, **kw)

    return ray.get(task.remote(video_feats, audio_feats))


def nmi(contingency: np.ndarray) -> float:
    """Normalised mutual information (arithmetic normalisation, as scikit-learn's
    ``normalized_mutual_info_score``) of two labelings given only their contingency table
    [a,b] (counts of rows per label pair), so it can be summed over batches of any dataset."""
    c = np.asarray(contingency, np.float64)
    c = c[c.sum(1) > 0][:, c.sum(0) > 0]
    if c.shape[0] == c.shape[1] == 1 or c.size == 0:
        return 1.0
    p = c / c.sum()
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])).sum())
    ha, hb = float(-(pa * np.log(pa)).sum()), float(-(pb * np.log(pb)).sum())
    return max(0.0, min(1.0, mi / max((ha + hb) / 2, np.finfo(np.float64).eps)))


def stats_from_counts(sizes: np.ndarray, *, previous: np.ndarray | None = None, truth: np.ndarray | None = None) -> dict[str, float | list]:
    """The paper's cluster analysis from counts: sizes histogram [k], empty clusters, NMI with
    the previous round's labels (contingency [k,k]) and purity / NMI against ground-truth
    classes (contingency [k,classes], Table 6)."""
    sizes = np.asarray(sizes, np.int64)
    out: dict[str, float | list] = {
        "cluster_sizes": sizes.tolist(),
        "empty_clusters": int((sizes == 0).sum()),
        "largest_cluster_fraction": float(sizes.max() / max(1, sizes.sum())),
    }
    if previous is not None:
        out["nmi_previous"] = nmi(previous)
    if truth is not None:
        out["nmi_truth"] = nmi(truth)
        out["purity"] = float(truth.max(1).sum() / max(1, truth.sum()))
    return out


def contingency(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Counts of rows per label pair (a[i], b[i]) → [shape] int64."""
    out = np.zeros(shape, np.int64)
    np.add.at(out, (np.asarray(a), np.asarray(b)), 1)
    return out


def cluster_stats(labels: np.ndarray, k: int, *, previous: np.ndarray | None = None, truth: np.ndarray | None = None) -> dict[str, float | list]:
    """:func:`stats_from_counts` of labels held in memory."""
    labels = np.asarray(labels)
    return stats_from_counts(
        np.bincount(labels, minlength=k),
        previous=None if previous is None else contingency(labels, previous, (k, max(k, int(np.max(previous)) + 1))),
        truth=None if truth is None else contingency(labels, truth, (k, int(np.max(truth)) + 1)),
    )
