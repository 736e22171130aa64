"""Shared helpers of the benchmark scripts: header, argument parser, timing, Ray start and tables.

Every script prints the machine, date and load average first, then a table of medians over
``--repeats`` runs with the ratio to its baseline measured in the same run. Scripts import this
module by path (``sys.path`` gets the script's folder), so ``python experiments/bench/x.py``
works from anywhere.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import pyarrow.parquet as pq
import torch
from tabulate import tabulate

from raysup.data.codec import decode_clips


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def header(title: str, args: argparse.Namespace) -> None:
    """Print the title, machine (cores, CPU model), date and load average (1/5/15 min)."""
    import ray
    import torch

    print(f"## {title}{' (--quick)' if args.quick else ''}")
    print(
        f"machine: {os.cpu_count()} cores, {cpu_model()}; date: {datetime.datetime.now():%Y-%m-%d %H:%M}; "
        f"load average (1/5/15 min): {load_average()}; repeats: {args.repeats}; "
        f"python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}"
    )


def parser(doc: str, repeats: int = 3) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (the test suite runs this)")
    p.add_argument("--repeats", type=int, default=None, help=f"runs per measurement, median reported (default {repeats}, 1 with --quick)")
    p.add_argument("--address", help="Ray cluster address (default: the running instance, else start a local one)")
    p.set_defaults(default_repeats=repeats)
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else args.default_repeats
    return args


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(wall seconds, result) of one call."""
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def ray_start(address: str | None = None) -> bool:
    """Use the running Ray instance (the test session's), connect to ``address``, or start a
    new local one as ``raysup.runtime.init_ray`` does (at least 6 logical CPUs, Train health checks
    every 0.5 s). Returns whether this call started it (then the caller shuts it down)."""
    import ray

    started = not ray.is_initialized()
    if started and address:
        ray.init(address=address)
    elif started:
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
        os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")  # busy shared machines
        ray.init(address="local", num_cpus=max(6, os.cpu_count() or 1), log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    return started


def ray_stop(started: bool) -> None:
    import ray

    if started:
        ray.shutdown()


def write_prepared(out: str, clips: int, *, clips_per_file: int = 32, flow: bool = True, classes: int = 6, seed: int = 0,
                   encoding: str = "raw") -> str:
    """A prepared folder as ``raysup prepare`` writes it (Parquet shards of ``clips_per_file``
    clips = 8 videos x 4 clips, manifest.json) with random tensors of the default
    PrepareConfig shapes, plus ``labels.csv`` (random labels, all in the train split).
    ``encoding="jpeg"``: frames and flow as prepare's compressed cells (raysup.data.codec) of
    smooth random images (noise would not compress as footage does). Writing it directly takes
    seconds instead of decoding videos. Returns ``out``."""
    import cv2
    import numpy as np
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from raysup.data import codec
    from raysup.data.prepare import PrepareConfig, outcome_table, write_metadata
    from raysup.data.schema import DATA_DIR, arrow_schema

    cfg = PrepareConfig(flow="farneback" if flow else "none", encoding=encoding)
    specs = cfg.tensor_specs()
    schema = arrow_schema(specs, encoding)
    rng = np.random.default_rng(seed)

    def smooth(shape: tuple[int, ...]) -> np.ndarray:  # [..., H, W, C] from 8x8 noise, bicubic
        *lead, h, w, c = shape
        low = rng.random((int(np.prod(lead)), 8, 8, c), dtype=np.float32)
        return np.stack([cv2.resize(x, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, c) for x in low]).reshape(shape)

    def cells(name: str, spec, n: int) -> pa.Array:
        if encoding == "jpeg" and name == "frames":
            return pa.array([codec.encode_frames((smooth(spec.shape) * 255).clip(0, 255).astype(np.uint8), cfg.jpeg_quality) for _ in range(n)], schema.field(name).type)
        if encoding == "jpeg" and name == "flow":
            return pa.array([codec.encode_flow((smooth(spec.shape) - 0.5) * 8, cfg.flow_range) for _ in range(n)], schema.field(name).type)  # ±4 px
        if name == "frames":
            values = rng.integers(0, 256, (n, *spec.shape), dtype=np.uint8)
        else:
            values = rng.standard_normal((n, *spec.shape), dtype=np.float32).astype(spec.dtype)
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(spec.nbytes), n, [None, pa.py_buffer(values.tobytes())])

    os.makedirs(os.path.join(out, DATA_DIR), exist_ok=True)
    ids = [f"c{i // 4 % classes}/v{i // 4:05d}" for i in range(clips)]  # 4 clips per video
    shards = []
    for f, start in enumerate(range(0, clips, clips_per_file)):
        n = min(clips_per_file, clips - start)
        cols = {
            "video_id": pa.array(ids[start : start + n], pa.string()),
            "clip_index": pa.array(np.arange(start, start + n, dtype=np.int32) % 4),
            "start_s": pa.array((np.arange(start, start + n) % 4).astype(np.float32)),
            "motion": pa.array(rng.random(n, dtype=np.float32)),
        }
        for name, spec in specs.items():
            cols[name] = cells(name, spec, n)
        shards.append(f"{DATA_DIR}/part-{f:05d}.parquet")
        pq.write_table(pa.table({field.name: cols[field.name] for field in schema}, schema=schema), os.path.join(out, shards[-1]))
    clips_of = Counter(ids)
    outcomes = [{"video_id": v, "path": v, "status": "ok", "reason": "", "clips": n, "has_audio": True} for v, n in sorted(clips_of.items())]
    write_metadata(pafs.LocalFileSystem(), out, "random", cfg, outcome_table(outcomes), {s: os.path.getsize(os.path.join(out, s)) for s in shards})
    with open(os.path.join(out, "labels.csv"), "w") as f:
        f.write("video_id,label,split\n" + "".join(f"{v},class{v[1:v.index('/')]},train\n" for v in sorted(clips_of)))
    return out


class ParquetBatches(torch.utils.data.IterableDataset):
    """What a user writes without Ray: Parquet files (shuffled order per epoch, split across
    loader workers) → batches of tensors; fixed-size-binary tensor columns via np.frombuffer
    (compressed cells decoded first when ``layout`` is given).
    With ``labels`` (video_id → int) a ``label`` column is added, as the supervised method's join does."""

    def __init__(self, files: list[str], specs: dict, batch_size: int, *, columns: list[str] | None = None,
                 labels: dict[str, int] | None = None, seed: int = 0, layout: dict | None = None):
        self.files, self.specs, self.batch_size, self.columns = files, specs, batch_size, columns
        self.labels, self.seed, self.epoch = labels, seed, 0
        self.layout = layout  # compressed cells: decoded (random crops) in the loader, as raysup.data.codec does in the stream

    def __iter__(self):
        files = list(self.files)
        random.Random(self.seed + self.epoch).shuffle(files)
        info = torch.utils.data.get_worker_info()
        if info is not None:
            files = files[info.id :: info.num_workers]
        for path in files:
            table = pq.read_table(path, columns=self.columns)
            for start in range(0, table.num_rows - self.batch_size + 1, self.batch_size):  # drop_last
                batch = table.slice(start, self.batch_size)
                yield self.to_tensors(batch if self.layout is None else decode_clips(batch, layout=self.layout, crop="random"))

    def to_tensors(self, table) -> dict[str, torch.Tensor]:
        out = {}
        for name in table.column_names:
            col = table.column(name).combine_chunks()
            if name in self.specs:
                spec = self.specs[name]
                flat = np.frombuffer(col.buffers()[1], np.uint8, count=len(col) * spec.nbytes, offset=col.offset * spec.nbytes)
                out[name] = torch.from_numpy(flat.view(spec.dtype).reshape(len(col), *spec.shape).copy())
                out[f"{name}_valid"] = torch.from_numpy(col.is_valid().to_numpy(zero_copy_only=False))
            elif name == "video_id":
                if self.labels is not None:
                    out["label"] = torch.tensor([self.labels[v] for v in col.to_pylist()])
            else:
                out[name] = torch.from_numpy(col.to_numpy().copy())
        return out


def parquet_files(prepared: str) -> list[str]:
    data = os.path.join(prepared, "data")
    return sorted(os.path.join(data, f) for f in os.listdir(data) if f.endswith(".parquet"))


RAY_WORKER_NICENESS = 15  # Ray starts its worker processes at this niceness (RAY_worker_niceness)


@contextlib.contextmanager
def ray_worker_niceness():
    """Run a no-Ray baseline in this thread at the niceness of Ray's workers, so that other
    processes on a busy machine slow both alike (no effect on an idle machine). Lowering it
    again needs root; without root the baseline runs at the current niceness."""
    old = os.getpriority(os.PRIO_PROCESS, 0)
    can_restore = os.geteuid() == 0
    if can_restore:
        os.setpriority(os.PRIO_PROCESS, 0, max(old, RAY_WORKER_NICENESS))
    try:
        yield
    finally:
        if can_restore:
            os.setpriority(os.PRIO_PROCESS, 0, old)


class CpuMeter:
    """CPU seconds used by this process plus the local Ray node (the raylet and every process
    under it: workers, agents) between ``start()`` and ``stop()``; divided by wall time it says
    how many cores a run kept busy. Reads nothing (returns nan) when no local raylet is found."""

    def __init__(self):
        import psutil
        import ray

        socks = {n["RayletSocketName"] for n in ray.nodes() if n["Alive"]}
        self.raylet = next(
            (p for p in psutil.process_iter(["cmdline"]) if any(s in c for s in socks for c in p.info["cmdline"] or [])), None
        )
        self.me = psutil.Process()

    def _snapshot(self) -> dict[int, float]:
        import psutil

        procs = [self.me] + ([self.raylet] + self.raylet.children(recursive=True) if self.raylet else [])
        out = {}
        for p in procs:
            try:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.Error:  # exited meanwhile
                pass
        return out

    def start(self) -> None:
        self.before, self.t = self._snapshot(), time.perf_counter()

    def stop(self) -> tuple[float, float]:
        """(CPU seconds, cores kept busy on average)."""
        after, wall = self._snapshot(), time.perf_counter() - self.t
        cpu = sum(v - self.before.get(pid, 0.0) for pid, v in after.items())
        return (cpu, cpu / wall) if self.raylet else (float("nan"), float("nan"))


def print_table(rows: list[dict], floatfmt: str = ".3g") -> None:
    print(tabulate(rows, headers="keys", tablefmt="github", floatfmt=floatfmt))
    print()


def ratio(x: float, baseline: float) -> float:
    return x / baseline if baseline > 0 else float("nan")


def goal(value: float, target: float, higher_is_better: bool = True) -> str:
    met = value >= target if higher_is_better else value <= target
    return f"{'met' if met else 'MISSED'} ({value:.3g} {'>=' if higher_is_better else '<='} {target:.3g})"


def plain_train_worker(rank: int, world: int, port: int, job: dict) -> None:
    """The hand-written baseline of ``raysup.train.train_loop`` (a ``torch.multiprocessing``
    target): same model, seed, optimiser and loop body; batches from :class:`ParquetBatches`
    through a DataLoader with one loader process; DDP over gloo when ``world`` > 1; one
    checkpoint per epoch like the Ray loop. Rank 0 writes the wall time at each epoch end to
    ``job["out"]``."""
    import json
    import tempfile
    from collections import defaultdict

    import torch.distributed as dist

    from raysup.data.schema import TensorSpec
    from raysup.methods import load_config, method_module
    from raysup.train import make_optimizer, make_scheduler

    os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), job["niceness"]))  # as a Ray worker
    torch.set_num_threads(job["threads"])
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cfg = load_config(job["config"])
    specs = {k: TensorSpec.from_dict(v) for k, v in job["specs"].items()}
    torch.manual_seed(cfg.seed)
    method = method_module(cfg.method_name).build(cfg, specs)
    model = torch.nn.parallel.DistributedDataParallel(method) if world > 1 else method
    optimizer = make_optimizer(cfg.optim, method)
    # stepped per step as in raysup's loop; its length does not change the step cost measured here
    scheduler = make_scheduler(cfg.optim, optimizer, steps_per_epoch=1000, epochs=cfg.epochs)
    data = ParquetBatches(job["files"][rank::world], specs, cfg.batch_size, columns=job["columns"], labels=job["labels"], seed=cfg.seed)
    ends = []
    with tempfile.TemporaryDirectory() as ckpt_dir:
        for epoch in range(cfg.epochs):
            data.epoch = epoch
            method.train()
            sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros(()))
            steps = 0
            # fork, as in a user's main process (this one was spawned, and a spawned loader
            # process would re-import torch every epoch)
            for batch in torch.utils.data.DataLoader(data, batch_size=None, num_workers=1, multiprocessing_context="fork"):
                out = model(batch)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                optimizer.step()
                scheduler.step()
                method.after_step(epoch * 1000 + steps + 1, 1000 * cfg.epochs)  # as the scheduler above: a nominal length
                for k, v in out.items():
                    sums[k] += v.detach().float()
                steps += 1
            metrics = {}
            for k, v in sorted(sums.items()):
                v = v / steps
                if world > 1:
                    dist.all_reduce(v)
                    v = v / world
                metrics[k] = v.item()
            if rank == 0:
                torch.save({"model": method.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, os.path.join(ckpt_dir, "checkpoint.pt"))
            ends.append(time.time())
    if rank == 0:
        with open(job["out"], "w") as f:
            json.dump({"ends": ends, "steps": steps}, f)
    if world > 1:
        dist.destroy_process_group()
