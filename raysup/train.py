"""The Ray Train worker loop (the only ``ray.train`` import) and ``fit``, which runs it.

One explicit loop for every method: stream the worker's shard of the clips, run
``method(batch)["loss"]``, step, and at every epoch end report metrics and a
checkpoint (model, optimiser, scheduler, scaler, config, epoch). A restarted
worker group and ``--resume`` both continue from the latest checkpoint.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from ray.train import UserCallback

from raysup import dist
from raysup.config import OptimConfig, TrainConfig, to_dict
from raysup.data.ingest import ClipCollate
from raysup.data.schema import TensorSpec
from raysup.data.storage import exists, join, resolve, uri_of, write_json

CHECKPOINT_FILE = "checkpoint.pt"


def make_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, epochs: int):
    """Per-epoch multiplier: linear warm-up, then constant, cosine to 0, or steps at milestones."""

    def factor(epoch: int) -> float:
        if epoch < cfg.warmup_epochs:
            return (epoch + 1) / (cfg.warmup_epochs + 1)
        if cfg.schedule == "cosine":
            span = max(1, epochs - cfg.warmup_epochs)
            return 0.5 * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))
        if cfg.schedule == "step":
            return cfg.gamma ** sum(epoch >= m * epochs for m in cfg.milestones)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def load_checkpoint_file(path: str) -> dict[str, Any]:
    """A checkpoint dict from a checkpoint directory or ``checkpoint.pt`` (local or URI); safe load."""
    if not path.endswith(".pt"):
        path = join(path, CHECKPOINT_FILE)
    fs, p = resolve(path)
    with fs.open_input_file(p) as f:
        return torch.load(f, map_location="cpu", weights_only=True)


def timed_batches(batches: Iterable, clock: dict[str, float]) -> Iterator:
    """``batches``, adding the seconds spent waiting for each one to ``clock["data_wait"]``."""
    it = iter(batches)
    while True:
        t = time.perf_counter()
        batch = next(it, None)
        clock["data_wait"] += time.perf_counter() - t
        if batch is None:
            return
        yield batch


def train_loop(loop_cfg: dict[str, Any]) -> None:
    """Ray Train worker function (``train_loop_per_worker``)."""
    import ray.train
    import ray.train.torch

    from raysup.methods import load_config, method_module

    cfg = load_config(loop_cfg["config"])
    specs = {k: TensorSpec.from_dict(v) for k, v in loop_cfg["specs"].items()}
    torch.manual_seed(cfg.seed)  # identical init on every worker
    method = method_module(cfg.method_name).build(cfg, specs)
    if loop_cfg.get("init_checkpoint"):
        method.load_pretrained(load_checkpoint_file(loop_cfg["init_checkpoint"])["model"])
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(method)  # to device; DDP when world size > 1
    optimizer = make_optimizer(cfg.optim, [p for p in method.parameters() if p.requires_grad])
    scheduler = make_scheduler(cfg.optim, optimizer, cfg.epochs)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    state = {"epoch": -1, "best_val": math.inf, "bad_epochs": 0}

    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            saved = load_checkpoint_file(d)
        method.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        state = saved["state"]

    torch.manual_seed(cfg.seed + 1000 * (state["epoch"] + 1) + dist.rank())  # per-worker augmentation
    collate = ClipCollate(specs)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if loop_cfg.get("has_val") else None
    iter_kw = dict(batch_size=cfg.batch_size, collate_fn=collate, device=device)
    for epoch in range(state["epoch"] + 1, cfg.epochs):
        method.train()
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        steps, clock, started = 0, {"data_wait": 0.0}, time.perf_counter()
        batches = train_shard.iter_torch_batches(**iter_kw, drop_last=True, local_shuffle_buffer_size=cfg.shuffle_batches * cfg.batch_size)
        for batch in timed_batches(batches, clock):
            with torch.autocast(device.type, enabled=use_amp):
                out = model(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            method.after_step()
            for k, v in out.items():
                sums[k] += v.detach().float()
            steps += 1
        if steps == 0:
            raise ValueError(f"batch_size: no full batch of {cfg.batch_size} clips on this worker; lower batch_size")
        metrics = {k: dist.all_reduce_mean(v / steps).item() for k, v in sorted(sums.items())}
        metrics.update(lr=optimizer.param_groups[0]["lr"], steps=steps)
        scheduler.step()
        if val_shard is not None:
            metrics["val_loss"] = evaluate_loss(model, method, val_shard, iter_kw, device, use_amp)
            if metrics["val_loss"] < state["best_val"]:
                state["best_val"], state["bad_epochs"] = metrics["val_loss"], 0
            else:
                state["bad_epochs"] += 1
        # this worker's epoch (training and validation) and its wait for training batches
        metrics.update(time_epoch_s=time.perf_counter() - started, time_data_wait_s=clock["data_wait"])
        state["epoch"] = epoch
        stop = cfg.patience > 0 and state["bad_epochs"] >= cfg.patience
        metrics.update(loop_cfg.get("extra_metrics") or {}, epoch=epoch, stopped_early=stop)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if ray.train.get_context().get_world_rank() == 0:
                torch.save(
                    {
                        "model": method.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "state": state,
                        "config": loop_cfg["config"],
                        "epoch": epoch,
                    },
                    os.path.join(tmp, CHECKPOINT_FILE),
                )
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
        if stop:
            break


@torch.no_grad()
def evaluate_loss(model, method, shard, iter_kw, device, use_amp) -> float:
    """Mean ``loss`` over a validation shard, averaged over workers."""
    method.eval()
    total, n = torch.zeros((), device=device), torch.zeros((), device=device)
    for batch in shard.iter_torch_batches(**iter_kw):
        with torch.autocast(device.type, enabled=use_amp):
            total += model(batch)["loss"].float() * len(next(iter(batch.values())))
        n += len(next(iter(batch.values())))
    method.train()
    return (dist.all_reduce_mean(total) / dist.all_reduce_mean(n).clamp_min(1)).item()


class MetricsLogger(UserCallback):
    """Runs in the Train controller: appends each report's rank-0 metrics to
    ``run_dir/metrics.jsonl`` and writes them to TensorBoard under ``run_dir/tensorboard``
    (numbers as scalars, lists of numbers as histograms; step = ``step_offset`` + epoch, so
    later rounds continue the curves)."""

    def __init__(self, run_dir: str, step_offset: int = 0):
        self.run_dir, self.step_offset, self.writer = run_dir, step_offset, None

    def after_report(self, run_context, metrics, checkpoint):
        from torch.utils.tensorboard import SummaryWriter

        m = dict(metrics[0], checkpoint=checkpoint.path if checkpoint else None)
        with open(os.path.join(self.run_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(m, default=str) + "\n")
        self.writer = self.writer or SummaryWriter(os.path.join(self.run_dir, "tensorboard"))
        step = self.step_offset + int(m.get("epoch", 0))
        for k, v in m.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(k, v, step)
            elif isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
                self.writer.add_histogram(k, np.asarray(v), step)  # e.g. cluster sizes
        self.writer.flush()


def fit(
    cfg: TrainConfig,
    datasets: dict[str, Any],
    run_dir: str,
    specs: dict[str, TensorSpec],
    *,
    name: str = "train",
    resume: bool = False,
    init_checkpoint: str | None = None,
    callbacks: list | None = None,
    step_offset: int = 0,
    extra_metrics: dict[str, float] | None = None,
):
    """Train ``cfg`` on ``datasets`` (``train`` and optional ``val``) with a TorchTrainer whose
    checkpoints live in ``run_dir/name``. ``extra_metrics`` (e.g. a clustering round's NMI) are
    added to every report. Returns the Ray Train ``Result``.

    Without ``resume`` an existing ``run_dir/name`` is an error, so nothing is overwritten.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    fs, root = resolve(run_dir)
    if exists(fs, f"{root}/{name}") and not resume:
        raise FileExistsError(f"{run_dir}/{name} already holds a run; pass --resume to continue it or use a new --out")
    fs.create_dir(root, recursive=True)
    write_json(fs, f"{root}/config.json", to_dict(cfg))
    scaling = ray.train.ScalingConfig(
        num_workers=cfg.workers,
        use_gpu=cfg.gpus_per_worker > 0,
        resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if cfg.gpus_per_worker else {})},
    )
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "config": to_dict(cfg),
            "specs": {k: v.to_dict() for k, v in specs.items()},
            "init_checkpoint": init_checkpoint,
            "has_val": "val" in datasets,
            "extra_metrics": extra_metrics,
        },
        scaling_config=scaling,
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=root,
            storage_filesystem=None if "://" not in run_dir else fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=(callbacks or []) + ([MetricsLogger(root, step_offset)] if "://" not in run_dir else []),
        ),
        datasets=datasets,
    )
    return trainer.fit()


def latest_checkpoint(run_dir: str) -> str:
    """Path of the newest checkpoint directory anywhere in ``run_dir`` (all rounds)."""
    import pyarrow.fs as pafs

    fs, root = resolve(run_dir)
    found = [
        f.path
        for f in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        if f.type == pafs.FileType.Directory and f.base_name.startswith("checkpoint_")
    ]
    if not found:
        raise FileNotFoundError(f"no checkpoint under {run_dir}; train first (`raysup train`)")
    return uri_of(run_dir, max(found, key=lambda p: os.path.basename(p)))
