"""Every encoder builds, takes its documented input, and gives [B, out_dim] features."""
from __future__ import annotations

import pytest
import torch

from raysup.models import AUDIO_ENCODERS, IMAGE_ENCODERS, VIDEO_ENCODERS, audio_encoder, image_encoder, video_encoder


@pytest.mark.parametrize("name", sorted(VIDEO_ENCODERS))
def test_video_encoders(name):
    m = video_encoder(name).eval()
    side = 32 if "tiny" in name else 64
    with torch.no_grad():
        y = m(torch.randn(2, 3, 8, side, side))
    assert y.shape == (2, m.out_dim)


@pytest.mark.parametrize("name", sorted(AUDIO_ENCODERS))
def test_audio_encoders(name):
    m = audio_encoder(name).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 1, 40, 99)).shape == (2, m.out_dim)


@pytest.mark.parametrize("name", sorted(IMAGE_ENCODERS))
@pytest.mark.parametrize("channels", [3, 12, 20])  # RGB, 4 frame differences, 10 flow frames
def test_image_encoders(name, channels):
    m = image_encoder(name, channels).eval()
    side = 32 if "tiny" in name else 224
    with torch.no_grad():
        assert m(torch.randn(2, channels, side, side)).shape == (2, m.out_dim)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="video_encoder: unknown 'r3d'"):
        video_encoder("r3d")
