"""Checkpoint files: where a run keeps them and how they are read (safely, ``weights_only``)."""
from __future__ import annotations

import os
import sys
import zipfile
from typing import Any

import pyarrow.fs as pafs
import torch

from raysup.data.storage import exists, join, redact, resolve, uri_of

CHECKPOINT_FILE = "checkpoint.pt"


def load_checkpoint_file(path: str) -> dict[str, Any]:
    """A checkpoint dict from a checkpoint directory or ``checkpoint.pt`` (local or URI); safe
    load. A truncated or corrupt file is a ValueError naming it."""
    if not path.endswith(".pt"):
        path = join(path, CHECKPOINT_FILE)
    fs, p = resolve(path)
    with fs.open_input_file(p) as f:
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except (EOFError, RuntimeError) as e:  # torch's zip reader on a truncated file
            raise ValueError(f"checkpoint: {redact(path)} is incomplete or corrupt ({type(e).__name__}: {str(e).strip()[:200]})") from None


def checkpoint_dirs(fs: pafs.FileSystem, root: str) -> list[str]:
    """Paths of the checkpoint directories in ``root`` or in a folder directly under it (a
    run's stages: ``train/``, ``round_0/``, …), newest first (Ray names them by time). Lists
    ``root`` and each folder in it once, not recursively: a run's ``features/`` may hold
    millions of files."""
    top = _folders(fs, root)
    below = [path for folder in top if not _is_checkpoint(folder) for path in _folders(fs, folder)]
    return sorted((p for p in top + below if _is_checkpoint(p)), key=os.path.basename, reverse=True)


def _folders(fs: pafs.FileSystem, path: str) -> list[str]:
    """The folders directly in ``path`` (none if it does not exist)."""
    return [f.path for f in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)) if f.type == pafs.FileType.Directory]


def _is_checkpoint(path: str) -> bool:
    return os.path.basename(path).startswith("checkpoint_")


def broken(fs: pafs.FileSystem, path: str) -> str:
    """Why the checkpoint directory ``path`` is unusable ("" if it is complete): its file is
    missing, or not a whole zip archive (``torch.save`` writes one whose directory comes last, so
    a write cut short by a kill or a full disk lacks it)."""
    file = f"{path}/{CHECKPOINT_FILE}"
    if not exists(fs, file):
        return f"no {CHECKPOINT_FILE}"
    with fs.open_input_file(file) as f:
        return "" if zipfile.is_zipfile(f) else f"{CHECKPOINT_FILE} is cut short"


def latest_checkpoint(run_dir: str) -> str:
    """Path of the newest complete checkpoint directory of ``run_dir`` (all stages and rounds);
    newer broken ones (a write interrupted by a kill or a full disk) are named on stderr and
    skipped."""
    fs, root = resolve(run_dir)
    for path in checkpoint_dirs(fs, root):
        why = broken(fs, path)
        if not why:
            return uri_of(run_dir, path)
        print(f"checkpoint: skipping {redact(uri_of(run_dir, path))}: {why} (an interrupted write; it can be deleted)", file=sys.stderr)
    raise FileNotFoundError(f"no complete checkpoint under {redact(run_dir)}; train first (`raysup train`)")


def remove_broken(fs: pafs.FileSystem, root: str) -> None:
    """Delete the checkpoint directories under ``root`` that a kill or a full disk cut short
    (:func:`broken`), naming each on stderr; only while nothing writes there (before a run
    starts), and only those that hold nothing but a checkpoint file."""
    for path in checkpoint_dirs(fs, root):
        why = broken(fs, path)
        names = {f.base_name for f in fs.get_file_info(pafs.FileSelector(path))}
        if why and names <= {CHECKPOINT_FILE}:
            print(f"checkpoint: removing {path}: {why} (an interrupted write)", file=sys.stderr)
            fs.delete_dir(path)
