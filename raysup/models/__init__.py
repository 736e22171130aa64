"""Encoders by name, so configs can pick them: ``build_encoder("r2plus1d_tiny")``."""
from __future__ import annotations

from torch import nn

from raysup.models.audio import resnet18_audio, resnet_audio_tiny
from raysup.models.image import caffenet_bn, caffenet_tiny, vgg16_bn
from raysup.models.video import r2plus1d_18, r2plus1d_tiny

VIDEO_ENCODERS = {"r2plus1d_18": r2plus1d_18, "r2plus1d_tiny": r2plus1d_tiny}
AUDIO_ENCODERS = {"resnet18_audio": resnet18_audio, "resnet_audio_tiny": resnet_audio_tiny}
IMAGE_ENCODERS = {"caffenet_bn": caffenet_bn, "caffenet_tiny": caffenet_tiny, "vgg16_bn": vgg16_bn}


def video_encoder(name: str) -> nn.Module:
    if name not in VIDEO_ENCODERS:
        raise ValueError(f"video_encoder: unknown {name!r} (known: {sorted(VIDEO_ENCODERS)})")
    return VIDEO_ENCODERS[name]()


def audio_encoder(name: str) -> nn.Module:
    if name not in AUDIO_ENCODERS:
        raise ValueError(f"audio_encoder: unknown {name!r} (known: {sorted(AUDIO_ENCODERS)})")
    return AUDIO_ENCODERS[name]()


def image_encoder(name: str, in_channels: int = 3) -> nn.Module:
    if name not in IMAGE_ENCODERS:
        raise ValueError(f"image_encoder: unknown {name!r} (known: {sorted(IMAGE_ENCODERS)})")
    return IMAGE_ENCODERS[name](in_channels)
