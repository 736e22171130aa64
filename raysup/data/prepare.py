"""``raysup prepare``: a Ray Data pipeline from a folder (or URI) of videos to Parquet clips.

Each Ray Data task takes a batch of input files, decodes them (PyAV), cuts clips,
computes log-mel audio (torchaudio) and optical flow (OpenCV), and writes one
Parquet shard plus a JSON record of every input's outcome under ``_progress/``.
The record is the commit marker: a rerun skips every input it lists (resume),
deletes shards without one (an interrupted write), and ``manifest.json`` is
rebuilt from all records at the end.
"""
from __future__ import annotations

import dataclasses
import os
import random
import uuid
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysup.config import ConfigError, to_dict
from raysup.data.audio import AudioConfig, log_mel
from raysup.data.decode import DecodeError, decode
from raysup.data.flow import FlowMethod, compute_flow, motion_magnitude
from raysup.data.schema import TensorSpec, arrow_schema, tensor_bytes
from raysup.data.storage import exists, read_json, resolve, write_json

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv", ".flv", ".wmv", ".3gp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus")
MANIFEST = "manifest.json"
DATA_DIR = "data"
PROGRESS_DIR = "_progress"


@dataclass(frozen=True)
class PrepareConfig:
    clip_frames: int = 8  # T frames per clip
    fps: float = 8.0  # frames are resampled to this rate
    size: int = 32  # short side resized to this, then centre crop size×size
    clip_stride_s: float = 0.0  # 0: non-overlapping clips
    max_clips_per_video: int = 0  # 0: every clip; else evenly spaced clips
    flow: FlowMethod = "farneback"
    audio_only: bool = False  # audio sets (ESC-50): no frames, files without video are fine
    sample_rate: int = 24000
    n_mels: int = 40
    window_ms: float = 20.0
    hop_ms: float = 10.0
    videos_per_shard: int = 8
    cpus_per_task: float = 1.0

    def validate(self) -> None:
        for name in ("clip_frames", "size", "sample_rate", "n_mels", "videos_per_shard"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.clip_frames < 2 and self.flow != "none":
            raise ValueError("clip_frames: flow needs at least 2 frames per clip")
        for name in ("fps", "window_ms", "hop_ms", "cpus_per_task"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.clip_stride_s < 0 or self.max_clips_per_video < 0:
            raise ValueError("clip_stride_s/max_clips_per_video: must be >= 0")

    @property
    def clip_seconds(self) -> float:
        return self.clip_frames / self.fps

    @property
    def audio(self) -> AudioConfig:
        return AudioConfig(self.sample_rate, self.n_mels, self.window_ms, self.hop_ms)

    def tensor_specs(self) -> dict[str, TensorSpec]:
        """Shapes of the tensor columns these parameters produce."""
        t, s = self.clip_frames, self.size
        specs = {"audio": TensorSpec((self.n_mels, self.audio.n_frames(self.clip_seconds)), "float16")}
        if not self.audio_only:
            specs["frames"] = TensorSpec((t, s, s, 3), "uint8")
            if self.flow != "none":
                specs["flow"] = TensorSpec((t - 1, s, s, 2), "float16")
        return specs


@dataclass(frozen=True)
class Outcome:
    """What happened to one input; the manifest lists these."""

    video_id: str
    path: str
    status: str  # "ok" | "skipped"
    reason: str = ""
    clips: int = 0
    has_audio: bool = False


def list_inputs(src: str, audio_only: bool) -> list[tuple[str, str]]:
    """(path, video_id) for every media file under ``src``, sorted; video_id = relative path
    without extension, '/'-separated."""
    fs, root = resolve(src)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"source not found: {src}")
    exts = VIDEO_EXTENSIONS + (AUDIO_EXTENSIONS if audio_only else ())
    out = []
    for f in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if f.type != pafs.FileType.File or not f.path.lower().endswith(exts):
            continue
        rel = os.path.relpath(f.path, root).replace(os.sep, "/")
        out.append((f.path, os.path.splitext(rel)[0]))
    return sorted(out)


def clip_starts(n: int, length: int, stride: int, max_clips: int) -> list[int]:
    """Start indices of clips of ``length`` in a sequence of ``n`` (evenly thinned to max_clips)."""
    starts = list(range(0, n - length + 1, stride))
    if max_clips and len(starts) > max_clips:
        keep = np.linspace(0, len(starts) - 1, max_clips).round().astype(int)
        starts = [starts[i] for i in keep]
    return starts


def video_clips(video_id: str, source, cfg: PrepareConfig) -> tuple[list[dict], bool]:
    """Decode one input and cut it into clip rows (schema columns, tensors as numpy)."""
    # one decoder thread: prepare runs one task per CPU (cv2 and torch are single-threaded too)
    dec = decode(source, fps=cfg.fps, size=cfg.size, sample_rate=cfg.sample_rate, want_video=not cfg.audio_only, threaded=False)
    clip_s, audio_cfg = cfg.clip_seconds, cfg.audio
    stride_s = cfg.clip_stride_s or clip_s
    if cfg.audio_only:  # windows over the waveform
        n_windows = int(np.floor(dec.duration_s * cfg.fps + 1e-6))
        length, stride = cfg.clip_frames, max(1, int(round(stride_s * cfg.fps)))
    else:
        n_windows, length, stride = len(dec.frames), cfg.clip_frames, max(1, int(round(stride_s * cfg.fps)))
    starts = clip_starts(n_windows, length, stride, cfg.max_clips_per_video)
    if not starts:
        raise DecodeError(f"shorter than one clip ({dec.duration_s:.2f} s < {clip_s:.2f} s)")
    rows = []
    for i, s in enumerate(starts):
        start_s = s / cfg.fps
        row = {"video_id": video_id, "clip_index": i, "start_s": start_s, "motion": 0.0}
        if dec.audio is not None:
            a0 = int(round(start_s * cfg.sample_rate))
            row["audio"] = log_mel(dec.audio[a0:], audio_cfg, clip_s).astype(np.float16)
        if dec.frames is not None:
            frames = dec.frames[s : s + length]  # [T,H,W,3]
            row["frames"] = frames
            if cfg.flow != "none":
                flow = compute_flow(frames, cfg.flow)  # [T-1,H,W,2]
                row["flow"] = flow.astype(np.float16)
                row["motion"] = motion_magnitude(flow)
        rows.append(row)
    return rows, dec.audio is not None


def process_file(path: str, video_id: str, fs: pafs.FileSystem, cfg: PrepareConfig) -> tuple[list[dict], Outcome]:
    """Clip rows and the outcome for one input; never raises for a bad input."""
    try:
        size = fs.get_file_info(path).size
        if not size:
            raise DecodeError("empty file (0 bytes)")
        if isinstance(fs, pafs.LocalFileSystem):
            rows, has_audio = video_clips(video_id, path, cfg)
        else:
            with fs.open_input_file(path) as f:
                rows, has_audio = video_clips(video_id, f, cfg)
    except DecodeError as e:
        return [], Outcome(video_id, path, "skipped", str(e))
    except Exception as e:  # noqa: BLE001 - one bad input must never stop the pipeline
        return [], Outcome(video_id, path, "skipped", f"unexpected error ({type(e).__name__}: {e})")
    reason = "" if has_audio or cfg.audio_only else "no audio stream (audio column is null)"
    return rows, Outcome(video_id, path, "ok", reason, len(rows), has_audio)


def rows_to_table(rows: list[dict], specs: dict[str, TensorSpec]) -> pa.Table:
    schema = arrow_schema(specs)
    cols = {}
    for field in schema:
        if field.name in specs:
            cols[field.name] = [tensor_bytes(r.get(field.name), specs[field.name]) for r in rows]
        else:
            cols[field.name] = [r[field.name] for r in rows]
    return pa.table(cols, schema=schema)


def prepare_shard(batch: dict[str, np.ndarray], *, src: str, out: str, cfg_dict: dict) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` function: one batch of inputs → one Parquet shard + record."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    cfg = PrepareConfig(**cfg_dict)
    src_fs, _ = resolve(src)
    out_fs, out_root = resolve(out)
    rows, outcomes = [], []
    for path, video_id in zip(batch["path"], batch["video_id"]):
        r, o = process_file(str(path), str(video_id), src_fs, cfg)
        rows += r
        outcomes.append(o)
    name = f"part-{uuid.uuid4().hex}"
    if rows:
        pq.write_table(rows_to_table(rows, cfg.tensor_specs()), f"{out_root}/{DATA_DIR}/{name}.parquet", filesystem=out_fs)
    write_json(out_fs, f"{out_root}/{PROGRESS_DIR}/{name}.json", [dataclasses.asdict(o) for o in outcomes])
    return {
        "video_id": np.array([o.video_id for o in outcomes]),
        "status": np.array([o.status for o in outcomes]),
        "clips": np.array([o.clips for o in outcomes]),
    }


def _finished(out_fs: pafs.FileSystem, out_root: str) -> list[dict]:
    """Outcomes recorded by earlier (possibly interrupted) runs; removes uncommitted shards."""
    progress = f"{out_root}/{PROGRESS_DIR}"
    if not exists(out_fs, progress):
        return []
    records = {}
    for f in out_fs.get_file_info(pafs.FileSelector(progress)):
        if f.path.endswith(".json") and not f.base_name.startswith("params"):
            records[os.path.splitext(f.base_name)[0]] = read_json(out_fs, f.path)
    data_dir = f"{out_root}/{DATA_DIR}"
    if exists(out_fs, data_dir):
        for f in out_fs.get_file_info(pafs.FileSelector(data_dir)):
            if os.path.splitext(f.base_name)[0] not in records:
                out_fs.delete_file(f.path)  # written by a task that died before its record
    return [o for rec in records.values() for o in rec]


def prepare(src: str, out: str, cfg: PrepareConfig = PrepareConfig()) -> dict:
    """Prepare every media file under ``src`` into Parquet clips under ``out``; returns the manifest.

    Rerunning on the same ``out`` resumes: inputs with a recorded outcome are not redone.
    """
    import ray

    out_fs, out_root = resolve(out)
    params = to_dict(cfg)
    params_path = f"{out_root}/{PROGRESS_DIR}/params.json"
    if exists(out_fs, params_path):
        old = read_json(out_fs, params_path)
        diff = [k for k in params if k not in ("videos_per_shard", "cpus_per_task") and old.get(k) != params[k]]
        if diff:
            raise ConfigError(f"{diff[0]}: {out} was prepared with {diff[0]}={old.get(diff[0])!r}, not {params[diff[0]]!r}; use a new output folder")
    out_fs.create_dir(f"{out_root}/{DATA_DIR}", recursive=True)
    out_fs.create_dir(f"{out_root}/{PROGRESS_DIR}", recursive=True)
    write_json(out_fs, params_path, params)

    done = _finished(out_fs, out_root)
    done_ids = {o["video_id"] for o in done}
    todo, duplicates, seen = [], [], set(done_ids)
    for path, video_id in list_inputs(src, cfg.audio_only):
        if video_id in seen:
            if video_id not in done_ids:
                duplicates.append(dataclasses.asdict(Outcome(video_id, path, "skipped", "duplicate video_id (another file has the same name)")))
            continue
        seen.add(video_id)
        todo.append({"path": path, "video_id": video_id})
    # Inputs are listed sorted (class folders together); shards of a random mix of videos give
    # training batches that mix classes even with a small local shuffle buffer.
    random.Random(len(todo)).shuffle(todo)
    if todo:
        n_blocks = -(-len(todo) // cfg.videos_per_shard)
        ds = ray.data.from_items(todo, override_num_blocks=n_blocks).map_batches(
            prepare_shard,
            batch_size=cfg.videos_per_shard,
            num_cpus=cfg.cpus_per_task,
            fn_kwargs={"src": src, "out": out, "cfg_dict": params},
        )
        ds.materialize()
    outcomes = sorted(_finished(out_fs, out_root) + duplicates, key=lambda o: o["video_id"])
    manifest = build_manifest(src, cfg, outcomes)
    write_json(out_fs, f"{out_root}/{MANIFEST}", manifest)
    return manifest


def build_manifest(src: str, cfg: PrepareConfig, outcomes: list[dict]) -> dict:
    ok = [o for o in outcomes if o["status"] == "ok"]
    skipped = [o for o in outcomes if o["status"] == "skipped"]
    return {
        "version": 1,
        "source": src,
        "params": to_dict(cfg),
        "columns": {k: v.to_dict() for k, v in cfg.tensor_specs().items()},
        "counts": {
            "inputs": len(outcomes),
            "videos": len(ok),
            "clips": sum(o["clips"] for o in ok),
            "skipped": len(skipped),
            "no_audio": sum(1 for o in ok if not o["has_audio"]),
        },
        "skip_reasons": dict(Counter(o["reason"].split(" (")[0] for o in skipped)),
        "skipped": [{"video_id": o["video_id"], "path": o["path"], "reason": o["reason"]} for o in skipped],
        "no_audio": [o["video_id"] for o in ok if not o["has_audio"]],
        "videos": {o["video_id"]: o["clips"] for o in ok},
    }
