"""Checkpoint files: where a run keeps them and how they are read (safely, ``weights_only``)."""
from __future__ import annotations

import os
from typing import Any

import pyarrow.fs as pafs
import torch

from raysup.data.storage import join, redact, resolve, uri_of

CHECKPOINT_FILE = "checkpoint.pt"


def load_checkpoint_file(path: str) -> dict[str, Any]:
    """A checkpoint dict from a checkpoint directory or ``checkpoint.pt`` (local or URI); safe load."""
    if not path.endswith(".pt"):
        path = join(path, CHECKPOINT_FILE)
    fs, p = resolve(path)
    with fs.open_input_file(p) as f:
        return torch.load(f, map_location="cpu", weights_only=True)


def latest_checkpoint(run_dir: str) -> str:
    """Path of the newest checkpoint directory anywhere in ``run_dir`` (all rounds)."""
    fs, root = resolve(run_dir)
    found = [
        f.path
        for f in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        if f.type == pafs.FileType.Directory and f.base_name.startswith("checkpoint_")
    ]
    if not found:
        raise FileNotFoundError(f"no checkpoint under {redact(run_dir)}; train first (`raysup train`)")
    return uri_of(run_dir, max(found, key=lambda p: os.path.basename(p)))
