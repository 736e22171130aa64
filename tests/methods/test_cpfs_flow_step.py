"""Flow computed directly between t and t+k (``raysup prepare --flow-step k``), as cross-pixel flow
similarity does between t and t+5 (papers/cpfs.md L125), and cpfs reading it instead of
composing one-step flows. In-process, no Ray (~1 s)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from raysup.cli import main
from raysup.config import ConfigError
from raysup.data.flow import compute_flow
from raysup.data.prepare import PrepareConfig
from raysup.data.schema import TensorSpec
from raysup.methods import make_config, method_module


def moving_texture(frames: int = 8, speed: int = 2, size: int = 64) -> np.ndarray:
    """uint8 [T,H,W,3]: a window sliding ``speed`` px right per frame over a smooth random
    texture (8 px blocks, blurred), so the content moves ``speed`` px left per frame."""
    rng = np.random.default_rng(0)
    big = np.kron(rng.integers(0, 255, (size // 8, (size + frames * speed) // 8 + 1)), np.ones((8, 8))).astype(np.uint8)
    big = cv2.GaussianBlur(big, (7, 7), 2)
    return np.stack([big[:, t * speed : t * speed + size, None].repeat(3, 2) for t in range(frames)])


def test_direct_flow_spans_k_frames():
    frames = moving_texture()  # content moves left 2 px per frame (the window slides right)
    one, five = compute_flow(frames, "farneback"), compute_flow(frames, "farneback", step=5)
    assert one.shape == (7, 64, 64, 2) and five.shape == (3, 64, 64, 2)
    inner = (slice(16, 48), slice(16, 48))
    assert np.median(one[0][inner][..., 0]) == pytest.approx(-2, abs=0.1)
    assert np.median(five[0][inner][..., 0]) == pytest.approx(-10, abs=0.1)  # five frames' motion in one flow
    cfg = PrepareConfig(clip_frames=8, flow_step=5)
    assert cfg.tensor_specs()["flow"].shape == (3, 32, 32, 2)
    with pytest.raises(ValueError, match="flow_step: must be in 1..clip_frames-1"):
        PrepareConfig(clip_frames=4, flow_step=5).validate()


def test_cpfs_reads_direct_flow_and_refuses_a_mismatched_step(capsys):
    cfg = make_config("cpfs", "tiny", {"method.flow_step": 5})
    specs = {"frames": TensorSpec((8, 32, 32, 3), "uint8"), "flow": TensorSpec((3, 32, 32, 2), "float16")}  # --flow-step 5
    model = method_module("cpfs").build(cfg, specs).eval()
    flow = torch.randn(2, 3, 32, 32, 2)
    image, f = model.inputs({"frames": torch.randint(0, 256, (2, 8, 32, 32, 3), dtype=torch.uint8), "flow": flow})
    assert torch.equal(f, flow[:, 2].permute(0, 3, 1, 2))  # t = min(T//2, T−1−k) = 2: the stored flow 2→7 itself
    model.train()
    assert model.inputs({"frames": torch.zeros(4, 8, 32, 32, 3, dtype=torch.uint8), "flow": flow.repeat(2, 1, 1, 1, 1)})[1].shape == (4, 2, 32, 32)
    specs3 = {**specs, "flow": TensorSpec((5, 32, 32, 2), "float16")}  # --flow-step 3
    with pytest.raises(ConfigError, match="method.flow_step: 5, but the prepared flow is t→t\\+3"):
        method_module("cpfs").build(cfg, specs3)
    with pytest.raises(ConfigError, match="flow stacks consecutive flows"):  # Cross and Learn's flow stacks need one-step flows
        method_module("cross_and_learn").build(make_config("cross_and_learn", "tiny"), specs)
    assert main(["prepare", "in", "out", "--flow-step", "0"]) == 2
    assert "flow_step: must be in 1..clip_frames-1" in capsys.readouterr().err
