"""Batched tensor transforms from raw clip columns to encoder inputs (train and eval).

Functions take the device from their inputs; randomness is per sample.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torchvision.ops import roi_align

FIXED_MEAN, FIXED_STD = 0.45, 0.225  # official GDT code's video normalisation (datasets/GDTPretrainDataset.py)
# Kinetics' per-channel RGB mean and deviation, XDC's video normalisation (its author in
# HumamAlwassel/XDC issue #2; also torchvision's and VMZ's video models')
KINETICS_MEAN, KINETICS_STD = (0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)


def standardize(x: torch.Tensor, dims: tuple[int, ...], *, stats: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` standardised over ``dims`` per sample (mean 0, deviation 1; the deviation clamped at
    1e-3 so flat inputs stay finite), with the statistics of ``stats`` (default: ``x`` itself)."""
    ref = x if stats is None else stats
    return (x - ref.mean(dim=dims, keepdim=True)) / ref.std(dim=dims, keepdim=True).clamp_min(1e-3)


def video_input(frames: torch.Tensor, *, train: bool, crop_scale: tuple[float, float] = (0.5, 1.0), norm: str = "clip") -> torch.Tensor:
    """uint8 [B,T,H,W,3] → float [B,3,T,H,W], with ``norm="clip"`` standardised per clip and
    channel (removes a clip's global colour and brightness, which small nets otherwise
    memorise), ``"fixed"`` as (x − 0.45)/0.225, ``"kinetics"`` with Kinetics' per-channel mean
    and deviation; with ``train``, a random resized crop (area fraction in ``crop_scale``, back
    to H×W; (1, 1): none) and horizontal flip per clip, the same for all frames."""
    x = frames.permute(0, 4, 1, 2, 3).float().div_(255.0)  # [B,3,T,H,W]
    if train:
        x = random_resized_crop_flip(x, crop_scale)
    if norm == "fixed":
        return (x - FIXED_MEAN) / FIXED_STD
    if norm == "kinetics":
        return (x - x.new_tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1)) / x.new_tensor(KINETICS_STD).view(1, 3, 1, 1, 1)
    return standardize(x, (2, 3, 4))


def check_crop_scale(scale: tuple[float, ...]) -> None:
    """A config's ``crop_scale`` (:func:`video_input`), or a ValueError naming it."""
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"crop_scale: expected min,max with 0 < min <= max <= 1, got {scale}")


def crop_boxes(b: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float], device=None) -> torch.Tensor:
    """[B,4] random crop boxes (x0, y0, x1, y1) in whole pixels of an H×W image: torchvision's
    ``RandomResizedCrop.get_params`` for B samples at once — up to 10 draws of an area (a
    fraction in ``scale`` of H·W) and a log-uniform aspect ratio w/h in ``ratio``, the first
    whose rounded box fits, at a uniform position; else the centred largest box in ``ratio``."""
    tries = 10
    area = h * w * torch.empty(b, tries, device=device).uniform_(*scale)  # [B,10]
    aspect = torch.empty(b, tries, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1])).exp()  # [B,10]
    cw, ch = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()  # [B,10] each
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)  # [B,10]
    first = fits.int().argmax(1, keepdim=True)  # [B,1] the first draw that fits
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)  # [B] each
    top = (torch.rand(b, device=device) * (h - ch + 1)).floor()  # [B] uniform in 0..H−h
    left = (torch.rand(b, device=device) * (w - cw + 1)).floor()
    # no draw fits: the centre crop, clamped to the allowed aspect ratios
    fw = w if w / h <= ratio[1] else round(h * ratio[1])
    fh = h if w / h >= ratio[0] else round(w / ratio[0])
    fallback = torch.tensor([(w - fw) // 2, (h - fh) // 2, fw, fh], device=device, dtype=cw.dtype)  # x0,y0,w,h
    box = torch.stack([left, top, cw, ch], 1)  # [B,4] x0,y0,w,h
    box = torch.where(fits.any(1, keepdim=True), box, fallback)
    return torch.cat([box[:, :2], box[:, :2] + box[:, 2:]], 1)  # [B,4] x0,y0,x1,y1


def random_resized_crop_flip(
    x: torch.Tensor,
    scale: tuple[float, float] = (0.5, 1.0),
    *,
    size: tuple[int, int] | None = None,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flow_channels: int = 0,
) -> torch.Tensor:
    """Per-sample random resized crop (:func:`crop_boxes`) to ``size`` (default: the input's
    H×W) and horizontal flip (probability ½) of a float [B,...,H,W]: all channels and frames of
    a sample share its box and flip. ``scale`` (1, 1) of a square input without ``size``: the
    box is the whole image and only the flip remains (the papers' crop then comes from
    ``TrainConfig.crop_size``). One batched bilinear ``roi_align`` crops and resizes the
    whole batch (each output pixel averages ⌈box/size⌉² samples: plain bilinear when zooming in,
    smoothing when shrinking).

    The last ``flow_channels`` channels of a [B,C,H,W] input are optical-flow fields in pixels
    (dx, dy, dx, dy, …): they are rescaled with the image (dx by S_w/w, dy by S_h/h for a w×h box
    resized to S_w×S_h) and dx is negated on a flip."""
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    oh, ow = size or (h, w)
    boxes = crop_boxes(b, h, w, scale, ratio, x.device).to(x.dtype)  # [B,4] x0,y0,x1,y1
    rois = torch.cat([torch.arange(b, device=x.device, dtype=x.dtype)[:, None], boxes], 1)  # [B,5] sample, box
    out = roi_align(x.reshape(b, -1, h, w), rois, [oh, ow], sampling_ratio=0, aligned=True)  # [B,C',S_h,S_w]
    flip = torch.rand(b, device=x.device) < 0.5  # [B]
    out[flip] = out[flip].flip(-1)
    if flow_channels:
        sign = 1 - 2 * flip.to(x.dtype)  # [B] −1 where flipped
        zoom = torch.stack([sign * ow / (boxes[:, 2] - boxes[:, 0]), oh / (boxes[:, 3] - boxes[:, 1])], 1)  # [B,2] dx, dy factors
        flow = out[:, -flow_channels:] * zoom.repeat(1, flow_channels // 2)[:, :, None, None]  # [B,flow_channels,S_h,S_w]
        out = torch.cat([out[:, :-flow_channels], flow], 1)
    return out.reshape(b, *x.shape[1:-2], oh, ow)  # [B,...,S_h,S_w]


def audio_input(audio: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """log-mel [B,M,F] (any float dtype) → [B,1,M,F] float32, standardised per spectrogram with
    its own statistics; ``augment`` (e.g. a volume jitter) is applied after they are taken, so
    an offset it adds survives the standardisation."""
    a = audio.float()
    return standardize(a if augment is None else augment(a), (1, 2), stats=a).unsqueeze(1)
