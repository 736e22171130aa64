"""What every method module provides, and the base class of its model.

A method module (one file per method) defines:
- ``Config``: frozen dataclass of the method's own settings (``--set method.x=…``);
- ``COLUMNS``: the Parquet columns the method reads (labels are joined by ``run``);
- ``PRESETS``: ``{"tiny": {...}, "paper": {...}}`` dotted overrides of the whole TrainConfig;
- ``build(cfg: TrainConfig, specs) -> Method``: the model;
- ``run(cfg, data, run_dir, *, labels=None, resume=False) -> dict``: train it (one
  ``raysup.train.fit`` call for most methods; several rounds for XDC); returns the final
  metrics dict.
"""
from __future__ import annotations

import torch
from torch import nn

from raysup.data.transforms import audio_input, video_input


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


def audio_visual_embed(video: nn.Module, audio: nn.Module, batch: dict[str, torch.Tensor], train: bool) -> dict[str, torch.Tensor]:
    """``embed`` of the video+audio methods: {"video": [B,Dv], "audio": [B,Da]} from the raw
    ``frames`` and ``audio`` columns (augmented video when ``train``)."""
    return {"video": video(video_input(batch["frames"], train=train)), "audio": audio(audio_input(batch["audio"]))}
