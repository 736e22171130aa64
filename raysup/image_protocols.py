"""The image-transfer protocols of cross-pixel flow similarity (papers/cpfs.md §4.5, L169-240)
and Cross and Learn (papers/cross-and-learn.md §4.3, L141), run by ``raysup probe --protocol
paper --paper-task imagenet|voc07 --data FOLDER`` on a run's single-frame RGB network:

- :class:`raysup.protocol_specs.ImageLayerProbeProtocol` (ILSVRC12 linear probing, cpfs Table
  2) over a folder in torchvision's ImageFolder layout with ``train/`` and ``val/``;
- :class:`raysup.protocol_specs.VOCProtocol` (PASCAL VOC 2007 classification, mAP; cpfs Table 1
  column "Cl.", Cross and Learn Table 2) over a VOC folder (``JPEGImages/<id>.jpg``,
  ``ImageSets/Main/<class>_{trainval,test}.txt`` with labels 1 / -1 / 0 = difficult).

Both train in this process on one device (the GPU when there is one), reading images with a
torch DataLoader: ImageNet's 1.28M images make the probe a long single-GPU run. Detection and
segmentation are not implemented (docs/reproducing.md).
"""
from __future__ import annotations

import itertools
import os
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from raysup.checkpoint import load_checkpoint_file
from raysup.config import ConfigError, TrainConfig
from raysup.data.transforms import standardize
from raysup.methods.cpfs import CPFS, standardize_image
from raysup.models.image import fold_batchnorm
from raysup.protocol_specs import ImageLayerProbeProtocol, LinearLayer, VOCProtocol
from raysup.protocols import CaffeNetClassifier

# --- data ---------------------------------------------------------------------------------------


def to_float(img) -> torch.Tensor:
    """A PIL image → float [3,H,W] in [0, 1]."""
    return v2.functional.to_dtype(v2.functional.to_image(img.convert("RGB")), torch.float32, scale=True)


class RandomRescale:
    """Krähenbühl et al.'s scale augmentation (philkr/voc-classification ``min_scale``/``max_scale``):
    the shorter side resized to ``crop`` × a uniform factor in ``scale``."""

    def __init__(self, crop: int, scale: tuple[float, float]):
        self.crop, self.scale = crop, scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return v2.functional.resize(x, [max(1, round(self.crop * random.uniform(*self.scale)))], antialias=True)


def train_crops(crop: int, resize: int | None = None, scale: tuple[float, float] | None = None) -> v2.Compose:
    """Float image → a random ``crop`` crop (zero-padded where the image is smaller) and flip,
    after resizing its shorter side to ``resize`` or by :class:`RandomRescale`."""
    first = v2.Resize(resize, antialias=True) if resize else RandomRescale(crop, scale)
    return v2.Compose([to_float, first, v2.RandomCrop(crop, pad_if_needed=True), v2.RandomHorizontalFlip()])


def centre_crop(crop: int, resize: int) -> v2.Compose:
    return v2.Compose([to_float, v2.Resize(resize, antialias=True), v2.CenterCrop(crop)])


def read_voc(root: str, split: str) -> tuple[list[str], list[str], np.ndarray]:
    """The image ids, class names (sorted) and labels [N,C] (1 present, -1 absent, 0 difficult)
    of ``split`` (``trainval`` or ``test``) from ``ImageSets/Main/<class>_<split>.txt``."""
    main = os.path.join(root, "ImageSets", "Main")
    suffix = f"_{split}.txt"
    classes = sorted(f[: -len(suffix)] for f in os.listdir(main) if f.endswith(suffix)) if os.path.isdir(main) else []
    if not classes:
        raise ConfigError(f"--data: {main} has no <class>{suffix} files (a PASCAL VOC folder)")
    labels: dict[str, np.ndarray] = {}
    for c, name in enumerate(classes):
        for line in open(os.path.join(main, name + suffix)):
            if line.strip():
                image, value = line.split()
                labels.setdefault(image, np.full(len(classes), -1, np.int64))[c] = int(value)
    ids = sorted(labels)
    return ids, classes, np.stack([labels[i] for i in ids])


class VOCImages(Dataset):
    """(image [3,S,S], labels [C]) of a VOC split; labels as in :func:`read_voc`."""

    def __init__(self, root: str, split: str, transform):
        self.root, self.transform = root, transform
        self.ids, self.classes, self.labels = read_voc(root, split)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        with Image.open(os.path.join(self.root, "JPEGImages", f"{self.ids[i]}.jpg")) as img:
            return self.transform(img), torch.from_numpy(self.labels[i])


def image_folder(root: str, split: str, transform) -> ImageFolder:
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise ConfigError(f"--data: {path} is missing (an ImageFolder root with train/ and val/)")
    return ImageFolder(path, transform=transform)


def loader(ds: Dataset, batch_size: int, *, shuffle: bool) -> DataLoader:
    """Batches of ``ds``, decoded by loader processes beside a GPU (on CPU, the model is the
    bottleneck); shuffled ones drop a last partial batch (a batch of one breaks batch norm)."""
    workers = min(8, os.cpu_count() or 1) if torch.cuda.is_available() else 0
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers, persistent_workers=workers > 0,
                      drop_last=shuffle and len(ds) > batch_size)


def forever(batches: DataLoader):
    """The loader's batches, epoch after epoch."""
    for _ in itertools.count():
        yield from batches


# --- networks -----------------------------------------------------------------------------------


def cpfs_alexnet(cfg: TrainConfig, state: dict | None) -> nn.Module:
    """cpfs' AlexNet (``net`` of :class:`raysup.methods.cpfs.CPFS`) with the run's weights and
    its BN statistics folded into the convolutions, as the paper evaluates it (L154)."""
    method = CPFS(cfg.method)
    if state is not None:
        method.load_state_dict(state)
    return fold_batchnorm(method.net)


class LayerProbes(nn.Module):
    """Zhang et al.'s per-layer linear classifiers on a frozen cpfs AlexNet: each tap resized
    bilinearly to s×s (corner to corner, Caffe's Interp), flattened, a batch norm without
    learned parameters, a linear layer."""

    def __init__(self, net: nn.Module, sizes: tuple[tuple[str, int], ...], crop: int, classes: int):
        super().__init__()
        self.net, self.sizes = net.eval().requires_grad_(False), dict(sizes)
        with torch.no_grad():
            dims = {k: v.shape[1] for k, v in self.features(torch.zeros(1, 3, crop, crop)).items()}
        # momentum=None: the running statistics are the plain average of every batch's, as Caffe's
        # BatchNorm layer accumulates them (its test statistics are unbiased from the first batch)
        self.heads = nn.ModuleDict({k: nn.Sequential(nn.BatchNorm1d(d, affine=False, momentum=None), nn.Linear(d, classes)) for k, d in dims.items()})

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images [B,3,H,W] in [0, 1] → {"rgb_convN": [B,C·s·s]}."""
        maps = self.net.feature_maps(standardize_image(x), upto="conv5")
        return {f"rgb_{name}": F.interpolate(maps[name], size=(s, s), mode="bilinear", align_corners=True).flatten(1)
                for name, s in ((k.removeprefix("rgb_"), s) for k, s in self.sizes.items())}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: self.heads[k](f) for k, f in self.features(x).items()}  # {tap: [B,classes]}


class VOCNet(nn.Module):
    """A pretrained network with a fresh C-way layer: images [B,3,H,W] in [0, 1] → logits [B,C]."""

    def __init__(self, p: VOCProtocol, cfg: TrainConfig, state: dict | None, classes: int):
        super().__init__()
        if p.network == "cpfs":
            net = cpfs_alexnet(cfg, state)  # conv1-fc7 (fully convolutional), averaged over space
            self.trunk = nn.Sequential(*net.stages.values(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5))
            self.fc8, self.norm = nn.Linear(net.stages["fc7"][0].out_channels, classes), standardize_image
        else:  # Cross and Learn: a new CaffeNet from the RGB network's conv layers (L141)
            cn = CaffeNetClassifier(cfg.method.encoder, p.crop, classes, p.init_prefix)
            if state is not None:
                load_convs(cn.features, state, p.init_prefix, bn=p.transfer_bn)
            self.trunk, self.fc8 = nn.Sequential(cn.features, *cn.classifier[:-1]), cn.classifier[-1]
            self.norm = lambda x: standardize(x, (1, 2, 3))  # per image, as in pretraining (protocols.rgb_frame)
        nn.init.normal_(self.fc8.weight, 0, 0.01)  # train_cls.py: layers after drop7 ~ N(0, 0.01), bias 0.1
        nn.init.constant_(self.fc8.bias, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.trunk(self.norm(x)))


def load_convs(features: nn.Sequential, state: dict, prefix: str, *, bn: bool) -> None:
    """The conv layers of ``features`` (and its BN layers when ``bn``) from ``state[prefix…]``."""
    kinds = (nn.Conv2d, nn.BatchNorm2d) if bn else (nn.Conv2d,)
    names = [n for n, m in features.named_modules() if isinstance(m, kinds)]
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix):].rsplit(".", 1)[0] in names}
    if not picked:
        raise ConfigError(f"the run's weights have no {prefix}* conv layers")
    features.load_state_dict(picked, strict=False)


# --- protocols ----------------------------------------------------------------------------------


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_image_layer_probe(p: ImageLayerProbeProtocol, cfg: TrainConfig, state: dict | None, root: str, *, epochs: int | None = None,
                          seed: int = 0) -> dict[str, float]:
    """ILSVRC12 linear probing (cpfs.md L237): val top-1 per tap."""
    torch.manual_seed(seed)
    random.seed(seed)
    train = image_folder(root, "train", train_crops(p.crop, resize=p.resize))
    val = image_folder(root, "val", centre_crop(p.crop, p.resize))
    dev = device()
    model = LayerProbes(cpfs_alexnet(cfg, state), p.sizes, p.crop, len(train.classes)).to(dev)
    opt, schedule, n = sgd_schedule(model.heads.parameters(), p.linear, epochs)
    for _ in range(n):
        model.train()
        for x, y in loader(train, p.linear.batch_size, shuffle=True):
            logits = model(x.to(dev))
            loss = sum(F.cross_entropy(v, y.to(dev)) for v in logits.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
    model.eval()
    hits = dict.fromkeys(model.heads, 0)
    with torch.no_grad():
        for x, y in loader(val, p.linear.batch_size, shuffle=False):
            for k, v in model(x.to(dev)).items():
                hits[k] += int((v.argmax(1).cpu() == y).sum())
    return {k: h / len(val) for k, h in hits.items()}


def sgd_schedule(params, spec: LinearLayer, epochs: int | None):
    """The linear layers' optimiser, its per-epoch step schedule and the number of epochs."""
    n = epochs or spec.epochs
    opt = torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, [round(f * n) for f in spec.milestones], spec.gamma), n


def run_voc(p: VOCProtocol, cfg: TrainConfig, state: dict | None, root: str, *, iterations: int | None = None, seed: int = 0) -> dict[str, float]:
    """VOC07 classification: the test mAP (in [0, 1]) as ``{p.key: mAP}``."""
    torch.manual_seed(seed)
    random.seed(seed)
    crops = train_crops(p.crop, scale=p.scale)
    train, test = VOCImages(root, "trainval", crops), VOCImages(root, "test", crops)  # test: the same random crops (train_cls.py)
    if train.classes != test.classes:
        raise ConfigError(f"--data: {root}'s trainval and test class files differ")
    dev = device()
    model = VOCNet(p, cfg, state, len(train.classes)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    schedule = torch.optim.lr_scheduler.StepLR(opt, p.step, p.gamma)  # stepped per iteration
    model.train()
    for _, (x, y) in zip(range(iterations or p.iterations), forever(loader(train, p.batch_size, shuffle=True))):
        loss = multilabel_loss(model(x.to(dev)), y.to(dev))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), p.clip_grad)
        opt.step()
        schedule.step()
    model.eval()
    scores = np.zeros(test.labels.shape)
    with torch.no_grad():
        for _ in range(p.test_crops):  # the scores of test_crops random crops summed per image
            scores += np.concatenate([model(x.to(dev)).cpu().numpy() for x, _ in loader(test, 64, shuffle=False)])
    return {p.key: voc_map(scores, test.labels)}


def multilabel_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-class sigmoid cross-entropy over the known labels (1 present, -1 absent; 0, difficult,
    ignored as train_cls.py's ignore_label), averaged."""
    known = (labels != 0).float()
    loss = F.binary_cross_entropy_with_logits(logits, (labels > 0).float(), reduction="none")
    return (loss * known).sum() / known.sum().clamp_min(1)


def voc_map(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of sklearn's average precision of scores [N,C] on the non-difficult
    images (labels [N,C] in {1, -1, 0}); as train_cls.py, ties broken against the positives
    (score − 1e-5·gt). Classes without a positive test image are left out."""
    from sklearn.metrics import average_precision_score

    aps = []
    for c in range(labels.shape[1]):
        known = labels[:, c] != 0
        gt = (labels[known, c] > 0).astype(np.float64)
        if gt.any():
            aps.append(average_precision_score(gt, scores[known, c] - 1e-5 * gt))
    return float(np.mean(aps))


def run_image_protocols(cfg: TrainConfig, root: str, checkpoint: str | None, protocols, *, epochs: int | None = None) -> dict[str, float]:
    """``protocols`` (one task's) on the folder ``root`` from the run's ``checkpoint`` (None:
    random init); ``epochs`` overrides the layer probe's epochs and VOC's iterations (a quick check)."""
    state = load_checkpoint_file(checkpoint)["model"] if checkpoint else None
    results = {}
    for p in protocols:
        if isinstance(p, VOCProtocol):
            results |= run_voc(p, cfg, state, root, iterations=epochs, seed=cfg.seed)
        else:
            results |= run_image_layer_probe(p, cfg, state, root, epochs=epochs, seed=cfg.seed)
    return results
