"""Stage 2, ingest: samples/s and MB/s of prepared Parquet → torch batches inside a Ray Train
worker (``PreparedData.dataset`` → ``get_dataset_shard`` → ``iter_torch_batches`` with
``ClipCollate``, exactly as ``raysup.train.train_loop`` reads it) vs. the same Parquet read with
pyarrow into a plain ``torch.utils.data.DataLoader``.

    python experiments/bench/ingest.py            # ~1-2 min on 2 quiet cores
    python experiments/bench/ingest.py --quick    # seconds (the test suite runs this)

Both encodings of ``raysup prepare``: ``raw`` tensors, and ``jpeg`` cells decoded (with random
crops) in the Ray Data stream vs. in the DataLoader.

Goal: Ray Data ingest >= 0.9 x the plain DataLoader (the faster of 0 and 1 loader workers).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from raysup.config import TrainConfig  # noqa: E402
from raysup.data.ingest import ClipCollate, PreparedData  # noqa: E402
from raysup.data.schema import TensorSpec  # noqa: E402

BATCH = 32  # the tiny presets' batch size


def dataloader_epochs(files, specs, workers: int, epochs: int, layout: dict | None = None) -> list[tuple[float, float, int]]:
    """(epoch seconds, first-batch seconds, samples) per epoch of a plain DataLoader (decoding
    compressed cells in the loader when ``layout`` is given)."""
    ds = common.ParquetBatches(files, specs, BATCH, layout=layout)
    out = []
    for e in range(epochs):
        ds.epoch = e
        t = time.perf_counter()
        first, n = None, 0
        for batch in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers):
            first = first or time.perf_counter() - t
            n += len(batch["frames"])
        out.append((time.perf_counter() - t, first, n))
    return out


def report_json(obj: dict) -> None:
    """From a Ray Train worker: report ``obj`` as ``report.json`` in a checkpoint (Train V2
    results carry metrics only with a checkpoint)."""
    import json

    import ray.train

    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "report.json"), "w") as f:
            json.dump(obj, f)
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(d))


def read_report(result) -> dict:
    import json

    with result.checkpoint.as_directory() as d, open(os.path.join(d, "report.json")) as f:
        return json.load(f)


def ray_worker_loop(config: dict) -> None:
    """Ray Train worker: time epochs of the train shard as ``raysup.train.train_loop`` iterates
    it, with its local shuffle buffer (``TrainConfig.shuffle_batches`` batches) and without;
    report all timings once."""
    import ray.train
    import ray.train.torch

    specs = {k: TensorSpec.from_dict(v) for k, v in config["specs"].items()}
    shard = ray.train.get_dataset_shard("train")
    kw = dict(batch_size=config["batch_size"], collate_fn=ClipCollate(specs), device=ray.train.torch.get_device(), drop_last=True)
    timings = {"shuffle": [], "no_shuffle": []}
    for _ in range(config["epochs"]):
        for name, buffer in (("shuffle", TrainConfig.shuffle_batches * config["batch_size"]), ("no_shuffle", None)):
            t = time.perf_counter()
            first, n = None, 0
            for batch in shard.iter_torch_batches(**kw, local_shuffle_buffer_size=buffer):
                first = first or time.perf_counter() - t
                n += len(batch["frames"])
            timings[name].append((time.perf_counter() - t, first, n))
    report_json({"timings": timings})


def ray_epochs(data: PreparedData, epochs: int, storage: str) -> dict[str, list]:
    import ray.train
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        ray_worker_loop,
        train_loop_config={"specs": {k: v.to_dict() for k, v in data.specs.items()}, "batch_size": BATCH, "epochs": epochs},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="ingest", storage_path=storage),
        datasets={"train": data.dataset()},
    )
    return read_report(trainer.fit())["timings"]


def summarize(label: str, epochs: list[tuple[float, float, int]], sample_bytes: int) -> dict:
    secs = common.median([e[0] for e in epochs])
    n = epochs[0][2]
    steady = common.median([(e[2] - BATCH) / (e[0] - e[1]) for e in epochs])  # after the first batch
    return {"reader": label, "samples": n, "epoch s": secs, "first batch s": common.median([e[1] for e in epochs]),
            "samples/s": n / secs, "MB/s": n * sample_bytes / secs / 1e6, "steady samples/s": steady}


def main(argv: list[str] | None = None) -> list[dict]:
    p = common.parser(__doc__, repeats=5)
    args = common.parse(p, argv)
    common.header("Stage 2: ingest (Parquet → torch batches in a train worker)", args)
    started = common.ray_start(args.address)
    all_rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
            clips = 256 if args.quick else 4096
            for encoding in ("jpeg",) if args.quick else ("raw", "jpeg"):  # quick: the one that decodes
                data = PreparedData(common.write_prepared(os.path.join(tmp, encoding), clips, encoding=encoding))
                files = common.parquet_files(data.uri)
                sample_bytes = sum(s.nbytes for s in data.specs.values())  # decoded
                stored = os.path.getsize(files[0]) / 32 / 1e3
                layout = data.layout() if encoding == "jpeg" else None
                print(f"data ({encoding}): {clips} clips in {len(files)} Parquet files of 32 clips (as prepare writes them), decoded columns "
                      f"frames uint8 8x32x32x3 + audio fp16 40x99 + flow fp16 7x32x32x2 = {sample_bytes / 1e3:.1f} kB/clip, "
                      f"{stored:.1f} kB/clip stored; batch {BATCH}, drop_last"
                      + ("; jpeg cells decoded with random crops (raysup.data.codec) in the loader / the Ray Data stream" if layout else ""))
                rows = []
                for workers in (0, 1):
                    dataloader_epochs(files, data.specs, workers, 1, layout)  # warm the page cache and imports
                    rows.append(summarize(f"{encoding}: pyarrow → DataLoader(num_workers={workers})",
                                          dataloader_epochs(files, data.specs, workers, args.repeats, layout), sample_bytes))
                t = time.perf_counter()
                timings = ray_epochs(data, args.repeats + 1, os.path.join(tmp, f"runs-{encoding}"))  # +1: the first epoch starts the read tasks
                fit_s = time.perf_counter() - t
                rows.append(summarize(f"{encoding}: Ray Train worker, iter_torch_batches, local shuffle {TrainConfig.shuffle_batches} batches (as train.py)",
                                      timings["shuffle"][1:], sample_bytes))
                rows.append(summarize(f"{encoding}: Ray Train worker, iter_torch_batches, no local shuffle", timings["no_shuffle"][1:], sample_bytes))
                best = max(r["samples/s"] for r in rows[:2])
                for r in rows:
                    r["ratio"] = common.ratio(r["samples/s"], best)
                    if "Ray" in r["reader"]:
                        r["goal >= 0.9"] = common.goal(r["ratio"], 0.9)
                print(f"Medians over {args.repeats} epochs (Ray: after one warm-up epoch; the whole TorchTrainer.fit took {fit_s:.1f} s); "
                      "ratio = samples/s / the faster DataLoader of the same encoding:")
                common.print_table(rows)
                all_rows += rows
            print(f"load average now {common.load_average()}\n")
    finally:
        common.ray_stop(started)
    return all_rows


if __name__ == "__main__":
    main()
