"""Compressed clip cells (``--encoding jpeg``) and their decoding in the Ray Data stream.

Stored (one Parquet row per clip; frames at the video's own aspect, short side = ``size``):

- ``frames``: a list of T JPEGs (RGB, 4:2:0), one per frame [H, W, 3], so a reader decodes
  only the frames it uses;
- ``flow``: a list of T−1 grayscale JPEGs (quality 95), one per field [2H, W]: dx above dy, each
  component companded to 8 bits as ``q = 128 + round(127·sign(f)·log(1+|f|/k)/log(1+R/k))``
  (R = ``flow_range`` px, motions beyond it are clipped; k = ``FLOW_KNEE_PX``): steps of
  ~0.03 px near zero, where most flow is, and coarser for fast motion; zero is exact. Two-stream
  networks store TV-L1 flow as 8-bit JPEGs too (linear over ±20 px; Simonyan & Zisserman 2014,
  §6); the log curve is Mahendran et al. 2018's flow normalisation (eq. 6). On the real
  footage of docs/performance.md: end-point error 0.04 px against the float flow.

Sets prepared before 2026-12-06 hold one JPEG per clip instead (the T frames stacked top to
bottom, [T·H, W, 3]; the fields likewise, [(T−1)·2H, W]); they read as before, decoded whole.

:func:`decode_clips` turns those cells back into the fixed-size tensors of the ``raw``
encoding — uint8 [T,S,S,3] frames and float16 [T−1,S,S,2] flow, an S×S crop (S = the
prepared ``size``, or a smaller training ``crop_size``) at the same box for frames and flow
of a clip: centred (evaluation, features) or at a uniformly random position (training). It
crops the cells of a ``raw`` set (a stored S₀×S₀ square) the same way when S < S₀. Rows that
carry ``frames_pick``/``flow_pick`` (the frames and fields a method's draw will use: written by
:func:`pick_images` or :func:`draw_window` before decoding) get only those decoded, the others
left zero. It runs as a Ray Data ``map_batches`` task, so this module imports only numpy,
pyarrow and OpenCV (no torch).
"""
from __future__ import annotations

import cv2
import numpy as np
import pyarrow as pa

ENCODINGS = ("jpeg", "raw")
FLOW_RANGE_PX = 128.0  # default R: flow beyond ±R px per frame is clipped
FLOW_KNEE_PX = 2.0  # k: the companding curve is ~linear below k px, logarithmic above
FLOW_QUALITY = 95  # JPEG quality of the flow images (adds ~0.002 px to the quantisation's error)
CROPS = ("centre", "random")
DECODE_BATCH_BYTES = 16 * 1024**2  # decoded tensor bytes per map_batches batch
JPEG_CELLS = "per-image"  # the jpeg cells' layout: a list of one JPEG per frame and per field
PICKS = {"frames": "frames_pick", "flow": "flow_pick"}  # a row's indices to decode, per column (absent: all)


def encode_frames(frames: np.ndarray, quality: int) -> list[bytes]:
    """uint8 RGB [T,H,W,3] → T JPEGs, one per frame."""
    return [_jpeg(cv2.cvtColor(f, cv2.COLOR_RGB2BGR), quality) for f in frames]


def _jpeg(img: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding of a {img.shape} image failed")
    return buf.tobytes()


def quantise_flow(flow: np.ndarray, flow_range: float) -> np.ndarray:
    """float pixels [..., H, W, 2] → uint8 levels (see the module docstring). OpenCV's log:
    numpy's float32 log1p made this most of prepare's encoding time (11 vs. 1.2 ms a clip)."""
    x = np.ascontiguousarray(flow, np.float32).reshape(-1, flow.shape[-2] * flow.shape[-1])  # 2-D for OpenCV
    y = cv2.log(np.abs(x) * np.float32(1 / FLOW_KNEE_PX) + np.float32(1)) * np.float32(127.0 / np.log1p(flow_range / FLOW_KNEE_PX))
    return (128 + np.copysign(np.minimum(np.rint(y), 127), x)).astype(np.uint8).reshape(flow.shape)


def flow_levels(flow_range: float) -> np.ndarray:
    """float32 [256]: the pixels of each uint8 level (the inverse of :func:`quantise_flow`)."""
    y = (np.arange(256, dtype=np.float64) - 128) / 127
    return (np.sign(y) * FLOW_KNEE_PX * np.expm1(np.abs(y) * np.log1p(flow_range / FLOW_KNEE_PX))).astype(np.float32)


def dequantise_flow(q: np.ndarray, flow_range: float) -> np.ndarray:
    """uint8 levels → float32 pixels."""
    return flow_levels(flow_range)[q]


def encode_flow(flow: np.ndarray, flow_range: float) -> list[bytes]:
    """float [T−1,H,W,2] pixels → T−1 grayscale JPEGs, one per field [2H, W]: dx above dy."""
    q = quantise_flow(flow, flow_range).transpose(0, 3, 1, 2)  # [T−1,2,H,W]
    return [_jpeg(np.ascontiguousarray(f.reshape(-1, f.shape[-1])), FLOW_QUALITY) for f in q]


def crop_box(h: int, w: int, size: int, crop: str, rng: np.random.Generator) -> tuple[int, int]:
    """(top, left) of a size×size crop of an H×W image: centred, or uniform along each side."""
    if h < size or w < size:
        raise ValueError(f"a stored frame of {h}×{w} is smaller than the crop size {size}")
    if crop == "random":
        return int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    return (h - size) // 2, (w - size) // 2


def _image(cell: bytes, flags: int) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(cell, np.uint8), flags)
    if img is None:
        raise ValueError("a stored image does not decode (corrupt cell)")
    return img


def _frames(cell, t: int, pick: np.ndarray, raw_side: int) -> np.ndarray:
    """uint8 [len(pick),H,W,3]: the picked frames of a frames cell of T frames."""
    if raw_side:
        return np.frombuffer(cell, np.uint8).reshape(t, raw_side, raw_side, 3)[pick]  # [n,S₀,S₀,3]
    if isinstance(cell, list):  # one JPEG per frame: only the picked ones are decoded
        return np.stack([_image(cell[i], cv2.IMREAD_COLOR_RGB) for i in pick])
    img = _image(cell, cv2.IMREAD_COLOR_RGB)  # [T·H,W,3] (sets before JPEG_CELLS)
    return img.reshape(t, img.shape[0] // t, *img.shape[1:])[pick]  # [n,H,W,3]


def _fields(cell, t: int, pick: np.ndarray, raw_side: int) -> np.ndarray:
    """The picked fields of a flow cell of T−1 fields: float16 pixels [n,S₀,S₀,2] (raw) or
    uint8 levels [n,2,H,W] (jpeg)."""
    if raw_side:
        return np.frombuffer(cell, np.float16).reshape(t, raw_side, raw_side, 2)[pick]
    if isinstance(cell, list):  # one JPEG per field ([2H, W]: dx above dy)
        imgs = np.stack([_image(cell[i], cv2.IMREAD_GRAYSCALE) for i in pick])  # [n,2H,W]
        return imgs.reshape(len(pick), 2, imgs.shape[1] // 2, imgs.shape[2])
    img = _image(cell, cv2.IMREAD_GRAYSCALE)  # [(T−1)·2H,W] (sets before JPEG_CELLS)
    return img.reshape(t, 2, img.shape[0] // (2 * t), img.shape[1])[pick]


def decode_clip(frames, flow, size: int, flow_range: float, crop: str, rng: np.random.Generator,
                frames_out: np.ndarray | None = None, flow_out: np.ndarray | None = None, raw_side: int = 0,
                picks: dict[str, list[int] | None] | None = None) -> tuple[int, int]:
    """Decode one clip's cells into ``frames_out`` uint8 [T,S,S,3] and ``flow_out`` [T−1,S,S,2]
    (either may be None), both cropped at one box; returns the box's (top, left). ``picks``
    ({"frames": indices, "flow": indices}; None or a missing key: all) limits what is decoded
    and written; the rest of the outputs is left as it was. ``raw_side`` > 0: the cells are
    the raw encoding's square tensors of that side, cropped without decoding."""
    picks, box = picks or {}, None
    if frames is not None and frames_out is not None:
        pick = np.arange(len(frames_out)) if picks.get("frames") is None else np.asarray(picks["frames"], np.int64)
        if len(pick):
            img = _frames(frames, len(frames_out), pick, raw_side)  # [n,H,W,3]
            box = crop_box(img.shape[1], img.shape[2], size, crop, rng)
            frames_out[pick] = img[:, box[0] : box[0] + size, box[1] : box[1] + size]
    if flow is not None and flow_out is not None:
        pick = np.arange(len(flow_out)) if picks.get("flow") is None else np.asarray(picks["flow"], np.int64)
        if len(pick):
            fields = _fields(flow, len(flow_out), pick, raw_side)
            if raw_side:  # [n,S₀,S₀,2] pixels
                box = crop_box(raw_side, raw_side, size, crop, rng) if box is None else box
                flow_out[pick] = fields[:, box[0] : box[0] + size, box[1] : box[1] + size]
            else:  # [n,2,H,W] levels
                box = crop_box(fields.shape[2], fields.shape[3], size, crop, rng) if box is None else box
                levels = fields[:, :, box[0] : box[0] + size, box[1] : box[1] + size]  # [n,2,S,S]
                flow_out[pick] = flow_levels(flow_range)[levels.transpose(0, 2, 3, 1)]
    return box or (0, 0)


def decode_clips(batch: pa.Table, *, layout: dict, crop: str = "centre") -> pa.Table:
    """Ray Data ``map_batches`` function: compressed ``frames``/``flow`` cells → the raw
    encoding's fixed-size binary cells (null stays null); ``frames_pick``/``flow_pick`` columns
    (:data:`PICKS`) limit the decoding to those indices and are dropped. ``layout``: {"size",
    "flow_range", "frames": [T,S,S,3] or None, "flow": [T−1,S,S,2] or None, optionally
    "raw_side": the side of a raw set's stored squares, which are then cropped to S (see
    :func:`decode_clip`)}."""
    cv2.setNumThreads(1)
    rng = np.random.default_rng()
    size, n = int(layout["size"]), batch.num_rows
    names = [c for c in ("frames", "flow") if c in batch.column_names and layout.get(c)]
    picks = {c: batch.column(PICKS[c]).to_pylist() for c in names if PICKS[c] in batch.column_names}
    batch = batch.drop_columns([p for p in PICKS.values() if p in batch.column_names])
    if not names:
        return batch
    outs = {"frames": np.zeros((n, *layout["frames"]), np.uint8) if "frames" in names else None,
            "flow": np.zeros((n, *layout["flow"]), np.float16) if "flow" in names else None}
    cells = {c: batch.column(c).to_pylist() for c in names}
    for i in range(n):
        decode_clip(*(cells[c][i] if c in cells else None for c in ("frames", "flow")), size, layout["flow_range"], crop, rng,
                    *(outs[c][i] if outs[c] is not None else None for c in ("frames", "flow")), raw_side=layout.get("raw_side", 0),
                    picks={c: p[i] for c, p in picks.items()})
    for c in names:
        arr, valid = outs[c], batch.column(c).is_valid().to_numpy(zero_copy_only=False)
        width = arr[0].nbytes if n else int(np.prod(layout[c])) * arr.itemsize
        bitmap = None if valid.all() else pa.array(valid).buffers()[1]
        col = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [bitmap, pa.py_buffer(arr)], null_count=int((~valid).sum()))
        batch = batch.set_column(batch.column_names.index(c), pa.field(c, pa.binary(width), nullable=True), col)
    return batch


def pick_images(batch: pa.Table, *, frames: list[int] | None, flow: list[int] | None) -> pa.Table:
    """Ray Data ``map_batches`` function: every row will use the same ``frames`` and flow
    fields (e.g. Cross and Learn's centred stack); :func:`decode_clips` decodes only those."""
    return _with_picks(batch, {"frames": frames, "flow": flow})


def draw_window(batch: pa.Table, *, clip_frames: int, step: int, fields: int, t: int | None = None, rng=None) -> pa.Table:
    """Ray Data ``map_batches`` function: per row, frame t and the ``fields`` stored flow fields
    from it (``step`` consecutive ones t→t+1 … t+step−1→t+step, or the one field t→t+step of
    data prepared with ``--flow-step step``) — t uniform in [0, clip_frames−1−step] (a new draw
    at every epoch's re-execution), or the given ``t`` — recorded in column ``t`` (int32) and as
    the picks :func:`decode_clips` decodes (cross-pixel flow similarity's frame and flow)."""
    n = batch.num_rows
    rng = rng if rng is not None else np.random.default_rng()
    ts = rng.integers(0, clip_frames - step, n) if t is None else np.full(n, t)  # [N]
    batch = _with_picks(batch, {"frames": ts[:, None], "flow": ts[:, None] + np.arange(fields)})
    return batch.append_column("t", pa.array(ts, pa.int32()))


def _with_picks(batch: pa.Table, picks: dict) -> pa.Table:
    """``batch`` with a :data:`PICKS` list column per non-None entry of ``picks``: the indices
    of every row ([k]) or of each row ([N,k])."""
    n = batch.num_rows
    for c, idx in picks.items():
        if idx is not None:
            rows = np.atleast_2d(np.asarray(idx, np.int32))  # [1 or N, k]
            rows = np.broadcast_to(rows, (n, rows.shape[1]))  # [N,k]
            offsets = pa.array(np.arange(n + 1, dtype=np.int32) * rows.shape[1])
            batch = batch.append_column(PICKS[c], pa.ListArray.from_arrays(offsets, pa.array(rows.ravel())))
    return batch


def decode_batch_rows(layout: dict) -> int:
    """Rows per :func:`decode_clips` batch: about ``DECODE_BATCH_BYTES`` of decoded tensors."""
    row = sum(int(np.prod(layout[c])) * (1 if c == "frames" else 2) for c in ("frames", "flow") if layout.get(c))
    return max(1, DECODE_BATCH_BYTES // max(1, row))
