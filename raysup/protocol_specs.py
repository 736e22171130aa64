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
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from raysup.config import OptimConfig


@dataclasses.dataclass(frozen=True)
class FinetuneProtocol:
    """``network``: ``method`` (the method's ``encoder`` with a new linear head; ``full``: the
    encoder's network trains too, else only the head on frozen features) or ``caffenet`` (Cross
    and Learn's finetuning net: a fresh CaffeNet whose conv and BN layers load the pretrained
    state-dict entries under ``init_prefix``, its FC layers fresh)."""

    key: str  # the result's name (JSON key) and the run folder
    encoder: str
    full: bool
    optim: OptimConfig
    epochs: int
    batch_size: int
    test_clips: int
    network: Literal["method", "caffenet"] = "method"
    init_prefix: str = ""  # caffenet: the pretrained state dict's prefix of the conv and BN layers


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


@dataclasses.dataclass(frozen=True)
class LayerProbeProtocol:
    """Taps of the train and test clips, each resized bilinearly to s×s for its (tap, s) in
    ``sizes``; one linear layer per tap, class probabilities averaged per test video; one
    result per tap (``rgb_conv1`` …)."""

    sizes: tuple[tuple[str, int], ...]
    linear: LinearLayer
    test_clips: int


Protocol = FinetuneProtocol | FrozenProtocol | LayerProbeProtocol
