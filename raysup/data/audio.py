"""Log-mel spectrograms with torchaudio (defaults = GDT's official settings)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torchaudio


@dataclass(frozen=True)
class AudioConfig:
    """24 kHz mono, 40 mel filters, 20 ms window, 10 ms hop: 40×99 per second (GDT)."""

    sample_rate: int = 24000
    n_mels: int = 40
    window_ms: float = 20.0
    hop_ms: float = 10.0

    @property
    def n_fft(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    @property
    def hop(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    def n_frames(self, seconds: float) -> int:
        """Spectrogram frames for ``seconds`` of audio (no centre padding)."""
        samples = int(round(seconds * self.sample_rate))
        return 1 + (samples - self.n_fft) // self.hop


@lru_cache(maxsize=8)
def _mel(cfg: AudioConfig) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate,
        n_fft=cfg.n_fft,
        win_length=cfg.n_fft,
        hop_length=cfg.hop,
        n_mels=cfg.n_mels,
        center=False,
    )


def log_mel(waveform: np.ndarray, cfg: AudioConfig, seconds: float) -> np.ndarray:
    """log(mel + 1e-6) of a mono waveform, zero-padded or cut to ``seconds``: [n_mels, n_frames]."""
    samples = int(round(seconds * cfg.sample_rate))
    wav = np.zeros(samples, np.float32)
    n = min(samples, len(waveform))
    wav[:n] = waveform[:n]
    with torch.no_grad():
        mel = _mel(cfg)(torch.from_numpy(wav))  # [n_mels, n_frames]
    return torch.log(mel + 1e-6).numpy()
