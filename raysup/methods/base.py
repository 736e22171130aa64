"""The method contract: what every method module provides, and the base class of its model."""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from raysup.config import TrainConfig
from raysup.data.ingest import PreparedData
from raysup.data.schema import TensorSpec
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
