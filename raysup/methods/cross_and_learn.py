"""Cross and Learn (Sayed, Brattoli, Ommer 2018, "Cross and Learn: Cross-Modal
Self-Supervision"): a two-stream network, f on a clip's centre RGB frame and g on the stack of
optical-flow fields (``method.modality=flow``) or frame differences (``diff``) around it, with
the same architecture but the first layer (CaffeNet-BN or VGG16-BN, BN on the conv layers
only; fc6 features after ReLU, dropout on fc6's input). A batch of 2B pairs forms B tuples
(pair i = row b, pair j = row B+b); :func:`raysup.losses.cross_and_learn_loss` pulls a pair's
RGB and motion features together (L_cross) and pushes different pairs apart within each
modality (L_div).

Variants (``method.variant``), the paper's ablations: ``cross_and_learn`` (L_cross −
``div_weight``·L_div; ``div_weight=0`` is L_cross alone, which collapses), ``only_div``
(L_div alone), and ``concat``: the "Concat" baseline, a binary classifier on the concatenated
fc6 features (→ fc7 → fc8) telling a tuple's matched pairs (f_i,g_i), (f_j,g_j) from its
swapped ones (f_i,g_j), (f_j,g_i), trained with cross-entropy.

Sampling (:func:`datasets`): every epoch each video contributes ``method.pairs_per_video``
pairs, each from one of its clips drawn anew with probability ∝ the clip's ``motion`` (mean
flow magnitude; :meth:`raysup.data.ingest.PreparedData.video_draws`: each read task draws from
the whole videos it reads). Augmentation per pair, identical for its frame and stack
(:func:`raysup.data.pairs.pair_input`): the stream's random crop (``crop_size``), a random
resized crop (``method.crop_scale``; (1, 1): none), horizontal flip (negating dx),
temporal flip of flow stacks (not of frame differences: papers/cross-and-learn.md L185), per-field
flow mean subtraction, RGB channel splitting (the channel average at test time). Only the
pair's frame and stack are decoded in training (:func:`decoded_images`). With
``method.pretrain_split=train`` (the paper presets: UCF-101's train split, L97 and L113) and a
labels CSV, the videos it puts in another split are left out of pretraining.

Metrics: ``loss_cross`` and ``loss_div`` (whatever the variant), ``acc_concat`` (concat), and
collapse detection — ``spread_<encoder>``, the mean pairwise cosine distance between the
batch's features (→ 0 when every input gets the same feature), and ``std_<encoder>``, the
mean per-dimension standard deviation over the batch (→ 0 for constant features, zero
vectors included).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from raysup.config import ConfigError, OptimConfig, TrainConfig
from raysup.data.codec import pick_images
from raysup.data.ingest import PreparedData
from raysup.data.labels import read_labels_csv
from raysup.data.pairs import CHANNELS_PER_FIELD, centre_indices, pair_input, stack_start
from raysup.losses import cross_and_learn_loss
from raysup.methods.base import Encoder, Method, Stage, check_batch
from raysup.models import image_encoder
from raysup.protocol_specs import FinetuneProtocol, VOCProtocol


@dataclass(frozen=True)
class Config:
    encoder: str = "caffenet_bn"  # both streams: caffenet_bn | vgg16_bn | caffenet_tiny
    modality: Literal["flow", "diff"] = "flow"
    flow_fields: int = 10  # flow fields per stack (2 channels each): needs clips of flow_fields+1 frames
    diff_fields: int = 4  # frame differences per stack (3 channels each)
    variant: Literal["cross_and_learn", "only_div", "concat"] = "cross_and_learn"
    div_weight: float = 1.0  # w in L_cross − w·L_div
    eps: float = 1e-5  # inside the norms of the cosine distance
    dropout: float = 0.5  # on fc6's input (the paper's 0.5; the features entering the loss keep all units)
    crop_scale: tuple[float, ...] = (0.5, 1.0)  # area fraction of the random resized crop; (1, 1): none (flip only)
    time_flip: bool = True  # of flow stacks (L101); frame differences get crops and flips only (L185)
    channel_split: bool = True
    pairs_per_video: int = 4  # pairs each video contributes per epoch
    pretrain_split: Literal["all", "train"] = "all"  # train: leave out the videos the labels CSV puts in another split

    def validate(self) -> None:
        if self.flow_fields < 1 or self.diff_fields < 1:
            raise ValueError("flow_fields/diff_fields: must be >= 1")
        if self.div_weight < 0:
            raise ValueError(f"div_weight: must be >= 0, got {self.div_weight}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.eps <= 0:
            raise ValueError(f"eps: must be > 0, got {self.eps}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale: expected min,max with 0 < min <= max <= 1, got {self.crop_scale}")
        if self.pairs_per_video < 1:
            raise ValueError(f"pairs_per_video: must be >= 1, got {self.pairs_per_video}")

    @property
    def fields(self) -> int:
        return self.flow_fields if self.modality == "flow" else self.diff_fields


# tiny: 1/16-width CaffeNet on 32 px frames prepared with the default 8 frames (7 flow fields,
# so stacks of 6 flow fields or 4 frame differences); 10 epochs of 16 pairs per video (300 steps
# on the 120-video embedded set: at 90 steps the RGB stream had not yet learned the class), and
# no channel splitting: the synthetic sprite is only guaranteed to stand out from the background
# in one colour channel, so a random single channel often hides it (docs/results.md). A shuffle
# buffer of 45 batches holds a whole epoch of the 180-video test set (2880 pairs): a video's 16
# pairs arrive together in its read unit's block, and 16 batches left consecutive batches sharing
# ~38% of their videos (28% fully mixed); the RGB probe's margin fell from ~+13 to ~+9 points
# (docs/results.md, 2026-12-06). The buffer costs ~150 MB of decoded 32 px pairs.
#
# paper (papers/cross-and-learn.md §4.1, L95-103; docs/reproducing.md): prepare UCF101 with
# `--clip-frames 11 --size 256 --flow tvl1 --fps 25` (TV-L1 at UCF101's own 25 fps, 10 flow
# fields per stack, L97) and pretrain with the split's labels CSV (--labels): its train videos
# only (L97, L113). Epochs count 6 pairs per video (ours; the paper counts iterations): on UCF101
# split 1 (9537 training videos) an epoch is 9537·6/60 ≈ 954 iterations of B = 30 tuples.
# paper_vgg16: the paper's VGG16 variant (L109: B = 12, lr 0.005, 160K iterations); an epoch is
# 9537·6/24 ≈ 2384 iterations of 12 tuples.
PAPER_METHOD = {
    "encoder": "caffenet_bn",  # L95: CaffeNet with batch normalization on all convolutional layers
    "flow_fields": 10,  # L97: stacks of 10 optical-flow frames (20 channels)
    "diff_fields": 4,  # L174-185: 5 RGB frames, 4 frame differences (12 channels)
    "crop_scale": (1.0, 1.0),  # L101: random 224 crops (crop_size) of the 256 high frames, no scale or aspect jitter
    "dropout": 0.5,  # L95: dropout 0.5 (on fc6's input, official CaffeNet_BN)
    "pairs_per_video": 6,  # ours (L99 draws 60 videos per batch, a pair each: no epoch is defined)
    "pretrain_split": "train",  # L97: "the trainset of UCF-101"; L113: pretraining and finetuning on the same split
}
PRESETS = {
    "tiny": {
        "epochs": 10,
        "batch_size": 64,
        "shuffle_batches": 45,
        "method": {"encoder": "caffenet_tiny", "flow_fields": 6, "diff_fields": 4, "pairs_per_video": 16, "channel_split": False},
        "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-4, "schedule": "cosine"},
    },
    "paper": {
        "epochs": 68,  # L103: 65K iterations ≈ 68 epochs × 954
        "batch_size": 60,  # L99: 60 videos, B = 30 tuples of 2 pairs
        "crop_size": 224,  # L101: rescaled to height 256 (prepare --size 256), random 224 crops
        "method": PAPER_METHOD,
        # L103: SGD with momentum 0.9, weight decay 5e-4, lr 0.01 reduced to 0.001 after 50K of
        # the 65K iterations (50/65 = 0.769 of the run)
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "step", "milestones": (0.769,), "gamma": 0.1},
    },
    "paper_vgg16": {
        "epochs": 67,  # L109: 160K iterations ≈ 67 epochs × 2384
        "batch_size": 24,  # L109: B = 12 tuples of 2 pairs
        "crop_size": 224,  # L109: "all other hyperparameters unchanged"
        "method": {**PAPER_METHOD, "encoder": "vgg16_bn"},  # L109: VGG16 (with BN as the CaffeNet run, L95)
        # L109: lr 0.005, "all other hyperparameters unchanged"; the decay point for 160K
        # iterations is not given: the CaffeNet run's fraction 0.769 (ours)
        "optim": {"name": "sgd", "lr": 0.005, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "step", "milestones": (0.769,), "gamma": 0.1},
    },
}

COLUMNS = ("video_id", "clip_index", "frames", "flow", "motion")


class CrossAndLearn(Method):
    def __init__(self, cfg: Config, frame_size: int):
        super().__init__()
        self.cfg = cfg
        self.size = frame_size  # the stream's crop (TrainConfig.crop_size)
        self.rgb_net = image_encoder(cfg.encoder, 3)
        self.motion_net = image_encoder(cfg.encoder, cfg.fields * CHANNELS_PER_FIELD[cfg.modality])
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = cfg.dropout
        if cfg.variant == "concat":
            d = self.rgb_net.out_dim
            # official Concat head: dropout → fc7 (2D → D) → ReLU → fc8 (matched / swapped)
            self.concat_head = nn.Sequential(nn.Dropout(0.5), nn.Linear(2 * d, d), nn.ReLU(inplace=True), nn.Linear(d, 2))

    def inputs(self, batch: dict[str, torch.Tensor], train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        return pair_input(
            batch["frames"], batch.get("flow"), c.modality, c.fields, size=self.size, train=train,
            scale=tuple(c.crop_scale), time_flip=c.time_flip and c.modality == "flow", channel_split=c.channel_split,
        )

    def encoders(self):
        return {"rgb": Encoder(self.rgb_net, self.rgb_net.out_dim), self.cfg.modality: Encoder(self.motion_net, self.motion_net.out_dim)}

    def embed(self, batch, *, train=False):
        rgb, stack = self.inputs(batch, train)  # [B,3,S,S], [B,n·c,S,S]
        return {"rgb": self.rgb_net(rgb), self.cfg.modality: self.motion_net(stack)}  # [B,D] each

    def forward(self, batch):
        c = self.cfg
        feats = self.embed(batch, train=self.training)
        f, g = feats["rgb"], feats[c.modality]  # [2B,D] each
        b = f.shape[0] // 2
        f_i, f_j, g_i, g_j = f[:b], f[b : 2 * b], g[:b], g[b : 2 * b]  # [B,D] each: B tuples
        out = {}
        with torch.no_grad():
            out["loss_cross"] = cross_and_learn_loss(f_i, g_i, f_j, g_j, div_weight=0.0, eps=c.eps)
            out["loss_div"] = -cross_and_learn_loss(f_i, g_i, f_j, g_j, cross_weight=0.0, eps=c.eps)
            for name, x in feats.items():
                out[f"spread_{name}"], out[f"std_{name}"] = feature_spread(x)
        if c.variant == "concat":
            matched = torch.cat([torch.cat([f_i, g_i], 1), torch.cat([f_j, g_j], 1)])  # [2B,2D]
            swapped = torch.cat([torch.cat([f_i, g_j], 1), torch.cat([f_j, g_i], 1)])  # [2B,2D]
            logits = self.concat_head(torch.cat([matched, swapped]))  # [4B,2]
            target = (torch.arange(4 * b, device=logits.device) < 2 * b).long()  # [4B] 1: matched
            out["loss"] = F.cross_entropy(logits.float(), target)
            out["acc_concat"] = (logits.argmax(1) == target).float().mean()
        else:
            cross_weight = 0.0 if c.variant == "only_div" else 1.0
            out["loss"] = cross_and_learn_loss(f_i, g_i, f_j, g_j, div_weight=c.div_weight, cross_weight=cross_weight, eps=c.eps)
        return out


@torch.no_grad()
def feature_spread(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Collapse detection for features [N,D]: (mean cosine distance over all pairs of distinct
    rows, mean over dimensions of the standard deviation over rows); both 0 when collapsed."""
    z = F.normalize(x.float(), dim=1)  # [N,D]
    n = z.shape[0]
    sim = z @ z.t()  # [N,N]
    spread = 1 - (sim.sum() - sim.diagonal().sum()) / max(n * (n - 1), 1)
    return spread, x.float().std(0).mean()


def frame_size(cfg: TrainConfig, specs) -> int:
    """The frame size of ``specs`` (the stream's crop); errors (naming the field) for configs the data cannot serve."""
    m: Config = cfg.method
    if "frames" not in specs:
        raise ConfigError("Cross and Learn needs frames: the prepared data has none; prepare it without --audio-only")
    if m.modality == "flow" and "flow" not in specs:
        raise ConfigError("method.modality: flow needs prepared flow (prepare without --flow none), or use diff")
    if m.modality == "flow" and specs["frames"].shape[0] - specs["flow"].shape[0] != 1:  # a stack of consecutive flows (L97)
        raise ConfigError("method.modality: flow stacks consecutive flows; the data was prepared with --flow-step > 1 (prepare without it)")
    if cfg.batch_size % 2:
        raise ConfigError(f"batch_size: must be even (2B pairs form B tuples), got {cfg.batch_size}")
    frames, size = specs["frames"].shape[0], specs["frames"].shape[1]
    try:
        stack_start(frames - 1, m.fields)
    except ValueError as e:
        raise ConfigError(f"method.{m.modality}_fields: {e} (prepare with --clip-frames {m.fields + 1} or more, or lower method.{m.modality}_fields)") from None
    return size


def check(cfg: TrainConfig, data: PreparedData) -> None:
    frame_size(cfg, data.specs)
    check_batch(cfg, train_rows(cfg, data), ", or raise method.pairs_per_video")


def train_rows(cfg: TrainConfig, data: PreparedData) -> int:
    """Pairs drawn per epoch: ``pairs_per_video`` from every prepared video."""
    return data.manifest["counts"]["videos"] * cfg.method.pairs_per_video


def build(cfg: TrainConfig, specs) -> CrossAndLearn:
    return CrossAndLearn(cfg.method, frame_size(cfg, specs))


def left_out_videos(cfg: TrainConfig, data: PreparedData, labels: str | None) -> list[str]:
    """The prepared videos pretraining leaves out: none, or with ``method.pretrain_split=train``
    those the labels CSV puts in another split (without labels, the prepared videos are taken to
    be the train split); only those ids are looked up in the index, never every prepared id."""
    if cfg.method.pretrain_split == "all" or labels is None:
        return []
    left = data.index_of({row.video_id for row in read_labels_csv(labels) if row.split != "train"})["video_id"].to_pylist()
    if len(left) == data.manifest["counts"]["videos"]:
        raise ConfigError(f"method.pretrain_split: train, but {labels} puts every prepared video in another split")
    return left


def decoded_images(cfg: Config, specs) -> dict[str, list[int]]:
    """The frames and flow fields a pair uses (:func:`raysup.data.pairs.centre_indices`): the
    only ones decoded in training (:func:`raysup.data.codec.pick_images`)."""
    frames, fields = centre_indices(specs["frames"].shape[0], cfg.modality, cfg.fields)
    return {"frames": frames, "flow": fields}


def datasets(cfg: TrainConfig, data: PreparedData, labels: str | None) -> Stage:
    """Each epoch's motion-weighted pairs (see the module docstring): ``pairs_per_video`` from
    every prepared video but those :func:`left_out_videos` leaves out (labels only choose them;
    each read task is told only the left-out videos of its own shards)."""
    left_out = left_out_videos(cfg, data, labels)
    draws = data.video_draws(list(COLUMNS), seed=cfg.seed, exclude=left_out, draws=cfg.method.pairs_per_video, weights="motion")
    draws = draws.map_batches(pick_images, batch_format="pyarrow", fn_kwargs=decoded_images(cfg.method, data.specs))
    return Stage(train=draws, rows_per_epoch=(data.manifest["counts"]["videos"] - len(left_out)) * cfg.method.pairs_per_video)


# --- evaluation -------------------------------------------------------------------------------


def stack_channels(cfg: Config, stream: str) -> int:
    """Input channels of the finetuning CaffeNet of the motion network ``stream`` (Table 3, L189):
    the pretraining's stack, e.g. 20 for 10 flow fields, 12 for 4 frame differences; a
    ConfigError for a stream the run did not pretrain (its weights have another first layer)."""
    if stream != cfg.modality:
        raise ConfigError(f"--protocol paper: the {stream} network's finetuning needs a run pretrained with method.modality={stream}, "
                          f"this one has {cfg.modality}")
    return cfg.fields * CHANNELS_PER_FIELD[cfg.modality]


def stack_input(batch: dict[str, torch.Tensor], *, cfg: Config, size: int, train: bool) -> torch.Tensor:
    """The motion network's finetuning input [B,n·c,S,S] (Table 3, L189: "the same scheme
    already used for RGB"; the input as in the official exp_ft.py ``Experiment_finetuning_ar_OF``
    / ``_COD``): the clip's centred stack as pretraining reads it (:func:`pair_input`), the
    stream's random crop and a random flip while training (no temporal flip, no scale jitter),
    the centre crop at test; each flow field less its mean, frame differences as they are."""
    return pair_input(batch["frames"], batch.get("flow"), cfg.modality, cfg.fields, size=size, train=train, scale=(1.0, 1.0),
                      time_flip=False, channel_split=False)[1]


# Cross and Learn §4 and the official code (experiment/exp_base.py, exp_ft.py,
# main_finetuning_RGB.py): a CaffeNet from the RGB network's conv and BN layers, SGD lr 0.01,
# momentum 0.9, weight decay 5e-4, batch 128, 200 epochs, lr ×0.1 at 3/4 of them; 5 frames per
# test video (the official code also averages 10 crops of each: here the centre crop only).
FINETUNE_OPTIM = OptimConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="step", milestones=(0.75,), gamma=0.1)
# Table 3 (L189): the OF and SOD networks finetuned on split 1 of UCF101 and HMDB51 with "the same
# scheme already used for RGB": a fresh CaffeNet with the stack's input channels (20 for 10 flow
# fields, 12 for 4 frame differences: the pretraining's, L97, L174) from the motion network's conv
# and BN layers, fed the pretraining's stack of each clip (:func:`stack_input`); the official
# main_finetuning_OF.py: 200 epochs, batch 128, lr 0.01; exp_ft.py: 5 test stacks per video.
# A run has one motion network: the protocol of the other modality is left out (protocols.model_protocols).
MOTION_CITES = (("init_prefix", "papers/cross-and-learn.md L189 (\"the same scheme already used for RGB\", L113)"),
                ("optim", "L189 → the RGB protocol's; official main_finetuning_OF.py, exp_ft.py"),
                ("epochs", "official main_finetuning_OF.py (no script for SOD: L189's same scheme)"), ("batch_size", "official main_finetuning_OF.py"),
                ("test_clips", "official exp_ft.py num_test"))
PAPER_PROTOCOLS = (
    FinetuneProtocol(
        key="rgb", encoder="rgb", full=True, network="caffenet", init_prefix="rgb_net.features.",
        optim=FINETUNE_OPTIM, epochs=200, batch_size=128, test_clips=5,
        published=(("UCF101 3 splits", 58.7), ("HMDB51 3 splits", 27.2), ("UCF101 VGG16 split 1", 70.5), ("HMDB51 VGG16 split 1", 33.0),
                   ("UCF101 split 1 (Table 3)", 59.3), ("HMDB51 split 1 (Table 3)", 27.7),
                   ("UCF101 split 1, RGB-SOD pretraining (Table 3)", 55.4), ("HMDB51 split 1, RGB-SOD pretraining (Table 3)", 23.5)),
        # Table 1 L126-128, Table 3 L181-183
        cites=(("init_prefix", "papers/cross-and-learn.md L113: conv and BN layers from the RGB network, FC fresh"),
               ("optim", "official code exp_ft.py / main_finetuning_RGB.py"), ("test_clips", "official code")),
    ),
    FinetuneProtocol(
        key="flow", encoder="flow", full=True, network="caffenet", init_prefix="motion_net.features.",
        optim=FINETUNE_OPTIM, epochs=200, batch_size=128, test_clips=5,
        published=(("UCF101 split 1 (Table 3)", 79.2), ("HMDB51 split 1 (Table 3)", 51.7)),  # Table 3 L181, L183 (random weights 76.4 / 47.1, L180, L182)
        cites=MOTION_CITES,
    ),
    FinetuneProtocol(
        key="diff", encoder="diff", full=True, network="caffenet", init_prefix="motion_net.features.",
        optim=FINETUNE_OPTIM, epochs=200, batch_size=128, test_clips=5,
        published=(("UCF101 split 1 (Table 3)", 66.3), ("HMDB51 split 1 (Table 3)", 33.3)),  # Table 3 L181, L183 (random weights 64.5 / 30.8, L180, L182)
        cites=MOTION_CITES,
    ),
    # §4.3 (L141): PASCAL VOC 2007 classification "following Krähenbühl et al. [17] protocol"
    # (philkr/voc-classification src/train_cls.py: SGD lr 0.001, momentum 0.9, batch 16, 80K
    # iterations, lr ×0.5 every 10K, weight decay 1e-6, gradient norm clipped to 10, rescaling
    # ×0.5-2, flips, 10 random test crops summed), a new CaffeNet from the RGB network's conv
    # layers, "but we do not transfer the batch normalization layers": its BN layers start fresh.
    # Published (Table 2, L164): 70.7 mAP after pretraining on UCF101+HMDB51+ACT for 130K
    # iterations (L141), not the UCF101-only pretraining of Table 1.
    VOCProtocol(
        key="voc07_cls", network="caffenet", init_prefix="rgb_net.features.", transfer_bn=False,
        lr=1e-3, iterations=80_000, step=10_000, gamma=0.5, batch_size=16, weight_decay=1e-6, crop=224,
        published=(("VOC07 cls mAP (UCF+HMDB+ACT pretraining)", 70.7),),
        cites=(("transfer_bn", "papers/cross-and-learn.md L141"), ("lr", "L141 → philkr/voc-classification train_cls.py"),
               ("iterations", "train_cls.py -nit"), ("step", "train_cls.py stepsize"), ("gamma", "train_cls.py"), ("batch_size", "train_cls.py -bs"),
               ("weight_decay", "train_cls.py"), ("clip_grad", "train_cls.py"), ("scale", "train_cls.py"), ("test_crops", "train_cls.py N_CROP"),
               ("crop", "L101: 224 crops in pretraining; ours")),
    ),
)  # fmt: skip
