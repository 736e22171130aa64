"""What a paper's evaluation protocol is, as data: a method module declares its own in
``PAPER_PROTOCOLS`` and :mod:`raysup.protocols` runs them (``raysup probe --protocol paper``).

Three kinds, each scored on the labels CSV's test split:

- :class:`FinetuneProtocol`: a new classifier trained by cross-entropy through
  :func:`raysup.train.fit`, on one of the method's encoders (full finetuning, or the linear
  head alone on frozen features), or a fresh CaffeNet initialised from the method's conv and BN
  layers; softmax scores averaged over evenly spaced clips per test video;
- :class:`FrozenProtocol`: one of the method's taps (:meth:`raysup.methods.base.Method.taps`,
  e.g. GDT's pooled audio conv5) frozen, a linear layer or a linear SVM trained on every clip of
  the train videos, scores averaged over each test video's clips;
- :class:`LayerProbeProtocol`: the taps of several layers, each resized to s×s and flattened, one
  linear layer per layer (Zhang et al.'s linear classification test).

Three more run on other data than a video set's labels CSV (``raysup probe --protocol paper
--paper-task TASK``): :class:`ImageLayerProbeProtocol` (ILSVRC12's per-layer linear probe on an
ImageFolder, :mod:`raysup.image_protocols`), :class:`VOCProtocol` (PASCAL VOC 2007
classification, mAP, same module) and :class:`AudioClipsProtocol` (ESC-50 / DCASE on a prepared
audio-only set, :mod:`raysup.audio_protocols`).

Every spec has a ``task`` (the downstream set: ``action`` for UCF101/HMDB51, ``esc50``,
``dcase``, ``imagenet``, ``voc07``), ``published`` (the paper's numbers for it: (what, value)
pairs) and ``cites`` (field → paper line), printed by ``raysup config METHOD --protocol``.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from raysup.config import OptimConfig

Pairs = tuple[tuple[str, str | float], ...]  # (name, value) pairs: published numbers, citations
# The downstream sets a protocol's settings may differ for, told apart by their number of classes
# (papers/xdc.md L97: "101, 51, and 50 classes"): the labels CSV's classes pick the entry.
DOWNSTREAM_CLASSES = {"UCF101": 101, "HMDB51": 51, "ESC50": 50}


@dataclasses.dataclass(frozen=True)
class FinetuneProtocol:
    """``network``: ``method`` (the method's ``encoder`` with a new linear head; ``full``: the
    encoder's network trains too, else only the head on frozen features) or ``caffenet`` (Cross
    and Learn's finetuning net: a fresh CaffeNet whose conv and BN layers load the pretrained
    state-dict entries under ``init_prefix``, its FC layers fresh). ``epoch_clips``: (downstream
    set, clips per epoch) pairs (XDC's "es", Table 11): an epoch is that many clips drawn from
    the train split (each train clip repeated a random number of times, mean clips / train
    clips), the set told by the labels' number of classes (:data:`DOWNSTREAM_CLASSES`); no
    entry for the labels' set: one pass over the train clips. ``seconds`` (audio tasks): the
    length of audio the prepared clips must hold (0: any)."""

    key: str  # the result's name (JSON key) and the run folder
    encoder: str
    full: bool
    optim: OptimConfig
    epochs: int
    batch_size: int
    test_clips: int
    network: Literal["method", "caffenet"] = "method"
    init_prefix: str = ""  # caffenet: the pretrained state dict's prefix of the conv and BN layers
    epoch_clips: tuple[tuple[str, int], ...] = ()
    seconds: float = 0.0
    task: str = "action"
    published: Pairs = ()
    cites: Pairs = ()


@dataclasses.dataclass(frozen=True)
class LinearLayer:
    """A linear layer on frozen features trained by cross-entropy: ``epochs`` shuffled passes of
    ``batch_size`` rows, ``weight_decay`` the L2 penalty, lr ×``gamma`` at each of ``milestones``
    (fractions of the epochs); ``standardize``: features first standardised with the train
    clips' mean and deviation (a batch norm without learned parameters, at its running statistics)."""

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
class FrozenProtocol:
    """The method's tap ``tap`` of every clip of the train videos and ``test_clips`` per test
    video; a linear layer or a linear SVM (sklearn ``LinearSVC``, C = ``svm_c``); class scores
    averaged per test video; the result is ``key``."""

    key: str
    tap: str
    linear: LinearLayer
    svm_c: float
    test_clips: int
    task: str = "action"
    published: Pairs = ()
    cites: Pairs = ()


@dataclasses.dataclass(frozen=True)
class LayerProbeProtocol:
    """Taps of the train and test clips, each resized bilinearly to s×s for its (tap, s) in
    ``sizes``; one linear layer per tap, class probabilities averaged per test video; one
    result per tap (``rgb_conv1`` …)."""

    sizes: tuple[tuple[str, int], ...]
    linear: LinearLayer
    test_clips: int
    task: str = "action"
    published: Pairs = ()
    cites: Pairs = ()


@dataclasses.dataclass(frozen=True)
class ImageLayerProbeProtocol:
    """ILSVRC12 linear probing (Zhang et al.'s test) on an ImageFolder root with ``train/`` and
    ``val/``: the frozen network's taps (``sizes``: (tap, s), resized bilinearly to s×s),
    each through a batch norm without learned parameters and its own linear layer, all trained
    together by ``linear`` on random ``crop`` crops and flips of the train images (shorter side
    resized to ``resize``); top-1 on the val images' centre crops, one result per tap."""

    sizes: tuple[tuple[str, int], ...]
    linear: LinearLayer
    resize: int = 256
    crop: int = 224
    task: str = "imagenet"
    published: Pairs = ()
    cites: Pairs = ()


@dataclasses.dataclass(frozen=True)
class VOCProtocol:
    """PASCAL VOC 2007 classification (Krähenbühl et al.'s protocol, philkr/voc-classification):
    the pretrained network (``network``: ``cpfs``: its AlexNet with BN folded, fc6-fc7 kept;
    ``caffenet``: a CaffeNet whose conv layers, and BN layers when ``transfer_bn``, load the
    state dict under ``init_prefix``, fc6-fc7 fresh) with a fresh 20-way layer, finetuned end to
    end on trainval by a per-class sigmoid cross-entropy (difficult labels ignored): SGD
    ``lr``, ``momentum``, ``weight_decay``, ``batch_size``, ``iterations``, lr ×``gamma``
    every ``step`` iterations, the gradient norm clipped to ``clip_grad``; train images rescaled
    by a random factor in ``scale`` relative to ``crop``, randomly cropped and flipped; the
    scores of ``test_crops`` such crops summed per test image; result: mean over classes of
    sklearn's average precision on the non-difficult test images."""

    key: str
    network: Literal["cpfs", "caffenet"]
    lr: float
    iterations: int
    step: int
    gamma: float
    batch_size: int
    weight_decay: float
    momentum: float = 0.9
    clip_grad: float = 10.0
    scale: tuple[float, float] = (0.5, 2.0)
    crop: int = 224
    test_crops: int = 10
    init_prefix: str = ""
    transfer_bn: bool = False
    task: str = "voc07"
    published: Pairs = ()
    cites: Pairs = ()


@dataclasses.dataclass(frozen=True)
class AudioClipsProtocol:
    """Audio classification on frozen features of a prepared audio-only set (ESC-50, DCASE):
    ``clips`` evenly spaced sub-clips of ``seconds`` each per recording (train and test), the
    method's tap ``tap``, a linear layer (``classifier="linear"``: ``linear``) or a primal
    linear SVM (``svm``: C = ``svm_c``; ``linear`` None); sub-clip scores averaged per test
    recording; top-1."""

    key: str
    tap: str
    clips: int
    seconds: float
    classifier: Literal["linear", "svm"]
    linear: LinearLayer | None
    svm_c: float
    task: str = "esc50"
    published: Pairs = ()
    cites: Pairs = ()


Protocol = FinetuneProtocol | FrozenProtocol | LayerProbeProtocol | ImageLayerProbeProtocol | VOCProtocol | AudioClipsProtocol
IMAGE_TASKS = ("imagenet", "voc07")
AUDIO_TASKS = ("esc50", "dcase")


def epoch_clips(p: FinetuneProtocol, classes: int) -> int:
    """Clips per finetuning epoch of ``p`` on a labels CSV of ``classes`` classes (0: one pass)."""
    return next((n for name, n in p.epoch_clips if DOWNSTREAM_CLASSES[name] == classes), 0)


def describe(p: Protocol) -> dict:
    """A protocol as JSON-able data (``raysup config METHOD --protocol``): its kind, every
    field, ``published`` and ``cites`` as objects."""
    out = {"kind": type(p).__name__, **dataclasses.asdict(p), "published": dict(p.published), "cites": dict(p.cites)}
    return out | ({"epoch_clips": dict(p.epoch_clips)} if isinstance(p, FinetuneProtocol) else {})
