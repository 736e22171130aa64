"""The papers' own evaluation protocols (``raysup probe --protocol paper``), one table entry per
protocol in :data:`PAPER_PROTOCOLS` (sources and unverified values: docs/reproducing.md).

Three kinds, each scored on the labels CSV's test split:

- :class:`FinetuneProtocol`: a network with a new classifier trained by cross-entropy through
  :func:`raysup.train.fit` (GPU, DDP, AMP, checkpoints, resume), either the method's encoder
  (full finetuning, or only the new linear head on frozen features: ``module=None``) or a
  fresh CaffeNet initialised from the RGB network's conv and BN layers (Cross and Learn);
  softmax scores averaged over evenly spaced clips per test video;
- :class:`FrozenAudioProtocol`: GDT's audio protocol, pooled conv5 maps of the frozen audio
  encoder and a linear classifier (an L2-regularised linear layer, or a linear SVM) trained on
  every clip of the train videos; scores averaged over each test video's clips;
- :class:`LayerProbeProtocol`: cross-pixel similarity's linear probes on conv1-conv5, each map
  resized to ~9-10K elements and standardised, a softmax layer trained by SGD on each (Zhang et
  al.'s linear classification test).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet
from torchvision.transforms.v2 import functional as TF

from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.config import ConfigError, OptimConfig, TrainConfig
from raysup.data.ingest import ClipCollate, PreparedData
from raysup.data.labels import class_index, label_of, read_labels_csv
from raysup.data.tables import join_columns
from raysup.data.transforms import random_resized_crop_flip
from raysup.evaluate import clip_columns, labelled
from raysup.features import extract_features
from raysup.methods import method_module
from raysup.methods.base import Method
from raysup.methods.cpfs import standardize
from raysup.models import image_encoder
from raysup.train import fit

Classifier = Literal["linear", "svm"]


# --- networks the protocols train or read --------------------------------------------------------


class Finetune(Method):
    """A method's model with a new linear head on one of its encoders. With ``module`` (the
    method's attribute holding the encoder's network) that network is trained end to end with
    the head; with ``module=None`` only the head is (fc-only: the method stays in eval mode, BN
    statistics included). The method's other parameters are frozen (so DDP sees no unused ones)."""

    def __init__(self, inner: Method, encoder: str, module: str | None, dim: int, classes: int):
        super().__init__()
        self.inner, self.encoder, self.frozen = inner, encoder, module is None
        self.head = nn.Linear(dim, classes)
        trained = set() if module is None else {id(p) for p in getattr(inner, module).parameters()}
        for p in inner.parameters():
            p.requires_grad_(id(p) in trained)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.inner.eval()
        return self

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.inner.embed(batch, train=self.training)[self.encoder])  # [B,classes]

    def forward(self, batch):
        return classification(self.logits(batch), batch["label"])

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        """The pretrained run's weights into the method; the head starts fresh."""
        self.inner.load_state_dict(state)


def classification(logits: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy loss and top-1 of logits [B,C] for labels [B]."""
    return {"loss": F.cross_entropy(logits.float(), label), "acc": (logits.argmax(1) == label).float().mean()}


def build_finetune(cfg: TrainConfig, specs, *, encoder: str, module: str | None, dim: int, classes: int) -> Finetune:
    return Finetune(method_module(cfg.method_name).build(cfg, specs), encoder, module, dim, classes)


class CaffeNetClassifier(Method):
    """Cross and Learn §4's finetuning network: a fresh CaffeNet (the run's ``method.encoder``)
    whose conv and BN layers start from the run's RGB network and whose FC layers start from
    scratch: dropout → fc6 → ReLU → dropout → fc7 → ReLU → fc8 (the official ``Net_ar``). Input:
    one RGB frame of the clip (a random one, random ``size`` crop and flip while training; the
    centre frame and crop at test), standardised per image as in pretraining."""

    def __init__(self, encoder: str, size: int, classes: int):
        super().__init__()
        net = image_encoder(encoder, 3)
        fc6 = next(m for m in net.fc6 if isinstance(m, nn.Linear))
        self.size, self.features, d = size, net.features, net.out_dim
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.5), nn.Linear(fc6.in_features, d), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, classes),
        )  # fmt: skip

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.features(rgb_frame(batch["frames"], self.size, train=self.training)))  # [B,classes]

    def forward(self, batch):
        return classification(self.logits(batch), batch["label"])

    def load_pretrained(self, state: dict[str, torch.Tensor]) -> None:
        """Conv and BN layers from the Cross and Learn run's RGB network; FC layers stay fresh."""
        prefix = "rgb_net.features."
        self.features.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def build_caffenet(cfg: TrainConfig, specs, *, classes: int) -> CaffeNetClassifier:
    return CaffeNetClassifier(cfg.method.encoder, specs["frames"].shape[1], classes)  # the stream's crop (crop_size)


def rgb_frame(frames: torch.Tensor, size: int, *, train: bool) -> torch.Tensor:
    """uint8 clips [B,T,H,W,3] → one standardised frame each [B,3,S,S]: a random frame, random
    S×S crop (no rescaling) and flip when ``train``, else the centre frame and crop."""
    b, t, h, w, _ = frames.shape
    pick = torch.randint(0, t, (b,), device=frames.device) if train else torch.full((b,), t // 2, device=frames.device)
    x = frames[torch.arange(b, device=frames.device), pick].permute(0, 3, 1, 2).float() / 255  # [B,3,H,W]
    if train:
        area = size * size / (h * w)
        x = random_resized_crop_flip(x, (area, area), size=(size, size), ratio=(1.0, 1.0))
    else:
        x = TF.center_crop(x, [size, size])
    return (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)


class AudioConv5(Method):
    """GDT appendix A.2's audio features: the audio encoder's conv5 activations [B,C,M',F']
    max-pooled with kernel (1,3) and stride (1,2) (over time; the kernel shrinks to the map when
    it has fewer than 3 frames), flattened. Loads the GDT run's state dict as is."""

    def __init__(self, inner: Method):
        super().__init__()
        self.inner = inner

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.inner.load_state_dict(state, strict, assign)

    def embed(self, batch, *, train=False):
        maps = conv5_maps(self.inner.audio.body, self.inner.audio_transform(batch["audio"], train=False))  # [B,C,M',F']
        return {"audio": F.max_pool2d(maps, (1, min(3, maps.shape[-1])), (1, 2)).flatten(1)}  # [B,C·M'·F'']


def conv5_maps(body: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last conv stage's maps of an audio ResNet (torchvision ResNet-18, or raysup's tiny
    ResNet, whose last two modules are the global pooling and flatten): [B,1,M,F] → [B,C,M',F']."""
    if isinstance(body, ResNet):
        x = body.maxpool(body.relu(body.bn1(body.conv1(x))))
        return body.layer4(body.layer3(body.layer2(body.layer1(x))))
    return body[:-2](x)


def build_audio_conv5(cfg: TrainConfig, specs) -> AudioConv5:
    return AudioConv5(method_module(cfg.method_name).build(cfg, specs))


class ConvLayers(Method):
    """Cross-pixel similarity's per-layer features: the centre frame (standardised as in
    training) through the AlexNet's stages, each of ``sizes``' layers resized bilinearly to s×s
    and flattened: 96·10² = 9600 (conv1), 256·6² = 9216 (conv2), 384·5² = 9600 (conv3, conv4),
    256·6² (conv5), Zhang et al.'s sizes (:data:`CONV_SIZES`). Loads the cpfs run's state dict
    as is."""

    def __init__(self, inner: Method, sizes: tuple[tuple[str, int], ...]):
        super().__init__()
        self.inner, self.sizes = inner, sizes

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.inner.load_state_dict(state, strict, assign)

    def embed(self, batch, *, train=False):
        frames = batch["frames"]  # [B,T,H,W,3]
        x = standardize(frames[:, frames.shape[1] // 2].permute(0, 3, 1, 2).float() / 255)  # [B,3,H,W]
        maps = self.inner.net.feature_maps(x, upto=self.sizes[-1][0])
        # Caffe's Interp layer (Zhang et al.'s test) maps corner to corner: align_corners=True
        return {f"rgb_{name}": F.interpolate(maps[name], size=(s, s), mode="bilinear", align_corners=True).flatten(1) for name, s in self.sizes}


def build_conv_layers(cfg: TrainConfig, specs, *, sizes: tuple[tuple[str, int], ...]) -> ConvLayers:
    return ConvLayers(method_module(cfg.method_name).build(cfg, specs), sizes)


# --- the protocols --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FinetuneProtocol:
    """Training through :func:`raysup.train.fit` and softmax scores averaged over ``test_clips``
    evenly spaced clips per test video. ``network``: ``method`` (the method's ``encoder`` with a
    new linear head; ``module`` the method's attribute holding its network, None: the head
    alone on frozen features) or ``caffenet`` (:class:`CaffeNetClassifier`)."""

    key: str  # the result's name (JSON key) and the run folder
    encoder: str
    module: str | None
    optim: OptimConfig
    epochs: int
    batch_size: int
    test_clips: int
    network: Literal["method", "caffenet"] = "method"


@dataclasses.dataclass(frozen=True)
class LinearLayer:
    """A linear layer on frozen features trained by cross-entropy (:func:`train_linear`):
    ``epochs`` shuffled passes of ``batch_size`` rows, ``weight_decay`` the L2 penalty, lr
    ×``gamma`` at each of ``milestones`` (fractions of the epochs); ``standardize``: features first standardised
    with the train clips' mean and deviation (a batch norm without learned parameters, at its
    running statistics)."""

    optimizer: Literal["adam", "sgd"]
    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    momentum: float = 0.0
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    standardize: bool = False


@dataclasses.dataclass(frozen=True)
class FrozenAudioProtocol:
    """:class:`AudioConv5` features of every clip of the train videos and ``test_clips`` per
    test video; a linear layer or a linear SVM (sklearn ``LinearSVC``, C = ``svm_c``); class
    scores averaged per test video."""

    key: str
    linear: LinearLayer
    svm_c: float
    test_clips: int


@dataclasses.dataclass(frozen=True)
class LayerProbeProtocol:
    """:class:`ConvLayers` features of the train and test clips (each layer resized to s×s for
    its (layer, s) in ``sizes``), one linear layer per layer, class probabilities averaged per
    test video; one result per layer (``rgb_conv1`` …)."""

    sizes: tuple[tuple[str, int], ...]
    linear: LinearLayer
    test_clips: int


Protocol = FinetuneProtocol | FrozenAudioProtocol | LayerProbeProtocol

# XDC: the XDC paper's own finetuning schedule was not found (its README sends finetuning to the
# VMZ repository); these are VMZ's UCF101 finetuning values (scripts/finetune_ucf101.sh with
# c2/tools/train_net.py), unverified against the paper: SGD (momentum 0.9; VMZ: Nesterov),
# base lr 1e-4 per GPU × 8 GPUs = 8e-4 for 8 × 4 = 32 clips, weight decay 5e-3, 8 epochs, lr
# stepped every 2 epochs (×0.1, train_net's default gamma). VMZ's epoch is 100K clips; here one
# pass over the train clips. The fc-only variant (only the new linear head) uses the same
# schedule (unverified).
XDC_OPTIM = OptimConfig(name="sgd", lr=8e-4, momentum=0.9, weight_decay=5e-3, schedule="step", milestones=(0.25, 0.5, 0.75), gamma=0.1)
# cpfs (Mahendran et al. 2018 §4, compared with Zhang et al.'s results): Zhang et al.'s linear
# classification test (richzhang/colorization, feature_learning_tests/linear, as used in the
# Split-Brain paper): each frozen layer bilinearly resized to ~9-10K elements (train_val.prototxt:
# conv1 10×10, conv2 6×6, conv3 and conv4 5×5, conv5 6×6), a batch norm without learned
# parameters, a softmax layer; solver.prototxt: SGD lr 0.01, momentum 0.9, weight decay 5e-4,
# batch 64 × iter_size 4 = 256, 140K iterations, lr ×0.1 every 40K. ImageNet's 1.28M images
# make that 28 epochs with steps after 8, 16 and 24. Their random crops and mirrors of the probe's
# training images are not repeated here: the features are the centre crop's, extracted once.
CONV_SIZES = (("conv1", 10), ("conv2", 6), ("conv3", 5), ("conv4", 5), ("conv5", 6))
CONV_LAYERS = tuple(name for name, _ in CONV_SIZES)
ZHANG_LINEAR = LinearLayer("sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=256, epochs=28, milestones=(2 / 7, 4 / 7, 6 / 7), standardize=True)
CPFS_PROTOCOLS = (LayerProbeProtocol(sizes=CONV_SIZES, linear=ZHANG_LINEAR, test_clips=10),)

PAPER_PROTOCOLS: dict[str, tuple[Protocol, ...]] = {
    "gdt": (
        # GDT appendix A.2 (video): full finetuning, SGD warmed up to 0.02 over 2 epochs (the
        # paper starts the warm-up at 0.0025; raysup's warm-up starts near 0), momentum 0.9,
        # weight decay 5e-3, batch 32, 10 epochs, lr ×0.1 at epochs 6 and 8; softmax scores
        # averaged over 10 clips per test video.
        FinetuneProtocol(
            key="video", encoder="video", module="video",
            optim=OptimConfig(name="sgd", lr=0.02, momentum=0.9, weight_decay=5e-3, schedule="step", milestones=(0.6, 0.8), gamma=0.1, warmup_epochs=2),
            epochs=10, batch_size=32, test_clips=10,
        ),
        # GDT appendix A.2 (audio): conv5 max-pooled (1,3)/(1,2); ESC-50: linear layer, Adam lr
        # 1e-4, weight decay 5e-4, batch 512; DCASE: linear SVM, C = 0.01 (official src/svm.py:
        # LinearSVC(C), decision scores averaged per sample). Epochs of the linear layer: not
        # stated (unverified: 100).
        FrozenAudioProtocol(key="audio", linear=LinearLayer("adam", lr=1e-4, weight_decay=5e-4, batch_size=512, epochs=100), svm_c=0.01, test_clips=10),
    ),
    "xdc": (
        FinetuneProtocol(key="video", encoder="video", module="video", optim=XDC_OPTIM, epochs=8, batch_size=32, test_clips=10),
        FinetuneProtocol(key="video_fc", encoder="video", module=None, optim=XDC_OPTIM, epochs=8, batch_size=32, test_clips=10),
    ),
    # Cross and Learn §4 and the official code (experiment/exp_base.py, exp_ft.py,
    # main_finetuning_RGB.py): SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 128, 200
    # epochs, lr ×0.1 at 3/4 of them; 5 frames per test video (the official code also averages
    # 10 crops of each: here the centre crop only).
    "cross_and_learn": (
        FinetuneProtocol(
            key="rgb", encoder="rgb", module=None, network="caffenet",
            optim=OptimConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="step", milestones=(0.75,), gamma=0.1),
            epochs=200, batch_size=128, test_clips=5,
        ),
    ),
    "cpfs": CPFS_PROTOCOLS,
    "cpfs_direct": CPFS_PROTOCOLS,
}  # fmt: skip


def check_protocol(method_name: str) -> None:
    """A one-line ConfigError for a method without a paper protocol."""
    if method_name not in PAPER_PROTOCOLS:
        raise ConfigError(f"--protocol paper: not implemented for {method_name} (only {', '.join(PAPER_PROTOCOLS)}); use --protocol linear")


def paper_protocol(
    cfg: TrainConfig,
    data: PreparedData,
    labels_csv: str,
    checkpoint: str | None,
    out_dir: str,
    *,
    epochs: int | None = None,
    classifier: Classifier = "linear",
    actors: int = 1,
) -> dict[str, float]:
    """Run the method's paper protocols (:data:`PAPER_PROTOCOLS`) and return test top-1 per
    result key. A finetuning runs as a :func:`raysup.train.fit` run in ``out_dir/<key>``
    (rerunning resumes it); ``epochs`` overrides a finetuning's epochs (the schedule's
    milestones are fractions of it); ``classifier`` picks GDT's audio classifier (``linear``:
    ESC-50's, ``svm``: DCASE's). ``checkpoint=None``: random-init weights. Clips are
    ``cfg.crop_size`` crops, as the run trained on (random to finetune, centred to test)."""
    check_protocol(cfg.method_name)
    data = data.cropped(cfg.crop_size)
    protocols = PAPER_PROTOCOLS[cfg.method_name]
    rows = read_labels_csv(labels_csv)
    split = labelled(rows, set(data.video_ids))
    classes, label = class_index(rows), label_of(rows)
    ids = sorted(split)
    counts = data.manifest["videos"]
    n_test = max(p.test_clips for p in protocols)
    test_clips = {v: np.unique(np.linspace(0, counts[v] - 1, min(counts[v], n_test)).round().astype(np.int64)) for v in ids if split[v] == "test"}
    train_table = pa.table({"video_id": pa.array([v for v in ids if split[v] == "train"], pa.string()), "label": pa.array([label[v] for v in ids if split[v] == "train"], pa.int64())})
    test_table = pa.table({
        "video_id": pa.array([v for v, c in test_clips.items() for _ in c], pa.string()),
        "clip_index": pa.array(np.concatenate(list(test_clips.values())), pa.int32()),  # the prepared column's type
        "video_index": pa.array([ids.index(v) for v, c in test_clips.items() for _ in c], pa.int64()),
    })
    clips = data.dataset(clip_columns(cfg), crop=None)  # decoded after the join: random crops to train, centre to test
    train_ds = data.decode(join_columns(clips, ["video_id"], train_table).randomize_block_order(), "random")
    test_ds = data.decode(join_columns(clips, ["video_id", "clip_index"], test_table))
    frozen_train_ds = data.decode(join_columns(clips, ["video_id"], train_table))  # frozen features: centre crops
    y = np.array([label[v] for v in ids])  # [V] by video index
    tested = np.array([v in test_clips for v in ids])
    task = dict(cfg=cfg, data=data, checkpoint=checkpoint, classes=len(classes), y=y, tested=tested, video_index={v: i for i, v in enumerate(ids)})
    results = {}
    for p in protocols:
        if isinstance(p, FinetuneProtocol):
            rows_per_epoch = sum(counts[v] for v in train_table["video_id"].to_pylist())
            results[p.key] = run_finetune(p, train_ds, test_ds, out_dir, rows_per_epoch=rows_per_epoch, epochs=epochs, **task)
        else:
            train_f = extract_features(frozen_train_ds, cfg, frozen_build(p), data.specs, checkpoint, actors=actors)
            test_f = extract_features(test_ds, cfg, frozen_build(p), data.specs, checkpoint, actors=actors)
            y_train = y[[task["video_index"][v] for v in train_f.video_id]]
            test_video = np.array([task["video_index"][v] for v in test_f.video_id])
            for name in sorted(train_f.feats):
                scores = frozen_scores(p, classifier, train_f.feats[name], y_train, test_f.feats[name], len(classes), cfg.seed)
                results[name] = video_accuracy(scores, test_video, y, tested)
    return results


def frozen_build(p: FrozenAudioProtocol | LayerProbeProtocol):
    """The ``build`` function of the feature extractor a frozen protocol reads."""
    if isinstance(p, FrozenAudioProtocol):
        return build_audio_conv5
    return functools.partial(build_conv_layers, sizes=p.sizes)


def run_finetune(p: FinetuneProtocol, train_ds, test_ds, out_dir: str, *, cfg: TrainConfig, data: PreparedData, checkpoint: str | None,
                 classes: int, y: np.ndarray, tested: np.ndarray, video_index: dict, rows_per_epoch: int, epochs: int | None) -> float:
    """One finetuning protocol: :func:`raysup.train.fit` in ``out_dir/<key>`` from ``checkpoint``,
    then softmax scores of the test clips averaged per video → top-1."""
    collate = ClipCollate(data.specs)
    if p.network == "caffenet":
        build = functools.partial(build_caffenet, classes=classes)
    else:
        probe_batch = next(iter(test_ds.iter_torch_batches(batch_size=2, collate_fn=collate)))
        with torch.no_grad():
            dim = method_module(cfg.method_name).build(cfg, data.specs).eval().embed(probe_batch)[p.encoder].shape[1]
        build = functools.partial(build_finetune, encoder=p.encoder, module=p.module, dim=dim, classes=classes)
    ft_cfg = dataclasses.replace(cfg, optim=p.optim, epochs=epochs or p.epochs, batch_size=p.batch_size, max_steps=0, patience=0)
    run_dir = f"{out_dir.rstrip('/')}/{p.key}"
    fit(ft_cfg, build, {"train": train_ds}, run_dir, data.specs, rows_per_epoch=rows_per_epoch, resume=True, init_checkpoint=checkpoint)
    model = build(ft_cfg, data.specs)
    model.load_state_dict(load_checkpoint_file(latest_checkpoint(run_dir))["model"])
    model.eval()
    scores = torch.zeros(len(y), classes)
    with torch.no_grad():
        for b in test_ds.iter_torch_batches(batch_size=64, collate_fn=collate):
            scores.index_add_(0, b["video_index"], model.logits(b).float().softmax(1))
    return float((scores.argmax(1).numpy() == y)[tested].mean())


def frozen_scores(p: FrozenAudioProtocol | LayerProbeProtocol, classifier: Classifier, x_train: np.ndarray, y_train: np.ndarray,
                  x_test: np.ndarray, classes: int, seed: int) -> np.ndarray:
    """Class scores [N_test,classes] of the test clips from a linear classifier fitted on the
    train clips: the protocol's linear layer (softmax probabilities), or GDT's SVM for audio
    (``classifier="svm"``: decision scores)."""
    if isinstance(p, FrozenAudioProtocol) and classifier == "svm":
        from sklearn.svm import LinearSVC

        svm = LinearSVC(C=p.svm_c, random_state=seed).fit(x_train, y_train)
        scores = svm.decision_function(x_test)
        if scores.ndim == 1:  # two classes: one column, positive for classes_[1]
            scores = np.stack([-scores, scores], 1)
        return expand_columns(scores, svm.classes_, classes, fill=-np.inf)
    if p.linear.standardize:
        mean, std = x_train.mean(0), x_train.std(0) + 1e-5
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    layer = train_linear(x_train, y_train, classes, p.linear, seed=seed)
    with torch.no_grad():
        return layer(torch.from_numpy(x_test).float()).softmax(1).numpy()


def expand_columns(scores: np.ndarray, present: np.ndarray, classes: int, fill: float = 0.0) -> np.ndarray:
    """Scores [N,len(present)] for the classes seen in training → [N,classes] (others ``fill``)."""
    out = np.full((scores.shape[0], classes), fill, np.float64)
    out[:, present] = scores
    return out


def train_linear(x: np.ndarray, y: np.ndarray, classes: int, spec: LinearLayer, *, seed: int) -> nn.Linear:
    """A linear layer x [N,D] → [N,classes] trained by cross-entropy as ``spec`` says."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    layer = nn.Linear(x.shape[1], classes)
    if spec.optimizer == "sgd":
        opt = torch.optim.SGD(layer.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    else:
        opt = torch.optim.Adam(layer.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(opt, [round(f * spec.epochs) for f in spec.milestones], spec.gamma)
    for _ in range(spec.epochs):
        for idx in torch.randperm(len(xt), generator=g).split(spec.batch_size):
            loss = F.cross_entropy(layer(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
    return layer


def video_accuracy(scores: np.ndarray, video: np.ndarray, y: np.ndarray, tested: np.ndarray) -> float:
    """Top-1 over the tested videos of clip scores [N,C] summed per video (``video`` [N] indexes
    ``y`` [V], the videos' labels)."""
    total = np.zeros((len(y), scores.shape[1]))
    np.add.at(total, video, scores)
    return float((total.argmax(1) == y)[tested].mean())
