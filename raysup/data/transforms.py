"""Batched tensor transforms from raw clip columns to encoder inputs (train and eval).

Functions take the device from their inputs; randomness is per sample.
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2



def video_input(frames: torch.Tensor, *, train: bool, crop_scale: tuple[float, float] = (0.5, 1.0)) -> torch.Tensor:
    """uint8 [B,T,H,W,3] → float [B,3,T,H,W] standardised per clip and channel (removes a
    clip's global colour and brightness, which small nets otherwise memorise); with ``train``,
    a random resized crop (back to H×W) and horizontal flip per clip, the same for all frames."""
    x = frames.permute(0, 4, 1, 2, 3).float().div_(255.0)  # [B,3,T,H,W]
    if train:
        x = random_resized_crop_flip(x, crop_scale)
    mean = x.mean(dim=(2, 3, 4), keepdim=True)
    std = x.std(dim=(2, 3, 4), keepdim=True).clamp_min(1e-3)
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
