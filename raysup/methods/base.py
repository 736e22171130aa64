"""The method contract: what every method module provides, and the base class of its model."""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from raysup.config import ConfigError, TrainConfig
from raysup.data.ingest import PreparedData
from raysup.data.schema import TensorSpec
from raysup.data.tables import is_held_out
from raysup.data.transforms import audio_input, video_input


class MethodModule(Protocol):
    """A method module (one file per method, listed in :data:`raysup.methods.METHODS`).

    - ``Config``: frozen dataclass of the method's own settings (``--set method.x=…``);
    - ``COLUMNS``: the Parquet columns the method reads (labels are joined by ``run``);
    - ``PRESETS``: ``{"tiny": {...}, "paper": {...}}``, dotted overrides of the whole TrainConfig.
    """

    Config: type
    COLUMNS: tuple[str, ...]
    PRESETS: dict[str, dict[str, Any]]

    def check(self, cfg: TrainConfig, data: PreparedData) -> None:
        """Raise ``ConfigError`` naming the field when ``cfg`` cannot train on ``data``; cheap
        (reads the manifest only), so commands and sweeps call it before any work."""

    def build(self, cfg: TrainConfig, specs: dict[str, TensorSpec]) -> Method:
        """The model, on the CPU, for tensors of these ``specs``."""

    def run(self, cfg: TrainConfig, data: PreparedData, run_dir: str, *, labels: str | None = None,
            resume: bool = False, callbacks: list | None = None) -> dict[str, Any]:
        """Train (one or more ``raysup.train.fit`` calls; ``callbacks`` go to each) and return
        the final metrics as a JSON-able dict."""

    def side_tasks(self, cfg: TrainConfig) -> dict[str, dict[str, float]]:
        """Ray resources of the tasks the method starts beside its train workers, by what they
        are (e.g. XDC's k-means task), so a sweep can check they fit on some node."""


class Method(nn.Module):
    """A self-contained model: ``forward(batch)`` returns ``{"loss": scalar, <metric>: scalar, …}``.

    ``batch`` is the dict of tensors made by :class:`raysup.data.ingest.ClipCollate`
    (``frames`` uint8 [B,T,H,W,3], ``audio`` [B,M,F], ``flow`` [B,T-1,H,W,2], their
    ``*_valid`` masks, numeric columns such as ``motion`` or joined labels).
    """

    def embed(self, batch: dict[str, torch.Tensor], *, train: bool = False) -> dict[str, torch.Tensor]:
        """Features [B,D] per encoder name (``video``, ``audio``, ``rgb``, ``flow``, ``diff``),
        as used by the linear probe (``train=False``) and finetuning (``train=True``)."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after every optimiser step (e.g. momentum encoders); default: nothing."""

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


def train_videos(videos: list[str], val_fraction: float, what: str = "videos") -> list[str]:
    """The ``videos`` outside the held-out split (:func:`raysup.data.tables.is_held_out`); a
    ConfigError naming ``method.val_fraction`` when that leaves none to train on."""
    train = [v for v in videos if not is_held_out(v, val_fraction)]
    if videos and not train:
        raise ConfigError(f"method.val_fraction: all {len(videos)} {what} fall in the held-out split ({val_fraction}), none is "
                          "left to train on; lower method.val_fraction (0: hold none out) or add videos")
    return train
