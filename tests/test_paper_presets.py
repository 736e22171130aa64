"""Every hyperparameter of every ``paper`` preset, pinned to its source: the line of the paper's
text in ../shared/papers (``L123`` in a comment is papers/<method>.md line 123), or, where the
paper is silent, the authors' code or "ours". Plus the behaviour behind the values that are more
than a number: GDT's lr scaling, its finetuning schedule and its volume jitter surviving
standardisation, and Cross and Learn's fc6 (no BN; dropout never on the features that enter the
loss)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from raysup.config import OptimConfig
from raysup.methods import make_config
from raysup.methods.gdt import GDT
from raysup.models import image_encoder
from raysup.train import lr_factor, make_optimizer

# (method, preset, field, value): the value make_config gives; the comment is its source
PINNED = [
    # --- Cross and Learn (Sayed, Brattoli, Ommer, GCPR 2018; papers/cross-and-learn.md) ----------
    ("cross_and_learn", "paper", "method.encoder", "caffenet_bn"),  # L95: CaffeNet, BN on all conv layers
    ("cross_and_learn", "paper", "method.flow_fields", 10),  # L97: 10 stacked flow frames (20 channels)
    ("cross_and_learn", "paper", "method.diff_fields", 4),  # L174-185: 5 frames, 4 frame differences (12 channels)
    ("cross_and_learn", "paper", "crop_size", 224),  # L101: rescaled to height 256 (prepare --size 256), random 224 crops
    ("cross_and_learn", "paper", "method.crop_scale", (1.0, 1.0)),  # L101: crop and flip only, no scale or aspect jitter
    ("cross_and_learn", "paper", "method.dropout", 0.5),  # L95: dropout 0.5 (official: on fc6's input)
    ("cross_and_learn", "paper", "method.eps", 1e-5),  # L103: ε = 1e-5 "or bigger"
    ("cross_and_learn", "paper", "method.div_weight", 1.0),  # eq. 4: L_cross − L_div, equal weights
    ("cross_and_learn", "paper", "method.time_flip", True),  # L101: temporal flips of the flow stack (not of SOD, L185)
    ("cross_and_learn", "paper", "method.channel_split", True),  # L101: channel splitting
    ("cross_and_learn", "paper", "method.pretrain_split", "train"),  # L97: the trainset of UCF-101; L113: the same split as finetuning
    ("cross_and_learn", "paper", "method.pairs_per_video", 6),  # ours: the paper counts iterations, not epochs
    ("cross_and_learn", "paper", "batch_size", 60),  # L99: 60 videos, B = 30 tuples of 2 pairs
    ("cross_and_learn", "paper", "epochs", 68),  # L103: 65K iterations ≈ 68 epochs × 954 (UCF101 split 1, 6 pairs/video)
    ("cross_and_learn", "paper", "optim.name", "sgd"),  # L103: SGD
    ("cross_and_learn", "paper", "optim.lr", 0.01),  # L103: lr 0.01
    ("cross_and_learn", "paper", "optim.schedule", "step"),  # L103: lr 0.01 → 0.001
    ("cross_and_learn", "paper", "optim.milestones", (0.769,)),  # L103: after 50K of 65K iterations
    ("cross_and_learn", "paper", "optim.gamma", 0.1),  # L103: 0.01 → 0.001
    ("cross_and_learn", "paper", "optim.momentum", 0.9),  # L103: momentum 0.9
    ("cross_and_learn", "paper", "optim.weight_decay", 5e-4),  # L103: weight decay 5e-4
    ("cross_and_learn", "paper_vgg16", "method.encoder", "vgg16_bn"),  # L109: VGG16 (BN as L95)
    ("cross_and_learn", "paper_vgg16", "method.flow_fields", 10),  # L109: all other hyperparameters unchanged
    ("cross_and_learn", "paper_vgg16", "crop_size", 224),  # L109: unchanged
    ("cross_and_learn", "paper_vgg16", "method.crop_scale", (1.0, 1.0)),  # L109: unchanged
    ("cross_and_learn", "paper_vgg16", "method.pretrain_split", "train"),  # L109: unchanged (L97)
    ("cross_and_learn", "paper_vgg16", "batch_size", 24),  # L109: B = 12 tuples
    ("cross_and_learn", "paper_vgg16", "optim.lr", 0.005),  # L109: lr 0.005
    ("cross_and_learn", "paper_vgg16", "optim.momentum", 0.9),  # L109: unchanged (L103)
    ("cross_and_learn", "paper_vgg16", "optim.weight_decay", 5e-4),  # L109: unchanged (L103)
    ("cross_and_learn", "paper_vgg16", "epochs", 67),  # L109: 160K iterations ≈ 67 epochs × 2384
    ("cross_and_learn", "paper_vgg16", "optim.milestones", (0.769,)),  # not given for 160K iterations: the CaffeNet fraction (ours)
    # --- GDT (Patrick et al. 2020, papers/gdt.md; the official scripts/pretrain_gdt_k400.sh where it is silent)
    ("gdt", "paper", "method.video_encoder", "r2plus1d_18"),  # L134: R(2+1)-D-18
    ("gdt", "paper", "method.audio_encoder", "resnet18_audio"),  # L134: ResNet-18 (script: resnet9; kept)
    ("gdt", "paper", "method.tau", 0.07),  # L134: τ = 0.07
    ("gdt", "paper", "method.negatives", "queue"),  # L134: memory bank of negatives
    ("gdt", "paper", "method.queue_size", 15000),  # L134: memory bank size 15000
    ("gdt", "paper", "method.momentum", 0.999),  # L134: momentum update parameter 0.999
    ("gdt", "paper", "method.shuffle_bn", True),  # L134: shuffling of the batchnorm statistics
    ("gdt", "paper", "method.head_hidden", 512),  # L134: MLP head, hidden layer 512 …
    ("gdt", "paper", "method.head_out", 512),  # … 512-D embeddings
    ("gdt", "paper", "method.specaugment", "medium"),  # L120: SpecAugment in t_a, no level named; script AUD_AUG_TYPE=medium (1,3,1,6)
    ("gdt", "paper", "method.specaugment_masks", ()),  # none: --set method.specaugment=none/mild/strong (Table 1b, L170) decides
    ("gdt", "paper", "method.volume_jitter_db", 0.9),  # paper silent; script: waveform × U[0.9, 1.1] ≈ ±0.9 dB
    ("gdt", "paper", "method.sync", True),  # the final model: synchronised audio (Table 1b, L170)
    ("gdt", "paper", "method.temporal_jitter", True),  # the final model: temporal jitter (Table 1a, L168)
    ("gdt", "paper", "method.draws_per_epoch", 1),  # paper silent; one clip per video per epoch (script NUM_CLIPS=1)
    ("gdt", "paper", "batch_size", 16),  # L134: mini-batch 16 on each GPU (script: 8)
    ("gdt", "paper", "crop_size", 112),  # L122: resize to 128×171 (prepare --size 128 --width 171), random 112 crop
    ("gdt", "paper", "method.crop_scale", (1.0, 1.0)),  # L122: random cropping and flipping, no resized crop
    ("gdt", "paper", "method.video_norm", "fixed"),  # paper silent; official GDTPretrainDataset: (x − 0.45)/0.225
    ("gdt", "paper", "epochs", 200),  # L134: 200 epochs
    ("gdt", "paper", "optim.name", "sgd"),  # L134: SGD
    ("gdt", "paper", "optim.lr", 0.01),  # L134: initial lr 0.01 …
    ("gdt", "paper", "optim.lr_batch", 16),  # … per GPU of 16 clips, linearly scaled with the number of GPUs
    ("gdt", "paper", "optim.momentum", 0.9),  # L134: SGD momentum 0.9
    ("gdt", "paper", "optim.weight_decay", 1e-5),  # L134: SGD weight decay 1e-5
    ("gdt", "paper", "optim.warmup_epochs", 10.0),  # L134: gradual warm-up for the first 10 epochs
    ("gdt", "paper", "optim.schedule", "constant"),  # paper silent on decay; script LR_MIL=251 > 201 epochs: none
    # --- XDC (Alwassel et al., NeurIPS 2020; papers/xdc.md) -------------------------------------
    ("xdc", "paper", "method.variant", "xdc"),  # §3: cross-modal deep clustering
    ("xdc", "paper", "method.video_encoder", "r2plus1d_18"),  # L103: 18-layer R(2+1)D
    ("xdc", "paper", "method.audio_encoder", "resnet18_audio"),  # L103: 18-layer ResNet on 40 × 100 log-mel
    ("xdc", "paper", "method.k_audio", 128),  # Table 6 (L187-193): the Kinetics model's audio clusters #1-#128
    ("xdc", "paper", "method.k_video", 64),  # Table 6 (L187-193): its video clusters #1-#64
    ("xdc", "paper", "method.rounds", 6),  # L115: "5 to 6 deep clustering iterations" (ours: 6)
    ("xdc", "paper", "method.pca_dim", 256),  # paper silent: DeepCluster's PCA-whitening (ours)
    ("xdc", "paper", "method.epoch_clips", 1_000_000),  # Table 10 (L393): es 1M
    ("xdc", "paper", "batch_size", 32),  # Table 10 (L393): bs 32
    ("xdc", "paper", "crop_size", 224),  # L103: 256 short side (prepare --size 256), random 224 crops
    ("xdc", "paper", "method.crop_scale", (1.0, 1.0)),  # L103: plain random 224 crops, no resized crop
    ("xdc", "paper", "method.video_norm", "kinetics"),  # paper silent: the XDC author, HumamAlwassel/XDC issue #2
    ("xdc", "paper", "epochs", 30),  # Table 10 (L393): te 30
    ("xdc", "paper", "patience", 3),  # Table 9 (L386) e-stop, "yes" for Kinetics (L393): 3 epochs
    ("xdc", "paper", "optim.name", "sgd"),  # L373: distributed SGD
    ("xdc", "paper", "optim.lr", 0.01),  # Table 10 (L393): lr 0.01 …
    ("xdc", "paper", "optim.lr_batch", 32),  # … at bs 32, scaled linearly with the global batch (Goyal et al., L373)
    ("xdc", "paper", "optim.momentum", 0.9),  # paper silent: VMZ's train_net.py
    ("xdc", "paper", "optim.weight_decay", 1e-4),  # Table 10 (L393): wd 1e-4
    ("xdc", "paper", "optim.warmup_epochs", 10.0),  # Table 10 (L393): we 10; L373: Goyal et al.'s warm-up
    ("xdc", "paper", "optim.schedule", "step"),  # Table 9 (L382-383): ×γ every se epochs
    ("xdc", "paper", "optim.milestones", (20 / 30,)),  # Table 10 (L393): se 10 after the 10 warm-up epochs, of 30
    ("xdc", "paper", "optim.gamma", 0.01),  # Table 10 caption (L388): γ = 0.01
    ("xdc", "paper_audioset", "method.epoch_clips", 2_000_000),  # Table 10 (L394): es 2M
    ("xdc", "paper_audioset", "method.k", 256),  # Table 2 (L129-131): AudioSet's best k for UCF101/HMDB51
    ("xdc", "paper_audioset", "method.k_video", 0),  # one k for both clusterings
    ("xdc", "paper_audioset", "epochs", 45),  # Table 10 (L394): te 45
    ("xdc", "paper_audioset", "patience", 3),  # Table 10 (L394): e-stop yes
    ("xdc", "paper_audioset", "optim.lr", 0.01),  # Table 10 (L394)
    ("xdc", "paper_audioset", "optim.weight_decay", 1e-4),  # Table 10 (L394)
    ("xdc", "paper_audioset", "optim.warmup_epochs", 10.0),  # Table 10 (L394): we 10
    ("xdc", "paper_audioset", "optim.milestones", (20 / 45, 30 / 45, 40 / 45)),  # Table 10 (L394): se 10 after we 10, of 45
    ("xdc", "paper_audioset", "optim.gamma", 0.01),  # L388
    ("xdc", "paper_audioset", "crop_size", 224),  # L103
    ("xdc", "paper_ig", "method.epoch_clips", 10_000_000),  # Table 10 (L395): es 10M
    ("xdc", "paper_ig", "method.k", 256),  # paper silent for IG: AudioSet's best (ours)
    ("xdc", "paper_ig", "epochs", 10),  # Table 10 (L395): te 10 (IG*'s 0/9/30 last iteration not modelled)
    ("xdc", "paper_ig", "patience", 0),  # Table 10 (L395): e-stop no
    ("xdc", "paper_ig", "optim.warmup_epochs", 1.0),  # Table 10 (L395): we 1
    ("xdc", "paper_ig", "optim.milestones", (0.4, 0.7)),  # Table 10 (L395): se 3 after we 1, of 10
    ("xdc", "paper_ig", "optim.gamma", 0.01),  # L388
    ("xdc", "paper_ig", "batch_size", 32),  # Table 10 (L395)
    ("xdc", "paper_ig", "crop_size", 224),  # L103
    ("xdc", "paper_32f", "method.k_audio", 128),  # as paper (Table 6): Table 7's Kinetics model
    ("xdc", "paper_32f", "epochs", 30),  # as paper: Table 10 (L393), "training is similar to our ablations" (L199)
    ("xdc", "paper_32f", "batch_size", 32),  # the rounds: Table 10 (L393)
    ("xdc", "paper_32f", "method.window_frames", 8),  # the rounds: 8-frame clips (L103) of the 32-frame prepared clips
    ("xdc", "paper_32f_long", "method.window_frames", 0),  # L199: the video encoder retrained with all 32 frames …
    ("xdc", "paper_32f_long", "method.k_audio", 128),  # … on the last clustering of the paper_32f run (its k, Table 6)
    ("xdc", "paper_32f_long", "epochs", 30),  # L199: "training is similar to our ablations": te 30 (Table 10 L393)
    ("xdc", "paper_32f_long", "batch_size", 8),  # L400: mini-batch 8 for 32-frame clips
    ("xdc", "paper_32f_long", "optim.lr", 0.0025),  # L400: base lr 0.0025 …
    ("xdc", "paper_32f_long", "optim.lr_batch", 8),  # … at batch 8
    ("xdc", "paper_32f_long", "optim.warmup_epochs", 10.0),  # as the rounds (Table 10 L393)
    ("xdc", "paper_32f_long", "optim.gamma", 0.01),  # L388
    # --- XDC's Superv baseline (papers/xdc.md L99: supervised pretraining on a large labelled set, then finetuned)
    ("supervised", "paper", "method.video_encoder", "r2plus1d_18"),  # L103: the encoders of every XDC model
    ("supervised", "paper", "method.audio_encoder", "resnet18_audio"),  # L103
    ("supervised", "paper", "method.epoch_clips", 1_000_000),  # Table 10 (L391): Superv Kinetics, es 1M
    ("supervised", "paper", "batch_size", 32),  # Table 10 (L391): bs 32
    ("supervised", "paper", "crop_size", 224),  # L103: random 224 crops of a 256 short side
    ("supervised", "paper", "method.crop_scale", (1.0, 1.0)),  # L103: no resized crop
    ("supervised", "paper", "method.video_norm", "kinetics"),  # paper silent: as XDC's preset
    ("supervised", "paper", "epochs", 45),  # Table 10 (L391): te 45
    ("supervised", "paper", "patience", 0),  # Table 10 (L391): e-stop no
    ("supervised", "paper", "optim.name", "sgd"),  # L373: SGD
    ("supervised", "paper", "optim.lr", 0.01),  # Table 10 (L391): lr 0.01 …
    ("supervised", "paper", "optim.lr_batch", 32),  # … at bs 32 (Goyal et al.'s linear scaling, L373)
    ("supervised", "paper", "optim.momentum", 0.9),  # paper silent: VMZ's, as XDC's preset
    ("supervised", "paper", "optim.weight_decay", 1e-4),  # Table 10 (L391): wd 1e-4
    ("supervised", "paper", "optim.warmup_epochs", 10.0),  # Table 10 (L391): we 10
    ("supervised", "paper", "optim.schedule", "step"),  # Table 9 (L382-383)
    ("supervised", "paper", "optim.milestones", (20 / 45, 30 / 45, 40 / 45)),  # Table 10 (L391): se 10 after we 10, of 45
    ("supervised", "paper", "optim.gamma", 0.01),  # Table 10 caption (L388)
    ("supervised", "paper_audioset", "method.epoch_clips", 2_000_000),  # Table 10 (L392): Superv AudioSet, es 2M
    ("supervised", "paper_audioset", "batch_size", 32),  # Table 10 (L392)
    ("supervised", "paper_audioset", "crop_size", 224),  # L103
    ("supervised", "paper_audioset", "epochs", 45),  # Table 10 (L392): te 45
    ("supervised", "paper_audioset", "patience", 0),  # Table 10 (L392): e-stop no
    ("supervised", "paper_audioset", "optim.lr", 0.04),  # Table 10 (L392): lr 0.04
    ("supervised", "paper_audioset", "optim.weight_decay", 1e-5),  # Table 10 (L392): wd 1e-5
    ("supervised", "paper_audioset", "optim.warmup_epochs", 10.0),  # Table 10 (L392): we 10
    ("supervised", "paper_audioset", "optim.milestones", (30 / 45,)),  # Table 10 (L392): se 20 after we 10, of 45
    ("supervised", "paper_audioset", "optim.gamma", 0.01),  # L388
    # --- Cross-pixel optical-flow similarity (Mahendran, Thewlis, Vedaldi, ACCV 2018; papers/cpfs.md)
    ("cpfs", "paper", "method.backbone", "alexnet"),  # L121: Pathak et al.'s AlexNet, sparse hypercolumns; BN (L154)
    ("cpfs", "paper", "method.embed_dim", 16),  # L121: D = 16
    ("cpfs", "paper", "method.pixels", 512),  # L154: 512 pixels per image
    ("cpfs", "paper", "method.flow_step", 5),  # L125: flow between frames t and t+5
    ("cpfs", "paper", "method.max_flow", 56.0),  # L137: M = 56.0
    ("cpfs", "paper", "method.target", "learned"),  # L91: σ learned with the CNN
    ("cpfs", "paper", "method.loss", "cross_entropy"),  # eq. 3 (L99): cross-entropy of the column softmaxes
    ("cpfs", "paper", "batch_size", 96),  # L154: batch of 96 frames
    ("cpfs", "paper", "crop_size", 224),  # L154: 224 × 224 crops (prepare --size 256)
    ("cpfs", "paper", "method.min_crop", 0.5),  # L154: scale, flip and crop augmentation (range not stated: ours)
    ("cpfs", "paper", "patience", 5),  # L139: early stopping on a validation loss (patience: ours)
    ("cpfs", "paper", "optim.name", "adam"),  # L143: Adam
    ("cpfs", "paper", "optim.lr", 1e-4),  # L143: lr 1e-4
    ("cpfs", "paper", "optim.weight_decay", 0.0),  # L143: no weight decay
    ("cpfs_direct", "paper", "method.target", "direct"),  # L171: the direct prediction baseline
    ("cpfs_direct", "paper", "method.bins", 16),  # L171: 16 discrete flow classes per component
    ("cpfs_direct", "paper", "batch_size", 96),  # L154: as cpfs
    ("cpfs_direct", "paper", "optim.lr", 0.01),  # L171: "a faster initial learning rate of 0.01"
    ("cpfs_direct", "paper", "crop_size", 224),  # L154: as cpfs
]


def _field(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize(("method", "preset", "field", "value"), PINNED, ids=[f"{m}-{p}-{f}" for m, p, f, _ in PINNED])
def test_paper_preset_value(method, preset, field, value):
    got = _field(make_config(method, preset), field)
    assert got == value and type(got) is type(value), f"{method} --preset {preset}: {field} = {got!r}, the source says {value!r}"


def test_every_paper_preset_is_pinned():
    """A new paper preset (or method) must come with its rows above."""
    from raysup.methods import METHODS

    ours = {m: mod for m, mod in METHODS.items() if mod.__name__.startswith("raysup.")}  # not a plugin a test registered
    paper = {(m, p) for m, mod in ours.items() for p in mod.PRESETS if p.startswith("paper")}
    assert paper == {(m, p) for m, p, _, _ in PINNED}


def test_supervised_epoch_draws_repeat_each_clip_about_the_rate():
    """An epoch of ``method.epoch_clips`` clips (Table 9 L378 "es"): each clip drawn
    floor(rate) or floor(rate) + 1 times, about epoch_clips in all."""
    import numpy as np
    import pyarrow as pa

    from raysup.data.tables import repeat_rows

    batch = pa.table({"video_id": [f"v{i}" for i in range(1000)]})
    drawn = repeat_rows(batch, rate=2.5, rng=np.random.default_rng(0))
    counts = np.unique(drawn["video_id"].to_numpy(zero_copy_only=False), return_counts=True)[1]
    assert set(counts) == {2, 3} and abs(drawn.num_rows - 2500) < 100
    assert drawn["video_id"].to_pylist()[:3] != ["v0", "v0", "v0"]  # shuffled, not runs of copies


def test_gdt_lr_scales_with_the_global_batch():
    """papers/gdt.md L134: lr 0.01 per GPU of 16 clips, linearly scaled with the GPUs (64: 0.64)."""
    net = nn.Linear(2, 2)
    optim = make_config("gdt", "paper").optim
    assert make_optimizer(optim, net, global_batch=64 * 16).param_groups[0]["lr"] == pytest.approx(0.64)
    assert make_optimizer(optim, net, global_batch=16).param_groups[0]["lr"] == pytest.approx(0.01)
    assert make_optimizer(OptimConfig(lr=0.01), net, global_batch=128).param_groups[0]["lr"] == 0.01  # lr_batch 0: as given


def test_gdt_volume_jitter_survives_the_standardisation():
    torch.manual_seed(0)
    cfg = make_config("gdt", "tiny", {"method.volume_jitter_db": 6.0}).method
    gdt = GDT(cfg)
    log_mel = torch.randn(16, 40, 99) + 5.0  # well above the log floor: the gain is an offset
    shift = gdt.audio_transform(log_mel, train=True) - gdt.audio_transform(log_mel, train=False)  # [B,1,M,F]
    per_clip = shift.flatten(1)
    # one constant offset per clip (the gain), different between clips, bounded by ±6 dB / std
    torch.testing.assert_close(per_clip, per_clip[:, :1].expand_as(per_clip), atol=1e-4, rtol=0)
    bound = 6.0 * torch.log(torch.tensor(10.0)) / 10 / log_mel.std(dim=(1, 2))
    assert (per_clip[:, 0].abs() <= bound * 1.001).all() and per_clip[:, 0].abs().max() > 0.2 * bound.min()
    assert per_clip[:, 0].std() > 0


@pytest.mark.parametrize("name", ["caffenet_bn", "vgg16_bn"])
def test_paper_image_encoders_have_bn_on_convs_only_and_no_dropout_on_their_features(name):
    net = image_encoder(name, 20)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in net.modules())  # §4: BN on the conv layers
    convs = [m for m in net.features.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in net.features.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(bns) > 0
    fc6 = list(net.fc6)
    assert isinstance(fc6[-1], nn.ReLU) and isinstance(fc6[-2], nn.Linear)  # features: fc6 after ReLU
    assert any(isinstance(m, nn.Dropout) for m in fc6[: fc6.index(fc6[-2])])  # dropout on fc6's input
    # training mode: dropout on fc6's *input* changes every unit; dropout on its output would only
    # zero some, leaving the units that survive both passes equal
    if name == "caffenet_bn":
        net.train()
        x = torch.randn(4, 20, 224, 224)
        a, b = net(x), net(x)
        assert not torch.equal(a, b)
        both = (a > 0) & (b > 0)
        assert not torch.allclose(a[both] / b[both], torch.ones_like(a[both]))  # differ by more than masking


def test_gdt_finetuning_schedule_follows_a2():
    """papers/gdt.md L322: lr 0.0025 warmed up to 0.02 over the first 2 epochs, ×0.01 at epochs 6
    and 8 of 10."""
    from raysup.methods.gdt import PAPER_PROTOCOLS

    ft = PAPER_PROTOCOLS[0]
    spe = 50  # steps per epoch
    lr = [ft.optim.lr * lr_factor(ft.optim, s, spe, ft.epochs) for s in range(spe * ft.epochs)]
    assert lr[0] == pytest.approx(0.0025, abs=(0.02 - 0.0025) / (2 * spe)) and lr[:2 * spe] == sorted(lr[:2 * spe])
    assert lr[2 * spe:6 * spe] == pytest.approx([0.02] * 4 * spe)
    assert lr[6 * spe:8 * spe] == pytest.approx([2e-4] * 2 * spe) and lr[8 * spe:] == pytest.approx([2e-6] * 2 * spe)
    assert (ft.optim.weight_decay, ft.optim.momentum, ft.batch_size, ft.epochs, ft.test_clips) == (5e-3, 0.9, 32, 10, 10)


def _experiments():
    import glob
    import os
    import runpy

    root = os.path.join(os.path.dirname(__file__), "..", "experiments")
    scripts = {os.path.basename(p): runpy.run_path(p) for p in sorted(glob.glob(os.path.join(root, "*.py")))}
    return {name: ns["EXPERIMENT"] for name, ns in scripts.items() if "EXPERIMENT" in ns}  # the sweeps


def test_every_sweeps_published_numbers_name_its_paper_rows():
    """Each --paper table prints the paper's numbers beside ours: every published row is a point
    of the paper grid or a baseline row the sweep has, so none is silently left blank."""
    import itertools

    for script, exp in _experiments().items():
        assert exp.published, f"{script}: no published numbers"
        points = set(itertools.product(*exp.paper_grid.values()))
        randoms = {("random init" + "".join(f" ({v})" for v in values),) for values in itertools.product(*(exp.paper_grid[k] for k in exp.random_per))}
        rows = points | randoms | ({("supervised",)} if exp.supervised else set())
        assert set(exp.published) <= rows, (script, set(exp.published) - rows)
        assert all(c.startswith("paper ") and 0 < v < 100 for r in exp.published.values() for c, v in r.items())


def test_published_columns_sit_beside_ours():
    import pandas as pd

    from raysup.sweep.results import published_columns

    df = pd.DataFrame({"method.variant": ["sdc", "xdc", "random init"], "method.k": [16, 16, None], "video": [0.5, 0.6, 0.3]})
    got = published_columns(df, ["method.variant", "method.k"], {("xdc", 16): {"paper UCF101": 74.2}, ("random init",): {"paper UCF101": 54.5}})
    assert got["paper UCF101"].tolist()[1:] == [74.2, 54.5] and pd.isna(got["paper UCF101"][0])


def test_xdc_finetune_lr_grid_and_validation_split():
    """Table 12 (papers/xdc.md L422-423): the base-lr grids; the search's validation part is held-out train videos only."""
    from raysup.data.labels import LabelRow
    from raysup.data.tables import is_held_out
    from raysup.methods.xdc import FINETUNE_LRS, PAPER_PROTOCOLS
    from raysup.protocol_specs import FinetuneProtocol
    from raysup.sweep.lr_cv import validation_rows

    assert (FINETUNE_LRS["video"], FINETUNE_LRS["video_fc"]) == ((0.001, 0.002, 0.004, 0.006, 0.008, 0.01), (0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.02, 0.04))
    assert set(FINETUNE_LRS) == {p.key for p in PAPER_PROTOCOLS if isinstance(p, FinetuneProtocol)} == {"video", "video_fc", "esc50", "esc50_fc"}
    assert FINETUNE_LRS["esc50"] == FINETUNE_LRS["video"] and FINETUNE_LRS["esc50_fc"] == FINETUNE_LRS["video_fc"]  # L402, L419: the same sets
    rows = [LabelRow(f"v{i}", f"c{i % 3}", "test" if i % 4 == 0 else "train") for i in range(200)]
    val = validation_rows(rows, 0.1)
    assert {r.video_id for r in val} == {r.video_id for r in rows if r.split == "train"}  # the test videos never enter the search
    assert {r.video_id for r in val if r.split == "test"} == {r.video_id for r in val if is_held_out(r.video_id, 0.1)} != set()
    with pytest.raises(ValueError, match="val_fraction"):
        validation_rows(rows, 0.0)


def test_frame_window_jitters_in_training_and_centres_otherwise():
    """papers/xdc.md L103: 8-frame clips with temporal jittering; the paper_32f rounds cut them from 32-frame clips."""
    from raysup.methods.xdc import frame_window

    frames = torch.arange(32).view(1, 32, 1, 1, 1).expand(64, 32, 2, 2, 3)
    centre = frame_window(frames, 8, train=False)
    assert centre.shape == (64, 8, 2, 2, 3) and centre[:, :, 0, 0, 0].eq(torch.arange(12, 20)).all()
    jittered = frame_window(frames, 8, train=True)[:, :, 0, 0, 0]
    assert (jittered.diff(dim=1) == 1).all() and len(set(jittered[:, 0].tolist())) > 5  # consecutive, random starts
    assert frame_window(frames[:, :8], 8, train=True).equal(frames[:, :8])


def test_paper_sweeps_score_each_row_with_the_protocols_its_model_has():
    """--paper sweeps: a same-modality audio model has no video finetuning; the supervised baseline
    gets the sweep method's finetunings, not its frozen taps (GDT's audio conv5)."""
    from raysup.methods.gdt import PAPER_PROTOCOLS as GDT_PROTOCOLS
    from raysup.protocols import paper_protocols
    from raysup.sweep.paper_eval import usable

    xdc = paper_protocols("xdc")  # the sweeps' task: action (UCF101, HMDB51)
    assert [usable(p, {"audio", "audio2"}, own=True) for p in xdc] == [False, False]
    assert all(usable(p, {"video", "video2"}, own=True) for p in xdc)
    assert [type(p).__name__ for p in GDT_PROTOCOLS if usable(p, {"video", "audio"}, own=False)] == ["FinetuneProtocol"]


def test_xdc_finetuning_and_audio_protocols_follow_tables_11_12_and_l199():
    """papers/xdc.md Table 11 (L412-417), Table 12 (L420-423), L103, L199: every value of XDC's
    paper protocols and the published numbers beside them."""
    from raysup.methods.xdc import PAPER_PROTOCOLS
    from raysup.protocol_specs import AudioClipsProtocol

    video, video_fc, esc, esc_fc, dcase = PAPER_PROTOCOLS
    for p in (video, video_fc, esc, esc_fc):
        o = p.optim  # Table 11: bs 32, we/se/te 2/2/8 (×γ at epochs 4, 6: se counted after the warm-up), wd 0.005, γ 0.01 (caption L412)
        assert (p.batch_size, p.epochs, o.warmup_epochs, o.milestones, o.weight_decay, o.gamma) == (32, 8, 2, (0.5, 0.75), 0.005, 0.01)
        assert (o.name, o.momentum, p.test_clips) == ("sgd", 0.9, 10)  # momentum: VMZ's (paper silent); L103: 10 test clips
        assert o.lr in (0.001, 0.01)  # ours, from Table 12's grids (L422-423): the paper cross-validates it
    assert dict(video.epoch_clips) == dict(video_fc.epoch_clips) == {"UCF101": 106_000, "HMDB51": 40_000}  # es: Table 11 L416, L415
    assert dict(esc.epoch_clips) == dict(esc_fc.epoch_clips) == {"ESC50": 20_000}  # es: Table 11 L417
    assert (esc.encoder, esc.full, esc.seconds, esc_fc.full, esc.task) == ("audio", True, 2.0, False, "esc50")  # L103: 2 s of audio
    assert dict(esc.published) == {"ESC50 split 1, Kinetics": 78.0, "ESC50 split 1, AudioSet": 85.8, "ESC50 split 1, IG-Random": 86.3,
                                   "ESC50 split 1, IG-Kinetics": 84.8, "ESC50 5 splits, AudioSet": 84.8, "ESC50 5 splits, IG-Random": 85.4}
    # Table 1 L111 / Table 3 L142-146 / Table 7b L218-219
    assert dict(esc_fc.published) == {"ESC50 split 1, IG-Random": 84.5, "ESC50 split 1, IG-Kinetics": 84.3}  # Table 5 L169-170
    # L199: conv5 features of 60 uniformly sampled clips per sample, a linear SVM; 2 s clips (L103) and C 0.01 (GDT's, gdt.md L324): ours
    assert isinstance(dcase, AudioClipsProtocol)
    assert (dcase.task, dcase.tap, dcase.clips, dcase.seconds, dcase.classifier, dcase.svm_c) == ("dcase", "audio_conv5", 60, 2.0, "svm", 0.01)
    assert dict(dcase.published) == {"DCASE2014, AudioSet pretraining": 95.0, "DCASE2014, IG-Random pretraining": 95.0}  # Table 7b L240-241
