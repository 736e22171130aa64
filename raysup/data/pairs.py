"""Cross and Learn's pairs: a clip's centre RGB frame with the stack of optical-flow fields
(or frame differences) around it, and their augmentation.

Tensors: B pairs, T frames per clip, n fields per stack, H×W pixels, S the network input side.
"""
from __future__ import annotations

from typing import Literal

import torch
from torchvision.transforms.v2 import functional as TF

from raysup.data.transforms import random_resized_crop_flip, standardize

Modality = Literal["flow", "diff"]
CHANNELS_PER_FIELD = {"flow": 2, "diff": 3}  # (dx, dy) per flow field; RGB per difference


def stack_start(available: int, n: int) -> int:
    """First field of a stack of ``n`` centred among ``available`` ones (T−1 for a T-frame clip)."""
    if not 1 <= n <= available:
        raise ValueError(f"a stack of {n} fields needs a clip with at least {n + 1} frames ({available} fields here)")
    return (available - n) // 2


def centre_indices(frames: int, modality: Modality, n: int) -> tuple[list[int], list[int]]:
    """(frames, flow fields) of a ``frames``-frame clip that :func:`centre_pair` uses: the
    stack's ``n`` centred fields (flow) or its n+1 frames (differences), and its middle frame."""
    start = stack_start(frames - 1, n)
    if modality == "flow":
        return [start + n // 2], list(range(start, start + n))
    return list(range(start, start + n + 1)), []


def centre_pair(frames: torch.Tensor, flow: torch.Tensor | None, modality: Modality, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip columns → (RGB frame [B,3,H,W] in [0,1], motion stack [B,n·c,H,W]).

    The stack holds ``n`` consecutive fields centred in the clip — flow t→t+1 in pixels (c=2,
    channels dx₀,dy₀,dx₁,…) or frame differences frame_{t+1} − frame_t in [−1,1] (c=3) — and
    the RGB frame is the one in its middle (frame ``start + n//2``), as in the official code.
    ``frames`` uint8 [B,T,H,W,3]; ``flow`` [B,T−1,H,W,2] (any float dtype; unused for ``diff``).
    """
    b, t, h, w, _ = frames.shape
    start = stack_start(t - 1, n)  # the indices of centre_indices
    rgb = frames[:, start + n // 2].permute(0, 3, 1, 2).float().div(255.0)  # [B,3,H,W]
    if modality == "flow":
        fields = flow[:, start : start + n].float()  # [B,n,H,W,2]
    else:
        x = frames[:, start : start + n + 1].float().div(255.0)  # [B,n+1,H,W,3]
        fields = x[:, 1:] - x[:, :-1]  # [B,n,H,W,3]
    stack = fields.permute(0, 1, 4, 2, 3).reshape(b, -1, h, w)  # [B,n·c,H,W]
    return rgb, stack


def augment_pair(
    rgb: torch.Tensor,
    stack: torch.Tensor,
    modality: Modality,
    *,
    size: int,
    scale: tuple[float, float] = (0.5, 1.0),
    time_flip: bool = True,
    channel_split: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training augmentation of :func:`centre_pair`'s output, identical for a pair's RGB frame
    and its stack: random resized crop to ``size``×``size`` and horizontal flip, frame and stack
    in one :func:`raysup.data.transforms.random_resized_crop_flip` (flow vectors rescaled with
    the image, dx negated on a flip), temporal flip of the stack (fields in reverse order,
    negated), and channel splitting of RGB (one random channel copied to all three). Returns
    ([B,3,S,S], [B,n·c,S,S])."""
    b, k = rgb.shape[0], stack.shape[1]
    c = CHANNELS_PER_FIELD[modality]
    both = torch.cat([rgb, stack.to(rgb.dtype)], 1)  # [B,3+n·c,H,W]
    both = random_resized_crop_flip(both, scale, size=(size, size), flow_channels=k if modality == "flow" else 0)
    rgb, stack = both[:, :3], both[:, 3:]  # [B,3,S,S], [B,n·c,S,S]
    if time_flip:
        rev = torch.rand(b, device=stack.device) < 0.5  # [B]
        fields = stack.view(b, k // c, c, size, size)  # [B,n,c,S,S]
        reversed_ = -fields.flip(1)  # played backwards: t→t+1 becomes t+1→t
        stack = torch.where(rev[:, None, None, None, None], reversed_, fields).reshape(b, k, size, size)
    if channel_split:
        pick = torch.randint(0, 3, (b,), device=rgb.device)  # [B]
        rgb = rgb[torch.arange(b, device=rgb.device), pick][:, None].expand(b, 3, size, size)
    return rgb, stack


def pair_input(
    frames: torch.Tensor,
    flow: torch.Tensor | None,
    modality: Modality,
    n: int,
    *,
    size: int,
    train: bool,
    scale: tuple[float, float] = (0.5, 1.0),
    time_flip: bool = True,
    channel_split: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip columns → network inputs (RGB [B,3,S,S], stack [B,n·c,S,S]): :func:`centre_pair`,
    then :func:`augment_pair` when ``train``, else a centre crop and, with ``channel_split``,
    the channel average; then each flow field's mean is subtracted (camera motion, official
    code) and each RGB frame is standardised (removes global colour and brightness)."""
    rgb, stack = centre_pair(frames, flow, modality, n)
    if train:
        rgb, stack = augment_pair(rgb, stack, modality, size=size, scale=scale, time_flip=time_flip, channel_split=channel_split)
    else:
        rgb, stack = TF.center_crop(rgb, [size, size]), TF.center_crop(stack, [size, size])
        if channel_split:
            rgb = rgb.mean(1, keepdim=True).expand_as(rgb)
    if modality == "flow":
        stack = stack - stack.mean(dim=(2, 3), keepdim=True)
    return standardize(rgb, (1, 2, 3)), stack
