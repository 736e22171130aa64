"""Batched tensor transforms from raw clip columns to encoder inputs (train and eval).

Functions take the device from their inputs; randomness is per sample.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

# Kinetics-400 statistics used by torchvision's video models.
VIDEO_MEAN = (0.43216, 0.394666, 0.37645)
VIDEO_STD = (0.22803, 0.22145, 0.216989)


def video_input(frames: torch.Tensor, *, train: bool, crop_scale: tuple[float, float] = (0.5, 1.0)) -> torch.Tensor:
    """uint8 [B,T,H,W,3] → normalised float [B,3,T,H,W]; with ``train``, a random resized
    crop (back to H×W) and horizontal flip per clip, the same for all its frames."""
    x = frames.permute(0, 4, 1, 2, 3).float().div_(255.0)  # [B,3,T,H,W]
    if train:
        x = random_resized_crop_flip(x, crop_scale)
    mean = x.new_tensor(VIDEO_MEAN).view(1, 3, 1, 1, 1)
    std = x.new_tensor(VIDEO_STD).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def random_resized_crop_flip(x: torch.Tensor, scale: tuple[float, float] = (0.5, 1.0)) -> torch.Tensor:
    """Per-sample random resized crop + horizontal flip over the last two dims of [B,...,H,W]."""
    size = list(x.shape[-2:])
    aug = v2.Compose([v2.RandomResizedCrop(size, scale=scale, antialias=True), v2.RandomHorizontalFlip()])
    return torch.stack([aug(sample) for sample in x])


def audio_input(audio: torch.Tensor) -> torch.Tensor:
    """log-mel [B,M,F] (any float dtype) → [B,1,M,F] float32, standardised per spectrogram."""
    a = audio.float()
    mean = a.mean(dim=(1, 2), keepdim=True)
    std = a.std(dim=(1, 2), keepdim=True).clamp_min(1e-3)
    return ((a - mean) / std).unsqueeze(1)
