"""GDT (Patrick, Asano et al. 2020, "Multi-modal Self-Supervision from Generalized Data
Transformations"), restricted to the modality-slicing transformations t_v, t_a (T=2): a clip's
video embedding must pick out the same clip's audio embedding among negatives and vice versa
(:func:`raysup.losses.gdt_nce_loss`; only cross-modal similarities).

Negatives (``method.negatives``):

- ``queue`` (paper): MoCo-style momentum key encoders (video, audio and their heads; momentum
  0.999 in :meth:`GDT.after_step`, i.e. after the optimiser step) and one FIFO queue of keys
  per modality (15000 in the paper). The queues and their pointer are registered buffers, so
  they are in ``state_dict()``: the spine checkpoints them and a resumed run continues with the
  same queue. Keys of the whole global batch are enqueued inside ``forward`` under ``no_grad``
  (as MoCo does), only in training mode. Shuffled BN: the key encoders see the global batch in
  an order permuted across workers (``raysup.dist`` all_gather + a broadcast permutation; an
  identity in one process).
- ``batch`` (official code): no key encoders; query b's negatives are the other modality's
  embeddings of every *other* clip of the global batch, gathered with gradients
  (``raysup.dist.all_gather(grad=True)``) → W·B−1 negatives per query.

Transformations: video — the stream's random crop (``crop_size``), a random resized crop
(``method.crop_scale``; (1, 1): none) and horizontal flip, standardised per clip or with the
official code's fixed mean and std (``method.video_norm``; :func:`raysup.data.transforms.video_input`); audio — volume jitter (random gain in dB on the
log-mel, applied after the spectrogram's standardisation statistics are taken, so that it is
not cancelled) and SpecAugment (``method.specaugment`` none/mild/medium/strong, or
``specaugment=none`` with explicit ``method.specaugment_masks = nf,f,nt,t``; masks are set to 0, the mean of the standardised
spectrogram). Both only in training mode.

Sampling (:func:`datasets`): every epoch each read task reads whole videos' clips and draws from
each video ``draws_per_epoch`` clips (the paper: one;
:meth:`raysup.data.ingest.PreparedData.video_draws`) — with ``temporal_jitter`` uniformly
random ones (seeded by the run's seed and the epoch, so different every epoch), without
it always its first clip (lowest ``clip_index`` with audio). With ``sync=False`` (asynchronous
audio/video starts) each row also carries ``audio_async``: the audio of a random *other* clip of
the same video (the same clip if the video has only one), and the method pairs the video with it
instead of ``audio``. Clips without audio are dropped (they have no positive).
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from raysup import dist
from raysup.config import ConfigError, OptimConfig, TrainConfig
from raysup.data.ingest import PreparedData
from raysup.data.specaugment import SPECAUGMENT_PRESETS, SpecAugmentParams, spec_augment, volume_jitter
from raysup.data.tables import ASYNC_AUDIO
from raysup.data.transforms import audio_input, check_crop_scale, video_input
from raysup.losses import gdt_nce_loss, gdt_reid_top1
from raysup.methods.base import Encoder, Method, Stage, check_batch
from raysup.models import audio_encoder, video_encoder
from raysup.models.parts import mlp_head, momentum_update, shuffle_across_workers
from raysup.protocol_specs import AudioClipsProtocol, FinetuneProtocol, FrozenProtocol, LinearLayer

# SpecAugment levels [nf, f, nt, t]: mild and strong are Table 1b's (papers/gdt.md L170: "n_f = 1,
# f = 2, n_t = 1 and t = 5" and "n_f = 2, f = 3, n_t = 2 and t = 6"); medium is the official K400
# script's AUD_AUG_TYPE=medium (authors' code; the paper's text names no setting for its final model)
SPECAUGMENT_LEVELS = {**SPECAUGMENT_PRESETS, "medium": SpecAugmentParams(1, 3, 1, 6)}


@dataclass(frozen=True)
class Config:
    video_encoder: str = "r2plus1d_18"
    audio_encoder: str = "resnet18_audio"
    head_hidden: int = 0  # MLP head D→hidden→out; 0: the video encoder's out_dim (512 paper, 128 tiny)
    head_out: int = 0
    tau: float = 0.07
    negatives: Literal["queue", "batch"] = "queue"
    queue_size: int = 15000  # keys per modality (queue mode)
    momentum: float = 0.999  # key encoders (queue mode)
    shuffle_bn: bool = True  # queue mode, several workers
    specaugment: Literal["none", "mild", "medium", "strong"] = "none"  # SPECAUGMENT_LEVELS
    specaugment_masks: tuple[int, ...] = ()  # explicit nf,f,nt,t, with specaugment=none
    volume_jitter_db: float = 0.0  # max |gain| in dB (power)
    sync: bool = True  # False: audio from another clip of the same video
    temporal_jitter: bool = True  # False: always a video's first clip
    draws_per_epoch: int = 1  # clips each video contributes per epoch (the paper: 1)
    crop_scale: tuple[float, ...] = (0.5, 1.0)  # area fraction of the video's random resized crop; (1, 1): none (flip only)
    video_norm: Literal["clip", "fixed"] = "clip"  # per-clip standardisation, or the official (x − 0.45)/0.225

    def validate(self) -> None:
        if self.tau <= 0:
            raise ValueError(f"tau: must be > 0, got {self.tau}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size: must be >= 1, got {self.queue_size}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum: must be in [0, 1), got {self.momentum}")
        if self.head_hidden < 0 or self.head_out < 0:
            raise ValueError("head_hidden/head_out: must be >= 0 (0: encoder out_dim)")
        if self.specaugment_masks and (len(self.specaugment_masks) != 4 or min(self.specaugment_masks) < 0):
            raise ValueError(f"specaugment_masks: expected 4 non-negative ints nf,f,nt,t, got {self.specaugment_masks}")
        if self.specaugment_masks and self.specaugment != "none":
            raise ValueError(f"specaugment_masks: explicit masks and specaugment={self.specaugment!r} both set; "
                             "set method.specaugment=none to use the masks, or drop them")
        if self.draws_per_epoch < 1:
            raise ValueError(f"draws_per_epoch: must be >= 1, got {self.draws_per_epoch}")
        check_crop_scale(self.crop_scale)
        if self.volume_jitter_db < 0:
            raise ValueError(f"volume_jitter_db: must be >= 0, got {self.volume_jitter_db}")

    @property
    def specaugment_params(self) -> SpecAugmentParams:
        if self.specaugment_masks:
            return SpecAugmentParams(*self.specaugment_masks)
        return SPECAUGMENT_LEVELS[self.specaugment]


# tiny: batch negatives, which learn far faster than a momentum queue over the few hundred steps
# of a CPU run (queue_size/momentum are the values to use with method.negatives=queue), and three
# clips per video per epoch over 10 epochs (measurements: docs/methods.md, "The tiny presets").
#
# paper: papers/gdt.md (Patrick et al., arXiv 2003.04298v2, 2020) §3.3 and §4.1 (L120-134), with
# the official Kinetics-400 script (scripts/pretrain_gdt_k400.sh, main_gdt.py) where the paper is
# silent. L134: "a mini-batch size of 16 on each of our 64 GPUs … The initial learning rate is set
# to 0.01 which we linearly scale with the number of GPUs, after following a gradual warm-up
# schedule for the first 10 epochs": batch 16 per worker and optim.lr_batch=16, so raysup scales
# lr 0.01 linearly to the run's global batch (64 workers × 16: 0.64). The official script runs 8
# clips per GPU at lr 0.01 per GPU, twice the paper's lr per clip (--set batch_size=8
# --set optim.lr_batch=8 gives it).
PRESETS = {
    "tiny": {
        "epochs": 10,
        "batch_size": 32,
        "method": {
            "draws_per_epoch": 3,
            "video_encoder": "r2plus1d_tiny",
            "audio_encoder": "resnet_audio_tiny",
            "negatives": "batch",
            "queue_size": 512,
            "momentum": 0.99,
            "tau": 0.1,
        },
        "optim": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5},
    },
    "paper": {
        "epochs": 200,  # L134: "We train for 200 epochs overall" (script MUM_EPOCHS=201: epochs 0-200)
        "batch_size": 16,  # L134: 16 clips per GPU (the official script: 8)
        "crop_size": 112,  # L122: frames resized to 128×171 (prepare --size 128 --width 171), random 112 crops; centre 112 to evaluate
        "method": {
            "crop_scale": (1.0, 1.0),  # L122: random cropping and horizontal flipping, no resized crop
            "video_norm": "fixed",  # paper silent; official code: (x − 0.45)/0.225, not per clip
            "video_encoder": "r2plus1d_18",  # L134 (and script VID_BASE_ARCH): R(2+1)D-18
            "audio_encoder": "resnet18_audio",  # L134: ResNet-18 on 40-mel log-mel (L120); the K400 script's AUD_BASE_ARCH is resnet9
            "head_hidden": 512,  # L134: MLP head with a hidden layer of 512, 512-D embeddings
            "head_out": 512,
            "negatives": "queue",  # L134: memory bank, MoCo's parameters [19] (the official code uses the batch)
            "queue_size": 15000,  # L134: memory bank size 15000
            "momentum": 0.999,  # L134: momentum update parameter 0.999
            "tau": 0.07,  # L134: τ = 0.07
            # L120: "apply SpecAugment" in t_a, no setting named for the final model; the official
            # script's AUD_AUG_TYPE=medium (1,3,1,6). A named level, so --set method.specaugment=
            # none/mild/strong (Table 1b, L170) replaces it
            "specaugment": "medium",
            "volume_jitter_db": 0.9,  # paper silent (L75 names volume scaling as earlier works'); script AUD_VOLUME_JITTERING: × U[0.9, 1.1] ≈ ±0.9 dB
        },
        "optim": {
            "name": "sgd", "lr": 0.01, "lr_batch": 16,  # L134: SGD, lr 0.01 per GPU of 16 clips, scaled linearly with the GPUs
            "momentum": 0.9, "weight_decay": 1e-5,  # L134: SGD momentum 0.9, weight decay 1e-5
            "warmup_epochs": 10,  # L134: gradual warm-up over the first 10 epochs [15] (Goyal et al.)
            "schedule": "constant",  # paper silent on decay; script LR_MIL=251 > 201 epochs: none
        },
    },
}

COLUMNS = ("video_id", "clip_index", "frames", "audio")


class GDT(Method):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.video = video_encoder(cfg.video_encoder)
        self.audio = audio_encoder(cfg.audio_encoder)
        hidden = cfg.head_hidden or self.video.out_dim
        out = cfg.head_out or self.video.out_dim
        self.video_head = mlp_head(self.video.out_dim, hidden, out)
        self.audio_head = mlp_head(self.audio.out_dim, hidden, out)
        if cfg.negatives == "queue":
            # momentum key encoders: start equal to the query encoders, never get gradients
            self.key_video = copy.deepcopy(self.video)
            self.key_audio = copy.deepcopy(self.audio)
            self.key_video_head = copy.deepcopy(self.video_head)
            self.key_audio_head = copy.deepcopy(self.audio_head)
            for p in self._key_modules().parameters():
                p.requires_grad_(False)
            # queue_video holds video keys (negatives of audio queries) and vice versa; [K,out]
            self.register_buffer("queue_video", F.normalize(torch.randn(cfg.queue_size, out), dim=1))
            self.register_buffer("queue_audio", F.normalize(torch.randn(cfg.queue_size, out), dim=1))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # next slot to write

    # --- pieces -------------------------------------------------------------------------------
    def _query_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.video, self.audio, self.video_head, self.audio_head])

    def _key_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.key_video, self.key_audio, self.key_video_head, self.key_audio_head])

    def video_transform(self, frames: torch.Tensor, *, train: bool) -> torch.Tensor:
        """uint8 [B,T,H,W,3] → encoder input [B,3,T,H,W] (:func:`raysup.data.transforms.video_input`)."""
        return video_input(frames, train=train, crop_scale=tuple(self.cfg.crop_scale), norm=self.cfg.video_norm)

    def audio_transform(self, log_mel: torch.Tensor, *, train: bool) -> torch.Tensor:
        """log-mel [B,M,F] → encoder input [B,1,M,F]; volume jitter + SpecAugment when training.

        The spectrogram is standardised with its own statistics *before* the volume jitter, so
        the jitter's gain survives as an offset (standardising after it would cancel it; the
        official code normalises with fixed dataset constants, which keep it too)."""
        jitter = functools.partial(volume_jitter, max_db=self.cfg.volume_jitter_db) if train and self.cfg.volume_jitter_db > 0 else None
        x = audio_input(log_mel, jitter)  # [B,1,M,F] standardised per spectrogram
        params = self.cfg.specaugment_params
        if train and params.active:
            x = spec_augment(x, params, mask_value=0.0)
        return x

    def encoders(self):
        return {"video": Encoder(self.video, self.video.out_dim), "audio": Encoder(self.audio, self.audio.out_dim)}

    def embed(self, batch, *, train=False):
        return {
            "video": self.video(self.video_transform(batch["frames"], train=train)),  # [B,D]
            "audio": self.audio(self.audio_transform(batch["audio"], train=train)),  # [B,D]
        }

    def taps(self, batch):
        """GDT appendix A.2's audio features: the audio encoder's conv5 maps [B,C,M',F'] max-pooled
        with kernel (1,3) and stride (1,2) over time (the kernel shrinks to the map when it has
        fewer than 3 frames), flattened: ``audio_conv5`` [B,C·M'·F'']."""
        maps = self.audio.conv5_maps(self.audio_transform(batch["audio"], train=False))  # [B,C,M',F']
        return {"audio_conv5": F.max_pool2d(maps, (1, min(3, maps.shape[-1])), (1, 2)).flatten(1)}

    # --- training -----------------------------------------------------------------------------
    def forward(self, batch):
        log_mel = batch["audio"] if self.cfg.sync else batch[ASYNC_AUDIO]  # [B,M,F]
        v_in = self.video_transform(batch["frames"], train=self.training)  # [B,3,T,H,W]
        a_in = self.audio_transform(log_mel, train=self.training)  # [B,1,M,F]
        v_q = self.video_head(self.video(v_in))  # [B,E]
        a_q = self.audio_head(self.audio(a_in))  # [B,E]
        if self.cfg.negatives == "batch":
            v_k, a_k = v_q, a_q  # the positive key is the same encoders' output
            audio_neg, video_neg = batch_negatives(v_q, a_q)  # [B,W·B−1,E] each
        else:
            with torch.no_grad():
                v_k, a_k = self._keys(v_in, a_in)  # [B,E] each
            audio_neg, video_neg = self.queue_audio.clone(), self.queue_video.clone()  # [K,E]
        loss = gdt_nce_loss(v_q, a_k, a_q, v_k, audio_neg, video_neg, tau=self.cfg.tau)
        reid = gdt_reid_top1(v_q.detach(), a_k.detach(), a_q.detach(), v_k.detach(), audio_neg.detach(), video_neg.detach())
        if self.cfg.negatives == "queue" and self.training:
            self.enqueue(dist.all_gather(v_k), dist.all_gather(a_k))  # [W·B,E] each
        return {"loss": loss, "reid_top1": reid}

    @torch.no_grad()
    def _keys(self, v_in: torch.Tensor, a_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key embeddings [B,E] of this worker's clips, with shuffled BN across workers."""
        if self.cfg.shuffle_bn and dist.world_size() > 1:
            (v_in, a_in), unshuffle = shuffle_across_workers([v_in, a_in])
            v_k = self.key_video_head(self.key_video(v_in))
            a_k = self.key_audio_head(self.key_audio(a_in))
            return unshuffle(v_k), unshuffle(a_k)
        return self.key_video_head(self.key_video(v_in)), self.key_audio_head(self.key_audio(a_in))

    @torch.no_grad()
    def enqueue(self, video_keys: torch.Tensor, audio_keys: torch.Tensor) -> None:
        """Write keys [n,E] (L2-normalised) FIFO into the queues, wrapping around; when n exceeds
        the queue size only the newest K survive. ``queue_ptr`` is the next slot to write, so
        the newest key is at ``queue_ptr − 1`` (mod K)."""
        k = self.queue_video.shape[0]
        n = video_keys.shape[0]
        keep = min(n, k)
        ptr = int(self.queue_ptr)
        start = (ptr + n - keep) % k
        idx = (start + torch.arange(keep, device=self.queue_video.device)) % k  # [keep]
        self.queue_video[idx] = F.normalize(video_keys[n - keep :].float(), dim=1).to(self.queue_video.dtype)
        self.queue_audio[idx] = F.normalize(audio_keys[n - keep :].float(), dim=1).to(self.queue_audio.dtype)
        self.queue_ptr.fill_((ptr + n) % k)

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Momentum update of the key encoders, k ← m·k + (1−m)·q (after the optimiser step)."""
        if self.cfg.negatives != "queue":
            return
        momentum_update(self._query_modules(), self._key_modules(), self.cfg.momentum)


def batch_negatives(video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-mode negatives: embeddings [B,E] of this worker's clips → (audio negatives,
    video negatives), each [B,W·B−1,E]: for row b, the other modality's embeddings of every
    other clip of the global batch, gathered with gradients (official GDT code)."""
    v_all = dist.all_gather(video, grad=True)  # [W·B,E]
    a_all = dist.all_gather(audio, grad=True)  # [W·B,E]
    others = other_rows(video.shape[0], dist.world_size(), dist.rank(), video.device)  # [B,W·B−1]
    return a_all[others], v_all[others]


def other_rows(batch: int, world: int, rank: int, device) -> torch.Tensor:
    """[B, W·B−1] indices into the gathered global batch: for this worker's row b, every row
    except its own (``rank·B + b``)."""
    n = world * batch
    own = rank * batch + torch.arange(batch, device=device)  # [B]
    cols = torch.arange(n - 1, device=device).expand(batch, n - 1)  # [B,N−1]
    return cols + (cols >= own[:, None]).long()  # skip the own index


def check(cfg: TrainConfig, data: PreparedData) -> None:
    if "audio" not in data.specs or "frames" not in data.specs:
        raise ConfigError("GDT needs frames and audio: the prepared data lacks one of them (prepare videos with audio, without --audio-only)")
    if not audio_videos(data):
        raise ConfigError("GDT needs audio: no prepared video has an audio track; prepare videos with audio")
    if cfg.batch_size < 2:
        raise ConfigError(f"batch_size: GDT contrasts each clip with the others of its batch (and BatchNorm needs two); needs >= 2, got {cfg.batch_size}")
    check_batch(cfg, train_rows(cfg, data), ", or raise method.draws_per_epoch")


def build(cfg: TrainConfig, specs) -> GDT:
    if "audio" not in specs:
        raise ConfigError("GDT needs audio: the prepared data has no audio column")
    return GDT(cfg.method)


def audio_videos(data: PreparedData) -> int:
    """Prepared videos with an audio track (the ones GDT draws from)."""
    return data.manifest["counts"]["videos"] - data.manifest["counts"]["no_audio"]


def train_rows(cfg: TrainConfig, data: PreparedData) -> int:
    """Clips drawn per epoch: ``draws_per_epoch`` from every video with audio."""
    return audio_videos(data) * cfg.method.draws_per_epoch


# --- data -------------------------------------------------------------------------------------
def datasets(cfg: TrainConfig, data: PreparedData, labels: str | None) -> Stage:
    """Each epoch's clips (see the module docstring): every video with audio, ``draws_per_epoch``
    clips each (labels are not used)."""
    m: Config = cfg.method
    specs = dict(data.specs)
    if not m.sync:
        specs[ASYNC_AUDIO] = specs["audio"]  # same fixed-size binary encoding
    draws = data.video_draws(list(COLUMNS), seed=cfg.seed, require=("audio",), draws=m.draws_per_epoch, first_only=not m.temporal_jitter,
                             async_audio=not m.sync)
    return Stage(train=draws, rows_per_epoch=train_rows(cfg, data), specs=specs)


# --- evaluation -------------------------------------------------------------------------------
# A.2 (L324): ESC-50's "L2 regularized linear layer with batch size 512 using the Adam optimizer
# with learning rate 1·10⁻⁴, weight-decay set to 5·10⁻⁴"; its epochs are not stated (ours: 100).
ESC_LINEAR = LinearLayer("adam", lr=1e-4, weight_decay=5e-4, batch_size=512, epochs=100)
PAPER_PROTOCOLS = (
    # A.2 (papers/gdt.md L322), video: full finetuning, SGD "with initial learning rate 0.0025,
    # which we gradually warm up to 2·10⁻² in the first 2 epochs" (warmup_from 0.0025/0.02),
    # weight decay 5·10⁻³, momentum 0.9, batch 32, 10 epochs, "the learning rate multiplied by
    # 1·10⁻² at 6 and 8 epochs"; L140: softmax scores averaged over 10 uniformly sampled clips per
    # test video (training's "10 random clips of length 30 frames from each video": an epoch here
    # is every train clip).
    FinetuneProtocol(
        key="video", encoder="video", full=True,
        optim=OptimConfig(name="sgd", lr=0.02, momentum=0.9, weight_decay=5e-3, schedule="step", milestones=(0.6, 0.8), gamma=0.01,
                          warmup_epochs=2, warmup_from=0.0025 / 0.02),
        epochs=10, batch_size=32, test_clips=10,
        published=(("UCF101 3 splits, Kinetics-400 pretraining", 88.7), ("HMDB51 3 splits, Kinetics-400 pretraining", 57.8)),  # Table 2, L198
        cites=(("optim", "papers/gdt.md L322"), ("epochs", "L322"), ("batch_size", "L322"), ("test_clips", "L140")),
    ),
    # A.2 (L324), audio: conv5 max-pooled (1,3)/(1,2) without padding (:meth:`GDT.taps`); ESC-50:
    # L2-regularised linear layer, Adam lr 1e-4, weight decay 5e-4, batch 512; DCASE: linear SVM,
    # C = 0.01, primal (official src/svm.py: LinearSVC(C), decision scores averaged per sample).
    # L164: scores averaged over a sample's sub-clips (ESC-50 10 × 2 s, DCASE 60 × 1 s: here
    # test_clips evenly spaced prepared clips). Epochs of the linear layer: not stated (ours: 100).
    FrozenProtocol(key="audio", tap="audio_conv5", linear=ESC_LINEAR, svm_c=0.01, test_clips=10),
    # The same on the audio sets themselves (prepared --audio-only; raysup.audio_protocols):
    # L164: ESC-50 "10 equally spaced 2-second sub-clips from each full audio sample", the A.2
    # linear layer; DCASE2014 "60 1-second sub-clips from each full sample" and a one-vs-all
    # linear SVM, C = 0.01 (L324); scores averaged over a sample's sub-clips, the mean over the
    # official folds (L164; A.1 ablations: fold 1 only, L318). Published (Table 3, L218,
    # Kinetics-400 pretraining): DCASE 94, ESC-50 78.6.
    AudioClipsProtocol(key="esc50", tap="audio_conv5", clips=10, seconds=2.0, classifier="linear", linear=ESC_LINEAR, svm_c=0.01,
                       task="esc50", published=(("ESC-50, Kinetics-400 pretraining", 78.6),),
                       cites=(("clips", "papers/gdt.md L164"), ("seconds", "L164"), ("linear", "L324 (epochs: ours)"), ("tap", "L324"))),
    AudioClipsProtocol(key="dcase", tap="audio_conv5", clips=60, seconds=1.0, classifier="svm", linear=ESC_LINEAR, svm_c=0.01,
                       task="dcase", published=(("DCASE2014, Kinetics-400 pretraining", 94.0),),
                       cites=(("clips", "papers/gdt.md L164"), ("seconds", "L164"), ("svm_c", "L324"), ("tap", "L324"))),
)  # fmt: skip
