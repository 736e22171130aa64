"""Supervised baseline: video and audio encoders trained with cross-entropy on the labels CSV's
train split. The ``tiny`` preset is the quick baseline on the probe's own labels (it proves the
spine end to end); the ``paper`` presets are XDC's "Superv" (papers/xdc.md L99, Table 10
L391-392): pretraining on a large labelled set (Kinetics, AudioSet: ``--labels`` of the
pretraining set), then the downstream finetuning protocol (``raysup probe --protocol paper``)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Literal

import torch.nn.functional as F
from torch import nn

from raysup.config import ConfigError, TrainConfig
from raysup.data.ingest import PreparedData
from raysup.data.labels import LabelRow, class_index, read_labels_csv
from raysup.data.tables import join_columns, labels_table, repeat_rows
from raysup.data.transforms import check_crop_scale
from raysup.methods.base import Encoder, Method, Stage, audio_visual_embed
from raysup.models import audio_encoder, video_encoder


@dataclass(frozen=True)
class Config:
    video_encoder: str = "r2plus1d_tiny"
    audio_encoder: str = "resnet_audio_tiny"
    num_classes: int = 0  # 0: taken from the labels CSV
    label_smoothing: float = 0.0
    epoch_clips: int = 0  # > 0: clips drawn per epoch (the paper's "es", papers/xdc.md Table 9 L378); 0: one pass over the train clips
    crop_scale: tuple[float, ...] = (0.5, 1.0)  # area fraction of the video's random resized crop; (1, 1): none (flip only)
    video_norm: Literal["clip", "fixed", "kinetics"] = "clip"  # per-clip standardisation, or fixed constants (video_input)

    def validate(self) -> None:
        if self.epoch_clips < 0:
            raise ValueError(f"epoch_clips: must be >= 0, got {self.epoch_clips}")
        check_crop_scale(self.crop_scale)


PRESETS = {
    "tiny": {"epochs": 15, "batch_size": 32, "optim": {"name": "adam", "lr": 3e-3, "weight_decay": 1e-4}},
}


def _paper(*, epoch_clips: int, lr: float, warmup: int, step: int, total: int, weight_decay: float) -> dict:
    """XDC's Superv pretraining, Table 10 (papers/xdc.md L390-392): SGD, batch 32, Goyal et al.'s
    warm-up over ``warmup`` epochs (L373), lr ×γ = 0.01 every ``step`` epochs after it (as XDC's
    presets count it), ``total`` epochs of ``epoch_clips`` clips, no early stopping; the input of
    every XDC model (L103: 224 crops of frames scaled to a 256 short side, 8 frames, 40 × 100 log-mel)."""
    return {
        "epochs": total,  # te
        "patience": 0,  # e-stop "no" (L391-392)
        "batch_size": 32,  # bs
        "crop_size": 224,  # L103: prepare --size 256, random 224×224 crops; centre 224 to test
        "method": {
            "video_encoder": "r2plus1d_18", "audio_encoder": "resnet18_audio",  # L103: the same encoders as XDC
            "epoch_clips": epoch_clips,  # es
            "crop_scale": (1.0, 1.0),  # L103: plain random 224 crops
            "video_norm": "kinetics",  # as XDC's paper preset (the paper is silent; HumamAlwassel/XDC issue #2)
        },
        "optim": {
            "name": "sgd", "lr": lr, "lr_batch": 32,  # L373: SGD; lr at bs 32, scaled linearly with the global batch (Goyal et al.)
            "momentum": 0.9,  # the paper is silent; VMZ's train_net.py, as XDC's preset
            "weight_decay": weight_decay,  # wd
            "warmup_epochs": warmup,  # we
            "schedule": "step",
            "milestones": tuple((warmup + step * i) / total for i in range(1, total) if warmup + step * i < total),  # se
            "gamma": 0.01,  # Table 10 caption (L388)
        },
    }


PRESETS["paper"] = _paper(epoch_clips=1_000_000, lr=0.01, warmup=10, step=10, total=45, weight_decay=1e-4)  # Superv Kinetics (L391)
PRESETS["paper_audioset"] = _paper(epoch_clips=2_000_000, lr=0.04, warmup=10, step=20, total=45, weight_decay=1e-5)  # Superv AudioSet (L392)
MAX_DRAWS_PER_CLIP = 100  # epoch_clips over the labelled clips: more is a paper preset on far too little data


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
        return audio_visual_embed(self.video, self.audio, batch, train, crop_scale=tuple(self.cfg.crop_scale), norm=self.cfg.video_norm)

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
    label_rows = read_labels_csv(labels)
    present = data.index_of(r.video_id for r in label_rows)  # the labelled videos' index rows only
    clips_of = dict(zip(present["video_id"].to_pylist(), present["clips"].to_pylist()))
    train_ids, classes = train_labels(label_rows, set(clips_of) or set(data.video_ids[:1]), labels)  # none labelled: a prepared id for the message
    if 0 < cfg.method.num_classes < classes:
        raise ConfigError(f"method.num_classes: {cfg.method.num_classes} is fewer than the {classes} classes of the prepared videos in {labels} (0: take them from the labels)")
    cfg = replace(cfg, method=replace(cfg.method, num_classes=cfg.method.num_classes or classes))
    # joined per block as the files stream in, in another file order every epoch
    ds = join_columns(data.dataset(list(COLUMNS), crop=None, shuffle=cfg.seed), ["video_id"], labels_table(train_ids))
    rows = sum(clips_of[v] for v in train_ids)
    return Stage(train=epoch_draws(ds, rows, cfg.method.epoch_clips), rows_per_epoch=cfg.method.epoch_clips or rows, cfg=cfg)


def epoch_draws(ds, rows: int, epoch_clips: int):
    """``ds`` (``rows`` clips) as epochs of about ``epoch_clips`` clips (0: ``ds`` itself): each
    clip repeated a random number of times with mean epoch_clips / rows, every epoch anew."""
    if not epoch_clips:
        return ds
    if epoch_clips > MAX_DRAWS_PER_CLIP * rows:
        raise ConfigError(f"method.epoch_clips: {epoch_clips} clips per epoch would draw each of the {rows} labelled train clips "
                          f"~{epoch_clips // rows} times; at most {MAX_DRAWS_PER_CLIP} (set method.epoch_clips=0 for one pass per epoch)")
    return ds.map_batches(repeat_rows, fn_kwargs={"rate": epoch_clips / rows}, batch_format="pyarrow")

