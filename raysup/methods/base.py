"""The method contract: what a method module declares (it runs nothing), and the base class of its model.

A method is one module. :mod:`raysup.runner` opens the data (cropped once), calls the module's
``check``, asks it for the datasets of each training stage and trains ``build(cfg, specs)`` on
them with :func:`raysup.train.fit`. A method never imports the trainer: it declares pieces.
docs/adding-a-method.md walks through writing one.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn

from raysup.config import ConfigError, TrainConfig
from raysup.data.ingest import PreparedData
from raysup.data.schema import TensorSpec
from raysup.data.storage import exists, read_json, resolve, write_json
from raysup.data.transforms import audio_input, video_input


@dataclass
class Stage:
    """One ``fit`` of a method: the clips it trains on, as a Ray Dataset of *stored* cells.

    The runner decodes ``train`` with random crops (training) and ``val`` with centre crops, so
    a method cannot train on centre crops by accident. ``rows_per_epoch``: clips per epoch over
    all workers (sets the learning-rate schedule and refuses a batch no worker can fill).
    """

    train: Any
    rows_per_epoch: int
    val: Any = None  # held-out clips for the validation loss (early stopping), or None
    name: str = "train"  # the stage's folder in the run (checkpoints): "train", "round_0", …
    cfg: TrainConfig | None = None  # the config to train with, where the data settles a field (e.g. num_classes)
    specs: dict[str, TensorSpec] | None = None  # tensors of the stream when they differ from the data's (extra columns)
    init_checkpoint: str | None = None  # weights to start from (``Method.load_pretrained``), e.g. the previous round's
    extra_metrics: dict[str, Any] = field(default_factory=dict)  # added to every epoch's report (e.g. cluster statistics)


class StageLog:
    """What a multi-stage method may ask the runner about its run: which stages are finished
    (``RUN_DIR/stages/<name>.json``: epochs and final metrics), for resuming without redoing
    them. The runner records each stage as it finishes."""

    def __init__(self, run_dir: str, *, labels: str | None = None, resume: bool = False):
        self.run_dir, self.labels, self.resume = run_dir, labels, resume
        self.epochs = 0  # epochs of the finished stages seen so far (TensorBoard steps continue)
        self.metrics: dict[str, Any] = {}  # the last finished stage's final metrics

    def _path(self, name: str) -> tuple[Any, str]:
        fs, root = resolve(self.run_dir)
        return fs, f"{root}/stages/{name}.json"

    def finished(self, name: str) -> bool:
        """Whether stage ``name`` finished in an earlier run (only asked on ``resume``)."""
        fs, path = self._path(name)
        if not (self.resume and exists(fs, path)):
            return False
        done = read_json(fs, path)
        self.epochs += done["epochs"]
        self.metrics = done["metrics"]
        return True

    def finish(self, name: str, metrics: dict[str, Any]) -> None:
        epochs = int(metrics.get("epoch", -1)) + 1
        fs, path = self._path(name)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        write_json(fs, path, {"epochs": epochs, "metrics": metrics})
        self.epochs += epochs
        self.metrics = metrics


class MethodModule(Protocol):
    """A method module (one file; listed in :data:`raysup.methods.METHODS` or registered, see
    :func:`raysup.methods.register`).

    Required:

    - ``Config``: frozen dataclass of the method's own settings (``--set method.x=…``);
    - ``PRESETS``: ``{"tiny": {...}, "paper": {...}, …}``, dotted overrides of the whole TrainConfig;
    - ``COLUMNS``: the prepared Parquet columns it reads (``video_id`` and ``clip_index`` included);
    - ``check``, ``build`` and ``datasets`` (or ``stages``) below.

    Optional: ``stages`` (multi-stage training such as XDC's rounds; replaces ``datasets``),
    ``side_tasks``, ``PAPER_PROTOCOLS`` (a tuple of :mod:`raysup.protocol_specs` specs for
    ``raysup probe --protocol paper``).
    """

    Config: type
    PRESETS: dict[str, dict[str, Any]]
    COLUMNS: tuple[str, ...]

    def check(self, cfg: TrainConfig, data: PreparedData) -> None:
        """Raise ``ConfigError`` naming the field (and the remedy) when ``cfg`` cannot train on
        ``data`` (already read at ``cfg.crop_size``); cheap (the manifest only), so commands and
        sweeps call it before any work."""

    def build(self, cfg: TrainConfig, specs: dict[str, TensorSpec]) -> Method:
        """The model, on the CPU, for tensors of these ``specs``."""

    def datasets(self, cfg: TrainConfig, data: PreparedData, labels: str | None) -> Stage:
        """The one training stage: stored-cell datasets of ``data`` (labels CSV, if the method
        uses labels, e.g. the supervised baseline)."""

    def stages(self, cfg: TrainConfig, data: PreparedData, log: StageLog) -> Iterator[Stage]:
        """Optional, instead of ``datasets``: yield the stages in order; the runner trains each
        before asking for the next (so a stage may start from the last one's checkpoint). Skip
        the stages ``log.finished(name)`` says are done."""

    def side_tasks(self, cfg: TrainConfig) -> dict[str, dict[str, float]]:
        """Optional: Ray resources of the tasks the method starts beside its train workers, by
        what they are (e.g. XDC's k-means task), so a sweep can check they fit on some node."""


class Encoder(NamedTuple):
    """One of a method's encoders: the network whose parameters finetuning trains, and the
    width of the features :meth:`Method.embed` gives for it."""

    network: nn.Module
    dim: int


class Method(nn.Module):
    """A self-contained model: ``forward(batch)`` returns ``{"loss": scalar, <metric>: scalar, …}``.

    ``batch`` is the dict of tensors made by :class:`raysup.data.ingest.ClipCollate`
    (``frames`` uint8 [B,T,H,W,3], ``audio`` [B,M,F], ``flow`` [B,T-1,H,W,2], their
    ``*_valid`` masks, numeric columns such as ``motion`` or joined labels).
    """

    def encoders(self) -> dict[str, Encoder]:
        """:meth:`embed`'s encoders by name (the same keys): what finetuning trains, the probes
        read and ``raysup features --encoders`` names."""
        raise NotImplementedError

    def embed(self, batch: dict[str, torch.Tensor], *, train: bool = False) -> dict[str, torch.Tensor]:
        """Features [B,D] per encoder name (``video``, ``audio``, ``rgb``, ``flow``, ``diff``),
        as used by the linear probe (``train=False``) and finetuning (``train=True``)."""
        raise NotImplementedError

    def taps(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named intermediate features [B,…] that the paper protocols read (e.g. conv5 maps);
        default: none."""
        return {}

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after every optimiser step (``step`` counted from 1 over the run, of
        ``total_steps`` planned), e.g. momentum encoders or schedules; default: nothing."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called on every worker after each training epoch (before validation and the checkpoint)."""

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        """Initialise from another run's weights (e.g. the previous clustering round)."""
        self.load_state_dict(state)


def audio_visual_embed(video: nn.Module, audio: nn.Module, batch: dict[str, torch.Tensor], train: bool, *,
                       crop_scale: tuple[float, float] = (0.5, 1.0), norm: str = "clip") -> dict[str, torch.Tensor]:
    """``embed`` of the video+audio methods: {"video": [B,Dv], "audio": [B,Da]} from the raw
    ``frames`` and ``audio`` columns (augmented video when ``train``; ``crop_scale`` and ``norm``:
    :func:`raysup.data.transforms.video_input`'s)."""
    frames = video_input(batch["frames"], train=train, crop_scale=crop_scale, norm=norm)
    return {"video": video(frames), "audio": audio(audio_input(batch["audio"]))}


def check_batch(cfg: TrainConfig, clips: int, more: str = "") -> None:
    """Refuse, naming ``batch_size`` and what to do, a batch that no worker can fill from the
    ``clips`` training clips of an epoch (``more``: e.g. ", or raise method.epoch_size")."""
    per_worker = clips // cfg.workers
    if per_worker < cfg.batch_size:
        raise ConfigError(f"batch_size: {cfg.batch_size} is more than the {per_worker} training clips per worker and epoch; "
                          f"lower batch_size (or workers){more}, or add videos")


def train_split(data: PreparedData, val_fraction: float, *, audio: bool = False) -> int:
    """The clips of the videos outside the held-out split (:func:`raysup.data.tables.is_held_out`;
    of the videos with audio if ``audio``), from the set's counts; a ConfigError naming
    ``method.val_fraction`` when that leaves no video to train on."""
    key = "audio_" if audio else ""
    train, held = data.split_counts(val_fraction, held=False), data.split_counts(val_fraction, held=True)
    if held[f"{key}videos"] and not train[f"{key}videos"]:
        what = "videos with audio" if audio else "videos"
        raise ConfigError(f"method.val_fraction: all {held[f'{key}videos']} {what} fall in the held-out split ({val_fraction}), none is "
                          "left to train on; lower method.val_fraction (0: hold none out) or add videos")
    return train[f"{key}clips"]
