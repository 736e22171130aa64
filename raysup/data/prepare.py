"""``raysup prepare``: a Ray Data pipeline from a folder (or URI) of videos to Parquet clips.

Each Ray Data task takes a batch of input files, decodes them (PyAV) one clip at a time,
computes log-mel audio (torchaudio) and optical flow (OpenCV), and streams the clips into
Parquet shards of whole videos under temporary names (``_progress/tmp/``), in row groups, so a
task's memory does not grow with the length of its videos.

Commit protocol (one writer per output: ``_progress/lock.json``, taken atomically and kept
alive by a heartbeat): a task writes its record (``_progress/part-<id>.json``, the id a hash of
the run's lock token and the task's inputs: every input's outcome and the shard holding its
clips), then moves its shards into ``data/``; the last shard's arrival commits the record. A
record whose shards are missing is an interrupted commit: the next run (or a retry of the task)
deletes it and its temporaries and redoes its inputs; a retry of a task that committed finds
its record and returns it. At the end the committed records (an input's latest outcome wins)
become ``index.parquet`` (one row per input) and ``manifest.json`` (counts and the committed
shards, which are all readers read). A rerun keeps every committed outcome except skipped
inputs whose file changed or whose reason may be transient, which it retries. Prepare deletes
nothing but its own records and temporaries: other files under the output are never touched.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import io
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from raysup.config import ConfigError, to_dict
from raysup.data import codec
from raysup.data.audio import AudioConfig, log_mel
from raysup.data.decode import (
    MAX_GAP_S,
    AudioTrack,
    DecodeError,
    Gap,
    audio_chunks,
    check_streams,
    open_media,
    resample,
    video_samples,
    video_times,
    windows,
)
from raysup.data.flow import FlowMethod, compute_flow, motion_magnitude
from raysup.data.schema import DATA_DIR, INDEX, INDEX_COLUMNS, MANIFEST, TENSOR_COLUMNS, TensorSpec, arrow_schema, tensor_bytes
from raysup.data.storage import exists, read_json, redact, resolve, write_json
from raysup.data.tables import hash_counts, hash_keys, hash_order, shard_ranges
from raysup.locks import STALE_S, Lock, read_holder
from raysup.progress import Progress
from raysup.resources import node_shapes
from raysup.runtime import init_ray

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv", ".3gp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus")
PROGRESS_DIR = "_progress"
TMP_DIR = f"{PROGRESS_DIR}/tmp"  # shards being written
LOCK = f"{PROGRESS_DIR}/lock.json"
ROW_GROUP_BYTES = 16 * 1024**2  # cell bytes of clips a task holds before writing them out
MAX_TASK_INPUTS = 256  # inputs per task by default, at most (a task's retry redoes them all)
WHOLE_OBJECT_BYTES = 64 * 1024**2  # inputs on object storage up to this size are read with one GET
# Upper bounds, far above any paper's setting, that keep one clip allocatable: a typo such as
# --audio-seconds 1e6 would otherwise allocate 24e9 samples per clip.
LIMITS = {"clip_frames": 1024, "fps": 1000.0, "size": 4096, "width": 8192, "audio_seconds": 60.0, "sample_rate": 192000, "n_mels": 512}


@dataclass(frozen=True)
class PrepareConfig:
    clip_frames: int = 8  # T frames per clip
    fps: float = 8.0  # frames are resampled to this rate
    size: int = 32  # short side resized to this (raw: then centre crop size×size); readers get size×size crops
    width: int = 0  # >0: every frame resized to size×width (H×W, aspect not kept: GDT's and VMZ's 128×171); 0: own aspect
    clip_stride_s: float = 0.0  # 0: non-overlapping clips
    max_clips_per_video: int = 0  # 0: every clip; else evenly spaced clips
    flow: FlowMethod = "farneback"
    flow_step: int = 1  # flow t→t+flow_step, computed directly (cpfs: 5, papers/cpfs.md L125); 1: consecutive frames
    audio_only: bool = False  # audio sets (ESC-50): no frames, files without video are fine
    encoding: str = "jpeg"  # "jpeg": compressed cells, frames at their own aspect (raysup.data.codec); "raw": fixed-size tensors
    jpeg_quality: int = 92  # frames' JPEG quality: the lowest with >= 35 dB PSNR on each real video of docs/performance.md
    flow_range: float = codec.FLOW_RANGE_PX  # jpeg: stored flow is clipped to ±flow_range px per frame
    sample_rate: int = 24000
    n_mels: int = 40
    window_ms: float = 20.0
    hop_ms: float = 10.0
    audio_seconds: float | None = None  # audio window centred on the clip's centre; None: the clip's own span
    videos_per_shard: int = 0  # inputs per Ray Data task (0: inputs_per_task picks); a task's shards hold whole videos
    shard_mb: float = 256.0  # a shard is closed at the first video boundary once its cells reach this many MB
    cpus_per_task: float = 1.0

    def validate(self) -> None:
        for name in ("clip_frames", "size", "sample_rate", "n_mels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.videos_per_shard < 0:
            raise ValueError(f"videos_per_shard: must be >= 0 (0: chosen from the cluster's CPUs), got {self.videos_per_shard}")
        if self.width and self.width < self.size:
            raise ValueError(f"width: must be 0 (own aspect) or >= size ({self.size}), got {self.width}")
        if self.clip_frames < 2 and self.flow != "none":
            raise ValueError("clip_frames: flow needs at least 2 frames per clip")
        if not 1 <= self.flow_step < max(self.clip_frames, 2):
            raise ValueError(f"flow_step: must be in 1..clip_frames-1 ({self.clip_frames - 1}), got {self.flow_step}")
        for name in ("fps", "window_ms", "hop_ms", "cpus_per_task"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.clip_stride_s < 0 or self.max_clips_per_video < 0:
            raise ValueError("clip_stride_s/max_clips_per_video: must be >= 0")
        if self.encoding not in codec.ENCODINGS:
            raise ValueError(f"encoding: must be one of {', '.join(codec.ENCODINGS)}, got {self.encoding!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality: must be in 1..100, got {self.jpeg_quality}")
        for name in ("flow_range", "shard_mb"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        for name, limit in LIMITS.items():
            if (getattr(self, name) or 0) > limit:
                raise ValueError(f"{name}: must be at most {limit:g}, got {getattr(self, name):g}")
        if self.audio_seconds is not None and self.audio_seconds * self.sample_rate < self.audio.n_fft:
            raise ValueError(f"audio_seconds: {self.audio_seconds} s is shorter than one {self.window_ms} ms window")

    @property
    def clip_seconds(self) -> float:
        return self.clip_frames / self.fps

    @property
    def audio_window_s(self) -> float:
        """Seconds of audio per clip (``audio_seconds``, else the clip's span)."""
        return self.clip_seconds if self.audio_seconds is None else self.audio_seconds

    @property
    def audio(self) -> AudioConfig:
        return AudioConfig(self.sample_rate, self.n_mels, self.window_ms, self.hop_ms)

    def tensor_specs(self) -> dict[str, TensorSpec]:
        """Shapes of the tensor columns readers get (the ``jpeg`` encoding's cells decode to these)."""
        t, s = self.clip_frames, self.size
        specs = {"audio": TensorSpec((self.n_mels, self.audio.n_frames(self.audio_window_s)), "float16")}
        if not self.audio_only:
            specs["frames"] = TensorSpec((t, s, s, 3), "uint8")
            if self.flow != "none":
                specs["flow"] = TensorSpec((t - self.flow_step, s, s, 2), "float16")
        return specs


@dataclass(frozen=True)
class Outcome:
    """What happened to one input; the manifest lists these."""

    video_id: str
    path: str
    status: str  # "ok" (it has clips) | "skipped"
    reason: str = ""
    clips: int = 0
    has_audio: bool = False
    gaps: int = 0  # timestamp gaps over MAX_GAP_S that cut the video
    size: int | None = None  # the file as it was read (a skipped input is retried once it changes)
    mtime_ns: int | None = None
    shard: str | None = None  # the shard holding its clips, relative to the output (all of a video's clips are in one)


def source_label(src: str) -> str:
    """``src`` without credentials, as recorded and compared: a real local path or ``s3://bucket/key``."""
    fs, path = resolve(src)
    return os.path.realpath(path) if isinstance(fs, pafs.LocalFileSystem) else f"{fs.type_name}://{path}"


# the media files of a source, as listed: one row per file, sorted by video_id then path
INPUTS = pa.schema([("path", pa.string()), ("video_id", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64())])
LIST_THREADS = 16  # folders of an object-storage source listed at once


def list_inputs(src: str, audio_only: bool) -> tuple[pa.Table, list[Outcome]]:
    """Every media file under ``src`` (:data:`INPUTS`: its path, video_id = relative path without
    extension, '/'-separated, and its size and mtime as listed), sorted by video_id then path,
    and the files left out while listing (links). The files are held as Arrow columns: no
    Python object per file outlives the listing of its folder.

    Local sources: each real file once (a link to a listed file is recorded as such; directory
    links into the source are not followed, links out of it once each, so loops end), dangling
    links recorded. Object storage: the top level, then each folder in it recursively,
    ``LIST_THREADS`` at once. Raises ValueError when there is no media at all."""
    fs, root = resolve(src)
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"source not found: {redact(src)}")
    exts = VIDEO_EXTENSIONS + (AUDIO_EXTENSIONS if audio_only else ())
    if isinstance(fs, pafs.LocalFileSystem):
        batches, skipped = _local_inputs(root, exts)
    else:
        batches, skipped = _object_inputs(fs, root, exts), []
    inputs = pa.Table.from_batches(batches, INPUTS)
    if not inputs.num_rows and not skipped:
        raise ValueError(f"no media files under {redact(src)} (looked for {', '.join(exts)})")
    return inputs.sort_by([("video_id", "ascending"), ("path", "ascending")]), skipped


def _video_id(root: str, path: str) -> str:
    return os.path.splitext(os.path.relpath(path, root).replace(os.sep, "/"))[0]


def _batch(root: str, paths: list[str], sizes: list[int], mtimes: list[int]) -> pa.RecordBatch:
    """Rows of :data:`INPUTS` for the files ``paths`` under ``root``."""
    return pa.record_batch([pa.array(paths, pa.string()), pa.array([_video_id(root, p) for p in paths], pa.string()),
                            pa.array(sizes, pa.int64()), pa.array(mtimes, pa.int64())], schema=INPUTS)


def _object_inputs(fs: pafs.FileSystem, root: str, exts: tuple[str, ...]) -> list[pa.RecordBatch]:
    """The media files under ``root`` on object storage: its top level, then each folder in it
    recursively (a request per 1000 objects), ``LIST_THREADS`` folders at once."""
    def media(infos: list[pafs.FileInfo]) -> pa.RecordBatch:
        files = [f for f in infos if f.type == pafs.FileType.File and f.path.lower().endswith(exts)]
        return _batch(root, [f.path for f in files], [f.size for f in files], [f.mtime_ns for f in files])

    top = fs.get_file_info(pafs.FileSelector(root))
    folders = [f.path for f in top if f.type == pafs.FileType.Directory]
    with ThreadPoolExecutor(LIST_THREADS) as pool:
        return [media(top), *pool.map(lambda folder: media(fs.get_file_info(pafs.FileSelector(folder, recursive=True))), folders)]


def _local_inputs(root: str, exts: tuple[str, ...]) -> tuple[list[pa.RecordBatch], list[Outcome]]:
    """The media files under ``root`` on a local disk: those reached without a link, then those
    reached through one (in path order) whose file is not listed yet (a link is the one left out)."""
    real_root = os.path.realpath(root)
    batches, links, unnamed = [], [], []
    for linked, entries in _walk(root, real_root):
        paths, sizes, mtimes = [], [], []
        for entry in entries:
            if not entry.name.lower().endswith(exts):
                continue
            if not _utf8(entry.path):
                unnamed.append(_undecodable(root, entry.path))
            elif linked or entry.is_symlink():
                links.append(entry.path)
            else:
                st = entry.stat()
                paths.append(entry.path), sizes.append(st.st_size), mtimes.append(st.st_mtime_ns)
        batches.append(_batch(root, paths, sizes, mtimes))
    listed, skipped = _links(root, real_root, sorted(links), batches)
    return [*batches, listed], unnamed + skipped


def _utf8(path: str) -> bool:
    """Whether ``path`` is valid UTF-8 on disk (Python holds other bytes as surrogates, which
    no Arrow string, Parquet index or JSON manifest can store)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _undecodable(root: str, path: str) -> Outcome:
    """A file whose name is not UTF-8, skipped: named with its bad bytes as ``\\xNN``."""
    shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return Outcome(_video_id(root, shown), shown, "skipped", "file name is not valid UTF-8 (rename it to prepare it)")


def _links(root: str, real_root: str, links: list[str], batches: list[pa.RecordBatch]) -> tuple[pa.RecordBatch, list[Outcome]]:
    """Of the files reached through a link (``links``, in path order), those listed (a file not
    yet listed: not among ``batches``, the files reached without a link, nor an earlier link's)
    and those skipped (dangling, or a link to a file already listed)."""
    reals = {path: os.path.realpath(path) for path in links if os.path.exists(path)}
    unlinked = {os.path.join(root, os.path.relpath(r, real_root)): r for r in reals.values() if _inside(r, real_root)}  # the file's own name
    names = pa.array(list(unlinked), pa.string())
    seen = {unlinked[p]: _video_id(root, p) for b in batches for p in b["path"].filter(pc.is_in(b["path"], value_set=names)).to_pylist()}
    listed, skipped = [], []
    for path in links:
        video_id = _video_id(root, path)
        if path not in reals:
            skipped.append(Outcome(video_id, path, "skipped", f"dangling link (target {os.readlink(path)} not found)"))
        elif reals[path] in seen:
            skipped.append(Outcome(video_id, path, "skipped", f"link to a file already listed ({seen[reals[path]]})"))
        else:
            seen[reals[path]] = video_id
            listed.append(path)
    stats = [os.stat(path) for path in listed]
    return _batch(root, listed, [st.st_size for st in stats], [st.st_mtime_ns for st in stats]), skipped


def _walk(root: str, real_root: str) -> Iterator[tuple[bool, list[os.DirEntry]]]:
    """Per folder under ``root``: whether it is reached through a link, and its non-directory
    entries; directory links into ``real_root`` are not followed (their files are listed by their
    real path), others once per real directory."""
    seen, stack = set(), [root]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        files, subfolders = [], []
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not entry.is_dir():
                files.append(entry)
            elif not (entry.is_symlink() and _inside(os.path.realpath(entry.path), real_root)):
                subfolders.append(entry.path)
        yield real != os.path.normpath(os.path.join(real_root, os.path.relpath(folder, root))), files
        stack += reversed(subfolders)  # visited in name order: the first name of a folder wins


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def thin(n: int, max_clips: int) -> set[int]:
    """Indices of ``max_clips`` evenly spaced items out of ``n`` (all when max_clips is 0)."""
    if not max_clips or n <= max_clips:
        return set(range(n))
    return set(np.linspace(0, n - 1, max_clips).round().astype(int).tolist())


@dataclass
class ClipStats:
    """What :func:`clip_rows` saw of one input (filled in as it streams)."""

    clips: int = 0
    has_audio: bool = False
    gaps: int = 0
    seconds: float = 0.0  # length seen (video: sampled frames / fps), for the reason of a too-short input


Opener = Callable[[], contextlib.AbstractContextManager]  # a fresh handle on the input per call


def clip_rows(video_id: str, opener: Opener, cfg: PrepareConfig, stats: ClipStats) -> Iterator[dict]:
    """One input's clip rows (schema columns, tensors as numpy), streamed: decoding holds one
    clip's frames and audio. Video and audio are read through two handles on the input, each
    at its own pace, aligned by their timestamps."""
    clip_s, audio_s = cfg.clip_seconds, cfg.audio_window_s
    jpeg = cfg.encoding == "jpeg"
    with contextlib.ExitStack() as stack:
        audio_c = stack.enter_context(open_media(stack.enter_context(opener())))
        check_streams(audio_c, want_video=not cfg.audio_only)
        stats.has_audio = bool(audio_c.streams.audio)
        track = AudioTrack(audio_chunks(audio_c, cfg.sample_rate), cfg.sample_rate) if stats.has_audio else None
        if cfg.audio_only:
            clips = _audio_windows(track, cfg, stats)
        else:
            video_c = stack.enter_context(open_media(stack.enter_context(opener())))
            clips = _video_windows(video_samples(video_c, cfg.fps, cfg.size, width=cfg.width, square=not jpeg), cfg, stats)
        keep = thin(_count_clips(opener, cfg), cfg.max_clips_per_video) if cfg.max_clips_per_video else None
        t0 = None
        for i, (t, epoch, frames) in enumerate(clips):
            t0 = t if t0 is None else t0
            if keep is not None and i not in keep:
                continue
            row = {"video_id": video_id, "clip_index": stats.clips, "start_s": t - t0, "motion": 0.0}
            if track is not None:  # centred on the clip; silence where the window overhangs the audio
                row["audio"] = log_mel(track.read(t + (clip_s - audio_s) / 2, audio_s, epoch), cfg.audio, audio_s).astype(np.float16)
            if frames is not None:
                row["frames"] = codec.encode_frames(frames, cfg.jpeg_quality) if jpeg else frames  # [T,H,W,3]
                if cfg.flow != "none":
                    flow = compute_flow(frames, cfg.flow, cfg.flow_step)  # [T-step,H,W,2]
                    row["flow"] = codec.encode_flow(flow, cfg.flow_range) if jpeg else flow.astype(np.float16)
                    row["motion"] = motion_magnitude(flow) / cfg.flow_step  # pixels per frame
            stats.clips += 1
            yield row
    if not stats.clips:
        if stats.gaps:
            raise DecodeError(f"no {clip_s:.2f} s without a timestamp gap ({stats.gaps} gaps over {MAX_GAP_S} s)")
        if not cfg.audio_only and not stats.seconds:
            raise DecodeError("video stream has no decodable frames")
        raise DecodeError(f"shorter than one clip ({stats.seconds:.2f} s < {clip_s:.2f} s)")


def _count_clips(opener: Opener, cfg: PrepareConfig) -> int:
    """How many clips an input has, from its timestamps: the video's packets (not decoded), or
    in audio-only sets the decoded audio."""
    with opener() as f, open_media(f) as c:
        if cfg.audio_only:
            return sum(1 for _ in _audio_windows(AudioTrack(audio_chunks(c, cfg.sample_rate), cfg.sample_rate), cfg, ClipStats()))
        return sum(1 for _ in _video_windows(resample(((t, None) for t in video_times(c)), cfg.fps), cfg, ClipStats()))


def _stride(cfg: PrepareConfig) -> int:
    return max(1, int(round((cfg.clip_stride_s or cfg.clip_seconds) * cfg.fps)))


def _video_windows(samples, cfg: PrepareConfig, stats: ClipStats) -> Iterator[tuple[float, int, np.ndarray | None]]:
    """(start time, epoch, frames [T,H,W,3]) of every clip of a stream of samples (frames None
    when the samples carry none: planning from timestamps); the epoch counts the jumps back in
    time before the clip (:class:`AudioTrack` finds its audio by it)."""
    epoch = 0

    def counted():
        nonlocal epoch
        for s in samples:
            if isinstance(s, Gap):
                stats.gaps += 1
                epoch += s.new_epoch
            else:
                stats.seconds += 1.0 / cfg.fps
            yield s

    for run in windows(counted(), cfg.clip_frames, _stride(cfg)):
        yield run[0][0], epoch, (None if run[0][1] is None else np.stack([img for _, img in run]))


def _audio_windows(track: AudioTrack, cfg: PrepareConfig, stats: ClipStats) -> Iterator[tuple[float, int, None]]:
    """(clip start time, epoch, None) of every window of ``audio_window_s`` of the audio (the clip
    is centred in it); after a long gap or a jump back the windows restart where the audio does."""
    t, epoch, clip_s = track.first_time(), 0, cfg.audio_window_s
    stride_s = _stride(cfg) / cfg.fps
    shift = (clip_s - cfg.clip_seconds) / 2  # the clip a window is centred on starts this much later
    while t is not None:
        track.read(t, clip_s, epoch)
        if track.start > t + 1e-6:  # a new stretch after a gap
            stats.gaps += 1
            t = track.start
        elif track.end + 1e-6 >= t + clip_s:
            yield t + shift, epoch, None
            t += stride_s
        elif track.pending is not None:  # the stretch ends inside this window: go to the next
            stats.gaps += 1
            epoch, t = track.pending[0], track.pending[1]
        else:  # the audio ends inside this window
            stats.seconds = track.end - t
            return


class ShardWriter:
    """Clip rows → Parquet files of whole videos, in row groups of about ``ROW_GROUP_BYTES`` of
    cells: only one row group is ever held in memory. A file is closed at the first video
    boundary after its cells reach ``max_bytes`` (a video is never split, so a video longer than
    ``max_bytes`` makes a larger file); the next video starts a new one. ``path`` names the first
    file; the k-th is ``<path without .parquet>-<k>.parquet``; ``paths[-1]`` holds the video
    written last."""

    def __init__(self, fs: pafs.FileSystem, path: str, specs: dict[str, TensorSpec], encoding: str = "raw", max_bytes: float = math.inf):
        self.fs, self.path, self.specs, self.encoding, self.max_bytes = fs, path, specs, encoding, max_bytes
        self.pending: list[dict] = []
        self.pending_bytes = self.file_bytes = 0
        self.rows = 0
        self.paths: list[str] = []  # files written, in order
        self.writer: pq.ParquetWriter | None = None
        self.video: str | None = None  # the video of the open file's last row (None: no file open)

    def write(self, row: dict) -> None:
        if self.video is not None and row["video_id"] != self.video and self.file_bytes + self.pending_bytes >= self.max_bytes:
            self._close_file()
        if self.video is None:  # the file is named with its first row
            stem = self.path[: -len(".parquet")]
            self.paths.append(self.path if not self.paths else f"{stem}-{len(self.paths)}.parquet")
        self.video = row["video_id"]
        self.pending.append(row)
        self.pending_bytes += row_bytes(row)
        if self.pending_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.paths[-1], arrow_schema(self.specs, self.encoding), filesystem=self.fs)
        self.writer.write_table(rows_to_table(self.pending, self.specs, self.encoding))
        self.rows += len(self.pending)
        self.file_bytes += self.pending_bytes
        self.pending, self.pending_bytes = [], 0

    def _close_file(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
        self.writer, self.file_bytes, self.video = None, 0, None

    def close(self) -> int:
        """Rows written (0: no file)."""
        self._close_file()
        return self.rows


def row_bytes(row: dict) -> int:
    """Bytes of a clip row's tensor cells (numpy arrays or lists of encoded images)."""
    n = 0
    for name in TENSOR_COLUMNS:
        v = row.get(name)
        n += 0 if v is None else v.nbytes if isinstance(v, np.ndarray) else sum(map(len, v))
    return n


def process_file(path: str, video_id: str, fs: pafs.FileSystem, cfg: PrepareConfig, writer: ShardWriter) -> Outcome:
    """Stream one input's clips into ``writer``; its outcome. A bad input never raises (an
    input that breaks after some clips keeps them, with the reason); a write error does."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return Outcome(video_id, path, "skipped", "vanished during prepare (file not found)")
    seen = {"size": info.size, "mtime_ns": info.mtime_ns}
    if not info.size:
        return Outcome(video_id, path, "skipped", "empty file (0 bytes)", **seen)
    opener = input_opener(fs, info)
    stats = ClipStats()
    rows, error = clip_rows(video_id, opener, cfg, stats), ""
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except DecodeError as e:
            error = str(e)
            break
        except FileNotFoundError:
            error = "vanished during prepare (file not found)"
            break
        except Exception as e:  # noqa: BLE001 - one bad input must never stop the pipeline
            error = f"unexpected error ({type(e).__name__}: {e})"
            break
        writer.write(row)
    if not stats.clips:
        return Outcome(video_id, path, "skipped", error, gaps=stats.gaps, **seen)
    reason = f"stopped after {stats.clips} clips: {error}" if error else ""
    if not reason and not stats.has_audio and not cfg.audio_only:
        reason = "no audio stream (audio column is null)"
    return Outcome(video_id, path, "ok", reason, stats.clips, stats.has_audio, stats.gaps, **seen)


def input_opener(fs: pafs.FileSystem, info: pafs.FileInfo) -> Opener:
    """Handles on the input ``info`` for PyAV. Local files by path. On object storage PyAV's
    32 kB reads would each be a GET (~190 for a 3 MB video, per handle): an object of at most
    ``WHOLE_OBJECT_BYTES`` is read once, with one GET, and every handle reads that copy; a larger
    one is opened per handle and read ``decode.BUFFER_BYTES`` per GET."""
    if isinstance(fs, pafs.LocalFileSystem):
        return lambda: contextlib.nullcontext(info.path)
    if info.size > WHOLE_OBJECT_BYTES:
        return lambda: fs.open_input_file(info.path)

    @functools.cache
    def whole() -> bytes:
        with fs.open_input_file(info.path) as f:
            return f.read()

    return lambda: io.BytesIO(whole())


def rows_to_table(rows: list[dict], specs: dict[str, TensorSpec], encoding: str = "raw") -> pa.Table:
    schema = arrow_schema(specs, encoding)
    cols = {}
    for field in schema:
        if field.name in specs and pa.types.is_list(field.type):  # encoded images
            cols[field.name] = [r.get(field.name) for r in rows]
        elif field.name in specs:
            cols[field.name] = [tensor_bytes(r.get(field.name), specs[field.name]) for r in rows]
        else:
            cols[field.name] = [r[field.name] for r in rows]
    return pa.table(cols, schema=schema)


class LockLost(FileExistsError):
    """Another run took the output's lock while this one's tasks were running."""


def prepare_shard(batch: dict[str, np.ndarray], *, src: str, out: str, cfg_dict: dict, lock_token: str) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` function: one batch of inputs → one committed Parquet shard + record.
    Commits only while the run that started it holds the output's lock (a task outliving a
    killed run must not commit beside the run that took over). Idempotent: the record's name
    is the run's and the batch's, so a retry of a task that had committed (its worker died
    before Ray heard back) finds that commit and returns it instead of storing the clips twice."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    cfg = PrepareConfig(**cfg_dict)
    src_fs, _ = resolve(src)
    out_fs, out_root = resolve(out)
    name = "part-" + hashlib.sha256("\0".join([lock_token, *map(str, batch["video_id"])]).encode()).hexdigest()[:32]
    record_path = f"{out_root}/{PROGRESS_DIR}/{name}.json"
    if exists(out_fs, record_path):  # this task ran before: committed, or interrupted mid-commit
        record = read_json(out_fs, record_path)
        if _complete(out_fs, out_root, record):
            return _task_result(record["outcomes"])
        _drop(out_fs, out_root, record_path, record)
    writer = ShardWriter(out_fs, f"{out_root}/{TMP_DIR}/{name}.parquet", cfg.tensor_specs(), cfg.encoding, cfg.shard_mb * 1024**2)
    outcomes = []
    for p, v in sorted(zip(batch["path"], batch["video_id"]), key=lambda pv: hash_order(str(pv[1]))):  # the task's shards: contiguous hash ranges
        o = process_file(str(p), str(v), src_fs, cfg, writer)
        outcomes.append(dataclasses.asdict(dataclasses.replace(o, shard=shard_name(writer.paths[-1]) if o.clips else None)))
    writer.close()
    shards = [shard_name(path) for path in writer.paths]
    if _lock_token(out_fs, out_root) != lock_token:
        raise LockLost(f"{redact(out)}: another prepare took over this output's lock while this one ran (its lock looked stale: "
                       f"paused or cut off for over {STALE_S:.0f} s?); this run stopped without committing. Rerun to finish")
    commit_task(out_fs, out_root, name, outcomes, shards)
    return _task_result(outcomes)


def commit_task(out_fs: pafs.FileSystem, out_root: str, name: str, outcomes: list[dict], shards: list[str]) -> None:
    """Commit a task's work: its record ``_progress/<name>.json`` (its inputs' outcomes, each
    naming its shard, and ``shards``, relative to the output), then each shard moved from
    ``_progress/tmp/`` into ``data/``. The record names the shards before they arrive: the last
    move commits both (:func:`committed` deletes the rest of an interrupted commit)."""
    write_json(out_fs, f"{out_root}/{PROGRESS_DIR}/{name}.json", {"shards": shards, "outcomes": outcomes, "written": time.time()})
    for shard in shards:
        out_fs.move(f"{out_root}/{TMP_DIR}/{shard.rsplit('/', 1)[1]}", f"{out_root}/{shard}")


def shard_name(tmp_path: str) -> str:
    """The committed name (relative to the output) of the shard written at ``tmp_path``."""
    return f"{DATA_DIR}/{tmp_path.rsplit('/', 1)[1]}"


def _task_result(outcomes: list[dict]) -> dict[str, np.ndarray]:
    return {key: np.array([o[key] for o in outcomes]) for key in ("video_id", "status", "clips")}


# an input's outcome as committed: Outcome's fields and its record's time ("written")
OUTCOMES = pa.schema([("video_id", pa.string()), ("path", pa.string()), ("status", pa.string()), ("reason", pa.string()),
                      ("clips", pa.int32()), ("has_audio", pa.bool_()), ("gaps", pa.int32()), ("size", pa.int64()),
                      ("mtime_ns", pa.int64()), ("shard", pa.string()), ("written", pa.float64())])
READ_THREADS = 32  # records read at once (on object storage each is a GET)


@dataclass(frozen=True)
class Commits:
    """What the committed records of an output hold: the latest outcome of each input (Arrow,
    :data:`OUTCOMES`, sorted by video_id) and the committed shards (relative path → bytes)."""

    outcomes: pa.Table
    shards: dict[str, int]


def committed(out_fs: pafs.FileSystem, out_root: str) -> Commits:
    """The committed records under ``out_root``; deletes the records of interrupted commits (a
    shard never arrived) and every temporary shard. One listing each of ``_progress/`` and
    ``data/`` (their sizes included), the records read in a thread pool and kept as Arrow
    columns. Only under the lock."""
    records = [f for f in _files(out_fs, f"{out_root}/{PROGRESS_DIR}") if f.base_name.startswith("part-") and f.base_name.endswith(".json")]
    arrived = {f"{DATA_DIR}/{f.base_name}": f.size for f in _files(out_fs, f"{out_root}/{DATA_DIR}")}
    with ThreadPoolExecutor(READ_THREADS) as pool:
        read = list(pool.map(lambda f: _read_record(out_fs, f), records))
    tables, shards = [], {}
    for f, (names, table) in zip(records, read):
        if all(s in arrived for s in names):
            tables.append(table)
            shards.update((s, arrived[s]) for s in names)
        else:
            _drop(out_fs, out_root, f.path, {"shards": [s for s in names if s in arrived]})
    for f in _files(out_fs, f"{out_root}/{TMP_DIR}"):
        if f.base_name.startswith("part-") and f.base_name.endswith(".parquet"):
            out_fs.delete_file(f.path)
    del read  # the records' outcomes are now held by ``tables`` alone
    return Commits(_latest(tables), shards)


def _files(fs: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    """The files directly in ``folder`` (none if it does not exist), with their sizes: one listing."""
    return [f for f in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)) if f.type == pafs.FileType.File]


def _read_record(fs: pafs.FileSystem, info: pafs.FileInfo) -> tuple[list[str], pa.Table]:
    """A record's shards and its outcomes (:func:`outcome_table`)."""
    record = read_json(fs, info.path)
    if isinstance(record, list):  # written before records named their shard
        record = {"shards": [f"{DATA_DIR}/{info.base_name[:-5]}.parquet"] if any(o["clips"] for o in record) else [], "outcomes": record}
    return record["shards"], outcome_table(record["outcomes"], record["shards"], record.get("written", 0.0))


def outcome_table(outcomes: list[dict], shards: list[str] = (), written: float = 0.0) -> pa.Table:
    """Outcomes (dicts of :class:`Outcome`'s fields) as Arrow (:data:`OUTCOMES`); those of records
    written before outcomes named their shard get the record's shard when it has one."""
    only = shards[0] if len(shards) == 1 else None
    rows = [{**o, "gaps": o.get("gaps", 0), "shard": o.get("shard", only if o["clips"] else None), "written": written} for o in outcomes]
    return pa.Table.from_pylist(rows, schema=OUTCOMES)


def _latest(tables: list[pa.Table]) -> pa.Table:
    """The latest outcome of each video_id (a retried input has several) in the outcomes
    ``tables`` (emptied), sorted by video_id. Taken a column at a time, each freed once taken:
    the outcomes are held once, and one column twice."""
    outcomes = pa.concat_tables(tables) if tables else OUTCOMES.empty_table()
    tables.clear()
    order = pc.sort_indices(outcomes, [("video_id", "ascending"), ("written", "ascending")])  # a stable sort
    if len(order):
        order = order.filter(pa.concat_arrays([_firsts(outcomes["video_id"].take(order))[1:], pa.array([True])]))
    schema, columns = outcomes.schema, outcomes.columns
    del outcomes
    for i in range(len(columns)):
        columns[i] = columns[i].take(order)
    return pa.Table.from_arrays(columns, schema=schema)


def _firsts(ids: pa.ChunkedArray) -> pa.Array:
    """Per value of ``ids`` (sorted), whether it is the first of its run of equal values."""
    if not len(ids):
        return pa.array([], pa.bool_())
    return pa.concat_arrays([pa.array([True]), pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).combine_chunks()])


def _complete(out_fs: pafs.FileSystem, out_root: str, record: dict) -> bool:
    """Whether every shard the record names arrived (its commit completed)."""
    return all(exists(out_fs, f"{out_root}/{s}") for s in record["shards"])


def _drop(out_fs: pafs.FileSystem, out_root: str, path: str, record: dict) -> None:
    """Delete an interrupted commit: the record at ``path`` and those of its shards that arrived
    (they are prepare's own)."""
    for s in record["shards"]:
        with contextlib.suppress(FileNotFoundError):
            out_fs.delete_file(f"{out_root}/{s}")
    out_fs.delete_file(path)


# reasons that may not hold on a rerun (a network or NFS read error, a file being replaced)
TRANSIENT_REASONS = ("vanished during prepare", "cannot open", "unexpected error")


def OutputLock(fs: pafs.FileSystem, root: str, label: str) -> Lock:  # noqa: N802  (a constructor by name)
    """One ``prepare`` at a time per output: ``_progress/lock.json`` (:class:`raysup.locks.Lock`)."""
    return Lock(fs, f"{root}/{LOCK}", label, command="prepare", elsewhere="output folder")


def _lock_token(fs: pafs.FileSystem, root: str) -> str | None:
    """The token of the run holding the lock of the output at ``root`` (None: no lock)."""
    return (read_holder(fs, f"{root}/{LOCK}") or {}).get("token")


# what an output prepared before these parameters existed was prepared with
PARAMS_BEFORE_ENCODINGS = {"encoding": "raw", "jpeg_quality": 92, "flow_range": codec.FLOW_RANGE_PX, "audio_seconds": None, "flow_step": 1,
                           "jpeg_cells": None}


def _check_output(out_fs: pafs.FileSystem, out_root: str, out: str, source: str, params: dict) -> None:
    """Refuse to add to an output prepared from another source or with other parameters."""
    path = f"{out_root}/{PROGRESS_DIR}/params.json"
    if not exists(out_fs, path):
        return
    old = {**PARAMS_BEFORE_ENCODINGS, **read_json(out_fs, path)}
    if old.get("source", source) != source:
        raise ConfigError(f"source: {redact(out)} was prepared from {old['source']}, not {source}; use a new output folder")
    diff = [k for k in params if k not in ("videos_per_shard", "shard_mb", "cpus_per_task") and old.get(k) != params[k]]
    if diff:
        raise ConfigError(f"{diff[0]}: {redact(out)} was prepared with {diff[0]}={old.get(diff[0])!r}, not {params[diff[0]]!r}; use a new output folder")


def prepare(src: str, out: str, cfg: PrepareConfig = PrepareConfig()) -> dict:
    """Prepare every media file under ``src`` into Parquet clips under ``out``; returns the manifest.

    Rerunning on the same ``out`` resumes: inputs with a committed outcome are not redone.
    Raises ValueError when ``src`` holds no media, ConfigError when ``out`` was prepared from
    another source or with other parameters, FileExistsError while another prepare writes ``out``.
    """
    init_ray()  # no-op where Ray runs: the CLI and sweeps start or join it first
    _check_cpus(cfg.cpus_per_task)
    source = source_label(src)
    inputs, listing_skips = list_inputs(src, cfg.audio_only)
    out_fs, out_root = resolve(out)
    params = to_dict(cfg)
    recorded = {**params, "jpeg_cells": codec.JPEG_CELLS if cfg.encoding == "jpeg" else None}  # cells of one layout per output
    out_fs.create_dir(f"{out_root}/{TMP_DIR}", recursive=True)
    with OutputLock(out_fs, out_root, redact(out)) as lock:
        _check_output(out_fs, out_root, out, source, recorded)
        out_fs.create_dir(f"{out_root}/{DATA_DIR}", recursive=True)
        write_json(out_fs, f"{out_root}/{PROGRESS_DIR}/params.json", {**recorded, "source": source})
        todo, duplicates = plan(inputs, _reused(out_fs, out_root, inputs, redact(out)))
        del inputs  # the plan holds what the tasks need
        if todo.num_rows:
            _run_tasks(todo, src, out, cfg, lock.token)
        del todo
        manifest = write_manifest(out_fs, out_root, source, cfg, pa.concat_tables([outcome_table([dataclasses.asdict(o) for o in listing_skips]), duplicates]))
    return manifest


def plan(inputs: pa.Table, kept: pa.Array | pa.ChunkedArray) -> tuple[pa.Table, pa.Table]:
    """The inputs (:func:`list_inputs`) that this run prepares, as (path, video_id) in the held-out
    hash order, and the duplicates it skips (:data:`OUTCOMES`): of the files with one video_id the
    first path is prepared, the others are duplicates; none of those whose video_id is ``kept``
    (its committed outcome reused). Arrow throughout: no Python object per input.

    The hash order (:func:`raysup.data.tables.hash_order`): each task's shards hold a narrow range
    of the hash that picks validation videos, so a split reads only its own shards; and, the
    order being pseudo-random, a random mix of class folders (batches mix classes even with a
    small local shuffle buffer)."""
    first, fresh = _firsts(inputs["video_id"]), pc.invert(pc.is_in(inputs["video_id"], value_set=kept))
    rows = pc.indices_nonzero(pc.and_(first, fresh))
    ids = inputs["video_id"].take(rows)
    order = pc.sort_indices(pa.table({"key": hash_keys(ids), "id": ids}), sort_keys=[("key", "ascending"), ("id", "ascending")])
    todo = inputs.select(["path", "video_id"]).take(rows.take(order))
    duplicates = inputs.filter(pc.and_(pc.invert(first), fresh))
    return todo, skipped_table(duplicates, "duplicate video_id (another file has the same name)")


def skipped_table(inputs: pa.Table, reason: str) -> pa.Table:
    """``inputs`` (path, video_id) skipped for ``reason`` before any task ran, as outcomes (:data:`OUTCOMES`)."""
    known = {"video_id": inputs["video_id"], "path": inputs["path"]}
    values = {"status": "skipped", "reason": reason, "clips": 0, "has_audio": False, "gaps": 0, "written": 0.0}
    return pa.table([known.get(f.name, pa.repeat(pa.scalar(values.get(f.name), f.type), inputs.num_rows)) for f in OUTCOMES], schema=OUTCOMES)


class TaskInputs(Datasource):
    """The inputs of a prepare dealt to its tasks: a read task per ``per_task`` consecutive rows of
    ``todo`` (path, video_id), reading them as one Arrow block (a zero-copy slice, sent alone
    with its task); no Python object per input, no remote call to plan."""

    def __init__(self, todo: pa.Table, per_task: int):
        super().__init__()
        self.todo, self.per_task = todo, per_task

    def estimate_inmemory_data_size(self) -> int:
        return self.todo.nbytes

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        tasks = []
        for start in range(0, self.todo.num_rows, self.per_task):
            rows = self.todo.slice(start, self.per_task)
            meta = BlockMetadata(num_rows=rows.num_rows, size_bytes=rows.nbytes, input_files=None, exec_stats=None)
            tasks.append(ReadTask(functools.partial(iter, [rows]), meta, per_task_row_limit=per_task_row_limit))
        return tasks


def _run_tasks(todo: pa.Table, src: str, out: str, cfg: PrepareConfig, lock_token: str) -> None:
    """Prepare ``todo`` (path, video_id) in Ray Data tasks of :func:`inputs_per_task` consecutive
    inputs (:class:`TaskInputs`); progress is shown as tasks commit."""
    import ray

    per_task = inputs_per_task(todo.num_rows, cfg)
    # a task's batch is one read task's block, whole: not split (as many blocks as read tasks) nor
    # bundled with another (batch_size None), which could arrive out of order and mix hash ranges
    ds = ray.data.read_datasource(TaskInputs(todo, per_task), override_num_blocks=-(-todo.num_rows // per_task)).map_batches(
        prepare_shard,
        batch_size=None,
        num_cpus=cfg.cpus_per_task,
        fn_kwargs={"src": src, "out": out, "cfg_dict": to_dict(cfg), "lock_token": lock_token},
    )
    ds.context.raise_original_map_exception = True  # the task's own exception, not Ray Data's wrapper of it
    try:
        with _quiet(*RAY_DATA_ERROR_LOGGERS), Progress("prepare", todo.num_rows, "videos") as shown:
            for done in ds.iter_batches(batch_size=None):  # a task's outcomes, as it commits
                shown.update(len(done["video_id"]))
    except Exception as e:  # noqa: BLE001 - re-raised as what the task raised
        raise _task_failure(e, redact(out)) from e


def inputs_per_task(inputs: int, cfg: PrepareConfig) -> int:
    """Inputs per Ray Data task: ``--videos-per-shard`` if given, else enough for each task to
    fill shards of ``--shard-mb`` (at most ``MAX_TASK_INPUTS``) while every CPU of the cluster
    (those its autoscaler may add included) gets about two tasks."""
    if cfg.videos_per_shard:
        return cfg.videos_per_shard
    slots = max(1.0, sum(shape["CPU"] for shape in node_shapes()) / cfg.cpus_per_task)
    return max(1, min(MAX_TASK_INPUTS, math.ceil(inputs / (2 * slots))))


def write_manifest(out_fs: pafs.FileSystem, out_root: str, source: str, cfg: PrepareConfig, extra: pa.Table | None = None) -> dict:
    """Commit a prepare: from the committed records (:func:`committed`) and the inputs left out
    before any task ran (``extra``, :data:`OUTCOMES`), write ``index.parquet`` (one row per input)
    and then ``manifest.json`` (counts, committed shards); returns the manifest."""
    commits = committed(out_fs, out_root)
    outcomes = commits.outcomes if extra is None else pa.concat_tables([commits.outcomes, extra])
    return write_metadata(out_fs, out_root, source, cfg, outcomes, commits.shards)


INDEX_ROWS = 1024**2  # rows per row group of index.parquet (pq.write_table's default)


def write_metadata(fs: pafs.FileSystem, root: str, source: str, cfg: PrepareConfig, outcomes: pa.Table, shards: dict[str, int]) -> dict:
    """Write ``index.parquet`` (``outcomes``, :data:`OUTCOMES` or :data:`INDEX_COLUMNS`, sorted by
    video_id), then ``manifest.json`` naming it and ``shards`` (relative path → bytes); returns
    the manifest."""
    index = outcomes.select(INDEX_COLUMNS)
    order = pc.sort_indices(index, [("video_id", "ascending")])
    with pq.ParquetWriter(f"{root}/{INDEX}.tmp", index.schema, filesystem=fs) as writer:  # a reader never sees half of it
        for start in range(0, max(len(order), 1), INDEX_ROWS):  # sorted a row group at a time: no second copy of the index
            writer.write_table(index.take(order.slice(start, INDEX_ROWS)))
    fs.move(f"{root}/{INDEX}.tmp", f"{root}/{INDEX}")
    manifest = build_manifest(source, cfg, index, sorted(shards))
    manifest["bytes"] = sum(shards.values())
    write_json(fs, f"{root}/{MANIFEST}", manifest)
    return manifest


def _reused(out_fs: pafs.FileSystem, out_root: str, inputs: pa.Table, label: str) -> pa.ChunkedArray:
    """The video_ids whose committed outcome this run keeps (said on stderr): all but those of
    skipped inputs listed again (``inputs``) whose reason may have been transient or whose file
    changed size or modification time since (outcomes recorded before those were kept are
    retried once)."""
    latest = committed(out_fs, out_root).outcomes.select(["video_id", "status", "reason", "size", "mtime_ns"])
    skipped = latest.filter(pc.equal(latest["status"], "skipped"))
    at = pc.index_in(inputs["video_id"], value_set=skipped["video_id"])  # each input's skipped outcome (null: none)
    listed = pc.is_valid(at)
    now, then = inputs.select(["video_id", "size", "mtime_ns"]).filter(listed), skipped.take(at.filter(listed))
    transient = functools.reduce(pc.or_, (pc.starts_with(then["reason"], r) for r in TRANSIENT_REASONS))
    changed = pc.fill_null(pc.or_kleene(pc.not_equal(now["size"], then["size"]), pc.not_equal(now["mtime_ns"], then["mtime_ns"])), True)
    retry = pc.unique(now["video_id"].filter(pc.or_(transient, changed)))
    kept = latest["video_id"].filter(pc.invert(pc.is_in(latest["video_id"], value_set=retry)))
    if len(kept) or len(retry):
        ok = latest.num_rows - skipped.num_rows
        print(f"raysup prepare: {label}: reusing the outcomes of {len(kept)} inputs from earlier runs ({ok} prepared, {len(kept) - ok} skipped: "
              f"retried once their file changes); retrying {len(retry)} skipped inputs (file changed, or the error may have been transient)",
              file=sys.stderr)
    return kept


# where Ray Data logs a failed task's traceback (on the terminal): prepare re-raises the task's
# own exception instead, whose traceback the CLI writes to its log file
RAY_DATA_ERROR_LOGGERS = ("ray.data._internal.execution.streaming_executor_state", "ray.data.exceptions")


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """The loggers ``names`` show only CRITICAL records meanwhile."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _task_failure(e: Exception, label: str) -> Exception:
    """What a prepare task raised, for the user: its own exception (Ray's wrapper names only the
    task and a pid), a full disk as a ConfigError naming the output."""
    cause = getattr(e, "cause", None)
    cause = cause if isinstance(cause, Exception) else e
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return ConfigError(f"out: no space left writing {label} ({cause.strerror or cause}); free some space (or use another output folder) and rerun to resume")
    return cause


def _check_cpus(cpus: float) -> None:
    """Refuse tasks that no node of the cluster (or that its autoscaler may add) can run: Ray
    would wait for them for ever."""
    largest = max((shape["CPU"] for shape in node_shapes()), default=0.0)
    if cpus > largest:
        raise ConfigError(f"cpus_per_task: {cpus:g} CPUs per task is more than any node of the cluster has (the largest has {largest:g}); "
                          "it would wait for ever")


def encoding_record(cfg: PrepareConfig) -> dict:
    """How the cells are stored (manifest ``encoding``; docs/data-format.md). Manifests without
    it (before version 3) are ``{"format": "raw"}`` with the clip's own audio span."""
    rec: dict = {"format": cfg.encoding}
    if cfg.encoding == "jpeg" and not cfg.audio_only:
        rec["frames"] = {"codec": "jpeg", "quality": cfg.jpeg_quality, "short_side": cfg.size, "layout": "one JPEG per frame: [H, W, 3] RGB",
                         "crop": [cfg.size, cfg.size]}
        if cfg.flow != "none":
            rec["flow"] = {"codec": "jpeg", "quality": codec.FLOW_QUALITY, "quantisation": "log", "range_px": cfg.flow_range,
                           "knee_px": codec.FLOW_KNEE_PX, "layout": "one JPEG per field: [2H, W] uint8, dx above dy"}
    a = cfg.audio
    rec["audio"] = {"dtype": "float16", "seconds": cfg.audio_window_s, "centred_on_clip": True, "hop_ms": a.hop_ms,
                    "window_ms": a.window_ms, "sample_rate": a.sample_rate, "n_mels": a.n_mels, "edges": "zero padding"}
    return rec


def skip_reasons(reasons: pa.ChunkedArray) -> dict[str, int]:
    """How many inputs were skipped for each reason (its text before any " ("), in the order first met."""
    counts = pc.value_counts(pc.list_element(pc.split_pattern(reasons, " (", max_splits=1), 0))
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


def build_manifest(src: str, cfg: PrepareConfig, index: pa.Table, shards: list[str]) -> dict:
    """The manifest (docs/data-format.md): parameters, counts and the committed Parquet files
    (``shards``, relative to the output, the only ones readers read) with the range of hash
    buckets of each one's videos (``shard_ranges``: a held-out split reads only the shards that
    meet it) and the videos and clips per bucket (``hash_counts``: any split's counts); what
    happened to each input is in ``index`` (:data:`INDEX_COLUMNS`, in any order), written beside
    it as ``index.parquet``, so the manifest's size does not grow with the number of videos."""
    counted = index.select(["video_id", "status", "reason", "clips", "has_audio"])  # filtered copies of these columns only
    ok = counted.filter(pc.equal(index["status"], "ok"))
    skipped = counted.filter(pc.equal(index["status"], "skipped"))
    return {
        "version": 5,
        "source": redact(src),
        "params": to_dict(cfg),
        "columns": {k: v.to_dict() for k, v in cfg.tensor_specs().items()},
        "encoding": encoding_record(cfg),
        "counts": {
            "inputs": index.num_rows,
            "videos": ok.num_rows,
            "clips": int(pc.sum(ok["clips"]).as_py() or 0),
            "skipped": skipped.num_rows,
            "no_audio": int(pc.sum(pc.invert(ok["has_audio"])).as_py() or 0),
            "timestamp_gaps": int(pc.sum(pc.greater(index["gaps"], 0)).as_py() or 0),
            "stopped_early": int(pc.sum(pc.starts_with(ok["reason"], "stopped after")).as_py() or 0),
        },
        "skip_reasons": skip_reasons(skipped.sort_by("video_id")["reason"]),
        "max_gap_s": MAX_GAP_S,
        "index": INDEX,
        "shards": shards,
        "shard_ranges": shard_ranges(index, shards),
        "hash_counts": hash_counts(index),
    }
