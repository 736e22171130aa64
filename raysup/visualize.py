"""``raysup visualize-embeddings``: what a cross-pixel flow similarity run learned, as PNGs
(the paper's Fig. 4). Each clip gives one image of three panels: the frame the network sees,
the optical flow that supervised it (colour-coded) and the network's pixel embeddings
randomly projected to RGB. Pixels that the network expects to move together get the same
colour: a trained network shows the moving sprites as uniform blobs that stand out from
the background; a random one shows image texture."""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from raysup.checkpoint import latest_checkpoint, load_checkpoint_file
from raysup.data.ingest import ClipCollate, PreparedData
from raysup.data.storage import join, resolve
from raysup.methods import load_config, method_module
from raysup.methods.cpfs import COLUMNS, standardize

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
def visualize_embeddings(run_dir: str, data: PreparedData, out_dir: str | None = None, *, clips: int = 8, seed: int = 0) -> list[str]:
    """Write ``clip_<i>.png`` (frame | flow | embeddings) for the first ``clips`` clips of
    ``data`` with the latest checkpoint of a ``cpfs``/``cpfs_direct`` run; ``out_dir``
    defaults to ``<run_dir>/embeddings``. Frame and flow are the validation inputs (frame t,
    flow t→t+k); the embeddings are the L2-normalised head outputs at every pixel. Returns
    the paths written."""
    saved = load_checkpoint_file(latest_checkpoint(run_dir))
    cfg = load_config(saved["config"])
    if cfg.method_name not in ("cpfs", "cpfs_direct"):
        raise ValueError(f"visualize-embeddings: {run_dir} is a {cfg.method_name} run; it needs a cpfs or cpfs_direct run")
    data = data.cropped(cfg.crop_size)  # the run's input size
    method = method_module(cfg.method_name).build(cfg, data.specs)
    method.load_state_dict(saved["model"])
    method.eval()
    batch = ClipCollate(data.specs)(data.dataset(list(COLUMNS)).limit(clips).take_batch(clips, batch_format="pyarrow"))
    image, flow = method.inputs(batch)  # [B,3,H,W] in [0,1], [B,2,H,W] pixels
    emb = F.normalize(method.net.dense(standardize(image)), dim=-1)  # [B,H,W,D]
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
