"""``raysup visualize-embeddings``: what a pixel-embedding run (cross-pixel flow similarity, or any
method whose model has ``pixel_embeddings``) learned, as PNGs (the cpfs paper's Fig. 4). Each clip gives one image of three panels: the frame the network sees,
the optical flow that supervised it (colour-coded) and the network's pixel embeddings
randomly projected to RGB. Pixels that the network expects to move together get the same
colour: a trained network shows the moving sprites as uniform blobs that stand out from
the background; a random one shows image texture."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from raysup import runner
from raysup.checkpoint import load_checkpoint_file
from raysup.data.ingest import ClipCollate, PreparedData
from raysup.data.storage import join, redact, resolve
from raysup.evaluate import clip_columns
from raysup.methods import method_module

PANEL = 128  # minimum panel side in pixels (nearest-neighbour upscaling)


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """OpenCV's HSV flow coding: [H,W,2] (dx, dy) → uint8 RGB [H,W,3] with hue = direction
    (right red, down chartreuse, left cyan, up violet), full saturation and value = magnitude
    / ``max_magnitude`` (default: the largest in the image; zero flow is black)."""
    mag, ang = cv2.cartToPolar(flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32), angleInDegrees=True)
    top = max_magnitude or float(mag.max()) or 1.0
    hsv = np.stack([ang / 2, np.full_like(mag, 255), np.clip(mag / top, 0, 1) * 255], axis=-1).round().astype(np.uint8)  # OpenCV hue is 0..180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def project_to_rgb(emb: np.ndarray, seed: int = 0) -> np.ndarray:
    """Embeddings [H,W,D] → uint8 RGB [H,W,3] by a fixed random projection D→3 (seeded, the same
    for every image), each colour channel min-max scaled over the image."""
    proj = np.random.default_rng(seed).standard_normal((emb.shape[-1], 3))  # [D,3]
    rgb = emb @ proj  # [H,W,3]
    lo, hi = rgb.min(axis=(0, 1)), rgb.max(axis=(0, 1))
    return ((rgb - lo) / np.maximum(hi - lo, 1e-8) * 255).round().astype(np.uint8)


def _upscale(img: np.ndarray) -> np.ndarray:
    factor = max(1, -(-PANEL // img.shape[0]))
    return cv2.resize(img, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)


@torch.no_grad()
def visualize_embeddings(run_dir: str, data: str | PreparedData, out_dir: str | None = None, *, clips: int = 8, seed: int = 0) -> list[str]:
    """Write ``clip_<i>.png`` (frame | flow | embeddings) for the first ``clips`` clips of
    ``data`` with the latest checkpoint of the run in ``run_dir``, whose model must have
    ``pixel_embeddings(batch)`` (cpfs, cpfs_direct); ``out_dir`` defaults to
    ``<run_dir>/embeddings``. Frame and flow are the validation inputs (cpfs: frame t, flow
    t→t+k); the embeddings are the L2-normalised outputs at every pixel. Returns the paths written."""
    run = runner.open_run(run_dir)
    data = runner.open_data(data, run.cfg)  # the run's input size
    method = method_module(run.cfg.method_name).build(run.cfg, data.specs)
    if not hasattr(method, "pixel_embeddings"):
        raise ValueError(f"visualize-embeddings: {redact(run_dir)} is a {run.cfg.method_name} run, whose model has no pixel embeddings (cpfs and cpfs_direct have)")
    method.load_state_dict(load_checkpoint_file(run.checkpoint)["model"])
    method.eval()
    table = data.dataset(clip_columns(run.cfg), crop="centre").limit(clips).take_batch(clips, batch_format="pyarrow")
    image, flow, emb = method.pixel_embeddings(ClipCollate(data.specs)(table))  # [B,3,H,W] in [0,1], [B,2,H,W] pixels, [B,H,W,D]
    out_dir = out_dir or join(run_dir, "embeddings")
    fs, root = resolve(out_dir)
    fs.create_dir(root, recursive=True)
    written = []
    for i in range(image.shape[0]):
        frame = (image[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # [H,W,3]
        panels = [frame, flow_to_rgb(flow[i].permute(1, 2, 0).numpy()), project_to_rgb(emb[i].numpy(), seed)]
        row = np.concatenate([_upscale(p) for p in panels], axis=1)
        path = f"{root}/clip_{i:02d}.png"
        with fs.open_output_stream(path) as f:
            f.write(cv2.imencode(".png", cv2.cvtColor(row, cv2.COLOR_RGB2BGR))[1].tobytes())
        written.append(join(out_dir, f"clip_{i:02d}.png"))
    return written
