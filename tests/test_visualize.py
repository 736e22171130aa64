"""``raysup visualize-embeddings``: the flow colour coding and random projection on known
inputs, and the command end to end on a cpfs checkpoint and the prepared synthetic set."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from raysup.visualize import PANEL, flow_to_rgb, project_to_rgb


def test_flow_colour_coding():
    flow = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.5, 0.0], [0.0, 0.0]]], np.float32)  # [1,6,2]
    rgb = flow_to_rgb(flow).astype(int)[0]
    assert rgb[0].tolist() == [255, 0, 0]  # right: red
    assert rgb[1, 1] == 255 and rgb[1, 2] == 0 and 120 < rgb[1, 0] < 135  # down: chartreuse (hue 90°)
    assert rgb[2].tolist() == [0, 255, 255]  # left: cyan
    assert rgb[3, 2] == 255 and rgb[3, 1] == 0 and 120 < rgb[3, 0] < 135  # up: violet (hue 270°)
    assert 120 < rgb[4, 0] < 135 and rgb[4, 1:].tolist() == [0, 0]  # half the largest magnitude: half value
    assert rgb[5].tolist() == [0, 0, 0]  # no motion: black
    assert flow_to_rgb(flow, max_magnitude=2.0)[0, 0].tolist() == [128, 0, 0]


def test_random_projection():
    emb = np.zeros((4, 4, 16), np.float32)
    emb[:2] = np.eye(16)[3]  # top half one embedding, bottom half another
    emb[2:] = np.eye(16)[7]
    rgb = project_to_rgb(emb)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert (rgb[:2] == rgb[0, 0]).all() and (rgb[2:] == rgb[2, 0]).all()  # equal embeddings, equal colours
    assert not np.array_equal(rgb[0, 0], rgb[2, 0])
    assert set(np.unique(rgb)) <= {0, 255}  # two values per channel: min-max scaled to the extremes
    assert np.array_equal(project_to_rgb(emb), rgb)  # a fixed projection


def test_visualize_embeddings_command(prepared, tmp_path):
    """A checkpoint as a run writes it (``<run>/train/checkpoint_*/checkpoint.pt``) → one PNG
    per clip with the frame, flow and embedding panels side by side."""
    from raysup.cli import main
    from raysup.config import to_dict
    from raysup.methods import make_config, method_module

    data, _ = prepared
    cfg = make_config("cpfs", "tiny")
    torch.manual_seed(0)
    model = method_module("cpfs").build(cfg, data.specs)
    ckpt_dir = tmp_path / "run" / "train" / "checkpoint_000000"
    ckpt_dir.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "config": to_dict(cfg)}, ckpt_dir / "checkpoint.pt")
    assert main(["visualize-embeddings", str(tmp_path / "run"), "--data", data.uri, "--clips", "3"]) == 0
    out = tmp_path / "run" / "embeddings"
    assert sorted(os.listdir(out)) == ["clip_00.png", "clip_01.png", "clip_02.png"]
    img = cv2.imread(str(out / "clip_00.png"))
    assert img.shape == (PANEL, 3 * PANEL, 3)  # 32 px panels upscaled ×4
    frame, flow, emb = img[:, :PANEL], img[:, PANEL : 2 * PANEL], img[:, 2 * PANEL :]
    assert frame.std() > 5 and flow.max() > 100 and emb.std() > 5


def test_visualize_needs_a_cpfs_run(prepared, tmp_path):
    from raysup.config import to_dict
    from raysup.methods import make_config
    from raysup.visualize import visualize_embeddings

    data, _ = prepared
    ckpt_dir = tmp_path / "run" / "train" / "checkpoint_000000"
    ckpt_dir.mkdir(parents=True)
    torch.save({"model": {}, "config": to_dict(make_config("supervised", "tiny"))}, ckpt_dir / "checkpoint.pt")
    with pytest.raises(ValueError, match="supervised run, whose model has no pixel embeddings"):
        visualize_embeddings(str(tmp_path / "run"), data)
