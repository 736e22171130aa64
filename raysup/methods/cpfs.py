"""Cross-Pixel Optical-Flow Similarity (Mahendran, Thewlis, Vedaldi 2018, "Cross Pixel
Optical-Flow Similarity for Self-Supervised Learning"): a single-frame network embeds pixels so
that the similarity of two pixels' embeddings matches the similarity of their optical flow.

Per clip and step: frame t and the flow t→t+k (``method.flow_step`` = k counts *clip frames* at the
prepare fps). Data prepared with ``--flow-step k`` holds that flow, computed directly between
the two frames as the paper does (L125); data prepared with consecutive flows (the default)
gets it composed on the fly by :func:`compose_flow`, which accumulates the one-step flows'
errors. The paper's k=5 is at the video's own rate, ~0.2 s; the tiny preset's k=2 at 8 fps is
0.25 s. Training draws t uniformly from the clip; evaluation (validation loss) uses
t = min(T//2, T−1−k); both are chosen in the stream before decoding
(:func:`raysup.data.codec.draw_window`), which then decodes only frame t and the flow fields
from it. Image and flow are the stream's crop
(``crop_size``: random position in training) and get the same random resized crop
(``method.min_crop``; 1: none) and horizontal flip (flow rescaled to output pixels, dx negated on a flip), then the flow is
log-normalised (:func:`raysup.data.flow.log_normalize`). N random pixels per image are
embedded by :class:`raysup.models.image.AlexNetHypercolumn` (parameter-free BN, sparse
hypercolumns, MLP → D=16, L2-normalised) and trained with
:func:`raysup.losses.cross_pixel_flow_loss`.

``method.target`` picks the supervision: a float σ (flow kernel with that fixed bandwidth),
``learned`` (σ = exp(log σ), learned jointly from ``sigma_init``; reported as the ``sigma``
metric every epoch) or ``direct`` (the paper's "direct reg." baseline: 16-way classification of
each log-normalised flow component at the same pixels; also the ``cpfs_direct`` method).
``method.loss=alignment`` swaps the loss for the kernel-target-alignment ablation.

Early stopping: ``val_fraction`` of the videos (by a hash of their id) are held out and the
train loop stops when their loss has not improved for ``patience`` epochs. The probe's
``rgb`` encoder is pool5 of the centre frame averaged over space; :meth:`CPFS.export`
folds the BN statistics into the convolutions for use elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from raysup.config import ConfigError, TrainConfig
from raysup.data.codec import draw_window
from raysup.data.flow import log_normalize
from raysup.data.ingest import PreparedData
from raysup.data.transforms import random_resized_crop_flip, standardize
from raysup.losses import cross_pixel_flow_loss, kernel_target_alignment_loss
from raysup.methods.base import Encoder, Method, Stage, check_batch, train_split
from raysup.models.image import AlexNetHypercolumn, alexnet_hypercolumn, alexnet_hypercolumn_tiny, fold_batchnorm, pixel_centres
from raysup.protocol_specs import ImageLayerProbeProtocol, LayerProbeProtocol, LinearLayer, VOCProtocol

BACKBONES = {"alexnet": alexnet_hypercolumn, "alexnet_tiny": alexnet_hypercolumn_tiny}


@dataclass(frozen=True)
class Config:
    backbone: Literal["alexnet", "alexnet_tiny"] = "alexnet"
    embed_dim: int = 16  # D
    hidden: int = 0  # hidden units of the hypercolumn MLP; 0: the backbone's default
    pixels: int = 512  # N sampled pixels per image
    flow_step: int = 5  # k of the flow t→t+k, in clip frames
    target: float | Literal["learned", "direct"] = "learned"  # fixed σ, learned σ, or direct classification
    sigma_init: float = 0.082  # start of a learned σ (the paper learns σ² ≈ 0.0067)
    loss: Literal["cross_entropy", "alignment"] = "cross_entropy"
    bins: int = 16  # classes per flow component (target=direct)
    max_flow: float = 56.0  # M of the log normalisation, pixels
    min_crop: float = 0.5  # smallest random crop, as a fraction of the image area
    val_fraction: float = 0.1  # videos held out for early stopping

    def validate(self) -> None:
        if isinstance(self.target, float) and self.target <= 0:
            raise ValueError(f"target: a fixed sigma must be > 0, got {self.target}")
        for name in ("embed_dim", "pixels", "bins"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name}: must be >= 2, got {getattr(self, name)}")
        if self.flow_step < 1:
            raise ValueError(f"flow_step: must be >= 1, got {self.flow_step}")
        if self.sigma_init <= 0 or self.max_flow <= 0:
            raise ValueError("sigma_init/max_flow: must be > 0")
        if not 0 < self.min_crop <= 1:
            raise ValueError(f"min_crop: must be in (0, 1], got {self.min_crop}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")


# tiny: 32 px frames at 8 fps; M = 56 px scaled to the ~7x smaller frames; 128 of the 1024
# pixels (the cost is mostly per pixel); a higher lr than the paper's for the few hundred steps
# of a CPU run; 12 epochs (measurements behind each choice: docs/methods.md, "The tiny presets").
PRESETS = {
    "tiny": {
        "epochs": 12,
        "patience": 5,
        "batch_size": 32,
        "method": {"backbone": "alexnet_tiny", "pixels": 128, "flow_step": 2, "max_flow": 8.0},
        "optim": {"name": "adam", "lr": 3e-3, "weight_decay": 0.0, "schedule": "constant"},
    },
    # paper: papers/cpfs.md §4 (L119-154): prepare at `--size 256 --flow-step 5` at the video's
    # own frame rate (k = 5 clip frames: the paper's flow computed directly between t and t+5,
    # L125; consecutive flows, the default, are composed instead) and train on random 224 crops.
    "paper": {
        "epochs": 100,  # not stated; early stopping on a held-out loss ends the run (L139)
        "patience": 5,  # L139: early stopping on the validation loss (its patience: ours)
        "batch_size": 96,  # L154: "a large batch size of 96 frames"
        "crop_size": 224,  # L154: crops of 224 × 224 (of frames prepared at --size 256)
        "method": {
            # L154: "Scale, horizontal flip and crop augmentation"; the scale range is not stated
            # (ours: random resized crops of 50-100% of the area)
            "min_crop": 0.5,
            "backbone": "alexnet",  # L121: Pathak et al.'s AlexNet, sparse hypercolumns; L154: BN folded after training
            "embed_dim": 16,  # L121: D = 16
            "pixels": 512,  # L154: 512 pixels per image
            "flow_step": 5,  # L125: flow between frames t and t+5
            "max_flow": 56.0,  # L137: M = 56.0
        },
        # L143: Adam (β 0.9, 0.999, ε 1e-8: torch's defaults), lr 1e-4, no weight decay; no decay schedule stated
        "optim": {"name": "adam", "lr": 1e-4, "weight_decay": 0.0, "schedule": "constant"},
    },
}

COLUMNS = ("video_id", "clip_index", "frames", "flow")


class CPFS(Method):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        out_dim = 2 * cfg.bins if cfg.target == "direct" else cfg.embed_dim
        self.net: AlexNetHypercolumn = BACKBONES[cfg.backbone](out_dim=out_dim, **({"hidden": cfg.hidden} if cfg.hidden else {}))
        if cfg.target == "learned":
            self.log_sigma = nn.Parameter(torch.tensor(math.log(cfg.sigma_init)))  # σ = exp(log σ) > 0

    def sigma(self) -> torch.Tensor:
        """The flow kernel's σ (a scalar tensor; differentiable when learned)."""
        if self.cfg.target == "learned":
            return self.log_sigma.exp()
        return torch.tensor(float(self.cfg.target))

    def encoders(self):
        return {"rgb": Encoder(self.net, self.net.pool5_dim)}

    def embed(self, batch, *, train=False):
        x = centre_frame(batch["frames"])  # [B,3,H,W]
        if train:
            x = random_resized_crop_flip(x, (self.cfg.min_crop, 1.0))
        return {"rgb": self.net.pooled(standardize_image(x))}  # [B,C5]

    def taps(self, batch):
        """conv1 … conv5 maps of the centre frame (``rgb_conv1`` [B,96,H',W'] …), standardised as
        in training: the per-layer probes of the paper's Table 1."""
        maps = self.net.feature_maps(standardize_image(centre_frame(batch["frames"])), upto="conv5")
        return {f"rgb_{name}": x for name, x in maps.items() if name.startswith("conv")}

    @torch.no_grad()
    def pixel_embeddings(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What ``raysup visualize-embeddings`` draws: frame t [B,3,H,W] in [0, 1], the flow t→t+k
        [B,2,H,W] (pixels) and the L2-normalised embedding of every pixel [B,H,W,D]."""
        image, flow = self.inputs(batch)
        return image, flow, F.normalize(self.net.dense(standardize_image(image)), dim=-1)

    def inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame t [B,3,H,W] in [0, 1] and the flow t→t+k [B,2,H,W] in pixels; random t and
        joint crop/flip in training mode."""
        frames, flow = batch["frames"], batch["flow"]  # [B,T,H,W,3], [B,T-s,H,W,2]: flow t→t+s (prepare --flow-step s)
        b, k = flow.shape[0], self.cfg.flow_step
        if "t" in batch:  # drawn before decoding (draw_window): only frame t and its flow fields were decoded
            t = batch["t"].to(flow.device, torch.long)  # [B]
        elif self.training:
            t = torch.randint(0, frames.shape[1] - k, (b,), device=flow.device)  # [B]
        else:
            t = torch.full((b,), eval_frame(frames.shape[1], k), device=flow.device)
        rows = torch.arange(b, device=flow.device)
        image = frames[rows, t].permute(0, 3, 1, 2).float() / 255  # [B,3,H,W]
        if prepared_step(frames.shape[1], flow.shape[1]) == k:  # stored directly (the paper's flow t→t+5, L125)
            f = flow[rows, t].permute(0, 3, 1, 2).float()  # [B,2,H,W] pixels
        else:
            window = flow[rows[:, None], t[:, None] + torch.arange(k, device=flow.device)]  # [B,k,H,W,2]
            f = compose_flow(window.permute(0, 1, 4, 2, 3).float())  # [B,2,H,W] pixels
        if self.training:  # the same crop and flip for image and flow; flow rescaled to output pixels, dx negated on a flip
            both = random_resized_crop_flip(torch.cat([image, f], 1), (self.cfg.min_crop, 1.0), flow_channels=2)  # [B,5,H,W]
            image, f = both[:, :3], both[:, 3:]
        return image, f

    def forward(self, batch):
        image, flow = self.inputs(batch)  # [B,3,H,W], [B,2,H,W]
        image, flow = standardize_image(image), log_normalize(flow, self.cfg.max_flow)
        b, _, h, w = image.shape
        n = min(self.cfg.pixels, h * w)
        index = torch.rand(b, h * w, device=image.device).argsort(dim=1)[:, :n]  # [B,N] without replacement
        out = self.net(image, pixel_centres(index, h, w))  # [B,N,out]
        f = flow.flatten(2).gather(2, index[:, None].expand(-1, 2, -1)).transpose(1, 2)  # [B,N,2]
        if self.cfg.target == "direct":
            logits = out.float().reshape(b, n, 2, self.cfg.bins)  # [B,N,2,bins]
            classes = flow_classes(f, self.cfg.bins)  # [B,N,2]
            loss = F.cross_entropy(logits.flatten(0, 2), classes.flatten())
            return {"loss": loss, "bin_acc": (logits.argmax(-1) == classes).float().mean()}
        sigma = self.sigma().to(image.device)
        loss_fn = cross_pixel_flow_loss if self.cfg.loss == "cross_entropy" else kernel_target_alignment_loss
        return {"loss": loss_fn(F.normalize(out, dim=-1), f, sigma), "sigma": sigma.detach()}

    def export(self) -> AlexNetHypercolumn:
        """The trained network with BN folded into its convolutions (eval mode)."""
        return fold_batchnorm(self.net)


def eval_frame(clip_frames: int, k: int) -> int:
    """Frame t of evaluation (the validation loss): the middle one, or the last with k fields after it."""
    return min(clip_frames // 2, clip_frames - 1 - k)


def centre_frame(frames: torch.Tensor) -> torch.Tensor:
    """uint8 clips [B,T,H,W,3] → their centre frames, float [B,3,H,W] in [0, 1]."""
    return frames[:, frames.shape[1] // 2].permute(0, 3, 1, 2).float() / 255


def standardize_image(x: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] standardised per image and channel."""
    return standardize(x, (2, 3))


def compose_flow(flows: torch.Tensor) -> torch.Tensor:
    """Consecutive flows [B,k,2,H,W] (pixels; step j maps frame t+j to t+j+1) → flow t→t+k
    [B,2,H,W], chained by backward warping: F ← F + f_j(x + F(x)), with f_j sampled bilinearly
    at the displaced positions (``grid_sample``; positions outside clamp to the border)."""
    b, k, _, h, w = flows.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flows.device), torch.arange(w, device=flows.device), indexing="ij")
    base = torch.stack([xs, ys]).to(flows.dtype)  # [2,H,W] pixel (x, y)
    total = flows[:, 0]  # [B,2,H,W]
    for j in range(1, k):
        pos = base + total  # [B,2,H,W] where each pixel of frame t is in frame t+j
        grid = torch.stack([(2 * pos[:, 0] + 1) / w - 1, (2 * pos[:, 1] + 1) / h - 1], dim=-1)  # [B,H,W,2]
        total = total + F.grid_sample(flows[:, j], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return total


def flow_classes(flow: torch.Tensor, bins: int) -> torch.Tensor:
    """Log-normalised flow components in [−1, 1] (any shape) → classes 0..bins−1 of equal width."""
    edges = torch.linspace(-1, 1, bins + 1, device=flow.device)[1:-1]  # [bins−1] inner edges
    return torch.bucketize(flow.contiguous(), edges, right=True)  # [lo, hi) bins; 1 in the last


def prepared_step(frames: int, flows: int) -> int:
    """s of the prepared flow t→t+s (``raysup prepare --flow-step``): clips of T frames hold T−s flows."""
    return frames - flows


def check_specs(cfg: Config, specs) -> None:
    if "flow" not in specs or "frames" not in specs:
        raise ConfigError("cpfs needs frames and flow: prepare the data with --flow farneback (or tvl1/dis)")
    frames, steps = specs["frames"].shape[0], specs["flow"].shape[0]
    step = prepared_step(frames, steps)
    if step not in (1, cfg.flow_step):
        raise ConfigError(f"method.flow_step: {cfg.flow_step}, but the prepared flow is t→t+{step} (prepare with --flow-step {cfg.flow_step}, "
                          f"or 1 to compose it, or set method.flow_step={step})")
    if cfg.flow_step > steps and step == 1:
        raise ConfigError(f"method.flow_step: flow t→t+{cfg.flow_step} needs clips of more than {cfg.flow_step} frames; "
                          f"the prepared clips have {steps + 1} (prepare with --clip-frames {cfg.flow_step + 1} or more, or lower method.flow_step)")


def check(cfg: TrainConfig, data: PreparedData) -> None:
    check_specs(cfg.method, data.specs)
    check_batch(cfg, train_split(data, cfg.method.val_fraction))


def build(cfg: TrainConfig, specs) -> CPFS:
    check_specs(cfg.method, specs)
    return CPFS(cfg.method)


def datasets(cfg: TrainConfig, data: PreparedData, labels: str | None) -> Stage:
    """Every prepared video's clips (labels are not used), ``val_fraction`` of the videos held
    out for the early-stopping loss (none held out: no validation); each split reads only the
    shards holding its videos (:meth:`PreparedData.shards`)."""
    fraction = cfg.method.val_fraction
    train = data.dataset(list(COLUMNS), crop=None, shuffle=cfg.seed, held=False, fraction=fraction)  # another file order every epoch
    val = data.dataset(list(COLUMNS), crop=None, held=True, fraction=fraction) if data.split_counts(fraction, held=True)["videos"] else None
    # t drawn before decoding, so that only frame t and its flow fields (1 stored directly, else k) are decoded
    t, k = data.specs["frames"].shape[0], cfg.method.flow_step
    window = {"clip_frames": t, "step": k, "fields": 1 if prepared_step(t, data.specs["flow"].shape[0]) == k else k}
    train = train.map_batches(draw_window, batch_format="pyarrow", fn_kwargs=window)
    val = val.map_batches(draw_window, batch_format="pyarrow", fn_kwargs={**window, "t": eval_frame(t, k)}) if val is not None else None
    return Stage(train=train, val=val, rows_per_epoch=data.split_counts(fraction, held=False)["clips"])


# --- evaluation -------------------------------------------------------------------------------
# Mahendran et al. 2018 §4 compare with Zhang et al.'s results: their linear classification test
# (richzhang/colorization, feature_learning_tests/linear, as used in the Split-Brain paper): each
# frozen layer (:meth:`CPFS.taps`) bilinearly resized to ~9-10K elements (train_val.prototxt:
# conv1 10×10, conv2 6×6, conv3 and conv4 5×5, conv5 6×6), a batch norm without learned
# parameters, a softmax layer; solver.prototxt: SGD lr 0.01, momentum 0.9, weight decay 5e-4,
# batch 64 × iter_size 4 = 256, 140K iterations, lr ×0.1 every 40K. ImageNet's 1.28M images make
# that 28 epochs with steps after 8, 16 and 24. Their random crops and mirrors of the probe's
# training images are not repeated here: the features are the centre crop's, extracted once.
CONV_SIZES = (("rgb_conv1", 10), ("rgb_conv2", 6), ("rgb_conv3", 5), ("rgb_conv4", 5), ("rgb_conv5", 6))
ZHANG_LINEAR = LinearLayer("sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=256, epochs=28, milestones=(2 / 7, 4 / 7, 6 / 7), standardize=True)
# The paper's own evaluations (§4.5, papers/cpfs.md L195-240): ILSVRC12 linear probing on an
# ImageFolder (Table 2, L212-221) and VOC07 classification (Table 1 column "Cl.", L175-188;
# protocol L210, L234: "initial learning rate is 10⁻³ and drops by a factor of 2 every 10k
# iterations for a total of 80k iterations and predictions are averaged over 10 random crops",
# "in keeping with [41]" = Krähenbühl et al., whose philkr/voc-classification src/train_cls.py
# gives what the paper leaves out: batch 16, weight decay 1e-6, gradient norm clipped to 10,
# random rescaling ×0.5-2, flips, SGD momentum 0.9 (src/solver.py), a per-class sigmoid loss
# (the paper says "softmax cross-entropy", L210: VOC images carry several labels)). The
# UCF101 per-layer probe (first entry) is raysup's: the paper never evaluates on UCF101.
CPFS_TABLE2 = (("conv1", 15.0), ("conv2", 24.8), ("conv3", 28.9), ("conv4", 29.4), ("conv5", 28.0))  # L220 "Ours"
CPFS_VOC07 = (("VOC07 cls mAP", 64.4),)  # L187 "Ours"
VOC_CITES = (("lr", "papers/cpfs.md L234"), ("iterations", "L234"), ("step", "L234"), ("gamma", "L234 (×1/2)"), ("test_crops", "L234"),
             ("batch_size", "philkr/voc-classification train_cls.py -bs"), ("weight_decay", "train_cls.py"), ("clip_grad", "train_cls.py"),
             ("scale", "train_cls.py min/max_scale"), ("momentum", "solver.py SGD default"), ("crop", "L154: the network's 224 input"))  # fmt: skip
IMAGENET_CITES = (("sizes", "papers/cpfs.md L236 (~9-10K elements); Zhang et al.'s train_val.prototxt"),
                  ("linear", "Zhang et al.'s solver.prototxt (see above)"), ("crop", "L154: the network's 224 input; ours"))  # fmt: skip
PAPER_PROTOCOLS = (
    LayerProbeProtocol(sizes=CONV_SIZES, linear=ZHANG_LINEAR, test_clips=10),
    ImageLayerProbeProtocol(sizes=CONV_SIZES, linear=ZHANG_LINEAR, published=CPFS_TABLE2, cites=IMAGENET_CITES),
    VOCProtocol(key="voc07_cls", network="cpfs", lr=1e-3, iterations=80_000, step=10_000, gamma=0.5, batch_size=16, weight_decay=1e-6,
                published=CPFS_VOC07, cites=VOC_CITES),
)
