"""Video and audio decoding with PyAV, streamed: frames resampled to a target fps and size
at their real timestamps, audio as mono chunks placed at theirs.

Every failure raises :class:`DecodeError` with a short, user-facing reason; the
caller (``prepare``) records it and moves on to the next input. Nothing here holds more
than a clip's worth of a video: a long input or a hostile timestamp costs time, not memory.
"""
from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import av
import numpy as np
from av.video.reformatter import VideoReformatter

T = TypeVar("T")

# The longest timestamp gap bridged by repeating the frame before it (a still scene, a variable
# frame rate): at most MAX_GAP_S * fps repeated frames. A longer gap (or a jump back in time)
# ends a segment; clips never span two segments.
MAX_GAP_S = 1.0
# A jump back in time by more than this (two recordings joined byte-wise, a camera whose clock
# reset) starts a new epoch: times repeat across epochs, so a clip finds its audio by (epoch, time).
JUMP_BACK_S = 0.1


# PyAV reads a file object this many bytes at a time (its default, 32 kB, is one GET per 32 kB
# on object storage)
BUFFER_BYTES = 4 * 1024**2


class DecodeError(Exception):
    """An input cannot be used; ``str(err)`` is the reason recorded in the manifest."""


@dataclass(frozen=True)
class Gap:
    """Marks a timestamp gap longer than ``MAX_GAP_S`` (or a jump back) between two samples."""

    before_s: float
    after_s: float

    @property
    def new_epoch(self) -> bool:
        """Whether time jumped back by more than ``JUMP_BACK_S`` (see :class:`AudioTrack`)."""
        return self.after_s < self.before_s - JUMP_BACK_S


@contextlib.contextmanager
def open_media(source: str | BinaryIO) -> Iterator[av.container.InputContainer]:
    """An open PyAV container; open failures as :class:`DecodeError`."""
    try:
        container = av.open(source, mode="r", metadata_errors="ignore", **({} if isinstance(source, str) else {"buffer_size": BUFFER_BYTES}))
    except av.error.InvalidDataError as e:
        kind = "corrupt or truncated media file" if _looks_like_media(source) else "not a media file"
        raise DecodeError(f"{kind} ({e.strerror or e})") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise DecodeError(f"cannot open ({type(e).__name__}: {e})") from None
    with container:
        yield container


def check_streams(container: av.container.InputContainer, want_video: bool) -> None:
    if want_video and not container.streams.video:
        raise DecodeError("no video stream")
    if not want_video and not container.streams.audio:
        raise DecodeError("no audio stream")


_MAGIC = (b"ftyp", b"RIFF", b"\x1aE\xdf\xa3", b"OggS", b"FLV", b"\x00\x00\x01\xba", b"ID3", b"fLaC")


def _looks_like_media(source: str | BinaryIO) -> bool:
    """Whether the first bytes carry a known container signature (mp4/avi/mkv/ogg/...)."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as f:
                head = f.read(16)
        else:
            source.seek(0)
            head = source.read(16)
    except OSError:
        return False
    return any(m in head[:12] for m in _MAGIC)


@contextlib.contextmanager
def _decode_errors(what: str):
    try:
        yield
    except (av.error.FFmpegError, ValueError) as e:
        raise DecodeError(f"corrupt or truncated {what} ({type(e).__name__}: {e})") from None


def resample(timed: Iterable[tuple[float, T]], fps: float, max_gap_s: float = MAX_GAP_S) -> Iterator[tuple[float, T] | Gap]:
    """Items at t = t0 + j/fps (t0: the first item's time), each the item nearest in time.

    A gap longer than ``max_gap_s`` between two items, or a jump back in time, yields a
    :class:`Gap` and restarts the grid at the later item, so no item is repeated more than
    ``max_gap_s * fps`` times. The last item of a segment covers half the interval before it.
    """
    step = 1.0 / fps
    prev_t, prev_x, t0, j, last_dt = None, None, 0.0, 0, 0.0
    for t, x in timed:
        if prev_t is not None and (t - prev_t > max_gap_s or t < prev_t):
            yield from _tail(prev_x, prev_t + last_dt / 2, t0, j, step)
            yield Gap(prev_t, t)
            prev_t = None
        if prev_t is None:
            prev_t, prev_x, t0, j, last_dt = t, x, t, 0, 0.0
            continue
        while t0 + j * step <= (prev_t + t) / 2:  # targets nearer the previous item
            yield t0 + j * step, prev_x
            j += 1
        if t != prev_t:
            prev_t, prev_x, last_dt = t, x, t - prev_t
    if prev_t is not None:
        yield from _tail(prev_x, prev_t + last_dt / 2, t0, j, step)


def _tail(x, until: float, t0: float, j: int, step: float) -> Iterator[tuple[float, object]]:
    while t0 + j * step <= until + 1e-9:
        yield t0 + j * step, x
        j += 1


def windows(samples: Iterable[tuple[float, T] | Gap], length: int, stride: int) -> Iterator[list[tuple[float, T]]]:
    """Runs of ``length`` consecutive samples starting every ``stride`` samples of a segment;
    a :class:`Gap` ends a segment (a run never spans one). Holds at most ``length`` samples."""
    run: deque = deque(maxlen=length)
    n = 0  # samples so far in this segment
    for s in samples:
        if isinstance(s, Gap):
            run.clear()
            n = 0
            continue
        run.append(s)
        n += 1
        if n >= length and (n - length) % stride == 0:
            yield list(run)


def video_samples(container: av.container.InputContainer, fps: float, size: int, *, width: int = 0,
                  square: bool = True) -> Iterator[tuple[float, np.ndarray] | Gap]:
    """:func:`resample` over the decoded frames of the first video stream, each converted once
    (resized to ``size`` on the short side, or to size×``width`` when given, then with ``square``
    a centre crop to size×size): (t, uint8 [H,W,3]) or :class:`Gap`.
    Decodes on one thread: ``prepare`` runs one decode per core, and FFmpeg's frame threads
    cost ~20% more CPU time on small videos."""
    stream = container.streams.video[0]
    stream.thread_type = "NONE"
    reformatter = VideoReformatter()
    last_frame, last_img = None, None
    for s in resample(_frames(container, stream), fps):
        if isinstance(s, Gap):
            yield s
            continue
        if s[1] is not last_frame:  # one conversion per source frame, however often it repeats
            last_frame, last_img = s[1], _resize_crop(s[1], size, width, reformatter, square)
        yield s[0], last_img


def _frames(container: av.container.InputContainer, stream) -> Iterator[tuple[float, av.VideoFrame]]:
    src_rate = float(stream.average_rate or stream.guessed_rate or 25.0)
    t = None
    with _decode_errors("video"):
        for frame in container.decode(stream):
            t = frame.time if frame.time is not None else (0.0 if t is None else t + 1.0 / src_rate)
            yield t, frame


def video_times(container: av.container.InputContainer) -> Iterator[float]:
    """Timestamps of the first video stream's packets in presentation order, without decoding
    (for planning): sorted within each run of non-decreasing decode timestamps (packets without
    one continue the run), so that after a jump back in time (two recordings joined) they jump
    back as the decoded frames do."""
    stream = container.streams.video[0]
    run, last_dts = [], None
    with _decode_errors("video"):
        for p in container.demux(stream):
            if p.pts is None or not p.size:
                continue
            if p.dts is not None and last_dts is not None and p.dts < last_dts:
                yield from sorted(run)
                run = []
            last_dts = p.dts if p.dts is not None else last_dts
            run.append(float(p.pts * p.time_base))
    yield from sorted(run)


def short_side_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(H', W') of an H×W frame resized to ``size`` on its short side, aspect kept."""
    scale = size / min(w, h)
    return max(size, round(h * scale)), max(size, round(w * scale))


def _resize_crop(frame: av.VideoFrame, size: int, width: int, reformatter: VideoReformatter, square: bool = True) -> np.ndarray:
    nh, nw = (size, width) if width else short_side_shape(frame.height, frame.width, size)
    img = reformatter.reformat(frame, width=nw, height=nh, format="rgb24").to_ndarray()  # [H',W',3]
    if not square:
        return img
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


def audio_chunks(container: av.container.InputContainer, sample_rate: int) -> Iterator[tuple[float | None, np.ndarray]]:
    """The first audio stream as float32 mono chunks at ``sample_rate``: (start time or None, [S])."""
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    with _decode_errors("audio"):
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                yield out.time, out.to_ndarray().reshape(-1)
        for out in resampler.resample(None):
            yield out.time, out.to_ndarray().reshape(-1)


class AudioTrack:
    """A sliding window over :func:`audio_chunks`, placed at their timestamps.

    Holds only the samples from the last ``read`` start on. Gaps up to ``MAX_GAP_S`` are filled
    with silence; the audio after a longer gap or a jump back starts a new stretch, held back
    (one chunk) until reads have gone past the current one. After a jump back by more than
    ``JUMP_BACK_S`` times repeat, so stretches carry an epoch (jumps back before them) and reads
    name the epoch of their clip (the video counts its jumps back alike: :attr:`Gap.new_epoch`).
    """

    def __init__(self, chunks: Iterable[tuple[float | None, np.ndarray]], sample_rate: int):
        self.chunks, self.sr = iter(chunks), sample_rate
        self.epoch = 0  # of the current stretch
        self.start: float | None = None  # time of buf[0]
        self.buf = np.zeros(0, np.float32)
        self.pending: tuple[int, float, np.ndarray] | None = None  # (epoch, time, samples): first chunk of the next stretch
        self.exhausted = False

    @property
    def end(self) -> float:
        return (self.start or 0.0) + len(self.buf) / self.sr

    def first_time(self) -> float | None:
        """Time of the first sample (None: no audio)."""
        while self.start is None and self._pull():
            pass
        return self.start

    def read(self, start: float, seconds: float, epoch: int = 0) -> np.ndarray:
        """Samples of [start, start + seconds) in ``epoch``: [round(seconds * sr)], zeros where
        there are none. (epoch, start) must not decrease between calls."""
        while True:
            if self.pending is not None and (self.epoch < epoch or (self.pending[0] == epoch and start >= self.end)):
                (self.epoch, self.start, self.buf), self.pending = self.pending, None  # the current stretch is used up
                continue
            if self.epoch <= epoch:  # an earlier epoch (no clip reads it) is dropped whole
                self._drop_before(start if self.epoch == epoch else self.end)
            if (self.epoch == epoch and self.start is not None and self.end >= start + seconds) or self.epoch > epoch \
                    or self.pending is not None or not self._pull():
                break
        n = int(round(seconds * self.sr))
        out = np.zeros(n, np.float32)
        if self.start is not None and self.epoch == epoch:
            offset = int(round((self.start - start) * self.sr))
            if offset < n:
                take = self.buf[: n - offset]
                out[offset : offset + len(take)] = take
        return out

    def _pull(self) -> bool:
        chunk = next(self.chunks, None)
        if chunk is None:
            self.exhausted = True
            return False
        t, x = chunk
        if self.start is None:
            self.start, self.buf = (t or 0.0), x
            return True
        t = self.end if t is None else t
        gap = t - self.end
        if gap > MAX_GAP_S or gap < -JUMP_BACK_S:
            self.pending = (self.epoch + (gap < -JUMP_BACK_S), t, x)
        else:  # small gaps: silence; small overlaps: appended (drift under a few ms)
            pad = np.zeros(max(0, int(round(gap * self.sr))), np.float32)
            self.buf = np.concatenate([self.buf, pad, x])
        return True

    def _drop_before(self, t: float) -> None:
        if self.start is not None and t > self.start:
            k = min(len(self.buf), int(round((t - self.start) * self.sr)))
            self.buf, self.start = self.buf[k:], self.start + k / self.sr
