"""Audio augmentations on batched log-mel spectrograms (GDT's audio transformations).

- :func:`spec_augment`: SpecAugment frequency and time masking (Park et al. 2019) with
  torchaudio's ``FrequencyMasking``/``TimeMasking``; GDT's presets ``[nf, f, nt, t]`` are
  mild ``[1, 2, 1, 5]`` and strong ``[2, 3, 2, 6]`` (official code).
- :func:`volume_jitter`: a random gain per clip, in dB, applied to a log-mel spectrogram.

Functions take the device from their inputs; randomness is per sample and comes from the
global torch RNG (so ``torch.manual_seed`` makes them reproducible).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchaudio


@dataclass(frozen=True)
class SpecAugmentParams:
    """``freq_masks`` masks over mel rows and ``time_masks`` masks over frames, each of a width
    torchaudio draws as ``floor(U[0, width))`` (so 0 … width−1 rows/frames per mask; GDT's
    official code uses the same torchaudio transforms)."""

    freq_masks: int = 0
    freq_width: int = 0
    time_masks: int = 0
    time_width: int = 0

    @property
    def active(self) -> bool:
        return (self.freq_masks > 0 and self.freq_width > 0) or (self.time_masks > 0 and self.time_width > 0)


SPECAUGMENT_PRESETS: dict[str, SpecAugmentParams] = {
    "none": SpecAugmentParams(),
    "mild": SpecAugmentParams(1, 2, 1, 5),
    "strong": SpecAugmentParams(2, 3, 2, 6),
}


def spec_augment(spec: torch.Tensor, params: SpecAugmentParams, *, mask_value: float = 0.0) -> torch.Tensor:
    """Mask whole mel rows and whole time columns of ``spec`` [B,C,M,F] (or [B,M,F]) with
    ``mask_value``, independently per sample. Returns a new tensor; ``spec`` is unchanged.

    Applied after per-spectrogram standardisation (:func:`raysup.data.transforms.audio_input`)
    the default ``mask_value=0`` is each spectrogram's mean, as in SpecAugment.
    """
    if not params.active:
        return spec.clone()
    squeeze = spec.dim() == 3
    x = spec.unsqueeze(1) if squeeze else spec  # [B,C,M,F]: iid masks need a batch and a channel dim
    if params.freq_masks > 0 and params.freq_width > 0:
        mask = torchaudio.transforms.FrequencyMasking(params.freq_width, iid_masks=True)
        for _ in range(params.freq_masks):
            x = mask(x, mask_value)
    if params.time_masks > 0 and params.time_width > 0:
        mask = torchaudio.transforms.TimeMasking(params.time_width, iid_masks=True)
        for _ in range(params.time_masks):
            x = mask(x, mask_value)
    return x.squeeze(1) if squeeze else x


def volume_jitter(log_mel: torch.Tensor, max_db: float, *, eps: float = 1e-6) -> torch.Tensor:
    """Scale each clip's loudness by a random gain g ~ U[-max_db, +max_db] dB (power).

    ``log_mel`` [B,M,F] is ``log(mel_power + eps)`` (natural log, :func:`raysup.data.audio.log_mel`);
    the result is the log-mel of the gained signal, ``log(g·(exp(x) − eps) + eps)``, which is the
    additive constant ``ln g = max_db·ln(10)/10·u`` wherever the power is well above ``eps``.
    (GDT's official code scales the waveform by U[0.9, 1.1], i.e. about ±0.9 dB.) Note that a
    per-spectrogram standardisation afterwards cancels that constant; what survives is the gain's
    interaction with the log floor ``eps`` (quiet bins move less than loud ones).
    """
    if max_db <= 0:
        return log_mel.clone()
    x = log_mel.float()
    u = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) * 2 - 1  # [B,1,1] in [-1,1]
    log_gain = u * (max_db * math.log(10.0) / 10.0)  # natural-log power gain
    power = (x.exp() - eps).clamp_min(0.0)
    return torch.log(power * log_gain.exp() + eps).to(log_mel.dtype)
