"""XDC's k-means at scale: ``raysup.cluster_features.cluster_features`` (centroids trained on a
sample in one Ray task, every row assigned by Ray Data ``map_batches``, labels as Parquet) vs.
in-memory faiss k-means on all points (the whole matrix read into one process), on synthetic
features with known clusters written as Parquet by this script.

Each clustering runs in a child process (a driver that joins this script's Ray instance, importing
only what ``raysup cluster`` imports: no torch), so its peak RSS (``ru_maxrss``) is that driver's
alone; Ray's workers are separate processes. That driver then clusters again (the second time
is what an XDC round costs from its second round on, Ray's worker processes already started).

    python experiments/bench/cluster_scale.py           # N = 0.5M, 1M, 2M x 128, k = 100 (~1 GB of Parquet at 2M), 3 seeds
    python experiments/bench/cluster_scale.py --n 500000 --d 512 --k 256 --repeats 1   # XDC paper preset's shape
    python experiments/bench/cluster_scale.py --quick   # N = 10k x 16, k = 8, 1 seed: seconds (the test suite runs this)

Goals: the driver's peak RSS < 1 GB and independent of N; NMI >= 0.95 against in-memory faiss
on all points and the same objective within 1%; wall time <= 1.5x in-memory faiss (reading
the Parquet included) on the same cores. Each repeat runs both paths with another k-means seed,
and the objectives are compared as means over the seeds: one initialisation's local optimum
moves faiss' own objective by about 1% (the spread is printed beside it).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

# no module-level import of common.py (it imports torch): a child driver's peak RSS must be
# raysup's, not torch's ~400 MB
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_features(folder: str, n: int, d: int, k: int, rows_per_file: int, seed: int = 0) -> None:
    """``n`` rows of ``d``-d features around ``k`` centres (row i's true cluster: :func:`truth`),
    in Parquet files of ``rows_per_file`` rows written one at a time (4 clips per video)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raysup.data.schema import vectors

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d), dtype=np.float32) * 0.15  # overlapping: noise 0.2 per dimension
    os.makedirs(folder, exist_ok=True)
    for f, start in enumerate(range(0, n, rows_per_file)):
        i = np.arange(start, min(n, start + rows_per_file))
        x = centres[truth(i, k)] + rng.standard_normal((len(i), d), dtype=np.float32) * 0.2
        table = pa.table({"video_id": pa.array([f"v{j:08d}" for j in i // 4]), "clip_index": pa.array((i % 4).astype(np.int32)), "video": vectors(x)})
        pq.write_table(table, os.path.join(folder, f"part-{f:05d}.parquet"))


def truth(i: np.ndarray, k: int) -> np.ndarray:
    return (i * 2654435761 % (2**32)) % k  # a fixed scramble of the row number


def peak_rss_mb() -> float:
    """This process's peak RSS: ``VmHWM`` (``ru_maxrss`` of a child started by fork and exec
    keeps the parent's RSS at the fork, here ~1 GB after writing the features)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def child_raysup(args: dict) -> dict:
    """The scalable path, as a driver joined to the running Ray."""
    import ray

    from raysup.cluster_features import Clustering, cluster_features
    from raysup.clustering import KMeansConfig

    ray.init(address=args["address"], log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    walls, stats = [], []
    for out in (args["out"], args["out"] + "-warm"):  # then again in the same driver, as XDC's later rounds run
        t = time.perf_counter()
        settings = KMeansConfig(args["k"], niter=args["niter"], cpus=args["cpus"])
        stats.append(cluster_features(args["features"], out, [Clustering("label", ("video",))], settings, seed=args["seed"]))
        walls.append(time.perf_counter() - t)
    return {"wall_s": walls[0], "warm_s": walls[1], "peak_rss_mb": peak_rss_mb(), "objective": stats[0]["label"]["objective"],
            "seconds": stats[0]["seconds"], "warm_seconds": stats[1]["seconds"]}


def child_faiss(args: dict) -> dict:
    """The in-memory baseline: every row read into this process, faiss k-means on all of them."""
    import pyarrow.parquet as pq

    from raysup.cluster_features import parquet_files
    from raysup.clustering import import_faiss, kmeans
    from raysup.data.schema import to_numpy

    import_faiss().omp_set_num_threads(int(args["cpus"]))
    t = time.perf_counter()
    table = pq.read_table(parquet_files(args["features"])).sort_by([("video_id", "ascending"), ("clip_index", "ascending")])
    x = to_numpy(table["video"])
    del table
    read = time.perf_counter() - t
    r = kmeans(x, args["k"], niter=args["niter"], seed=args["seed"])
    wall = time.perf_counter() - t
    np.save(args["out"], r.labels)
    return {"wall_s": wall, "read_s": read, "peak_rss_mb": peak_rss_mb(), "objective": r.objective / len(x)}


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / float(np.mean(values))


def child_sample_sizes(args: dict) -> list[dict]:
    """In memory, on the first N rows: k-means on a uniform sample of 256, 512 and 1024 rows per
    centroid (raysup samples 512), its objective over all N rows, vs. k-means on all
    of them; mean over the seeds."""
    import pyarrow.parquet as pq

    from raysup.cluster_features import parquet_files
    from raysup.clustering import import_faiss, kmeans, project
    from raysup.data.schema import to_numpy

    faiss = import_faiss()
    faiss.omp_set_num_threads(int(args["cpus"]))
    x = project(to_numpy(pq.read_table(parquet_files(args["features"]), columns=["video"])["video"]), None)
    k, seeds = args["k"], range(args["seeds"])
    full = np.mean([kmeans(x, k, niter=args["niter"], seed=s).objective / len(x) for s in seeds])
    rows = []
    for per in (256, 512, 1024):
        objective = []
        for s in seeds:
            sample = x[np.random.default_rng(s).choice(len(x), min(len(x), per * k), replace=False)]
            index = faiss.IndexFlatL2(x.shape[1])
            index.add(kmeans(sample, k, niter=args["niter"], seed=s).centroids)
            objective.append(float(index.search(x, 1)[0].mean()))
        gap = float(np.mean(objective)) / full - 1
        rows.append({"rows per centroid": per, "objective (mean over seeds)": float(np.mean(objective)), "k-means on all rows": float(full),
                     "gap": gap})
    return rows


def run_child(kind: str, args: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, json.dumps(args)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])})
    if out.returncode != 0:
        raise RuntimeError(f"{kind} child failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> list[dict]:
    import pyarrow.parquet as pq
    import ray

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import common

    from raysup.cluster_features import POINTS_PER_CENTROID, parquet_files
    from raysup.clustering import contingency, nmi

    p = common.parser(__doc__, repeats=3)
    p.add_argument("--n", type=int, nargs="+", help="rows (default 500000 1000000 2000000; --quick 10000)")
    p.add_argument("--d", type=int, help="dimensions (default 128; --quick 16)")
    p.add_argument("--k", type=int, help="clusters, as many as the data has (default 100; --quick 8)")
    p.add_argument("--niter", type=int, default=20, help="k-means iterations (XDC's default)")
    p.add_argument("--dir", help="folder for the Parquet files (default: a temporary one, removed at the end)")
    args = common.parse(p, argv)
    ns = args.n or ([10_000] if args.quick else [500_000, 1_000_000, 2_000_000])
    d, k = args.d or (16 if args.quick else 128), args.k or (8 if args.quick else 100)
    cores = os.cpu_count() or 1
    common.header("XDC k-means at scale: features Parquet → sample → Ray task → map_batches assignment, vs. in-memory faiss", args)
    print(f"features: N x {d} float32 around {k} centres, in Parquet files; k = {k}, {args.niter} iterations, "
          f"1 initialisation; raysup: a sample of {POINTS_PER_CENTROID} per centroid, k-means task with {cores} CPUs; in-memory faiss: all N points, "
          f"{cores} threads; each in its own driver process\n")
    root = args.dir or tempfile.mkdtemp(prefix="cluster-scale-")
    started = common.ray_start(args.address)
    rows = []
    try:
        t = time.perf_counter()
        full = os.path.join(root, "features")
        per_file = 5_000 if args.quick else 100_000
        if not os.path.exists(full):
            write_features(full, max(ns), d, k, per_file)
        print(f"wrote {max(ns)} rows of features in {time.perf_counter() - t:.1f} s", flush=True)
        files = sorted(os.listdir(full))
        address = ray.get_runtime_context().gcs_address
        for n in ns:
            folder = os.path.join(root, f"n{n}")
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            for f in files[: -(-n // per_file)]:
                os.link(os.path.join(full, f), os.path.join(folder, f))  # the first n rows (rounded up to whole files)
            n = sum(pq.ParquetFile(os.path.join(folder, f)).metadata.num_rows for f in os.listdir(folder))
            ours, base, agreement, recovered = [], [], [], []
            for seed in range(args.repeats):  # each repeat another k-means initialisation, for both paths
                job = {"features": folder, "k": k, "niter": args.niter, "seed": seed, "cpus": cores}
                for out in (f"labels{n}", f"labels{n}-warm"):
                    shutil.rmtree(os.path.join(root, out), ignore_errors=True)
                ours.append(run_child("raysup", {**job, "address": address, "out": os.path.join(root, f"labels{n}")}))
                base.append(run_child("faiss", {**job, "out": os.path.join(root, f"faiss{n}.npy")}))
                labels = pq.read_table(parquet_files(os.path.join(root, f"labels{n}")), columns=["video_id", "clip_index", "label"])
                labels = labels.sort_by([("video_id", "ascending"), ("clip_index", "ascending")])["label"].to_numpy()
                ref = np.load(os.path.join(root, f"faiss{n}.npy"))
                true = truth(np.arange(n), k)  # file order = key order: video v{i//4}, clip i%4
                agreement.append(nmi(contingency(labels, ref, (k, k))))
                recovered.append((nmi(contingency(labels, true, (k, k))), nmi(contingency(ref, true, (k, k)))))
            objective = {name: [r["objective"] for r in runs] for name, runs in (("raysup", ours), ("faiss", base))}
            objective_gap = common.ratio(np.mean(objective["raysup"]), np.mean(objective["faiss"])) - 1
            wall = {name: float(np.median([r["wall_s"] for r in runs])) for name, runs in (("raysup", ours), ("faiss", base))}
            warm = float(np.median([r["warm_s"] for r in ours]))
            time_ratio = common.ratio(wall["raysup"], wall["faiss"])
            rss = max(r["peak_rss_mb"] for r in ours)
            rows.append({
                "N": n, "raysup s (sample/train/assign)": f"{wall['raysup']:.3g} ({'/'.join(f'{v:.2g}' for v in ours[0]['seconds'].values())})",
                "again in that driver s (sample/train/assign)": f"{warm:.3g} ({'/'.join(f'{v:.2g}' for v in ours[0]['warm_seconds'].values())})",
                "driver peak RSS MB": rss, "goal < 1024 MB": common.goal(rss, 1024, False),
                "in-memory faiss s (read s)": f"{wall['faiss']:.3g} ({np.median([r['read_s'] for r in base]):.2g})",
                "its peak RSS MB": max(r["peak_rss_mb"] for r in base),
                "time ratio": time_ratio, "goal time": common.goal(time_ratio, 1.5, False),
                "NMI vs faiss": min(agreement), "goal NMI": common.goal(min(agreement), 0.95),
                "NMI vs truth (raysup / faiss)": f"{np.mean([r[0] for r in recovered]):.3f} / {np.mean([r[1] for r in recovered]):.3f}",
                "objective raysup / faiss (spread over seeds)": f"{np.mean(objective['raysup']):.4f} / {np.mean(objective['faiss']):.4f} "
                                                                 f"({spread(objective['raysup']):.2%} / {spread(objective['faiss']):.2%})",
                "objective gap": objective_gap, "goal objective": common.goal(abs(objective_gap), 0.01, False),
            })
            for out in (f"labels{n}", f"labels{n}-warm"):
                shutil.rmtree(os.path.join(root, out), ignore_errors=True)
            print(f"N={n} done; load average {common.load_average()}", flush=True)
        sizes = run_child("sample_sizes", {"features": os.path.join(root, f"n{min(ns)}"), "k": k, "niter": args.niter, "cpus": cores,
                                           "seeds": args.repeats})
    finally:
        common.ray_stop(started)
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\nPer N, over {args.repeats} k-means seeds (times: medians; NMI vs faiss: the lowest of the same-seed pairs; objective = mean "
          "squared distance of a row to its centroid, L2-normalised features, averaged over the seeds; gap = raysup / faiss - 1):")
    common.print_table(rows)
    print(f"\nThe sample's size (N = {min(ns)}, in memory, {args.repeats} seeds): centroids trained on a uniform sample of "
          "so many rows per centroid, their objective over all N rows vs. k-means on all of them (raysup's default: 512):")
    common.print_table(sizes)
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, job = sys.argv[2], json.loads(sys.argv[3])
        print(json.dumps({"raysup": child_raysup, "faiss": child_faiss, "sample_sizes": child_sample_sizes}[kind](job)))
    else:
        main()
