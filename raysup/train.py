"""The Ray Train worker loop (the only ``ray.train`` import) and ``fit``, which runs it.

One explicit loop for every method: stream the worker's shard of the clips, run
``method(batch)["loss"]``, step, and at every epoch end (and every ``checkpoint_every_steps``
steps) report metrics and a checkpoint (model, optimiser, scheduler, scaler, config, epoch and
the data position). A restarted worker group and ``--resume`` both continue from the latest
checkpoint, mid-epoch where it was taken mid-epoch. On CUDA, batches arrive prefetched in
pinned memory and the loop never waits for the GPU within a stretch of
:data:`FINITE_CHECK_STEPS` steps.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray.train import TrainingFailedError, UserCallback

from raysup import dist
from raysup.checkpoint import CHECKPOINT_FILE, checkpoint_dirs, load_checkpoint_file, remove_broken
from raysup.config import Build, ConfigError, OptimConfig, TrainConfig, to_dict
from raysup.data.device_decode import DeviceDecode
from raysup.data.ingest import ClipCollate
from raysup.data.labels import read_labels_csv
from raysup.data.schema import TensorSpec
from raysup.data.storage import exists, read_json, redact, resolve, write_json
from raysup.progress import following, train_ticks

RESUMABLE_FIELDS = ("epochs", "max_steps", "max_failures", "cpus_per_worker", "gpus_per_worker", "checkpoint_every_steps", "decode_on")  # may change on --resume
FINITE_CHECK_STEPS = 50  # steps between the checks for a non-finite loss (each waits for the device)
PREFETCH_BATCHES = 2  # batches Ray Data prepares (collated, pinned on CUDA) ahead of the step
ERROR_KEY = "raysup_error"  # a report that carries the one-line error every worker agreed to stop on


class NonFiniteLoss(ArithmeticError):
    """A loss or metric became NaN or infinite; the run stops and keeps its last good checkpoint."""


ERROR_TYPES = {e.__name__: e for e in (ConfigError, NonFiniteLoss)}  # what a report's ``raysup_error_type`` may name


def make_optimizer(cfg: OptimConfig, model: torch.nn.Module, global_batch: int = 1) -> torch.optim.Optimizer:
    """SGD/Adam/AdamW over the trainable parameters at ``cfg.scaled_lr(global_batch)``;
    normalisation weights and biases (every parameter of fewer than 2 dims) get no weight decay
    unless ``cfg.decay_norm_and_bias`` ("no bias decay", He et al. 2019, Bag of Tricks, §3.1)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1 or cfg.decay_norm_and_bias]
    no_decay = [p for p in params if not (p.ndim > 1 or cfg.decay_norm_and_bias)]
    groups = [{"params": decay}] + ([{"params": no_decay, "weight_decay": 0.0}] if no_decay else [])
    lr = cfg.scaled_lr(global_batch)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: OptimConfig, step: int, steps_per_epoch: int, epochs: int) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (counted from 0 over the whole run):
    linear warm-up over ``warmup_epochs`` (from ``warmup_from``), then constant, cosine to 0, or
    ×``gamma`` at each milestone (fractions of the run), all per step."""
    total, warmup = steps_per_epoch * epochs, cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return cfg.warmup_from + (1 - cfg.warmup_from) * (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return cfg.gamma ** sum(step >= m * total for m in cfg.milestones)
    return 1.0


def make_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int):
    """A scheduler stepped after every optimiser step (see :func:`lr_factor`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch, epochs))


def set_optim(cfg: OptimConfig, optimizer: torch.optim.Optimizer, scheduler, global_batch: int) -> None:
    """Put ``cfg``'s lr, weight decay and momentum into an optimiser and scheduler whose state was
    loaded from a checkpoint (which brought the old ones back): the lr at the scheduler's step is
    the new base lr × :func:`lr_factor`, the no-decay group keeps 0. After a plain resume the
    config is the checkpoint's, so nothing changes; after a PBT exploit these are the perturbed
    values (the moments and step counts stay the donor's)."""
    lr = cfg.scaled_lr(global_batch)
    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
    for group in optimizer.param_groups:
        group["initial_lr"], group["lr"] = lr, lr * scheduler.lr_lambdas[0](scheduler.last_epoch)
        if "momentum" in group and cfg.name == "sgd":
            group["momentum"] = cfg.momentum
    optimizer.param_groups[0]["weight_decay"] = cfg.weight_decay  # the decayed group (make_optimizer's first)


def config_changes(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted field: (saved, new)}`` for every field that differs between two config dicts."""
    out = {}
    for key in sorted(set(saved) | set(new)):
        a, b = saved.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update({f"{key}.{k}": v for k, v in config_changes(a, b).items()})
        elif a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
            out[key] = (a, b)
    return out


def record_config(fs, root: str, cfg: TrainConfig, *, trained: bool, may_change: tuple[str, ...] = ()) -> None:
    """Write ``config.json`` of a new run; for a continued run, refuse changed fields other than
    :data:`RESUMABLE_FIELDS` and ``may_change`` (a PBT trial's perturbed keys; naming them) and
    append the allowed changes to ``resumes.jsonl``.
    A ``config.json`` of a run that never ``trained`` (no checkpoint: it stopped before its
    first epoch ended) is replaced, saying so."""
    new = to_dict(cfg)
    if exists(fs, f"{root}/config.json"):
        changes = config_changes(read_json(fs, f"{root}/config.json"), new)
        fixed = {k: v for k, v in changes.items() if k not in RESUMABLE_FIELDS + tuple(may_change)}
        if fixed and not trained:
            print(f"train: {root}/config.json is of a run that stopped before its first checkpoint; starting anew with these settings", file=sys.stderr)
        elif fixed:
            diff = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in fixed.items())
            raise ConfigError(f"resume: the run was made with other settings ({diff}); only {', '.join(RESUMABLE_FIELDS)} may change on --resume")
        elif changes:
            append_line(fs, f"{root}/resumes.jsonl", {"time": time.time(), "changed": {k: list(v) for k, v in changes.items()}})
    write_json(fs, f"{root}/config.json", new)


def start_run(run_dir: str, cfg: TrainConfig, name: str, resume: bool, may_change: tuple[str, ...] = ()):
    """(filesystem, root) of ``run_dir`` once ``fit`` may train ``name`` there: without
    ``resume`` a checkpoint of ``name`` is a FileExistsError (nothing is overwritten); the
    config is recorded (:func:`record_config`, ``may_change`` passed on). Checkpoints an
    interrupted write left incomplete are removed first."""
    fs, root = resolve(run_dir)
    remove_broken(fs, f"{root}/{name}")
    if checkpoint_dirs(fs, f"{root}/{name}") and not resume:
        raise FileExistsError(f"{redact(run_dir)}/{name} already holds a run; pass --resume to continue it or use a new --out")
    fs.create_dir(root, recursive=True)
    record_config(fs, root, cfg, trained=bool(checkpoint_dirs(fs, root)), may_change=may_change)
    return fs, root


def data_identity(data, labels: str | None) -> dict[str, Any]:
    """What a run trains on, recorded in ``data.json`` beside ``config.json``: the prepared data
    (``data``, a PreparedData: where, its manifest's hash and clip count) and the labels CSV
    (where, and a hash of its rows: ids, labels and splits)."""
    rows = sorted((r.video_id, r.label, r.split) for r in read_labels_csv(labels)) if labels else None
    return {
        "data": redact(data.uri),
        "manifest_sha256": _sha256(data.manifest),
        "clips": data.manifest["counts"]["clips"],
        "labels": redact(labels) if labels else None,
        "labels_sha256": _sha256(rows) if rows is not None else None,
    }


def _sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def record_data(run_dir: str, identity: dict[str, Any], *, resume: bool) -> None:
    """Write ``run_dir/data.json`` (:func:`data_identity`). Resuming a run that trained on other
    data is refused, naming what changed; files that moved are noted in ``resumes.jsonl``.
    Without ``resume`` a trained run's record is kept (the run itself refuses to start over it)."""
    fs, root = resolve(run_dir)
    path = f"{root}/data.json"
    trained = bool(checkpoint_dirs(fs, root))
    if trained and not resume:
        return
    if trained and exists(fs, path):
        changes = config_changes(read_json(fs, path), identity)
        fixed = {k: v for k, v in changes.items() if k not in ("data", "labels")}
        if fixed:
            diff = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in fixed.items())
            raise ConfigError(f"resume: the run was trained on other data ({diff}); resume it with its own --data and --labels, or use a new --out")
        if changes:
            append_line(fs, f"{root}/resumes.jsonl", {"time": time.time(), "changed": {k: list(v) for k, v in changes.items()}})
    fs.create_dir(root, recursive=True)
    write_json(fs, path, identity)


def check_resumable(run_dir: str) -> None:
    """``--resume``: refuse a folder that holds no run (no ``config.json``); say so when the run
    stopped before its first checkpoint (it starts from the beginning)."""
    fs, root = resolve(run_dir)
    if not exists(fs, f"{root}/config.json"):
        raise FileNotFoundError(f"--resume: {redact(run_dir)} holds no run to resume (no config.json); drop --resume to start one")
    if not checkpoint_dirs(fs, root):
        print(f"--resume: {redact(run_dir)} has no checkpoint (its run stopped before the end of its first epoch); starting it from the beginning", file=sys.stderr)


def read_lines(fs, path: str) -> list[dict]:
    """The JSON lines of ``path`` (none if it does not exist). A last line cut short (a crash
    while it was written) is left out with a note on stderr; a broken line before it is a
    ValueError naming the file and line."""
    if not exists(fs, path):
        return []
    with fs.open_input_stream(path) as f:
        text = f.read().decode(errors="replace")
    lines = text.splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            if n < len(lines) or text.endswith("\n"):
                raise ValueError(f"{path}:{n}: not a JSON line ({line[:80]!r})") from None
            print(f"train: {path}:{n}: leaving out a line cut short ({line[:80]!r})", file=sys.stderr)
    return out


def append_line(fs, path: str, obj: dict) -> None:
    """Append one JSON line to ``path``: the file is rewritten under a temporary name, then moved
    over the old one (object stores cannot append; a crash leaves the old or the new file, never
    part of one). A last line cut short by an earlier crash is dropped."""
    line = (json.dumps(obj, default=str) + "\n").encode()
    old = b""
    if exists(fs, path):
        with fs.open_input_stream(path) as f:
            old = f.read()
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(old[: old.rfind(b"\n") + 1] + line)
    fs.move(tmp, path)


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
    """Ray Train worker function (``train_loop_per_worker``). An error the user must fix (a
    :class:`ConfigError` or :class:`NonFiniteLoss`, which every worker meets at the same step)
    is reported as ``{ERROR_KEY: message, ERROR_KEY_type: its class}`` and ends the run without the retries that
    ``max_failures`` grants to crashes."""
    import ray.train

    try:
        _train(loop_cfg)
    except (ConfigError, NonFiniteLoss) as e:
        ray.train.report({ERROR_KEY: str(e), f"{ERROR_KEY}_type": type(e).__name__})


def _train(loop_cfg: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    cfg: TrainConfig = loop_cfg["config"]
    specs: dict[str, TensorSpec] = loop_cfg["specs"]
    steps_per_epoch: int = loop_cfg["steps_per_epoch"]
    torch.manual_seed(cfg.seed)  # identical init on every worker
    method = loop_cfg["build"](cfg, specs)
    if loop_cfg.get("init_checkpoint"):
        load_weights(method, loop_cfg["init_checkpoint"], pretrained=True)
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(method)  # to device; DDP when world size > 1
    optimizer = make_optimizer(cfg.optim, method, global_batch=cfg.workers * cfg.batch_size)
    scheduler = make_scheduler(cfg.optim, optimizer, steps_per_epoch, cfg.epochs)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    # step: optimiser steps so far; epoch: the last finished one; epoch_step: steps already
    # taken in the epoch after it (a checkpoint taken mid-epoch)
    state = {"epoch": -1, "step": 0, "epoch_step": 0, "best_val": math.inf, "bad_epochs": 0}

    ckpt = ray.train.get_checkpoint()
    segment: Segment = loop_cfg.get("segment") or Segment()
    if ckpt is not None or segment.restore:  # this fit's own latest, else the segment's start (a PBT trial's)
        if ckpt is not None:
            with ckpt.as_directory() as d:
                saved = load_weights(method, d)
        else:
            saved = load_weights(method, segment.restore)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        set_optim(cfg.optim, optimizer, scheduler, cfg.workers * cfg.batch_size)
        state = {"step": scheduler.last_epoch, "epoch_step": 0, **saved["state"]}  # LambdaLR counts the steps too

    # per-worker augmentation, other after a mid-epoch resume than at the epoch's start
    torch.manual_seed(cfg.seed + 1000 * (state["epoch"] + 1) + dist.rank() + 1_000_003 * state["epoch_step"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: time the convolution algorithms once
    decoder: DeviceDecode | None = loop_cfg.get("decoder")  # decode_on "device": the JPEG cells are decoded here, before each step
    collate = decoder.collate(specs, pin=device.type == "cuda") if decoder else ClipCollate(specs)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val") if loop_cfg.get("has_val") else None
    iter_kw = dict(batch_size=cfg.batch_size, collate_fn=collate, device=device, prefetch_batches=PREFETCH_BATCHES, pin_memory=device.type == "cuda")
    params = [p for p in method.parameters() if p.requires_grad]
    step_limit = cfg.max_steps or math.inf
    total_steps = min(steps_per_epoch * cfg.epochs, step_limit)
    every = cfg.checkpoint_every_steps or math.inf
    for epoch in range(state["epoch"] + 1, min(cfg.epochs, segment.until_epoch or cfg.epochs)):
        if state["step"] >= step_limit:
            break  # resumed a run that already took its max_steps
        method.train()
        sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        steps, clock, started = 0, {"data_wait": 0.0}, time.perf_counter()
        # resumed mid-epoch: only the epoch's remaining steps (from a fresh pass: its draws are random anyway)
        done = state["epoch_step"]
        epoch_steps = steps_per_epoch - done if done else math.inf
        finite = FiniteCheck(epoch, done)
        batches = train_shard.iter_torch_batches(**iter_kw, drop_last=True, local_shuffle_buffer_size=cfg.shuffle_batches * cfg.batch_size)
        if decoder:  # the decoding counts as waiting for data
            batches = (decoder.decode(b, "random", device) for b in batches)
        tick = train_ticks(loop_cfg.get("progress"), epoch, cfg.epochs, steps_per_epoch)  # the driver's progress line
        for batch in timed_batches(batches, clock):
            with torch.autocast(device.type, enabled=use_amp):
                out = model(batch)
            finite.add(out)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out["loss"]).backward()
            if cfg.optim.clip_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            state["step"] += 1
            method.after_step(state["step"], total_steps)
            for k, v in out.items():
                sums[k] += v.detach().float()
            steps += 1
            tick(done + steps)
            if state["step"] >= step_limit or steps >= epoch_steps:
                break
            if (done + steps) % FINITE_CHECK_STEPS == 0:
                finite.check(done + steps)
            if state["step"] % every == 0 and done + steps < steps_per_epoch:  # mid-epoch: the epoch's end reports anyway
                finite.check(done + steps)
                metrics = {k: dist.all_reduce_mean(v / steps).item() for k, v in sorted(sums.items())}
                position = {**state, "epoch_step": done + steps}
                metrics.update(lr=optimizer.param_groups[0]["lr"], epoch=epoch, epoch_step=done + steps, total_steps=state["step"])
                report(metrics, position, method, optimizer, scheduler, scaler, cfg, epoch)
        finite.check(done + steps)
        method.on_epoch_end(epoch)
        if steps == 0:
            raise ConfigError(f"batch_size: no full batch of {cfg.batch_size} clips on this worker; lower batch_size")
        metrics = {k: dist.all_reduce_mean(v / steps).item() for k, v in sorted(sums.items())}
        metrics.update(lr=optimizer.param_groups[0]["lr"], steps=steps, total_steps=state["step"])
        # max_steps ended the epoch early: the checkpoint's position is inside it, where a resume continues
        unfinished = state["step"] >= step_limit and done + steps < steps_per_epoch
        if val_shard is not None:
            metrics["val_loss"] = evaluate_loss(model, method, val_shard, iter_kw, device, use_amp, decoder)
            if metrics["val_loss"] < state["best_val"]:
                state["best_val"], state["bad_epochs"] = metrics["val_loss"], 0
            elif not unfinished:
                state["bad_epochs"] += 1
        # this worker's epoch (training and validation) and its wait for training batches
        metrics.update(time_epoch_s=time.perf_counter() - started, time_data_wait_s=clock["data_wait"])
        state["epoch"], state["epoch_step"] = (epoch - 1, done + steps) if unfinished else (epoch, 0)
        stop = (cfg.patience > 0 and state["bad_epochs"] >= cfg.patience) or state["step"] >= step_limit
        metrics.update(loop_cfg.get("extra_metrics") or {}, epoch=epoch, stopped_early=stop)
        report(metrics, state, method, optimizer, scheduler, scaler, cfg, epoch)
        if stop:
            break


def report(metrics: dict[str, Any], state: dict[str, Any], method, optimizer, scheduler, scaler, cfg: TrainConfig, epoch: int) -> None:
    """``ray.train.report`` of ``metrics`` with a checkpoint written by rank 0: model, optimiser,
    scheduler, scaler, ``state`` (the data position: ``epoch`` finished, ``epoch_step`` steps of
    the next), config and ``epoch`` (the one in progress or just finished)."""
    import ray.train

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
                    "config": to_dict(cfg),
                    "epoch": epoch,
                },
                os.path.join(tmp, CHECKPOINT_FILE),
            )
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


class FiniteCheck:
    """Whether a step's outputs (loss and metrics) stayed finite, tracked on the device without
    waiting for it: :meth:`add` per step, :meth:`check` every few steps (one sync) raises
    :class:`NonFiniteLoss` naming the metric, the epoch and the steps since the last check (on
    any worker: the verdict is shared, so all stop together, before the next checkpoint)."""

    def __init__(self, epoch: int, step: int):
        self.epoch, self.since = epoch, step  # steps of the epoch counted from 0
        self.bad: dict[str, torch.Tensor] = {}

    def add(self, out: dict[str, torch.Tensor]) -> None:
        for k, v in out.items():
            bad = ~torch.isfinite(v.detach().float().reshape(()))
            self.bad[k] = self.bad[k] | bad if k in self.bad else bad

    def check(self, step: int) -> None:
        """After ``step`` steps of the epoch: raise if any output since the last check was not finite."""
        if not self.bad:
            return
        mine = torch.stack(list(self.bad.values()))  # [M] bool, this worker's
        shared = dist.all_reduce_mean(mine.float())  # [M] any worker's (waits for the device)
        names = [k for k, b in zip(self.bad, mine.tolist()) if b] or ["(on another worker)"]
        span = f"step {self.since}" if step - 1 <= self.since else f"steps {self.since}-{step - 1}"
        self.bad, self.since = {}, step
        if shared.sum().item() > 0:
            raise NonFiniteLoss(f"{names[0]} is not finite at epoch {self.epoch}, {span}; the run stopped at its last good checkpoint (lower optim.lr or set optim.clip_grad_norm)")


def load_weights(method: torch.nn.Module, checkpoint: str, *, pretrained: bool = False) -> dict[str, Any]:
    """Load a checkpoint's model weights into ``method`` (``load_pretrained`` when ``pretrained``:
    e.g. XDC's next round) and return the checkpoint; a checkpoint of another architecture is
    a :class:`ConfigError` naming it."""
    saved = load_checkpoint_file(checkpoint)
    try:
        (method.load_pretrained if pretrained else method.load_state_dict)(saved["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"checkpoint: {redact(checkpoint)} does not fit this model ({first})") from None
    return saved


@torch.no_grad()
def evaluate_loss(model, method, shard, iter_kw, device, use_amp, decoder: DeviceDecode | None = None) -> float:
    """Mean ``loss`` over a validation shard, averaged over workers (its JPEG cells decoded
    here, centre crops, with a ``decoder``)."""
    method.eval()
    total, n = torch.zeros((), device=device), torch.zeros((), device=device)
    for batch in shard.iter_torch_batches(**iter_kw):
        batch = decoder.decode(batch, "centre", device) if decoder else batch
        with torch.autocast(device.type, enabled=use_amp):
            total += model(batch)["loss"].float() * len(next(iter(batch.values())))
        n += len(next(iter(batch.values())))
    method.train()
    return (dist.all_reduce_mean(total) / dist.all_reduce_mean(n).clamp_min(1)).item()


@dataclass(frozen=True)
class Segment:
    """Part of a run that ``fit`` trains (a PBT trial's, :mod:`raysup.sweep.pbt`): from the
    checkpoint ``restore`` (when the fit has none of its own; with the config's lr and weight
    decay, :func:`set_optim`) up to epoch ``until_epoch`` (excluded; 0: to the end), with
    ``may_change`` the config keys that may differ from the run's ``config.json``."""

    restore: str | None = None
    until_epoch: int = 0
    may_change: tuple[str, ...] = ()


class MetricsLogger(UserCallback):
    """Runs in the Train controller: appends each report's rank-0 metrics to
    ``run_dir/metrics.jsonl`` and (unless not ``tensorboard``) writes them to TensorBoard under ``run_dir/tensorboard``
    (numbers as scalars, lists of numbers as histograms; step = ``step_offset`` + epoch, so
    later rounds continue the curves; step checkpoints' reports only to ``metrics.jsonl``). A URI ``run_dir`` gets both through its filesystem
    (event files are written locally, then copied after every report)."""

    def __init__(self, run_dir: str, step_offset: int = 0, tensorboard: bool = True):
        self.run_dir, self.step_offset, self.tensorboard, self.writer, self.local = run_dir, step_offset, tensorboard, None, None

    def after_report(self, run_context, metrics, checkpoint):
        from torch.utils.tensorboard import SummaryWriter

        fs, root = resolve(self.run_dir)
        m = dict(metrics[0], checkpoint=checkpoint.path if checkpoint else None)
        append_line(fs, f"{root}/metrics.jsonl", m)
        if "epoch_step" in m or not self.tensorboard:
            return  # a step checkpoint's report: TensorBoard's curves are per epoch
        if self.writer is None:
            remote = "://" in self.run_dir
            self.local = tempfile.mkdtemp(prefix="raysup-tb-") if remote else os.path.join(root, "tensorboard")
            self.writer = SummaryWriter(self.local)
        step = self.step_offset + int(m.get("epoch", 0))
        for k, v in m.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(k, v, step)
            elif isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
                self.writer.add_histogram(k, np.asarray(v), step)  # e.g. cluster sizes
        self.writer.flush()
        if "://" in self.run_dir:
            for name in os.listdir(self.local):
                with open(os.path.join(self.local, name), "rb") as f, fs.open_output_stream(f"{root}/tensorboard/{name}") as out:
                    out.write(f.read())


def fit(
    cfg: TrainConfig,
    build: Build,
    datasets: dict[str, Any],
    run_dir: str,
    specs: dict[str, TensorSpec],
    *,
    rows_per_epoch: int,
    name: str = "train",
    resume: bool = False,
    init_checkpoint: str | None = None,
    callbacks: list | None = None,
    step_offset: int = 0,
    extra_metrics: dict[str, float] | None = None,
    segment: Segment | None = None,
    tensorboard: bool = True,
    decoder: DeviceDecode | None = None,
) -> dict[str, Any]:
    """Train the model ``build(cfg, specs)`` on ``datasets`` (``train`` and optional ``val``) with a
    TorchTrainer whose checkpoints live in ``run_dir/name``; returns the final metrics.
    ``rows_per_epoch`` (training clips per epoch, all workers) sets the per-step learning-rate
    schedule and refuses a ``batch_size`` no worker can fill before anything starts.
    ``extra_metrics`` (e.g. a clustering round's NMI) are added to every report; ``segment``:
    only part of the run (:class:`Segment`); ``tensorboard=False``: no ``run_dir/tensorboard``
    (:class:`MetricsLogger`); ``decoder``: ``datasets`` carry a jpeg set's stored cells, which
    each worker decodes before its step (``decode_on`` "device").

    Without ``resume`` a checkpoint in ``run_dir/name`` is an error, so nothing is overwritten;
    with it, changed settings are refused (:func:`record_config`). A run that stopped before its
    first checkpoint starts anew.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    steps_per_epoch = rows_per_epoch // cfg.workers // cfg.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"batch_size: {cfg.batch_size} is more than the {rows_per_epoch // cfg.workers} training clips per worker and epoch; lower batch_size (or workers)")
    fs, root = start_run(run_dir, cfg, name, resume, segment.may_change if segment else ())
    progress = (f"{root}/progress.json", uuid.uuid4().hex)  # the workers' progress in this fit (raysup.progress)
    scaling = ray.train.ScalingConfig(
        num_workers=cfg.workers,
        use_gpu=cfg.gpus_per_worker > 0,
        resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if cfg.gpus_per_worker else {})},
    )
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "config": cfg,
            "build": build,
            "specs": specs,
            "steps_per_epoch": steps_per_epoch,
            "init_checkpoint": init_checkpoint,
            "has_val": "val" in datasets,
            "extra_metrics": extra_metrics,
            "progress": progress,
            "segment": segment,
            "decoder": decoder,
        },
        scaling_config=scaling,
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=root,
            storage_filesystem=None if "://" not in run_dir else fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=(callbacks or []) + [MetricsLogger(run_dir, step_offset, tensorboard)],
        ),
        datasets=datasets,
    )
    log = f"{root}/metrics.jsonl"
    before = len(read_lines(fs, log))
    try:
        with following(fs, *progress, "train" if name == "train" else f"train {name}"):
            metrics = trainer.fit().metrics or {}
    except TrainingFailedError as e:
        raise RunFailed(worker_error(e)) from e
    # Train keeps only reports with a checkpoint as the result; the error report is in the log
    for line in read_lines(fs, log)[before:]:
        if ERROR_KEY in line:
            raise ERROR_TYPES[line[f"{ERROR_KEY}_type"]](line[ERROR_KEY])
    return metrics


class RunFailed(RuntimeError):
    """Training crashed more often than ``max_failures`` allows; the message is the workers' error."""


def worker_error(e: Exception) -> str:
    """One line for a failed Ray Train run: the first worker's exception type and message."""
    failures = getattr(e, "worker_failures", None) or {}
    root = next(iter(failures.values()), e)
    while getattr(root, "cause", None) is not None:  # RayTaskError wraps the worker's exception
        root = root.cause
    text = str(root).strip().splitlines()
    return f"{type(root).__name__}: {text[-1] if text else ''}"
