"""A sixth method written outside raysup, as a user's own package would: a minimal audio-visual
contrastive method (each clip's video embedding must pick out its own audio embedding among the
batch's, symmetric InfoNCE). It imports nothing of raysup but the contract's pieces, and joins
through the ``raysup.methods`` entry point of its ``dist-info`` folder beside it."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from raysup.config import ConfigError
from raysup.methods.base import Encoder, Method, Stage


@dataclass(frozen=True)
class Config:
    dim: int = 32  # embedding width
    temperature: float = 0.1


PRESETS = {
    "tiny": {"epochs": 2, "batch_size": 16, "optim": {"name": "adam", "lr": 1e-3}},
    "paper": {"epochs": 100, "batch_size": 256, "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9}},
}
COLUMNS = ("video_id", "clip_index", "frames", "audio")


class Toy(Method):
    def __init__(self, cfg: Config, frame_shape: tuple[int, ...], audio_shape: tuple[int, ...]):
        super().__init__()
        self.cfg = cfg
        self.video = nn.Sequential(nn.AdaptiveAvgPool3d((2, 4, 4)), nn.Flatten(), nn.Linear(3 * 2 * 4 * 4, cfg.dim))
        self.audio = nn.Sequential(nn.Flatten(), nn.Linear(audio_shape[0], cfg.dim))

    def encoders(self):
        return {"video": Encoder(self.video, self.cfg.dim), "audio": Encoder(self.audio, self.cfg.dim)}

    def embed(self, batch, *, train=False):
        frames = batch["frames"].permute(0, 4, 1, 2, 3).float() / 255  # [B,3,T,H,W]
        return {"video": self.video(frames), "audio": self.audio(batch["audio"].float().mean(-1))}  # [B,D] each

    def forward(self, batch):
        f = self.embed(batch, train=self.training)
        v, a = F.normalize(f["video"], dim=1), F.normalize(f["audio"], dim=1)
        logits = v @ a.t() / self.cfg.temperature  # [B,B]: row b's positive is column b
        target = torch.arange(len(v), device=v.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        return {"loss": loss, "top1": (logits.argmax(1) == target).float().mean()}


def check(cfg, data) -> None:
    if "frames" not in data.specs or "audio" not in data.specs:
        raise ConfigError("toy needs frames and audio")


def build(cfg, specs) -> Toy:
    return Toy(cfg.method, specs["frames"].shape, specs["audio"].shape)


def datasets(cfg, data, labels) -> Stage:
    return Stage(train=data.dataset(list(COLUMNS), crop=None, shuffle=cfg.seed), rows_per_epoch=data.manifest["counts"]["clips"])
