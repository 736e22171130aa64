"""Supervised baseline ("Superv" in the XDC/GDT tables): video and audio encoders trained
with cross-entropy on the labels CSV's train split. It proves the spine end to end."""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import torch.nn.functional as F
from torch import nn

from raysup.config import ConfigError, TrainConfig
from raysup.data.ingest import PreparedData
from raysup.data.labels import LabelRow, class_index, read_labels_csv
from raysup.data.tables import join_columns, labels_table
from raysup.methods.base import Encoder, Method, Stage, audio_visual_embed
from raysup.models import audio_encoder, video_encoder


@dataclass(frozen=True)
class Config:
    video_encoder: str = "r2plus1d_tiny"
    audio_encoder: str = "resnet_audio_tiny"
    num_classes: int = 0  # 0: taken from the labels CSV
    label_smoothing: float = 0.0


PRESETS = {
    "tiny": {"epochs": 15, "batch_size": 32, "optim": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-4}},
    "paper": {
        "epochs": 45,
        "batch_size": 32,
        "crop_size": 112,  # the XDC and GDT paper presets' clips (112 crops of frames prepared at --size 128)
        "method": {"video_encoder": "r2plus1d_18", "audio_encoder": "resnet18_audio"},
        "optim": {"name": "sgd", "lr": 0.01, "weight_decay": 5e-4, "warmup_epochs": 2},
    },
}


COLUMNS = ("video_id", "clip_index", "frames", "audio")


class Supervised(Method):
    """Both encoders with a linear classifier each. Built before the labels are known
    (``num_classes`` 0, e.g. a random-init probe) it has no classifiers and can only embed."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.video = video_encoder(cfg.video_encoder)
        self.audio = audio_encoder(cfg.audio_encoder)
        if cfg.num_classes >= 2:
            self.video_head = nn.Linear(self.video.out_dim, cfg.num_classes)
            self.audio_head = nn.Linear(self.audio.out_dim, cfg.num_classes)

    def encoders(self):
        return {"video": Encoder(self.video, self.video.out_dim), "audio": Encoder(self.audio, self.audio.out_dim)}

    def embed(self, batch, *, train=False):
        return audio_visual_embed(self.video, self.audio, batch, train)

    def forward(self, batch):
        if self.cfg.num_classes < 2:
            raise ConfigError("method.num_classes: needs >= 2 classes (set by the labels CSV)")
        y = batch["label"]  # [B]
        feats = self.embed(batch, train=self.training)
        v_logits = self.video_head(feats["video"])  # [B,K]
        a_logits = self.audio_head(feats["audio"])  # [B,K]
        ls = self.cfg.label_smoothing
        loss_v = F.cross_entropy(v_logits, y, label_smoothing=ls)
        valid = batch["audio_valid"].float()  # clips without audio do not train the audio head
        loss_a = (F.cross_entropy(a_logits, y, reduction="none", label_smoothing=ls) * valid).sum() / valid.sum().clamp_min(1)
        return {
            "loss": loss_v + loss_a,
            "loss_video": loss_v.detach(),
            "loss_audio": loss_a.detach(),
            "acc_video": (v_logits.argmax(1) == y).float().mean(),
            "acc_audio": (a_logits.argmax(1) == y).float().mean(),
        }


def check(cfg: TrainConfig, data: PreparedData) -> None:
    missing = sorted({"frames", "audio"} - set(data.specs))
    if missing:
        raise ConfigError(f"supervised needs frames and audio: the prepared data has no {' or '.join(missing)} column")


def build(cfg: TrainConfig, specs) -> Supervised:
    return Supervised(cfg.method)


def train_labels(rows: list[LabelRow], prepared: set[str], labels: str) -> tuple[dict[str, int], int]:
    """({train video id: class index}, number of classes), both over the labelled videos that
    were prepared; rows naming other videos are counted on stderr, none left is a ConfigError."""
    present = [r for r in rows if r.video_id in prepared]
    classes = class_index(present)
    train = [r for r in rows if r.split == "train"]
    train_ids = {r.video_id: classes[r.label] for r in train if r.video_id in prepared}
    if not train_ids:
        raise ConfigError(f"labels: none of the {len(train)} train videos in {labels} is in the prepared data "
                          f"(ids such as {train[0].video_id if train else '-'!r} vs. {next(iter(prepared), '-')!r})")
    if len(classes) < 2:
        raise ConfigError(f"labels: the prepared videos in {labels} have {len(classes)} class; the supervised baseline needs at least 2")
    if len(present) < len(rows):
        print(f"labels: {len(rows) - len(present)} of {len(rows)} rows of {labels} name videos that are not in the prepared data "
              f"({len(train) - len(train_ids)} of them train videos); training without them", file=sys.stderr)
    return train_ids, len(classes)


def datasets(cfg: TrainConfig, data: PreparedData, labels: str | None) -> Stage:
    """The labelled train split's clips (labels are joined here, never stored in the Parquet);
    ``method.num_classes`` 0 becomes the labels' number of classes."""
    if labels is None:
        raise ConfigError("labels: the supervised baseline needs --labels labels.csv")
    train_ids, classes = train_labels(read_labels_csv(labels), set(data.video_ids), labels)
    if 0 < cfg.method.num_classes < classes:
        raise ConfigError(f"method.num_classes: {cfg.method.num_classes} is fewer than the {classes} classes of the prepared videos in {labels} (0: take them from the labels)")
    cfg = replace(cfg, method=replace(cfg.method, num_classes=cfg.method.num_classes or classes))
    # joined per block as the files stream in, in another file order every epoch
    ds = join_columns(data.dataset(list(COLUMNS), crop=None, shuffle=cfg.seed), ["video_id"], labels_table(train_ids))
    clips_of = data.manifest["videos"]  # video id → its number of clips
    return Stage(train=ds, rows_per_epoch=sum(clips_of[v] for v in train_ids), cfg=cfg)
