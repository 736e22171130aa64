"""Stage 3, training step: a TorchTrainer run (``raysup.runner.train`` → ``raysup.train.fit``,
tiny preset) vs. a plain PyTorch loop with the same model, seed, batches, optimiser and loop body
(``common.plain_train_worker``: pyarrow → DataLoader, DDP over gloo for 2 workers), for 1 and 2
workers of one CPU (one torch thread) each.

Steady-state time per step = median epoch time (from the 2nd epoch on, epoch ends taken from
the Ray Train reports resp. the plain loop) / steps per epoch; the fixed cost = wall time of the
whole run - epochs x steady epoch time (process start, Ray Train controller and worker group,
dataset pipeline, teardown).

    python experiments/bench/train_step.py            # ~3 min on 2 quiet cores
    python experiments/bench/train_step.py --quick    # (the test suite runs this)

Goal: steady-state per-step overhead <= 2%.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time

import torch.multiprocessing as mp
from ray.train import UserCallback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from raysup import runner  # noqa: E402
from raysup.config import to_dict  # noqa: E402
from raysup.data.ingest import PreparedData  # noqa: E402
from raysup.data.labels import label_of, read_labels_csv  # noqa: E402
from raysup.methods import make_config, supervised  # noqa: E402


class EpochClock(UserCallback):
    """Runs in the Train controller: appends the wall time of every report (one per epoch) to a file."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context, metrics, checkpoint):
        with open(self.path, "a") as f:
            f.write(f"{time.time()}\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timing(start: float, ends: list[float], end: float, steps: int) -> dict:
    epochs = [b - a for a, b in zip(ends, ends[1:])]  # steady state: from the 2nd epoch on
    steady = common.median(epochs)
    wall = end - start
    return {"steps/epoch": steps, "epochs": len(ends), "steady epoch s": steady, "s/step": steady / steps,
            "fixed s": wall - len(ends) * steady, "wall s": wall}


def ray_run(cfg, data: PreparedData, labels: str, run_dir: str) -> dict:
    clock = os.path.join(run_dir, "epoch_ends.txt")
    os.makedirs(run_dir)
    start = time.time()
    metrics = runner.train(cfg, data, run_dir, labels=labels, callbacks=[EpochClock(clock)])
    end = time.time()
    ends = [float(x) for x in open(clock).read().split()]
    return timing(start, ends, end, int(metrics["steps"]))


def plain_run(cfg, data: PreparedData, labels: str, workdir: str) -> dict:
    job = {
        "config": to_dict(cfg), "specs": {k: v.to_dict() for k, v in data.specs.items()}, "files": common.parquet_files(data.uri),
        "columns": list(supervised.COLUMNS), "labels": label_of(read_labels_csv(labels)),
        "threads": int(cfg.cpus_per_worker), "niceness": common.RAY_WORKER_NICENESS, "out": os.path.join(workdir, "plain.json"),
    }
    start = time.time()
    mp.start_processes(common.plain_train_worker, args=(cfg.workers, free_port(), job), nprocs=cfg.workers, start_method="spawn")
    end = time.time()
    with open(job["out"]) as f:
        out = json.load(f)
    return timing(start, out["ends"], end, out["steps"])


def main(argv: list[str] | None = None) -> list[dict]:
    p = common.parser(__doc__, repeats=1)
    args = common.parse(p, argv)
    common.header("Stage 3: training step (TorchTrainer vs. plain PyTorch / DDP)", args)
    started = common.ray_start(args.address)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
            clips, epochs = (64, 2) if args.quick else (512, 4)  # quick: 2 steps
            data = PreparedData(common.write_prepared(os.path.join(tmp, "prepared"), clips, flow=False))
            labels = os.path.join(data.uri, "labels.csv")
            print(f"data: {clips} clips (frames uint8 8x32x32x3 + log-mel 40x99), supervised tiny preset (R(2+1)D-tiny + "
                  f"ResNet-audio-tiny, Adam), batch 32, {epochs} epochs; 1 CPU and 1 torch thread per worker; "
                  f"Train health check every {os.environ.get('RAY_TRAIN_HEALTH_CHECK_INTERVAL_S', '2')} s\n")
            for workers in (1,) if args.quick else (1, 2):  # quick: one worker (DDP runs in tests/methods/test_supervised.py)
                cfg = make_config("supervised", "tiny", {"workers": workers, "epochs": epochs, "batch_size": 32, "method.num_classes": 6})
                for rep in range(args.repeats):
                    plain = plain_run(cfg, data, labels, tmp)
                    ray_ = ray_run(cfg, data, labels, os.path.join(tmp, f"run-{workers}-{rep}"))
                    baseline = "plain loop" if workers == 1 else "torch DDP (gloo)"
                    rows.append({"workers": workers, "run": baseline, **plain})
                    overhead = common.ratio(ray_["s/step"], plain["s/step"]) - 1
                    rows.append({"workers": workers, "run": "TorchTrainer (raysup.train.fit)", **ray_,
                                 "step overhead": f"{100 * overhead:+.1f}%", "goal <= 2%": common.goal(100 * overhead, 2.0, higher_is_better=False),
                                 "extra fixed s": ray_["fixed s"] - plain["fixed s"]})
            print("Per-step time at steady state and fixed cost (medians over epochs 2..N; one run per row):")
            common.print_table(rows)
            print(f"load average now {common.load_average()}\n")
    finally:
        common.ray_stop(started)
    return rows


if __name__ == "__main__":
    main()
