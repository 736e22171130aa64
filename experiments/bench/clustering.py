"""Stage 4, clustering: the faiss k-means Ray task (``raysup.clustering.pseudo_labels_task``: the
k-means XDC trains on its sample of each round's features, experiments/bench/cluster_scale.py
measuring the whole path; one k-means per modality with the XDC paper preset's ``method.niter``/
``method.nredo``, 20 iterations and one initialisation as in DeepCluster; ``--nredo`` for more) vs.
scikit-learn ``KMeans`` with its defaults (k-means++, up to 300 iterations, tol 1e-4) on the same
L2-normalised features, and faiss's time per iteration vs. the machine's matrix-multiply rate
measured in the same run (an N x D by D x k float32 matmul, the assignment step's shape; MACs per
k-means iteration = N·D·k).

    python experiments/bench/clustering.py            # 100k x 512, k = 256 and 1024: ~4 min on 2 quiet cores
    python experiments/bench/clustering.py --quick    # seconds (the test suite runs this)

Goals: >= 10x faster than scikit-learn's defaults; >= 0.5x the matmul MAC/s per iteration.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from raysup.clustering import kmeans, l2_normalize, pseudo_labels_task  # noqa: E402
from raysup.methods import make_config  # noqa: E402


def features(n: int, d: int, modes: int, seed: int) -> np.ndarray:
    """[N,D] float32 like encoder features: a mixture of ``modes`` Gaussian blobs whose spread
    equals the distance between them (so clusters overlap), L2-normalised as k-means sees them."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((modes, d), dtype=np.float32)
    x = centres[rng.integers(0, modes, n)] + rng.standard_normal((n, d), dtype=np.float32)
    return l2_normalize(x).astype(np.float32)


def macs_per_second(x: np.ndarray, k: int, repeats: int) -> float:
    """Best of numpy (OpenBLAS) and torch float32 matmul of [N,D] x [D,k] with all cores, median
    over repeats."""
    c = np.ascontiguousarray(x[:k].T)  # [D,k]
    tx, tc = torch.from_numpy(x), torch.from_numpy(c)
    rates = []
    for fn in (lambda: x @ c, lambda: tx @ tc):
        fn()  # warm-up
        secs = [common.timed(fn)[0] for _ in range(repeats)]
        rates.append(x.shape[0] * x.shape[1] * k / common.median(secs))
    return max(rates)


def main(argv: list[str] | None = None) -> list[dict]:
    p = common.parser(__doc__, repeats=1)
    p.add_argument("--n", type=int, help="features (default 100000; --quick 4000)")
    p.add_argument("--d", type=int, help="dimensions (default 512; --quick 64)")
    p.add_argument("--k", type=int, nargs="+", help="clusters (default 256 1024; --quick 16 32)")
    p.add_argument("--nredo", type=int, help="faiss initialisations, best kept (default: the XDC paper preset's)")
    args = common.parse(p, argv)
    n, d = args.n or (4000 if args.quick else 100_000), args.d or (64 if args.quick else 512)
    ks = args.k or ([16, 32] if args.quick else [256, 1024])
    common.header("Stage 4: clustering (faiss k-means Ray task vs. scikit-learn KMeans)", args)
    from sklearn.cluster import KMeans

    cores = os.cpu_count() or 1
    paper = make_config("xdc", "paper").method  # the scale this benchmark measures
    niter, nredo = paper.niter, args.nredo or paper.nredo
    x = features(n, d, 1000 if not args.quick else 50, seed=0)
    y = features(n, d, 1000 if not args.quick else 50, seed=1)  # the other modality
    print(f"features: {n} x {d} float32 (mixture of overlapping blobs, L2-normalised); faiss up to {niter} iterations x {nredo} "
          f"restarts (a restart stops when converged) with {cores} threads; scikit-learn KMeans defaults with {cores} threads; "
          f"Ray task: pseudo_labels_task(cpus={cores}), variant xdc = 2 k-means; {args.repeats} run(s) per row\n")
    started = common.ray_start(args.address)
    rows = []
    try:
        for k in ks:
            rate = macs_per_second(x, k, repeats=max(3, args.repeats))
            macs = n * d * k  # per iteration (assignment step)
            task = [common.timed(lambda: pseudo_labels_task(x, y, cpus=cores, k=k, variant="xdc", niter=niter, nredo=nredo))[0] / 2
                    for _ in range(args.repeats)]
            inproc, per_iter, objective, iters = [], [], 0.0, 0
            for _ in range(args.repeats):
                dt, res = common.timed(lambda: kmeans(x, k, niter=niter, nredo=nredo))
                inproc.append(dt)
                per_iter.append(dt / (res.iterations + 1))  # + the final assignment
                objective, iters = res.objective / n, res.iterations
            sk, sk_iters, sk_obj = [], 0, 0.0
            for _ in range(args.repeats):
                dt, model = common.timed(lambda: KMeans(n_clusters=k, random_state=0).fit(x))
                sk.append(dt)
                sk_iters, sk_obj = int(model.n_iter_), float(model.inertia_) / n
            per_iter = common.median(per_iter)
            speedup = common.ratio(common.median(sk), common.median(task))
            mac_ratio = common.ratio(macs / per_iter, rate)
            rows.append({
                "k": k, "matmul GMAC/s": rate / 1e9,
                "faiss Ray task s/k-means": common.median(task), "faiss in-process s": common.median(inproc),
                "faiss iters": iters, "faiss s/iter": per_iter, "faiss GMAC/s": macs / per_iter / 1e9, "x matmul rate": mac_ratio,
                "goal >= 0.5": common.goal(mac_ratio, 0.5),
                "sklearn s": common.median(sk), "sklearn iters": sk_iters, "speed-up vs sklearn": speedup,
                "goal >= 10": common.goal(speedup, 10), "objective/pt faiss": objective, "objective/pt sklearn": sk_obj,
            })
            print(f"k={k} done; load average {common.load_average()}", flush=True)
    finally:
        common.ray_stop(started)
    print("\nPer k (objective/pt = mean squared distance to the centroid; lower is better):")
    common.print_table(rows)
    return rows


if __name__ == "__main__":
    main()
